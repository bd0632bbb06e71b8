// The gRPC service generated from api/sandboxlet/v1alpha1/sandbox.proto, served in-process.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "api/codec.h"
#include "sandboxlet/v1alpha1/sandbox.grpc.pb.h"

namespace sandboxlet::api {
namespace {

TEST(ServiceTest, HasTheFiveMethodsAndWatchStreams) {
  const auto* service = v1alpha1::SandboxService::service_full_name();
  const auto* d = google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(service);
  ASSERT_NE(d, nullptr);
  std::vector<std::string> methods;
  for (int i = 0; i < d->method_count(); ++i) methods.push_back(d->method(i)->name());
  EXPECT_EQ(methods, (std::vector<std::string>{"Apply", "Get", "List", "Delete", "Watch"}));
  EXPECT_TRUE(d->FindMethodByName("Watch")->server_streaming());
  EXPECT_FALSE(d->FindMethodByName("Get")->server_streaming());
}

// A Get implementation backed by one object, enough to show that the generated stub and service
// carry both kinds through the Object oneof.
class OneObjectService final : public v1alpha1::SandboxService::Service {
 public:
  explicit OneObjectService(v1alpha1::Object object) : object_(std::move(object)) {}
  grpc::Status Get(grpc::ServerContext*, const v1alpha1::GetRequest* request,
                   v1alpha1::GetResponse* response) override {
    auto kind = ParseKind(request->kind());
    if (!kind.ok()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(kind.status().message()));
    }
    *response->mutable_object() = object_;
    return grpc::Status::OK;
  }

 private:
  const v1alpha1::Object object_;
};

TEST(ServiceTest, GetRoundTripsAnObjectInProcess) {
  v1alpha1::Object object;
  object.mutable_snapshot()->mutable_metadata()->set_name("snap");
  object.mutable_snapshot()->mutable_status()->set_size_bytes(1234);
  OneObjectService service(object);
  grpc::ServerBuilder builder;
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto stub = v1alpha1::SandboxService::NewStub(server->InProcessChannel(grpc::ChannelArguments()));

  grpc::ClientContext context;
  v1alpha1::GetRequest request;
  request.set_kind("sbxsnap");
  request.set_name("snap");
  v1alpha1::GetResponse response;
  grpc::Status status = stub->Get(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.object().snapshot().status().size_bytes(), 1234);

  grpc::ClientContext bad_context;
  request.set_kind("pods");
  status = stub->Get(&bad_context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  server->Shutdown();
}

}  // namespace
}  // namespace sandboxlet::api

// Tests of controller/grpc/sandbox_service.cpp: the SandboxService over a real store on a temp
// file, through a real gRPC channel on a unix socket.
#include "controller/grpc/sandbox_service.h"

#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "runtime/base/fd.h"
#include "runtime/base/fs.h"

namespace sandboxlet::grpcapi {
namespace {

using ::testing::HasSubstr;

constexpr char kSandbox[] = R"(apiVersion: sandboxlet.dev/v1alpha1
kind: Sandbox
metadata:
  name: demo
  labels: {app: demo}
spec:
  template: base
  vcpus: 2
)";

class GrpcServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sbl-grpc-test-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    auto store = store::ObjectStore::Open(dir_ + "/store.db");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    server_ = std::make_unique<GrpcServer>(store_.get(), api::ValidationLimits{.max_vcpus = 4});
    socket_ = dir_ + "/run/sandboxlet.sock";
    ASSERT_TRUE(server_->Start(socket_).ok());
    stub_ = v1alpha1::SandboxService::NewStub(
        grpc::CreateChannel("unix:" + socket_, grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    server_.reset();
    store_.reset();
    (void)RemoveAll(dir_);
  }

  grpc::Status Apply(const std::string& manifest, v1alpha1::ApplyResponse* response,
                     const std::string& validation = "") {
    grpc::ClientContext ctx;
    v1alpha1::ApplyRequest request;
    request.set_manifest(manifest);
    request.set_field_validation(validation);
    return stub_->Apply(&ctx, request, response);
  }
  grpc::Status Get(const std::string& kind, const std::string& name,
                   v1alpha1::GetResponse* response) {
    grpc::ClientContext ctx;
    v1alpha1::GetRequest request;
    request.set_kind(kind);
    request.set_name(name);
    return stub_->Get(&ctx, request, response);
  }

  std::string dir_;
  std::string socket_;
  std::unique_ptr<store::ObjectStore> store_;
  std::unique_ptr<GrpcServer> server_;
  std::unique_ptr<v1alpha1::SandboxService::Stub> stub_;
};

TEST_F(GrpcServiceTest, SocketIsOwnerOnly) {
  struct stat st;
  ASSERT_EQ(::lstat(socket_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(GrpcServiceTest, ApplyCreatesThenConfiguresThenReportsUnchanged) {
  v1alpha1::ApplyResponse r;
  grpc::Status s = Apply(kSandbox, &r);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(r.applied_size(), 1);
  EXPECT_EQ(r.applied(0).action(), "created");
  const v1alpha1::Sandbox& created = r.applied(0).object().sandbox();
  EXPECT_EQ(created.metadata().namespace_(), "default");  // defaulted
  EXPECT_FALSE(created.metadata().uid().empty());
  EXPECT_EQ(created.spec().memory_mib(), 512);  // defaulted
  EXPECT_EQ(created.spec().power(), v1alpha1::SandboxSpec::Running);

  // The controller writes status; a later apply keeps it and bumps the generation.
  nlohmann::json stored = *store_->Get("sandboxes", "default", "demo");
  stored["status"] = {{"phase", "Running"}};
  ASSERT_TRUE(store_->UpdateStatus("sandboxes", stored).ok());

  std::string changed = kSandbox;
  changed.replace(changed.find("vcpus: 2"), 8, "vcpus: 3");
  r.Clear();
  s = Apply(changed, &r);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(r.applied(0).action(), "configured");
  EXPECT_EQ(r.applied(0).object().sandbox().spec().vcpus(), 3);
  EXPECT_EQ(r.applied(0).object().sandbox().metadata().generation(), 2);
  EXPECT_EQ(r.applied(0).object().sandbox().status().phase(), v1alpha1::SandboxStatus::Running);

  r.Clear();
  s = Apply(changed, &r);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(r.applied(0).action(), "unchanged");
}

TEST_F(GrpcServiceTest, ApplyKeepsFinalizersOtherWritersAdded) {
  v1alpha1::ApplyResponse r;
  ASSERT_TRUE(Apply(kSandbox, &r).ok());
  nlohmann::json stored = *store_->Get("sandboxes", "default", "demo");
  stored["metadata"]["finalizers"] = {"sandboxlet.dev/cleanup"};
  ASSERT_TRUE(store_->Update("sandboxes", stored).ok());
  r.Clear();
  std::string changed = kSandbox;
  changed.replace(changed.find("vcpus: 2"), 8, "vcpus: 1");
  ASSERT_TRUE(Apply(changed, &r).ok());
  EXPECT_THAT(r.applied(0).object().sandbox().metadata().finalizers(),
              ::testing::ElementsAre("sandboxlet.dev/cleanup"));
}

TEST_F(GrpcServiceTest, ApplyTypedObjectAndStaleResourceVersionIsAborted) {
  v1alpha1::ApplyRequest request;
  v1alpha1::Sandbox* sbx = request.mutable_object()->mutable_sandbox();
  sbx->mutable_metadata()->set_name("typed");
  sbx->mutable_spec()->set_template_("base");
  v1alpha1::ApplyResponse r;
  {
    grpc::ClientContext ctx;
    grpc::Status s = stub_->Apply(&ctx, request, &r);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  EXPECT_EQ(r.applied(0).object().sandbox().kind(), "Sandbox");
  std::string rv = r.applied(0).object().sandbox().metadata().resource_version();

  // Someone else changes it; an apply made against the old version is a conflict.
  nlohmann::json stored = *store_->Get("sandboxes", "default", "typed");
  stored["metadata"]["labels"] = {{"x", "y"}};
  ASSERT_TRUE(store_->Update("sandboxes", stored).ok());
  sbx->mutable_metadata()->set_resource_version(rv);
  sbx->mutable_spec()->set_vcpus(2);
  grpc::ClientContext ctx;
  grpc::Status s = stub_->Apply(&ctx, request, &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_THAT(s.error_message(), HasSubstr("Sandbox default/typed"));
  EXPECT_THAT(s.error_message(), HasSubstr("conflict"));
}

TEST_F(GrpcServiceTest, InvalidObjectsAreRejectedWithTheirFieldErrors) {
  v1alpha1::ApplyResponse r;
  grpc::Status s = Apply(R"(apiVersion: sandboxlet.dev/v1alpha1
kind: Sandbox
metadata: {name: big}
spec: {template: base, vcpus: 16}
)",
                         &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("Sandbox.sandboxlet.dev \"big\" is invalid"));
  EXPECT_THAT(s.error_message(), HasSubstr("spec.vcpus"));

  s = Apply(R"(apiVersion: sandboxlet.dev/v1alpha1
kind: Sandbox
metadata: {name: typo}
spec: {template: base, vcpu: 1}
)",
            &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("did you mean spec.vcpus?"));

  // Warn mode drops the unknown field and says so.
  r.Clear();
  s = Apply(R"(apiVersion: sandboxlet.dev/v1alpha1
kind: Sandbox
metadata: {name: typo}
spec: {template: base, vcpu: 1}
)",
            &r, "Warn");
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(r.warnings_size(), 1);
  EXPECT_THAT(r.warnings(0), HasSubstr("spec.vcpu"));

  // A multi-document manifest with one bad document stores nothing.
  s = Apply(std::string(kSandbox) + "---\napiVersion: sandboxlet.dev/v1alpha1\nkind: Nope\n", &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("document 2"));
  v1alpha1::GetResponse g;
  EXPECT_EQ(Get("Sandbox", "demo", &g).error_code(), grpc::StatusCode::NOT_FOUND);

  // An empty request.
  grpc::ClientContext ctx;
  v1alpha1::ApplyRequest empty;
  s = stub_->Apply(&ctx, empty, &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(GrpcServiceTest, GetListAndDeleteByAnyKindName) {
  v1alpha1::ApplyResponse r;
  ASSERT_TRUE(Apply(std::string(kSandbox) + R"(---
apiVersion: sandboxlet.dev/v1alpha1
kind: Sandbox
metadata: {name: other, namespace: team-a}
spec: {template: base}
---
apiVersion: sandboxlet.dev/v1alpha1
kind: SandboxSnapshot
metadata: {name: snap}
spec: {sandboxName: demo}
)",
                    &r)
                  .ok());
  ASSERT_EQ(r.applied_size(), 3);

  v1alpha1::GetResponse g;
  ASSERT_TRUE(Get("sbx", "demo", &g).ok());
  EXPECT_EQ(g.object().sandbox().spec().vcpus(), 2);
  ASSERT_TRUE(Get("sandboxsnapshots", "snap", &g).ok());
  EXPECT_EQ(g.object().snapshot().spec().sandbox_name(), "demo");

  grpc::Status s = Get("Sandbox", "missing", &g);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("missing"));
  s = Get("pods", "demo", &g);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("pods"));

  auto list = [&](const std::string& ns, const std::string& selector) {
    grpc::ClientContext ctx;
    v1alpha1::ListRequest request;
    request.set_kind("sandboxes");
    request.set_namespace_(ns);
    request.set_label_selector(selector);
    v1alpha1::ListResponse response;
    grpc::Status status = stub_->List(&ctx, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    std::vector<std::string> names;
    for (const auto& o : response.items()) names.push_back(o.sandbox().metadata().name());
    EXPECT_FALSE(response.resource_version().empty());
    return names;
  };
  EXPECT_THAT(list("", ""), ::testing::ElementsAre("demo", "other"));
  EXPECT_THAT(list("team-a", ""), ::testing::ElementsAre("other"));
  EXPECT_THAT(list("", "app=demo"), ::testing::ElementsAre("demo"));
  {
    grpc::ClientContext ctx;
    v1alpha1::ListRequest request;
    request.set_kind("Sandbox");
    request.set_label_selector("app in (");
    v1alpha1::ListResponse response;
    EXPECT_EQ(stub_->List(&ctx, request, &response).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }

  auto del = [&](const std::string& name, const std::string& rv, v1alpha1::DeleteResponse* out) {
    grpc::ClientContext ctx;
    v1alpha1::DeleteRequest request;
    request.set_kind("Sandbox");
    request.set_name(name);
    request.set_resource_version(rv);
    return stub_->Delete(&ctx, request, out);
  };
  v1alpha1::DeleteResponse d;
  // A delete made against an older version is a conflict.
  const std::string old_rv = r.applied(0).object().sandbox().metadata().resource_version();
  std::string changed = kSandbox;
  changed.replace(changed.find("vcpus: 2"), 8, "vcpus: 1");
  ASSERT_TRUE(Apply(changed, &r).ok());
  grpc::Status conflict = del("demo", old_rv, &d);
  EXPECT_EQ(conflict.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_THAT(conflict.error_message(), HasSubstr("demo"));
  ASSERT_TRUE(del("demo", "", &d).ok());
  EXPECT_EQ(d.object().sandbox().metadata().name(), "demo");
  EXPECT_EQ(Get("Sandbox", "demo", &g).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(del("demo", "", &d).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(GrpcServiceTest, ApplyToAnObjectBeingDeletedIsAFailedPrecondition) {
  v1alpha1::ApplyResponse r;
  ASSERT_TRUE(Apply(kSandbox, &r).ok());
  nlohmann::json stored = *store_->Get("sandboxes", "default", "demo");
  stored["metadata"]["finalizers"] = {"sandboxlet.dev/cleanup"};
  ASSERT_TRUE(store_->Update("sandboxes", stored).ok());
  ASSERT_TRUE(store_->Delete("sandboxes", "default", "demo").ok());
  grpc::Status s = Apply(kSandbox, &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("being deleted"));
}

TEST_F(GrpcServiceTest, WatchStreamsChangesFromAListVersion) {
  v1alpha1::ApplyResponse r;
  ASSERT_TRUE(Apply(kSandbox, &r).ok());

  // Without a version the watch starts with the existing objects.
  grpc::ClientContext ctx;
  v1alpha1::WatchRequest request;
  request.set_kind("Sandbox");
  std::unique_ptr<grpc::ClientReader<v1alpha1::WatchEvent>> reader = stub_->Watch(&ctx, request);
  v1alpha1::WatchEvent event;
  ASSERT_TRUE(reader->Read(&event));
  EXPECT_EQ(event.type(), v1alpha1::WatchEvent::ADDED);
  EXPECT_EQ(event.object().sandbox().metadata().name(), "demo");

  std::string changed = kSandbox;
  changed.replace(changed.find("vcpus: 2"), 8, "vcpus: 1");
  ASSERT_TRUE(Apply(changed, &r).ok());
  ASSERT_TRUE(reader->Read(&event));
  EXPECT_EQ(event.type(), v1alpha1::WatchEvent::MODIFIED);
  EXPECT_EQ(event.object().sandbox().spec().vcpus(), 1);

  ASSERT_TRUE(store_->Delete("sandboxes", "default", "demo").ok());
  ASSERT_TRUE(reader->Read(&event));
  EXPECT_EQ(event.type(), v1alpha1::WatchEvent::DELETED);

  ctx.TryCancel();
  while (reader->Read(&event)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

TEST_F(GrpcServiceTest, WatchOfOneNameFromAVersionSkipsOthers) {
  v1alpha1::ApplyResponse r;
  ASSERT_TRUE(Apply(kSandbox, &r).ok());
  std::string rv = r.applied(0).object().sandbox().metadata().resource_version();

  grpc::ClientContext ctx;
  v1alpha1::WatchRequest request;
  request.set_kind("Sandbox");
  request.set_name("second");
  request.set_resource_version(rv);
  auto reader = stub_->Watch(&ctx, request);
  ASSERT_TRUE(Apply(R"(apiVersion: sandboxlet.dev/v1alpha1
kind: Sandbox
metadata: {name: first}
spec: {template: base}
---
apiVersion: sandboxlet.dev/v1alpha1
kind: Sandbox
metadata: {name: second}
spec: {template: base}
)",
                    &r)
                  .ok());
  v1alpha1::WatchEvent event;
  ASSERT_TRUE(reader->Read(&event));
  EXPECT_EQ(event.type(), v1alpha1::WatchEvent::ADDED);
  EXPECT_EQ(event.object().sandbox().metadata().name(), "second");
  ctx.TryCancel();
  while (reader->Read(&event)) {
  }
}

TEST_F(GrpcServiceTest, WatchFromAFutureVersionIsRejected) {
  grpc::ClientContext ctx;
  v1alpha1::WatchRequest request;
  request.set_kind("Sandbox");
  request.set_resource_version("999999");
  auto reader = stub_->Watch(&ctx, request);
  v1alpha1::WatchEvent event;
  EXPECT_FALSE(reader->Read(&event));
  grpc::Status s = reader->Finish();
  EXPECT_NE(s.error_code(), grpc::StatusCode::OK);
  EXPECT_THAT(s.error_message(), HasSubstr("999999"));
}

TEST_F(GrpcServiceTest, ServerStopEndsOpenWatches) {
  grpc::ClientContext ctx;
  v1alpha1::WatchRequest request;
  request.set_kind("Sandbox");
  auto reader = stub_->Watch(&ctx, request);
  reader->WaitForInitialMetadata();
  server_->Stop(std::chrono::seconds(10));
  v1alpha1::WatchEvent event;
  EXPECT_FALSE(reader->Read(&event));
  EXPECT_FALSE(PathExists(socket_));  // the socket goes with the server
}

TEST_F(GrpcServiceTest, ASecondServerRefusesASocketInUseAndReplacesAStaleOne) {
  GrpcServer second(store_.get(), {});
  absl::Status s = second.Start(socket_);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("another process"));

  // A socket nobody listens on any more (a crashed daemon's) is replaced.
  std::string stale = dir_ + "/stale.sock";
  {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    stale.copy(addr.sun_path, stale.size());
    ASSERT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  }
  ASSERT_TRUE(PathExists(stale));
  ASSERT_TRUE(second.Start(stale).ok());
  auto stub = v1alpha1::SandboxService::NewStub(
      grpc::CreateChannel("unix:" + stale, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  v1alpha1::ListRequest request;
  request.set_kind("Sandbox");
  v1alpha1::ListResponse response;
  EXPECT_TRUE(stub->List(&ctx, request, &response).ok());
  second.Stop();

  // Not a socket: refused, the file is left alone.
  std::string regular = dir_ + "/regular";
  ASSERT_TRUE(WriteFileAtomic(regular, "x").ok());
  s = second.Start(regular);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("not a socket"));
  EXPECT_TRUE(PathExists(regular));
}

}  // namespace
}  // namespace sandboxlet::grpcapi

// SandboxGrpcService: the local gRPC SandboxService (api/sandboxlet/v1alpha1/sandbox.proto) over
// the object store, and GrpcServer, which serves it on a unix socket only its owner may use.
//
// Apply has `kubectl apply` semantics (controller/manifests/apply.h): create, or update keeping
// status and other writers' finalizers, with optimistic concurrency. Errors are mapped once, here,
// from absl codes to gRPC codes with their messages: INVALID_ARGUMENT (field errors listed in the
// message, e.g. `Sandbox.sandboxlet.dev "x" is invalid: [spec.vcpus: ...]`), NOT_FOUND,
// ALREADY_EXISTS, ABORTED (conflict), FAILED_PRECONDITION (object being deleted), OUT_OF_RANGE
// (watch from a version too old: list again). Watch streams the store's events until the client
// cancels or the server shuts down.
//
// Thread-safety: the service's methods run on gRPC's threads concurrently (the store is
// thread-safe). GrpcServer: Start/Stop from one thread.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "api/validation.h"
#include "controller/store/object_store.h"
#include "sandboxlet/v1alpha1/sandbox.grpc.pb.h"

namespace sandboxlet::grpcapi {

// absl → gRPC status with the same code (the code spaces coincide) and message.
grpc::Status ToGrpcStatus(const absl::Status& status);

class SandboxGrpcService final : public v1alpha1::SandboxService::Service {
 public:
  SandboxGrpcService(store::ObjectStore* store, api::ValidationLimits limits);

  grpc::Status Apply(grpc::ServerContext* context, const v1alpha1::ApplyRequest* request,
                     v1alpha1::ApplyResponse* response) override;
  grpc::Status Get(grpc::ServerContext* context, const v1alpha1::GetRequest* request,
                   v1alpha1::GetResponse* response) override;
  grpc::Status List(grpc::ServerContext* context, const v1alpha1::ListRequest* request,
                    v1alpha1::ListResponse* response) override;
  grpc::Status Delete(grpc::ServerContext* context, const v1alpha1::DeleteRequest* request,
                      v1alpha1::DeleteResponse* response) override;
  grpc::Status Watch(grpc::ServerContext* context, const v1alpha1::WatchRequest* request,
                     grpc::ServerWriter<v1alpha1::WatchEvent>* writer) override;

  // Ends every Watch stream (within about 100 ms), so that a server shutdown does not wait for
  // clients to hang up.
  void EndWatches() { ending_ = true; }

 private:
  store::ObjectStore* const store_;
  const api::ValidationLimits limits_;
  std::atomic<bool> ending_{false};
};

// Serves a SandboxGrpcService on a unix socket created with mode 0600.
class GrpcServer {
 public:
  GrpcServer(store::ObjectStore* store, api::ValidationLimits limits);
  ~GrpcServer();

  // Listens on `socket_path`: a stale socket left by a dead daemon is removed; FailedPrecondition
  // if another process is serving it or the path is not a socket. The socket is bound under a
  // private name and renamed into place only after its mode is 0600, so that it is never
  // reachable with looser permissions.
  absl::Status Start(const std::string& socket_path);
  // Stops accepting, ends watches, waits for calls in flight (up to `grace`), removes the socket.
  void Stop(std::chrono::milliseconds grace = std::chrono::seconds(5));

 private:
  store::ObjectStore* const store_;
  const api::ValidationLimits limits_;
  std::unique_ptr<SandboxGrpcService> service_;  // one per Start
  std::unique_ptr<grpc::Server> server_;
  std::string socket_path_;
};

}  // namespace sandboxlet::grpcapi

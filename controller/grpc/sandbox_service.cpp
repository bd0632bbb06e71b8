#include "controller/grpc/sandbox_service.h"

#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "api/codec.h"
#include "controller/manifests/apply.h"
#include "runtime/base/errors.h"
#include "runtime/base/fd.h"
#include "runtime/base/fs.h"
#include "runtime/base/log.h"
#include "runtime/base/names.h"
#include "runtime/base/strings.h"

namespace sandboxlet::grpcapi {
namespace {

using nlohmann::json;

absl::StatusOr<api::Kind> KindOfRequest(const std::string& kind) {
  if (kind.empty()) {
    return absl::InvalidArgumentError(
        "kind: Required value: name a kind, e.g. Sandbox or SandboxSnapshot");
  }
  return api::ParseKind(kind);
}

absl::StatusOr<v1alpha1::Object> ToProtoObject(const json& stored) {
  SBL_ASSIGN_OR_RETURN(api::Object object, controller::ObjectFromStore(stored));
  return api::ToProto(object);
}

std::string NamespaceOr(const std::string& ns) { return ns.empty() ? "default" : ns; }

// Whether something accepts connections on the unix socket `path`.
bool SocketIsServed(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) return false;
  path.copy(addr.sun_path, path.size());
  return ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

SandboxGrpcService::SandboxGrpcService(store::ObjectStore* store, api::ValidationLimits limits)
    : store_(store), limits_(limits) {}

grpc::Status SandboxGrpcService::Apply(grpc::ServerContext*, const v1alpha1::ApplyRequest* request,
                                       v1alpha1::ApplyResponse* response) {
  absl::StatusOr<api::FieldValidation> validation =
      api::ParseFieldValidation(request->field_validation());
  if (!validation.ok()) return ToGrpcStatus(validation.status());
  controller::ApplyOptions options;
  options.field_validation = *validation;
  options.dry_run = request->dry_run();
  options.limits = limits_;

  std::vector<controller::ApplyResult> results;
  std::vector<std::string> warnings;
  switch (request->source_case()) {
    case v1alpha1::ApplyRequest::kObject: {
      absl::StatusOr<api::Object> object = api::FromProto(request->object());
      if (!object.ok()) return ToGrpcStatus(object.status());
      absl::StatusOr<controller::ApplyResult> r =
          controller::ApplyObject(*store_, *std::move(object), options);
      if (!r.ok()) return ToGrpcStatus(r.status());
      results.push_back(*std::move(r));
      break;
    }
    case v1alpha1::ApplyRequest::kManifest: {
      absl::StatusOr<std::vector<controller::ApplyResult>> r =
          controller::ApplyManifests(*store_, request->manifest(), options, &warnings);
      if (!r.ok()) return ToGrpcStatus(r.status());
      results = *std::move(r);
      break;
    }
    case v1alpha1::ApplyRequest::SOURCE_NOT_SET:
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "source: Required value: give an object or manifest text");
  }
  for (const controller::ApplyResult& r : results) {
    absl::StatusOr<v1alpha1::Object> object = ToProtoObject(r.stored);
    if (!object.ok()) return ToGrpcStatus(object.status());
    v1alpha1::AppliedObject* applied = response->add_applied();
    *applied->mutable_object() = *std::move(object);
    applied->set_action(controller::ApplyActionName(r.action));
    if (!options.dry_run && r.action != controller::ApplyAction::kUnchanged) {
      const json& meta = r.stored.at("metadata");
      log::Info("applied",
                {{"object", Cat(r.stored.value("kind", ""), " ", meta.value("namespace", ""), "/",
                                meta.value("name", ""))},
                 {"action", controller::ApplyActionName(r.action)},
                 {"manager", request->field_manager()},
                 {"via", "grpc"}});
    }
  }
  for (std::string& w : warnings) response->add_warnings(std::move(w));
  return grpc::Status::OK;
}

grpc::Status SandboxGrpcService::Get(grpc::ServerContext*, const v1alpha1::GetRequest* request,
                                     v1alpha1::GetResponse* response) {
  absl::StatusOr<api::Kind> kind = KindOfRequest(request->kind());
  if (!kind.ok()) return ToGrpcStatus(kind.status());
  absl::StatusOr<json> stored = store_->Get(std::string(api::ResourceName(*kind)),
                                            NamespaceOr(request->namespace_()), request->name());
  if (!stored.ok()) return ToGrpcStatus(stored.status());
  absl::StatusOr<v1alpha1::Object> object = ToProtoObject(*stored);
  if (!object.ok()) return ToGrpcStatus(object.status());
  *response->mutable_object() = *std::move(object);
  return grpc::Status::OK;
}

grpc::Status SandboxGrpcService::List(grpc::ServerContext*, const v1alpha1::ListRequest* request,
                                      v1alpha1::ListResponse* response) {
  absl::StatusOr<api::Kind> kind = KindOfRequest(request->kind());
  if (!kind.ok()) return ToGrpcStatus(kind.status());
  store::ListOptions options;
  absl::StatusOr<store::LabelSelector> labels =
      store::LabelSelector::Parse(request->label_selector());
  if (!labels.ok()) return ToGrpcStatus(labels.status());
  options.labels = *std::move(labels);
  absl::StatusOr<store::ObjectList> list =
      store_->List(std::string(api::ResourceName(*kind)), request->namespace_(), options);
  if (!list.ok()) return ToGrpcStatus(list.status());
  for (const json& item : list->items) {
    absl::StatusOr<v1alpha1::Object> object = ToProtoObject(item);
    if (!object.ok()) return ToGrpcStatus(object.status());
    *response->add_items() = *std::move(object);
  }
  response->set_resource_version(list->resource_version);
  return grpc::Status::OK;
}

grpc::Status SandboxGrpcService::Delete(grpc::ServerContext*,
                                        const v1alpha1::DeleteRequest* request,
                                        v1alpha1::DeleteResponse* response) {
  absl::StatusOr<api::Kind> kind = KindOfRequest(request->kind());
  if (!kind.ok()) return ToGrpcStatus(kind.status());
  store::DeletePreconditions preconditions;
  preconditions.resource_version = request->resource_version();
  absl::StatusOr<store::DeleteResult> deleted =
      store_->Delete(std::string(api::ResourceName(*kind)), NamespaceOr(request->namespace_()),
                     request->name(), preconditions);
  if (!deleted.ok()) return ToGrpcStatus(deleted.status());
  absl::StatusOr<v1alpha1::Object> object = ToProtoObject(deleted->object);
  if (!object.ok()) return ToGrpcStatus(object.status());
  *response->mutable_object() = *std::move(object);
  log::Info("delete requested",
            {{"object", Cat(api::KindName(*kind), " ", NamespaceOr(request->namespace_()), "/",
                            request->name())},
             {"removed", deleted->removed},
             {"via", "grpc"}});
  return grpc::Status::OK;
}

grpc::Status SandboxGrpcService::Watch(grpc::ServerContext* context,
                                       const v1alpha1::WatchRequest* request,
                                       grpc::ServerWriter<v1alpha1::WatchEvent>* writer) {
  absl::StatusOr<api::Kind> kind = KindOfRequest(request->kind());
  if (!kind.ok()) return ToGrpcStatus(kind.status());
  store::WatchOptions options;
  absl::StatusOr<store::LabelSelector> labels =
      store::LabelSelector::Parse(request->label_selector());
  if (!labels.ok()) return ToGrpcStatus(labels.status());
  options.labels = *std::move(labels);
  if (!request->name().empty()) {
    if (!IsDns1123Subdomain(request->name())) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          Cat("name: Invalid value: \"", request->name(),
                              "\": must be a lowercase DNS-1123 subdomain"));
    }
    absl::StatusOr<store::FieldSelector> fields =
        store::FieldSelector::Parse(Cat("metadata.name=", request->name()));
    if (!fields.ok()) return ToGrpcStatus(fields.status());
    options.fields = *std::move(fields);
  }
  options.resource_version = request->resource_version();
  options.send_initial_events = request->resource_version().empty();
  absl::StatusOr<std::unique_ptr<store::WatchStream>> stream =
      store_->Watch(std::string(api::ResourceName(*kind)), request->namespace_(), options);
  if (!stream.ok()) return ToGrpcStatus(stream.status());
  writer->SendInitialMetadata();

  while (!context->IsCancelled() && !ending_) {
    absl::StatusOr<store::WatchEvent> event =
        (*stream)->Next(std::chrono::steady_clock::now() + std::chrono::milliseconds(100));
    if (!event.ok()) {
      if (event.status().code() == absl::StatusCode::kDeadlineExceeded) continue;
      return grpc::Status::OK;  // the stream ended (store closing)
    }
    v1alpha1::WatchEvent out;
    switch (event->type) {
      case store::WatchEventType::kBookmark:
        continue;
      case store::WatchEventType::kError:
        out.set_type(v1alpha1::WatchEvent::ERROR);
        out.set_message(event->object.value("message", "watch ended"));
        writer->Write(out);
        return grpc::Status::OK;
      case store::WatchEventType::kAdded:
        out.set_type(v1alpha1::WatchEvent::ADDED);
        break;
      case store::WatchEventType::kModified:
        out.set_type(v1alpha1::WatchEvent::MODIFIED);
        break;
      case store::WatchEventType::kDeleted:
        out.set_type(v1alpha1::WatchEvent::DELETED);
        break;
    }
    absl::StatusOr<v1alpha1::Object> object = ToProtoObject(event->object);
    if (!object.ok()) return ToGrpcStatus(object.status());
    *out.mutable_object() = *std::move(object);
    if (!writer->Write(out)) break;
  }
  return grpc::Status::OK;
}

GrpcServer::GrpcServer(store::ObjectStore* store, api::ValidationLimits limits)
    : store_(store), limits_(limits) {}

GrpcServer::~GrpcServer() { Stop(std::chrono::milliseconds(0)); }

absl::Status GrpcServer::Start(const std::string& socket_path) {
  const std::string dir = Dirname(socket_path);
  SBL_RETURN_IF_ERROR(Annotate(MakeDirs(dir, 0755), Cat("grpc socket ", socket_path)));
  struct stat st;
  if (::lstat(socket_path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(
          Cat("grpc socket ", socket_path,
              ": the path exists and is not a socket; remove it or "
              "pass another --grpc-socket"));
    }
    if (SocketIsServed(socket_path)) {
      return absl::FailedPreconditionError(
          Cat("grpc socket ", socket_path,
              ": another process (a running sandboxlet?) is serving "
              "it; stop it or pass another --grpc-socket"));
    }
    if (::unlink(socket_path.c_str()) != 0 && errno != ENOENT) {
      return ErrnoStatus(errno, Cat("grpc socket ", socket_path, ": removing the stale socket"));
    }
    log::Info("removed a stale grpc socket", {{"socket", socket_path}});
  }

  // Bind inside a private (0700) directory next to the final path, tighten the socket's mode,
  // then rename it into place (same file system).
  std::string tmpl = Cat(dir, "/.grpc-XXXXXX");
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return ErrnoStatus(errno, Cat("grpc socket ", socket_path, ": mkdtemp in ", dir));
  }
  const std::string private_path = Cat(tmpl, "/s");
  auto cleanup_tmp = [&] {
    ::unlink(private_path.c_str());
    ::rmdir(tmpl.c_str());
  };
  if (private_path.size() >= sizeof(sockaddr_un::sun_path)) {
    cleanup_tmp();
    return absl::InvalidArgumentError(
        Cat("grpc socket ", socket_path, ": path too long for a unix socket"));
  }

  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(Cat("unix:", private_path), grpc::InsecureServerCredentials(),
                           &bound_port);
  service_ = std::make_unique<SandboxGrpcService>(store_, limits_);
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || bound_port == 0) {
    server_.reset();
    cleanup_tmp();
    return absl::UnavailableError(Cat("grpc socket ", socket_path, ": gRPC could not listen"));
  }
  if (::chmod(private_path.c_str(), 0600) != 0 ||
      ::rename(private_path.c_str(), socket_path.c_str()) != 0) {
    absl::Status s = ErrnoStatus(errno, Cat("grpc socket ", socket_path, ": placing the socket"));
    server_->Shutdown();
    server_.reset();
    cleanup_tmp();
    return s;
  }
  ::rmdir(tmpl.c_str());
  socket_path_ = socket_path;
  log::Info("grpc SandboxService serving", {{"socket", socket_path}});
  return absl::OkStatus();
}

void GrpcServer::Stop(std::chrono::milliseconds grace) {
  if (server_ == nullptr) return;
  service_->EndWatches();
  server_->Shutdown(std::chrono::system_clock::now() + grace);
  server_->Wait();
  server_.reset();
  service_.reset();
  ::unlink(socket_path_.c_str());
}

}  // namespace sandboxlet::grpcapi

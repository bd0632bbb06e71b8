#include "cmd/sandboxlet/ctl.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <optional>

#include <grpcpp/grpcpp.h>

#include "api/codec.h"
#include "api/object.h"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"
#include "sandboxlet/v1alpha1/sandbox.grpc.pb.h"

namespace sandboxlet::cli {
namespace {

constexpr char kDefaultSocket[] = "/run/sandboxlet/sandboxlet.sock";
constexpr auto kCallTimeout = std::chrono::seconds(30);

struct Args {
  std::string verb;
  std::vector<std::string> positional;
  std::vector<std::string> files;
  std::string ns;
  bool all_namespaces = false;
  std::string selector;
  std::string output = "table";
  std::string socket;
  bool dry_run = false;
  std::string validate;
};

int Fail(const std::string& message) {
  std::cerr << "error: " << message << "\n";
  return 1;
}

std::optional<std::string> ParseArgs(const std::vector<std::string>& in, Args* out) {
  if (in.empty()) return "missing verb: get, apply, delete or watch";
  out->verb = in[0];
  const char* env = std::getenv("SANDBOXLET_SOCKET");
  out->socket = env != nullptr && *env != '\0' ? env : kDefaultSocket;
  for (size_t i = 1; i < in.size(); ++i) {
    std::string a = in[i];
    std::string value;
    bool inline_value = false;
    if (StartsWith(a, "--") && a.find('=') != std::string::npos) {
      value = a.substr(a.find('=') + 1);
      a = a.substr(0, a.find('='));
      inline_value = true;
    }
    auto take = [&](const std::string& flag) -> std::optional<std::string> {
      if (inline_value) return value;
      if (i + 1 >= in.size()) return std::nullopt;
      (void)flag;
      return in[++i];
    };
    auto need = [&](std::string* dst, const std::string& flag) -> std::optional<std::string> {
      std::optional<std::string> v = take(flag);
      if (!v) return Cat("flag ", flag, " needs a value");
      *dst = *v;
      return std::nullopt;
    };
    std::optional<std::string> err;
    if (a == "-n" || a == "--namespace") {
      err = need(&out->ns, a);
    } else if (a == "-A" || a == "--all-namespaces") {
      out->all_namespaces = true;
    } else if (a == "-l" || a == "--selector") {
      err = need(&out->selector, a);
    } else if (a == "-o" || a == "--output") {
      err = need(&out->output, a);
    } else if (a == "-f" || a == "--filename") {
      std::string f;
      err = need(&f, a);
      out->files.push_back(f);
    } else if (a == "--socket") {
      err = need(&out->socket, a);
    } else if (a == "--dry-run") {
      out->dry_run = !inline_value || value != "none";
    } else if (a == "--validate") {
      err = need(&out->validate, a);
    } else if (StartsWith(a, "-") && a != "-") {
      return Cat("unknown flag ", a);
    } else {
      out->positional.push_back(a);
    }
    if (err) return err;
  }
  if (out->output == "wide") out->output = "table";
  if (out->output != "table" && out->output != "yaml" && out->output != "json" &&
      out->output != "name") {
    return Cat("-o ", out->output, ": expected table, yaml, json or name");
  }
  return std::nullopt;
}

std::unique_ptr<v1alpha1::SandboxService::Stub> Connect(const std::string& socket,
                                                        std::string* error) {
  if (!PathExists(socket)) {
    *error = Cat("no sandboxlet socket at ", socket,
                 ": is the daemon running (sandboxlet run)? Pass --socket or set "
                 "SANDBOXLET_SOCKET for another one");
    return nullptr;
  }
  auto channel = grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials());
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(5))) {
    *error = Cat("cannot connect to sandboxlet at ", socket,
                 " (is the daemon running, and may this user open the socket?)");
    return nullptr;
  }
  return v1alpha1::SandboxService::NewStub(channel);
}

void SetDeadline(grpc::ClientContext* ctx) {
  ctx->set_deadline(std::chrono::system_clock::now() + kCallTimeout);
}

int RpcFail(const grpc::Status& s) { return Fail(s.error_message()); }

const v1alpha1::ObjectMeta& Meta(const v1alpha1::Object& o) {
  return o.has_sandbox() ? o.sandbox().metadata() : o.snapshot().metadata();
}
const google::protobuf::Message& Message(const v1alpha1::Object& o) {
  if (o.has_sandbox()) return o.sandbox();
  return o.snapshot();
}

std::string Age(const google::protobuf::Timestamp& ts) {
  if (ts.seconds() == 0) return "<unknown>";
  int64_t s = std::time(nullptr) - ts.seconds();
  if (s < 0) s = 0;
  if (s < 120) return Cat(s, "s");
  if (s < 3600 * 2) return Cat(s / 60, "m");
  if (s < 86400 * 2) return Cat(s / 3600, "h");
  return Cat(s / 86400, "d");
}

std::string Bytes(int64_t n) {
  if (n <= 0) return "0";
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f%s" : "%.1f%s", v, units[u]);
  return buf;
}

std::string Phase(const google::protobuf::Message& status) {
  const auto* field = status.GetDescriptor()->FindFieldByName("phase");
  int n = status.GetReflection()->GetEnumValue(status, field);
  if (n == 0) return "Pending";
  return field->enum_type()->FindValueByNumber(n)->name();
}

// Rows of a table, padded like kubectl's.
void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  if (rows.empty()) return;
  std::vector<size_t> widths(rows[0].size(), 0);
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size(); ++i) widths[i] = std::max(widths[i], r[i].size());
  }
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(widths[i] - r[i].size() + 3, ' ');
    }
    std::cout << line << "\n";
  }
}

std::vector<std::string> Header(api::Kind kind, bool with_ns, const std::string& first = "") {
  std::vector<std::string> h;
  if (!first.empty()) h.push_back(first);
  if (with_ns) h.push_back("NAMESPACE");
  if (kind == api::Kind::kSandbox) {
    for (const char* c : {"NAME", "PHASE", "VCPUS", "MEMORY", "IP", "RESTARTS", "AGE"}) {
      h.push_back(c);
    }
  } else {
    for (const char* c : {"NAME", "SANDBOX", "PHASE", "SIZE", "AGE"}) h.push_back(c);
  }
  return h;
}

std::vector<std::string> Row(const v1alpha1::Object& o, bool with_ns,
                             const std::string& first = "") {
  std::vector<std::string> r;
  if (!first.empty()) r.push_back(first);
  const v1alpha1::ObjectMeta& m = Meta(o);
  if (with_ns) r.push_back(m.namespace_());
  r.push_back(m.name());
  if (o.has_sandbox()) {
    const v1alpha1::Sandbox& s = o.sandbox();
    std::string phase = m.has_deletion_timestamp() ? "Terminating" : Phase(s.status());
    r.push_back(phase);
    r.push_back(s.spec().has_vcpus() ? Cat(s.spec().vcpus()) : "-");
    r.push_back(s.spec().has_memory_mib() ? Cat(s.spec().memory_mib(), "Mi") : "-");
    r.push_back(s.status().network().ip().empty() ? "<none>" : s.status().network().ip());
    r.push_back(Cat(s.status().restart_count()));
  } else {
    const v1alpha1::SandboxSnapshot& s = o.snapshot();
    r.push_back(s.spec().sandbox_name());
    r.push_back(Phase(s.status()));
    r.push_back(s.status().size_bytes() > 0 ? Bytes(s.status().size_bytes()) : "-");
  }
  r.push_back(Age(m.creation_timestamp()));
  return r;
}

std::string Name(const v1alpha1::Object& o) {
  api::Kind kind = o.has_sandbox() ? api::Kind::kSandbox : api::Kind::kSandboxSnapshot;
  return Cat(api::SingularName(kind), ".", api::kGroup, "/", Meta(o).name());
}

int PrintObjects(const std::vector<v1alpha1::Object>& items, api::Kind kind, const Args& args,
                 bool single) {
  if (args.output == "table") {
    if (items.empty()) {
      std::cerr << "No resources found"
                << (args.all_namespaces ? "" : Cat(" in ", args.ns, " namespace")) << ".\n";
      return 0;
    }
    std::vector<std::vector<std::string>> rows{Header(kind, args.all_namespaces)};
    for (const auto& o : items) rows.push_back(Row(o, args.all_namespaces));
    PrintTable(rows);
    return 0;
  }
  if (args.output == "name") {
    for (const auto& o : items) std::cout << Name(o) << "\n";
    return 0;
  }
  if (args.output == "yaml") {
    if (single) {
      absl::StatusOr<std::string> y = api::EncodeYaml(Message(items[0]));
      if (!y.ok()) return Fail(std::string(y.status().message()));
      std::cout << *y << (EndsWith(*y, "\n") ? "" : "\n");
      return 0;
    }
    nlohmann::json list = {
        {"apiVersion", "v1"}, {"kind", "List"}, {"items", nlohmann::json::array()}};
    for (const auto& o : items) {
      absl::StatusOr<nlohmann::json> j = api::ToJson(Message(o));
      if (!j.ok()) return Fail(std::string(j.status().message()));
      list["items"].push_back(*j);
    }
    std::string y = api::EncodeYaml(list);
    std::cout << y << (EndsWith(y, "\n") ? "" : "\n");
    return 0;
  }
  // json
  if (single) {
    absl::StatusOr<std::string> j = api::EncodeJson(Message(items[0]), 2);
    if (!j.ok()) return Fail(std::string(j.status().message()));
    std::cout << *j << "\n";
    return 0;
  }
  nlohmann::json list = {
      {"apiVersion", "v1"}, {"kind", "List"}, {"items", nlohmann::json::array()}};
  for (const auto& o : items) {
    absl::StatusOr<nlohmann::json> j = api::ToJson(Message(o));
    if (!j.ok()) return Fail(std::string(j.status().message()));
    list["items"].push_back(*j);
  }
  std::cout << list.dump(2) << "\n";
  return 0;
}

absl::StatusOr<std::string> ReadManifest(const std::string& file) {
  if (file == "-") {
    std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    return text;
  }
  absl::StatusOr<std::string> text = ReadFile(file);
  if (!text.ok())
    return absl::Status(text.status().code(), Cat(file, ": ", text.status().message()));
  return text;
}

int Get(v1alpha1::SandboxService::Stub& stub, const Args& args, api::Kind kind) {
  std::string kind_name(api::KindName(kind));
  if (args.positional.size() >= 2) {
    std::vector<v1alpha1::Object> items;
    for (size_t i = 1; i < args.positional.size(); ++i) {
      grpc::ClientContext ctx;
      SetDeadline(&ctx);
      v1alpha1::GetRequest request;
      request.set_kind(kind_name);
      request.set_namespace_(args.ns);
      request.set_name(args.positional[i]);
      v1alpha1::GetResponse response;
      grpc::Status s = stub.Get(&ctx, request, &response);
      if (!s.ok()) return RpcFail(s);
      items.push_back(response.object());
    }
    return PrintObjects(items, kind, args, items.size() == 1);
  }
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  v1alpha1::ListRequest request;
  request.set_kind(kind_name);
  request.set_namespace_(args.all_namespaces ? "" : args.ns);
  request.set_label_selector(args.selector);
  v1alpha1::ListResponse response;
  grpc::Status s = stub.List(&ctx, request, &response);
  if (!s.ok()) return RpcFail(s);
  std::vector<v1alpha1::Object> items(response.items().begin(), response.items().end());
  return PrintObjects(items, kind, args, false);
}

int Apply(v1alpha1::SandboxService::Stub& stub, const Args& args) {
  if (args.files.empty()) return Fail("apply needs -f FILE (or -f - for standard input)");
  for (const std::string& file : args.files) {
    absl::StatusOr<std::string> text = ReadManifest(file);
    if (!text.ok()) return Fail(std::string(text.status().message()));
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    v1alpha1::ApplyRequest request;
    request.set_manifest(*text);
    request.set_dry_run(args.dry_run);
    request.set_field_validation(args.validate);
    request.set_field_manager("sandboxlet-ctl");
    v1alpha1::ApplyResponse response;
    grpc::Status s = stub.Apply(&ctx, request, &response);
    if (!s.ok()) return Fail(Cat(file == "-" ? "<stdin>" : file, ": ", s.error_message()));
    for (const std::string& w : response.warnings()) std::cerr << "Warning: " << w << "\n";
    for (const auto& a : response.applied()) {
      std::cout << Name(a.object()) << " " << a.action() << (args.dry_run ? " (dry run)" : "")
                << "\n";
    }
  }
  return 0;
}

int DeleteOne(v1alpha1::SandboxService::Stub& stub, api::Kind kind, const std::string& ns,
              const std::string& name) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  v1alpha1::DeleteRequest request;
  request.set_kind(std::string(api::KindName(kind)));
  request.set_namespace_(ns);
  request.set_name(name);
  v1alpha1::DeleteResponse response;
  grpc::Status s = stub.Delete(&ctx, request, &response);
  if (!s.ok()) return RpcFail(s);
  std::cout << api::SingularName(kind) << "." << api::kGroup << " \"" << name << "\" deleted\n";
  return 0;
}

int Delete(v1alpha1::SandboxService::Stub& stub, const Args& args) {
  if (!args.files.empty()) {
    int rc = 0;
    for (const std::string& file : args.files) {
      absl::StatusOr<std::string> text = ReadManifest(file);
      if (!text.ok()) return Fail(std::string(text.status().message()));
      absl::StatusOr<std::vector<api::Decoded>> objects =
          api::DecodeManifests(*text, {.field_validation = api::FieldValidation::kIgnore});
      if (!objects.ok()) return Fail(Cat(file, ": ", objects.status().message()));
      for (const api::Decoded& d : *objects) {
        const auto& meta = api::MetadataOf(d.object);
        std::string ns = meta.namespace_().empty() ? args.ns : meta.namespace_();
        rc |= DeleteOne(stub, api::KindOf(d.object), ns, meta.name());
      }
    }
    return rc;
  }
  if (args.positional.size() < 2) return Fail("delete needs KIND NAME... or -f FILE");
  absl::StatusOr<api::Kind> kind = api::ParseKind(args.positional[0]);
  if (!kind.ok()) return Fail(std::string(kind.status().message()));
  int rc = 0;
  for (size_t i = 1; i < args.positional.size(); ++i) {
    rc |= DeleteOne(stub, *kind, args.ns, args.positional[i]);
  }
  return rc;
}

int Watch(v1alpha1::SandboxService::Stub& stub, const Args& args, api::Kind kind) {
  grpc::ClientContext ctx;
  v1alpha1::WatchRequest request;
  request.set_kind(std::string(api::KindName(kind)));
  request.set_namespace_(args.all_namespaces ? "" : args.ns);
  if (args.positional.size() >= 2) request.set_name(args.positional[1]);
  request.set_label_selector(args.selector);
  auto reader = stub.Watch(&ctx, request);
  v1alpha1::WatchEvent event;
  bool header = false;
  while (reader->Read(&event)) {
    std::string type = v1alpha1::WatchEvent::Type_Name(event.type());
    if (event.type() == v1alpha1::WatchEvent::ERROR) {
      return Fail(Cat("watch ended: ", event.message()));
    }
    if (args.output == "json") {
      absl::StatusOr<nlohmann::json> j = api::ToJson(Message(event.object()));
      if (!j.ok()) return Fail(std::string(j.status().message()));
      std::cout << nlohmann::json{{"type", type}, {"object", *j}}.dump() << std::endl;
      continue;
    }
    std::vector<std::vector<std::string>> rows;
    if (!header) {
      rows.push_back(Header(kind, args.all_namespaces, "EVENT"));
      header = true;
    }
    rows.push_back(Row(event.object(), args.all_namespaces, type));
    PrintTable(rows);
    std::cout.flush();
  }
  grpc::Status s = reader->Finish();
  return s.ok() ? 0 : RpcFail(s);
}

}  // namespace

std::string CtlUsage() {
  return "  sandboxlet ctl get KIND [NAME...] [-n NS | -A] [-l SELECTOR] [-o "
         "table|yaml|json|name]\n"
         "  sandboxlet ctl apply -f FILE|- [-f ...] [--dry-run] [--validate=Strict|Warn|Ignore]\n"
         "  sandboxlet ctl delete KIND NAME... [-n NS]   |   sandboxlet ctl delete -f FILE\n"
         "  sandboxlet ctl watch KIND [NAME] [-n NS | -A] [-o table|json]\n"
         "      KIND: sandboxes (sbx) or sandboxsnapshots (sbxsnap); --socket=PATH (default\n"
         "      $SANDBOXLET_SOCKET or /run/sandboxlet/sandboxlet.sock)\n";
}

int RunCtl(const std::vector<std::string>& argv) {
  Args args;
  if (std::optional<std::string> err = ParseArgs(argv, &args)) {
    return Fail(Cat(*err, "\nusage:\n", CtlUsage()));
  }
  if (args.ns.empty()) args.ns = "default";
  const bool needs_kind =
      args.verb == "get" || args.verb == "watch" || (args.verb == "delete" && args.files.empty());
  if (args.verb != "get" && args.verb != "watch" && args.verb != "apply" && args.verb != "delete") {
    return Fail(Cat("unknown verb \"", args.verb, "\": expected get, apply, delete or watch"));
  }
  std::optional<api::Kind> kind;
  if (needs_kind) {
    if (args.positional.empty() || args.positional[0].empty()) {
      return Fail(Cat(args.verb, " needs a KIND: sandboxes or sandboxsnapshots"));
    }
    absl::StatusOr<api::Kind> k = api::ParseKind(args.positional[0]);
    if (!k.ok()) return Fail(std::string(k.status().message()));
    kind = *k;  // positional: KIND, NAME...
  }
  std::string error;
  std::unique_ptr<v1alpha1::SandboxService::Stub> stub = Connect(args.socket, &error);
  if (stub == nullptr) return Fail(error);
  if (args.verb == "get") return Get(*stub, args, *kind);
  if (args.verb == "watch") return Watch(*stub, args, *kind);
  if (args.verb == "apply") return Apply(*stub, args);
  return Delete(*stub, args);
}

}  // namespace sandboxlet::cli

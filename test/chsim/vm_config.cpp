#include "test/chsim/vm_config.h"

#include <random>
#include <vector>

#include "runtime/base/strings.h"

namespace sandboxlet::chsim {
namespace {

enum class Kind { kBool, kUint, kString, kEnum, kObject, kObjectArray, kAny };

struct Field {
  const char* name;
  Kind kind;
  Json fallback = nullptr;  // default value; null = Option::None
  bool required = false;
  const std::vector<Field>* fields = nullptr;  // kObject / kObjectArray
  std::vector<std::string> variants = {};      // kEnum
  int since = 0;                               // first major that knows the field
  int until = 1000;                            // last major with `fallback` (else null)
};

const std::vector<std::string> kConsoleModes = {"Off", "Pty", "Tty", "File", "Socket", "Null"};

const std::vector<Field> kCpus = {
    {"boot_vcpus", Kind::kUint, nullptr, true},
    {"max_vcpus", Kind::kUint, nullptr, true},
    {"topology", Kind::kAny},
    {"kvm_hyperv", Kind::kBool, false},
    {"max_phys_bits", Kind::kUint, 46},
    {"affinity", Kind::kAny},
    {"features", Kind::kAny, Json::object()},
};
const std::vector<Field> kMemory = {
    {"size", Kind::kUint, nullptr, true},
    {"mergeable", Kind::kBool, false},
    {"hotplug_method", Kind::kEnum, "Acpi", false, nullptr, {"Acpi", "VirtioMem"}},
    {"hotplug_size", Kind::kUint},
    {"hotplugged_size", Kind::kUint},
    {"shared", Kind::kBool, false},
    {"hugepages", Kind::kBool, false},
    {"hugepage_size", Kind::kUint},
    {"prefault", Kind::kBool, false},
    {"zones", Kind::kAny},
    {"thp", Kind::kBool, true},
};
const std::vector<Field> kPayload = {
    {"firmware", Kind::kString},  {"kernel", Kind::kString}, {"cmdline", Kind::kString},
    {"initramfs", Kind::kString}, {"igvm", Kind::kString},   {"host_data", Kind::kString},
};
const std::vector<Field> kDisk = {
    {"path", Kind::kString},
    {"readonly", Kind::kBool, false},
    {"direct", Kind::kBool, false},
    {"iommu", Kind::kBool, false},
    {"num_queues", Kind::kUint, 1},
    {"queue_size", Kind::kUint, 128},
    {"vhost_user", Kind::kBool, false},
    {"vhost_socket", Kind::kString},
    {"rate_limit_group", Kind::kString},
    {"rate_limiter_config", Kind::kAny},
    {"id", Kind::kString},
    {"disable_io_uring", Kind::kBool, false},
    {"disable_aio", Kind::kBool, false},
    {"pci_segment", Kind::kUint, 0},
    {"serial", Kind::kString},
    {"queue_affinity", Kind::kAny},
    {"backing_files", Kind::kBool, false, false, nullptr, {}, 51},
    {"sparse", Kind::kBool, true, false, nullptr, {}, 51},
    {"image_type",
     Kind::kEnum,
     nullptr,
     false,
     nullptr,
     {"FixedVhd", "Qcow2", "Raw", "Vhdx", "Unknown"},
     51},
};
const std::vector<Field> kNet = {
    {"tap", Kind::kString},
    {"ip", Kind::kString, "192.168.249.1", false, nullptr, {}, 0, 48},
    {"mask", Kind::kString, "255.255.255.0", false, nullptr, {}, 0, 48},
    {"mac", Kind::kString},  // random when absent, see NormalizeNet
    {"host_mac", Kind::kString},
    {"mtu", Kind::kUint},
    {"iommu", Kind::kBool, false},
    {"num_queues", Kind::kUint, 2},
    {"queue_size", Kind::kUint, 256},
    {"vhost_user", Kind::kBool, false},
    {"vhost_socket", Kind::kString},
    {"vhost_mode", Kind::kEnum, "Client", false, nullptr, {"Client", "Server"}},
    {"id", Kind::kString},
    {"fds", Kind::kAny},
    {"rate_limiter_config", Kind::kAny},
    {"pci_segment", Kind::kUint, 0},
    {"offload_tso", Kind::kBool, true},
    {"offload_ufo", Kind::kBool, true},
    {"offload_csum", Kind::kBool, true},
};
const std::vector<Field> kRng = {
    {"src", Kind::kString, nullptr, true},
    {"iommu", Kind::kBool, false},
};
const std::vector<Field> kConsole = {
    {"file", Kind::kString},
    {"mode", Kind::kEnum, nullptr, true, nullptr, kConsoleModes},
    {"iommu", Kind::kBool, false},
    {"socket", Kind::kString},
};
const std::vector<Field> kVsock = {
    {"cid", Kind::kUint, nullptr, true}, {"socket", Kind::kString, nullptr, true},
    {"iommu", Kind::kBool, false},       {"id", Kind::kString},
    {"pci_segment", Kind::kUint, 0},
};
const std::vector<Field> kVmConfig = {
    {"cpus", Kind::kObject, {{"boot_vcpus", 1}, {"max_vcpus", 1}}, false, &kCpus},
    {"memory", Kind::kObject, {{"size", kDefaultMemorySize}}, false, &kMemory},
    {"payload", Kind::kObject, nullptr, false, &kPayload},
    {"rate_limit_groups", Kind::kAny},
    {"disks", Kind::kObjectArray, nullptr, false, &kDisk},
    {"net", Kind::kObjectArray, nullptr, false, &kNet},
    {"rng", Kind::kObject, {{"src", "/dev/urandom"}}, false, &kRng},
    {"balloon", Kind::kAny},
    {"fs", Kind::kAny},
    {"pmem", Kind::kAny},
    {"serial", Kind::kObject, {{"mode", "Null"}}, false, &kConsole},
    {"console", Kind::kObject, {{"mode", "Tty"}}, false, &kConsole},
    {"debug_console", Kind::kAny},
    {"devices", Kind::kAny},
    {"user_devices", Kind::kAny},
    {"vdpa", Kind::kAny},
    {"vsock", Kind::kObject, nullptr, false, &kVsock},
    {"pvpanic", Kind::kBool, false},
    {"iommu", Kind::kBool, false},
    {"numa", Kind::kAny},
    {"watchdog", Kind::kBool, false},
    {"pci_segments", Kind::kAny},
    {"platform", Kind::kAny},
    {"tpm", Kind::kAny},
    {"landlock_enable", Kind::kBool, false, false, nullptr, {}, 41},
    {"landlock_rules", Kind::kAny, nullptr, false, nullptr, {}, 41},
};
const std::vector<Field> kNetFds = {
    {"id", Kind::kString, nullptr, true},
    {"num_fds", Kind::kUint, nullptr, true},
};
const std::vector<Field> kRestore = {
    {"source_url", Kind::kString, nullptr, true},
    {"prefault", Kind::kBool, false},
    {"memory_restore_mode", Kind::kEnum, "Copy", false, nullptr, {"Copy", "OnDemand"}, 52},
    {"resume", Kind::kBool, false, false, nullptr, {}, 52},
    {"net_fds", Kind::kObjectArray, nullptr, false, &kNetFds, {}, 40},
};

const char* TypeName(const Json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "boolean";
  if (v.is_number_integer()) return "integer";
  if (v.is_number()) return "floating point";
  if (v.is_string()) return "string";
  if (v.is_array()) return "sequence";
  return "map";
}

absl::Status Invalid(const std::string& where, const std::string& what) {
  return absl::InvalidArgumentError(where.empty() ? what : Cat(where, ": ", what));
}

absl::StatusOr<Json> Normalize(const Json& in, const std::vector<Field>& schema,
                               const ChVersion& version, const std::string& where);

absl::StatusOr<Json> NormalizeValue(const Field& f, const Json& v, const ChVersion& version,
                                    const std::string& where) {
  switch (f.kind) {
    case Kind::kAny:
      return v;
    case Kind::kBool:
      if (!v.is_boolean()) break;
      return v;
    case Kind::kUint:
      if (!v.is_number_integer()) break;
      if (!v.is_number_unsigned() && v.get<int64_t>() < 0) {
        return Invalid(where, Cat("invalid value: integer `", v.dump(), "`, expected u64"));
      }
      return Json(v.get<uint64_t>());
    case Kind::kString:
      if (!v.is_string()) break;
      return v;
    case Kind::kEnum: {
      if (!v.is_string()) break;
      const std::string s = v.get<std::string>();
      for (const std::string& variant : f.variants) {
        if (s == variant) return v;
      }
      std::vector<std::string> quoted;
      for (const std::string& variant : f.variants) quoted.push_back(Cat("`", variant, "`"));
      return Invalid(where, Cat("unknown variant `", s, "`, expected one of ", Join(quoted, ", ")));
    }
    case Kind::kObject:
      return Normalize(v, *f.fields, version, where);
    case Kind::kObjectArray: {
      if (!v.is_array()) break;
      Json out = Json::array();
      for (size_t i = 0; i < v.size(); ++i) {
        absl::StatusOr<Json> item = Normalize(v[i], *f.fields, version, Cat(where, "[", i, "]"));
        if (!item.ok()) return item.status();
        out.push_back(*std::move(item));
      }
      return out;
    }
  }
  static const char* const kExpected[] = {"a boolean", "u64",        "a string", "a string",
                                          "struct",    "a sequence", "any"};
  return Invalid(where, Cat("invalid type: ", TypeName(v), ", expected ",
                            kExpected[static_cast<int>(f.kind)]));
}

absl::StatusOr<Json> Normalize(const Json& in, const std::vector<Field>& schema,
                               const ChVersion& version, const std::string& where) {
  if (!in.is_object()) {
    return Invalid(where, Cat("invalid type: ", TypeName(in), ", expected struct"));
  }
  Json out = Json::object();
  for (const Field& f : schema) {
    if (version.behaviour < f.since) continue;  // a field this release does not know is ignored
    const std::string path = where.empty() ? f.name : Cat(where, ".", f.name);
    auto it = in.find(f.name);
    if (it == in.end() || (it->is_null() && f.fallback.is_null() && !f.required)) {
      if (f.required) return Invalid(where, Cat("missing field `", f.name, "`"));
      Json fallback = version.behaviour <= f.until ? f.fallback : Json(nullptr);
      if (f.kind == Kind::kObject && !fallback.is_null()) {
        absl::StatusOr<Json> filled = Normalize(fallback, *f.fields, version, path);
        if (!filled.ok()) return filled.status();
        fallback = *std::move(filled);
      }
      out[f.name] = fallback;
      continue;
    }
    absl::StatusOr<Json> value = NormalizeValue(f, *it, version, path);
    if (!value.ok()) return value.status();
    out[f.name] = *std::move(value);
  }
  return out;
}

void FillMacs(Json& nets) {
  if (!nets.is_array()) return;
  for (Json& net : nets) {
    if (net["mac"].is_null()) net["mac"] = RandomMac();
  }
}

void DropNulls(Json& v) {
  if (v.is_object()) {
    for (auto it = v.begin(); it != v.end();) {
      if (it->is_null()) {
        it = v.erase(it);
      } else {
        DropNulls(*it);
        ++it;
      }
    }
  } else if (v.is_array()) {
    for (Json& item : v) DropNulls(item);
  }
}

}  // namespace

absl::StatusOr<Json> NormalizeVmConfig(const Json& in, const ChVersion& version) {
  absl::StatusOr<Json> out = Normalize(in, kVmConfig, version, "");
  if (out.ok()) FillMacs((*out)["net"]);
  return out;
}

absl::StatusOr<Json> NormalizeDiskConfig(const Json& in, const ChVersion& version) {
  return Normalize(in, kDisk, version, "");
}

absl::StatusOr<Json> NormalizeNetConfig(const Json& in, const ChVersion& version) {
  absl::StatusOr<Json> out = Normalize(in, kNet, version, "");
  if (out.ok() && (*out)["mac"].is_null()) (*out)["mac"] = RandomMac();
  return out;
}

absl::StatusOr<Json> NormalizeRestoreConfig(const Json& in, const ChVersion& version) {
  return Normalize(in, kRestore, version, "");
}

Json SerializeVmConfig(const Json& config, const ChVersion& version) {
  Json out = config;
  if (version.AtLeast(53)) DropNulls(out);
  return out;
}

std::string RandomMac() {
  static std::mt19937_64 rng(std::random_device{}());
  uint64_t r = rng();
  char buf[18];
  std::snprintf(buf, sizeof(buf), "%02x:%02x:%02x:%02x:%02x:%02x",
                static_cast<unsigned>(((r >> 40) & 0xfe) | 0x02),
                static_cast<unsigned>((r >> 32) & 0xff), static_cast<unsigned>((r >> 24) & 0xff),
                static_cast<unsigned>((r >> 16) & 0xff), static_cast<unsigned>((r >> 8) & 0xff),
                static_cast<unsigned>(r & 0xff));
  return buf;
}

}  // namespace sandboxlet::chsim

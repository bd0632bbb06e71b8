#include "runtime/network/nftables.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <sys/select.h>
#include <unistd.h>

#include <mutex>

#include "runtime/base/command.h"
#include "runtime/base/strings.h"

namespace sandboxlet::network {
namespace {

// The stable public C API of libnftables (libnftables(3)).
struct NftApi {
  using CtxNew = void* (*)(unsigned int);
  using CtxFree = void (*)(void*);
  using BufferOn = int (*)(void*);
  using GetBuffer = const char* (*)(void*);
  using RunBuffer = int (*)(void*, const char*);
  CtxNew ctx_new = nullptr;
  CtxFree ctx_free = nullptr;
  BufferOn buffer_output = nullptr;
  BufferOn buffer_error = nullptr;
  GetBuffer get_output = nullptr;
  GetBuffer get_error = nullptr;
  RunBuffer run_cmd = nullptr;

  static const NftApi* Load() {
    static const NftApi* api = []() -> const NftApi* {
      void* lib = ::dlopen("libnftables.so.1", RTLD_NOW | RTLD_LOCAL);
      if (lib == nullptr) return nullptr;
      auto* a = new NftApi;
      a->ctx_new = reinterpret_cast<CtxNew>(::dlsym(lib, "nft_ctx_new"));
      a->ctx_free = reinterpret_cast<CtxFree>(::dlsym(lib, "nft_ctx_free"));
      a->buffer_output = reinterpret_cast<BufferOn>(::dlsym(lib, "nft_ctx_buffer_output"));
      a->buffer_error = reinterpret_cast<BufferOn>(::dlsym(lib, "nft_ctx_buffer_error"));
      a->get_output = reinterpret_cast<GetBuffer>(::dlsym(lib, "nft_ctx_get_output_buffer"));
      a->get_error = reinterpret_cast<GetBuffer>(::dlsym(lib, "nft_ctx_get_error_buffer"));
      a->run_cmd = reinterpret_cast<RunBuffer>(::dlsym(lib, "nft_run_cmd_from_buffer"));
      if (!a->ctx_new || !a->ctx_free || !a->buffer_output || !a->buffer_error || !a->get_output ||
          !a->get_error || !a->run_cmd) {
        delete a;
        return nullptr;
      }
      return a;
    }();
    return api;
  }
};

std::string TrimmedCopy(const char* s) { return std::string(Trim(s == nullptr ? "" : s)); }

// libnftables waits on its netlink socket with select(), and glibc aborts the process when that
// fd is FD_SETSIZE (1024) or more. A node agent with hundreds of sandboxes holds more fds than
// that (pidfds, API sockets), so once the lowest free fd is past this mark the nft program does
// the work instead: slower (a fork and exec), never fatal.
constexpr int kLibraryFdLimit = FD_SETSIZE / 2;

bool LowFdsAvailable() {
  int probe = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (probe < 0) return false;
  ::close(probe);
  return probe < kLibraryFdLimit;
}

absl::StatusOr<std::string> RunNftProgram(const std::string& script, const std::string& what) {
  CommandOptions opts;
  opts.stdin_data = script;
  auto r = RunCommand({"nft", "-f", "-"}, opts);
  if (!r.ok()) return absl::Status(r.status().code(), Cat(what, ": ", r.status().message()));
  if (!r->ok()) {
    return absl::InternalError(Cat(what, ": nft: exit ", r->exit_code, ": ", Trim(r->err)));
  }
  return r->out;
}

}  // namespace

absl::StatusOr<std::string> RunNft(const std::string& script, const std::string& what) {
  const NftApi* api = NftApi::Load();
  if (api == nullptr || !LowFdsAvailable()) return RunNftProgram(script, what);
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  // A context opens its netlink socket in the current thread's namespace, so one per call.
  void* ctx = api->ctx_new(0);
  if (ctx == nullptr) return absl::InternalError(Cat(what, ": nft_ctx_new failed"));
  api->buffer_output(ctx);
  api->buffer_error(ctx);
  int rc = api->run_cmd(ctx, script.c_str());
  std::string out = TrimmedCopy(api->get_output(ctx));
  std::string err = TrimmedCopy(api->get_error(ctx));
  api->ctx_free(ctx);
  if (rc != 0) {
    return absl::InternalError(Cat(what, ": nft: ", err.empty() ? "failed" : err));
  }
  return out;
}

}  // namespace sandboxlet::network

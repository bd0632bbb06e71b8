// Object store throughput: creating 1,000 Sandbox objects (one durable transaction each),
// status writes, and listing 1,000 objects. Reports items/s; never gates anything.
#include <stdlib.h>

#include <benchmark/benchmark.h>

#include <memory>
#include <string>

#include "controller/store/object_store.h"
#include "runtime/base/fs.h"
#include "runtime/base/log.h"
#include "runtime/base/strings.h"

namespace sandboxlet::store {
namespace {

using json = nlohmann::json;

// A store in a fresh directory under /tmp, removed afterwards.
class ScratchStore {
 public:
  ScratchStore() {
    char tmpl[] = "/tmp/sbl-store-bench-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) return;
    dir_ = tmpl;
    auto store = ObjectStore::Open(dir_ + "/store.db");
    if (store.ok()) store_ = std::move(*store);
  }
  ~ScratchStore() {
    store_.reset();
    if (!dir_.empty()) (void)RemoveAll(dir_);
  }
  ObjectStore* get() { return store_.get(); }

 private:
  std::string dir_;
  std::unique_ptr<ObjectStore> store_;
};

json Sandbox(int i) {
  return {{"apiVersion", "sandboxlet.dev/v1alpha1"},
          {"kind", "Sandbox"},
          {"metadata",
           {{"name", Cat("sandbox-", i)},
            {"namespace", "default"},
            {"labels", {{"app", i % 2 == 0 ? "web" : "worker"}}},
            {"finalizers", {"sandboxlet.dev/cleanup"}}}},
          {"spec",
           {{"template", "python-3.12"},
            {"vcpus", 2},
            {"memoryMiB", 1024},
            {"diskMiB", 4096},
            {"power", "Running"},
            {"restartPolicy", "OnFailure"},
            {"env", {{"MODE", "batch"}, {"TOKEN_FILE", "/run/token"}}}}}};
}

void BM_Create1000(benchmark::State& state) {
  log::Configure(log::Level::kWarn, log::Format::kLogfmt);
  for (auto _ : state) {
    state.PauseTiming();
    auto scratch = std::make_unique<ScratchStore>();
    if (scratch->get() == nullptr) {
      state.SkipWithError("cannot open a store under /tmp");
      return;
    }
    state.ResumeTiming();
    for (int i = 0; i < 1000; ++i) {
      auto created = scratch->get()->Create("sandboxes", Sandbox(i));
      if (!created.ok()) {
        state.SkipWithError(std::string(created.status().message()).c_str());
        return;
      }
    }
    state.PauseTiming();
    scratch.reset();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations() * 1000);
}
BENCHMARK(BM_Create1000)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_UpdateStatus(benchmark::State& state) {
  log::Configure(log::Level::kWarn, log::Format::kLogfmt);
  ScratchStore scratch;
  if (scratch.get() == nullptr) {
    state.SkipWithError("cannot open a store under /tmp");
    return;
  }
  constexpr int kObjects = 100;
  for (int i = 0; i < kObjects; ++i) (void)scratch.get()->Create("sandboxes", Sandbox(i));
  int64_t n = 0;
  for (auto _ : state) {
    json request = {
        {"metadata", {{"name", Cat("sandbox-", n % kObjects)}, {"namespace", "default"}}},
        {"status",
         {{"phase", "Running"},
          {"restartCount", n},
          {"vmm", {{"pid", 4242}, {"version", "v41.0"}}},
          {"conditions", {{{"type", "Ready"}, {"status", "True"}}}}}}};
    auto updated = scratch.get()->UpdateStatus("sandboxes", request);
    if (!updated.ok()) {
      state.SkipWithError(std::string(updated.status().message()).c_str());
      return;
    }
    ++n;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_UpdateStatus)->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_List1000(benchmark::State& state) {
  log::Configure(log::Level::kWarn, log::Format::kLogfmt);
  ScratchStore scratch;
  if (scratch.get() == nullptr) {
    state.SkipWithError("cannot open a store under /tmp");
    return;
  }
  for (int i = 0; i < 1000; ++i) (void)scratch.get()->Create("sandboxes", Sandbox(i));
  ListOptions options;
  if (state.range(0) == 1) options.labels = *LabelSelector::Parse("app=web");
  for (auto _ : state) {
    auto list = scratch.get()->List("sandboxes", "", options);
    if (!list.ok()) {
      state.SkipWithError(std::string(list.status().message()).c_str());
      return;
    }
    benchmark::DoNotOptimize(list->items.data());
  }
  state.SetItemsProcessed(state.iterations() * 1000);
}
BENCHMARK(BM_List1000)->Arg(0)->Arg(1)->ArgName("selector")->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace sandboxlet::store

BENCHMARK_MAIN();

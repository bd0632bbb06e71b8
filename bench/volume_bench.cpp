// Root volume clone of a 1 GiB base image holding 200 MiB of data (the rest holes):
//   - reflink (FICLONE) on an XFS filesystem mounted from a loop device,
//   - the file backend's sparse copy (SEEK_DATA/SEEK_HOLE + copy_file_range) on /tmp,
//   - `cp --sparse=always` on /tmp, for reference,
//   - the sparse copy with the fsync the volume backend does before publishing a disk.
// The first three do not fsync (cp does not), so they compare the copying itself; data sits in
// the page cache after the first iteration. Needs root for the XFS mount (skipped otherwise).
// Run: build/bench/volume_bench [--benchmark_repetitions=3]
#include <unistd.h>

#include <memory>
#include <string>

#include "benchmark/benchmark.h"
#include "runtime/base/command.h"
#include "runtime/base/fs.h"
#include "runtime/volume/clone.h"
#include "test/runtime/volume/scratch_fs.h"

namespace sandboxlet {
namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kImageSize = 1024 * kMiB;
constexpr uint64_t kDataBytes = 200 * kMiB;

// One work directory and one XFS mount for the whole run, removed at exit.
struct Fixture {
  std::string dir;
  std::string tmp_image;  // on /tmp's filesystem
  std::unique_ptr<testing::ScratchFs> xfs;
  std::string xfs_image;  // on the XFS mount
  std::string xfs_error;

  Fixture() {
    dir = testing::MakeTempDir("volbench");
    tmp_image = dir + "/base.img";
    if (dir.empty() || !testing::WriteSparseImage(tmp_image, kImageSize, kDataBytes)) {
      xfs_error = "cannot write the base image under /tmp";
      return;
    }
    auto fs = testing::ScratchFs::Make(dir, "xfs", 2048);
    if (!fs.ok()) {
      xfs_error = std::string(fs.status().message());
      return;
    }
    xfs = std::move(*fs);
    xfs_image = xfs->path() + "/base.img";
    if (!testing::WriteSparseImage(xfs_image, kImageSize, kDataBytes)) {
      xfs_error = "cannot write the base image on XFS";
      xfs.reset();
    }
  }
  ~Fixture() {
    xfs.reset();
    (void)RemoveAll(dir);
  }
};

Fixture& Get() {
  static Fixture* fixture = new Fixture();
  return *fixture;
}

void Report(benchmark::State& state) {
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kDataBytes));
  state.counters["image_MiB"] = static_cast<double>(kImageSize / kMiB);
  state.counters["data_MiB"] = static_cast<double>(kDataBytes / kMiB);
}

void CloneWith(benchmark::State& state, const std::string& src, const CloneOptions& options,
               CloneMethod expected) {
  std::string dst = src + ".clone";
  for (auto _ : state) {
    auto method = CloneFile(src, dst, options);
    if (!method.ok() || *method != expected) {
      state.SkipWithError(method.ok() ? "unexpected clone method"
                                      : std::string(method.status().message()).c_str());
      break;
    }
    state.PauseTiming();
    ::unlink(dst.c_str());
    state.ResumeTiming();
  }
  ::unlink(dst.c_str());
  Report(state);
}

void BM_CloneReflinkXfs(benchmark::State& state) {
  Fixture& f = Get();
  if (!f.xfs) {
    state.SkipWithError(("no XFS mount: " + f.xfs_error).c_str());
    return;
  }
  CloneOptions options;
  options.fsync = false;
  CloneWith(state, f.xfs_image, options, CloneMethod::kReflink);
}

void BM_CloneSparseCopyTmp(benchmark::State& state) {
  CloneOptions options;
  options.allow_reflink = false;
  options.fsync = false;
  CloneWith(state, Get().tmp_image, options, CloneMethod::kSparseCopy);
}

void BM_CloneSparseCopyFsyncTmp(benchmark::State& state) {
  CloneOptions options;
  options.allow_reflink = false;
  CloneWith(state, Get().tmp_image, options, CloneMethod::kSparseCopy);
}

void BM_CpSparseAlwaysTmp(benchmark::State& state) {
  const std::string& src = Get().tmp_image;
  std::string dst = src + ".cp";
  for (auto _ : state) {
    auto r = RunChecked({"cp", "--sparse=always", src, dst}, {std::chrono::seconds(300)});
    if (!r.ok()) {
      state.SkipWithError(std::string(r.status().message()).c_str());
      break;
    }
    state.PauseTiming();
    ::unlink(dst.c_str());
    state.ResumeTiming();
  }
  ::unlink(dst.c_str());
  Report(state);
}

BENCHMARK(BM_CloneReflinkXfs)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(10);
BENCHMARK(BM_CloneSparseCopyTmp)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(5);
BENCHMARK(BM_CpSparseAlwaysTmp)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(5);
BENCHMARK(BM_CloneSparseCopyFsyncTmp)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

}  // namespace
}  // namespace sandboxlet

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  delete &sandboxlet::Get();  // unmount and remove the work directory
  return 0;
}

// DirSize (runtime/snapshot/dir_size.h) against running `du -sB1` on the same tree, as the
// snapshot-size metric would otherwise do. Two data sets: 10,000 small files in 100 directories,
// and one 4 GiB sparse file with a few MiB allocated (like CH's memory-ranges, CONTRACT §5).
// Each DirSize benchmark checks its result against du's. After the run the ratio
// DirSize time / du time is printed per data set (target: <= 1.0).
#include <fcntl.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "runtime/base/command.h"
#include "runtime/base/fs.h"
#include "runtime/snapshot/dir_size.h"

extern char** environ;

namespace sandboxlet {
namespace {

struct DataSet {
  std::string dir;
  int64_t du_bytes = 0;
};

// Data sets created by this run, removed at exit.
std::vector<std::string>& Created() {
  static std::vector<std::string> dirs;
  return dirs;
}

std::string MakeTemp() {
  char tmpl[] = "/tmp/dir-size-bench-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    std::perror("mkdtemp");
    std::exit(1);
  }
  Created().push_back(tmpl);
  return tmpl;
}

int64_t DuBytes(const std::string& dir) {
  absl::StatusOr<CommandResult> r = RunChecked({"du", "-sB1", dir});
  if (!r.ok()) {
    std::fprintf(stderr, "du: %s\n", std::string(r.status().message()).c_str());
    std::exit(1);
  }
  return std::stoll(r->out);
}

DataSet& SmallFiles() {
  static DataSet* ds = [] {
    auto* d = new DataSet{MakeTemp()};
    std::string content(700, 'x');
    for (int i = 0; i < 100; ++i) {
      std::string sub = d->dir + "/d" + std::to_string(i);
      if (!MakeDirs(sub).ok()) std::exit(1);
      for (int j = 0; j < 100; ++j) {
        int fd = ::open((sub + "/f" + std::to_string(j)).c_str(), O_WRONLY | O_CREAT, 0644);
        if (fd < 0 || ::write(fd, content.data(), content.size() - j) < 0) std::exit(1);
        ::close(fd);
      }
    }
    d->du_bytes = DuBytes(d->dir);
    return d;
  }();
  return *ds;
}

DataSet& SparseFile() {
  static DataSet* ds = [] {
    auto* d = new DataSet{MakeTemp()};
    int fd = ::open((d->dir + "/memory-ranges").c_str(), O_WRONLY | O_CREAT, 0600);
    if (fd < 0 || ::ftruncate(fd, off_t{4} << 30) != 0) std::exit(1);
    std::string mib(1 << 20, 'm');
    for (int i = 0; i < 4; ++i) {
      if (::pwrite(fd, mib.data(), mib.size(), off_t{i} << 30) < 0) std::exit(1);
    }
    ::close(fd);
    d->du_bytes = DuBytes(d->dir);
    return d;
  }();
  return *ds;
}

// Mean seconds per iteration of the last (measured) run of each benchmark, for the ratios.
std::map<std::string, double>& MeanSeconds() {
  static std::map<std::string, double> m;
  return m;
}

void RecordMean(const std::string& name, std::chrono::steady_clock::duration total,
                benchmark::IterationCount iterations) {
  if (iterations > 0) {
    MeanSeconds()[name] = std::chrono::duration<double>(total).count() / iterations;
  }
}

void RunDirSize(benchmark::State& state, DataSet& ds, const std::string& name) {
  int64_t bytes = 0;
  auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    absl::StatusOr<int64_t> size = DirSize(ds.dir);
    if (!size.ok()) {
      state.SkipWithError(std::string(size.status().message()).c_str());
      return;
    }
    bytes = *size;
    benchmark::DoNotOptimize(bytes);
  }
  RecordMean(name, std::chrono::steady_clock::now() - start, state.iterations());
  if (bytes != ds.du_bytes) state.SkipWithError("DirSize differs from du -sB1");
  state.counters["bytes"] = static_cast<double>(bytes);
}

// fork/exec of du with its output discarded, as a caller shelling out would pay.
void RunDu(benchmark::State& state, DataSet& ds, const std::string& name) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  std::string arg0 = "du", arg1 = "-sB1";
  char* argv[] = {arg0.data(), arg1.data(), ds.dir.data(), nullptr};
  auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    pid_t pid;
    if (posix_spawnp(&pid, "du", &actions, nullptr, argv, environ) != 0) {
      state.SkipWithError("cannot start du");
      break;
    }
    int status = 0;
    if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      state.SkipWithError("du failed");
      break;
    }
  }
  RecordMean(name, std::chrono::steady_clock::now() - start, state.iterations());
  posix_spawn_file_actions_destroy(&actions);
  state.counters["bytes"] = static_cast<double>(ds.du_bytes);
}

void BM_DirSize_SmallFiles(benchmark::State& s) { RunDirSize(s, SmallFiles(), "small/DirSize"); }
void BM_Du_SmallFiles(benchmark::State& s) { RunDu(s, SmallFiles(), "small/du"); }
void BM_DirSize_Sparse4GiB(benchmark::State& s) { RunDirSize(s, SparseFile(), "sparse/DirSize"); }
void BM_Du_Sparse4GiB(benchmark::State& s) { RunDu(s, SparseFile(), "sparse/du"); }

BENCHMARK(BM_DirSize_SmallFiles)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Du_SmallFiles)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_DirSize_Sparse4GiB)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_Du_Sparse4GiB)->Unit(benchmark::kMicrosecond)->UseRealTime();

void PrintRatios() {
  for (const char* set : {"small", "sparse"}) {
    auto& m = MeanSeconds();
    auto ours = m.find(std::string(set) + "/DirSize"), du = m.find(std::string(set) + "/du");
    if (ours == m.end() || du == m.end() || du->second <= 0) continue;
    std::printf("ratio DirSize/du %-7s %.3f  (DirSize %.3f ms, du -sB1 %.3f ms)\n", set,
                ours->second / du->second, ours->second * 1e3, du->second * 1e3);
  }
}

}  // namespace
}  // namespace sandboxlet

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  sandboxlet::PrintRatios();
  for (const std::string& dir : sandboxlet::Created()) (void)sandboxlet::RemoveAll(dir);
  return 0;
}

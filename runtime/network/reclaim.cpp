#include "runtime/network/reclaim.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <mutex>
#include <thread>

#include "runtime/base/log.h"
#include "runtime/base/strings.h"

namespace sandboxlet::network {
namespace {

constexpr size_t kMaxErrors = 10;

// Runs tasks on up to `parallelism` threads; each task returns OK or an error.
void RunBounded(const std::vector<std::function<absl::Status()>>& tasks, int parallelism,
                const std::function<void(size_t, const absl::Status&)>& done) {
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i = next++; i < tasks.size(); i = next++) done(i, tasks[i]());
  };
  size_t n = std::min<size_t>(static_cast<size_t>(std::max(parallelism, 1)), tasks.size());
  std::vector<std::thread> threads;
  for (size_t i = 1; i < n; ++i) threads.emplace_back(worker);
  if (n > 0) worker();
  for (auto& t : threads) t.join();
}

}  // namespace

absl::StatusOr<NetworkReclaimResult> ReclaimNetworkLeftovers(SandboxNetwork& network,
                                                             const std::set<std::string>& claimed,
                                                             int parallelism) {
  auto leftovers = network.ListLeftovers();
  if (!leftovers.ok()) {
    return absl::Status(leftovers.status().code(),
                        Cat("reclaim network leftovers: ", leftovers.status().message()));
  }
  NetworkReclaimResult result;
  std::mutex mu;  // guards result and failed_veth_slots inside the pool
  std::set<std::string> failed_veth_owners;

  enum class Kind { kVeth, kNetns };
  struct Task {
    Kind kind;
    std::string name;   // veth name or netns id
    std::string owner;  // id owning the veth's slot, if any
  };
  std::vector<Task> tasks;
  for (const std::string& veth : leftovers->host_veths) {
    auto owner = network.slots().OwnerOf(static_cast<uint32_t>(network.SlotOfHostVeth(veth)));
    if (owner.ok() && claimed.count(*owner) != 0) continue;
    tasks.push_back({Kind::kVeth, veth, owner.ok() ? *owner : ""});
  }
  for (const std::string& id : leftovers->netns_ids) {
    if (claimed.count(id) == 0) tasks.push_back({Kind::kNetns, id, ""});
  }
  std::vector<std::function<absl::Status()>> work;
  for (const Task& t : tasks) {
    work.push_back([&network, &t] {
      return t.kind == Kind::kVeth ? network.DeleteHostVeth(t.name) : network.DeleteNetns(t.name);
    });
  }
  RunBounded(work, parallelism, [&](size_t i, const absl::Status& st) {
    std::lock_guard<std::mutex> lock(mu);
    const Task& t = tasks[i];
    if (st.ok()) {
      (t.kind == Kind::kVeth ? result.veths_removed : result.netns_removed)++;
      return;
    }
    ++result.failures;
    if (result.errors.size() < kMaxErrors) result.errors.emplace_back(st.message());
    if (t.kind == Kind::kVeth && !t.owner.empty()) failed_veth_owners.insert(t.owner);
  });

  std::vector<std::string> release;
  for (const Slot& s : leftovers->slots) {
    if (claimed.count(s.id) == 0 && failed_veth_owners.count(s.id) == 0) release.push_back(s.id);
  }
  if (absl::Status st = network.slots().ReleaseMany(release); !st.ok()) {
    ++result.failures;
    if (result.errors.size() < kMaxErrors) result.errors.emplace_back(st.message());
  } else {
    result.slots_released = static_cast<int>(release.size());
  }
  log::Info("network leftovers reclaimed", {{"netns", result.netns_removed},
                                            {"veths", result.veths_removed},
                                            {"slots", result.slots_released},
                                            {"failures", result.failures}});
  return result;
}

}  // namespace sandboxlet::network

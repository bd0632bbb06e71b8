#include "controller/metrics/store_collector.h"

#include <map>

#include "runtime/base/errors.h"
#include "runtime/base/log.h"
#include "runtime/base/strings.h"

namespace sandboxlet::metrics {
namespace {

constexpr int64_t kPageSize = 500;

// status.phase as a label value. Phases are a fixed enum written by the controllers; anything
// else (a hand-edited store) is reported as "Unknown" so the label stays bounded.
std::string PhaseOf(const nlohmann::json& object) {
  const auto status = object.find("status");
  if (status == object.end() || !status->is_object()) return "Pending";
  const auto phase = status->find("phase");
  if (phase == status->end() || !phase->is_string()) return "Pending";
  const std::string& p = phase->get_ref<const std::string&>();
  if (p.empty() || p == "PhaseUnset") return "Pending";
  if (p.size() > 32) return "Unknown";
  for (char c : p) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) return "Unknown";
  }
  return p;
}

std::string MetaString(const nlohmann::json& object, const char* field) {
  const auto meta = object.find("metadata");
  if (meta == object.end() || !meta->is_object()) return "";
  const auto v = meta->find(field);
  return v != meta->end() && v->is_string() ? v->get<std::string>() : "";
}

// Visits every object of `resource`, page by page.
template <typename Fn>
absl::Status ForEach(store::ObjectStore* store, const std::string& resource, Fn fn) {
  store::ListOptions options;
  options.limit = kPageSize;
  for (;;) {
    absl::StatusOr<store::ObjectList> page = store->List(resource, "", options);
    if (!page.ok()) return Annotate(page.status(), Cat("metrics: list ", resource));
    for (const nlohmann::json& item : page->items) fn(item);
    if (page->continue_token.empty()) return absl::OkStatus();
    options.continue_token = page->continue_token;
  }
}

}  // namespace

StoreCollector::StoreCollector(store::ObjectStore* store, Metrics* metrics,
                               StoreCollectorOptions options)
    : store_(store),
      metrics_(metrics),
      options_(std::move(options)),
      clock_(options_.clock != nullptr ? options_.clock : RealClock::Get()) {
  if (options_.background) thread_ = std::thread([this] { Loop(); });
}

StoreCollector::~StoreCollector() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

absl::Status StoreCollector::CollectNow() {
  std::lock_guard<std::mutex> collect_lock(collect_mu_);

  std::map<std::string, int64_t> sandbox_phases;
  std::map<Key, std::string> sandboxes;
  SBL_RETURN_IF_ERROR(
      ForEach(store_, options_.sandboxes_resource, [&](const nlohmann::json& object) {
        const std::string phase = PhaseOf(object);
        ++sandbox_phases[phase];
        Key key{MetaString(object, "namespace"), MetaString(object, "name")};
        if (!key.second.empty()) sandboxes[std::move(key)] = phase;
      }));
  std::map<std::string, int64_t> snapshot_phases;
  SBL_RETURN_IF_ERROR(ForEach(store_, options_.snapshots_resource,
                              [&](const nlohmann::json& o) { ++snapshot_phases[PhaseOf(o)]; }));

  metrics_->SetSandboxesByPhase(sandbox_phases);
  metrics_->SetSnapshotsByPhase(snapshot_phases);
  std::set<Key> seen;
  for (const auto& [key, phase] : sandboxes) {
    metrics_->SetSandboxPhase(key.first, key.second, phase);
    seen.insert(key);
  }
  for (const Key& key : sandboxes_) {
    if (seen.count(key) == 0) metrics_->RemoveSandbox(key.first, key.second);
  }
  sandboxes_ = std::move(seen);

  for (const std::string& resource : {options_.sandboxes_resource, options_.snapshots_resource}) {
    absl::StatusOr<int64_t> n = store_->Count(resource);
    if (!n.ok()) return Annotate(n.status(), Cat("metrics: count ", resource));
    metrics_->SetStoreObjects(resource, *n);
  }
  return absl::OkStatus();
}

void StoreCollector::Loop() {
  for (;;) {
    if (absl::Status s = CollectNow(); !s.ok()) {
      log::Warn("store metrics not collected", {{"error", s.message()}});
    }
    const Clock::TimePoint next = clock_->Now() + options_.interval;
    std::unique_lock<std::mutex> lock(mu_);
    while (!stopping_ && clock_->Now() < next) clock_->WaitUntil(lock, cv_, next);
    if (stopping_) return;
  }
}

}  // namespace sandboxlet::metrics

#include "controller/metrics/readiness.h"

#include <utility>

#include "runtime/base/strings.h"

namespace sandboxlet::metrics {

void Readiness::AddCheck(const std::string& name, std::function<absl::Status()> check) {
  std::lock_guard<std::mutex> lock(mu_);
  for (Check& c : checks_) {
    if (c.name == name) {
      c.fn = std::move(check);
      return;
    }
  }
  checks_.push_back({name, std::move(check)});
}

void Readiness::SetFlag(const std::string& name, bool ready, const std::string& reason) {
  std::shared_ptr<Flag> flag;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [n, f] : flags_) {
      if (n == name) flag = f;
    }
    if (flag == nullptr) {
      flag = std::make_shared<Flag>();
      flags_.emplace_back(name, flag);
      checks_.push_back({name, [flag]() -> absl::Status {
                           std::lock_guard<std::mutex> l(flag->mu);
                           if (flag->ready) return absl::OkStatus();
                           return absl::UnavailableError(flag->reason);
                         }});
    }
  }
  std::lock_guard<std::mutex> l(flag->mu);
  flag->ready = ready;
  flag->reason = reason;
}

Readiness::Result Readiness::Evaluate() const {
  std::vector<Check> checks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    checks = checks_;
  }
  Result result;
  result.ready = true;
  for (const Check& c : checks) {
    absl::Status s = c.fn ? c.fn() : absl::InternalError("check has no function");
    if (s.ok()) {
      result.report += Cat("[+]", c.name, " ok\n");
    } else {
      result.ready = false;
      result.report += Cat("[-]", c.name, " failed: ", s.message(), "\n");
    }
  }
  result.report += result.ready ? "readyz check passed\n" : "readyz check failed\n";
  return result;
}

}  // namespace sandboxlet::metrics

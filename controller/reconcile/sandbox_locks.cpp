#include "controller/reconcile/sandbox_locks.h"

namespace sandboxlet::controller {

SandboxLocks::Guard::Guard(SandboxLocks* owner, std::string uid, std::shared_ptr<std::mutex> mu)
    : owner_(owner), uid_(std::move(uid)), mu_(std::move(mu)) {
  mu_->lock();
}

SandboxLocks::Guard::~Guard() {
  mu_->unlock();
  mu_.reset();
  owner_->Release(uid_);
}

std::unique_ptr<SandboxLocks::Guard> SandboxLocks::Lock(const std::string& uid) {
  std::shared_ptr<std::mutex> mu;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto& slot = locks_[uid];
    if (!slot) slot = std::make_shared<std::mutex>();
    mu = slot;
  }
  return std::make_unique<Guard>(this, uid, std::move(mu));
}

void SandboxLocks::Release(const std::string& uid) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = locks_.find(uid);
  // Only the map's reference left: nobody holds or waits for this uid.
  if (it != locks_.end() && it->second.use_count() == 1) locks_.erase(it);
}

}  // namespace sandboxlet::controller

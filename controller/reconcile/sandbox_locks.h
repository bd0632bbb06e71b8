// SandboxLocks: one mutex per sandbox uid, shared by the Sandbox and SandboxSnapshot reconcilers
// so that no two runtime operations on one sandbox ever overlap (the runtime requires callers to
// serialize operations per uid; the workqueue serializes keys, but a snapshot and its sandbox are
// two keys). Entries exist only while someone holds or waits for them.
// Thread-safe.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace sandboxlet::controller {

class SandboxLocks {
 public:
  // Holds the uid's lock until destroyed.
  class Guard {
   public:
    Guard(SandboxLocks* owner, std::string uid, std::shared_ptr<std::mutex> mu);
    ~Guard();
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    SandboxLocks* owner_;
    std::string uid_;
    std::shared_ptr<std::mutex> mu_;
  };

  // Blocks until the uid's lock is free. Operations under it are bounded by the runtime's
  // deadlines, so waiters are not held forever.
  std::unique_ptr<Guard> Lock(const std::string& uid);

 private:
  void Release(const std::string& uid);

  std::mutex mu_;
  std::map<std::string, std::shared_ptr<std::mutex>> locks_;  // guarded by mu_
};

}  // namespace sandboxlet::controller

// A unique directory under /tmp for one test, removed with everything in it at the end.
#pragma once

#include <stdlib.h>

#include <string>

#include "runtime/base/fs.h"

namespace sandboxlet::store::testing {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/sbl-store-test-XXXXXX";
    char* p = ::mkdtemp(tmpl);
    path_ = p != nullptr ? p : "";
  }
  ~TempDir() {
    if (!path_.empty()) (void)RemoveAll(path_);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace sandboxlet::store::testing

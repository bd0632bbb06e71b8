// RunNft with many fds open: libnftables select()s on its netlink socket and glibc aborts the
// process when that fd reaches FD_SETSIZE; a node with hundreds of sandboxes is there (found by
// bench/daemon_bench.cpp at about 330 sandboxes).
#include "runtime/network/nftables.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <unistd.h>

#include <vector>

#include <gtest/gtest.h>

#include "test/runtime/network/network_test_env.h"

namespace sandboxlet::network {
namespace {

TEST(RunNft, WorksWithMoreThanFdSetsizeFdsOpen) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for nftables";
  struct rlimit lim;
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &lim), 0);
  if (lim.rlim_cur < FD_SETSIZE + 64) {
    lim.rlim_cur = std::min<rlim_t>(lim.rlim_max, FD_SETSIZE + 256);
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &lim), 0);
  }
  if (lim.rlim_cur < FD_SETSIZE + 64) GTEST_SKIP() << "RLIMIT_NOFILE too low to open 1024 fds";
  std::vector<int> fds;
  for (int fd = ::open("/dev/null", O_RDONLY); fd >= 0 && fd < FD_SETSIZE + 8;
       fd = ::open("/dev/null", O_RDONLY)) {
    fds.push_back(fd);
  }
  ASSERT_GE(fds.back(), FD_SETSIZE);  // the next socket anyone opens lands past FD_SETSIZE
  std::string table = testing::ProcessPrefix('f');
  auto made = RunNft(Cat("add table ip ", table, "\n"), "add table");
  ASSERT_TRUE(made.ok()) << made.status();
  auto listed = RunNft(Cat("list table ip ", table, "\n"), "list table");
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_NE(listed->find(table), std::string::npos);
  EXPECT_TRUE(RunNft(Cat("delete table ip ", table, "\n"), "delete table").ok());
  for (int fd : fds) ::close(fd);
}

}  // namespace
}  // namespace sandboxlet::network

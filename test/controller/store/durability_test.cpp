// Durability of the object store: reopen, SIGKILL at random moments during a write storm, and
// refusing corrupt or truncated database files.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <set>

#include "controller/store/object_store.h"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"
#include "test/controller/store/temp_dir.h"

namespace sandboxlet::store {
namespace {

using json = nlohmann::json;

json Sandbox(const std::string& name) {
  return {{"apiVersion", "sandboxlet.dev/v1alpha1"},
          {"kind", "Sandbox"},
          {"metadata", {{"name", name}, {"namespace", "default"}}},
          {"spec", {{"template", "base"}, {"vcpus", 1}}}};
}

std::unique_ptr<ObjectStore> MustOpen(const std::string& path) {
  auto store = ObjectStore::Open(path);
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? std::move(*store) : nullptr;
}

TEST(DurabilityTest, ReopenKeepsObjectsAndTheVersionCounter) {
  testing::TempDir dir;
  std::string path = dir.File("store.db");
  json kept, finalized;
  int64_t rv_before;
  {
    auto store = MustOpen(path);
    ASSERT_NE(store, nullptr);
    for (int i = 0; i < 10; ++i) ASSERT_TRUE(store->Create("sandboxes", Sandbox(Cat("s", i))).ok());
    json obj = *store->Get("sandboxes", "default", "s3");
    obj["spec"]["vcpus"] = 8;
    ASSERT_TRUE(store->Update("sandboxes", obj).ok());
    obj = *store->Get("sandboxes", "default", "s3");
    obj["status"] = {{"phase", "Running"}};
    kept = *store->UpdateStatus("sandboxes", obj);
    ASSERT_TRUE(store->Delete("sandboxes", "default", "s5").ok());
    json fin = Sandbox("fin");
    fin["metadata"]["finalizers"] = {"sandboxlet.dev/vm"};
    ASSERT_TRUE(store->Create("sandboxes", fin).ok());
    finalized = store->Delete("sandboxes", "default", "fin")->object;
    rv_before = store->CurrentResourceVersion();
  }
  auto store = MustOpen(path);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->CurrentResourceVersion(), rv_before);
  EXPECT_EQ(*store->Get("sandboxes", "default", "s3"), kept);
  EXPECT_EQ(*store->Get("sandboxes", "default", "fin"), finalized);
  EXPECT_EQ(store->Get("sandboxes", "default", "s5").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store->List("sandboxes", "")->items.size(), 10u);
  auto next = store->Create("sandboxes", Sandbox("after-reopen"));
  ASSERT_TRUE(next.ok());
  EXPECT_EQ((*next)["metadata"]["resourceVersion"], std::to_string(rv_before + 1));
}

TEST(DurabilityTest, ASecondOpenOfTheSameFileFails) {
  testing::TempDir dir;
  std::string path = dir.File("store.db");
  auto first = MustOpen(path);
  ASSERT_NE(first, nullptr);
  ASSERT_TRUE(first->Create("sandboxes", Sandbox("a")).ok());
  // Another process (the realistic case: a second sandboxlet) must be refused.
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto second = ObjectStore::Open(path);
    bool refused =
        !second.ok() && std::string(second.status().message()).find(path) != std::string::npos;
    ::_exit(refused ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "a second process opened a store that is in use";
}

// ---- crash safety ---------------------------------------------------------------------------

uint64_t Fnv(const std::string& s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

// A payload that says whether it is whole: {"payload": ..., "sum": fnv(payload)}. Sizes span
// several SQLite pages so a torn write would show.
json Payload(std::mt19937_64& rng, int64_t n) {
  std::uniform_int_distribution<int> len(50, 9000);
  std::string p(static_cast<size_t>(len(rng)), 'x');
  for (char& c : p) c = static_cast<char>('a' + rng() % 26);
  return {{"n", n}, {"payload", p}, {"sum", std::to_string(Fnv(p))}};
}

bool Whole(const json& part) {
  return part.is_object() && part.contains("payload") &&
         part["sum"] == std::to_string(Fnv(part["payload"].get<std::string>()));
}

// What the parent knows about one object: its spec/status fingerprints, or absent.
struct ObjectState {
  bool exists = false;
  std::string rv;
  uint64_t spec = 0;
  uint64_t status = 0;
  bool operator==(const ObjectState&) const = default;
};

ObjectState StateOf(const json& object) {
  ObjectState s;
  s.exists = true;
  s.rv = object["metadata"]["resourceVersion"];
  s.spec = Fnv(object.value("spec", json()).dump());
  s.status = Fnv(object.value("status", json()).dump());
  return s;
}

std::string Describe(const ObjectState& s) {
  return s.exists ? Cat("rv=", s.rv, " spec=", s.spec, " status=", s.status) : "absent";
}

void WriteLine(int fd, const std::string& line) {
  std::string l = line + "\n";
  const char* p = l.data();
  size_t left = l.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) ::_exit(3);
    p += n;
    left -= static_cast<size_t>(n);
  }
}

// The child: opens the store and writes until killed. Before each write it announces the state
// the object will have ("I name exists spec status"); after the write is acknowledged it reports
// it ("A name rv exists spec status").
[[noreturn]] void WriteStorm(const std::string& path, uint64_t seed, int fd) {
  auto store_or = ObjectStore::Open(path);
  if (!store_or.ok()) {
    WriteLine(fd, Cat("E ", store_or.status().message()));
    ::_exit(2);
  }
  ObjectStore& store = **store_or;
  std::mt19937_64 rng(seed);
  for (int64_t i = 0;; ++i) {
    std::string name = Cat("obj-", rng() % 24);
    auto cur = store.Get("sandboxes", "default", name);
    int dice = static_cast<int>(rng() % 10);
    json target;
    bool remove = false;
    if (!cur.ok()) {
      target = Sandbox(name);
      target["spec"] = Payload(rng, i);
    } else if (dice < 5) {
      target = *cur;
      target["spec"] = Payload(rng, i);
    } else if (dice < 8) {
      target = *cur;
      target["status"] = Payload(rng, i);
    } else {
      remove = true;
    }
    if (remove) {
      WriteLine(fd, Cat("I ", name, " 0 0 0"));
      auto r = store.Delete("sandboxes", "default", name);
      if (!r.ok()) ::_exit(4);
      WriteLine(fd, Cat("A ", name, " ",
                        r->object["metadata"]["resourceVersion"].get<std::string>(), " 0 0 0"));
      continue;
    }
    // The fingerprints the object will have once written (create drops status).
    json expect = target;
    if (!cur.ok()) expect.erase("status");
    uint64_t spec = Fnv(expect.value("spec", json()).dump());
    uint64_t status = Fnv(expect.value("status", json()).dump());
    WriteLine(fd, Cat("I ", name, " 1 ", spec, " ", status));
    absl::StatusOr<json> done = !cur.ok()  ? store.Create("sandboxes", target)
                                : dice < 5 ? store.Update("sandboxes", target)
                                           : store.UpdateStatus("sandboxes", target);
    if (!done.ok()) ::_exit(5);
    WriteLine(fd, Cat("A ", name, " ", (*done)["metadata"]["resourceVersion"].get<std::string>(),
                      " 1 ", spec, " ", status));
  }
}

TEST(DurabilityTest, SigkillDuringAWriteStormLosesNoAcknowledgedWrite) {
  uint64_t seed = std::random_device{}();
  if (const char* s = std::getenv("SBL_STORE_CRASH_SEED")) seed = std::strtoull(s, nullptr, 10);
  std::cout << "crash test seed: " << seed << " (rerun with SBL_STORE_CRASH_SEED=" << seed << ")\n";
  std::mt19937_64 rng(seed);
  testing::TempDir dir;
  std::string path = dir.File("store.db");
  std::map<std::string, ObjectState> model;  // verified state after the previous round
  int64_t last_rv = 0;

  for (int round = 0; round < 20; ++round) {
    SCOPED_TRACE(Cat("seed ", seed, " round ", round));
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    uint64_t child_seed = rng();
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      WriteStorm(path, child_seed, fds[1]);
    }
    ::close(fds[1]);

    // Let the child acknowledge a random number of writes (0 = kill it while it opens), then
    // kill it a random few hundred microseconds later.
    const int kill_after = static_cast<int>(rng() % 120);
    const useconds_t jitter = static_cast<useconds_t>(rng() % 400);
    std::map<std::string, ObjectState> acked;
    std::optional<std::pair<std::string, ObjectState>> in_flight;
    std::string buffer, child_error;
    int acks = 0;
    bool killed = false;
    auto parse_lines = [&] {
      size_t nl;
      while ((nl = buffer.find('\n')) != std::string::npos) {
        std::string line = buffer.substr(0, nl);
        buffer.erase(0, nl + 1);
        std::vector<std::string> f = Split(line, ' ');
        if (f[0] == "E") {
          child_error = line;
        } else if (f[0] == "I" && f.size() == 5) {
          ObjectState s;
          s.exists = f[2] == "1";
          s.spec = std::stoull(f[3]);
          s.status = std::stoull(f[4]);
          in_flight = {f[1], s};
        } else if (f[0] == "A" && f.size() == 6) {
          ObjectState s;
          s.exists = f[3] == "1";
          s.rv = f[2];
          s.spec = std::stoull(f[4]);
          s.status = std::stoull(f[5]);
          int64_t rv = std::stoll(f[2]);
          EXPECT_GT(rv, last_rv) << "resourceVersion went backwards";
          last_rv = rv;
          if (!s.exists) s.rv.clear();
          acked[f[1]] = s;
          in_flight.reset();
          ++acks;
        }
      }
    };
    if (kill_after == 0) {
      ::usleep(jitter);
      ::kill(pid, SIGKILL);
      killed = true;
    }
    char chunk[4096];
    while (true) {
      ssize_t n = ::read(fds[0], chunk, sizeof(chunk));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      buffer.append(chunk, static_cast<size_t>(n));
      parse_lines();
      if (!killed && acks >= kill_after) {
        ::usleep(jitter);
        ::kill(pid, SIGKILL);
        killed = true;
      }
    }
    ::close(fds[0]);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(child_error.empty()) << child_error;
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "the writer ended on its own with status " << status;

    auto store = MustOpen(path);
    ASSERT_NE(store, nullptr);
    std::map<std::string, ObjectState> actual;
    auto list = store->List("sandboxes", "");
    ASSERT_TRUE(list.ok()) << list.status();
    for (const json& item : list->items) {
      std::string name = item["metadata"]["name"];
      EXPECT_TRUE(Whole(item["spec"])) << name << ": torn spec";
      if (item.contains("status")) {
        EXPECT_TRUE(Whole(item["status"])) << name << ": torn status";
      }
      actual[name] = StateOf(item);
    }
    // Expected: the previous round's state, overridden by this round's acknowledged writes; the
    // one write in flight when the child died may or may not have committed.
    std::map<std::string, ObjectState> expected = model;
    for (const auto& [name, s] : acked) expected[name] = s;
    std::set<std::string> names;
    for (const auto& [name, s] : expected) names.insert(name);
    for (const auto& [name, s] : actual) names.insert(name);
    for (const std::string& name : names) {
      ObjectState want = expected.count(name) ? expected[name] : ObjectState{};
      ObjectState have = actual.count(name) ? actual[name] : ObjectState{};
      if (have == want) continue;
      bool in_flight_committed =
          in_flight && in_flight->first == name && have.exists == in_flight->second.exists &&
          have.spec == in_flight->second.spec && have.status == in_flight->second.status &&
          (!have.exists || std::stoll(have.rv) > last_rv);
      EXPECT_TRUE(in_flight_committed)
          << name << ": want " << Describe(want) << ", have " << Describe(have);
    }
    EXPECT_GE(store->CurrentResourceVersion(), last_rv);
    last_rv = store->CurrentResourceVersion();
    model.clear();
    for (const auto& [name, s] : actual) model[name] = s;
    if (::testing::Test::HasFailure()) break;
  }
}

// ---- corrupt files --------------------------------------------------------------------------

class CorruptFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.File("store.db");
    auto store = MustOpen(path_);
    ASSERT_NE(store, nullptr);
    std::mt19937_64 rng(1);
    for (int i = 0; i < 300; ++i) {
      json obj = Sandbox(Cat("sb-", i));
      obj["spec"] = Payload(rng, i);
      ASSERT_TRUE(store->Create("sandboxes", obj).ok());
    }
    store.reset();  // closing checkpoints the WAL into the database file
    ASSERT_FALSE(PathExists(path_ + "-wal"));
    struct stat st;
    ASSERT_EQ(::stat(path_.c_str(), &st), 0);
    size_ = st.st_size;
    ASSERT_GT(size_, 64 * 4096);
  }

  void ExpectOpenFails(absl::StatusCode code, const std::string& message_part) {
    auto store = ObjectStore::Open(path_);
    ASSERT_FALSE(store.ok()) << "a damaged database opened";
    std::cout << "open refused as expected: " << store.status() << "\n";
    EXPECT_EQ(store.status().code(), code) << store.status();
    std::string msg(store.status().message());
    EXPECT_NE(msg.find(path_), std::string::npos) << msg;
    EXPECT_NE(msg.find(message_part), std::string::npos) << msg;
  }

  void Overwrite(off_t offset, const std::string& bytes) {
    int fd = ::open(path_.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), offset), static_cast<ssize_t>(bytes.size()));
    ::close(fd);
  }

  testing::TempDir dir_;
  std::string path_;
  off_t size_ = 0;
};

TEST_F(CorruptFileTest, GarbageOverAPageInTheMiddleFailsOpen) {
  std::mt19937_64 rng(7);
  std::string garbage(4096, '\0');
  for (char& c : garbage) c = static_cast<char>(rng());
  Overwrite((size_ / 2 / 4096) * 4096, garbage);
  ExpectOpenFails(absl::StatusCode::kDataLoss, "");
}

TEST_F(CorruptFileTest, DamagedObjectBytesFailOpen) {
  // Bytes inside a record, where SQLite's own structure stays valid: only the JSON is broken.
  std::string content = *ReadFile(path_);
  size_t at = content.find("\"payload\":\"", content.size() / 2);
  ASSERT_NE(at, std::string::npos);
  Overwrite(static_cast<off_t>(at), "{{{{");
  ExpectOpenFails(absl::StatusCode::kDataLoss, "");
}

TEST_F(CorruptFileTest, TruncatedFileFailsOpen) {
  ASSERT_EQ(::truncate(path_.c_str(), size_ / 2), 0);
  ExpectOpenFails(absl::StatusCode::kDataLoss, "");
}

TEST_F(CorruptFileTest, EmptiedFileFailsOpenInsteadOfStartingEmpty) {
  ASSERT_EQ(::truncate(path_.c_str(), 0), 0);
  ExpectOpenFails(absl::StatusCode::kDataLoss, "empty");
}

TEST_F(CorruptFileTest, DamagedHeaderFailsOpen) {
  Overwrite(0, "this is not a database header");
  ExpectOpenFails(absl::StatusCode::kDataLoss, "not a database");
}

TEST(DurabilityTest, MissingDatabaseWithALeftoverLogIsRefused) {
  testing::TempDir dir;
  std::string path = dir.File("store.db");
  ASSERT_TRUE(WriteFileAtomic(path + "-wal", "stale log").ok());
  auto store = ObjectStore::Open(path);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(std::string(store.status().message()).find(path), std::string::npos);
}

TEST(DurabilityTest, AFileFromAnotherProgramIsRefused) {
  testing::TempDir dir;
  std::string path = dir.File("other.db");
  ASSERT_TRUE(WriteFileAtomic(path, std::string(8192, 'z')).ok());
  auto store = ObjectStore::Open(path);
  ASSERT_FALSE(store.ok());
  EXPECT_NE(std::string(store.status().message()).find(path), std::string::npos);
}

}  // namespace
}  // namespace sandboxlet::store

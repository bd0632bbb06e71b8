// Test-only stand-in for `losetup` and `dmsetup` on a kernel without device-mapper. One binary,
// installed under both names (it acts on argv[0]'s basename). It accepts only the invocations the
// devicemapper volume backend makes, validates snapshot tables as the kernel documents the target
// (Documentation/admin-guide/device-mapper/snapshot.rst:
//   <start> <length> snapshot <origin> <COW device> <persistent?> <chunksize>
// with persistent one of P, N, PO and chunksize a power of two of at least 8 sectors), keeps its
// state in $SBL_FAKE_BLOCKDEV_DIR, and logs every call as a JSON array to calls.jsonl.
//
// Control files in the state directory:
//   fail_call      N: the Nth call (1-based, counting every call) fails with exit 1
//   busy/<name>    N: the next N `dmsetup remove <name>` report EBUSY
// A created dm device gets a regular file <state>/mapper/<name> holding the origin's content, so
// a flatten can read "the device".
//
// Stricter than the kernel on purpose: detaching a loop a dm table still uses fails (the kernel
// would defer it), which catches teardown in the wrong order.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string g_dir;

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void Spit(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::trunc);
  out << data;
}

json LoadJson(const std::string& name) {
  std::string data = Slurp(g_dir + "/" + name);
  if (data.empty()) return json::object();
  return json::parse(data);
}

void SaveJson(const std::string& name, const json& j) { Spit(g_dir + "/" + name, j.dump(1)); }

int Fail(const std::string& message, int code = 1) {
  std::cerr << message << "\n";
  return code;
}

int Usage(const std::string& prog, const std::vector<std::string>& args) {
  std::string joined;
  for (const auto& a : args) joined += " " + a;
  return Fail("fake " + prog + ": unsupported arguments:" + joined, 2);
}

bool IsDecimal(const std::string& s) {
  if (s.empty() || s.size() > 19) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

std::vector<std::string> Fields(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string f;
  while (in >> f) out.push_back(f);
  return out;
}

int Losetup(const std::vector<std::string>& a) {
  json loops = LoadJson("loops.json");
  if (a == std::vector<std::string>{"--list", "--json", "--output", "NAME,BACK-FILE,RO"}) {
    json out = {{"loopdevices", json::array()}};
    for (auto& [name, loop] : loops.items()) {
      out["loopdevices"].push_back(
          {{"name", name}, {"back-file", loop["back_file"]}, {"ro", loop["ro"]}});
    }
    std::cout << out.dump(3) << "\n";
    return 0;
  }
  if (a.size() >= 3 && a[0] == "--find" && a[1] == "--show" &&
      (a.size() == 3 || (a.size() == 4 && a[2] == "--read-only"))) {
    const std::string& file = a.back();
    struct stat st;
    if (file.empty() || file[0] != '/') return Fail("fake losetup: backing file must be absolute");
    if (::stat(file.c_str(), &st) != 0)
      return Fail("losetup: " + file + ": failed to set up loop device: No such file or directory");
    if (!S_ISREG(st.st_mode)) return Fail("fake losetup: " + file + ": not a regular file");
    for (int n = 0;; ++n) {
      std::string name = "/dev/loop" + std::to_string(n);
      if (loops.contains(name)) continue;
      loops[name] = {{"back_file", file}, {"ro", a.size() == 4}};
      SaveJson("loops.json", loops);
      std::cout << name << "\n";
      return 0;
    }
  }
  if (a.size() == 2 && a[0] == "--detach") {
    if (!loops.contains(a[1])) {
      return Fail("losetup: " + a[1] + ": detach failed: No such device or address");
    }
    json dms = LoadJson("dm.json");
    for (auto& [name, dm] : dms.items()) {
      if (dm["origin"] == a[1] || dm["cow"] == a[1]) {
        return Fail("losetup: " + a[1] + ": detach failed: still used by dm device " + name +
                    " (fake losetup refuses)");
      }
    }
    loops.erase(a[1]);
    SaveJson("loops.json", loops);
    return 0;
  }
  return Usage("losetup", a);
}

// Validates a snapshot table; returns an error message or "".
std::string CheckTable(const std::string& table, const json& loops, const json& dms) {
  std::vector<std::string> f = Fields(table);
  if (table.find('\n') != std::string::npos) return "table must be one line";
  if (f.size() != 7) return "snapshot table needs 7 fields, got " + std::to_string(f.size());
  if (f[0] != "0") return "start must be 0, got " + f[0];
  if (!IsDecimal(f[1]) || std::stoull(f[1]) == 0) return "bad length " + f[1];
  if (f[2] != "snapshot") return "unknown target type " + f[2];
  const std::string &origin = f[3], &cow = f[4];
  if (!loops.contains(origin)) return "origin " + origin + " is not an attached device";
  if (!loops.contains(cow)) return "COW device " + cow + " is not an attached device";
  if (origin == cow) return "origin and COW device are the same";
  if (f[5] != "P" && f[5] != "N" && f[5] != "PO") return "persistent flag must be P, N or PO";
  if (!IsDecimal(f[6])) return "bad chunk size " + f[6];
  uint64_t chunk = std::stoull(f[6]);
  if (chunk < 8 || (chunk & (chunk - 1)) != 0) {
    return "chunk size must be a power of 2 and at least 8 sectors, got " + f[6];
  }
  if (loops[cow]["ro"].get<bool>()) return "COW device " + cow + " is read-only";
  uint64_t origin_sectors = fs::file_size(loops[origin]["back_file"].get<std::string>()) / 512;
  uint64_t cow_bytes = fs::file_size(loops[cow]["back_file"].get<std::string>());
  if (std::stoull(f[1]) != origin_sectors) {
    return "length " + f[1] + " differs from origin size " + std::to_string(origin_sectors);
  }
  if (cow_bytes < origin_sectors * 512) return "COW device smaller than origin";
  for (auto& [name, dm] : dms.items()) {
    if (dm["cow"] == cow || dm["origin"] == cow) return "COW device already used by " + name;
  }
  return "";
}

int Dmsetup(const std::vector<std::string>& a) {
  json dms = LoadJson("dm.json");
  if (a.size() == 1 && a[0] == "version") {
    std::cout << "Library version:   1.02.185-fake\nDriver version:    4.48.0-fake\n";
    return 0;
  }
  if (a.size() == 1 && a[0] == "ls") {
    if (dms.empty()) {
      std::cout << "No devices found\n";
      return 0;
    }
    int minor = 0;
    for (auto& [name, dm] : dms.items()) std::cout << name << "\t(253:" << minor++ << ")\n";
    return 0;
  }
  if (a.size() == 4 && a[0] == "create" && a[2] == "--table") {
    const std::string& name = a[1];
    if (name.empty() || name.size() > 127 || name.find('/') != std::string::npos) {
      return Fail("fake dmsetup: invalid device name \"" + name + "\"");
    }
    if (dms.contains(name)) {
      return Fail("device-mapper: create ioctl on " + name + " failed: Device or resource busy");
    }
    json loops = LoadJson("loops.json");
    std::string err = CheckTable(a[3], loops, dms);
    if (!err.empty()) {
      return Fail("device-mapper: reload ioctl on " + name + " failed: Invalid argument (" + err +
                  ")");
    }
    std::vector<std::string> f = Fields(a[3]);
    dms[name] = {{"table", a[3]}, {"origin", f[3]}, {"cow", f[4]}};
    fs::create_directories(g_dir + "/mapper");
    fs::copy_file(loops[f[3]]["back_file"].get<std::string>(), g_dir + "/mapper/" + name,
                  fs::copy_options::overwrite_existing);
    SaveJson("dm.json", dms);
    return 0;
  }
  if (a.size() == 2 && a[0] == "remove") {
    const std::string& name = a[1];
    std::string busy_file = g_dir + "/busy/" + name;
    std::string busy = Slurp(busy_file);
    if (!busy.empty() && std::stoi(busy) > 0) {
      Spit(busy_file, std::to_string(std::stoi(busy) - 1));
      return Fail("device-mapper: remove ioctl on " + name +
                  "  failed: Device or resource busy\nCommand failed.");
    }
    if (!dms.contains(name)) {
      return Fail("device-mapper: remove ioctl on " + name +
                  "  failed: No such device or address\nCommand failed.");
    }
    dms.erase(name);
    fs::remove(g_dir + "/mapper/" + name);
    SaveJson("dm.json", dms);
    return 0;
  }
  if (a.size() == 2 && (a[0] == "info" || a[0] == "table")) {
    if (!dms.contains(a[1])) return Fail("Device does not exist.\nCommand failed.");
    if (a[0] == "table") {
      std::cout << dms[a[1]]["table"].get<std::string>() << "\n";
    } else {
      std::cout << "Name:              " << a[1] << "\nState:             ACTIVE\n";
    }
    return 0;
  }
  return Usage("dmsetup", a);
}

}  // namespace

int main(int argc, char** argv) {
  const char* dir = std::getenv("SBL_FAKE_BLOCKDEV_DIR");
  if (dir == nullptr || *dir == 0) return Fail("fake blockdev: SBL_FAKE_BLOCKDEV_DIR not set", 3);
  g_dir = dir;
  std::string prog = fs::path(argv[0]).filename();
  std::vector<std::string> args(argv + 1, argv + argc);

  int lock = ::open((g_dir + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock < 0 || ::flock(lock, LOCK_EX) != 0) return Fail("fake blockdev: cannot lock state", 3);

  json call = json::array({prog});
  for (const auto& a : args) call.push_back(a);
  {
    std::ofstream log(g_dir + "/calls.jsonl", std::ios::app);
    log << call.dump() << "\n";
  }
  std::string count_s = Slurp(g_dir + "/count");
  int count = (count_s.empty() ? 0 : std::stoi(count_s)) + 1;
  Spit(g_dir + "/count", std::to_string(count));
  std::string fail_at = Slurp(g_dir + "/fail_call");
  if (!fail_at.empty() && std::stoi(fail_at) == count) {
    return Fail("fake " + prog + ": injected failure at call " + std::to_string(count));
  }
  try {
    if (prog == "losetup") return Losetup(args);
    if (prog == "dmsetup") return Dmsetup(args);
  } catch (const std::exception& e) {
    return Fail(std::string("fake ") + prog + ": " + e.what(), 3);
  }
  return Fail("fake blockdev: invoked as unknown program " + prog, 3);
}

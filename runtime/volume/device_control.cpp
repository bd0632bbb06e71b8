#include "runtime/volume/device_control.h"

#include "nlohmann/json.hpp"
#include "runtime/base/command.h"
#include "runtime/base/errors.h"
#include "runtime/base/strings.h"

namespace sandboxlet {
namespace {

bool Contains(const std::string& s, std::string_view what) {
  return s.find(what) != std::string::npos;
}

}  // namespace

absl::StatusOr<std::vector<LoopDevice>> ParseLosetupJson(const std::string& out) {
  // losetup prints nothing at all when no loop device exists.
  if (Trim(out).empty()) return std::vector<LoopDevice>{};
  auto json = nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) return absl::InternalError("losetup --list --json: not a JSON object");
  std::vector<LoopDevice> loops;
  auto list = json.find("loopdevices");
  if (list == json.end()) return loops;
  if (!list->is_array())
    return absl::InternalError("losetup --list --json: loopdevices not a list");
  for (const auto& entry : *list) {
    if (!entry.is_object()) continue;
    LoopDevice loop;
    auto name = entry.find("name");
    if (name == entry.end() || !name->is_string()) continue;
    loop.name = name->get<std::string>();
    auto back = entry.find("back-file");
    if (back != entry.end() && back->is_string()) {
      loop.back_file = back->get<std::string>();
      constexpr std::string_view kDeleted = " (deleted)";
      if (EndsWith(loop.back_file, kDeleted)) {
        loop.back_file.resize(loop.back_file.size() - kDeleted.size());
      }
    }
    auto ro = entry.find("ro");
    if (ro != entry.end()) {
      if (ro->is_boolean()) loop.read_only = ro->get<bool>();
      if (ro->is_number_integer()) loop.read_only = ro->get<int>() != 0;
      if (ro->is_string()) loop.read_only = ro->get<std::string>() == "1";
    }
    loops.push_back(std::move(loop));
  }
  return loops;
}

std::vector<std::string> ParseDmsetupLs(const std::string& out) {
  std::vector<std::string> names;
  for (const auto& line : Split(out, '\n')) {
    std::string_view l = Trim(line);
    if (l.empty() || l == "No devices found") continue;
    auto end = l.find_first_of(" \t");
    names.emplace_back(l.substr(0, end));
  }
  return names;
}

absl::StatusOr<std::vector<LoopDevice>> CommandDeviceControl::ListLoops() {
  SBL_ASSIGN_OR_RETURN(
      CommandResult r,
      RunChecked({losetup_, "--list", "--json", "--output", "NAME,BACK-FILE,RO"}, {timeout_}));
  return ParseLosetupJson(r.out);
}

absl::StatusOr<std::string> CommandDeviceControl::AttachLoop(const std::string& file,
                                                             bool read_only) {
  std::vector<std::string> argv = {losetup_, "--find", "--show"};
  if (read_only) argv.push_back("--read-only");
  argv.push_back(file);
  SBL_ASSIGN_OR_RETURN(CommandResult r, RunChecked(argv, {timeout_}));
  std::string device(Trim(r.out));
  if (!StartsWith(device, "/dev/")) {
    return absl::InternalError(Cat(ShellJoin(argv), ": unexpected output \"", device, "\""));
  }
  return device;
}

absl::Status CommandDeviceControl::DetachLoop(const std::string& device) {
  return RunChecked({losetup_, "--detach", device}, {timeout_}).status();
}

absl::Status CommandDeviceControl::CreateDm(const std::string& name, const std::string& table) {
  return RunChecked({dmsetup_, "create", name, "--table", table}, {timeout_}).status();
}

absl::StatusOr<DmRemoveResult> CommandDeviceControl::RemoveDm(const std::string& name) {
  std::vector<std::string> argv = {dmsetup_, "remove", name};
  SBL_ASSIGN_OR_RETURN(CommandResult r, RunCommand(argv, {timeout_}));
  if (r.ok()) return DmRemoveResult::kRemoved;
  // The kernel's answers as dmsetup prints them: EBUSY while a device is open, ENXIO when the
  // name is unknown.
  if (Contains(r.err, "Device or resource busy")) return DmRemoveResult::kBusy;
  if (Contains(r.err, "No such device or address") || Contains(r.err, "does not exist")) {
    return DmRemoveResult::kAbsent;
  }
  return absl::InternalError(
      Cat(ShellJoin(argv), ": exit ", r.exit_code, ": ", std::string(Trim(r.err))));
}

absl::StatusOr<bool> CommandDeviceControl::DmExists(const std::string& name) {
  std::vector<std::string> argv = {dmsetup_, "info", name};
  SBL_ASSIGN_OR_RETURN(CommandResult r, RunCommand(argv, {timeout_}));
  if (r.ok()) return true;
  if (Contains(r.err, "does not exist") || Contains(r.err, "No such device")) return false;
  return absl::InternalError(
      Cat(ShellJoin(argv), ": exit ", r.exit_code, ": ", std::string(Trim(r.err))));
}

absl::StatusOr<std::vector<std::string>> CommandDeviceControl::ListDm() {
  SBL_ASSIGN_OR_RETURN(CommandResult r, RunChecked({dmsetup_, "ls"}, {timeout_}));
  return ParseDmsetupLs(r.out);
}

}  // namespace sandboxlet

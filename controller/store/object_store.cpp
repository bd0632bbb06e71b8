#include "controller/store/object_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <ctime>

#include "absl/strings/escaping.h"
#include "runtime/base/errors.h"
#include "runtime/base/fd.h"
#include "runtime/base/fs.h"
#include "runtime/base/log.h"
#include "runtime/base/names.h"
#include "runtime/base/strings.h"

namespace sandboxlet::store {
namespace {

using json = nlohmann::json;

// Schema migrations: kMigrations[i] takes the schema from version i to version i + 1. A new
// database starts at version 0 (only the schema_version table) and runs all of them.
constexpr const char* kMigrations[] = {
    // 1: objects keyed by (resource, namespace, name); the resourceVersion counter.
    R"sql(
      CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
      INSERT INTO counters (name, value) VALUES ('resource_version', 0);
      CREATE TABLE objects (
        resource TEXT NOT NULL,
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        uid TEXT NOT NULL,
        resource_version INTEGER NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (resource, namespace, name)
      ) WITHOUT ROWID;
    )sql",
};
constexpr int64_t kSchemaVersion = sizeof(kMigrations) / sizeof(kMigrations[0]);

constexpr const char* kConflict =
    "conflict: the object has been modified; please apply your changes to the latest version "
    "and try again";
constexpr const char* kSubdomainRule =
    "a lowercase RFC 1123 subdomain must consist of lowercase alphanumeric characters, '-' or "
    "'.', start and end with an alphanumeric character, and be at most 253 characters";
constexpr const char* kLabelRule =
    "a lowercase RFC 1123 label must consist of lowercase alphanumeric characters or '-', start "
    "and end with an alphanumeric character, and be at most 63 characters";
// Kubernetes keeps generated names within 63 characters: a prefix of at most 58 + 5 random.
constexpr size_t kMaxGenerateNamePrefix = 58;
constexpr char kSuffixAlphabet[] = "bcdfghjklmnpqrstvwxz2456789";

std::string Key(const std::string& resource, const std::string& ns, const std::string& name) {
  return Cat(resource, " ", ns, "/", name);
}

bool ParseInt64(const std::string& text, int64_t* out) {
  if (text.empty()) return false;
  auto r = std::from_chars(text.data(), text.data() + text.size(), *out);
  return r.ec == std::errc() && r.ptr == text.data() + text.size() && *out >= 0;
}

absl::StatusOr<std::string> Serialize(const json& object, const std::string& what) {
  try {
    return object.dump();
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(Cat(what, ": cannot be encoded: ", e.what()));
  }
}

std::string StringField(const json& object, const char* key) {
  if (!object.is_object()) return "";
  auto it = object.find(key);
  if (it == object.end() || !it->is_string()) return "";
  return it->get<std::string>();
}

const json& Metadata(const json& object) {
  static const json kEmpty = json::object();
  if (!object.is_object()) return kEmpty;
  auto it = object.find("metadata");
  return it != object.end() && it->is_object() ? *it : kEmpty;
}

std::vector<std::string> Finalizers(const json& object) {
  std::vector<std::string> out;
  const json& meta = Metadata(object);
  auto it = meta.find("finalizers");
  if (it == meta.end() || !it->is_array()) return out;
  for (const json& f : *it) {
    if (f.is_string()) out.push_back(f.get<std::string>());
  }
  return out;
}

bool BeingDeleted(const json& object) {
  const json& meta = Metadata(object);
  auto it = meta.find("deletionTimestamp");
  return it != meta.end() && !it->is_null();
}

// Checks the shape of a request: a JSON object whose metadata fields have the Kubernetes types.
// `key` names the object in messages.
absl::Status ValidateShape(const json& object, const std::string& key) {
  auto bad = [&](std::string_view field, std::string_view why) {
    return absl::InvalidArgumentError(Cat(key, ": ", field, ": ", why));
  };
  if (!object.is_object())
    return absl::InvalidArgumentError(Cat(key, ": the object must be a JSON object"));
  for (const char* f : {"apiVersion", "kind"}) {
    auto it = object.find(f);
    if (it != object.end() && !it->is_string() && !it->is_null()) {
      return bad(f, "Invalid value: must be a string");
    }
  }
  auto meta_it = object.find("metadata");
  if (meta_it == object.end() || meta_it->is_null()) return absl::OkStatus();
  if (!meta_it->is_object()) return bad("metadata", "Invalid value: must be an object");
  const json& meta = *meta_it;
  for (const char* f : {"name", "generateName", "namespace", "uid", "resourceVersion"}) {
    auto it = meta.find(f);
    if (it != meta.end() && !it->is_string() && !it->is_null()) {
      return bad(Cat("metadata.", f), "Invalid value: must be a string");
    }
  }
  for (const char* f : {"labels", "annotations"}) {
    auto it = meta.find(f);
    if (it == meta.end() || it->is_null()) continue;
    std::string field = Cat("metadata.", f);
    if (!it->is_object()) return bad(field, "Invalid value: must be a map of strings");
    for (auto kv = it->begin(); kv != it->end(); ++kv) {
      if (!kv.value().is_string()) {
        return bad(Cat(field, "[", kv.key(), "]"), "Invalid value: must be a string");
      }
      if (absl::Status st = ValidateLabelKey(kv.key(), field); !st.ok()) {
        return absl::InvalidArgumentError(Cat(key, ": ", st.message()));
      }
      if (std::string_view(f) == "labels") {
        absl::Status st =
            ValidateLabelValue(kv.value().get<std::string>(), Cat(field, "[", kv.key(), "]"));
        if (!st.ok()) return absl::InvalidArgumentError(Cat(key, ": ", st.message()));
      }
    }
  }
  auto fin = meta.find("finalizers");
  if (fin != meta.end() && !fin->is_null()) {
    if (!fin->is_array())
      return bad("metadata.finalizers", "Invalid value: must be a list of strings");
    for (size_t i = 0; i < fin->size(); ++i) {
      const json& f = (*fin)[i];
      if (!f.is_string() || f.get<std::string>().empty()) {
        return bad(Cat("metadata.finalizers[", i, "]"),
                   "Invalid value: must be a non-empty string");
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateNamespace(const std::string& ns, const std::string& key) {
  if (ns.empty())
    return absl::InvalidArgumentError(Cat(key, ": metadata.namespace: Required value"));
  if (!IsDns1123Label(ns)) {
    return absl::InvalidArgumentError(
        Cat(key, ": metadata.namespace: Invalid value: \"", ns, "\": ", kLabelRule));
  }
  return absl::OkStatus();
}

absl::Status ValidateResource(const std::string& resource) {
  if (!IsDns1123Subdomain(resource)) {
    return absl::InvalidArgumentError(
        Cat("resource \"", resource, "\": must be a lowercase plural name such as \"sandboxes\""));
  }
  return absl::OkStatus();
}

// Continue tokens: base64url of {"rv": <list rv>, "ns": <last namespace>, "name": <last name>}.
std::string EncodeContinue(int64_t rv, const std::string& ns, const std::string& name) {
  std::string raw = json{{"rv", rv}, {"ns", ns}, {"name", name}}.dump();
  return absl::WebSafeBase64Escape(raw);
}

absl::Status DecodeContinue(const std::string& token, int64_t* rv, std::string* ns,
                            std::string* name) {
  auto bad = absl::InvalidArgumentError(
      Cat("continue: Invalid value: \"", token, "\": not a continue token from this store"));
  std::string raw;
  if (!absl::WebSafeBase64Unescape(token, &raw)) return bad;
  json j = json::parse(raw, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return bad;
  auto r = j.find("rv");
  auto n = j.find("ns");
  auto m = j.find("name");
  if (r == j.end() || !r->is_number_integer() || n == j.end() || !n->is_string() || m == j.end() ||
      !m->is_string()) {
    return bad;
  }
  *rv = r->get<int64_t>();
  *ns = n->get<std::string>();
  *name = m->get<std::string>();
  return absl::OkStatus();
}

// Removes "<base>.init-*" files left by a crash during a first Open.
void RemoveStaleInitFiles(const std::string& path) {
  std::string dir = Dirname(path);
  std::string base = path.substr(path.rfind('/') == std::string::npos ? 0 : path.rfind('/') + 1);
  std::string prefix = Cat(base, ".init-");
  DIR* d = ::opendir(dir.empty() ? "." : dir.c_str());
  if (d == nullptr) return;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (StartsWith(n, prefix)) ::unlink(Cat(dir, "/", n).c_str());
  }
  ::closedir(d);
}

absl::Status ApplyPragmas(SqliteDb& db) {
  // Exclusive locking: the file is ours for as long as the store is open; a second sandboxlet on
  // the same file fails at Open instead of corrupting the version counter.
  SBL_RETURN_IF_ERROR(db.Exec("PRAGMA locking_mode=EXCLUSIVE"));
  auto mode = db.QueryText("PRAGMA journal_mode=WAL");
  if (!mode.ok()) return mode.status();
  if (*mode != "wal") {
    return absl::InternalError(
        Cat(db.path(), ": cannot enable WAL mode (journal_mode=", *mode, ")"));
  }
  // FULL: the WAL is fsynced at every commit, so an acknowledged write also survives power loss
  // (NORMAL would survive a process crash only).
  return db.Exec("PRAGMA synchronous=FULL");
}

// Builds a new, empty store under a temporary name and renames it into place.
absl::Status CreateDatabase(const std::string& path) {
  std::string tmp =
      Cat(path, ".init-", ::getpid(), "-", static_cast<uint64_t>(std::random_device{}()));
  {
    SBL_ASSIGN_OR_RETURN(std::unique_ptr<SqliteDb> db, SqliteDb::Create(tmp));
    SBL_RETURN_IF_ERROR(ApplyPragmas(*db));
    std::string sql = "BEGIN IMMEDIATE; CREATE TABLE schema_version (version INTEGER NOT NULL);";
    for (int64_t v = 0; v < kSchemaVersion; ++v) sql += kMigrations[v];
    sql += Cat("INSERT INTO schema_version (version) VALUES (", kSchemaVersion, "); COMMIT;");
    SBL_RETURN_IF_ERROR(db->Exec(sql));
    SBL_RETURN_IF_ERROR(db->Exec("PRAGMA wal_checkpoint(TRUNCATE)"));
  }  // closing the last connection checkpoints and removes the WAL
  SBL_RETURN_IF_ERROR(FsyncPath(tmp));
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return ErrnoStatus(err, Cat("rename ", tmp, " to ", path));
  }
  return FsyncParent(path);
}

absl::Status CheckIntegrity(SqliteDb& db) {
  auto stmt = db.Prepare("PRAGMA integrity_check(20)");
  if (!stmt.ok()) return stmt.status();
  std::vector<std::string> problems;
  while (true) {
    auto row = stmt->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    std::string line = stmt->ColumnText(0);
    if (line == "ok") continue;
    for (const std::string& part : Split(line, '\n')) {
      if (!Trim(part).empty() && part != "*** in database main ***") problems.push_back(part);
    }
  }
  if (!problems.empty()) {
    return absl::DataLossError(Cat(db.path(), ": integrity check failed: ", Join(problems, "; ")));
  }
  return absl::OkStatus();
}

absl::Status Migrate(SqliteDb& db) {
  auto version_text = db.QueryText("SELECT version FROM schema_version");
  if (!version_text.ok()) {
    return absl::DataLossError(Cat(db.path(), ": not a sandboxlet store (no schema version): ",
                                   version_text.status().message()));
  }
  int64_t version = 0;
  if (!ParseInt64(*version_text, &version)) {
    return absl::DataLossError(Cat(db.path(), ": bad schema version \"", *version_text, "\""));
  }
  if (version > kSchemaVersion) {
    return absl::FailedPreconditionError(Cat(db.path(), ": schema version ", version,
                                             " is newer than this sandboxlet's (", kSchemaVersion,
                                             "); upgrade sandboxlet"));
  }
  if (version == kSchemaVersion) return absl::OkStatus();
  std::string sql = "BEGIN IMMEDIATE;";
  for (int64_t v = version; v < kSchemaVersion; ++v) sql += kMigrations[v];
  sql += Cat("UPDATE schema_version SET version = ", kSchemaVersion, "; COMMIT;");
  absl::Status st = db.Exec(sql);
  if (!st.ok()) {
    (void)db.Exec("ROLLBACK");
    return st;
  }
  log::Info("store schema migrated",
            {{"path", db.path()}, {"from", version}, {"to", kSchemaVersion}});
  return absl::OkStatus();
}

// Every stored object must parse and agree with its key columns: SQLite has no checksums on
// payload bytes, so this is what catches a damaged record before anyone serves it.
absl::StatusOr<int64_t> VerifyObjects(SqliteDb& db) {
  auto counter = db.QueryText("SELECT value FROM counters WHERE name = 'resource_version'");
  if (!counter.ok()) return counter.status();
  int64_t rv = 0;
  if (!ParseInt64(*counter, &rv)) {
    return absl::DataLossError(Cat(db.path(), ": bad resourceVersion counter \"", *counter, "\""));
  }
  SBL_ASSIGN_OR_RETURN(SqliteStatement scan,
                       db.Prepare("SELECT resource, namespace, name, uid, resource_version, data "
                                  "FROM objects"));
  while (true) {
    SBL_ASSIGN_OR_RETURN(bool row, scan.Step());
    if (!row) break;
    std::string resource = scan.ColumnText(0), ns = scan.ColumnText(1), name = scan.ColumnText(2);
    std::string uid = scan.ColumnText(3);
    int64_t object_rv = scan.ColumnInt64(4);
    std::string key = Key(resource, ns, name);
    json object = json::parse(scan.ColumnText(5), nullptr, /*allow_exceptions=*/false);
    if (object.is_discarded()) {
      return absl::DataLossError(Cat(db.path(), ": object ", key, ": stored JSON is corrupt"));
    }
    const json& meta = Metadata(object);
    if (StringField(meta, "name") != name || StringField(meta, "namespace") != ns ||
        StringField(meta, "uid") != uid ||
        StringField(meta, "resourceVersion") != std::to_string(object_rv)) {
      return absl::DataLossError(
          Cat(db.path(), ": object ", key, ": stored metadata does not match its key"));
    }
    if (object_rv > rv) {
      return absl::DataLossError(Cat(db.path(), ": object ", key, " has resourceVersion ",
                                     object_rv, " beyond the counter ", rv));
    }
  }
  return rv;
}

}  // namespace

struct ObjectStore::Statements {
  SqliteStatement begin, commit, rollback;
  SqliteStatement get, upsert, remove, set_rv, read_rv;
  SqliteStatement list_all, list_ns, count_all, count_resource;
};

absl::StatusOr<std::unique_ptr<ObjectStore>> ObjectStore::Open(const std::string& db_path,
                                                               StoreOptions options) {
  auto fail = [&](const absl::Status& st) {
    std::string msg(st.message());
    std::string out =
        StartsWith(msg, db_path) ? Cat("open store ", msg) : Cat("open store ", db_path, ": ", msg);
    if (st.code() == absl::StatusCode::kDataLoss) {
      out +=
          " (the database file is damaged: restore it from a backup, or move it aside to "
          "start with an empty store)";
    }
    return absl::Status(st.code(), out);
  };
  if (db_path.empty()) return absl::InvalidArgumentError("open store: empty database path");
  struct stat st;
  if (::stat(db_path.c_str(), &st) != 0) {
    if (errno != ENOENT) return fail(ErrnoStatus(errno, Cat("stat ", db_path)));
    if (PathExists(Cat(db_path, "-wal"))) {
      return fail(absl::DataLossError(
          Cat("the database file is missing but its write-ahead log ", db_path,
              "-wal exists; refusing to start empty (restore the database or remove the log)")));
    }
    RemoveStaleInitFiles(db_path);
    if (absl::Status s = CreateDatabase(db_path); !s.ok()) return fail(s);
    log::Info("store created", {{"path", db_path}, {"schema", kSchemaVersion}});
  } else if (!S_ISREG(st.st_mode)) {
    return fail(absl::FailedPreconditionError(Cat(db_path, " is not a regular file")));
  } else if (st.st_size == 0) {
    return fail(absl::DataLossError(
        Cat(db_path, ": the database file is empty (truncated?); refusing to start empty")));
  }

  auto db_or = SqliteDb::OpenExisting(db_path);
  if (!db_or.ok()) return fail(db_or.status());
  std::unique_ptr<SqliteDb> db = std::move(*db_or);
  absl::Status s = ApplyPragmas(*db);
  if (s.ok()) {
    // Take the exclusive lock now (it is kept until close in exclusive locking mode).
    s = db->Exec("BEGIN EXCLUSIVE; COMMIT;");
    if (s.code() == absl::StatusCode::kUnavailable) {
      s = absl::UnavailableError(Cat(db_path, ": in use by another process (", s.message(), ")"));
    }
  }
  if (s.ok()) s = CheckIntegrity(*db);
  if (s.ok()) s = Migrate(*db);
  if (!s.ok()) return fail(s);
  auto rv = VerifyObjects(*db);
  if (!rv.ok()) return fail(rv.status());

  auto stmts = std::make_unique<Statements>();
  struct {
    SqliteStatement* stmt;
    const char* sql;
  } prepared[] = {
      {&stmts->begin, "BEGIN IMMEDIATE"},
      {&stmts->commit, "COMMIT"},
      {&stmts->rollback, "ROLLBACK"},
      {&stmts->get,
       "SELECT data FROM objects WHERE resource = ?1 AND namespace = ?2 AND name = ?3"},
      {&stmts->upsert,
       "INSERT INTO objects (resource, namespace, name, uid, resource_version, data) "
       "VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (resource, namespace, name) DO UPDATE SET "
       "uid = excluded.uid, resource_version = excluded.resource_version, data = excluded.data"},
      {&stmts->remove, "DELETE FROM objects WHERE resource = ?1 AND namespace = ?2 AND name = ?3"},
      {&stmts->set_rv, "UPDATE counters SET value = ?1 WHERE name = 'resource_version'"},
      {&stmts->read_rv, "SELECT value FROM counters WHERE name = 'resource_version'"},
      {&stmts->list_all,
       "SELECT namespace, name, data FROM objects WHERE resource = ?1 AND "
       "(namespace, name) > (?2, ?3) ORDER BY namespace, name"},
      {&stmts->list_ns,
       "SELECT namespace, name, data FROM objects WHERE resource = ?1 AND namespace = ?2 AND "
       "name > ?3 ORDER BY name"},
      {&stmts->count_all, "SELECT COUNT(*) FROM objects"},
      {&stmts->count_resource, "SELECT COUNT(*) FROM objects WHERE resource = ?1"},
  };
  for (auto& p : prepared) {
    auto stmt = db->Prepare(p.sql);
    if (!stmt.ok()) return fail(stmt.status());
    *p.stmt = std::move(*stmt);
  }
  log::Info("store opened", {{"path", db_path}, {"resource_version", *rv}});
  return std::unique_ptr<ObjectStore>(
      new ObjectStore(db_path, std::move(db), std::move(stmts), *rv, options));
}

ObjectStore::ObjectStore(std::string path, std::unique_ptr<SqliteDb> db,
                         std::unique_ptr<Statements> stmts, int64_t rv, StoreOptions options)
    : path_(std::move(path)),
      options_(options),
      clock_(options.clock != nullptr ? options.clock : RealClock::Get()),
      db_(std::move(db)),
      stmts_(std::move(stmts)),
      rv_(rv),
      hub_(options.watch_history, options.watch_queue_limit, rv) {
  std::random_device rd;
  std::seed_seq seed{rd(), rd(), rd(), rd(), static_cast<unsigned>(::getpid())};
  rng_.seed(seed);
}

ObjectStore::~ObjectStore() {
  hub_.CloseAll();
  std::lock_guard<std::mutex> lock(mu_);
  stmts_.reset();
  db_.reset();
}

std::string ObjectStore::NewUid() {
  uint64_t hi = rng_(), lo = rng_();
  hi = (hi & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;  // version 4
  lo = (lo & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;  // RFC 4122 variant
  char buf[37];
  std::snprintf(buf, sizeof(buf), "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(hi >> 32),
                static_cast<unsigned>((hi >> 16) & 0xffff), static_cast<unsigned>(hi & 0xffff),
                static_cast<unsigned>(lo >> 48),
                static_cast<unsigned long long>(lo & 0xffffffffffffULL));
  return buf;
}

std::string ObjectStore::RandomSuffix() {
  std::string out;
  std::uniform_int_distribution<size_t> pick(0, sizeof(kSuffixAlphabet) - 2);
  for (int i = 0; i < 5; ++i) out.push_back(kSuffixAlphabet[pick(rng_)]);
  return out;
}

std::string ObjectStore::NowTimestamp() const {
  std::time_t t = std::chrono::system_clock::to_time_t(clock_->WallNow());
  std::tm tm;
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

absl::StatusOr<json> ObjectStore::LoadLocked(const std::string& resource, const std::string& ns,
                                             const std::string& name) {
  SqliteStatement& get = stmts_->get;
  get.Reset();
  SBL_RETURN_IF_ERROR(get.BindText(1, resource));
  SBL_RETURN_IF_ERROR(get.BindText(2, ns));
  SBL_RETURN_IF_ERROR(get.BindText(3, name));
  SBL_ASSIGN_OR_RETURN(bool found, get.Step());
  if (!found) return absl::NotFoundError(Cat(Key(resource, ns, name), ": not found"));
  json object = json::parse(get.ColumnText(0), nullptr, /*allow_exceptions=*/false);
  get.Reset();
  if (object.is_discarded()) {
    return absl::DataLossError(Cat(path_, ": object ", Key(resource, ns, name), ": corrupt JSON"));
  }
  return object;
}

absl::Status ObjectStore::CommitLocked(const std::string& resource, WatchEventType type,
                                       json& object, std::shared_ptr<const json> previous) {
  const int64_t rv = rv_ + 1;
  json& meta = object["metadata"];
  meta["resourceVersion"] = std::to_string(rv);
  const std::string ns = meta["namespace"].get<std::string>();
  const std::string name = meta["name"].get<std::string>();
  const std::string key = Key(resource, ns, name);
  SBL_ASSIGN_OR_RETURN(std::string data, Serialize(object, key));

  Statements& s = *stmts_;
  auto write = [&]() -> absl::Status {
    s.begin.Reset();
    SBL_RETURN_IF_ERROR(s.begin.Run());
    if (type == WatchEventType::kDeleted) {
      s.remove.Reset();
      SBL_RETURN_IF_ERROR(s.remove.BindText(1, resource));
      SBL_RETURN_IF_ERROR(s.remove.BindText(2, ns));
      SBL_RETURN_IF_ERROR(s.remove.BindText(3, name));
      SBL_RETURN_IF_ERROR(s.remove.Run());
    } else {
      s.upsert.Reset();
      SBL_RETURN_IF_ERROR(s.upsert.BindText(1, resource));
      SBL_RETURN_IF_ERROR(s.upsert.BindText(2, ns));
      SBL_RETURN_IF_ERROR(s.upsert.BindText(3, name));
      SBL_RETURN_IF_ERROR(s.upsert.BindText(4, StringField(meta, "uid")));
      SBL_RETURN_IF_ERROR(s.upsert.BindInt64(5, rv));
      SBL_RETURN_IF_ERROR(s.upsert.BindText(6, data));
      SBL_RETURN_IF_ERROR(s.upsert.Run());
    }
    s.set_rv.Reset();
    SBL_RETURN_IF_ERROR(s.set_rv.BindInt64(1, rv));
    SBL_RETURN_IF_ERROR(s.set_rv.Run());
    s.commit.Reset();
    return s.commit.Run();
  };
  absl::Status st = write();
  if (!st.ok()) {
    s.rollback.Reset();
    (void)s.rollback.Run();
    // Whatever happened, never hand out a version twice: resync with the stored counter.
    s.read_rv.Reset();
    auto row = s.read_rv.Step();
    if (row.ok() && *row) rv_ = std::max(rv_, s.read_rv.ColumnInt64(0));
    s.read_rv.Reset();
    log::Error("store write failed", {{"object", key}, {"error", st.message()}});
    return Annotate(st, key);
  }
  rv_ = rv;
  auto change = std::make_shared<internal::Change>();
  change->type = type;
  change->resource_version = rv;
  change->resource = resource;
  change->ns = ns;
  change->object = std::make_shared<const json>(object);
  change->previous = std::move(previous);
  hub_.Publish(std::move(change));
  return absl::OkStatus();
}

absl::StatusOr<json> ObjectStore::Create(const std::string& resource, const json& request) {
  SBL_RETURN_IF_ERROR(ValidateResource(resource));
  const json& req_meta = Metadata(request);
  std::string ns = StringField(req_meta, "namespace");
  std::string name = StringField(req_meta, "name");
  std::string generate = StringField(req_meta, "generateName");
  std::string key = Key(resource, ns, name.empty() ? generate : name);
  SBL_RETURN_IF_ERROR(ValidateShape(request, key));
  SBL_RETURN_IF_ERROR(ValidateNamespace(ns, key));
  if (name.empty()) {
    if (generate.empty()) {
      return absl::InvalidArgumentError(
          Cat(key, ": metadata.name: Required value: name or generateName is required"));
    }
    if (generate.size() > kMaxGenerateNamePrefix) generate.resize(kMaxGenerateNamePrefix);
    if (!IsDns1123Subdomain(Cat(generate, "x"))) {
      return absl::InvalidArgumentError(
          Cat(key, ": metadata.generateName: Invalid value: \"", generate, "\": ", kSubdomainRule));
    }
  } else if (!IsDns1123Subdomain(name)) {
    return absl::InvalidArgumentError(
        Cat(key, ": metadata.name: Invalid value: \"", name, "\": ", kSubdomainRule));
  }
  if (std::string rv = StringField(req_meta, "resourceVersion"); !rv.empty()) {
    return absl::InvalidArgumentError(Cat(key, ": metadata.resourceVersion: Invalid value: \"", rv,
                                          "\": must be empty when creating an object"));
  }

  json object = request;
  object.erase("status");  // the status subresource: status is written only by UpdateStatus
  json& meta = object["metadata"];
  for (const char* f : {"uid", "resourceVersion", "generation", "creationTimestamp",
                        "deletionTimestamp", "deletionGracePeriodSeconds"}) {
    meta.erase(f);
  }
  meta["generation"] = 1;
  meta["creationTimestamp"] = NowTimestamp();

  std::lock_guard<std::mutex> lock(mu_);
  // A generated name that collides is retried with a new suffix, as a client would.
  for (int attempt = 0;; ++attempt) {
    std::string candidate = name.empty() ? Cat(generate, RandomSuffix()) : name;
    auto existing = LoadLocked(resource, ns, candidate);
    if (existing.ok()) {
      if (name.empty() && attempt < 8) continue;
      return absl::AlreadyExistsError(Cat(Key(resource, ns, candidate), ": already exists"));
    }
    if (existing.status().code() != absl::StatusCode::kNotFound) return existing.status();
    meta["name"] = candidate;
    break;
  }
  meta["uid"] = NewUid();
  SBL_RETURN_IF_ERROR(CommitLocked(resource, WatchEventType::kAdded, object, nullptr));
  return object;
}

absl::StatusOr<json> ObjectStore::Get(const std::string& resource, const std::string& ns,
                                      const std::string& name) {
  SBL_RETURN_IF_ERROR(ValidateResource(resource));
  if (name.empty()) {
    return absl::InvalidArgumentError(Cat(Key(resource, ns, name), ": name is required"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  return LoadLocked(resource, ns, name);
}

absl::StatusOr<ObjectList> ObjectStore::List(const std::string& resource, const std::string& ns,
                                             const ListOptions& options) {
  SBL_RETURN_IF_ERROR(ValidateResource(resource));
  if (!ns.empty() && !IsDns1123Label(ns)) {
    return absl::InvalidArgumentError(
        Cat("list ", resource, ": namespace: Invalid value: \"", ns, "\": ", kLabelRule));
  }
  if (options.limit < 0) {
    return absl::InvalidArgumentError(Cat(
        "list ", resource, ": limit: Invalid value: ", options.limit, ": must not be negative"));
  }
  int64_t list_rv = -1;
  std::string after_ns, after_name;
  if (!options.continue_token.empty()) {
    SBL_RETURN_IF_ERROR(DecodeContinue(options.continue_token, &list_rv, &after_ns, &after_name));
    if (!ns.empty() && after_ns != ns) {
      return absl::InvalidArgumentError(
          Cat("list ", resource, ": continue: the token belongs to a list of another namespace"));
    }
  }

  std::lock_guard<std::mutex> lock(mu_);
  ObjectList out;
  if (list_rv < 0) list_rv = rv_;
  SqliteStatement& q = ns.empty() ? stmts_->list_all : stmts_->list_ns;
  q.Reset();
  SBL_RETURN_IF_ERROR(q.BindText(1, resource));
  if (ns.empty()) {
    SBL_RETURN_IF_ERROR(q.BindText(2, after_ns));
    SBL_RETURN_IF_ERROR(q.BindText(3, after_name));
  } else {
    SBL_RETURN_IF_ERROR(q.BindText(2, ns));
    SBL_RETURN_IF_ERROR(q.BindText(3, after_name));
  }
  std::string last_ns, last_name;
  while (true) {
    auto row = q.Step();
    if (!row.ok()) {
      q.Reset();
      return row.status();
    }
    if (!*row) break;
    std::string row_ns = q.ColumnText(0), row_name = q.ColumnText(1);
    json object = json::parse(q.ColumnText(2), nullptr, /*allow_exceptions=*/false);
    if (object.is_discarded()) {
      q.Reset();
      return absl::DataLossError(
          Cat(path_, ": object ", Key(resource, row_ns, row_name), ": corrupt JSON"));
    }
    if (!options.labels.MatchesObject(object) || !options.fields.Matches(object)) continue;
    if (options.limit > 0 && static_cast<int64_t>(out.items.size()) == options.limit) {
      // One more match exists beyond this page.
      out.continue_token = EncodeContinue(list_rv, last_ns, last_name);
      break;
    }
    last_ns = std::move(row_ns);
    last_name = std::move(row_name);
    out.items.push_back(std::move(object));
  }
  q.Reset();
  out.resource_version = std::to_string(list_rv);
  return out;
}

absl::StatusOr<json> ObjectStore::UpdateLocked(const std::string& resource, const json& request,
                                               bool status_only) {
  const json& req_meta = Metadata(request);
  const std::string ns = StringField(req_meta, "namespace");
  const std::string name = StringField(req_meta, "name");
  const std::string key = Key(resource, ns, name);
  SBL_RETURN_IF_ERROR(ValidateResource(resource));
  if (!status_only) {
    SBL_RETURN_IF_ERROR(ValidateShape(request, key));
  } else if (!request.is_object()) {
    return absl::InvalidArgumentError(Cat(key, ": the object must be a JSON object"));
  }
  if (name.empty()) return absl::InvalidArgumentError(Cat(key, ": metadata.name: Required value"));
  SBL_RETURN_IF_ERROR(ValidateNamespace(ns, key));
  int64_t want_rv = -1;
  if (std::string rv = StringField(req_meta, "resourceVersion"); !rv.empty()) {
    if (!ParseInt64(rv, &want_rv)) {
      return absl::InvalidArgumentError(Cat(key, ": metadata.resourceVersion: Invalid value: \"",
                                            rv, "\": must be a non-negative integer"));
    }
  }

  std::lock_guard<std::mutex> lock(mu_);
  SBL_ASSIGN_OR_RETURN(json old, LoadLocked(resource, ns, name));
  const json& old_meta = old["metadata"];
  if (want_rv >= 0 && std::to_string(want_rv) != StringField(old_meta, "resourceVersion")) {
    return absl::AbortedError(Cat(key, ": ", kConflict));
  }
  std::string uid = StringField(req_meta, "uid");
  if (!uid.empty() && uid != StringField(old_meta, "uid")) {
    return absl::InvalidArgumentError(Cat(key, ": metadata.uid: Invalid value: \"", uid,
                                          "\": field is immutable (the object has uid ",
                                          StringField(old_meta, "uid"), ")"));
  }

  json next;
  if (status_only) {
    next = old;
    auto st = request.find("status");
    if (st != request.end() && !st->is_null()) {
      next["status"] = *st;
    } else {
      next.erase("status");
    }
  } else {
    next = request;
    auto old_status = old.find("status");
    if (old_status != old.end()) {
      next["status"] = *old_status;
    } else {
      next.erase("status");
    }
    for (const char* f : {"apiVersion", "kind"}) {
      if (StringField(next, f).empty() && old.contains(f)) next[f] = old[f];
    }
    json& meta = next["metadata"];
    for (const char* f : {"uid", "creationTimestamp", "namespace", "name", "deletionTimestamp",
                          "deletionGracePeriodSeconds", "generation"}) {
      auto it = old_meta.find(f);
      if (it != old_meta.end()) {
        meta[f] = *it;
      } else {
        meta.erase(f);
      }
    }
    if (BeingDeleted(old)) {
      std::vector<std::string> before = Finalizers(old);
      for (const std::string& f : Finalizers(next)) {
        if (std::find(before.begin(), before.end(), f) == before.end()) {
          return absl::InvalidArgumentError(
              Cat(key,
                  ": metadata.finalizers: Forbidden: no new finalizers can be added if the "
                  "object is being deleted, found new finalizer ",
                  f));
        }
      }
    }
    auto spec_of = [](const json& o) {
      auto it = o.find("spec");
      return it == o.end() ? json() : *it;
    };
    if (spec_of(next) != spec_of(old)) {
      meta["generation"] = old_meta.value("generation", int64_t{0}) + 1;
    }
  }
  next["metadata"]["resourceVersion"] = old_meta["resourceVersion"];
  if (next == old) return old;  // nothing changed: no new version, no event

  auto previous = std::make_shared<const json>(std::move(old));
  if (!status_only && BeingDeleted(next) && Finalizers(next).empty()) {
    SBL_RETURN_IF_ERROR(CommitLocked(resource, WatchEventType::kDeleted, next, nullptr));
    log::Info("object removed after its last finalizer", {{"object", key}});
    return next;
  }
  SBL_RETURN_IF_ERROR(CommitLocked(resource, WatchEventType::kModified, next, std::move(previous)));
  return next;
}

absl::StatusOr<json> ObjectStore::Update(const std::string& resource, const json& object) {
  try {
    return UpdateLocked(resource, object, /*status_only=*/false);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(Cat("update ", resource, ": malformed object: ", e.what()));
  }
}

absl::StatusOr<json> ObjectStore::UpdateStatus(const std::string& resource, const json& object) {
  try {
    return UpdateLocked(resource, object, /*status_only=*/true);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(
        Cat("update status ", resource, ": malformed object: ", e.what()));
  }
}

absl::StatusOr<DeleteResult> ObjectStore::Delete(const std::string& resource, const std::string& ns,
                                                 const std::string& name,
                                                 const DeletePreconditions& preconditions) {
  SBL_RETURN_IF_ERROR(ValidateResource(resource));
  const std::string key = Key(resource, ns, name);
  if (name.empty()) return absl::InvalidArgumentError(Cat(key, ": name is required"));
  std::lock_guard<std::mutex> lock(mu_);
  SBL_ASSIGN_OR_RETURN(json old, LoadLocked(resource, ns, name));
  const json& old_meta = old["metadata"];
  if (!preconditions.uid.empty() && preconditions.uid != StringField(old_meta, "uid")) {
    return absl::AbortedError(Cat(key,
                                  ": precondition failed: UID in precondition: ", preconditions.uid,
                                  ", UID in object meta: ", StringField(old_meta, "uid")));
  }
  if (!preconditions.resource_version.empty() &&
      preconditions.resource_version != StringField(old_meta, "resourceVersion")) {
    return absl::AbortedError(Cat(
        key,
        ": precondition failed: ResourceVersion in precondition: ", preconditions.resource_version,
        ", ResourceVersion in object meta: ", StringField(old_meta, "resourceVersion")));
  }
  DeleteResult result;
  if (!Finalizers(old).empty()) {
    if (BeingDeleted(old)) {
      result.object = std::move(old);
      return result;
    }
    json next = old;
    json& meta = next["metadata"];
    meta["deletionTimestamp"] = NowTimestamp();
    meta["deletionGracePeriodSeconds"] = 0;
    meta["generation"] = old_meta.value("generation", int64_t{0}) + 1;
    SBL_RETURN_IF_ERROR(CommitLocked(resource, WatchEventType::kModified, next,
                                     std::make_shared<const json>(std::move(old))));
    result.object = std::move(next);
    return result;
  }
  json final_object = old;
  SBL_RETURN_IF_ERROR(CommitLocked(resource, WatchEventType::kDeleted, final_object, nullptr));
  result.object = std::move(final_object);
  result.removed = true;
  return result;
}

absl::StatusOr<std::unique_ptr<WatchStream>> ObjectStore::Watch(const std::string& resource,
                                                                const std::string& ns,
                                                                const WatchOptions& options) {
  SBL_RETURN_IF_ERROR(ValidateResource(resource));
  if (!ns.empty() && !IsDns1123Label(ns)) {
    return absl::InvalidArgumentError(
        Cat("watch ", resource, ": namespace: Invalid value: \"", ns, "\": ", kLabelRule));
  }
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::shared_ptr<const json>> existing;
  if (options.send_initial_events) {
    SqliteStatement& q = ns.empty() ? stmts_->list_all : stmts_->list_ns;
    q.Reset();
    SBL_RETURN_IF_ERROR(q.BindText(1, resource));
    SBL_RETURN_IF_ERROR(q.BindText(2, ns));
    SBL_RETURN_IF_ERROR(q.BindText(3, ""));
    while (true) {
      auto row = q.Step();
      if (!row.ok()) {
        q.Reset();
        return row.status();
      }
      if (!*row) break;
      json object = json::parse(q.ColumnText(2), nullptr, /*allow_exceptions=*/false);
      if (object.is_discarded()) {
        q.Reset();
        return absl::DataLossError(Cat(
            path_, ": object ", Key(resource, q.ColumnText(0), q.ColumnText(1)), ": corrupt JSON"));
      }
      existing.push_back(std::make_shared<const json>(std::move(object)));
    }
    q.Reset();
  }
  return hub_.Register(resource, ns, options, rv_, existing);
}

int64_t ObjectStore::CurrentResourceVersion() {
  std::lock_guard<std::mutex> lock(mu_);
  return rv_;
}

absl::StatusOr<int64_t> ObjectStore::Count(const std::string& resource) {
  std::lock_guard<std::mutex> lock(mu_);
  SqliteStatement& q = resource.empty() ? stmts_->count_all : stmts_->count_resource;
  q.Reset();
  if (!resource.empty()) SBL_RETURN_IF_ERROR(q.BindText(1, resource));
  SBL_ASSIGN_OR_RETURN(bool row, q.Step());
  int64_t n = row ? q.ColumnInt64(0) : 0;
  q.Reset();
  return n;
}

}  // namespace sandboxlet::store

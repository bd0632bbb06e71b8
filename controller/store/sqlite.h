// A thin RAII layer over the SQLite C API for the object store: a connection and prepared
// statements whose errors come back as absl::Status naming the database file.
//
// Thread-safety: none. A SqliteDb and its statements are used by one thread at a time (the
// ObjectStore serializes all use under its mutex).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

struct sqlite3;
struct sqlite3_stmt;

namespace sandboxlet::store {

class SqliteStatement;

class SqliteDb {
 public:
  // Opens (never creates) an existing database file read-write.
  static absl::StatusOr<std::unique_ptr<SqliteDb>> OpenExisting(const std::string& path);
  // Creates a new database file; fails if it exists.
  static absl::StatusOr<std::unique_ptr<SqliteDb>> Create(const std::string& path);
  ~SqliteDb();

  SqliteDb(const SqliteDb&) = delete;
  SqliteDb& operator=(const SqliteDb&) = delete;

  // Runs one or more statements that return no rows we need.
  absl::Status Exec(std::string_view sql);
  // Runs a statement that returns one text cell (e.g. "PRAGMA journal_mode=WAL").
  absl::StatusOr<std::string> QueryText(std::string_view sql);
  absl::StatusOr<SqliteStatement> Prepare(std::string_view sql);

  const std::string& path() const { return path_; }
  sqlite3* handle() const { return db_; }
  // A status for the connection's last error: "<path>: <what>: <sqlite message> (code N)",
  // with a code following the SQLite error (CORRUPT/NOTADB → DataLoss, FULL → ResourceExhausted,
  // BUSY/LOCKED → Unavailable, others → Internal).
  absl::Status Error(int rc, std::string_view what) const;

 private:
  SqliteDb(std::string path, sqlite3* db) : path_(std::move(path)), db_(db) {}
  static absl::StatusOr<std::unique_ptr<SqliteDb>> OpenWithFlags(const std::string& path,
                                                                 int flags);

  std::string path_;
  sqlite3* db_;
};

// A prepared statement. Bind parameters are 1-based; columns are 0-based.
class SqliteStatement {
 public:
  SqliteStatement() = default;
  SqliteStatement(SqliteStatement&& other) noexcept;
  SqliteStatement& operator=(SqliteStatement&& other) noexcept;
  ~SqliteStatement();

  // Resets the statement and clears bindings so it can be run again.
  void Reset();
  absl::Status BindText(int index, std::string_view value);
  absl::Status BindInt64(int index, int64_t value);
  // Steps once: true if a row is available, false when done.
  absl::StatusOr<bool> Step();
  // Steps until done (for INSERT/UPDATE/DELETE).
  absl::Status Run();

  std::string ColumnText(int column) const;
  int64_t ColumnInt64(int column) const;

 private:
  friend class SqliteDb;
  SqliteStatement(const SqliteDb* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}

  const SqliteDb* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
};

}  // namespace sandboxlet::store

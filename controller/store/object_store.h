// ObjectStore: the node's local CRD-like object store — a tiny kube-apiserver + etcd for
// Kubernetes-shaped objects (Sandbox, SandboxSnapshot, Event, ...), persisted in SQLite.
//
// Objects are nlohmann::json with apiVersion, kind, metadata, spec and status, addressed by a
// resource name ("sandboxes"), a namespace and a name. The store is schema-agnostic: it reads and
// owns only metadata bookkeeping (uid, resourceVersion, generation, creationTimestamp,
// deletionTimestamp, deletionGracePeriodSeconds) and treats spec/status as opaque.
//
// Semantics (those of a CRD with the status subresource):
//  - resourceVersion is one store-wide counter, incremented by every write of any resource and
//    rendered as a decimal string. Update/UpdateStatus/Delete with a resourceVersion check it
//    (Aborted "conflict" on mismatch); an empty one means unconditional.
//  - generation starts at 1 and is bumped when spec changes and when deletion starts.
//  - Create and Update ignore status; UpdateStatus changes only status.
//  - Delete of an object with finalizers sets deletionTimestamp and keeps it; it is removed when
//    an Update leaves it with no finalizers. Without finalizers Delete removes it at once.
//  - A write that changes nothing returns the stored object without a new resourceVersion or event.
//
// Durability: every write is one SQLite transaction (WAL, synchronous=FULL) that also stores the
// resourceVersion counter; a call that returned OK survives a process crash or power loss, and an
// object is never torn. Open refuses a corrupt file (integrity check + every stored object must
// parse) with DataLoss naming the file — it never silently starts empty. A new database is built
// under a temporary name and renamed into place, so a crash during the first Open leaves either
// no file or a complete empty store. The file is locked (SQLite exclusive locking mode) so a second
// process cannot open it.
//
// Watch history is in memory only (see watch.h): after a restart a watch from a resourceVersion
// older than the one at open is "gone" (OutOfRange) and the client re-lists.
//
// Errors: NotFound, AlreadyExists, Aborted (conflict / failed precondition), InvalidArgument
// (message starts with the field path, Kubernetes-style), OutOfRange (watch too old), DataLoss
// (corrupt file), Internal/ResourceExhausted/Unavailable (SQLite failures).
//
// Thread-safety: every method may be called from many threads. One SQLite connection is guarded
// by a mutex; watch delivery only appends to per-stream queues, consumers wait outside the lock.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "controller/store/selector.h"
#include "controller/store/sqlite.h"
#include "controller/store/watch.h"
#include "runtime/base/clock.h"

namespace sandboxlet::store {

struct StoreOptions {
  // Changes kept in memory per resource for watches that resume from a resourceVersion.
  size_t watch_history = 10000;
  // Undelivered events a watch may accumulate before it is ended with ERROR (410 Expired).
  size_t watch_queue_limit = 10000;
  // Source of creationTimestamp/deletionTimestamp. Null = RealClock::Get().
  Clock* clock = nullptr;
};

struct ListOptions {
  LabelSelector labels;
  FieldSelector fields;
  // At most this many items (0 = no limit); when more match, ObjectList::continue_token is set.
  int64_t limit = 0;
  // From a previous page. Pages are ordered by namespace, then name. A later page reflects the
  // store as it is when that page is read, and reports the first page's resourceVersion, so a
  // watch from it misses nothing (at worst it replays changes already seen).
  std::string continue_token;
};

struct ObjectList {
  std::vector<nlohmann::json> items;
  std::string resource_version;
  std::string continue_token;  // empty on the last page
};

struct DeletePreconditions {
  std::string uid;               // "" = no check
  std::string resource_version;  // "" = no check
};

struct DeleteResult {
  nlohmann::json object;  // the final object (removed) or the object now being deleted
  bool removed = false;   // false when finalizers keep it (deletionTimestamp set)
};

class ObjectStore {
 public:
  // Opens the store at `db_path`, creating it (and not its directory) if absent.
  static absl::StatusOr<std::unique_ptr<ObjectStore>> Open(const std::string& db_path,
                                                           StoreOptions options = {});
  ~ObjectStore();
  ObjectStore(const ObjectStore&) = delete;
  ObjectStore& operator=(const ObjectStore&) = delete;

  // Creates an object from metadata.name (or metadata.generateName + a random suffix) and
  // metadata.namespace. Returns the stored object. AlreadyExists if the name is taken.
  absl::StatusOr<nlohmann::json> Create(const std::string& resource, const nlohmann::json& object);

  absl::StatusOr<nlohmann::json> Get(const std::string& resource, const std::string& ns,
                                     const std::string& name);

  // Objects of `resource` in `ns` ("" = all namespaces) that match the selectors.
  absl::StatusOr<ObjectList> List(const std::string& resource, const std::string& ns,
                                  const ListOptions& options = {});

  // Replaces metadata (labels, annotations, finalizers, ownerReferences, ...) and spec of the
  // object named by object.metadata. status is kept; uid, creationTimestamp, deletionTimestamp
  // are preserved. If the object is being deleted and no finalizer is left, it is removed.
  absl::StatusOr<nlohmann::json> Update(const std::string& resource, const nlohmann::json& object);

  // Replaces only status (metadata.resourceVersion, when set, is a precondition).
  absl::StatusOr<nlohmann::json> UpdateStatus(const std::string& resource,
                                              const nlohmann::json& object);

  absl::StatusOr<DeleteResult> Delete(const std::string& resource, const std::string& ns,
                                      const std::string& name,
                                      const DeletePreconditions& preconditions = {});

  // Starts a watch of `resource` in `ns` ("" = all). See watch.h for the semantics.
  absl::StatusOr<std::unique_ptr<WatchStream>> Watch(const std::string& resource,
                                                     const std::string& ns,
                                                     const WatchOptions& options = {});

  // The store's current resourceVersion (of the last write).
  int64_t CurrentResourceVersion();
  // Number of stored objects of `resource` ("" = all), for metrics.
  absl::StatusOr<int64_t> Count(const std::string& resource);

  const std::string& path() const { return path_; }

 private:
  struct Statements;
  ObjectStore(std::string path, std::unique_ptr<SqliteDb> db, std::unique_ptr<Statements> stmts,
              int64_t rv, StoreOptions options);

  // Reads one object; NotFound names "<resource> <ns>/<name>". Requires mu_.
  absl::StatusOr<nlohmann::json> LoadLocked(const std::string& resource, const std::string& ns,
                                            const std::string& name);
  // Runs one write transaction: the next resourceVersion is written into `object`, which is
  // upserted (or its key removed for kDeleted) together with the counter; after the commit the
  // change is published to watches. On error nothing is stored. Requires mu_.
  absl::Status CommitLocked(const std::string& resource, WatchEventType type,
                            nlohmann::json& object, std::shared_ptr<const nlohmann::json> previous);
  absl::StatusOr<nlohmann::json> UpdateLocked(const std::string& resource,
                                              const nlohmann::json& request, bool status_only);
  std::string NewUid();        // requires mu_
  std::string RandomSuffix();  // requires mu_
  std::string NowTimestamp() const;

  const std::string path_;
  const StoreOptions options_;
  Clock* const clock_;

  std::mutex mu_;
  std::unique_ptr<SqliteDb> db_;       // guarded by mu_
  std::unique_ptr<Statements> stmts_;  // guarded by mu_
  int64_t rv_;                         // guarded by mu_; the last committed version
  std::mt19937_64 rng_;                // guarded by mu_
  WatchHub hub_;  // thread-safe; Publish is called under mu_ so events stay in commit order
};

}  // namespace sandboxlet::store

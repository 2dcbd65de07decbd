// An etcd v3 client for replicated mode (libmq/docs/replication.md, section 3): key-values, transactions,
// leases and watches, through etcd's JSON gRPC gateway (POST /v3/...) over plain HTTP with cpp-httplib.
// Written against etcd 3.4. What the gateway does that a reader of etcd's protobufs would not expect:
//   - keys and values are base64 both ways; 64-bit numbers come back as JSON strings;
//   - fields equal to their default are left out ("succeeded" when false, create_revision when 0, a PUT
//     event's "type"), so an absent field means 0, false or empty;
//   - an error answer is {"error": ..., "code": <gRPC code>, "message": ...} with an HTTP error status;
//     a streaming call (watch, keepalive) answers {"result": ...} or {"error": ...} objects, one a line.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "mq/status.h"

namespace httplib {
class Client;
}

namespace mq::replication {

namespace detail {
class EtcdTransport;
}

struct EtcdOptions {
  // How long connecting to one endpoint may take before the next one is tried.
  std::chrono::milliseconds connect_timeout{1000};
  // How long one request waits for its answer (each read and write on its socket).
  std::chrono::milliseconds request_timeout{5000};
  // How long a watch stream may stay silent before it is reconnected (etcd sends nothing on a watch of
  // keys that do not change; reconnecting costs one request and loses nothing).
  std::chrono::milliseconds watch_idle_timeout{60000};
  // The first wait before a broken watch stream is opened again; doubles on each failure in a row.
  std::chrono::milliseconds watch_backoff_min{50};
  // The longest wait between two attempts to open a watch stream.
  std::chrono::milliseconds watch_backoff_max{1000};
  // The largest answer (or one line of a stream) read from etcd; a larger one is refused as malformed.
  std::size_t max_answer_bytes = std::size_t{64} << 20;
};

// One key and its value as etcd stores it. Revisions are etcd's (the store's revision when the key was
// created / last modified); version counts the modifications since creation. lease 0: none.
struct KeyValue {
  std::string key;
  std::string value;
  std::int64_t create_revision = 0;
  std::int64_t mod_revision = 0;
  std::int64_t version = 0;
  std::int64_t lease = 0;
  bool operator==(const KeyValue&) const = default;
};

// get(): the key-value when the key exists, and the store's revision when it was read.
struct GetResult {
  std::optional<KeyValue> kv;
  std::int64_t revision = 0;
};

// get_prefix(): every key under the prefix in key order, and the store's revision when they were read.
struct RangeResult {
  std::vector<KeyValue> kvs;
  std::int64_t revision = 0;
};

// delete_key(): how many keys were deleted (0 or 1), and the store's revision afterwards.
struct DeleteResult {
  std::int64_t deleted = 0;
  std::int64_t revision = 0;
};

// grant_lease(): the lease's id, and the TTL etcd granted (it raises a TTL below its minimum, ~2 s).
struct Lease {
  std::int64_t id = 0;
  std::int64_t ttl_seconds = 0;
};

// What a transaction compares: a key's create_revision (0 when the key does not exist), mod_revision,
// version, value or lease.
enum class CompareTarget { kCreate, kMod, kVersion, kValue, kLease };
enum class CompareResult { kEqual, kNotEqual, kGreater, kLess };

// One condition of a transaction: `target` of `key` compared (`result`) with `number` (kValue: `value`).
struct Compare {
  std::string key;
  CompareTarget target = CompareTarget::kCreate;
  CompareResult result = CompareResult::kEqual;
  std::int64_t number = 0;  // the revision, version or lease compared with
  std::string value;        // kValue: the value compared with

  // The key does not exist (create_revision == 0): the create-only condition.
  static Compare absent(std::string key) {
    return {std::move(key), CompareTarget::kCreate, CompareResult::kEqual, 0, {}};
  }
  static Compare create_revision(std::string key, CompareResult result, std::int64_t revision) {
    return {std::move(key), CompareTarget::kCreate, result, revision, {}};
  }
  static Compare mod_revision(std::string key, CompareResult result, std::int64_t revision) {
    return {std::move(key), CompareTarget::kMod, result, revision, {}};
  }
  static Compare version(std::string key, CompareResult result, std::int64_t version) {
    return {std::move(key), CompareTarget::kVersion, result, version, {}};
  }
  static Compare value_is(std::string key, CompareResult result, std::string value) {
    return {std::move(key), CompareTarget::kValue, result, 0, std::move(value)};
  }
  static Compare lease(std::string key, CompareResult result, std::int64_t lease) {
    return {std::move(key), CompareTarget::kLease, result, lease, {}};
  }
};

// One operation of a transaction branch: put `key` = `value` (with `lease`, 0: none), delete `key`, or
// read `key` (a range op; with a non-empty `range_end`, every key in [key, range_end)).
struct TxnOp {
  enum class Type { kPut, kDelete, kRange };
  Type type = Type::kRange;
  std::string key;
  std::string value;       // kPut
  std::int64_t lease = 0;  // kPut
  std::string range_end;   // kRange and kDelete: empty for `key` alone

  static TxnOp put(std::string key, std::string value, std::int64_t lease = 0) {
    return {Type::kPut, std::move(key), std::move(value), lease, {}};
  }
  static TxnOp del(std::string key) { return {Type::kDelete, std::move(key), {}, 0, {}}; }
  static TxnOp range(std::string key) { return {Type::kRange, std::move(key), {}, 0, {}}; }
  // Every key that starts with `prefix`.
  static TxnOp range_prefix(std::string prefix);
};

// The answer to one TxnOp of the branch that ran, in the same order.
struct TxnResponse {
  TxnOp::Type type = TxnOp::Type::kRange;
  std::vector<KeyValue> kvs;  // kRange: what it read
  std::int64_t deleted = 0;   // kDelete: how many keys it deleted
};

// txn(): whether the compares held (the success branch ran) or not (the failure branch ran), the store's
// revision afterwards, and the answers of the branch that ran.
struct TxnResult {
  bool succeeded = false;
  std::int64_t revision = 0;
  std::vector<TxnResponse> responses;
};

// One change seen by a watch: a PUT (the key's new value, revisions, lease) or a DELETE (the key and the
// deletion's revision in kv.mod_revision; the other fields are 0 or empty).
struct WatchEvent {
  enum class Type { kPut, kDelete };
  Type type = Type::kPut;
  KeyValue kv;
};

// Why a watch ended by itself (stop() ends it without this).
struct WatchError {
  Status status;
  // > 0: etcd has compacted its history up to this revision, so the changes from the watch's next revision
  // on can no longer be replayed. Read the keys again (get_prefix) and watch from that answer's revision + 1.
  std::int64_t compact_revision = 0;
};

class EtcdWatch;

// Thread-safe: any number of threads may call it at once. Each call is one request to one endpoint,
// over a pooled keep-alive connection. A request whose connection cannot be made (refused, timed out)
// goes to the next endpoint in turn, and the next call starts with the endpoint that answered last.
//
// Failures (the Status of a failed call):
//   kUnavailable      no endpoint could be reached, or etcd answered that it cannot serve now (no leader):
//                     nothing was applied;
//   kIOError          the request was sent and no valid answer came (timeout, broken connection, a
//                     malformed or oversized answer): a write may or may not have been applied;
//   kInvalidArgument, kNotFound, kConflict, kUnauthenticated   etcd refused it (its message says why).
// A read (get, get_prefix, keep_alive) that timed out on one endpoint is also tried on the next one;
// a write is not, since it may have been applied.
class EtcdClient {
 public:
  // A client of the etcd cluster whose client URLs are `endpoints` ("http://127.0.0.1:2379"; https too,
  // verified against the system's CAs). kInvalidArgument when `endpoints` is empty or one is not an
  // http(s) URL of a host and port.
  static Result<std::unique_ptr<EtcdClient>> create(std::vector<std::string> endpoints,
                                                    EtcdOptions options = {});
  ~EtcdClient();
  EtcdClient(const EtcdClient&) = delete;
  EtcdClient& operator=(const EtcdClient&) = delete;

  // `key`'s current value, if it exists.
  Result<GetResult> get(std::string_view key);
  // Every key that starts with `prefix` (all keys when it is empty), in key order.
  Result<RangeResult> get_prefix(std::string_view prefix);
  // Sets `key` to `value`, attached to `lease` (0: none; kNotFound when that lease does not exist).
  // Returns the store's revision after the put (the key's new mod_revision).
  Result<std::int64_t> put(std::string_view key, std::string_view value, std::int64_t lease = 0);
  // Deletes `key` (nothing when it does not exist).
  Result<DeleteResult> delete_key(std::string_view key);
  // Runs `success_ops` when every one of `compares` holds, `failure_ops` otherwise, atomically.
  Result<TxnResult> txn(const std::vector<Compare>& compares, const std::vector<TxnOp>& success_ops,
                        const std::vector<TxnOp>& failure_ops);

  // Discards etcd's history of revisions below `revision` (a watch from before it is then refused with
  // WatchError::compact_revision). kConflict when `revision` is compacted already or in the future.
  Status compact(std::int64_t revision);

  // A new lease of `ttl_seconds` (> 0).
  Result<Lease> grant_lease(std::int64_t ttl_seconds);
  // Renews lease `lease_id` and returns its TTL from now, in seconds; 0 when the lease no longer exists
  // (expired or revoked).
  Result<std::int64_t> keep_alive(std::int64_t lease_id);
  // Revokes lease `lease_id`, deleting every key attached to it. kNotFound when it does not exist.
  Status revoke_lease(std::int64_t lease_id);

  // Starts a watch of every key that starts with `prefix` (all keys when empty), from revision
  // `start_revision` (0: from when its first stream opens). See EtcdWatch. `on_events` and `on_error` are
  // called on the watch's own thread and must not throw. The watch may outlive this client.
  std::unique_ptr<EtcdWatch> watch_prefix(std::string prefix, std::int64_t start_revision,
                                          std::function<void(const std::vector<WatchEvent>&)> on_events,
                                          std::function<void(const WatchError&)> on_error);

  const std::vector<std::string>& endpoints() const;

 private:
  explicit EtcdClient(std::shared_ptr<detail::EtcdTransport> transport);
  std::shared_ptr<detail::EtcdTransport> transport_;
};

// A watch of a key prefix on its own thread (one long-lived POST /v3/watch stream at a time).
//
// `on_events` is called with each batch of changes etcd sends, in revision order, never an empty batch:
// every change from the start revision on is delivered exactly once, in order, although the stream
// breaks (etcd restarted, an endpoint down, an idle stream reconnected): the watch then opens a new
// stream from the revision after the last one it delivered, trying the endpoints in turn, with a backoff.
// `on_error` is called at most once, when the watch ends by itself: etcd compacted the revisions it
// needs (WatchError::compact_revision), or etcd refused the watch as malformed. No callback runs after
// stop() returns.
//
// Thread-safe: stop() may be called from any thread but the watch's own (not from a callback).
class EtcdWatch {
 public:
  using EventsCallback = std::function<void(const std::vector<WatchEvent>&)>;
  using ErrorCallback = std::function<void(const WatchError&)>;

  // Stops the watch (see stop()).
  ~EtcdWatch();
  EtcdWatch(const EtcdWatch&) = delete;
  EtcdWatch& operator=(const EtcdWatch&) = delete;

  // Ends the stream and the thread; returns once neither runs: at once while the stream waits for etcd
  // (idle, or etcd paused), or after its backoff wait; a connection being made cannot be interrupted, so
  // at worst after EtcdOptions::connect_timeout. Calling it again does nothing.
  void stop();

 private:
  friend class EtcdClient;
  EtcdWatch(std::shared_ptr<detail::EtcdTransport> transport, std::string prefix, std::int64_t start_revision,
            EventsCallback on_events, ErrorCallback on_error);
  void run();
  // Reads one stream from `endpoint`; returns false when the watch has ended (stopping, or on_error
  // was called).
  bool read_stream(std::size_t endpoint, bool& made_progress);
  // Waits `delay` or until stop(); false when stopping.
  bool wait(std::chrono::milliseconds delay);

  const std::shared_ptr<detail::EtcdTransport> transport_;
  const std::string prefix_;
  const EventsCallback on_events_;
  const ErrorCallback on_error_;
  std::int64_t next_revision_;  // used by the watch thread only: the first revision not delivered yet

  std::mutex mutex_;
  std::condition_variable changed_;    // stopping_ or finished_ set
  std::atomic<bool> stopping_{false};  // set under mutex_, read anywhere
  bool finished_ = false;              // GUARDED_BY(mutex_): the thread has left run()
  httplib::Client* stream_ = nullptr;  // GUARDED_BY(mutex_): the stream's client while it is read
  std::mutex join_mutex_;              // one stop() joins the thread
  std::thread thread_;
};

}  // namespace mq::replication

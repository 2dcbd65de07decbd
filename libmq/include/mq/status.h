// Expected failures are values, not exceptions: every call that can fail returns a Status, or a
// Result<T> when it also produces a value. mqd maps each ErrorCode to exactly one HTTP status.
#pragma once

#include <cassert>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "mq/export.h"

namespace mq {

enum class ErrorCode {
  kOk = 0,
  kInvalidArgument,  // malformed input: bad name, bad JSON, bad configuration value
  kNotFound,         // unknown topic, partition or message
  kPayloadTooLarge,  // a payload above the configured limit
  kNotOwned,         // the partition belongs to another broker
  kConflict,         // the operation does not fit the current state (e.g. not in flight)
  kCorruption,       // on-disk data that cannot be trusted
  kIOError,          // the operating system refused a read, write or sync
  kShuttingDown,     // the store or broker is closing
  kUnavailable,      // a server the client needs (an mqd broker, Redis) cannot be reached
  kUnauthenticated,  // the server refused the client's credentials
  kNoSpace,          // the disk is full: nothing of the write was kept; it works again once there is room
  kStorageFailed,    // a partition's fdatasync failed: it refuses writes until a restart recovers its log
};

// The name of `code` as written in logs ("not_found").
MQ_EXPORT std::string_view to_string(ErrorCode code);

// The outcome of an operation. Cheap to copy when ok. Thread-compatible. [[nodiscard]]: an error
// is handled or passed on, never dropped by accident (cast to void where dropping is meant).
class [[nodiscard]] MQ_EXPORT Status {
 public:
  Status() = default;
  Status(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok_status() { return {}; }
  // The partition belongs to broker `owner`.
  static Status not_owned(std::string m, std::uint32_t owner) {
    Status s(ErrorCode::kNotOwned, std::move(m));
    s.owner_ = owner;
    return s;
  }
  static Status conflict(std::string m) { return {ErrorCode::kConflict, std::move(m)}; }
  static Status invalid_argument(std::string m) { return {ErrorCode::kInvalidArgument, std::move(m)}; }
  static Status not_found(std::string m) { return {ErrorCode::kNotFound, std::move(m)}; }
  static Status payload_too_large(std::string m) { return {ErrorCode::kPayloadTooLarge, std::move(m)}; }
  static Status corruption(std::string m) { return {ErrorCode::kCorruption, std::move(m)}; }
  static Status io_error(std::string m) { return {ErrorCode::kIOError, std::move(m)}; }
  static Status shutting_down(std::string m) { return {ErrorCode::kShuttingDown, std::move(m)}; }
  static Status unavailable(std::string m) { return {ErrorCode::kUnavailable, std::move(m)}; }
  static Status unauthenticated(std::string m) { return {ErrorCode::kUnauthenticated, std::move(m)}; }
  static Status no_space(std::string m) { return {ErrorCode::kNoSpace, std::move(m)}; }
  // `outcome_unknown`: this very write was handed to the disk when the sync failed, so it may or may
  // not survive a crash (retrying it may store it twice).
  static Status storage_failed(std::string m, bool outcome_unknown) {
    Status s(ErrorCode::kStorageFailed, std::move(m));
    s.outcome_unknown_ = outcome_unknown;
    return s;
  }

  // Replicated partitions: the write was made on the leader but not confirmed by enough in-sync
  // replicas in time (kUnavailable, outcome unknown: it may or may not survive a failover; a produce
  // should be sent again only with its dedup_id).
  static Status unconfirmed(std::string m) {
    Status s(ErrorCode::kUnavailable, std::move(m));
    s.outcome_unknown_ = true;
    return s;
  }

  bool ok() const { return code_ == ErrorCode::kOk; }
  ErrorCode code() const { return code_; }
  // A human-readable reason, empty when ok.
  const std::string& message() const { return message_; }
  // "<code>: <message>", or "ok".
  std::string to_string() const;
  // With kNotOwned: the index of the broker that owns the partition.
  std::optional<std::uint32_t> owner() const { return owner_; }
  // True when the operation may have taken effect although it failed (storage_failed, unconfirmed).
  bool outcome_unknown() const { return outcome_unknown_; }

 private:
  ErrorCode code_ = ErrorCode::kOk;
  std::string message_;
  std::optional<std::uint32_t> owner_;
  bool outcome_unknown_ = false;
};

// Either a T or the Status that explains why there is none (never an ok Status).
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::move(value)) {}        // NOLINT(google-explicit-constructor): return values
  Result(Status status) : state_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    assert(!std::get<Status>(state_).ok() && "a Result holding a Status must hold an error");
  }

  bool ok() const { return std::holds_alternative<T>(state_); }
  // The error; an ok Status when a value is held.
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(state_);
  }

  T& value() & { return std::get<T>(state_); }
  const T& value() const& { return std::get<T>(state_); }
  T&& value() && { return std::get<T>(std::move(state_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> state_;
};

}  // namespace mq

// What a producer hands in (Message) and what a reader gets back (StoredMessage, ReadBatch).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mq/export.h"
#include "mq/status.h"

namespace mq {

namespace detail {
class PayloadInternal;
class ReadBatchInternal;
}  // namespace detail

// A valid JSON value in minified form, so it always fits on one line of the log. Copyable.
class MQ_EXPORT Payload {
 public:
  // Validates `json` (any JSON value, including scalars and null) and minifies it by removing
  // whitespace, keeping every number's digits as written. kInvalidArgument when it is not exactly
  // one JSON value.
  static Result<Payload> parse(std::string_view json);

  const std::string& json() const { return json_; }

 private:
  friend class detail::PayloadInternal;  // libmq's own records, already minified
  explicit Payload(std::string json) : json_(std::move(json)) {}
  std::string json_;
};

// One message to append: a payload and an optional key (valid UTF-8, at most 64 KiB; it picks the
// partition).
// The dedup_id prefix of the messages POST /redrive sends back (Broker::redrive), by which a redrive
// cut short by a crash recognises what it stored: Broker::produce (and so /produce) refuses it.
inline constexpr std::string_view kRedriveDedupIdPrefix = "mq-redrive:";

struct Message {
  Payload payload;
  std::optional<std::string> key;
  // Dead letters only, set by the broker: where the message came from ({"topic", "partition",
  // "offset", "group", "deliveries"}), stored as the record's "source" field. Producers leave it empty.
  std::optional<Payload> source = std::nullopt;
  // Headers (API.md "Message options"): at most 32, names of 1-128 characters of [A-Za-z0-9._-],
  // each once, values valid UTF-8 of at most 4096 bytes; stored in this order as the record's
  // "headers" (libmq/docs/log_format.md). kInvalidArgument at append otherwise.
  std::vector<std::pair<std::string, std::string>> headers = {};
  // Delayed delivery (API.md "Message options"): no group gets the message before `deliver_at_ms`
  // (ms since the Unix epoch, at most a week after it is stored), or before `delay` (0 to one week)
  // has passed since it was stored; never both. It is stored at once, at its offset, and the record
  // keeps the time it is due as "deliver_at". kInvalidArgument at append otherwise.
  std::optional<std::int64_t> deliver_at_ms = std::nullopt;
  std::optional<std::chrono::milliseconds> delay = std::nullopt;
  // Idempotent append: a message whose dedup_id (1 to 128 characters of valid UTF-8) the partition stored
  // within its deduplication window is not stored again (AppendOutcome names the stored one).
  std::optional<std::string> dedup_id = std::nullopt;
};

// The longest delay a message may have (one week, as API.md "Message options" says).
inline constexpr std::chrono::milliseconds kMaxDeliveryDelay{7LL * 24 * 3600 * 1000};
// The longest dedup_id, in characters (code points).
inline constexpr std::size_t kMaxDedupIdCharacters = 128;

// Where a produced batch went: its partition, the offset of its first message and one id and one
// offset per message, in order (ids are opaque; hand them back to ack, nack or touch). A message that
// was a duplicate (Message::dedup_id) has the id and offset of the one stored before, and its index
// in `duplicates`; first_offset is offsets[0] then too.
struct ProduceResult {
  std::uint32_t partition = 0;
  std::uint64_t first_offset = 0;
  std::vector<std::string> ids;
  std::vector<std::uint64_t> offsets = {};
  std::vector<std::size_t> duplicates = {};
};

// One stored message as read back: its offset and its line from the log, without the newline.
// `line` is the complete JSON object that was written ({"offset":..,"timestamp":..,"payload":..}).
struct StoredMessage {
  std::uint64_t offset;
  std::string_view line;
};

// Consecutive messages read from one partition. Owns the bytes its StoredMessages point into.
// Movable, not copyable.
class MQ_EXPORT ReadBatch {
 public:
  ReadBatch() = default;
  ReadBatch(ReadBatch&&) noexcept = default;
  ReadBatch& operator=(ReadBatch&&) noexcept = default;
  ReadBatch(const ReadBatch&) = delete;
  ReadBatch& operator=(const ReadBatch&) = delete;

  bool empty() const { return messages_.empty(); }
  std::size_t size() const { return messages_.size(); }
  const StoredMessage& operator[](std::size_t i) const { return messages_[i]; }
  auto begin() const { return messages_.begin(); }
  auto end() const { return messages_.end(); }
  // The offset after the last message (the offset to read from next).
  std::uint64_t next_offset() const { return next_offset_; }

 private:
  friend class detail::ReadBatchInternal;  // the partition log fills the batch
  std::string buffer_;
  std::vector<StoredMessage> messages_;
  std::uint64_t next_offset_ = 0;
};

}  // namespace mq

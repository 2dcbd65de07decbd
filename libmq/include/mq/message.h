// What a producer hands in (Message) and what a reader gets back (StoredMessage, ReadBatch).
#pragma once

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
};

// Where a produced batch went: its partition, the offset of its first message and one id per message,
// in order (ids are opaque; hand them back to ack, nack or touch).
struct ProduceResult {
  std::uint32_t partition = 0;
  std::uint64_t first_offset = 0;
  std::vector<std::string> ids;
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

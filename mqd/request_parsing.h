// Reading requests: query parameters and JSON bodies (simdjson), each refused with a clear reason.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mq/broker.h"
#include "mq/consumer_group.h"
#include "mq/message.h"
#include "mq/status.h"

namespace mqd {

// A query parameter as the HTTP layer found it: absent, or its (decoded) value.
using Param = std::optional<std::string>;

// A required topic or group name (400 when missing or invalid).
mq::Result<std::string> required_name(std::string_view what, const Param& value);
// A partition number: a whole number, no sign (400 otherwise; 404 when too large for any topic).
// nullopt when absent.
mq::Result<std::optional<std::uint32_t>> optional_partition(const Param& value);
mq::Result<std::uint32_t> required_partition(const Param& value);
// A whole number of 0 to 2^63 - 1 given as query parameter `name`.
mq::Result<std::uint64_t> parse_unsigned(std::string_view name, std::string_view value);
// /consume's optional visibility_timeout_ms, max_inflight, from and ordering.
mq::Result<mq::SubscribeOptions> subscribe_options(const Param& visibility_timeout_ms,
                                                   const Param& max_inflight, const Param& from,
                                                   const Param& ordering = std::nullopt);

// GET /messages: where to start (offset or timestamp, never both) and how many (1 to 1000, default 100).
mq::Result<mq::ReadFrom> read_from(const Param& offset, const Param& timestamp);
mq::Result<std::size_t> read_limit(const Param& limit);

// The most messages one produce batch (or ids one ack) may hold: more is a 413.
inline constexpr std::size_t kMaxBatchMessages = 100'000;

// POST /produce: {"payload": v, "key": "k"} or {"messages": [{"payload": v, "key": "k"}, ...]}.
struct ProduceBody {
  std::vector<mq::Message> messages;
  bool batch = false;  // the "messages" form (answered with ids and offsets)
};
mq::Result<ProduceBody> parse_produce_body(std::string_view body);
// POST /ack: {"id": "..."} or {"ids": ["...", ...]}.
mq::Result<std::vector<std::string>> parse_ack_body(std::string_view body);
// POST /nack: {"id": "...", "delay_ms": n}; POST /touch: {"id": "..."}.
struct NackBody {
  std::string id;
  std::chrono::milliseconds delay{0};
};
mq::Result<NackBody> parse_nack_body(std::string_view body);
mq::Result<std::string> parse_touch_body(std::string_view body);
// POST /seek: exactly one of {"offset": n}, {"timestamp": ms}, {"position": "earliest"|"latest"}.
mq::Result<mq::SeekTarget> parse_seek_body(std::string_view body);
// POST /redrive: {} or {"limit": n} (n >= 1); an empty body counts as {}. nullopt: no limit.
mq::Result<std::optional<std::uint64_t>> parse_redrive_body(std::string_view body);

}  // namespace mqd

#include "common/message_rules.h"

#include <simdjson.h>

#include <algorithm>
#include <array>
#include <string>
#include <string_view>

#include "common/byte_scan.h"

namespace mq::detail {
namespace {

bool valid_utf8(std::string_view s) {
  // Names, keys and ids are mostly ASCII and short: a word scan answers before simdjson's dispatch.
  return all_ascii(s) || simdjson::validate_utf8(s.data(), s.size());
}

// Code points of valid UTF-8: the bytes that do not continue a sequence.
std::size_t characters(std::string_view s) {
  if (all_ascii(s)) return s.size();
  return static_cast<std::size_t>(std::count_if(
      s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

// The bytes a header name may have, [A-Za-z0-9._-], as a table: one load a byte instead of a chain
// of comparisons (and not std::isalnum, which asks the locale).
constexpr std::array<bool, 256> kHeaderNameBytes = [] {
  std::array<bool, 256> table{};
  for (int c = 0; c < 256; ++c) {
    table[c] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
               c == '_' || c == '-';
  }
  return table;
}();

// Names need no escaping in the log, so a reader can find them without a JSON parser.
bool valid_header_name(std::string_view name) {
  return !name.empty() && name.size() <= kMaxHeaderNameBytes &&
         std::all_of(name.begin(), name.end(),
                     [](char c) { return kHeaderNameBytes[static_cast<unsigned char>(c)]; });
}

Status check_headers(const std::vector<std::pair<std::string, std::string>>& headers) {
  if (headers.size() > kMaxHeaders)
    return Status::invalid_argument("headers: at most " + std::to_string(kMaxHeaders) + " per message");
  for (std::size_t i = 0; i < headers.size(); ++i) {
    const auto& [name, value] = headers[i];
    if (!valid_header_name(name)) {
      return Status::invalid_argument("headers: a name must be 1 to 128 characters of [A-Za-z0-9._-]");
    }
    // At most 32 of them: comparing pairs costs less than building a set for every message.
    for (std::size_t j = 0; j < i; ++j) {
      if (headers[j].first == name) return Status::invalid_argument("headers: '" + name + "' appears twice");
    }
    if (value.size() > kMaxHeaderValueBytes || !valid_utf8(value)) {
      return Status::invalid_argument("headers: the value of '" + name +
                                      "' must be valid UTF-8 of at most 4096 bytes");
    }
  }
  return {};
}

Status check_delivery_time(const Message& m, std::int64_t now_ms) {
  if (m.delay && m.deliver_at_ms) return Status::invalid_argument("give delay_ms or deliver_at, not both");
  if (m.delay && (m.delay->count() < 0 || *m.delay > kMaxDeliveryDelay)) {
    return Status::invalid_argument("delay_ms: 0 to " + std::to_string(kMaxDeliveryDelay.count()) +
                                    " (one week)");
  }
  if (m.deliver_at_ms && (*m.deliver_at_ms < 0 || *m.deliver_at_ms > now_ms + kMaxDeliveryDelay.count())) {
    return Status::invalid_argument(
        "deliver_at: milliseconds since the epoch, at most one week (604800000 ms) from now");
  }
  return {};
}

}  // namespace

Status check_message_options(const Message& m, std::int64_t now_ms) {
  if (m.key) {
    if (m.key->size() > kMaxKeyBytes) {
      return Status::invalid_argument("a key may have at most " + std::to_string(kMaxKeyBytes) + " bytes");
    }
    if (!valid_utf8(*m.key)) return Status::invalid_argument("a key must be valid UTF-8");
  }
  if (auto s = check_headers(m.headers); !s.ok()) return s;
  if (auto s = check_delivery_time(m, now_ms); !s.ok()) return s;
  if (m.dedup_id &&
      (m.dedup_id->empty() || !valid_utf8(*m.dedup_id) || characters(*m.dedup_id) > kMaxDedupIdCharacters)) {
    return Status::invalid_argument("dedup_id: 1 to " + std::to_string(kMaxDedupIdCharacters) +
                                    " characters of valid UTF-8");
  }
  return {};
}

}  // namespace mq::detail

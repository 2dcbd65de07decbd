// The rules a Message's key and options (API.md "Message options") must follow, shared by the
// partition log (which must never store what would not read back) and the client backends (which
// refuse before sending, with the same words).
#pragma once

#include <cstdint>

#include "mq/message.h"
#include "mq/status.h"

namespace mq::detail {

inline constexpr std::size_t kMaxKeyBytes = 64 * 1024;
inline constexpr std::size_t kMaxHeaders = 32;
inline constexpr std::size_t kMaxHeaderNameBytes = 128;
inline constexpr std::size_t kMaxHeaderValueBytes = 4096;

// kInvalidArgument, naming the field, for a key that is not valid UTF-8 of at most 64 KiB, headers
// beyond the rules, delay and deliver_at_ms together or out of range (deliver_at_ms at most a week
// after `now_ms`), or a dedup_id that is not 1 to 128 bytes of valid UTF-8.
Status check_message_options(const Message& message, std::int64_t now_ms);

}  // namespace mq::detail

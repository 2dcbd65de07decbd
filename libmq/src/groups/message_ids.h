// Message ids: "<partition>-<offset>". Opaque to clients (they only hand ids back), so the format
// lives here, behind the groups layer, and may change.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "mq/status.h"

namespace mq::detail {

// The id of the message at `offset` of `partition`.
std::string message_id(std::uint32_t partition, std::uint64_t offset);
// The offset an id names on `partition`; nullopt for a malformed id or one of another partition.
std::optional<std::uint64_t> offset_of_id(std::string_view id, std::uint32_t partition);
// offset_of_id, with kNotFound ("names no message of partition P") for nullopt.
Result<std::uint64_t> offset_named_by(std::string_view id, std::uint32_t partition);

}  // namespace mq::detail

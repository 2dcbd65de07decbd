#include "groups/message_ids.h"

#include <charconv>

namespace mq::detail {

std::string message_id(std::uint32_t partition, std::uint64_t offset) {
  return std::to_string(partition) + "-" + std::to_string(offset);
}

std::optional<std::uint64_t> offset_of_id(std::string_view id, std::uint32_t partition) {
  const auto dash = id.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  std::uint32_t p = 0;
  std::uint64_t offset = 0;
  const char* begin = id.data();
  auto [p_end, p_ec] = std::from_chars(begin, begin + dash, p);
  if (dash == 0 || p_ec != std::errc() || p_end != begin + dash || p != partition) return std::nullopt;
  const std::string_view rest = id.substr(dash + 1);
  auto [o_end, o_ec] = std::from_chars(rest.data(), rest.data() + rest.size(), offset);
  if (rest.empty() || o_ec != std::errc() || o_end != rest.data() + rest.size()) return std::nullopt;
  return offset;
}

Result<std::uint64_t> offset_named_by(std::string_view id, std::uint32_t partition) {
  auto offset = offset_of_id(id, partition);
  if (!offset) {
    return Status::not_found("id '" + std::string(id) + "' names no message of partition " +
                             std::to_string(partition));
  }
  return *offset;
}

}  // namespace mq::detail

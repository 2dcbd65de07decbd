// Whole decimal numbers in configuration values, parsed strictly: no sign, spaces or suffixes.
#pragma once

#include <charconv>
#include <cstdint>
#include <optional>
#include <string_view>

namespace mq::detail {

// `text` as a number in [min, max]; nullopt otherwise.
inline std::optional<std::uint64_t> parse_decimal(std::string_view text, std::uint64_t min = 0,
                                                  std::uint64_t max = UINT64_MAX) {
  std::uint64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  if (value < min || value > max) return std::nullopt;
  return value;
}

}  // namespace mq::detail

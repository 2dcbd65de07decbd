// The one error for a topic or group name that is_valid_name() refuses.
#pragma once

#include <string>
#include <string_view>

#include "mq/status.h"

namespace mq::detail {

// The rule is_valid_name() checks, as the error messages quote it.
inline constexpr std::string_view kNameRule = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$";

// kInvalidArgument "invalid <what> '<name>': must match <rule>" (`what`: "topic name", "group", ...).
inline Status invalid_name(std::string_view what, std::string_view name) {
  return Status::invalid_argument("invalid " + std::string(what) + " '" + std::string(name) +
                                  "': must match " + std::string(kNameRule));
}

}  // namespace mq::detail

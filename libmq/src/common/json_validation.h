// The one rule for "this text is valid JSON" that every path of libmq and mqd uses: request bodies,
// payloads on the way in, and log lines on the way back during recovery. Whatever the write path
// accepts, recovery must accept too, or a restart would cut the log at that record and take every
// later message with it (issue 10, defect 1: an integer beyond 64 bits was accepted at produce but
// refused by recovery).
//
// simdjson decides first (fast). It refuses numbers it cannot represent (integers beyond 64 bits,
// exponents beyond double), which JSON allows: for those only, a second, slower parser that accepts
// any number decides, with the same nesting limit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "mq/status.h"

namespace mq::detail {

// The deepest nesting a payload may have. A record wraps its payload in one more object, a request
// body in up to three more (batch form), so every enclosing document stays within kMaxDocumentDepth.
inline constexpr std::size_t kMaxPayloadDepth = 1000;
inline constexpr std::size_t kMaxDocumentDepth = kMaxPayloadDepth + 8;

// A scalar field at the top level of an object, as the slow parser saw it.
using TopLevelValue = std::variant<std::monostate /*null, bool or container*/, std::uint64_t, std::int64_t,
                                   double, std::string>;

// The slow parser's view of a top-level object: every member name, with its scalar value when it
// has one. nullopt when `text` is not valid JSON, not an object, or nested deeper than `max_depth`.
std::optional<std::map<std::string, TopLevelValue, std::less<>>> parse_top_level_slowly(
    std::string_view text, std::size_t max_depth);

// Decides whether text is one valid JSON value nested at most `max_depth` deep. Not thread-safe
// (it reuses its parser); cheap to keep one per thread or per object.
class JsonValidator {
 public:
  explicit JsonValidator(std::size_t max_depth);
  ~JsonValidator();
  JsonValidator(const JsonValidator&) = delete;
  JsonValidator& operator=(const JsonValidator&) = delete;

  // ok, or kInvalidArgument whose message starts with `what` and says why.
  Status check(std::string_view text, std::string_view what);

 private:
  struct Parser;
  std::unique_ptr<Parser> parser_;
  std::size_t max_depth_;
};

// True when simdjson's error code `error` (an int, to keep simdjson out of this header) is the one
// that only means "a number too large for 64 bits": the case where the slow parser decides.
bool is_unrepresentable_number_error(int error);

}  // namespace mq::detail

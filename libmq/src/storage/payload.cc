#include <simdjson.h>

#include "common/json_validation.h"
#include "mq/message.h"

namespace mq {
namespace {

// Minifies `json`, which is valid: whitespace removed, digits kept.
std::string minify_valid_json(std::string_view json) {
  // Strip whitespace from the text rather than re-serialise a parsed value, so that numbers keep
  // exactly the digits they were produced with (no rounding of 3.14159265358979323846, no 1e2 -> 100.0).
  std::string minified(json.size() + simdjson::SIMDJSON_PADDING, '\0');
  std::size_t length = 0;
  if (simdjson::minify(json.data(), json.size(), minified.data(), length)) {
    // Only text that was not valid after all (bad UTF-8, an unclosed string) gets here: keep it as
    // given; Partition::append still refuses it if it holds a raw newline.
    return std::string(json);
  }
  minified.resize(length);
  return minified;
}

}  // namespace

Result<Payload> Payload::parse(std::string_view json) {
  // The same rule recovery applies to the record that will hold this payload (json_validation.h).
  thread_local detail::JsonValidator validator(detail::kMaxPayloadDepth);
  if (auto s = validator.check(json, "payload"); !s.ok()) return s;
  return Payload(minify_valid_json(json));
}

}  // namespace mq

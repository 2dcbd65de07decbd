#include <simdjson.h>
#include <nlohmann/json.hpp>

#include "mq/message.h"

namespace mq {

Result<Payload> Payload::parse(std::string_view json) {
  simdjson::dom::parser parser;
  simdjson::dom::element value;
  const auto error = parser.parse(json.data(), json.size()).get(value);
  if (error == simdjson::NUMBER_ERROR) {
    // simdjson refuses numbers it cannot represent (integers beyond 64 bits, say), which JSON
    // allows; a second, slower validator decides.
    if (!nlohmann::json::accept(json)) {
      return Status::invalid_argument(std::string("payload is not valid JSON: ") +
                                      simdjson::error_message(error));
    }
  } else if (error) {
    return Status::invalid_argument(std::string("payload is not valid JSON: ") +
                                    simdjson::error_message(error));
  }
  return from_valid_json(json);
}

Payload Payload::from_valid_json(std::string_view json) {
  // Strip whitespace from the text rather than re-serialise a parsed value, so that numbers keep
  // exactly the digits they were produced with (no rounding of 3.14159265358979323846, no 1e2 -> 100.0).
  std::string minified(json.size() + simdjson::SIMDJSON_PADDING, '\0');
  std::size_t length = 0;
  if (simdjson::minify(json.data(), json.size(), minified.data(), length)) {
    // Only text that was not valid after all (bad UTF-8, an unclosed string) gets here: keep it as
    // given; Partition::append still refuses it if it holds a raw newline.
    return Payload(std::string(json));
  }
  minified.resize(length);
  return Payload(std::move(minified));
}

}  // namespace mq

#include <simdjson.h>

#include "mq/message.h"

namespace mq {

Result<Payload> Payload::parse(std::string_view json) {
  simdjson::dom::parser parser;
  simdjson::dom::element value;
  if (auto error = parser.parse(json.data(), json.size()).get(value)) {
    return Status::invalid_argument(std::string("payload is not valid JSON: ") + simdjson::error_message(error));
  }
  return Payload(simdjson::minify(value));
}

}  // namespace mq

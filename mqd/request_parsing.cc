#include "request_parsing.h"

#include <simdjson.h>

#include <charconv>

#include "common/decimal.h"
#include "common/names.h"
#include "common/json_validation.h"
#include "protocol/http_protocol.h"
#include "mq/options.h"

namespace mqd {

namespace field = mq::http::field;

namespace {

mq::Status bad_request(std::string reason) { return mq::Status::invalid_argument(std::move(reason)); }

std::optional<std::uint64_t> whole_number(std::string_view text, std::uint64_t max) {
  return mq::detail::parse_decimal(text, 0, max);
}

// The whole body must be one valid JSON document: validated once here, so that the values taken out
// of it afterwards need no second validation.
mq::Status check_json(std::string_view body) {
  if (body.empty()) return bad_request("the request body is empty; expected a JSON object");
  // libmq's one rule for valid JSON, the one recovery applies to stored records; deep enough for a
  // batch body around payloads of the deepest nesting a payload may have.
  thread_local mq::detail::JsonValidator validator(mq::detail::kMaxPayloadDepth + 3);
  return validator.check(body, "the request body");
}

// Reads one {"payload": ..., "key": ...} object of a produce body.
mq::Result<mq::Message> read_message(simdjson::ondemand::object object, std::string_view where) {
  std::optional<mq::Payload> payload;
  std::optional<std::string> key;
  for (auto field : object) {
    std::string_view name;
    if (field.unescaped_key().get(name)) return bad_request("malformed field name in " + std::string(where));
    simdjson::ondemand::value value;
    if (field.value().get(value)) return bad_request("malformed value in " + std::string(where));
    if (name == field::kPayload) {
      std::string_view raw;
      if (simdjson::to_json_string(value).get(raw))
        return bad_request("malformed payload in " + std::string(where));
      auto parsed = mq::Payload::parse(raw);
      if (!parsed.ok()) return parsed.status();
      payload = std::move(parsed.value());
    } else if (name == field::kKey) {
      bool is_null = false;
      if (!value.is_null().get(is_null) && is_null) continue;  // "key": null is no key
      std::string_view text;
      if (value.get_string().get(text))
        return bad_request("\"key\" must be a string in " + std::string(where));
      key = std::string(text);
    }
  }
  if (!payload) return bad_request("\"payload\" is required in " + std::string(where));
  return mq::Message{std::move(*payload), std::move(key)};
}

// The "id" field of a small body, which must be a non-empty string.
mq::Result<std::string> id_field(simdjson::dom::object object) {
  simdjson::dom::element element;
  if (object[field::kId].get(element)) return bad_request("\"id\" is required");
  std::string_view id;
  if (element.get_string().get(id)) return bad_request("\"id\" must be a string");
  return std::string(id);
}

mq::Result<simdjson::dom::object> small_object(simdjson::dom::parser& parser, std::string_view body) {
  if (auto s = check_json(body); !s.ok()) return s;
  simdjson::dom::element root;
  simdjson::dom::object object;
  if (parser.parse(body.data(), body.size()).get(root) || root.get_object().get(object)) {
    return bad_request("the request body must be a JSON object");
  }
  return object;
}

}  // namespace

mq::Result<std::string> required_name(std::string_view what, const Param& value) {
  if (!value || value->empty()) return bad_request("query parameter '" + std::string(what) + "' is required");
  if (!mq::is_valid_name(*value)) {
    return mq::detail::invalid_name(what, *value);
  }
  return *value;
}

mq::Result<std::optional<std::uint32_t>> optional_partition(const Param& value) {
  if (!value) return std::optional<std::uint32_t>{};
  auto number = whole_number(*value, UINT32_MAX);
  if (!number) {
    // A well-formed number too large for any topic names a partition that does not exist (404),
    // like any other partition beyond the topic's count; only what is not a number is a 400.
    const bool digits = !value->empty() && value->size() <= 4096 &&
                        value->find_first_not_of("0123456789") == std::string::npos;
    if (digits) return mq::Status::not_found("there is no partition " + *value);
    return bad_request("partition must be a non-negative whole number, not '" + *value + "'");
  }
  return std::optional<std::uint32_t>(static_cast<std::uint32_t>(*number));
}

mq::Result<std::uint32_t> required_partition(const Param& value) {
  if (!value) return bad_request("query parameter 'partition' is required");
  auto partition = optional_partition(value);
  if (!partition.ok()) return partition.status();
  return **partition;
}

mq::Result<mq::SubscribeOptions> subscribe_options(const Param& visibility_timeout_ms,
                                                   const Param& max_inflight, const Param& from) {
  mq::SubscribeOptions options;
  if (visibility_timeout_ms) {
    auto ms = whole_number(*visibility_timeout_ms, 7ull * 24 * 3600 * 1000);
    if (!ms || *ms == 0) {
      return bad_request("visibility_timeout_ms must be a whole number of milliseconds from 1, not '" +
                         *visibility_timeout_ms + "'");
    }
    options.visibility_timeout = std::chrono::milliseconds(*ms);
  }
  if (max_inflight) {
    auto n = whole_number(*max_inflight, 1'000'000);
    if (!n || *n == 0)
      return bad_request("max_inflight must be a whole number from 1, not '" + *max_inflight + "'");
    options.max_inflight = static_cast<std::size_t>(*n);
  }
  if (from) {
    if (*from == mq::http::param::kFromEarliest) {
      options.from = mq::StartPosition::kEarliest;
    } else if (*from == mq::http::param::kFromLatest) {
      options.from = mq::StartPosition::kLatest;
    } else {
      return bad_request("from must be earliest or latest, not '" + *from + "'");
    }
  }
  return options;
}

mq::Result<ProduceBody> parse_produce_body(std::string_view body) {
  if (auto s = check_json(body); !s.ok()) return s;
  simdjson::ondemand::parser parser;
  simdjson::padded_string padded(body);
  simdjson::ondemand::document document;
  simdjson::ondemand::object object;
  if (parser.iterate(padded).get(document) || document.get_object().get(object)) {
    return bad_request("the request body must be a JSON object");
  }
  ProduceBody result;
  for (auto field : object) {
    std::string_view name;
    if (field.unescaped_key().get(name)) return bad_request("malformed field name");
    if (name != field::kMessages) continue;
    simdjson::ondemand::array messages;
    if (field.value().get_array().get(messages)) return bad_request("\"messages\" must be an array");
    std::size_t index = 0;
    for (auto element : messages) {
      // Each parsed message costs memory beyond its bytes: a bound keeps a 16 MiB body of tiny
      // messages from costing hundreds of megabytes.
      if (index == kMaxBatchMessages) {
        return mq::Status::payload_too_large("a batch may hold at most " + std::to_string(kMaxBatchMessages) +
                                             " messages");
      }
      simdjson::ondemand::object message;
      const std::string where = "messages[" + std::to_string(index++) + "]";
      if (element.get_object().get(message)) return bad_request(where + " must be an object");
      auto read = read_message(message, where);
      if (!read.ok()) return read.status();
      result.messages.push_back(std::move(read.value()));
    }
    if (result.messages.empty()) return bad_request("\"messages\" must not be empty");
    result.batch = true;
  }
  if (!result.batch) {
    // The single form: the same object holds payload and key.
    if (object.reset().error()) return bad_request("the request body must be a JSON object");
    auto read = read_message(object, "the request body");
    if (!read.ok()) return read.status();
    result.messages.push_back(std::move(read.value()));
  }
  return result;
}

mq::Result<std::vector<std::string>> parse_ack_body(std::string_view body) {
  simdjson::dom::parser parser;
  auto object = small_object(parser, body);
  if (!object.ok()) return object.status();
  std::vector<std::string> ids;
  simdjson::dom::element element;
  simdjson::dom::element single;
  if (!(*object)[field::kIds].get(element) && !(*object)[field::kId].get(single)) {
    return bad_request("give \"id\" or \"ids\", not both");
  }
  if (!(*object)[field::kIds].get(element)) {
    simdjson::dom::array array;
    if (element.get_array().get(array)) return bad_request("\"ids\" must be an array of strings");
    if (array.size() > kMaxBatchMessages) {
      return mq::Status::payload_too_large("at most " + std::to_string(kMaxBatchMessages) + " ids per request");
    }
    for (auto item : array) {
      std::string_view id;
      if (item.get_string().get(id)) return bad_request("\"ids\" must be an array of strings");
      ids.emplace_back(id);
    }
    if (ids.empty()) return bad_request("\"ids\" must not be empty");
    return ids;
  }
  auto id = id_field(*object);
  if (!id.ok()) return bad_request("\"id\" (a string) or \"ids\" (an array of strings) is required");
  ids.push_back(std::move(id.value()));
  return ids;
}

mq::Result<NackBody> parse_nack_body(std::string_view body) {
  simdjson::dom::parser parser;
  auto object = small_object(parser, body);
  if (!object.ok()) return object.status();
  auto id = id_field(*object);
  if (!id.ok()) return id.status();
  NackBody nack{std::move(id.value()), {}};
  simdjson::dom::element element;
  if (!(*object)[field::kDelayMs].get(element) && !element.is_null()) {
    std::uint64_t delay = 0;
    if (element.get_uint64().get(delay) || delay > 7ull * 24 * 3600 * 1000) {
      return bad_request("\"delay_ms\" must be a non-negative whole number of milliseconds");
    }
    nack.delay = std::chrono::milliseconds(delay);
  }
  return nack;
}

mq::Result<std::string> parse_touch_body(std::string_view body) {
  simdjson::dom::parser parser;
  auto object = small_object(parser, body);
  if (!object.ok()) return object.status();
  return id_field(*object);
}

}  // namespace mqd

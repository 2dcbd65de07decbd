#include "client/delivery_json.h"

#include <simdjson.h>

#include <cstring>

#include "protocol/http_protocol.h"

namespace mq::detail {

namespace field = http::field;

struct DeliveryParser::Impl {
  simdjson::ondemand::parser parser;
  simdjson::padded_string buffer;
};

DeliveryParser::DeliveryParser() : impl_(std::make_unique<Impl>()) {}
DeliveryParser::~DeliveryParser() = default;

Status DeliveryParser::parse(std::string_view json, ReceivedMessage& out) {
  // ondemand needs padding behind the text; reuse one buffer rather than allocating per message.
  if (impl_->buffer.size() < json.size()) impl_->buffer = simdjson::padded_string(json.size() * 2);
  std::memcpy(impl_->buffer.data(), json.data(), json.size());
  // padded_string(n) holds n bytes plus SIMDJSON_PADDING.
  auto document = impl_->parser.iterate(impl_->buffer.data(), json.size(),
                                        impl_->buffer.size() + simdjson::SIMDJSON_PADDING);
  simdjson::ondemand::object object;
  auto fail = [&](std::string_view why) {
    return Status::invalid_argument("a delivered message is not valid: " + std::string(why));
  };
  if (auto error = document.get_object().get(object)) return fail(simdjson::error_message(error));
  bool has_payload = false;
  for (auto field : object) {
    std::string_view name;
    if (field.unescaped_key().get(name) != simdjson::SUCCESS) return fail("bad field name");
    auto value = field.value();
    simdjson::error_code error = simdjson::SUCCESS;
    if (name == field::kPayload) {
      std::string_view text;
      error = simdjson::to_json_string(value).get(text);
      if (!error) out.payload.assign(text);
      has_payload = !error;
    } else if (name == field::kId) {
      std::string_view text;
      error = value.get_string().get(text);
      if (!error) out.id.assign(text);
    } else if (name == field::kTopic) {
      std::string_view text;
      error = value.get_string().get(text);
      if (!error) out.topic.assign(text);
    } else if (name == field::kKey) {
      std::string_view text;
      error = value.get_string().get(text);
      if (!error) out.key.emplace(text);
    } else if (name == field::kHeaders) {
      simdjson::ondemand::object headers;
      error = value.get_object().get(headers);
      out.headers.clear();
      for (auto header : headers) {
        if (error) break;
        std::string_view header_name;
        std::string_view header_value;
        error = header.unescaped_key().get(header_name);
        if (!error) error = header.value().get_string().get(header_value);
        if (!error) out.headers.emplace_back(header_name, header_value);
      }
    } else if (name == field::kDeliverAt) {
      std::int64_t due = 0;
      error = value.get_int64().get(due);
      if (!error) out.deliver_at_ms = due;
    } else if (name == field::kPartition || name == field::kDelivery) {
      std::uint64_t number = 0;
      error = value.get_uint64().get(number);
      if (!error && number > UINT32_MAX) error = simdjson::NUMBER_OUT_OF_RANGE;
      if (!error)
        (name == field::kPartition ? out.partition : out.delivery) = static_cast<std::uint32_t>(number);
    } else if (name == field::kOffset) {
      error = value.get_uint64().get(out.offset);
    } else if (name == field::kTimestamp) {
      error = value.get_int64().get(out.timestamp_ms);
    }
    if (error) return fail("field \"" + std::string(name) + "\": " + simdjson::error_message(error));
  }
  if (!has_payload) return fail("no payload");
  return {};
}

}  // namespace mq::detail

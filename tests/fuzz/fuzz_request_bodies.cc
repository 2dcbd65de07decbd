// mqd's JSON request bodies: the input is one body, handed to every parser (produce, ack, nack, touch).
// Besides crashes and sanitizer reports, it checks what an accepted body promises the routes.
#include <chrono>

#include "common/json_validation.h"
#include "fuzz_support.h"
#include "request_parsing.h"
#include "storage/record_format.h"

namespace {

void check_produce(std::string_view body) {
  auto produce = mqd::parse_produce_body(body);
  if (!produce.ok()) {
    FUZZ_CHECK(produce.status().code() == mq::ErrorCode::kInvalidArgument, "a refused body is a 400");
    return;
  }
  FUZZ_CHECK(!produce->messages.empty(), "an accepted produce body holds a message");
  // The produce body is read in one on-demand pass, which validates what it reads: it must never
  // accept a body that libmq's JSON rule refuses.
  static mq::detail::JsonValidator rule(mq::detail::kMaxPayloadDepth + 3);
  FUZZ_CHECK(rule.check(body, "body").ok(), "an accepted produce body is valid JSON");
  FUZZ_CHECK(produce->batch || produce->messages.size() == 1, "the single form holds one message");
  for (const auto& message : produce->messages) {
    const std::string& json = message.payload.json();
    FUZZ_CHECK(!json.empty(), "a payload is one JSON value");
    FUZZ_CHECK(json.find('\n') == std::string::npos && json.find('\r') == std::string::npos,
               "a payload fits on one log line");
    auto again = mq::Payload::parse(json);
    FUZZ_CHECK(again.ok(), "an accepted payload is valid JSON once minified");
    FUZZ_CHECK(again->json() == json, "minifying is idempotent");
    FUZZ_CHECK(!message.source, "a producer never sets a dead letter's source");
    if (message.key) FUZZ_CHECK(mq::detail::is_valid_utf8(*message.key), "a key is valid UTF-8");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view body = mq::fuzzing::as_text(data, size);
  check_produce(body);

  auto ack = mqd::parse_ack_body(body);
  if (ack.ok()) {
    FUZZ_CHECK(!ack->empty(), "an accepted ack body names an id");
  } else {
    FUZZ_CHECK(ack.status().code() == mq::ErrorCode::kInvalidArgument, "a refused body is a 400");
  }

  auto nack = mqd::parse_nack_body(body);
  if (nack.ok()) {
    FUZZ_CHECK(nack->delay.count() >= 0 && nack->delay <= std::chrono::hours(24 * 7),
               "delay_ms is within [0, 7 days]");
  } else {
    FUZZ_CHECK(nack.status().code() == mq::ErrorCode::kInvalidArgument, "a refused body is a 400");
  }

  auto seek = mqd::parse_seek_body(body);
  if (seek.ok()) {
    const int given =
        int(seek->offset.has_value()) + int(seek->timestamp_ms.has_value()) + int(seek->position.has_value());
    FUZZ_CHECK(given == 1, "an accepted seek body names exactly one target");
    FUZZ_CHECK(!seek->timestamp_ms || *seek->timestamp_ms >= 0, "a seek timestamp is not negative");
  } else {
    FUZZ_CHECK(seek.status().code() == mq::ErrorCode::kInvalidArgument, "a refused body is a 400");
  }

  auto touch = mqd::parse_touch_body(body);
  if (touch.ok()) {
    // /touch and /nack read "id" the same way: a body one takes, the other takes (unless delay_ms is bad).
    FUZZ_CHECK(!nack.ok() || nack->id == *touch, "nack and touch read the same id");
  } else {
    FUZZ_CHECK(touch.status().code() == mq::ErrorCode::kInvalidArgument, "a refused body is a 400");
    FUZZ_CHECK(!nack.ok(), "a body /touch refuses for its id, /nack refuses too");
  }

  auto redrive = mqd::parse_redrive_body(body);
  if (redrive.ok()) {
    FUZZ_CHECK(!*redrive || **redrive >= 1, "an accepted redrive limit is at least 1");
  } else {
    FUZZ_CHECK(redrive.status().code() == mq::ErrorCode::kInvalidArgument, "a refused body is a 400");
  }
  return 0;
}

#include "request_parsing.h"
#include <limits>

#include <simdjson.h>

#include <charconv>
#include <memory>

#include "common/decimal.h"
#include "common/json_validation.h"
#include "common/names.h"
#include "mq/broker.h"
#include "mq/options.h"
#include "protocol/http_protocol.h"

namespace mqd {

namespace field = mq::http::field;

namespace {

mq::Status bad_request(std::string reason) { return mq::Status::invalid_argument(std::move(reason)); }

std::optional<std::uint64_t> whole_number(std::string_view text, std::uint64_t max) {
  return mq::detail::parse_decimal(text, 0, max);
}

// Bodies up to this size keep their thread's parser and buffer for the next request; a larger one
// (rare: a big batch) gets its own, so that no thread keeps a huge allocation after it.
constexpr std::size_t kKeepParserBytes = 1 << 20;

// The rule for JSON values that are not payloads (unknown fields): libmq's one rule for valid JSON,
// deep enough for any value a batch body may hold.
mq::Status check_other_value(std::string_view raw, std::string_view where) {
  thread_local mq::detail::JsonValidator validator(mq::detail::kMaxPayloadDepth + 3);
  return validator.check(raw, where);
}

// simdjson's on-demand parser over a copy of the body with the padding it needs, kept per thread.
class ProduceBodyReader {
 public:
  simdjson::error_code iterate(std::string_view body, simdjson::ondemand::document& document) {
    if (body.size() > kKeepParserBytes) {
      own_buffer_.reset(new std::string());
      own_parser_ = std::make_unique<simdjson::ondemand::parser>();
    }
    std::string& buffer = own_buffer_ ? *own_buffer_ : buffer_;
    simdjson::ondemand::parser& parser = own_parser_ ? *own_parser_ : parser_;
    buffer.reserve(body.size() + simdjson::SIMDJSON_PADDING);
    buffer.assign(body);
    buffer.append(simdjson::SIMDJSON_PADDING, '\0');  // read by simdjson, never part of the body
    return parser.iterate(buffer.data(), body.size(), buffer.size()).get(document);
  }
  // Releases what a large body took (after its messages were copied out).
  void done() {
    own_parser_.reset();
    own_buffer_.reset();
  }

 private:
  simdjson::ondemand::parser parser_;
  std::string buffer_;
  std::unique_ptr<simdjson::ondemand::parser> own_parser_;
  std::unique_ptr<std::string> own_buffer_;
};

// A value's text as written, consumed; the on-demand parser only finds where it ends, so the caller
// validates it.
mq::Result<std::string_view> raw_value(simdjson::ondemand::value value, std::string_view where) {
  const auto malformed = [&] { return bad_request("malformed value in " + std::string(where)); };
  simdjson::ondemand::json_type type;
  std::string_view raw;
  if (value.type().get(type) || simdjson::to_json_string(value).get(raw)) return malformed();
  // to_json_string leaves a string unconsumed, and simdjson 3.0 skips an unconsumed string that a
  // ':' follows as if it were a key, and whatever follows with it, unchecked: {"payload":"a": junk}
  // would pass. Consumed, the ':' stands where the next field or the end must be, and is refused.
  simdjson::ondemand::raw_json_string string;
  if (type == simdjson::ondemand::json_type::string && value.get_raw_json_string().get(string))
    return malformed();
  return raw;
}

// A "key" field: a string, or null for no key.
mq::Result<std::optional<std::string>> read_key(simdjson::ondemand::value value, std::string_view where) {
  bool is_null = false;
  if (!value.is_null().get(is_null) && is_null) return std::optional<std::string>{};
  std::string_view text;
  if (value.get_string().get(text)) return bad_request("\"key\" must be a string in " + std::string(where));
  return std::optional<std::string>(std::string(text));
}

// The fields of one message object; unknown fields are validated and ignored.
struct MessageFields {
  std::optional<mq::Payload> payload;
  std::optional<std::string> key;
  mq::Status key_error;  // a "key" that is not a string, which only the single form refuses
  std::vector<std::pair<std::string, std::string>> headers;
  std::optional<std::int64_t> deliver_at_ms;
  std::optional<std::chrono::milliseconds> delay;
  std::optional<std::string> dedup_id;

  // The message, once every field was read; 400 without a payload.
  mq::Result<mq::Message> take(std::string_view where) {
    if (!key_error.ok()) return key_error;
    if (!payload) return bad_request("\"payload\" is required in " + std::string(where));
    mq::Message m{std::move(*payload), std::move(key)};
    m.headers = std::move(headers);
    m.deliver_at_ms = deliver_at_ms;
    m.delay = delay;
    m.dedup_id = std::move(dedup_id);
    return m;
  }
};

bool is_null(simdjson::ondemand::value& value) {
  bool null = false;
  return !value.is_null().get(null) && null;
}

// "headers": an object of strings (the rules on names and values are the log's, checked at append).
mq::Status read_headers(simdjson::ondemand::value value, std::string_view where, MessageFields& fields) {
  const auto refuse = [&] {
    return bad_request("\"headers\" must be an object of string values in " + std::string(where));
  };
  fields.headers.clear();
  if (is_null(value)) return {};
  simdjson::ondemand::object object;
  if (value.get_object().get(object)) return refuse();
  for (auto header : object) {
    std::string_view name;
    std::string_view text;
    if (header.unescaped_key().get(name) || header.value().get_string().get(text)) return refuse();
    // More than the log keeps is refused there too; stop copying a hostile body's millions here.
    if (fields.headers.size() > 32)
      return bad_request("headers: at most 32 per message in " + std::string(where));
    fields.headers.emplace_back(name, text);
  }
  return {};
}

// "delay_ms" and "deliver_at": whole numbers (the ranges are the log's, checked at append).
mq::Status read_time(std::string_view name, simdjson::ondemand::value value, std::string_view where,
                     MessageFields& fields) {
  const bool delay = name == field::kDelayMs;
  if (is_null(value)) {
    (delay ? fields.delay.reset() : fields.deliver_at_ms.reset());
    return {};
  }
  std::int64_t number = 0;
  if (value.get_int64().get(number) || number < 0) {
    return bad_request("\"" + std::string(name) + "\" must be a whole number of milliseconds" +
                       (delay ? " from 0 to 604800000" : " since the epoch") + " in " + std::string(where));
  }
  if (delay) {
    fields.delay = std::chrono::milliseconds(number);
  } else {
    fields.deliver_at_ms = number;
  }
  return {};
}

// One field of a message object (or of the single form's body): "payload" is validated once, by
// Payload::parse (libmq's JSON rule, with the payload depth limit), and minified.
mq::Status read_message_field(std::string_view name, simdjson::ondemand::value value, std::string_view where,
                              MessageFields& fields) {
  if (name == field::kPayload) {
    auto raw = raw_value(value, where);
    if (!raw.ok()) return raw.status();
    auto parsed = mq::Payload::parse(*raw);
    if (!parsed.ok()) return parsed.status();
    fields.payload = std::move(parsed.value());
    return {};
  }
  if (name == field::kHeaders) return read_headers(value, where, fields);
  if (name == field::kDelayMs || name == field::kDeliverAt) return read_time(name, value, where, fields);
  if (name == field::kDedupId) {
    std::string_view id;
    if (is_null(value)) {
      fields.dedup_id.reset();
      return {};
    }
    if (value.get_string().get(id))
      return bad_request("\"dedup_id\" must be a string of valid UTF-8 in " + std::string(where));
    // Reserved: a planted id would make a redrive take its letter for one already sent back.
    if (id.starts_with(mq::kRedriveDedupIdPrefix)) {
      return bad_request("\"dedup_id\" may not start with \"" + std::string(mq::kRedriveDedupIdPrefix) +
                         "\" (reserved for redriven messages) in " + std::string(where));
    }
    fields.dedup_id = std::string(id);
    return {};
  }
  if (name == field::kKey) {
    auto key = read_key(value, where);
    if (key.ok()) {
      fields.key = std::move(key.value());
      fields.key_error = {};
      return {};
    }
    fields.key_error = key.status();
  }
  auto raw = raw_value(value, where);
  if (!raw.ok()) return raw.status();
  return check_other_value(*raw, "a value in " + std::string(where));
}

mq::Result<mq::Message> read_message(simdjson::ondemand::object object, std::string_view where) {
  MessageFields fields;
  for (auto field : object) {
    std::string_view name;
    if (field.unescaped_key().get(name)) return bad_request("malformed field name in " + std::string(where));
    simdjson::ondemand::value value;
    if (field.value().get(value)) return bad_request("malformed value in " + std::string(where));
    if (auto s = read_message_field(name, value, where, fields); !s.ok()) return s;
  }
  return fields.take(where);
}

// The "id" field of a small body, which must be a non-empty string.
mq::Result<std::string> id_field(simdjson::dom::object object) {
  simdjson::dom::element element;
  if (object[field::kId].get(element)) return bad_request("\"id\" is required");
  std::string_view id;
  if (element.get_string().get(id)) return bad_request("\"id\" must be a string");
  return std::string(id);
}

// A small body (ack, nack, touch) parsed once, by the thread's parser (valid until the thread's next
// call) or, for a large body, by one of its own.
struct SmallBody {
  std::unique_ptr<simdjson::dom::parser> own;
  simdjson::dom::object object;
};

// Only a body simdjson refuses is looked at again, by libmq's JSON rule, to say why (or, for numbers
// beyond 64 bits, which the rule accepts, that it is not what the route takes).
mq::Result<SmallBody> small_object(std::string_view body) {
  if (body.empty()) return bad_request("the request body is empty; expected a JSON object");
  thread_local simdjson::dom::parser kept;
  thread_local const bool allocated = !kept.allocate(4096, mq::detail::kMaxPayloadDepth + 3);
  SmallBody result;
  if (!allocated || body.size() > kKeepParserBytes) {
    result.own = std::make_unique<simdjson::dom::parser>();
    if (result.own->allocate(body.size(), mq::detail::kMaxPayloadDepth + 3))
      return mq::Status::unavailable("out of memory for the request body");
  }
  simdjson::dom::parser& parser = result.own ? *result.own : kept;
  simdjson::dom::element root;
  if (parser.parse(body.data(), body.size()).get(root)) {
    if (auto s = check_other_value(body, "the request body"); !s.ok()) return s;
    return bad_request(
        "the request body holds a number beyond 64 bits or beyond a double, which mqd reads only in "
        "payloads");
  }
  if (root.get_object().get(result.object)) return bad_request("the request body must be a JSON object");
  return result;
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

mq::Result<std::uint64_t> parse_unsigned(std::string_view name, std::string_view value) {
  auto number = whole_number(value, std::numeric_limits<std::int64_t>::max());
  if (!number)
    return bad_request(std::string(name) + " must be a whole number, not '" + std::string(value) + "'");
  return *number;
}

mq::Result<std::uint32_t> required_partition(const Param& value) {
  if (!value) return bad_request("query parameter 'partition' is required");
  auto partition = optional_partition(value);
  if (!partition.ok()) return partition.status();
  return **partition;
}

mq::Result<mq::SubscribeOptions> subscribe_options(const Param& visibility_timeout_ms,
                                                   const Param& max_inflight, const Param& from,
                                                   const Param& ordering) {
  if (ordering && *ordering != "none" && *ordering != "key")
    return bad_request("ordering must be none or key, not '" + *ordering + "'");
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
  if (ordering) options.ordering = *ordering == "key" ? mq::Ordering::kKey : mq::Ordering::kNone;
  return options;
}

mq::Result<mq::ReadFrom> read_from(const Param& offset, const Param& timestamp) {
  if (offset && timestamp) return bad_request("give offset or timestamp, not both");
  mq::ReadFrom from;
  if (offset) {
    auto n = whole_number(*offset, UINT64_MAX);
    if (!n) return bad_request("offset must be a non-negative whole number, not '" + *offset + "'");
    from.offset = *n;
  }
  if (timestamp) {
    auto n = whole_number(*timestamp, static_cast<std::uint64_t>(INT64_MAX));
    if (!n) {
      return bad_request(
          "timestamp must be a non-negative whole number of milliseconds since the epoch, not '" +
          *timestamp + "'");
    }
    from.timestamp_ms = static_cast<std::int64_t>(*n);
  }
  return from;
}

mq::Result<std::size_t> read_limit(const Param& limit) {
  if (!limit) return std::size_t{100};
  auto n = whole_number(*limit, mq::kMaxReadLimit);
  if (!n || *n == 0) {
    return bad_request("limit must be a whole number from 1 to " + std::to_string(mq::kMaxReadLimit) +
                       ", not '" + *limit + "'");
  }
  return static_cast<std::size_t>(*n);
}

mq::Result<ProduceBody> parse_produce_body(std::string_view body) {
  if (body.empty()) return bad_request("the request body is empty; expected a JSON object");
  // One pass over the body: the on-demand parser walks it once and every value is validated as it
  // is read (each payload once, by Payload::parse); nothing is parsed a second time.
  thread_local ProduceBodyReader reader;
  struct Done {
    ProduceBodyReader& reader;
    ~Done() { reader.done(); }
  } done{reader};
  simdjson::ondemand::document document;
  simdjson::ondemand::object object;
  if (reader.iterate(body, document) || document.get_object().get(object)) {
    if (auto s = check_other_value(body, "the request body"); !s.ok()) return s;
    return bad_request("the request body must be a JSON object");
  }
  ProduceBody result;
  MessageFields single;  // the single form: payload and key in the body itself
  for (auto field : object) {
    std::string_view name;
    if (field.unescaped_key().get(name)) return bad_request("malformed field name");
    simdjson::ondemand::value value;
    if (field.value().get(value)) return bad_request("malformed value in the request body");
    if (name != field::kMessages) {
      if (auto s = read_message_field(name, value, "the request body", single); !s.ok()) return s;
      continue;
    }
    if (result.batch) return bad_request("\"messages\" is given twice");
    simdjson::ondemand::array messages;
    if (value.get_array().get(messages)) return bad_request("\"messages\" must be an array");
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
  // Nothing may follow the object (the on-demand parser stops reading at its end): simdjson 3.0's
  // document says so by having no location left.
  const char* after = nullptr;
  if (document.current_location().get(after) != simdjson::OUT_OF_BOUNDS)
    return bad_request("the request body is not valid JSON: text after the object");
  if (!result.batch) {
    auto message = single.take("the request body");
    if (!message.ok()) return message.status();
    result.messages.push_back(std::move(message.value()));
  }
  return result;
}

mq::Result<std::vector<std::string>> parse_ack_body(std::string_view body) {
  auto parsed = small_object(body);
  if (!parsed.ok()) return parsed.status();
  simdjson::dom::object* object = &parsed->object;
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
      return mq::Status::payload_too_large("at most " + std::to_string(kMaxBatchMessages) +
                                           " ids per request");
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
  auto parsed = small_object(body);
  if (!parsed.ok()) return parsed.status();
  simdjson::dom::object* object = &parsed->object;
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
  auto parsed = small_object(body);
  if (!parsed.ok()) return parsed.status();
  simdjson::dom::object* object = &parsed->object;
  return id_field(*object);
}

mq::Result<mq::SeekTarget> parse_seek_body(std::string_view body) {
  auto parsed = small_object(body);
  if (!parsed.ok()) return parsed.status();
  const simdjson::dom::object& object = parsed->object;
  mq::SeekTarget target;
  int given = 0;
  simdjson::dom::element element;
  if (!object[field::kOffset].get(element)) {
    ++given;
    std::uint64_t offset = 0;
    if (element.get_uint64().get(offset))
      return bad_request("\"offset\" must be a non-negative whole number");
    target.offset = offset;
  }
  if (!object[field::kTimestamp].get(element)) {
    ++given;
    std::int64_t timestamp = 0;
    if (element.get_int64().get(timestamp) || timestamp < 0)
      return bad_request("\"timestamp\" must be a non-negative whole number of milliseconds since the epoch");
    target.timestamp_ms = timestamp;
  }
  if (!object[field::kPosition].get(element)) {
    ++given;
    std::string_view position;
    if (element.get_string().get(position) ||
        (position != mq::http::param::kFromEarliest && position != mq::http::param::kFromLatest)) {
      return bad_request("\"position\" must be \"earliest\" or \"latest\"");
    }
    target.position = position == mq::http::param::kFromEarliest ? mq::SeekTarget::Position::kEarliest
                                                                 : mq::SeekTarget::Position::kLatest;
  }
  if (given != 1) return bad_request("give exactly one of \"offset\", \"timestamp\" and \"position\"");
  return target;
}

mq::Result<std::optional<std::uint64_t>> parse_redrive_body(std::string_view body) {
  if (body.empty()) return std::optional<std::uint64_t>();  // `curl -X POST` sends none
  auto parsed = small_object(body);
  if (!parsed.ok()) return parsed.status();
  simdjson::dom::element element;
  if (parsed->object[field::kLimit].get(element)) return std::optional<std::uint64_t>();
  std::uint64_t limit = 0;
  if (element.get_uint64().get(limit) || limit == 0)
    return bad_request("\"limit\" must be a whole number from 1 up");
  return std::optional<std::uint64_t>(limit);
}

}  // namespace mqd

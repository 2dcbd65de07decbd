#include "replication/etcd_client.h"

#include <httplib.h>

#include <algorithm>
#include <array>
#include <cassert>
#include <charconv>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <utility>

namespace mq::replication {
namespace {

using json = nlohmann::json;

// What a field of an answer was not: thrown by the readers below and caught where an answer is parsed,
// so that no exception leaves this file.
class Malformed : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] void malformed(const std::string& what) { throw Malformed(what); }

constexpr std::string_view kBase64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::uint32_t byte_at(std::string_view s, std::size_t i) { return static_cast<unsigned char>(s[i]); }

std::string base64_encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const std::uint32_t n = byte_at(in, i) << 16 | byte_at(in, i + 1) << 8 | byte_at(in, i + 2);
    out += kBase64[n >> 18];
    out += kBase64[(n >> 12) & 63];
    out += kBase64[(n >> 6) & 63];
    out += kBase64[n & 63];
  }
  if (in.size() - i == 1) {
    const std::uint32_t n = byte_at(in, i) << 16;
    out += kBase64[n >> 18];
    out += kBase64[(n >> 12) & 63];
    out += "==";
  } else if (in.size() - i == 2) {
    const std::uint32_t n = byte_at(in, i) << 16 | byte_at(in, i + 1) << 8;
    out += kBase64[n >> 18];
    out += kBase64[(n >> 12) & 63];
    out += kBase64[(n >> 6) & 63];
    out += '=';
  }
  return out;
}

int sextet(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

// Standard base64 with padding, as the gateway (Go's encoding/json) writes bytes; nullopt for anything else.
std::optional<std::string> base64_decode(std::string_view in) {
  if (in.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(in.size() / 4 * 3);
  for (std::size_t i = 0; i < in.size(); i += 4) {
    std::array<std::uint32_t, 4> v{};
    int padding = 0;
    for (std::size_t j = 0; j < 4; ++j) {
      const char c = in[i + j];
      if (c == '=') {
        if (i + 4 != in.size() || j < 2) return std::nullopt;  // padding only at the very end
        ++padding;
        continue;
      }
      const int value = sextet(c);
      if (value < 0 || padding > 0) return std::nullopt;
      v[j] = static_cast<std::uint32_t>(value);
    }
    const std::uint32_t n = v[0] << 18 | v[1] << 12 | v[2] << 6 | v[3];
    out += static_cast<char>(n >> 16);
    if (padding < 2) out += static_cast<char>((n >> 8) & 0xff);
    if (padding < 1) out += static_cast<char>(n & 0xff);
  }
  return out;
}

// etcd's range end for "every key that starts with `prefix`": the prefix with its last byte raised by
// one (trailing 0xff bytes dropped first); "\0" (the end of the key space) when there is none to raise.
std::string prefix_end(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    const auto last = static_cast<unsigned char>(end.back());
    if (last < 0xff) {
      end.back() = static_cast<char>(last + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');
}

// --- Reading answers. An absent field is the default value (the gateway leaves those out). ---

const json* object_field(const json& object, const char* name) {
  const auto it = object.find(name);
  if (it == object.end() || it->is_null()) return nullptr;
  if (!it->is_object()) malformed(std::string("\"") + name + "\" is not an object");
  return &*it;
}

const json& array_field(const json& object, const char* name) {
  static const json kEmpty = json::array();
  const auto it = object.find(name);
  if (it == object.end() || it->is_null()) return kEmpty;
  if (!it->is_array()) malformed(std::string("\"") + name + "\" is not an array");
  return *it;
}

std::int64_t int_field(const json& object, const char* name) {
  const auto it = object.find(name);
  if (it == object.end() || it->is_null()) return 0;
  if (it->is_string()) {
    const auto& text = it->get_ref<const std::string&>();
    std::int64_t n = 0;
    const char* end = text.data() + text.size();
    const auto [stop, error] = std::from_chars(text.data(), end, n);
    if (text.empty() || error != std::errc{} || stop != end)
      malformed(std::string("\"") + name + "\" is not a 64-bit integer");
    return n;
  }
  if (it->is_number_unsigned()) {
    const auto n = it->get<std::uint64_t>();
    if (n > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      malformed(std::string("\"") + name + "\" is out of range");
    return static_cast<std::int64_t>(n);
  }
  if (it->is_number_integer()) return it->get<std::int64_t>();
  malformed(std::string("\"") + name + "\" is not an integer");
}

bool bool_field(const json& object, const char* name) {
  const auto it = object.find(name);
  if (it == object.end() || it->is_null()) return false;
  if (!it->is_boolean()) malformed(std::string("\"") + name + "\" is not a boolean");
  return it->get<bool>();
}

std::string string_field(const json& object, const char* name) {
  const auto it = object.find(name);
  if (it == object.end() || it->is_null()) return {};
  if (!it->is_string()) malformed(std::string("\"") + name + "\" is not a string");
  return it->get<std::string>();
}

std::string bytes_field(const json& object, const char* name) {
  auto decoded = base64_decode(string_field(object, name));
  if (!decoded) malformed(std::string("\"") + name + "\" is not base64");
  return std::move(*decoded);
}

std::int64_t header_revision(const json& answer) {
  const json* header = object_field(answer, "header");
  if (header == nullptr) malformed("it has no \"header\"");
  return int_field(*header, "revision");
}

KeyValue parse_kv(const json& object) {
  if (!object.is_object()) malformed("a key-value is not an object");
  KeyValue kv;
  kv.key = bytes_field(object, "key");
  kv.value = bytes_field(object, "value");
  kv.create_revision = int_field(object, "create_revision");
  kv.mod_revision = int_field(object, "mod_revision");
  kv.version = int_field(object, "version");
  kv.lease = int_field(object, "lease");
  return kv;
}

std::vector<KeyValue> parse_kvs(const json& object) {
  std::vector<KeyValue> kvs;
  for (const json& kv : array_field(object, "kvs")) kvs.push_back(parse_kv(kv));
  return kvs;
}

// The Status for an error etcd answered with gRPC `code` and `message`. The outcome of a timed-out
// proposal ("etcdserver: request timed out", Unavailable) or of an internal error is unknown: kIOError.
Status status_of_grpc(std::int64_t code, const std::string& message, const std::string& endpoint) {
  std::string m = "etcd at " + endpoint + ": " + message;
  switch (code) {
    case 3:  // InvalidArgument
      return Status::invalid_argument(std::move(m));
    case 5:  // NotFound
      return Status::not_found(std::move(m));
    case 6:   // AlreadyExists
    case 9:   // FailedPrecondition
    case 10:  // Aborted
    case 11:  // OutOfRange: a compacted or future revision
      return Status::conflict(std::move(m));
    case 7:   // PermissionDenied
    case 16:  // Unauthenticated
      return Status::unauthenticated(std::move(m));
    case 8:  // ResourceExhausted
      return Status::unavailable(std::move(m));
    case 14:  // Unavailable: no leader, too many requests, or a proposal that timed out
      if (message.find("timed out") != std::string::npos) return Status::io_error(std::move(m));
      return Status::unavailable(std::move(m));
    default:  // Canceled, Unknown, DeadlineExceeded, Internal, ...
      return Status::io_error(std::move(m));
  }
}

// The error of a stream's {"error": {"grpc_code": ..., "message": ...}} line or a unary answer's
// {"error": "...", "code": ..., "message": ...} body.
Status status_of_error(const json& error, const std::string& endpoint) {
  if (error.is_object()) {
    const std::int64_t code =
        error.contains("grpc_code") ? int_field(error, "grpc_code") : int_field(error, "code");
    std::string message = string_field(error, "message");
    if (message.empty()) message = string_field(error, "error");
    return status_of_grpc(code, message, endpoint);
  }
  if (error.is_string()) return status_of_grpc(2, error.get<std::string>(), endpoint);
  malformed("\"error\" is neither an object nor a string");
}

const char* target_name(CompareTarget target) {
  switch (target) {
    case CompareTarget::kCreate:
      return "CREATE";
    case CompareTarget::kMod:
      return "MOD";
    case CompareTarget::kVersion:
      return "VERSION";
    case CompareTarget::kValue:
      return "VALUE";
    case CompareTarget::kLease:
      return "LEASE";
  }
  return "CREATE";
}

const char* result_name(CompareResult result) {
  switch (result) {
    case CompareResult::kEqual:
      return "EQUAL";
    case CompareResult::kNotEqual:
      return "NOT_EQUAL";
    case CompareResult::kGreater:
      return "GREATER";
    case CompareResult::kLess:
      return "LESS";
  }
  return "EQUAL";
}

json compare_json(const Compare& compare) {
  json j = {{"key", base64_encode(compare.key)},
            {"target", target_name(compare.target)},
            {"result", result_name(compare.result)}};
  const std::string number = std::to_string(compare.number);
  switch (compare.target) {
    case CompareTarget::kCreate:
      j["create_revision"] = number;
      break;
    case CompareTarget::kMod:
      j["mod_revision"] = number;
      break;
    case CompareTarget::kVersion:
      j["version"] = number;
      break;
    case CompareTarget::kValue:
      j["value"] = base64_encode(compare.value);
      break;
    case CompareTarget::kLease:
      j["lease"] = number;
      break;
  }
  return j;
}

json op_json(const TxnOp& op) {
  json request = {{"key", base64_encode(op.key)}};
  switch (op.type) {
    case TxnOp::Type::kPut:
      request["value"] = base64_encode(op.value);
      if (op.lease != 0) request["lease"] = std::to_string(op.lease);
      return {{"request_put", std::move(request)}};
    case TxnOp::Type::kDelete:
      if (!op.range_end.empty()) request["range_end"] = base64_encode(op.range_end);
      return {{"request_delete_range", std::move(request)}};
    case TxnOp::Type::kRange:
      if (!op.range_end.empty()) request["range_end"] = base64_encode(op.range_end);
      return {{"request_range", std::move(request)}};
  }
  return {};
}

// Whether `endpoint` is an http(s) URL of a host and optional port, with no path.
bool valid_endpoint(const std::string& endpoint) {
  std::string_view rest = endpoint;
  if (rest.starts_with("http://")) {
    rest.remove_prefix(7);
  } else if (rest.starts_with("https://")) {
    rest.remove_prefix(8);
  } else {
    return false;
  }
  if (rest.empty() || rest.find_first_of("/?#@ ") != std::string_view::npos) return false;
  std::string_view host = rest;
  std::string_view port;
  if (rest.front() == '[') {  // [IPv6]:port
    const auto close = rest.find(']');
    if (close == std::string_view::npos || close == 1) return false;
    host = rest.substr(0, close + 1);
    const auto after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return false;
      port = after.substr(1);
      if (port.empty()) return false;
    }
  } else if (const auto colon = rest.rfind(':'); colon != std::string_view::npos) {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
    if (port.empty()) return false;
  }
  if (host.empty()) return false;
  if (!port.empty()) {
    unsigned number = 0;
    const auto [stop, error] = std::from_chars(port.data(), port.data() + port.size(), number);
    if (error != std::errc{} || stop != port.data() + port.size() || number == 0 || number > 65535)
      return false;
  }
  return true;
}

}  // namespace

namespace detail {

// The endpoints, the options and a pool of keep-alive connections per endpoint. Thread-safe.
class EtcdTransport {
 public:
  // A 200 answer's JSON object, and the endpoint (URL) that gave it.
  struct Answer {
    json body;
    std::string endpoint;
  };

  EtcdTransport(std::vector<std::string> endpoints, EtcdOptions options)
      : endpoints_(std::move(endpoints)), options_(options), idle_(endpoints_.size()) {}

  const std::vector<std::string>& endpoints() const { return endpoints_; }
  const EtcdOptions& options() const { return options_; }
  // The endpoint a request starts with: the one that answered last.
  std::size_t preferred() const { return preferred_.load() % endpoints_.size(); }
  void prefer(std::size_t index) { preferred_.store(index % endpoints_.size()); }

  // A new client of endpoint `index` whose reads wait up to `read_timeout`.
  std::unique_ptr<httplib::Client> make_client(std::size_t index,
                                               std::chrono::milliseconds read_timeout) const {
    auto client = std::make_unique<httplib::Client>(endpoints_[index]);
#ifdef CPPHTTPLIB_OPENSSL_SUPPORT
    if (endpoints_[index].starts_with("https://")) client->enable_server_certificate_verification(true);
#endif
    client->set_connection_timeout(options_.connect_timeout);
    client->set_read_timeout(read_timeout);
    client->set_write_timeout(options_.request_timeout);
    client->set_tcp_nodelay(true);  // without it each small request waits for a delayed ACK
    return client;
  }

  // POSTs `body` to `path`, trying the endpoints in turn (see EtcdClient for which failures go on to the
  // next endpoint). Returns the JSON object of a 200 answer, or the Status of the failure.
  Result<Answer> call(const char* path, const json& body, bool idempotent) {
    const std::string text = body.dump();
    const std::size_t count = endpoints_.size();
    const std::size_t first = preferred();
    std::string failures;
    for (std::size_t i = 0; i < count; ++i) {
      const std::size_t index = (first + i) % count;
      Exchange exchange = send(index, path, text);
      if (exchange.outcome == Outcome::kAnswered) {
        if (i > 0) prefer(index);
        return interpret(exchange, index);
      }
      if (!failures.empty()) failures += "; ";
      failures += endpoints_[index] + ": " + exchange.error;
      if (exchange.outcome == Outcome::kLost && !idempotent) {
        prefer(index + 1);  // the next call tries another endpoint first
        return Status::io_error("etcd at " + endpoints_[index] + " gave no valid answer to " + path + " (" +
                                exchange.error + "): it may or may not have been applied");
      }
    }
    prefer(first + 1);
    return Status::unavailable(std::string("no etcd endpoint answered ") + path + " (" + failures + ")");
  }

 private:
  enum class Outcome {
    kAnswered,  // an HTTP answer came whole
    kNotSent,   // the connection could not be made: nothing was sent
    kLost,      // sent, but no valid answer came (timeout, broken connection, oversized answer)
  };
  struct Exchange {
    Outcome outcome = Outcome::kLost;
    int status = 0;
    std::string body;
    std::string error;  // why there is no answer
  };

  Exchange send(std::size_t index, const char* path, const std::string& body) {
    Exchange exchange;
    auto client = acquire(index);
    httplib::Request request;
    request.method = "POST";
    request.path = path;
    request.body = body;
    request.headers.emplace("Content-Type", "application/json");
    bool too_large = false;
    request.response_handler = [&](const httplib::Response& response) {
      exchange.status = response.status;
      return true;
    };
    request.content_receiver = [&](const char* data, std::size_t size, std::uint64_t, std::uint64_t) {
      if (exchange.body.size() + size > options_.max_answer_bytes) {
        too_large = true;
        return false;
      }
      exchange.body.append(data, size);
      return true;
    };
    httplib::Response response;
    httplib::Error error = httplib::Error::Success;
    if (client->send(request, response, error)) {
      exchange.outcome = Outcome::kAnswered;
      release(index, std::move(client));
      return exchange;
    }
    if (too_large) {
      exchange.error = "an answer larger than " + std::to_string(options_.max_answer_bytes) + " bytes";
      return exchange;
    }
    // The gateway ends an error answer with a chunked trailer (Grpc-Trailer-Content-Type) that
    // cpp-httplib 0.11 does not read, so the request fails after the whole body has arrived.
    if (exchange.status != 0 && exchange.status != 200 && json::accept(exchange.body)) {
      exchange.outcome = Outcome::kAnswered;
      return exchange;
    }
    const bool never_sent =
        error == httplib::Error::Connection || error == httplib::Error::ConnectionTimeout ||
        error == httplib::Error::BindIPAddress || error == httplib::Error::SSLConnection ||
        error == httplib::Error::SSLLoadingCerts || error == httplib::Error::SSLServerVerification;
    exchange.outcome = never_sent ? Outcome::kNotSent : Outcome::kLost;
    exchange.error = httplib::to_string(error);
    return exchange;
  }

  Result<Answer> interpret(const Exchange& exchange, std::size_t index) const {
    const std::string& endpoint = endpoints_[index];
    json body = json::parse(exchange.body, nullptr, /*allow_exceptions=*/false);
    if (exchange.status == 200) {
      if (!body.is_object())
        return Status::io_error("etcd at " + endpoint + " answered with something that is not a JSON object");
      return Answer{std::move(body), endpoint};
    }
    if (body.is_object()) {
      try {
        return status_of_error(body, endpoint);
      } catch (const Malformed&) {  // fall through to the HTTP status
      }
    }
    const std::string start = exchange.body.substr(0, 200);
    const std::string m =
        "etcd at " + endpoint + " answered HTTP " + std::to_string(exchange.status) + ": " + start;
    if (exchange.status == 503) return Status::unavailable(m);
    if (exchange.status >= 400 && exchange.status < 500) return Status::invalid_argument(m);
    return Status::io_error(m);
  }

  std::unique_ptr<httplib::Client> acquire(std::size_t index) {
    {
      std::lock_guard lock(mutex_);
      auto& idle = idle_[index];
      if (!idle.empty()) {
        auto client = std::move(idle.back());
        idle.pop_back();
        return client;
      }
    }
    auto client = make_client(index, options_.request_timeout);
    client->set_keep_alive(true);
    return client;
  }

  // A client whose request succeeded goes back to the pool; one that failed is dropped (its connection
  // may be half-read or stuck).
  void release(std::size_t index, std::unique_ptr<httplib::Client> client) {
    std::lock_guard lock(mutex_);
    auto& idle = idle_[index];
    if (idle.size() < kMaxIdlePerEndpoint) idle.push_back(std::move(client));
  }

  static constexpr std::size_t kMaxIdlePerEndpoint = 8;

  const std::vector<std::string> endpoints_;
  const EtcdOptions options_;
  std::atomic<std::size_t> preferred_{0};
  std::mutex mutex_;
  std::vector<std::vector<std::unique_ptr<httplib::Client>>> idle_;  // GUARDED_BY(mutex_): per endpoint
};

}  // namespace detail

namespace {

using detail::EtcdTransport;

// Parses a 200 answer with `parse`, turning a malformed one into kIOError naming `what` was asked.
template <typename T, typename Parse>
Result<T> parse_answer(const EtcdTransport::Answer& answer, const char* what, Parse&& parse) {
  try {
    return parse(answer.body);
  } catch (const Malformed& e) {
    return Status::io_error("etcd at " + answer.endpoint + " answered " + what +
                            " with a malformed answer: " + e.what());
  } catch (const json::exception& e) {
    return Status::io_error("etcd at " + answer.endpoint + " answered " + what +
                            " with a malformed answer: " + e.what());
  }
}

}  // namespace

TxnOp TxnOp::range_prefix(std::string prefix) {
  TxnOp op{Type::kRange, std::move(prefix), {}, 0, {}};
  op.range_end = prefix_end(op.key);
  if (op.key.empty()) op.key = std::string(1, '\0');
  return op;
}

Result<std::unique_ptr<EtcdClient>> EtcdClient::create(std::vector<std::string> endpoints,
                                                       EtcdOptions options) {
  if (endpoints.empty()) return Status::invalid_argument("etcd: no endpoint given");
  for (auto& endpoint : endpoints) {
    while (endpoint.ends_with('/')) endpoint.pop_back();
    if (!valid_endpoint(endpoint)) {
      return Status::invalid_argument("etcd endpoint \"" + endpoint +
                                      "\" is not an http:// or https:// URL of a host and port");
    }
  }
  if (options.max_answer_bytes == 0)
    return Status::invalid_argument("etcd: max_answer_bytes must be above 0");
  auto transport = std::make_shared<EtcdTransport>(std::move(endpoints), options);
  return std::unique_ptr<EtcdClient>(new EtcdClient(std::move(transport)));
}

EtcdClient::EtcdClient(std::shared_ptr<detail::EtcdTransport> transport) : transport_(std::move(transport)) {}
EtcdClient::~EtcdClient() = default;

const std::vector<std::string>& EtcdClient::endpoints() const { return transport_->endpoints(); }

Result<GetResult> EtcdClient::get(std::string_view key) {
  if (key.empty()) return Status::invalid_argument("etcd get: empty key");
  auto answer = transport_->call("/v3/kv/range", {{"key", base64_encode(key)}}, /*idempotent=*/true);
  if (!answer.ok()) return answer.status();
  return parse_answer<GetResult>(*answer, "a range", [](const json& body) {
    GetResult result;
    result.revision = header_revision(body);
    auto kvs = parse_kvs(body);
    if (kvs.size() > 1) malformed("one key read gave several");
    if (!kvs.empty()) result.kv = std::move(kvs.front());
    return result;
  });
}

Result<RangeResult> EtcdClient::get_prefix(std::string_view prefix) {
  const std::string key = prefix.empty() ? std::string(1, '\0') : std::string(prefix);
  auto answer = transport_->call(
      "/v3/kv/range", {{"key", base64_encode(key)}, {"range_end", base64_encode(prefix_end(prefix))}},
      /*idempotent=*/true);
  if (!answer.ok()) return answer.status();
  return parse_answer<RangeResult>(*answer, "a range", [](const json& body) {
    RangeResult result;
    result.revision = header_revision(body);
    result.kvs = parse_kvs(body);
    return result;
  });
}

Result<std::int64_t> EtcdClient::put(std::string_view key, std::string_view value, std::int64_t lease) {
  if (key.empty()) return Status::invalid_argument("etcd put: empty key");
  json body = {{"key", base64_encode(key)}, {"value", base64_encode(value)}};
  if (lease != 0) body["lease"] = std::to_string(lease);
  auto answer = transport_->call("/v3/kv/put", body, /*idempotent=*/false);
  if (!answer.ok()) return answer.status();
  return parse_answer<std::int64_t>(*answer, "a put", [](const json& b) { return header_revision(b); });
}

Result<DeleteResult> EtcdClient::delete_key(std::string_view key) {
  if (key.empty()) return Status::invalid_argument("etcd delete: empty key");
  auto answer = transport_->call("/v3/kv/deleterange", {{"key", base64_encode(key)}}, /*idempotent=*/false);
  if (!answer.ok()) return answer.status();
  return parse_answer<DeleteResult>(*answer, "a delete", [](const json& body) {
    return DeleteResult{int_field(body, "deleted"), header_revision(body)};
  });
}

Result<TxnResult> EtcdClient::txn(const std::vector<Compare>& compares, const std::vector<TxnOp>& success_ops,
                                  const std::vector<TxnOp>& failure_ops) {
  json body = {{"compare", json::array()}, {"success", json::array()}, {"failure", json::array()}};
  for (const auto& compare : compares) {
    if (compare.key.empty()) return Status::invalid_argument("etcd txn: a compare has an empty key");
    body["compare"].push_back(compare_json(compare));
  }
  for (const auto* ops : {&success_ops, &failure_ops}) {
    for (const auto& op : *ops) {
      if (op.key.empty()) return Status::invalid_argument("etcd txn: an operation has an empty key");
      body[ops == &success_ops ? "success" : "failure"].push_back(op_json(op));
    }
  }
  auto answer = transport_->call("/v3/kv/txn", body, /*idempotent=*/false);
  if (!answer.ok()) return answer.status();
  return parse_answer<TxnResult>(*answer, "a txn", [&](const json& b) {
    TxnResult result;
    result.revision = header_revision(b);
    result.succeeded = bool_field(b, "succeeded");
    const auto& ops = result.succeeded ? success_ops : failure_ops;
    const json& responses = array_field(b, "responses");
    if (responses.size() != ops.size())
      malformed(std::to_string(responses.size()) + " responses to " + std::to_string(ops.size()) +
                " operations");
    for (std::size_t i = 0; i < ops.size(); ++i) {
      const json& response = responses[i];
      if (!response.is_object()) malformed("a response is not an object");
      TxnResponse& out = result.responses.emplace_back();
      out.type = ops[i].type;
      switch (ops[i].type) {
        case TxnOp::Type::kPut:
          if (!response.contains("response_put")) malformed("no response_put for a put");
          break;
        case TxnOp::Type::kDelete: {
          const json* del = object_field(response, "response_delete_range");
          if (del == nullptr) malformed("no response_delete_range for a delete");
          out.deleted = int_field(*del, "deleted");
          break;
        }
        case TxnOp::Type::kRange: {
          const json* range = object_field(response, "response_range");
          if (range == nullptr) malformed("no response_range for a range");
          out.kvs = parse_kvs(*range);
          break;
        }
      }
    }
    return result;
  });
}

Status EtcdClient::compact(std::int64_t revision) {
  auto answer =
      transport_->call("/v3/kv/compaction", {{"revision", std::to_string(revision)}}, /*idempotent=*/true);
  return answer.status();
}

Result<Lease> EtcdClient::grant_lease(std::int64_t ttl_seconds) {
  if (ttl_seconds <= 0) return Status::invalid_argument("etcd lease: the TTL must be at least 1 second");
  auto answer =
      transport_->call("/v3/lease/grant", {{"TTL", std::to_string(ttl_seconds)}}, /*idempotent=*/false);
  if (!answer.ok()) return answer.status();
  auto lease = parse_answer<Lease>(*answer, "a lease grant", [](const json& body) {
    if (const std::string error = string_field(body, "error"); !error.empty()) malformed("error: " + error);
    Lease granted{int_field(body, "ID"), int_field(body, "TTL")};
    if (granted.id == 0 || granted.ttl_seconds <= 0) malformed("no lease ID or TTL");
    return granted;
  });
  return lease;
}

Result<std::int64_t> EtcdClient::keep_alive(std::int64_t lease_id) {
  auto answer =
      transport_->call("/v3/lease/keepalive", {{"ID", std::to_string(lease_id)}}, /*idempotent=*/true);
  if (!answer.ok()) return answer.status();
  // A streaming call: {"result": ...} or {"error": ...}.
  std::optional<Status> refused;
  auto ttl = parse_answer<std::int64_t>(*answer, "a keepalive", [&](const json& body) -> std::int64_t {
    if (const auto it = body.find("error"); it != body.end()) {
      refused = status_of_error(*it, answer->endpoint);
      return 0;
    }
    const json* result = object_field(body, "result");
    if (result == nullptr) malformed("it has no \"result\"");
    // A lease that no longer exists is answered without "TTL" (0).
    return std::max<std::int64_t>(int_field(*result, "TTL"), 0);
  });
  if (refused) return *refused;
  return ttl;
}

Status EtcdClient::revoke_lease(std::int64_t lease_id) {
  auto answer =
      transport_->call("/v3/lease/revoke", {{"ID", std::to_string(lease_id)}}, /*idempotent=*/false);
  return answer.status();
}

std::unique_ptr<EtcdWatch> EtcdClient::watch_prefix(
    std::string prefix, std::int64_t start_revision,
    std::function<void(const std::vector<WatchEvent>&)> on_events,
    std::function<void(const WatchError&)> on_error) {
  return std::unique_ptr<EtcdWatch>(new EtcdWatch(transport_, std::move(prefix),
                                                  std::max<std::int64_t>(start_revision, 0),
                                                  std::move(on_events), std::move(on_error)));
}

// --- EtcdWatch ---

EtcdWatch::EtcdWatch(std::shared_ptr<detail::EtcdTransport> transport, std::string prefix,
                     std::int64_t start_revision, EventsCallback on_events, ErrorCallback on_error)
    : transport_(std::move(transport)),
      prefix_(std::move(prefix)),
      on_events_(std::move(on_events)),
      on_error_(std::move(on_error)),
      next_revision_(start_revision) {
  thread_ = std::thread([this] { run(); });
}

EtcdWatch::~EtcdWatch() { stop(); }

void EtcdWatch::stop() {
  {
    std::lock_guard join_lock(join_mutex_);
    assert(std::this_thread::get_id() != thread_.get_id() && "EtcdWatch::stop() from its own callback");
  }
  std::unique_lock lock(mutex_);
  stopping_ = true;
  changed_.notify_all();
  // Client::stop() ends a request in progress; one that has not opened its socket yet would miss it,
  // so repeat until the thread has finished.
  while (!finished_) {
    if (stream_ != nullptr) stream_->stop();
    changed_.wait_for(lock, std::chrono::milliseconds(20), [&] { return finished_; });
  }
  lock.unlock();
  std::lock_guard join_lock(join_mutex_);
  if (thread_.joinable()) thread_.join();
}

bool EtcdWatch::wait(std::chrono::milliseconds delay) {
  std::unique_lock lock(mutex_);
  return !changed_.wait_for(lock, delay, [&] { return stopping_.load(); });
}

void EtcdWatch::run() {
  const auto& options = transport_->options();
  const std::size_t count = transport_->endpoints().size();
  std::size_t endpoint = transport_->preferred();
  auto backoff = options.watch_backoff_min;
  while (!stopping_) {
    bool made_progress = false;
    if (!read_stream(endpoint, made_progress)) break;
    if (made_progress) {
      backoff = options.watch_backoff_min;
    } else {
      endpoint = (endpoint + 1) % count;  // this one did not even open a watch: try the next
    }
    if (!wait(backoff)) break;
    backoff = std::min(backoff * 2, options.watch_backoff_max);
  }
  std::lock_guard lock(mutex_);
  finished_ = true;
  changed_.notify_all();
}

bool EtcdWatch::read_stream(std::size_t endpoint, bool& made_progress) {
  const auto& options = transport_->options();
  const std::string& url = transport_->endpoints()[endpoint];
  auto client = transport_->make_client(endpoint, options.watch_idle_timeout);
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return false;
    stream_ = client.get();
  }
  const std::string key = prefix_.empty() ? std::string(1, '\0') : prefix_;
  // progress_notify: etcd then tells an idle watch now and then how far it has seen, so that a stream
  // opened again does not start from a revision it may have compacted meanwhile.
  json create = {{"key", base64_encode(key)},
                 {"range_end", base64_encode(prefix_end(prefix_))},
                 {"progress_notify", true}};
  if (next_revision_ > 0) create["start_revision"] = std::to_string(next_revision_);

  httplib::Request request;
  request.method = "POST";
  request.path = "/v3/watch";
  request.body = json{{"create_request", std::move(create)}}.dump();
  request.headers.emplace("Content-Type", "application/json");
  int http_status = 0;
  std::string refusal;  // the start of a non-200 answer
  std::string line;     // the line being read
  std::optional<WatchError> ended;

  // One line of the stream; false to end the stream.
  auto handle_line = [&](const std::string& text) -> bool {
    if (text.find_first_not_of(" \t\r") == std::string::npos) return true;
    std::vector<WatchEvent> batch;
    try {
      const json message = json::parse(text, nullptr, /*allow_exceptions=*/false);
      if (!message.is_object()) malformed("a line is not a JSON object");
      if (const auto it = message.find("error"); it != message.end()) {
        const Status error = status_of_error(*it, url);
        if (error.code() == ErrorCode::kInvalidArgument) ended = WatchError{error, 0};
        return false;  // etcd ended the stream: open another
      }
      const json* result = object_field(message, "result");
      if (result == nullptr) malformed("a line has no \"result\"");
      if (bool_field(*result, "canceled")) {
        if (const std::int64_t compacted = int_field(*result, "compact_revision"); compacted > 0) {
          ended = WatchError{
              Status::conflict("etcd at " + url + " has compacted the revisions of \"" + prefix_ +
                               "\" up to " + std::to_string(compacted) + ", so the watch cannot go on from " +
                               std::to_string(next_revision_)),
              compacted};
        }
        return false;  // canceled for another reason: open another
      }
      const std::int64_t revision = header_revision(*result);
      if (bool_field(*result, "created")) {
        made_progress = true;
        if (next_revision_ == 0) next_revision_ = revision + 1;  // "from now": now is known
      }
      const json& events = array_field(*result, "events");
      for (const json& event : events) {
        if (!event.is_object()) malformed("an event is not an object");
        const std::string type = string_field(event, "type");
        if (type != "" && type != "PUT" && type != "DELETE") malformed("an event of type " + type);
        const json* kv = object_field(event, "kv");
        if (kv == nullptr) malformed("an event has no \"kv\"");
        WatchEvent parsed{type == "DELETE" ? WatchEvent::Type::kDelete : WatchEvent::Type::kPut,
                          parse_kv(*kv)};
        // A revision delivered already (never expected: a new stream starts after it) is not repeated.
        if (parsed.kv.mod_revision >= next_revision_) batch.push_back(std::move(parsed));
      }
      if (events.empty() && !bool_field(*result, "created") && revision >= next_revision_) {
        next_revision_ = revision + 1;  // a progress notification: every change up to it was sent
      }
    } catch (const Malformed&) {
      return false;  // a damaged stream: open another
    } catch (const json::exception&) {
      return false;
    }
    if (!batch.empty()) {
      made_progress = true;
      next_revision_ = batch.back().kv.mod_revision + 1;
      if (on_events_) on_events_(batch);
    }
    return !stopping_;
  };

  request.response_handler = [&](const httplib::Response& response) {
    http_status = response.status;
    return !stopping_;
  };
  request.content_receiver = [&](const char* data, std::size_t size, std::uint64_t, std::uint64_t) {
    if (stopping_) return false;
    std::string_view chunk(data, size);
    if (http_status != 200) {
      refusal.append(chunk.substr(
          0, std::min<std::size_t>(chunk.size(), 4096 - std::min<std::size_t>(4096, refusal.size()))));
      return true;
    }
    while (!chunk.empty()) {
      const auto newline = chunk.find('\n');
      const auto piece = chunk.substr(0, newline);
      if (line.size() + piece.size() > options.max_answer_bytes) return false;  // a damaged stream
      line.append(piece);
      if (newline == std::string_view::npos) break;
      chunk.remove_prefix(newline + 1);
      const std::string text = std::move(line);
      line.clear();
      if (!handle_line(text)) return false;
    }
    return !stopping_;
  };
  httplib::Response response;
  httplib::Error error = httplib::Error::Success;
  client->send(request, response, error);
  {
    std::lock_guard lock(mutex_);
    stream_ = nullptr;
  }
  if (stopping_) return false;
  if (!ended && http_status != 0 && http_status != 200) {
    const json body = json::parse(refusal, nullptr, /*allow_exceptions=*/false);
    if (body.is_object()) {
      try {
        const Status status = status_of_error(body, url);
        if (status.code() == ErrorCode::kInvalidArgument) ended = WatchError{status, 0};
      } catch (const Malformed&) {
      }
    }
  }
  if (ended) {
    if (on_error_) on_error_(*ended);
    return false;
  }
  return true;
}

}  // namespace mq::replication

#include "error_responses.h"

#include <nlohmann/json.hpp>

namespace mqd {

int http_status_of(mq::ErrorCode code) {
  switch (code) {
    case mq::ErrorCode::kOk:
      return 200;
    case mq::ErrorCode::kInvalidArgument:
      return 400;
    case mq::ErrorCode::kNotFound:
      return 404;
    case mq::ErrorCode::kConflict:
      return 409;
    case mq::ErrorCode::kPayloadTooLarge:
      return 413;
    case mq::ErrorCode::kNotOwned:
      return 421;
    case mq::ErrorCode::kShuttingDown:
      return 503;
    case mq::ErrorCode::kUnavailable:
      return 503;
    case mq::ErrorCode::kUnauthenticated:
      return 401;
    case mq::ErrorCode::kNoSpace:
      return 507;
    case mq::ErrorCode::kStorageFailed:
      return 503;
    case mq::ErrorCode::kCorruption:
      return 500;
    case mq::ErrorCode::kIOError:
      return 500;
  }
  return 500;
}

namespace {
// Error messages quote what the client sent (a path, a name), which may be any bytes: invalid UTF-8
// becomes U+FFFD instead of an exception, so that an error body is always valid JSON.
std::string dump(const nlohmann::json& body) {
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}
}  // namespace

std::string error_json(const mq::Status& status, const std::vector<std::string>& broker_addrs) {
  nlohmann::json body{{"error", status.message()}};
  // A failed fdatasync: this request may or may not have been stored, unlike every other 503.
  if (status.outcome_unknown()) body["outcome"] = "unknown";
  if (auto owner = status.owner()) {
    body["owner"] = *owner;
    if (*owner < broker_addrs.size()) body["owner_url"] = broker_addrs[*owner];
  }
  return dump(body);
}

std::string error_json(const std::string& reason) { return dump(nlohmann::json{{"error", reason}}); }

}  // namespace mqd

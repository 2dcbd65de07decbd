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
    case mq::ErrorCode::kCorruption:
      return 500;
    case mq::ErrorCode::kIOError:
      return 500;
  }
  return 500;
}

std::string error_json(const mq::Status& status, const std::vector<std::string>& broker_addrs) {
  nlohmann::json body{{"error", status.message()}};
  if (auto owner = status.owner()) {
    body["owner"] = *owner;
    if (*owner < broker_addrs.size()) body["owner_url"] = broker_addrs[*owner];
  }
  return body.dump();
}

std::string error_json(const std::string& reason) { return nlohmann::json{{"error", reason}}.dump(); }

}  // namespace mqd

#include "error_responses.h"

#include <nlohmann/json.hpp>

#include "protocol/http_protocol.h"

namespace mqd {

int http_status_of(mq::ErrorCode code) { return mq::http::status_of(code); }

namespace {
// Error messages quote what the client sent (a path, a name), which may be any bytes: invalid UTF-8
// becomes U+FFFD instead of an exception, so that an error body is always valid JSON.
std::string dump(const nlohmann::json& body) {
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}
}  // namespace

std::string error_json(const mq::Status& status, const std::vector<std::string>& broker_addrs) {
  namespace field = mq::http::field;
  nlohmann::json body{{field::kError, status.message()}};
  // A failed fdatasync: this request may or may not have been stored, unlike every other 503.
  if (status.outcome_unknown()) body[field::kOutcome] = field::kOutcomeUnknown;
  if (auto owner = status.owner()) {
    body[field::kOwner] = *owner;
    if (*owner < broker_addrs.size()) body[field::kOwnerUrl] = broker_addrs[*owner];
  }
  return dump(body);
}

std::string error_json(const std::string& reason) {
  return dump(nlohmann::json{{mq::http::field::kError, reason}});
}

}  // namespace mqd

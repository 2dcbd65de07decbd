// The one table from the library's error codes to HTTP statuses, and the JSON error body.
#pragma once

#include <string>
#include <vector>

#include "mq/status.h"

namespace mqd {

// The HTTP status for `code`, from the protocol's one table (mq::http::status_of).
int http_status_of(mq::ErrorCode code);

// {"error": <message>} plus, for kNotOwned, "owner" and (when `broker_addrs` is known) "owner_url".
std::string error_json(const mq::Status& status, const std::vector<std::string>& broker_addrs);
// {"error": <reason>} for errors of the HTTP layer itself (401, 405, 413 while reading, 503 at the cap).
std::string error_json(const std::string& reason);

}  // namespace mqd

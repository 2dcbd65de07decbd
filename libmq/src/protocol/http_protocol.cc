#include "protocol/http_protocol.h"

namespace mq::http {

std::string_view to_string(Method method) {
  switch (method) {
    case Method::kGet:
      return "GET";
    case Method::kPost:
      return "POST";
    case Method::kDelete:
      return "DELETE";
  }
  return "GET";
}

bool is_public(std::string_view path) {
  return path == path::kHealthz || path == path::kUi || path == path::kUiScript || path == path::kUiStyle ||
         path == path::kOpenApi;
}

std::optional<Method> method_of(std::string_view path) {
  for (const auto& route : kRoutes)
    if (route.path == path) return route.method;
  return std::nullopt;
}

void append_query_param(std::string& target, std::string_view name, std::string_view value) {
  target += target.find('?') == std::string::npos ? '?' : '&';
  target += name;
  target += '=';
  target += value;
}

void append_json_key(std::string& out, std::string_view field_name) {
  out += '"';
  out += field_name;
  out += "\":";
}

namespace {
struct ErrorStatus {
  ErrorCode code;
  int status;
};
// Every ErrorCode once. Where several codes share a status, the first of them is what a client reads
// back: 503 means "unavailable, nothing was done, try again" (a 503 with "outcome":"unknown" is told
// apart by the client from the body), 500 means an I/O error.
constexpr std::array<ErrorStatus, 14> kErrorStatuses{{
    {ErrorCode::kOk, 200},
    {ErrorCode::kInvalidArgument, 400},
    {ErrorCode::kUnauthenticated, 401},
    {ErrorCode::kUnauthenticated, 403},  // read back only: a proxy's refusal
    {ErrorCode::kNotFound, 404},
    {ErrorCode::kConflict, 409},
    {ErrorCode::kPayloadTooLarge, 413},
    {ErrorCode::kNotOwned, 421},
    {ErrorCode::kIOError, 500},
    {ErrorCode::kCorruption, 500},
    {ErrorCode::kUnavailable, 503},
    {ErrorCode::kShuttingDown, 503},
    {ErrorCode::kStorageFailed, 503},
    {ErrorCode::kNoSpace, 507},
}};
}  // namespace

int status_of(ErrorCode code) {
  for (const auto& entry : kErrorStatuses)
    if (entry.code == code) return entry.status;
  return 500;
}

ErrorCode error_code_of(int status) {
  for (const auto& entry : kErrorStatuses)
    if (entry.status == status) return entry.code;
  return ErrorCode::kIOError;
}

}  // namespace mq::http

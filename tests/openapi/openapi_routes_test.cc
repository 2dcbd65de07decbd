// mqd/openapi.json against the code: every route of mq::http::kRoutes is described with its one method,
// every described path is a route, the routes the document marks public are the ones mqd serves without
// the token, and a real mqd serves the document byte for byte at /openapi.json. The document's own
// validity (OpenAPI 3.1) is checked by tests/openapi/run_npm_tool.py; whether real answers match its
// schemas by tests/openapi/conformance.mjs.
#include <doctest/doctest.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "http_helpers.h"
#include "protocol/http_protocol.h"
#include "running_mqd.h"

using namespace mq::testing;
using nlohmann::json;

namespace {

std::string document_text() {
  std::ifstream in(MQ_OPENAPI_DOCUMENT, std::ios::binary);
  REQUIRE_MESSAGE(in, "cannot read " << MQ_OPENAPI_DOCUMENT);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

json document() { return json::parse(document_text()); }

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

// The keys of a Path Item object that are operations (OpenAPI 3.1).
const std::set<std::string> kOperationKeys{"get",     "put",  "post",  "delete",
                                           "options", "head", "patch", "trace"};

std::set<std::string> operations_of(const json& path_item) {
  std::set<std::string> out;
  for (const auto& [key, value] : path_item.items())
    if (kOperationKeys.contains(key)) out.insert(key);
  return out;
}

// The operation that describes `route`; fails the test when there is none.
const json& operation_of(const json& doc, const mq::http::Route& route) {
  const std::string path(route.path);
  const std::string method = lower(mq::http::to_string(route.method));
  REQUIRE_MESSAGE(doc["paths"].contains(path), "openapi.json does not describe the route " << path);
  REQUIRE_MESSAGE(doc["paths"][path].contains(method),
                  "openapi.json describes " << path << " without its method " << method);
  return doc["paths"][path][method];
}

// Whether the document lets `operation` be called without a token: an operation-level `security`
// that is empty, or that allows the empty requirement {}.
bool documented_public(const json& operation) {
  if (!operation.contains("security")) return false;  // the document's global requirement: a token
  const json& security = operation["security"];
  return security.empty() ||
         std::any_of(security.begin(), security.end(), [](const json& r) { return r.empty(); });
}

HttpAnswer call(int port, const mq::http::Route& route, const httplib::Headers& headers = {}) {
  httplib::Client client("127.0.0.1", port);
  const std::string path(route.path);
  auto answer = [](const httplib::Result& result) {
    return result ? HttpAnswer{result->status, result->body, result->headers} : HttpAnswer{};
  };
  switch (route.method) {
    case mq::http::Method::kGet:
      return answer(client.Get(path, headers));
    case mq::http::Method::kPost:
      return answer(client.Post(path, headers, "{}", "application/json"));
    case mq::http::Method::kDelete:
      return answer(client.Delete(path, headers));
  }
  return {};
}

}  // namespace

TEST_CASE("EveryRouteIsDescribedWithItsMethodAndEveryDescribedPathIsARoute") {
  const json doc = document();
  REQUIRE(doc["openapi"].get<std::string>().starts_with("3.1."));
  for (const auto& route : mq::http::kRoutes) {
    CAPTURE(route.path);
    const json& operation = operation_of(doc, route);
    CHECK(operation.contains("operationId"));
    // Every route answers a method it does not take with 405, and so says the document.
    CHECK(operation["responses"].contains("405"));
    CHECK(operation["responses"].contains("200"));
  }
  std::size_t described = 0;
  for (const auto& entry : doc["paths"].items()) {
    const auto& path = entry.key();  // not a structured binding: CAPTURE captures it
    const auto& item = entry.value();
    CAPTURE(path);
    const auto method = mq::http::method_of(path);
    REQUIRE_MESSAGE(method.has_value(), "openapi.json describes " << path << ", which is no route of mqd");
    // One method per route: the document describes exactly that one.
    CHECK(operations_of(item) == std::set<std::string>{lower(mq::http::to_string(*method))});
    ++described;
  }
  CHECK(described == mq::http::kRoutes.size());
}

TEST_CASE("TheDocumentSaysWhichRoutesNeedTheToken") {
  const json doc = document();
  // The global requirement is the bearer token (or access_token in the query).
  REQUIRE(doc.contains("security"));
  std::set<std::string> schemes;
  for (const auto& requirement : doc["security"]) {
    for (const auto& [name, scopes] : requirement.items()) schemes.insert(name);
  }
  CHECK(schemes == std::set<std::string>{"bearerAuth", "accessToken"});
  CHECK(doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer");
  CHECK(doc["components"]["securitySchemes"]["accessToken"]["in"] == "query");
  CHECK(doc["components"]["securitySchemes"]["accessToken"]["name"] == "access_token");
  for (const auto& route : mq::http::kRoutes) {
    CAPTURE(route.path);
    const json& operation = operation_of(doc, route);
    CHECK(documented_public(operation) == mq::http::is_public(route.path));
    // A route that needs the token documents its 401.
    CHECK(operation["responses"].contains("401") == !mq::http::is_public(route.path));
  }
}

TEST_CASE("TheDocumentsVersionIsMqdsVersion") { CHECK(document()["info"]["version"] == MQ_PROJECT_VERSION); }

TEST_CASE("MqdServesTheDocumentByteForByteWithoutTheToken") {
  const std::string expected = document_text();
  for (const bool with_auth : {true, false}) {
    CAPTURE(with_auth);
    RunningMqd::Env env;
    if (with_auth) env["AUTH_TOKEN"] = "s3cret";
    RunningMqd mqd(env);
    auto answer = http_get(mqd.port(), std::string(mq::http::path::kOpenApi));
    REQUIRE(answer.status == 200);
    CHECK(answer.body == expected);
    auto type = answer.headers.find("Content-Type");
    REQUIRE(type != answer.headers.end());
    CHECK(type->second == "application/json");
    CHECK(json::accept(answer.body));
    // With the token too.
    auto with_token = http_get(mqd.port(), "/openapi.json", {{"Authorization", "Bearer s3cret"}});
    CHECK(with_token.status == 200);
    CHECK(with_token.body == expected);
  }
}

TEST_CASE("TheRoutesTheDocumentMarksPublicAreTheOnesMqdServesWithoutTheToken") {
  const json doc = document();
  RunningMqd mqd(RunningMqd::Env{{"AUTH_TOKEN", "s3cret"}});
  for (const auto& route : mq::http::kRoutes) {
    CAPTURE(route.path);
    const auto answer = call(mqd.port(), route);
    REQUIRE(answer.status != 0);
    if (documented_public(operation_of(doc, route))) {
      CHECK(answer.status == 200);
    } else {
      CHECK(answer.status == 401);
      CHECK(json::parse(answer.body).contains("error"));
    }
  }
  // With the token, no route answers 401.
  for (const auto& route : mq::http::kRoutes) {
    CAPTURE(route.path);
    if (route.path == mq::http::path::kConsume) continue;  // a stream: its 200 would not end
    CHECK(call(mqd.port(), route, {{"Authorization", "Bearer s3cret"}}).status != 401);
  }
}

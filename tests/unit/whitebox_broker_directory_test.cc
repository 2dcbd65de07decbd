// The HTTP client's broker directory (an internal part): what an mqd error answer means
// (status_of_reply, owner_url_of), the base URL helpers it relies on, and routing against tiny
// in-process stand-ins for mqd's GET /topics.
#include <doctest/doctest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "client/http/broker_directory.h"
#include "client/queue_backends.h"

using mq::ErrorCode;
using mq::detail::BrokerDirectory;
using mq::detail::HttpReply;
using mq::detail::owner_url_of;
using mq::detail::status_of_reply;
using nlohmann::json;
using std::chrono::milliseconds;

namespace {

constexpr std::string_view kUrl = "http://mqd-0:8080";

bool contains(const std::string& text, std::string_view part) { return text.find(part) != std::string::npos; }

// A port on 127.0.0.1 where nothing listens: connecting is refused at once.
int closed_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  sockaddr* generic = reinterpret_cast<sockaddr*>(&address);
  socklen_t length = sizeof address;
  const bool bound = ::bind(fd, generic, sizeof address) == 0 && ::getsockname(fd, generic, &length) == 0;
  ::close(fd);
  REQUIRE(bound);
  return ntohs(address.sin_port);
}

std::string local_url(int port) { return "http://127.0.0.1:" + std::to_string(port); }

// GET /topics as a broker answers it.
std::string topics_answer(std::uint32_t index, std::uint32_t count, const std::vector<std::string>& brokers,
                          const std::vector<std::pair<std::string, std::uint32_t>>& topics,
                          std::optional<std::uint64_t> visibility_timeout_ms = std::nullopt) {
  json answer = {
      {"broker", {{"index", index}, {"count", count}}}, {"brokers", brokers}, {"topics", json::array()}};
  for (const auto& [name, partitions] : topics)
    answer["topics"].push_back({{"name", name}, {"partitions", partitions}, {"owned", json::array()}});
  if (visibility_timeout_ms) answer["visibility_timeout_ms"] = *visibility_timeout_ms;
  return answer.dump();
}

// A stand-in for one mqd on 127.0.0.1: answers GET /topics and POST /produce with what the test
// sets, and counts the /topics requests.
class FakeBroker {
 public:
  FakeBroker() {
    server_.Get("/topics", [this](const httplib::Request&, httplib::Response& response) {
      std::lock_guard lock(mutex_);
      ++topics_requests_;
      response.status = topics_status_;
      response.set_content(topics_body_, "application/json");
    });
    server_.Post("/produce", [this](const httplib::Request& request, httplib::Response& response) {
      std::lock_guard lock(mutex_);
      last_post_body_ = request.body;
      response.status = post_status_;
      response.set_content(post_body_, "application/json");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    if (port_ <= 0) return;
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    // The socket listens already (bind_to_any_port); stop() is lost on a server that is not running
    // yet, so wait for that before any test can end.
    while (!server_.is_running()) std::this_thread::yield();
  }
  ~FakeBroker() {
    if (thread_.joinable()) {
      server_.stop();
      thread_.join();
    }
  }
  FakeBroker(const FakeBroker&) = delete;
  FakeBroker& operator=(const FakeBroker&) = delete;

  int port() const { return port_; }
  std::string url() const { return local_url(port_); }

  void answer_topics(std::string body, int status = 200) {
    std::lock_guard lock(mutex_);
    topics_body_ = std::move(body);
    topics_status_ = status;
  }
  void answer_posts(std::string body, int status) {
    std::lock_guard lock(mutex_);
    post_body_ = std::move(body);
    post_status_ = status;
  }
  int topics_requests() const {
    std::lock_guard lock(mutex_);
    return topics_requests_;
  }
  std::string last_post_body() const {
    std::lock_guard lock(mutex_);
    return last_post_body_;
  }

 private:
  httplib::Server server_;
  int port_ = -1;
  std::thread thread_;
  mutable std::mutex mutex_;
  std::string topics_body_ = "{}";  // GUARDED_BY(mutex_)
  int topics_status_ = 200;         // GUARDED_BY(mutex_)
  int topics_requests_ = 0;         // GUARDED_BY(mutex_)
  std::string post_body_ = "{}";    // GUARDED_BY(mutex_)
  int post_status_ = 200;           // GUARDED_BY(mutex_)
  std::string last_post_body_;      // GUARDED_BY(mutex_)
};

mq::HttpQueueOptions options_for(std::vector<std::string> addrs) {
  mq::HttpQueueOptions options;
  options.addrs = std::move(addrs);
  options.metadata_max_age = milliseconds(3600 * 1000);  // only what a test does reads the map again
  options.connect_timeout = milliseconds(2000);
  return options;
}

}  // namespace

TEST_CASE("Each status mqd answers stands for its error code") {
  const std::vector<std::pair<int, ErrorCode>> table = {
      {400, ErrorCode::kInvalidArgument},
      {401, ErrorCode::kUnauthenticated},
      {403, ErrorCode::kUnauthenticated},
      {404, ErrorCode::kNotFound},
      {409, ErrorCode::kConflict},
      {413, ErrorCode::kPayloadTooLarge},
      {421, ErrorCode::kNotOwned},
      {500, ErrorCode::kIOError},
      {503, ErrorCode::kUnavailable},
      {507, ErrorCode::kNoSpace},
      // Statuses mqd never answers with (a proxy's): the outcome is unknown.
      {502, ErrorCode::kIOError},
      {504, ErrorCode::kIOError},
      {418, ErrorCode::kIOError},
      {429, ErrorCode::kIOError},
      {301, ErrorCode::kIOError},
  };
  for (const auto& entry : table) {
    const auto& status = entry.first;  // not a structured binding: CAPTURE captures it
    const auto& code = entry.second;
    CAPTURE(status);
    const mq::Status s = status_of_reply({status, R"({"error":"the reason"})"}, kUrl);
    CHECK(s.code() == code);
    CHECK(s.message() == "mqd at http://mqd-0:8080: the reason");
    CHECK_FALSE(s.outcome_unknown());
  }
}

TEST_CASE("A reply without a readable reason is named by its status") {
  for (const std::string body :
       {"", "<html>Bad Gateway</html>", "{", "[\"error\"]", "\"error\"", "{}", R"({"error":5})",
        R"({"error":null})", R"({"error":""})", R"({"Error":"x"})"}) {
    CAPTURE(body);
    const mq::Status s = status_of_reply({502, body}, kUrl);
    CHECK(s.code() == ErrorCode::kIOError);
    CHECK(s.message() == "mqd at http://mqd-0:8080: HTTP 502");
  }
  CHECK(status_of_reply({404, "not json"}, kUrl).code() == ErrorCode::kNotFound);
  CHECK(status_of_reply({404, "not json"}, kUrl).message() == "mqd at http://mqd-0:8080: HTTP 404");
  CHECK(status_of_reply({503, "Service Unavailable"}, kUrl).code() == ErrorCode::kUnavailable);
  CHECK(status_of_reply({507, ""}, kUrl).code() == ErrorCode::kNoSpace);
}

TEST_CASE("A 421 names the owner from its body, or broker 0 when the body does not") {
  mq::Status s = status_of_reply(
      {421, R"({"error":"partition 3 is owned by broker 2","owner":2,"owner_url":"http://mqd-2:8080"})"},
      kUrl);
  CHECK(s.code() == ErrorCode::kNotOwned);
  CHECK(s.owner() == 2u);
  CHECK(s.message() == "mqd at http://mqd-0:8080: partition 3 is owned by broker 2");

  CHECK(status_of_reply({421, R"({"owner":4294967295})"}, kUrl).owner() == 4294967295u);
  for (const std::string body : {"", "not json", "{}", R"({"owner":"2"})", R"({"owner":-1})",
                                 R"({"owner":1.5})", R"({"owner":null})", R"([2])"}) {
    CAPTURE(body);
    s = status_of_reply({421, body}, kUrl);
    CHECK(s.code() == ErrorCode::kNotOwned);
    CHECK(s.owner() == 0u);
  }
  // Only a 421 carries an owner.
  CHECK_FALSE(status_of_reply({404, R"({"error":"x","owner":2})"}, kUrl).owner().has_value());
}

TEST_CASE("A 503 whose outcome is unknown is an I/O error, any other 503 is unavailable") {
  mq::Status s = status_of_reply({503, R"({"error":"fdatasync failed","outcome":"unknown"})"}, kUrl);
  CHECK(s.code() == ErrorCode::kIOError);
  CHECK(contains(s.message(), "mqd at http://mqd-0:8080: fdatasync failed"));
  CHECK(contains(s.message(), "may or may not have been stored"));
  // Without a reason it still says so.
  s = status_of_reply({503, R"({"outcome":"unknown"})"}, kUrl);
  CHECK(s.code() == ErrorCode::kIOError);
  CHECK(contains(s.message(), "HTTP 503"));

  for (const std::string body :
       {R"({"error":"shutting down"})", R"({"error":"busy","outcome":"none"})", R"({"outcome":"Unknown"})",
        R"({"outcome":true})", R"({"outcome":["unknown"]})", "outcome unknown", ""}) {
    CAPTURE(body);
    CHECK(status_of_reply({503, body}, kUrl).code() == ErrorCode::kUnavailable);
  }
  // The outcome field matters on a 503 only: a full disk stored nothing.
  CHECK(status_of_reply({507, R"({"error":"disk full","outcome":"unknown"})"}, kUrl).code() ==
        ErrorCode::kNoSpace);
  CHECK(status_of_reply({507, R"({"error":"disk full"})"}, kUrl).message() ==
        "mqd at http://mqd-0:8080: disk full");
}

TEST_CASE("owner_url_of reads the owner's URL of a 421 when it has one") {
  CHECK(owner_url_of({421, R"({"error":"x","owner":1,"owner_url":"http://mqd-1:8080"})"}) ==
        "http://mqd-1:8080");
  CHECK(owner_url_of({421, R"({"owner_url":""})"}) == "");  // a string, even empty: validated by the caller
  for (const std::string body :
       {"", "not json", "{", "[]", "{}", R"({"owner":1})", R"({"owner_url":null})", R"({"owner_url":8080})",
        R"({"owner_url":["http://mqd-1:8080"]})", R"(["owner_url","http://mqd-1:8080"])"}) {
    CAPTURE(body);
    CHECK_FALSE(owner_url_of({421, body}).has_value());
  }
}

TEST_CASE("Base URLs are http or https with a host and a port, and nothing else") {
  auto url = mq::detail::parse_http_base_url("http://mqd-0:8080");
  REQUIRE(url.ok());
  CHECK(url->host == "mqd-0");
  CHECK(url->port == 8080);
  CHECK_FALSE(url->tls);

  url = mq::detail::parse_http_base_url("https://broker.example.com:443/");
  REQUIRE(url.ok());
  CHECK(url->host == "broker.example.com");
  CHECK(url->port == 443);
  CHECK(url->tls);

  url = mq::detail::parse_http_base_url("127.0.0.1:1");  // no scheme: http
  REQUIRE(url.ok());
  CHECK(url->host == "127.0.0.1");
  CHECK(url->port == 1);
  CHECK_FALSE(url->tls);

  url = mq::detail::parse_http_base_url("http://[::1]:65535");
  REQUIRE(url.ok());
  CHECK(url->host == "::1");
  CHECK(url->port == 65535);

  for (const std::string bad : {"",
                                "http://",
                                "https://",
                                "ftp://mqd:21",
                                "redis://mqd:6379",
                                "HTTP://mqd:80",
                                "http://mqd",
                                "http://mqd:",
                                "http://mqd:0",
                                "http://mqd:65536",
                                "http://mqd:80x",
                                "http://mqd:-80",
                                "http://mqd:+80",
                                "http://mqd: 80",
                                "http://:8080",
                                "http://mqd:8080/path",
                                "http://mqd:8080//",
                                "http://mqd:8080?x=1",
                                "http://user@mqd:8080",
                                "http://mq d:8080",
                                "http://::1:8080",
                                "http://[::1]",
                                "http://[::1:8080",
                                "http://[::1]8080",
                                "http://[]:8080",
                                "mqd"}) {
    CAPTURE(bad);
    const auto parsed = mq::detail::parse_http_base_url(bad);
    REQUIRE_FALSE(parsed.ok());
    CHECK(parsed.status().code() == ErrorCode::kInvalidArgument);
    CHECK(contains(parsed.status().message(), "\"" + bad + "\" is not a base URL"));
  }
}

TEST_CASE("base_url writes a parsed URL back in one canonical form") {
  CHECK(mq::detail::base_url({"mqd-0", 8080, false}) == "http://mqd-0:8080");
  CHECK(mq::detail::base_url({"mqd-0", 8443, true}) == "https://mqd-0:8443");
  CHECK(mq::detail::base_url({"::1", 8080, false}) == "http://[::1]:8080");
  CHECK(mq::detail::base_url({"fe80::1", 1, true}) == "https://[fe80::1]:1");
  for (const std::string url : {"http://mqd-0:8080", "http://mqd-0:8080/", "mqd-0:8080", "https://h:1/",
                                "http://[::1]:80/", "http://10.0.0.1:80"}) {
    CAPTURE(url);
    auto parsed = mq::detail::parse_http_base_url(url);
    REQUIRE(parsed.ok());
    auto again = mq::detail::parse_http_base_url(mq::detail::base_url(*parsed));
    REQUIRE(again.ok());
    CHECK(mq::detail::base_url(*again) == mq::detail::base_url(*parsed));
  }
  CHECK(mq::detail::base_url(*mq::detail::parse_http_base_url("mqd-0:8080/")) == "http://mqd-0:8080");
}

TEST_CASE("Host and port: a bare IPv6 address has no port, a bracketed one may") {
  auto hp = mq::detail::parse_host_port("redis:6380", 6379);
  REQUIRE(hp.ok());
  CHECK(hp->host == "redis");
  CHECK(hp->port == 6380);
  hp = mq::detail::parse_host_port("redis", 6379);
  REQUIRE(hp.ok());
  CHECK(hp->port == 6379);
  hp = mq::detail::parse_host_port("::1", 6379);
  REQUIRE(hp.ok());
  CHECK(hp->host == "::1");
  CHECK(hp->port == 6379);
  hp = mq::detail::parse_host_port("[::1]:7000", 6379);
  REQUIRE(hp.ok());
  CHECK(hp->host == "::1");
  CHECK(hp->port == 7000);
  hp = mq::detail::parse_host_port("[fe80::1]", 6379);
  REQUIRE(hp.ok());
  CHECK(hp->host == "fe80::1");
  CHECK(hp->port == 6379);
  // Without a default, the port is required.
  CHECK_FALSE(mq::detail::parse_host_port("redis", std::nullopt).ok());
  CHECK_FALSE(mq::detail::parse_host_port("::1", std::nullopt).ok());
  for (const std::string bad : {"", ":6379", "[::1", "[::1]x", "[]:1", "redis:0", "redis:70000", "redis:x",
                                "re dis:1", "a/b:1", "a@b:1", "a#b:1", "a?b:1"}) {
    CAPTURE(bad);
    CHECK_FALSE(mq::detail::parse_host_port(bad, 6379).ok());
  }
}

TEST_CASE("route reads the brokers' map once and answers partition counts, owners and their URLs") {
  FakeBroker broker;
  REQUIRE(broker.port() > 0);
  const std::string other = local_url(closed_port());  // broker 1, down
  broker.answer_topics(topics_answer(0, 2, {broker.url(), other}, {{"events", 4}, {"solo", 1}}, 1234));
  BrokerDirectory directory(options_for({broker.url()}));
  CHECK(directory.visibility_timeout() == mq::http::kDefaultVisibilityTimeout);  // nothing read yet
  CHECK(broker.topics_requests() == 0);                                          // creating it asks nobody

  auto route = directory.route("events", std::nullopt);
  REQUIRE(route.ok());
  CHECK(route->partitions == 4);
  CHECK(route->url.empty());
  CHECK(broker.topics_requests() == 1);
  CHECK(directory.visibility_timeout() == milliseconds(1234));

  // Partition p is owned by broker p % count, at the address BROKER_ADDRS gives for it.
  for (std::uint32_t p = 0; p < 4; ++p) {
    CAPTURE(p);
    route = directory.route("events", p);
    REQUIRE(route.ok());
    CHECK(route->owner == p % 2);
    CHECK(route->url == (p % 2 == 0 ? broker.url() : other));
    CHECK(route->partitions == 4);
  }
  route = directory.route("solo", 0);
  REQUIRE(route.ok());
  CHECK(route->owner == 0);
  CHECK(route->partitions == 1);
  CHECK(broker.topics_requests() == 1);  // all from the map read first
}

TEST_CASE("An unknown topic or partition is looked up again before it is not found") {
  FakeBroker broker;
  REQUIRE(broker.port() > 0);
  broker.answer_topics(topics_answer(0, 1, {}, {{"events", 2}}));
  BrokerDirectory directory(options_for({broker.url()}));
  REQUIRE(directory.route("events", 0).ok());
  REQUIRE(broker.topics_requests() == 1);

  auto route = directory.route("missing", std::nullopt);
  REQUIRE_FALSE(route.ok());
  CHECK(route.status().code() == ErrorCode::kNotFound);
  CHECK(contains(route.status().message(), "missing"));
  CHECK(broker.topics_requests() == 2);

  route = directory.route("events", 2);
  REQUIRE_FALSE(route.ok());
  CHECK(route.status().code() == ErrorCode::kNotFound);
  CHECK(contains(route.status().message(), "partition 2"));
  CHECK(broker.topics_requests() == 3);

  // What the brokers have by the time of asking is found: a new topic, more partitions.
  broker.answer_topics(topics_answer(0, 1, {}, {{"events", 3}, {"missing", 1}}));
  route = directory.route("missing", 0);
  REQUIRE(route.ok());
  CHECK(route->url == broker.url());  // where it answered: BROKER_ADDRS is empty
  route = directory.route("events", 2);
  REQUIRE(route.ok());
  CHECK(route->partitions == 3);
  CHECK(broker.topics_requests() == 4);
}

TEST_CASE("Partition counts never shrink, and a topic only one broker has is found on it") {
  FakeBroker first;
  FakeBroker second;
  REQUIRE(first.port() > 0);
  REQUIRE(second.port() > 0);
  // The client knows only the first; its BROKER_ADDRS names the second, which alone has "events-dlq".
  first.answer_topics(topics_answer(0, 2, {first.url(), second.url()}, {{"events", 4}}));
  second.answer_topics(topics_answer(1, 2, {first.url(), second.url()}, {{"events", 6}, {"events-dlq", 1}}));
  BrokerDirectory directory(options_for({first.url()}));
  auto route = directory.route("events-dlq", 0);
  REQUIRE(route.ok());
  CHECK(route->owner == 0);
  CHECK(route->url == first.url());
  route = directory.route("events", 5);  // the larger count wins
  REQUIRE(route.ok());
  CHECK(route->owner == 1);
  CHECK(route->url == second.url());
  CHECK(first.topics_requests() == 1);
  CHECK(second.topics_requests() == 1);

  // A later map with fewer partitions (one broker restarted, the other down) keeps the count.
  second.answer_topics("", 503);
  first.answer_topics(topics_answer(0, 2, {first.url(), second.url()}, {{"events", 2}}));
  directory.learn_owner(1, std::nullopt);  // asks again at the next route
  route = directory.route("events", 5);
  REQUIRE(route.ok());
  CHECK(route->partitions == 6);
  CHECK(route->url == second.url());  // broker 1 keeps the address it had
  CHECK(directory.route("events-dlq", 0).ok());
  CHECK(first.topics_requests() == 2);
}

TEST_CASE("Brokers that disagree on the broker count are not mixed") {
  FakeBroker first;
  FakeBroker second;
  REQUIRE(first.port() > 0);
  REQUIRE(second.port() > 0);
  first.answer_topics(topics_answer(0, 2, {}, {{"events", 2}}));
  second.answer_topics(topics_answer(1, 3, {}, {{"events", 9}, {"other", 1}}));
  BrokerDirectory directory(options_for({first.url(), second.url()}));
  auto route = directory.route("events", 1);
  // The second broker's answer is dropped: broker 1 is then unknown, and so is "other".
  REQUIRE_FALSE(route.ok());
  CHECK(route.status().code() == ErrorCode::kUnavailable);
  CHECK(contains(route.status().message(), "broker 1"));
  route = directory.route("events", std::nullopt);
  REQUIRE(route.ok());
  CHECK(route->partitions == 2);
  CHECK(directory.route("other", std::nullopt).status().code() == ErrorCode::kNotFound);
}

TEST_CASE("When no broker answers, route is unavailable and the next call asks again") {
  const std::string down = local_url(closed_port());
  BrokerDirectory directory(options_for({down}));
  auto route = directory.route("events", 0);
  REQUIRE_FALSE(route.ok());
  CHECK(route.status().code() == ErrorCode::kUnavailable);
  CHECK(contains(route.status().message(), down));
  CHECK(directory.visibility_timeout() == mq::http::kDefaultVisibilityTimeout);

  BrokerDirectory none(options_for({}));
  CHECK(none.route("events", std::nullopt).status().code() == ErrorCode::kUnavailable);
}

TEST_CASE("An address that does not answer is skipped for one that does") {
  FakeBroker broker;
  REQUIRE(broker.port() > 0);
  broker.answer_topics(topics_answer(0, 1, {}, {{"events", 1}}));
  BrokerDirectory directory(options_for({local_url(closed_port()), broker.url()}));
  auto route = directory.route("events", 0);
  REQUIRE(route.ok());
  CHECK(route->url == broker.url());
}

TEST_CASE("Refused credentials end the refresh at once, other refusals and bad answers try the next broker") {
  FakeBroker refusing;
  FakeBroker good;
  REQUIRE(refusing.port() > 0);
  REQUIRE(good.port() > 0);
  refusing.answer_topics(R"({"error":"missing bearer token"})", 401);
  good.answer_topics(topics_answer(0, 1, {}, {{"events", 1}}));
  {
    BrokerDirectory directory(options_for({refusing.url(), good.url()}));
    const auto route = directory.route("events", 0);
    REQUIRE_FALSE(route.ok());
    CHECK(route.status().code() == ErrorCode::kUnauthenticated);
    CHECK(contains(route.status().message(), "missing bearer token"));
    CHECK(good.topics_requests() == 0);
  }
  // /topics answers that are no map: the error names the broker, the next one is asked.
  const std::vector<std::pair<int, std::string>> bad = {
      {500, R"({"error":"internal"})"},
      {200, "not json"},
      {200, "{}"},
      {200, R"({"broker":{"index":0,"count":1},"brokers":[],"topics":"events"})"},
      {200, R"({"broker":{"index":0,"count":1},"brokers":[],"topics":[{"name":"events"}]})"},
      {200, R"({"broker":{"index":0,"count":1},"brokers":[],"topics":[{"name":"events","partitions":"2"}]})"},
      {200, R"({"broker":{"index":"0","count":1},"brokers":[],"topics":[]})"},
      {200, R"({"broker":{"index":0,"count":1},"brokers":[5],"topics":[]})"},
      {200, topics_answer(1, 1, {}, {{"events", 1}})},  // index beyond count
      {200, topics_answer(0, 0, {}, {{"events", 1}})},  // no brokers at all
  };
  for (const auto& entry : bad) {
    const auto& status = entry.first;
    const auto& body = entry.second;
    CAPTURE(body);
    refusing.answer_topics(body, status);
    BrokerDirectory alone(options_for({refusing.url()}));
    const auto route = alone.route("events", std::nullopt);
    REQUIRE_FALSE(route.ok());
    CHECK(route.status().code() == ErrorCode::kIOError);
    CHECK(contains(route.status().message(), refusing.url()));
    BrokerDirectory with_good(options_for({refusing.url(), good.url()}));
    CHECK(with_good.route("events", 0).ok());
  }
}

TEST_CASE("The visibility timeout is mqd's when /topics gives one, else the default") {
  FakeBroker broker;
  REQUIRE(broker.port() > 0);
  const std::vector<std::pair<std::string, milliseconds>> cases = {
      {topics_answer(0, 1, {}, {}, 250), milliseconds(250)},
      {topics_answer(0, 1, {}, {}), mq::http::kDefaultVisibilityTimeout},
      {topics_answer(0, 1, {}, {}, 0), mq::http::kDefaultVisibilityTimeout},
      {R"({"broker":{"index":0,"count":1},"brokers":[],"topics":[],"visibility_timeout_ms":"250"})",
       mq::http::kDefaultVisibilityTimeout},
      {R"({"broker":{"index":0,"count":1},"brokers":[],"topics":[],"visibility_timeout_ms":-5})",
       mq::http::kDefaultVisibilityTimeout},
  };
  for (const auto& entry : cases) {
    const auto& body = entry.first;
    const auto& expected = entry.second;
    CAPTURE(body);
    broker.answer_topics(body);
    BrokerDirectory directory(options_for({broker.url()}));
    REQUIRE(directory.route("x", std::nullopt).status().code() == ErrorCode::kNotFound);
    CHECK(directory.visibility_timeout() == expected);
  }
}

TEST_CASE("The dedup window is the smallest of the brokers', and unknown when one does not say") {
  FakeBroker first;
  FakeBroker second;
  REQUIRE(first.port() > 0);
  REQUIRE(second.port() > 0);
  const auto with_window = [](std::uint32_t index, std::optional<json> window) {
    json answer = json::parse(topics_answer(index, 2, {}, {{"events", 2}}));
    if (window) answer["dedup_window_ms"] = *window;
    return answer.dump();
  };
  struct Case {
    std::optional<json> first, second;
    std::optional<milliseconds> expected;
  };
  const std::vector<Case> cases = {
      {json(120000), json(60000), milliseconds(60000)}, {json(0), json(120000), milliseconds(0)},
      {json(120000), std::nullopt, std::nullopt},  // an older broker: its window is not known
      {json(120000), json("120000"), std::nullopt},     {json(120000), json(-1), std::nullopt},
  };
  for (const auto& c : cases) {
    CAPTURE(c.first.value_or("absent").dump());
    CAPTURE(c.second.value_or("absent").dump());
    first.answer_topics(with_window(0, c.first));
    second.answer_topics(with_window(1, c.second));
    BrokerDirectory directory(options_for({first.url(), second.url()}));
    REQUIRE(directory.route("events", std::nullopt).ok());
    CHECK(directory.dedup_window() == c.expected);
  }
}

TEST_CASE(
    "A broker that does not answer keeps the dedup window it reported, and one never heard is unknown") {
  FakeBroker first;
  FakeBroker second;
  REQUIRE(first.port() > 0);
  REQUIRE(second.port() > 0);
  const auto with_window = [](std::uint32_t index, std::uint64_t window) {
    json answer = json::parse(topics_answer(index, 2, {}, {{"events", 2}}));
    answer["dedup_window_ms"] = window;
    return answer.dump();
  };
  first.answer_topics(with_window(0, 120000));
  second.answer_topics(with_window(1, 40000));
  auto options = options_for({first.url(), second.url()});
  options.metadata_max_age = milliseconds(0);  // always out of date
  {
    BrokerDirectory directory(options);
    REQUIRE(directory.route("events", std::nullopt).ok());
    CHECK(directory.dedup_window() == milliseconds(40000));
    CHECK_FALSE(directory.replicated_dedup_window().has_value());  // without placement: not replicated
    second.answer_topics(R"({"error":"shutting down"})", 503);
    REQUIRE(directory.route("events", std::nullopt).ok());
    CHECK(second.topics_requests() == 2);
    CHECK(directory.dedup_window() == milliseconds(40000));  // not the 120 s of the one that answered
  }
  {
    // Replicated (placement listed): the same smallest window.
    const auto replicated_with_window = [&](std::uint32_t index, std::uint64_t window) {
      json answer = json::parse(with_window(index, window));
      answer["topics"][0]["placement"] = json::array();
      for (std::uint32_t p = 0; p < 2; ++p) {
        answer["topics"][0]["placement"].push_back(
            {{"partition", p}, {"leader", p}, {"leader_epoch", 1}, {"replicas", {0, 1}}, {"isr", {0, 1}}});
      }
      return answer.dump();
    };
    first.answer_topics(replicated_with_window(0, 120000));
    second.answer_topics(replicated_with_window(1, 40000));
    BrokerDirectory directory(options);
    REQUIRE(directory.route("events", std::nullopt).ok());
    REQUIRE(directory.replicated());
    CHECK(directory.replicated_dedup_window() == milliseconds(40000));
    first.answer_topics(with_window(0, 120000));
    second.answer_topics(R"({"error":"shutting down"})", 503);
  }
  // Broker 1 has not answered since this directory began: its window is not known.
  BrokerDirectory directory(options);
  REQUIRE(directory.route("events", std::nullopt).ok());
  CHECK_FALSE(directory.dedup_window().has_value());
}

TEST_CASE("The map is read again once metadata_max_age has passed, and a failed read keeps the old map") {
  FakeBroker broker;
  REQUIRE(broker.port() > 0);
  broker.answer_topics(topics_answer(0, 1, {}, {{"events", 1}}));
  auto options = options_for({broker.url()});
  options.metadata_max_age = milliseconds(0);  // always out of date
  BrokerDirectory directory(options);
  REQUIRE(directory.route("events", 0).ok());
  REQUIRE(directory.route("events", 0).ok());
  CHECK(broker.topics_requests() == 2);
  broker.answer_topics(R"({"error":"shutting down"})", 503);
  const auto route = directory.route("events", 0);
  REQUIRE(route.ok());
  CHECK(route->url == broker.url());
  CHECK(broker.topics_requests() == 3);
}

TEST_CASE("mark_stale reads the map again, but not within a second of the last read") {
  FakeBroker broker;
  REQUIRE(broker.port() > 0);
  broker.answer_topics(topics_answer(0, 1, {}, {{"events", 1}}));
  BrokerDirectory directory(options_for({broker.url()}));
  const auto start = std::chrono::steady_clock::now();
  REQUIRE(directory.route("events", 0).ok());
  directory.mark_stale();
  REQUIRE(directory.route("events", 0).ok());
  // Without a clock to set, the gap can be checked only when this ran faster than it.
  if (std::chrono::steady_clock::now() - start < milliseconds(900)) CHECK(broker.topics_requests() == 1);
}

TEST_CASE("learn_owner takes a valid owner URL at once and asks the brokers again otherwise") {
  FakeBroker broker;
  REQUIRE(broker.port() > 0);
  broker.answer_topics(topics_answer(0, 2, {broker.url()}, {{"events", 2}}));
  BrokerDirectory directory(options_for({broker.url()}));
  auto route = directory.route("events", 1);
  REQUIRE_FALSE(route.ok());  // nobody knows where broker 1 is
  CHECK(route.status().code() == ErrorCode::kUnavailable);
  CHECK(contains(route.status().message(), "broker 1"));
  CHECK(broker.topics_requests() == 1);

  const std::string owner = local_url(closed_port());
  directory.learn_owner(1, owner + "/");  // written back in its canonical form
  route = directory.route("events", 1);
  REQUIRE(route.ok());
  CHECK(route->url == owner);
  CHECK(route->owner == 1);

  // No URL, or one that is no base URL: the map is read again at the next route.
  const int before = broker.topics_requests();
  for (const std::optional<std::string>& url :
       {std::optional<std::string>{}, std::optional<std::string>{"ftp://mqd-1:21"},
        std::optional<std::string>{"http://mqd-1:8080/path"}, std::optional<std::string>{""}}) {
    CAPTURE(url.value_or("(none)"));
    const int asked = broker.topics_requests();
    directory.learn_owner(1, url);
    CHECK(directory.route("events", 0).ok());
    CHECK(broker.topics_requests() == asked + 1);
  }
  CHECK(broker.topics_requests() == before + 4);
  // The owner learnt before survives those reads (broker 1 never answered to replace it).
  route = directory.route("events", 1);
  REQUIRE(route.ok());
  CHECK(route->url == owner);
}

TEST_CASE("A broker unreachable at its BROKER_ADDRS address is used where it answered") {
  FakeBroker broker;
  REQUIRE(broker.port() > 0);
  const std::string listed = local_url(closed_port());  // e.g. a compose service name seen from the host
  broker.answer_topics(topics_answer(0, 1, {listed}, {{"events", 1}}));
  BrokerDirectory directory(options_for({broker.url()}));
  auto route = directory.route("events", 0);
  REQUIRE(route.ok());
  CHECK(route->url == listed);                                // BROKER_ADDRS first: it may be a load balancer
  CHECK_FALSE(directory.try_other_address(1, listed));        // a broker never heard of
  CHECK_FALSE(directory.try_other_address(0, broker.url()));  // where it answered failed: nothing else
  CHECK(directory.try_other_address(0, listed));
  route = directory.route("events", 0);
  REQUIRE(route.ok());
  CHECK(route->url == broker.url());
  CHECK_FALSE(directory.try_other_address(0, broker.url()));
}

TEST_CASE("post sends a request and returns any answer, an address nobody listens on is unavailable") {
  FakeBroker broker;
  REQUIRE(broker.port() > 0);
  broker.answer_posts(R"({"error":"not mine","owner":1,"owner_url":"http://mqd-1:8080"})", 421);
  BrokerDirectory directory(options_for({broker.url()}));
  for (int i = 0; i < 3; ++i) {  // the pooled connection is used again
    auto reply = directory.post(broker.url(), "/produce", R"({"payload":1})");
    REQUIRE(reply.ok());
    CHECK(reply->status == 421);
    CHECK(owner_url_of(*reply) == "http://mqd-1:8080");
    CHECK(status_of_reply(*reply, broker.url()).owner() == 1u);
    CHECK(broker.last_post_body() == R"({"payload":1})");
  }
  const std::string down = local_url(closed_port());
  const auto refused = directory.post(down, "/produce", "{}");
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == ErrorCode::kUnavailable);
  CHECK(contains(refused.status().message(), "mqd at " + down + " cannot be reached"));
}

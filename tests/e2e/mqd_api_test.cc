// The HTTP contract of docs/http-api.md against a real mqd on 127.0.0.1: every route's success path, every
// error status, the event stream, and restarts.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <set>

#include "http_helpers.h"
#include "mq/topic.h"
#include "running_mqd.h"

using namespace mq::testing;
using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {
const std::string kProduce0 = "/produce?topic=events&partition=0";
std::string group_query(const std::string& route, const std::string& group, int partition = 0) {
  return route + "?topic=events&partition=" + std::to_string(partition) + "&group=" + group;
}
}  // namespace

TEST_CASE("ProduceSingleBatchWithAndWithoutPartitionOrKey") {
  RunningMqd mqd;
  auto single = http_post(mqd.port(), kProduce0, R"({"payload": {"n": 1}})");
  REQUIRE(single.status == 200);
  CHECK(single.json() ==
        json{{"id", single.json()["id"]}, {"topic", "events"}, {"partition", 0}, {"offset", 0}});
  CHECK(single.json()["id"].is_string());
  CHECK(http_post(mqd.port(), kProduce0, R"({"payload": null})").json()["offset"] == 1);

  auto batch =
      http_post(mqd.port(), "/produce?topic=events&partition=2",
                R"({"messages": [{"payload": 1}, {"payload": "two", "key": "k"}, {"payload": [3]}]})");
  REQUIRE(batch.status == 200);
  CHECK(batch.json()["partition"] == 2);
  CHECK(batch.json()["offsets"] == json{0, 1, 2});
  CHECK(batch.json()["ids"].size() == 3);

  // A key picks the partition with Kafka's partitioner; without one, partitions take turns.
  auto keyed = http_post(mqd.port(), "/produce?topic=events", R"({"payload": 1, "key": "customer-42"})");
  REQUIRE(keyed.status == 200);
  CHECK(keyed.json()["partition"] == mq::partition_for_key("customer-42", 4));
  std::set<int> turns;
  for (int i = 0; i < 4; ++i)
    turns.insert(
        http_post(mqd.port(), "/produce?topic=events", R"({"payload": 1})").json()["partition"].get<int>());
  CHECK(turns.size() == 4);
}

TEST_CASE("ProduceConsumeAckOverServerSentEvents") {
  RunningMqd mqd(RunningMqd::Env{{"HEARTBEAT_MS", "100"}});
  REQUIRE(http_post(mqd.port(), kProduce0,
                    "{\n  \"payload\": {\"text\": \"héllo \\\"x\\\"\\n\", \"n\": 12345678901234567890123},\n "
                    " \"key\": \"k1\"\n}")
              .status == 200);
  REQUIRE(http_post(mqd.port(), kProduce0, R"({"payload": [1, 2]})").status == 200);
  SseStream stream(mqd.port(), group_query("/consume", "g"));
  REQUIRE(stream.status() == 200);
  CHECK(stream.header("Content-Type").starts_with("text/event-stream"));
  CHECK(stream.header("Cache-Control") == "no-cache");
  CHECK(stream.header("X-Accel-Buffering") == "no");
  auto first = stream.next();
  REQUIRE(first);
  CHECK(first->id == first->data["id"]);
  CHECK(first->data["topic"] == "events");
  CHECK(first->data["partition"] == 0);
  CHECK(first->data["offset"] == 0);
  CHECK(first->data["delivery"] == 1);
  CHECK(first->data["timestamp"].is_number_integer());
  CHECK(first->data["key"] == "k1");
  CHECK(first->data["payload"]["text"] == "héllo \"x\"\n");
  CHECK(stream.raw().find("12345678901234567890123") != std::string::npos);  // the digits as produced
  auto second = stream.next();
  REQUIRE(second);
  CHECK(second->data["payload"] == json{1, 2});

  auto acked = http_post(mqd.port(), group_query("/ack", "g"), json{{"ids", {first->id, second->id}}}.dump());
  REQUIRE(acked.status == 200);
  CHECK(acked.json() == json{{"acked", 2}});
  CHECK(http_post(mqd.port(), group_query("/ack", "g"), json{{"id", first->id}}.dump()).json() ==
        json{{"acked", 0}});
  CHECK(stream.wait_for_keepalives(2, seconds(10)));  // idle: ": keepalive" every HEARTBEAT_MS
  auto stats = http_get(mqd.port(), "/stats?topic=events").json();
  const json& group = stats["topics"][0]["partitions"][0]["groups"][0];
  CHECK(group["group"] == "g");
  CHECK(group["committed_offset"] == 2);
  CHECK(group["inflight"] == 0);
  CHECK(group["lag"] == 0);
}

TEST_CASE("TwoGroupsEachGetEverythingAndTwoConnectionsOfOneGroupShare") {
  RunningMqd mqd;
  for (int i = 0; i < 20; ++i) REQUIRE(http_post(mqd.port(), kProduce0, R"({"payload": 1})").status == 200);
  SseStream a(mqd.port(), group_query("/consume", "shared") + "&max_inflight=10");
  SseStream b(mqd.port(), group_query("/consume", "shared") + "&max_inflight=10");
  SseStream other(mqd.port(), group_query("/consume", "other") + "&max_inflight=100");
  std::set<int> shared;
  for (auto* s : {&a, &b}) {
    for (int i = 0; i < 10; ++i) {
      auto e = s->next();
      REQUIRE(e);
      CHECK(shared.insert(e->data["offset"].get<int>()).second);
    }
  }
  CHECK(shared.size() == 20);
  std::set<int> all;
  for (int i = 0; i < 20; ++i) {
    auto e = other.next();
    REQUIRE(e);
    all.insert(e->data["offset"].get<int>());
  }
  CHECK(all.size() == 20);
}

TEST_CASE("VisibilityTimeoutRedeliversAndClosingAConnectionHandsMessagesBack") {
  RunningMqd mqd;
  for (int i = 0; i < 3; ++i) REQUIRE(http_post(mqd.port(), kProduce0, R"({"payload": 1})").status == 200);
  {
    SseStream quick(mqd.port(), group_query("/consume", "t") + "&visibility_timeout_ms=200&max_inflight=1");
    auto first = quick.next();
    REQUIRE(first);
    CHECK(first->data["delivery"] == 1);
    auto again = quick.next();  // not acknowledged: back after 200 ms
    REQUIRE(again);
    CHECK(again->data["offset"] == first->data["offset"]);
    CHECK(again->data["delivery"] == 2);
  }
  SseStream holder(mqd.port(), group_query("/consume", "h") + "&max_inflight=3");
  for (int i = 0; i < 3; ++i) REQUIRE(holder.next());
  SseStream waiter(mqd.port(), group_query("/consume", "h"));
  holder.close();  // the consumer goes away with 3 messages in flight (30 s visibility timeout)
  std::set<int> handed;
  for (int i = 0; i < 3; ++i) {
    auto e = waiter.next(seconds(10));
    REQUIRE(e);
    CHECK(e->data["delivery"] == 2);
    handed.insert(e->data["offset"].get<int>());
  }
  CHECK(handed.size() == 3);
}

TEST_CASE("NackAndTouch") {
  RunningMqd mqd;
  REQUIRE(http_post(mqd.port(), kProduce0, R"({"payload": 1})").status == 200);
  SseStream stream(mqd.port(), group_query("/consume", "g"));
  auto e = stream.next();
  REQUIRE(e);
  const std::string id_body = json{{"id", e->id}}.dump();
  CHECK(http_post(mqd.port(), group_query("/touch", "g"), id_body).json() == json{{"ok", true}});
  CHECK(http_post(mqd.port(), group_query("/nack", "g"), id_body).json() == json{{"ok", true}});
  auto again = stream.next();
  REQUIRE(again);
  CHECK(again->data["delivery"] == 2);
  CHECK(http_post(mqd.port(), group_query("/nack", "g"), json{{"id", e->id}, {"delay_ms", 60000}}.dump())
            .status == 200);
  CHECK(http_post(mqd.port(), group_query("/nack", "g"), id_body).status == 409);  // waiting out its delay
  CHECK(http_post(mqd.port(), group_query("/touch", "g"), id_body).status == 409);
  CHECK(http_post(mqd.port(), group_query("/touch", "g"), R"({"id": "0-77"})").status == 404);
  CHECK(http_post(mqd.port(), group_query("/nack", "g"), R"({"id": "nonsense"})").status == 404);
  CHECK(
      http_post(mqd.port(), group_query("/nack", "g"), json{{"id", e->id}, {"delay_ms", -5}}.dump()).status ==
      400);
}

TEST_CASE("TopicsStatsHealthAndMetrics") {
  RunningMqd mqd({{"BROKER_INDEX", "1"}, {"BROKER_COUNT", "2"}, {"BROKER_ADDRS", "http://a:1,http://b:2"}});
  auto topics = http_get(mqd.port(), "/topics");
  REQUIRE(topics.status == 200);
  CHECK(topics.json() == json::parse(R"({"broker":{"index":1,"count":2},"brokers":["http://a:1","http://b:2"],
                                        "visibility_timeout_ms":30000,"dedup_window_ms":120000,
                                        "topics":[{"name":"events","partitions":4,"owned":[1,3]}]})"));
  CHECK(http_get(mqd.port(), "/healthz").json() == json{{"status", "ok"}});
  REQUIRE(http_post(mqd.port(), "/produce?topic=events&partition=1", R"({"payload": 1})").status == 200);
  {
    SseStream s(mqd.port(), group_query("/consume", "g", 1));
    REQUIRE(s.next());
  }
  auto stats = http_get(mqd.port(), "/stats");
  REQUIRE(stats.status == 200);
  const json p1 = stats.json()["topics"][0]["partitions"][0];
  CHECK(p1["partition"] == 1);
  CHECK(p1["next_offset"] == 1);
  CHECK(p1["log_bytes"].get<int>() > 0);
  CHECK(http_get(mqd.port(), "/stats?topic=nope").status == 404);
  auto metrics = http_get(mqd.port(), "/metrics");
  REQUIRE(metrics.status == 200);
  CHECK(metrics.headers.find("Content-Type")->second == "text/plain; version=0.0.4");
  CHECK(metrics.body.find("mq_produced_total{topic=\"events\",partition=\"1\"} 1\n") != std::string::npos);
  CHECK(metrics.body.find("mq_delivered_total{topic=\"events\",partition=\"1\",group=\"g\"} 1\n") !=
        std::string::npos);
  for (const char* name :
       {"mq_acked_total", "mq_redelivered_total", "mq_dead_lettered_total", "mq_inflight", "mq_lag"}) {
    CHECK(metrics.body.find(std::string("# TYPE ") + name + " ") != std::string::npos);
  }
}

TEST_CASE("EveryErrorStatusOfTheContract") {
  RunningMqd mqd({{"MAX_PAYLOAD_BYTES", "100"},
                  {"MAX_BODY_BYTES", "1000"},
                  {"BROKER_COUNT", "2"},
                  {"BROKER_ADDRS", "http://127.0.0.1:1,http://127.0.0.1:2"}});
  auto expect_error = [](const HttpAnswer& answer, int status) {
    CHECK(answer.status == status);
    REQUIRE(!answer.body.empty());
    CHECK(json::parse(answer.body)["error"].is_string());
  };
  const int port = mqd.port();
  // 400
  expect_error(http_post(port, kProduce0, "{not json"), 400);
  expect_error(http_post(port, kProduce0, R"({"key": "k"})"), 400);
  expect_error(http_post(port, kProduce0, R"([1, 2])"), 400);
  expect_error(http_post(port, kProduce0, R"({"payload": 1, "key": 5})"), 400);
  expect_error(http_post(port, kProduce0, R"({"messages": []})"), 400);
  expect_error(http_post(port, kProduce0, R"({"messages": [1]})"), 400);
  expect_error(http_post(port, kProduce0, ""), 400);
  expect_error(http_post(port, "/produce?topic=events&partition=-1", R"({"payload": 1})"), 400);
  expect_error(http_post(port, "/produce?topic=events&partition=abc", R"({"payload": 1})"), 400);
  expect_error(http_post(port, "/produce?topic=..&partition=0", R"({"payload": 1})"), 400);
  expect_error(http_post(port, "/produce?partition=0", R"({"payload": 1})"), 400);
  expect_error(http_post(port, "/ack?topic=events&partition=0&group=", R"({"id": "0-0"})"), 400);
  expect_error(http_post(port, "/ack?topic=events&partition=0&group=a%2Fb", R"({"id": "0-0"})"), 400);
  expect_error(http_post(port, group_query("/ack", "g"), R"({"ids": [1]})"), 400);
  expect_error(http_get(port, "/consume?topic=events&partition=0"), 400);
  expect_error(http_get(port, group_query("/consume", "g") + "&max_inflight=0"), 400);
  expect_error(http_get(port, group_query("/consume", "g") + "&from=middle"), 400);
  // 404
  expect_error(http_post(port, "/produce?topic=nope&partition=0", R"({"payload": 1})"), 404);
  expect_error(http_post(port, "/produce?topic=events&partition=4", R"({"payload": 1})"), 404);
  expect_error(http_post(port, group_query("/ack", "g"), R"({"id": "0-0"})"), 404);  // no message yet
  expect_error(http_post(port, group_query("/ack", "g"), R"({"id": "garbage"})"), 404);
  expect_error(http_get(port, "/no/such/route"), 404);
  // 405
  expect_error(http_get(port, "/produce"), 405);
  expect_error(http_post(port, "/topics", "{}"), 405);
  expect_error(http_post(port, "/consume", "{}"), 405);
  {
    httplib::Client client("127.0.0.1", port);
    auto put = client.Put("/produce", "", "application/json");  // no body: the library alone says 400
    REQUIRE(put);
    expect_error(HttpAnswer{put->status, put->body, put->headers}, 405);
    auto post = client.Post("/healthz", "", "application/json");
    REQUIRE(post);
    expect_error(HttpAnswer{post->status, post->body, post->headers}, 405);
  }
  // 409
  REQUIRE(http_post(port, kProduce0, R"({"payload": 1})").status == 200);
  expect_error(http_post(port, group_query("/nack", "g"), R"({"id": "0-0"})"), 409);
  // 413: a payload over MAX_PAYLOAD_BYTES, a body over MAX_BODY_BYTES (sized, then chunked)
  expect_error(http_post(port, kProduce0, json{{"payload", std::string(200, 'x')}}.dump()), 413);
  expect_error(http_post(port, kProduce0, json{{"payload", std::string(2000, 'x')}}.dump()), 413);
  {
    httplib::Client client("127.0.0.1", port);
    std::size_t sent = 0;
    auto result = client.Post(
        kProduce0,
        [&](std::size_t, httplib::DataSink& sink) {
          if (sent == 0) sink.write("{\"payload\":\"", 12);
          const std::string chunk(500, 'y');
          sink.write(chunk.data(), chunk.size());
          sent += chunk.size();
          if (sent >= 5000) {
            sink.write("\"}", 2);
            sink.done();
          }
          return true;
        },
        "application/json");
    REQUIRE(result);
    expect_error(HttpAnswer{result->status, result->body, result->headers}, 413);
    // The oversized body was read to its end: the same keep-alive connection serves the next request.
    auto next = client.Get("/healthz");
    REQUIRE(next);
    CHECK(next->status == 200);
  }
  {
    httplib::Client client("127.0.0.1", port);
    auto sized = client.Post(kProduce0, json{{"payload", std::string(5000, 'z')}}.dump(), "application/json");
    REQUIRE(sized);
    expect_error(HttpAnswer{sized->status, sized->body, sized->headers}, 413);
    auto next = client.Get("/healthz");
    REQUIRE(next);
    CHECK(next->status == 200);
  }
  // 421 with the owner and its URL
  auto not_owned = http_post(port, "/produce?topic=events&partition=1", R"({"payload": 1})");
  expect_error(not_owned, 421);
  CHECK(not_owned.json()["owner"] == 1);
  CHECK(not_owned.json()["owner_url"] == "http://127.0.0.1:2");
  expect_error(http_get(port, group_query("/consume", "g", 3)), 421);
  expect_error(http_post(port, group_query("/ack", "g", 1), R"({"id": "1-0"})"), 421);
}

TEST_CASE("AuthTokenIsRequiredEverywhereButHealthz") {
  RunningMqd mqd(RunningMqd::Env{{"AUTH_TOKEN", "s3cret"}});
  const int port = mqd.port();
  CHECK(http_get(port, "/healthz").status == 200);
  auto missing = http_get(port, "/topics");
  CHECK(missing.status == 401);
  CHECK(missing.json()["error"].is_string());
  CHECK(http_get(port, "/topics", {{"Authorization", "Bearer wrong"}}).status == 401);
  CHECK(http_get(port, "/topics", {{"Authorization", "Bearer s3cret"}}).status == 200);
  CHECK(http_post(port, kProduce0, R"({"payload": 1})").status == 401);
  {
    // A refused body must not be read as the next request of a keep-alive connection.
    httplib::Client client("127.0.0.1", port);
    auto refused = client.Post(kProduce0, R"({"payload": "not read"})", "application/json");
    REQUIRE(refused);
    CHECK(refused->status == 401);
    auto next = client.Get("/topics", {{"Authorization", "Bearer s3cret"}});
    REQUIRE(next);
    CHECK(next->status == 200);
  }
  CHECK(http_post(port, kProduce0, R"({"payload": 1})", {{"Authorization", "Bearer s3cret"}}).status == 200);
  // Browsers' EventSource cannot set headers: the token may come as a query parameter.
  SseStream stream(port, group_query("/consume", "g") + "&access_token=s3cret");
  CHECK(stream.status() == 200);
  REQUIRE(stream.next());
  SseStream refused(port, group_query("/consume", "g") + "&access_token=nope");
  CHECK(refused.status() == 401);
}

TEST_CASE("RestartKeepsMessagesAndAcksAfterSigtermAndAfterKill9") {
  RunningMqd mqd(RunningMqd::Env{{"FSYNC", "always"}});
  for (int i = 0; i < 10; ++i) REQUIRE(http_post(mqd.port(), kProduce0, R"({"payload": 1})").status == 200);
  {
    SseStream s(mqd.port(), group_query("/consume", "g") + "&max_inflight=4");
    for (int i = 0; i < 4; ++i) {
      auto e = s.next();
      REQUIRE(e);
      if (i < 3)
        REQUIRE(http_post(mqd.port(), group_query("/ack", "g"), json{{"id", e->id}}.dump()).status == 200);
    }
  }
  for (int signal : {SIGTERM, SIGKILL}) {
    CAPTURE(signal);
    auto status = mqd.stop(signal);
    REQUIRE(status);
    if (signal == SIGTERM) {
      CHECK(WIFEXITED(*status));
      CHECK(WEXITSTATUS(*status) == 0);
    }
    mqd.start();
    auto stats = http_get(mqd.port(), "/stats?topic=events").json();
    CHECK(stats["topics"][0]["partitions"][0]["next_offset"] == 10);
    SseStream s(mqd.port(), group_query("/consume", "g"));
    auto e = s.next();
    REQUIRE(e);
    CHECK(e->data["offset"] == 3);  // 0..2 acknowledged before the restart; 3 was in flight
  }
}

TEST_CASE("SigtermEndsOpenStreamsAndExitsPromptly") {
  RunningMqd mqd;
  SseStream a(mqd.port(), group_query("/consume", "g"));
  SseStream b(mqd.port(), group_query("/consume", "h"));
  REQUIRE(a.status() == 200);
  REQUIRE(b.status() == 200);
  const auto start = std::chrono::steady_clock::now();
  auto status = mqd.stop(SIGTERM);
  REQUIRE(status);
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
  CHECK(std::chrono::steady_clock::now() - start < seconds(5));
  CHECK(a.wait_ended(seconds(5)));
}

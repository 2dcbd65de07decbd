// API.md "Message options" against a real mqd on 127.0.0.1, in real time: headers, delay_ms and
// deliver_at, dedup_id (also across kill -9), ordering=key, and every 400 and 409 they add.
#include <doctest/doctest.h>

#include <csignal>
#include <nlohmann/json.hpp>

#include "http_helpers.h"
#include "mq/topic.h"
#include "running_mqd.h"

using namespace mq::testing;
using nlohmann::json;
using std::chrono::milliseconds;

namespace {
const std::string kProduce0 = "/produce?topic=events&partition=0";
std::string consume(const std::string& group, const std::string& extra = "") {
  return "/consume?topic=events&partition=0&group=" + group + extra;
}
std::int64_t now_ms() {
  return std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}
}  // namespace

TEST_CASE("HeadersComeBackInEventsAndMessages") {
  RunningMqd mqd;
  auto produced = http_post(mqd.port(), kProduce0,
                            R"({"payload": 1, "headers": {"trace-id": "t-1", "content.type": "a/b \"q\""}})");
  REQUIRE(produced.status == 200);
  SseStream stream(mqd.port(), consume("g"));
  auto event = stream.next();
  REQUIRE(event);
  CHECK(event->data["headers"] == json{{"trace-id", "t-1"}, {"content.type", "a/b \"q\""}});
  auto read = http_get(mqd.port(), "/messages?topic=events&partition=0").json();
  CHECK(read["messages"][0]["headers"]["trace-id"] == "t-1");
}

TEST_CASE("EveryBadMessageOptionIsA400NamingTheFieldAndStoresNothing") {
  RunningMqd mqd;
  const std::string too_many_headers = [] {
    json headers = json::object();
    for (int i = 0; i < 33; ++i) headers["h" + std::to_string(i)] = "v";
    return json{{"payload", 1}, {"headers", headers}}.dump();
  }();
  const std::vector<std::pair<std::string, std::string>> bad = {
      {R"({"payload": 1, "headers": "x"})", "headers"},
      {R"({"payload": 1, "headers": {"a": 1}})", "headers"},
      {R"({"payload": 1, "headers": {"bad name": "v"}})", "headers"},
      {R"({"payload": 1, "headers": {"": "v"}})", "headers"},
      {R"({"payload": 1, "headers": {"a": "v", "a": "w"}})", "headers"},
      {R"({"payload": 1, "headers": {"a": "v" "b": "w"}})", "headers"},  // no comma: counting fails
      {R"({"payload": 1, "headers": {"a": "v", "b"}})", "headers"},
      {json{{"payload", 1}, {"headers", {{"a", std::string(4097, 'x')}}}}.dump(), "headers"},
      {too_many_headers, "headers"},
      {R"({"payload": 1, "delay_ms": -1})", "delay_ms"},
      {R"({"payload": 1, "delay_ms": 604800001})", "delay_ms"},
      {R"({"payload": 1, "delay_ms": 1.5})", "delay_ms"},
      {R"({"payload": 1, "delay_ms": "10"})", "delay_ms"},
      {R"({"payload": 1, "deliver_at": -3})", "deliver_at"},
      {R"({"payload": 1, "deliver_at": 99999999999999})", "deliver_at"},
      {R"({"payload": 1, "delay_ms": 5, "deliver_at": 5})", "not both"},
      {R"({"payload": 1, "dedup_id": ""})", "dedup_id"},
      {R"({"payload": 1, "dedup_id": 7})", "dedup_id"},
      {json{{"payload", 1}, {"dedup_id", std::string(129, 'd')}}.dump(), "dedup_id"},
      {R"({"messages": [{"payload": 1}, {"payload": 2, "delay_ms": -1}]})", "delay_ms"},
      {R"({"messages": [{"payload": 1, "dedup_id": "a"}, {"payload": 2, "headers": []}]})", "headers"},
  };
  for (const auto& entry : bad) {
    const auto& body = entry.first;  // not a structured binding: CAPTURE captures it
    const auto& field = entry.second;
    CAPTURE(body);
    auto answer = http_post(mqd.port(), kProduce0, body);
    CHECK(answer.status == 400);
    CHECK(answer.json()["error"].get<std::string>().find(field) != std::string::npos);
  }
  CHECK(http_get(mqd.port(), "/stats?topic=events").json()["topics"][0]["partitions"][0]["next_offset"] == 0);
  // The refused dedup id was not remembered either.
  auto stored = http_post(mqd.port(), kProduce0, R"({"payload": 1, "dedup_id": "a"})");
  CHECK(stored.json().contains("duplicate") == false);
  // ordering: none or key.
  CHECK(http_get(mqd.port(), consume("g", "&ordering=fifo")).status == 400);
}

TEST_CASE("ADelayedMessageArrivesNoEarlierThanItsTimeAndAfterARestart") {
  RunningMqd mqd(RunningMqd::Env{{"FSYNC", "always"}, {"HEARTBEAT_MS", "100"}});
  const std::int64_t sent = now_ms();
  auto delayed = http_post(mqd.port(), kProduce0, R"({"payload": "late", "delay_ms": 4000})");
  REQUIRE(delayed.status == 200);
  const std::int64_t due =
      http_get(mqd.port(), "/messages?topic=events&partition=0").json()["messages"][0]["deliver_at"];
  CHECK(due >= sent + 4000);
  REQUIRE(http_post(mqd.port(), kProduce0, R"({"payload": "now"})").status == 200);
  {
    SseStream stream(mqd.port(), consume("g"));
    auto first = stream.next();
    REQUIRE(first);
    CHECK(first->data["payload"] == "now");  // the group went on past the delayed one
    // Five requests before the delayed message is due (4 s: room for an ASan mqd syncing on a busy
    // machine; with 1.5 s it was due, and in flight, once in a while).
    auto stats =
        http_get(mqd.port(), "/stats?topic=events").json()["topics"][0]["partitions"][0]["groups"][0];
    CHECK(stats["delayed"] == 1);
    CHECK(stats["inflight"] == 1);
  }
  // Across a kill -9, still not before its time.
  REQUIRE(mqd.stop(SIGKILL));
  mqd.start();
  SseStream stream(mqd.port(), consume("g"));
  std::optional<SseEvent> late;
  while (true) {
    late = stream.next(milliseconds(8000));
    REQUIRE(late);
    if (late->data["payload"] == "late") break;  // "now" comes again: it was never acknowledged
  }
  CHECK(now_ms() >= due);
  CHECK(late->data["deliver_at"] == due);
  // An absolute time works the same way.
  const std::int64_t at = now_ms() + 700;
  REQUIRE(http_post(mqd.port(), kProduce0, json{{"payload", "at"}, {"deliver_at", at}}.dump()).status == 200);
  auto timed = stream.next(milliseconds(5000));
  REQUIRE(timed);
  CHECK(timed->data["payload"] == "at");
  CHECK(now_ms() >= at);
}

TEST_CASE("ADuplicateIsAnsweredWithTheStoredMessageAlsoAfterKill9") {
  RunningMqd mqd(RunningMqd::Env{{"FSYNC", "always"}});
  auto first = http_post(mqd.port(), kProduce0, R"({"payload": 1, "dedup_id": "order-7"})");
  REQUIRE(first.status == 200);
  auto again = http_post(mqd.port(), kProduce0, R"({"payload": 2, "dedup_id": "order-7"})");
  CHECK(again.json() == json{{"id", first.json()["id"]},
                             {"topic", "events"},
                             {"partition", 0},
                             {"offset", 0},
                             {"duplicate", true}});
  auto batch =
      http_post(mqd.port(), kProduce0,
                R"({"messages": [{"payload": 3, "dedup_id": "order-8"}, {"payload": 4, "dedup_id": "order-7"},
                                          {"payload": 5, "dedup_id": "order-8"}, {"payload": 6}]})");
  REQUIRE(batch.status == 200);
  CHECK(batch.json()["offsets"] == json{1, 0, 1, 2});
  CHECK(batch.json()["duplicates"] == json{1, 2});
  CHECK(batch.json()["ids"][1] == first.json()["id"]);
  REQUIRE(mqd.stop(SIGKILL));
  mqd.start();
  auto after = http_post(mqd.port(), kProduce0, R"({"messages": [{"payload": 7, "dedup_id": "order-8"}]})");
  CHECK(after.json()["duplicates"] == json{0});
  CHECK(after.json()["offsets"] == json{1});
  // Without partition and key, the id picks the partition, so a retry finds the first try.
  auto keyless = http_post(mqd.port(), "/produce?topic=events", R"({"payload": 1, "dedup_id": "retry-me"})");
  CHECK(keyless.json()["partition"] == mq::partition_for_key("retry-me", 4));
  auto retry = http_post(mqd.port(), "/produce?topic=events", R"({"payload": 1, "dedup_id": "retry-me"})");
  CHECK(retry.json()["duplicate"] == true);
  CHECK(http_get(mqd.port(), "/stats?topic=events").json()["topics"][0]["partitions"][0]["next_offset"] == 3);
}

TEST_CASE("ADedupIdIsForgottenOnceItsWindowPassed") {
  // The second produce must come within the window: 1.5 s leaves room for a slow start of its
  // connection on a busy machine (300 ms did not, once in a while).
  RunningMqd mqd(RunningMqd::Env{{"DEDUP_WINDOW_MS", "1500"}});
  REQUIRE(http_post(mqd.port(), kProduce0, R"({"payload": 1, "dedup_id": "x"})").status == 200);
  CHECK(http_post(mqd.port(), kProduce0, R"({"payload": 1, "dedup_id": "x"})").json()["duplicate"] == true);
  // Waiting is the point here: the window is time.
  std::this_thread::sleep_for(milliseconds(1600));
  auto later = http_post(mqd.port(), kProduce0, R"({"payload": 1, "dedup_id": "x"})");
  CHECK(later.json().contains("duplicate") == false);
  CHECK(later.json()["offset"] == 1);
}

TEST_CASE("OrderingByKeyOverHttpIsDurableAndAnotherOrderingIsA409") {
  RunningMqd mqd(RunningMqd::Env{{"FSYNC", "always"}});
  REQUIRE(
      http_post(
          mqd.port(), kProduce0,
          R"({"messages": [{"payload": 0, "key": "a"}, {"payload": 1, "key": "a"}, {"payload": 2, "key": "b"}]})")
          .status == 200);
  {
    SseStream keyed(mqd.port(), consume("g", "&ordering=key"));
    auto a0 = keyed.next();
    auto b2 = keyed.next();
    REQUIRE(a0);
    REQUIRE(b2);
    CHECK(a0->data["offset"] == 0);
    CHECK(b2->data["offset"] == 2);
    CHECK_FALSE(keyed.next(milliseconds(300)));  // 1 waits for 0
    REQUIRE(
        http_post(mqd.port(), "/ack?topic=events&partition=0&group=g", json{{"id", a0->id}}.dump()).status ==
        200);
    auto a1 = keyed.next();
    REQUIRE(a1);
    CHECK(a1->data["offset"] == 1);
  }
  auto refused = http_get(mqd.port(), consume("g", "&ordering=none"));
  CHECK(refused.status == 409);
  CHECK(refused.json()["ordering"] == "key");
  CHECK(refused.json()["error"].is_string());
  REQUIRE(mqd.stop(SIGKILL));
  mqd.start();
  CHECK(http_get(mqd.port(), consume("g", "&ordering=none")).status == 409);
  auto stats = http_get(mqd.port(), "/stats?topic=events").json()["topics"][0]["partitions"][0]["groups"][0];
  CHECK(stats["ordering"] == "key");
}

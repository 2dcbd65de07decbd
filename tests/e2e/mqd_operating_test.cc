// API.md "Operating it" against a real mqd on 127.0.0.1: POST /redrive (at most once across kill -9
// and concurrent calls) and DELETE /group (streams end, durable across kill -9), with their errors.
#include <doctest/doctest.h>

#include <csignal>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "http_helpers.h"
#include "running_mqd.h"

using namespace mq::testing;
using nlohmann::json;

namespace {

RunningMqd::Env dead_lettering(const std::string& fsync = "always") {
  return {{"TOPICS", "events:2"}, {"MAX_DELIVERIES", "1"}, {"FSYNC", fsync}};
}

HttpAnswer http_delete(int port, const std::string& target) {
  httplib::Client client("127.0.0.1", port);
  auto result = client.Delete(target);
  if (!result) return {};
  return {result->status, result->body, result->headers};
}

// Produces `count` messages to partition 0 and dead-letters each (a stream whose consumer nacks),
// then deletes the consumers' group: its stream, which mqd notices closed only a moment later,
// must not take (and, at its end, dead-letter) the messages redrive sends back.
void dead_letter(RunningMqd& mqd, int count, int first = 0) {
  for (int n = first; n < first + count; ++n) {
    const auto produced = http_post(mqd.port(), "/produce?topic=events&partition=0",
                                    json{{"payload", {{"n", n}}},
                                         {"key", "k" + std::to_string(n)},
                                         {"headers", {{"trace-id", "t" + std::to_string(n)}}}}
                                        .dump());
    REQUIRE(produced.status == 200);
  }
  SseStream stream(mqd.port(), "/consume?topic=events&partition=0&group=workers");
  for (int i = 0; i < count; ++i) {
    auto event = stream.next();
    REQUIRE(event);
    REQUIRE(http_post(mqd.port(), "/nack?topic=events&partition=0&group=workers",
                      json{{"id", event->data["id"]}}.dump())
                .status == 200);
  }
  REQUIRE(http_delete(mqd.port(), "/group?topic=events&group=workers").status == 200);
}

json messages(RunningMqd& mqd, const std::string& topic) {
  auto answer = http_get(mqd.port(), "/messages?topic=" + topic + "&partition=0&limit=1000");
  REQUIRE(answer.status == 200);
  return answer.json()["messages"];
}

std::uint64_t redrive(RunningMqd& mqd, const std::string& body = "{}") {
  auto answer = http_post(mqd.port(), "/redrive?topic=events-dlq&partition=0", body);
  REQUIRE_MESSAGE(answer.status == 200, answer.body);
  return answer.json()["redriven"].get<std::uint64_t>();
}

}  // namespace

TEST_CASE("RedriveSendsDeadLettersBackOnceAcrossKill9") {
  RunningMqd mqd(dead_lettering());
  dead_letter(mqd, 5);
  REQUIRE(messages(mqd, "events-dlq").size() == 5);
  CHECK(redrive(mqd, R"({"limit": 2})") == 2);
  mqd.restart(SIGKILL);
  CHECK(redrive(mqd) == 3);
  mqd.restart(SIGKILL);
  CHECK(redrive(mqd) == 0);
  const json source = messages(mqd, "events");
  REQUIRE(source.size() == 10);
  std::set<int> back;
  for (std::size_t i = 5; i < source.size(); ++i) {
    back.insert(source[i]["payload"]["n"].get<int>());
    CHECK(source[i]["headers"]["trace-id"] == "t" + source[i]["payload"]["n"].dump());
    CHECK(source[i]["key"] == "k" + source[i]["payload"]["n"].dump());
  }
  CHECK(back == std::set<int>{0, 1, 2, 3, 4});
}

TEST_CASE("ConcurrentRedriveCallsSendEachLetterBackOnce") {
  RunningMqd mqd(dead_lettering("never"));
  dead_letter(mqd, 30);
  std::atomic<std::uint64_t> total{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&] {
      for (int i = 0; i < 5; ++i) {
        auto answer = http_post(mqd.port(), "/redrive?topic=events-dlq&partition=0", R"({"limit": 3})");
        if (answer.status == 200) total += answer.json()["redriven"].get<std::uint64_t>();
      }
    });
  }
  for (auto& c : callers) c.join();
  total += redrive(mqd);
  CHECK(messages(mqd, "events-dlq").size() == 30);
  CHECK(total.load() == 30);
  CHECK(messages(mqd, "events").size() == 60);
}

TEST_CASE("RedriveAnswersItsErrorsAsTheContractSays") {
  RunningMqd mqd(dead_lettering("never"));
  const auto post = [&](const std::string& target, const std::string& body = "{}") {
    return http_post(mqd.port(), target, body);
  };
  CHECK(post("/redrive?topic=events&partition=0").status == 400);       // not a dead-letter topic
  CHECK(post("/redrive?topic=unknown-dlq&partition=0").status == 400);  // no such source topic
  CHECK(post("/redrive?topic=events-dlq&partition=0", R"({"limit": 0})").status == 400);
  CHECK(post("/redrive?topic=events-dlq&partition=0", R"({"limit": -1})").status == 400);
  CHECK(post("/redrive?topic=events-dlq&partition=0", R"({"limit": "all"})").status == 400);
  CHECK(post("/redrive?topic=events-dlq&partition=0", "[]").status == 400);
  CHECK(post("/redrive?topic=events-dlq&partition=0", "{").status == 400);
  CHECK(post("/redrive?topic=events-dlq").status == 400);  // no partition
  CHECK(post("/redrive?topic=events-dlq&partition=2").status == 404);
  CHECK(post("/redrive?topic=events-dlq&partition=0").json()["redriven"] == 0);  // none yet
  CHECK(http_get(mqd.port(), "/redrive?topic=events-dlq&partition=0").status == 405);
  // The redrive marker is reserved: a planted one would make a letter count as sent back.
  const auto planted =
      post("/produce?topic=events&partition=0", R"({"payload": 1, "dedup_id": "mq-redrive:0:1"})");
  CHECK(planted.status == 400);
  CHECK(planted.json()["error"].get<std::string>().find("reserved") != std::string::npos);
  const auto refused = post("/redrive?topic=events&partition=0");
  CHECK(refused.json()["error"].get<std::string>().find("dead-letter") != std::string::npos);
}

TEST_CASE("DeletingAGroupEndsItsStreamsAndIsDurableAcrossKill9") {
  RunningMqd mqd(RunningMqd::Env{{"TOPICS", "events:2"}, {"FSYNC", "always"}});
  for (int n = 0; n < 3; ++n)
    REQUIRE(http_post(mqd.port(), "/produce?topic=events&partition=0", json{{"payload", n}}.dump()).status ==
            200);
  REQUIRE(http_post(mqd.port(), "/seek?topic=events&partition=0&group=g", R"({"offset": 2})").status == 200);
  REQUIRE(http_post(mqd.port(), "/seek?topic=events&partition=1&group=g", R"({"offset": 0})").status == 200);
  SseStream stream(mqd.port(), "/consume?topic=events&partition=0&group=g");
  REQUIRE(stream.next());  // offset 2
  const auto deleted = http_delete(mqd.port(), "/group?topic=events&group=g");
  REQUIRE(deleted.status == 200);
  CHECK(deleted.json() == json{{"deleted", true}});
  CHECK(stream.wait_ended(std::chrono::seconds(10)));  // the stream of the deleted group ends
  CHECK(http_delete(mqd.port(), "/group?topic=events&group=g").status == 404);
  mqd.restart(SIGKILL);
  const json stats = http_get(mqd.port(), "/stats?topic=events").json();
  for (const auto& partition : stats["topics"][0]["partitions"]) CHECK(partition["groups"].empty());
  // Consumed again, it is a new group: from the start.
  SseStream again(mqd.port(), "/consume?topic=events&partition=0&group=g");
  auto first = again.next();
  REQUIRE(first);
  CHECK(first->data["offset"] == 0);
}

TEST_CASE("GroupDeletionAnswersItsErrorsAsTheContractSays") {
  RunningMqd mqd(RunningMqd::Env{{"MAX_BODY_BYTES", "1024"}});
  {
    // A body is read within MAX_BODY_BYTES and thrown away, never held whole.
    httplib::Client client("127.0.0.1", mqd.port());
    auto big = client.Delete("/group?topic=events&group=g", std::string(1 << 20, 'x'), "application/json");
    REQUIRE(big);
    CHECK(big->status == 413);
  }
  CHECK(http_delete(mqd.port(), "/group?topic=events&group=nobody").status == 404);
  CHECK(http_delete(mqd.port(), "/group?topic=unknown&group=g").status == 404);
  CHECK(http_delete(mqd.port(), "/group?topic=events&group=..").status == 400);
  CHECK(http_delete(mqd.port(), "/group?topic=events").status == 400);
  CHECK(http_delete(mqd.port(), "/group?group=g").status == 400);
  CHECK(http_post(mqd.port(), "/group?topic=events&group=g", "{}").status == 405);
  CHECK(http_get(mqd.port(), "/group?topic=events&group=g").status == 405);
  // Refusals leave no state behind.
  CHECK(http_get(mqd.port(), "/stats?topic=events").json()["topics"][0]["partitions"][0]["groups"].empty());
}

// The log's life over HTTP (docs/http-api.md "The log's life", GET /messages): segments rolling under
// a real mqd, retention by size with its statistics and metrics, reads without a group by offset and
// by time, every refusal, and a kill -9 with a restart in between.
#include <doctest/doctest.h>

#include <chrono>
#include <csignal>
#include <nlohmann/json.hpp>
#include <thread>

#include "http_helpers.h"
#include "running_mqd.h"

using namespace mq::testing;
using nlohmann::json;

namespace {

std::string numbered(int n) {
  return R"({"payload":{"n":)" + std::to_string(n) + R"(,"pad":")" + std::string(60, 'x') + "\"}}";
}

json partition0_stats(const RunningMqd& mqd) {
  auto answer = http_get(mqd.port(), "/stats?topic=events");
  REQUIRE(answer.status == 200);
  return answer.json()["topics"][0]["partitions"][0];
}

}  // namespace

TEST_CASE("MessagesAreReadWithoutAGroupAcrossSegmentsByOffsetAndByTime") {
  RunningMqd mqd(RunningMqd::Env{{"SEGMENT_BYTES", "1024"}, {"TOPICS", "events:2"}});
  for (int i = 0; i < 60; ++i)
    REQUIRE(http_post(mqd.port(), "/produce?topic=events&partition=0", numbered(i)).status == 200);
  const json stats = partition0_stats(mqd);
  CHECK(stats["segments"].get<int>() > 3);
  CHECK(stats["log_start_offset"] == 0);

  auto page = http_get(mqd.port(), "/messages?topic=events&partition=0&offset=10&limit=25");
  REQUIRE(page.status == 200);
  const json body = page.json();
  CHECK(body["topic"] == "events");
  CHECK(body["partition"] == 0);
  CHECK(body["log_start_offset"] == 0);
  CHECK(body["next_offset"] == 60);
  REQUIRE(body["messages"].size() == 25u);  // across segment ends
  for (std::size_t i = 0; i < 25; ++i) {
    const json& m = body["messages"][i];
    CHECK(m["offset"] == 10 + i);
    CHECK(m["id"] == "0-" + std::to_string(10 + i));
    CHECK(m["payload"]["n"] == 10 + static_cast<int>(i));
    CHECK(m.contains("timestamp"));
  }
  // The default: from the log start, 100 at most; an empty list past the end.
  CHECK(http_get(mqd.port(), "/messages?topic=events&partition=0").json()["messages"].size() == 60u);
  CHECK(http_get(mqd.port(), "/messages?topic=events&partition=0&offset=60").json()["messages"].empty());
  CHECK(http_get(mqd.port(), "/messages?topic=events&partition=0&offset=999").json()["messages"].empty());
  // By time: the first message at or after a timestamp; one after every message gives nothing.
  const std::int64_t t20 = body["messages"][10]["timestamp"];
  const json by_time =
      http_get(mqd.port(), "/messages?topic=events&partition=0&limit=1&timestamp=" + std::to_string(t20))
          .json();
  REQUIRE(by_time["messages"].size() == 1u);
  CHECK(by_time["messages"][0]["timestamp"].get<std::int64_t>() >= t20);
  CHECK(by_time["messages"][0]["offset"].get<int>() <= 20);
  CHECK(http_get(mqd.port(), "/messages?topic=events&partition=0&timestamp=0").json()["messages"].size() ==
        60u);
  CHECK(http_get(mqd.port(), "/messages?topic=events&partition=0&timestamp=99999999999999")
            .json()["messages"]
            .empty());
  // Reading changes nothing: no group appears.
  CHECK(partition0_stats(mqd)["groups"].empty());

  for (const char* bad : {"&offset=-1", "&offset=x", "&timestamp=-5", "&offset=1&timestamp=1", "&limit=0",
                          "&limit=1001", "&limit=ten"}) {
    CAPTURE(bad);
    auto refused = http_get(mqd.port(), std::string("/messages?topic=events&partition=0") + bad);
    CHECK(refused.status == 400);
    CHECK(refused.json().contains("error"));
  }
  CHECK(http_get(mqd.port(), "/messages?topic=events").status == 400);  // partition required
  CHECK(http_get(mqd.port(), "/messages?topic=nope&partition=0").status == 404);
  CHECK(http_get(mqd.port(), "/messages?topic=events&partition=9").status == 404);
  CHECK(http_post(mqd.port(), "/messages?topic=events&partition=0", "{}").status == 405);
}

TEST_CASE("RetentionBySizeUnderARealMqdSurvivesKill9AndShowsInStatsAndMetrics") {
  RunningMqd mqd(RunningMqd::Env{{"SEGMENT_BYTES", "1024"},
                                 {"RETENTION_BYTES", "3000"},
                                 {"RETENTION_CHECK_MS", "50"},
                                 {"TOPICS", "events:1,keep:1:retention_bytes=0"}});
  for (int i = 0; i < 80; ++i) {
    REQUIRE(http_post(mqd.port(), "/produce?topic=events&partition=0", numbered(i)).status == 200);
    REQUIRE(http_post(mqd.port(), "/produce?topic=keep&partition=0", numbered(i)).status == 200);
  }
  // Retention runs on its own timer (every 50 ms), with nothing to await over HTTP: look at /stats
  // until a run after the last produce trimmed the partition (bounded: 10 s).
  json stats = partition0_stats(mqd);
  for (int tries = 0; tries < 400 && stats["log_bytes"].get<std::uint64_t>() > 3000u; ++tries) {
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
    stats = partition0_stats(mqd);
  }
  CHECK(stats["log_bytes"].get<std::uint64_t>() <= 3000u);
  const std::uint64_t start = stats["log_start_offset"];
  REQUIRE(start > 0);
  CHECK(stats["next_offset"] == 80);
  auto metrics = http_get(mqd.port(), "/metrics").body;
  CHECK(metrics.find("mq_log_start_offset{topic=\"events\",partition=\"0\"} ") != std::string::npos);
  CHECK(metrics.find("mq_log_segments{topic=\"events\",partition=\"0\"} ") != std::string::npos);
  CHECK(metrics.find("mq_retention_deleted_messages_total{topic=\"events\",partition=\"0\"} " +
                     std::to_string(start)) != std::string::npos);
  // The topic with its own retention_bytes=0 keeps everything.
  auto kept = http_get(mqd.port(), "/stats?topic=keep").json()["topics"][0]["partitions"][0];
  CHECK(kept["log_start_offset"] == 0);
  // Reading below the start starts at the start; a group starts there too.
  auto page = http_get(mqd.port(), "/messages?topic=events&partition=0&offset=0&limit=1").json();
  CHECK(page["messages"][0]["offset"].get<std::uint64_t>() >= start);
  // kill -9 and restart: the start never goes back, offsets go on.
  mqd.restart(SIGKILL);
  const json after = partition0_stats(mqd);
  CHECK(after["log_start_offset"].get<std::uint64_t>() >= start);
  CHECK(after["next_offset"] == 80);
  auto produced = http_post(mqd.port(), "/produce?topic=events&partition=0", numbered(80));
  REQUIRE(produced.status == 200);
  CHECK(produced.json()["offset"] == 80);
  // An ack of a deleted message: 200; a nack or touch: 409.
  CHECK(http_post(mqd.port(), "/ack?topic=events&partition=0&group=g", R"({"id":"0-0"})").status == 200);
  CHECK(http_post(mqd.port(), "/nack?topic=events&partition=0&group=g", R"({"id":"0-1"})").status == 409);
  CHECK(http_post(mqd.port(), "/touch?topic=events&partition=0&group=g", R"({"id":"0-1"})").status == 409);
}

TEST_CASE("SeekOverHttpReplaysSkipsRefusesBadBodiesAndSurvivesKill9") {
  RunningMqd mqd(RunningMqd::Env{{"SEGMENT_BYTES", "1024"}, {"TOPICS", "events:2"}, {"FSYNC", "always"}});
  for (int i = 0; i < 30; ++i)
    REQUIRE(http_post(mqd.port(), "/produce?topic=events&partition=0", numbered(i)).status == 200);
  const std::string seek = "/seek?topic=events&partition=0&group=g";
  auto to_12 = http_post(mqd.port(), seek, R"({"offset":12})");
  REQUIRE(to_12.status == 200);
  CHECK(to_12.json()["committed_offset"] == 12);
  CHECK(http_post(mqd.port(), seek, R"({"offset":1000})").json()["committed_offset"] == 30);  // clamped
  CHECK(http_post(mqd.port(), seek, R"({"position":"earliest"})").json()["committed_offset"] == 0);
  CHECK(http_post(mqd.port(), seek, R"({"position":"latest"})").json()["committed_offset"] == 30);
  CHECK(http_post(mqd.port(), seek, R"({"timestamp":0})").json()["committed_offset"] == 0);
  for (const char* bad : {"{}", R"({"offset":-1})", R"({"offset":"3"})", R"({"position":"middle"})",
                          R"({"offset":1,"position":"latest"})", R"({"timestamp":-1})", "[1]", "", "{"}) {
    CAPTURE(bad);
    auto refused = http_post(mqd.port(), seek, bad);
    CHECK(refused.status == 400);
  }
  auto beyond_64_bits = http_post(mqd.port(), seek, R"({"offset":18446744073709551616})");
  CHECK(beyond_64_bits.status == 400);
  CHECK(
      beyond_64_bits.json()["error"] ==
      "the request body holds a number beyond 64 bits or beyond a double, which mqd reads only in payloads");
  // Also in a field mqd does not know, which it otherwise ignores (docs/http-api.md).
  CHECK(http_post(mqd.port(), seek, R"({"offset":1,"note":1e400})").status == 400);
  CHECK(http_post(mqd.port(), "/seek?topic=events&partition=0&group=../x", R"({"offset":1})").status == 400);
  CHECK(http_post(mqd.port(), "/seek?topic=nope&partition=0&group=g", R"({"offset":1})").status == 404);
  CHECK(http_get(mqd.port(), seek).status == 405);
  // Durable before the 200: after kill -9 the group is where the seek left it.
  REQUIRE(http_post(mqd.port(), seek, R"({"offset":17})").status == 200);
  mqd.restart(SIGKILL);
  auto groups = http_get(mqd.port(), "/stats?topic=events").json()["topics"][0]["partitions"][0]["groups"];
  REQUIRE(groups.size() == 1u);
  CHECK(groups[0]["group"] == "g");
  CHECK(groups[0]["committed_offset"] == 17);
}

// mqd under many connections, at its connection cap, split across two brokers, and fed garbage.
#include <doctest/doctest.h>

#include <atomic>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "http_helpers.h"
#include "running_mqd.h"

using namespace mq::testing;
using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

// Sends raw bytes on a fresh connection and returns what comes back until the server closes or
// `timeout` passes.
std::string raw_exchange(int port, const std::string& bytes, bool half_close,
                         std::chrono::milliseconds timeout) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return "";
  }
  (void)::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  if (half_close) ::shutdown(fd, SHUT_WR);
  timeval tv{static_cast<time_t>(timeout.count() / 1000),
             static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string answer;
  char buffer[4096];
  ssize_t n = 0;
  while ((n = ::recv(fd, buffer, sizeof buffer, 0)) > 0) answer.append(buffer, static_cast<std::size_t>(n));
  ::close(fd);
  return answer;
}

}  // namespace

TEST_CASE("SixtyFourOpenStreamsNeverStarveProducersAndEveryMessageReachesEachGroupOnce") {
  RunningMqd mqd(RunningMqd::Env{{"TOPICS", "events:8"}});
  const int port = mqd.port();
  constexpr int kMessages = 5000;
  constexpr int kProducers = 4;
  // 2 groups x 8 partitions x 4 connections = 64 open streams; consumers acknowledge what they get.
  std::mutex mutex;
  std::condition_variable progress;
  std::map<std::string, std::set<std::pair<int, int>>> seen;  // group -> (partition, offset)
  int duplicates = 0;
  std::vector<std::unique_ptr<SseStream>> streams;
  std::vector<std::thread> ackers;
  std::atomic<bool> done{false};
  for (const std::string group : {"g1", "g2"}) {
    for (int partition = 0; partition < 8; ++partition) {
      for (int c = 0; c < 4; ++c) {
        const std::string query = "?topic=events&partition=" + std::to_string(partition) + "&group=" + group;
        streams.push_back(std::make_unique<SseStream>(port, "/consume" + query));
        SseStream* stream = streams.back().get();
        ackers.emplace_back([&, stream, group, query] {
          httplib::Client client("127.0.0.1", port);
          while (!done) {
            auto event = stream->next(milliseconds(200));
            if (!event) continue;
            std::vector<SseEvent> batch{*event};
            for (auto& more : stream->drain()) batch.push_back(std::move(more));
            json ids = json::array();
            for (const auto& e : batch) ids.push_back(e.id);
            auto acked = client.Post("/ack" + query, json{{"ids", ids}}.dump(), "application/json");
            REQUIRE(acked);
            CHECK(acked->status == 200);
            std::lock_guard lock(mutex);
            for (const auto& e : batch) {
              if (!seen[group].insert({e.data["partition"].get<int>(), e.data["offset"].get<int>()}).second)
                ++duplicates;
            }
            progress.notify_all();
          }
        });
      }
    }
  }
  for (auto& s : streams) REQUIRE(s->status() == 200);

  std::atomic<int> refused{0};
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      httplib::Client client("127.0.0.1", port);
      for (int i = 0; i < kMessages / kProducers; ++i) {
        auto result = client.Post("/produce?topic=events",
                                  json{{"payload", {{"producer", p}, {"i", i}}}}.dump(), "application/json");
        if (!result || result->status != 200) ++refused;
      }
    });
  }
  for (auto& t : producers) t.join();
  CHECK(refused.load() == 0);
  {
    std::unique_lock lock(mutex);
    CHECK(progress.wait_for(
        lock, seconds(60), [&] { return seen["g1"].size() == kMessages && seen["g2"].size() == kMessages; }));
    CHECK(duplicates == 0);
  }
  done = true;
  for (auto& t : ackers) t.join();
  streams.clear();
}

TEST_CASE("AtMaxConnectionsANewRequestGets503UntilConnectionsClose") {
  RunningMqd mqd(RunningMqd::Env{{"MAX_CONNECTIONS", "8"}});
  const int port = mqd.port();
  std::vector<std::unique_ptr<SseStream>> streams;
  for (int i = 0; i < 8; ++i) {
    streams.push_back(
        std::make_unique<SseStream>(port, "/consume?topic=events&partition=0&group=g" + std::to_string(i)));
    REQUIRE(streams.back()->status() == 200);
  }
  auto refused = http_post(port, "/produce?topic=events&partition=0", R"({"payload": 1})");
  CHECK(refused.status == 503);
  CHECK(json::parse(refused.body)["error"].is_string());
  streams[0]->close();
  streams[1]->close();
  // The server notices the closed streams within its stream poll; await the first served produce.
  HttpAnswer served;
  const auto deadline = std::chrono::steady_clock::now() + seconds(10);
  while (served.status != 200 && std::chrono::steady_clock::now() < deadline) {
    served = http_post(port, "/produce?topic=events&partition=0", R"({"payload": 1})");
  }
  CHECK(served.status == 200);
}

TEST_CASE("TwoBrokersEachServeTheirPartitionsAndPointToTheOwnerOfTheOthers") {
  const int port0 = free_port();
  const int port1 = free_port();
  const std::string addrs =
      "http://127.0.0.1:" + std::to_string(port0) + ",http://127.0.0.1:" + std::to_string(port1);
  RunningMqd b0({{"PORT", std::to_string(port0)},
                 {"BROKER_INDEX", "0"},
                 {"BROKER_COUNT", "2"},
                 {"BROKER_ADDRS", addrs}});
  RunningMqd b1({{"PORT", std::to_string(port1)},
                 {"BROKER_INDEX", "1"},
                 {"BROKER_COUNT", "2"},
                 {"BROKER_ADDRS", addrs}});
  for (int partition = 0; partition < 4; ++partition) {
    CAPTURE(partition);
    const std::string target = "/produce?topic=events&partition=" + std::to_string(partition);
    RunningMqd& owner = partition % 2 == 0 ? b0 : b1;
    RunningMqd& other = partition % 2 == 0 ? b1 : b0;
    CHECK(http_post(owner.port(), target, R"({"payload": 1})").status == 200);
    auto redirected = http_post(other.port(), target, R"({"payload": 1})");
    CHECK(redirected.status == 421);
    CHECK(redirected.json()["owner"] == partition % 2);
    CHECK(redirected.json()["owner_url"] == "http://127.0.0.1:" + std::to_string(owner.port()));
    // Each partition's log lives on its owner only.
    const std::string log = "/events/partition-" + std::to_string(partition) + ".log";
    CHECK(std::filesystem::exists(owner.data_dir() + log));
    CHECK_FALSE(std::filesystem::exists(other.data_dir() + log));
  }
  CHECK(http_get(port1, "/topics").json()["brokers"].size() == 2);
}

TEST_CASE("GarbageTruncatedAndMalformedRequestsLeaveTheServerServing") {
  RunningMqd mqd;
  const int port = mqd.port();
  const std::vector<std::pair<std::string, bool>> attacks = {
      {"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 binary garbage \r\n\r\n", false},
      {"GARBAGE / HTTP/9.9\r\n\r\n", false},
      {"POST /produce?topic=events&partition=0 HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"payl",
       true},
      {"GET /topics HTTP/1.1\r\nHost: x\r\n", true},  // headers never finished
      {"POST /produce?topic=events&partition=0 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
       "chunked\r\n\r\nzz\r\n",
       true},
      {std::string(100000, 'A'), true},
      {"GET /consume?topic=events&partition=0&group=g HTTP/1.1\r\nHost: x\r\n\r\n", true},
  };
  for (const auto& entry : attacks) {
    const auto& bytes = entry.first;  // not a structured binding: CAPTURE captures it
    const auto& half_close = entry.second;
    CAPTURE(bytes.substr(0, 40));
    const std::string answer = raw_exchange(port, bytes, half_close, milliseconds(3000));
    if (!answer.empty()) CHECK(answer.starts_with("HTTP/1.1 "));
    CHECK(http_get(port, "/healthz").status == 200);
    CHECK(http_post(port, "/produce?topic=events&partition=0", R"({"payload": 1})").status == 200);
  }
}

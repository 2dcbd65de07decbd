// The HTTP backend's own behaviour: routing to partition owners across brokers, following a 421,
// reconnecting event streams, credentials, unreachable brokers.
#include <doctest/doctest.h>

#include <filesystem>
#include <set>

#include "http_helpers.h"
#include "queue_backends.h"

using namespace mq;
using namespace mq::testing;
using namespace std::chrono_literals;

namespace {

std::unique_ptr<Queue> http_queue(std::vector<std::string> addrs, std::string token = "") {
  HttpQueueOptions options;
  options.addrs = std::move(addrs);
  options.auth_token = std::move(token);
  auto queue = Queue::http(options);
  REQUIRE_MESSAGE(queue.ok(), queue.status().to_string());
  return std::move(queue).value();
}

bool has_log(const RunningMqd& broker, std::uint32_t partition) {
  return std::filesystem::exists(broker.data_dir() + "/events/partition-" + std::to_string(partition) +
                                 ".log");
}

RunningMqd::Env broker_env(int port, int index, int count, const std::string& addrs) {
  RunningMqd::Env env{{"PORT", std::to_string(port)},
                      {"BROKER_INDEX", std::to_string(index)},
                      {"BROKER_COUNT", std::to_string(count)},
                      {"TOPICS", "events:4"}};
  if (!addrs.empty()) env["BROKER_ADDRS"] = addrs;
  return env;
}

}  // namespace

TEST_CASE("AQueueGivenOneAddressSendsEveryPartitionToItsOwner") {
  const int port0 = free_port();
  const int port1 = free_port();
  const std::string addrs = url_of(port0) + "," + url_of(port1);
  RunningMqd b0(broker_env(port0, 0, 2, addrs));
  RunningMqd b1(broker_env(port1, 1, 2, addrs));
  auto queue = http_queue({url_of(port1)});  // one address: /topics names the other broker

  std::multiset<std::string> sent;
  for (std::uint32_t p = 0; p < 4; ++p) {
    const std::string payload = "{\"partition\":" + std::to_string(p) + "}";
    CHECK(produce_ok(*queue, payload, std::nullopt, p).partition == p);
    sent.insert(payload);
  }
  for (int i = 0; i < 8; ++i) {  // keys and round robin reach both brokers too
    const std::string payload = "{\"i\":" + std::to_string(i) + "}";
    produce_ok(*queue, payload,
               i % 2 == 0 ? std::optional<std::string>("key-" + std::to_string(i)) : std::nullopt);
    sent.insert(payload);
  }
  for (std::uint32_t p = 0; p < 4; ++p) {
    CAPTURE(p);
    const RunningMqd& owner = p % 2 == 0 ? b0 : b1;
    const RunningMqd& other = p % 2 == 0 ? b1 : b0;
    CHECK(has_log(owner, p));
    CHECK_FALSE(has_log(other, p));
  }
  auto consumer = open_consumer(*queue, group_options("g"));  // streams from both brokers
  auto got = receive_n(*consumer, sent.size());
  CHECK(payloads_of(got) == sent);
  CHECK(ack_ok(*queue, got) == sent.size());
}

TEST_CASE("BrokersWithoutBrokerAddrsAreFoundWhenTheClientListsThemAll") {
  const int port0 = free_port();
  const int port1 = free_port();
  RunningMqd b0(broker_env(port0, 0, 2, ""));
  RunningMqd b1(broker_env(port1, 1, 2, ""));
  auto both = http_queue({url_of(port0), url_of(port1)});
  for (std::uint32_t p = 0; p < 4; ++p) CHECK(produce_ok(*both, "1", std::nullopt, p).partition == p);

  auto one = http_queue({url_of(port0)});
  CHECK(one->produce_json("events", "1").ok());  // partitions of broker 0 work
  const Message m{*Payload::parse("1"), std::nullopt};
  auto other = one->produce("events", m, 1u);
  CHECK(other.status().code() == ErrorCode::kUnavailable);
  CHECK(other.status().message().find("broker 1") != std::string::npos);
}

TEST_CASE("AStaleOwnerMapIsCorrectedByFollowingA421") {
  const int port0 = free_port();
  const int port1 = free_port();
  const std::string addrs = url_of(port0) + "," + url_of(port1);
  auto queue = http_queue({url_of(port0)});
  {
    RunningMqd b0(broker_env(port0, 0, 2, addrs));
    RunningMqd b1(broker_env(port1, 1, 2, addrs));
    produce_ok(*queue, "1", std::nullopt, 0u);  // the queue now believes port0 owns partition 0
  }
  // The brokers come back with their indexes swapped: port1 owns partition 0 now.
  const std::string swapped = url_of(port1) + "," + url_of(port0);
  RunningMqd b0(broker_env(port1, 0, 2, swapped));
  RunningMqd b1(broker_env(port0, 1, 2, swapped));
  CHECK(produce_ok(*queue, "2", std::nullopt, 0u).partition == 0);
  CHECK(has_log(b0, 0));
  CHECK_FALSE(has_log(b1, 0));
}

TEST_CASE("AConsumerResumesWhenMqdRestartsAndGetsItsUnacknowledgedMessagesAgain") {
  for (int signal : {SIGTERM, SIGKILL}) {
    CAPTURE(signal);
    RunningMqd mqd(RunningMqd::Env{{"TOPICS", "events:2"}});
    auto queue = http_queue({url_of(mqd.port())});
    for (int i = 0; i < 10; ++i) produce_ok(*queue, std::to_string(i));
    auto consumer = open_consumer(*queue, group_options("g", 100, 60s));
    auto got = receive_n(*consumer, 10);
    REQUIRE(got.size() == 10);
    const std::vector<ReceivedMessage> acked(got.begin(), got.begin() + 3);
    CHECK(ack_ok(*queue, acked) == 3);
    std::set<std::string> pending;
    for (std::size_t i = 3; i < got.size(); ++i) pending.insert(got[i].id);

    mqd.restart(signal);
    produce_ok(*queue, "\"after\"");
    std::set<std::string> seen;
    bool after_seen = false;
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while ((seen.size() < pending.size() || !after_seen) && std::chrono::steady_clock::now() < deadline) {
      for (auto& m : receive_for(*consumer, 1s)) {
        for (const auto& a : acked) CHECK(m.id != a.id);  // acknowledged before the restart: never again
        if (m.payload == "\"after\"") {
          after_seen = true;
        } else {
          CHECK(pending.contains(m.id));
          seen.insert(m.id);
        }
      }
    }
    CHECK(seen == pending);
    CHECK(after_seen);
  }
}

TEST_CASE("AnUnknownTopicIsNotFound") {
  RunningMqd mqd;
  auto queue = http_queue({url_of(mqd.port())});
  CHECK(queue->produce_json("nope", "1").status().code() == ErrorCode::kNotFound);
  CHECK(queue->consume("nope", group_options("g")).status().code() == ErrorCode::kNotFound);
  const Message m{*Payload::parse("1"), std::nullopt};
  CHECK(queue->produce("events", m, 99u).status().code() == ErrorCode::kNotFound);
}

TEST_CASE("TheTokenIsSentAndARefusalIsReported") {
  RunningMqd mqd(RunningMqd::Env{{"AUTH_TOKEN", "s3cret"}});
  auto without = http_queue({url_of(mqd.port())});
  CHECK(without->produce_json("events", "1").status().code() == ErrorCode::kUnauthenticated);
  auto with = http_queue({url_of(mqd.port())}, "s3cret");
  produce_ok(*with, "1");
  auto consumer = open_consumer(*with, group_options("g"));
  auto got = receive_n(*consumer, 1);
  REQUIRE(got.size() == 1);
  CHECK(ack_ok(*with, got) == 1);
}

TEST_CASE("AnUnreachableBrokerIsUnavailableAndNamed") {
  const int port = free_port();
  auto queue = http_queue({url_of(port)});
  auto result = queue->produce_json("events", "1");
  CHECK(result.status().code() == ErrorCode::kUnavailable);
  CHECK(result.status().message().find(url_of(port)) != std::string::npos);
  // It comes up: the next call reaches it.
  RunningMqd mqd(RunningMqd::Env{{"PORT", std::to_string(port)}});
  CHECK(queue->produce_json("events", "1").ok());
}

TEST_CASE("BadAddressesAreRefused") {
  for (const char* addr :
       {"https://x:1", "http://x", "http://x:0", "http://x:1/path", "ftp://x:1", "http://:80"}) {
    CAPTURE(addr);
    HttpQueueOptions options;
    options.addrs = {addr};
    CHECK(Queue::http(options).status().code() == ErrorCode::kInvalidArgument);
  }
  HttpQueueOptions ok;
  ok.addrs = {"127.0.0.1:8080", "http://localhost:1/", "http://[::1]:8080"};
  CHECK(Queue::http(ok).ok());
}

TEST_CASE("BrokerAddrsThatTheClientCannotReachFallBackToTheAddressesItWasGiven") {
  // As with docker compose seen from the host: BROKER_ADDRS holds names only the brokers' network
  // resolves; the client lists every broker by an address it can reach.
  const int port0 = free_port();
  const int port1 = free_port();
  const std::string internal = url_of(free_port()) + "," + url_of(free_port());  // nothing listens there
  RunningMqd b0(broker_env(port0, 0, 2, internal));
  RunningMqd b1(broker_env(port1, 1, 2, internal));
  auto queue = http_queue({url_of(port0), url_of(port1)});
  for (std::uint32_t p = 0; p < 4; ++p) CHECK(produce_ok(*queue, "1", std::nullopt, p).partition == p);
  auto consumer = open_consumer(*queue, group_options("g"));
  auto got = receive_n(*consumer, 4);
  CHECK(got.size() == 4);
  CHECK(ack_ok(*queue, got) == 4);
}

TEST_CASE("ADeadLetterTopicOnOneBrokerIsFoundAndConsumedThroughAnotherBrokersAddress") {
  const int port0 = free_port();
  const int port1 = free_port();
  const std::string addrs = url_of(port0) + "," + url_of(port1);
  auto env0 = broker_env(port0, 0, 2, addrs);
  auto env1 = broker_env(port1, 1, 2, addrs);
  env0["MAX_DELIVERIES"] = env1["MAX_DELIVERIES"] = "1";
  RunningMqd b0(env0);
  RunningMqd b1(env1);
  auto queue = http_queue({url_of(port0)});
  produce_ok(*queue, "\"poison\"", std::nullopt, 1u);  // partition 1: broker 1
  {
    auto consumer = open_consumer(*queue, group_options("g"));
    auto got = receive_n(*consumer, 1);
    REQUIRE(got.size() == 1);
    REQUIRE(queue->nack(got[0]).ok());  // its first and last delivery: dead-lettered on broker 1
  }
  // Only broker 1 has events-dlq; the queue asks broker 0 first and must still find it, and the
  // stream to broker 0 (404 there) must not end the consumer.
  auto fresh = http_queue({url_of(port0)});
  auto dead = open_consumer(*fresh, group_options("g"), "events-dlq");
  auto got = receive_n(*dead, 1);
  REQUIRE(got.size() == 1);
  CHECK(got[0].payload == "\"poison\"");
  CHECK(got[0].partition == 1);
  CHECK(ack_ok(*fresh, got) == 1);
}

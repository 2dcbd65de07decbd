// Three mqd brokers splitting a topic, used through the HTTP Queue given one address: every partition
// reaches its owner, one consumer per broker reads it all back, and a broker that goes down takes
// only its own partitions with it, losing nothing.
#include <doctest/doctest.h>

#include <filesystem>
#include <map>
#include <set>

#include "queue_backends.h"

using namespace mq;
using namespace mq::testing;
using namespace std::chrono_literals;

namespace {

constexpr std::uint32_t kBrokers = 3;
constexpr std::uint32_t kPartitions = 6;

// Three brokers on free ports, each knowing all three addresses.
struct ThreeBrokers {
  ThreeBrokers() {
    std::string addrs;
    for (std::uint32_t i = 0; i < kBrokers; ++i) {
      ports.push_back(free_port());
      addrs += (i ? "," : "") + url_of(ports.back());
    }
    for (std::uint32_t i = 0; i < kBrokers; ++i) {
      brokers.push_back(
          std::make_unique<RunningMqd>(RunningMqd::Env{{"PORT", std::to_string(ports[i])},
                                                       {"BROKER_INDEX", std::to_string(i)},
                                                       {"BROKER_COUNT", std::to_string(kBrokers)},
                                                       {"BROKER_ADDRS", addrs},
                                                       {"TOPICS", "events:6"},
                                                       {"FSYNC", "always"}}));
    }
  }
  std::unique_ptr<Queue> queue(int broker_given) const {
    HttpQueueOptions options;
    options.addrs = {url_of(ports[broker_given])};
    options.reconnect_backoff_max = 500ms;  // a restarted broker is found again quickly
    auto queue = Queue::http(options);
    REQUIRE_MESSAGE(queue.ok(), queue.status().to_string());
    return std::move(queue).value();
  }
  bool has_log(std::uint32_t broker, std::uint32_t partition) const {
    return std::filesystem::exists(brokers[broker]->data_dir() + "/events/partition-" +
                                   std::to_string(partition) + ".log");
  }
  std::vector<int> ports;
  std::vector<std::unique_ptr<RunningMqd>> brokers;
};

std::vector<std::uint32_t> owned_by(std::uint32_t broker) {
  std::vector<std::uint32_t> owned;
  for (std::uint32_t p = 0; p < kPartitions; ++p) {
    if (p % kBrokers == broker) owned.push_back(p);
  }
  return owned;
}

}  // namespace

TEST_CASE("ThreeBrokersSplitATopicAndAQueueGivenOneAddressReachesEveryPartition") {
  ThreeBrokers cluster;
  auto queue = cluster.queue(2);
  std::multiset<std::string> sent;
  for (std::uint32_t p = 0; p < kPartitions; ++p) {
    for (int i = 0; i < 3; ++i) {
      const std::string payload = "{\"p\":" + std::to_string(p) + ",\"i\":" + std::to_string(i) + "}";
      CHECK(produce_ok(*queue, payload, std::nullopt, p).partition == p);
      sent.insert(payload);
    }
  }
  for (int i = 0; i < 12; ++i) {
    const std::string payload = "{\"k\":" + std::to_string(i) + "}";
    auto produced = produce_ok(*queue, payload, "key-" + std::to_string(i));
    CHECK(produced.partition == partition_for_key("key-" + std::to_string(i), kPartitions));
    sent.insert(payload);
  }
  for (std::uint32_t p = 0; p < kPartitions; ++p) {
    CAPTURE(p);
    for (std::uint32_t b = 0; b < kBrokers; ++b) CHECK(cluster.has_log(b, p) == (p % kBrokers == b));
  }
  // One consumer per broker, each on the partitions that broker owns.
  std::multiset<std::string> received;
  for (std::uint32_t b = 0; b < kBrokers; ++b) {
    ConsumeOptions options = group_options("readers");
    options.partitions = owned_by(b);
    auto consumer = open_consumer(*queue, options);
    std::size_t expected = 0;
    for (const auto& payload : sent) {
      const auto json = nlohmann::json::parse(payload);
      const std::uint32_t p =
          json.contains("p") ? json["p"].get<std::uint32_t>()
                             : partition_for_key("key-" + std::to_string(json["k"].get<int>()), kPartitions);
      if (p % kBrokers == b) ++expected;
    }
    auto got = receive_n(*consumer, expected);
    CHECK(got.size() == expected);
    for (const auto& m : got) {
      CHECK(m.partition % kBrokers == b);
      received.insert(m.payload);
    }
    CHECK(ack_ok(*queue, got) == got.size());
    CHECK(receive_for(*consumer, 200ms).empty());
  }
  CHECK(received == sent);
}

TEST_CASE("ABrokerDownFailsOnlyItsPartitionsNamingItAndLosesNothingWhenItReturns") {
  ThreeBrokers cluster;
  auto queue = cluster.queue(0);
  auto consumer = open_consumer(*queue, group_options("g", 100, 60s));
  // Before: one message per partition, all received; those of broker 1 are left unacknowledged.
  for (std::uint32_t p = 0; p < kPartitions; ++p)
    produce_ok(*queue, "\"before-" + std::to_string(p) + "\"", std::nullopt, p);
  auto before = receive_n(*consumer, kPartitions);
  REQUIRE(before.size() == kPartitions);
  std::vector<ReceivedMessage> others;
  std::set<std::string> held_by_down;
  for (const auto& m : before) {
    if (m.partition % kBrokers == 1) {
      held_by_down.insert(m.payload);
    } else {
      others.push_back(m);
    }
  }
  CHECK(ack_ok(*queue, others) == others.size());

  cluster.brokers[1]->stop(SIGKILL);
  for (std::uint32_t p : owned_by(1)) {
    CAPTURE(p);
    const Message m{*Payload::parse("1"), std::nullopt};
    auto refused = queue->produce("events", m, p);
    CHECK(refused.status().code() == ErrorCode::kUnavailable);
    const std::string& why = refused.status().message();
    CHECK(why.find("broker 1") != std::string::npos);
    CHECK(why.find(url_of(cluster.ports[1])) != std::string::npos);
    CHECK(why.find("cannot be reached") != std::string::npos);
  }
  // The other brokers' partitions keep working: explicit, keyless (which skips the dead broker's
  // partitions) and consumed by the same consumer.
  std::set<std::string> during;
  for (std::uint32_t p : {0u, 2u, 3u, 5u}) {
    produce_ok(*queue, "\"during-" + std::to_string(p) + "\"", std::nullopt, p);
    during.insert("\"during-" + std::to_string(p) + "\"");
  }
  for (int i = 0; i < 20; ++i) {
    auto produced = produce_ok(*queue, "\"keyless-" + std::to_string(i) + "\"");
    CHECK(produced.partition % kBrokers != 1);
    during.insert("\"keyless-" + std::to_string(i) + "\"");
  }
  auto got_during = receive_n(*consumer, during.size());
  CHECK(payloads_of(got_during) == std::multiset<std::string>(during.begin(), during.end()));
  CHECK(ack_ok(*queue, got_during) == during.size());

  // Back: its partitions resume; what it held unacknowledged is delivered again, and new messages flow.
  cluster.brokers[1]->start();
  std::set<std::string> after;
  for (std::uint32_t p : owned_by(1)) {
    produce_ok(*queue, "\"after-" + std::to_string(p) + "\"", std::nullopt, p);
    after.insert("\"after-" + std::to_string(p) + "\"");
  }
  std::set<std::string> expected = after;
  expected.insert(held_by_down.begin(), held_by_down.end());
  auto got_after = receive_n(*consumer, expected.size());
  CHECK(payloads_of(got_after) == std::multiset<std::string>(expected.begin(), expected.end()));
  CHECK(ack_ok(*queue, got_after) == expected.size());
}

TEST_CASE("StatsOfATopicOnlySomeBrokersHaveAreThoseBrokersPartitions") {
  // As a dead-letter topic, which a broker creates at its own first dead letter: the others answer
  // 404 for it meanwhile, which must not fail the whole call.
  const int port0 = free_port();
  const int port1 = free_port();
  const std::string addrs = url_of(port0) + "," + url_of(port1);
  RunningMqd b0(RunningMqd::Env{{"PORT", std::to_string(port0)},
                                {"BROKER_INDEX", "0"},
                                {"BROKER_COUNT", "2"},
                                {"BROKER_ADDRS", addrs},
                                {"TOPICS", "events:2,extra:2"}});
  RunningMqd b1(RunningMqd::Env{{"PORT", std::to_string(port1)},
                                {"BROKER_INDEX", "1"},
                                {"BROKER_COUNT", "2"},
                                {"BROKER_ADDRS", addrs},
                                {"TOPICS", "events:2"}});
  HttpQueueOptions options;
  options.addrs = {url_of(port1)};
  auto queue = Queue::http(options);
  REQUIRE(queue.ok());
  auto stats = (*queue)->stats("extra");
  REQUIRE_MESSAGE(stats.ok(), stats.status().to_string());
  REQUIRE(stats->size() == 1);
  REQUIRE((*stats)[0].partitions.size() == 1);
  CHECK((*stats)[0].partitions[0].partition == 0);
  auto both = (*queue)->stats("events");
  REQUIRE(both.ok());
  CHECK((*both)[0].partitions.size() == 2);
  CHECK((*queue)->stats("nowhere").status().code() == ErrorCode::kNotFound);
}

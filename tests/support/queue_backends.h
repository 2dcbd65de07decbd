// The three Queue backends as test fixtures, each on its own fresh server: a Broker in this process,
// a real mqd, a real redis-server. Every fixture serves the topic "events" with 4 partitions.
#pragma once

#include <doctest/doctest.h>

#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "broker_helpers.h"
#include "mq/queue.h"
#include "running_mqd.h"
#include "running_redis.h"
#include "temp_dir.h"

namespace mq::testing {

inline constexpr std::uint32_t kTestPartitions = 4;

// The base URL of a server on 127.0.0.1:`port`.
inline std::string url_of(int port) { return "http://127.0.0.1:" + std::to_string(port); }

struct InProcessBackend {
  static constexpr const char* kName = "in-process";
  InProcessBackend() : broker(open_broker(broker_config(dir.path(), "events:4"))) {}
  std::unique_ptr<Queue> queue() { return Queue::in_process(broker); }
  TempDir dir;
  std::shared_ptr<Broker> broker;
};

struct HttpBackend {
  static constexpr const char* kName = "http";
  std::unique_ptr<Queue> queue() {
    HttpQueueOptions options;
    options.addrs = {url_of(mqd.port())};
    auto queue = Queue::http(options);
    REQUIRE_MESSAGE(queue.ok(), queue.status().to_string());
    return std::move(queue).value();
  }
  RunningMqd mqd{{{"TOPICS", "events:4"}}};
};

struct RedisBackend {
  static constexpr const char* kName = "redis";
  std::unique_ptr<Queue> queue() {
    RedisQueueOptions options;
    options.port = static_cast<std::uint16_t>(redis.port());
    options.partitions = kTestPartitions;
    auto queue = Queue::redis(options);
    REQUIRE_MESSAGE(queue.ok(), queue.status().to_string());
    return std::move(queue).value();
  }
  RunningRedis redis;
};

inline std::unique_ptr<Consumer> open_consumer(Queue& queue, ConsumeOptions options,
                                               const std::string& topic = "events") {
  auto consumer = queue.consume(topic, options);
  REQUIRE_MESSAGE(consumer.ok(), consumer.status().to_string());
  return std::move(consumer).value();
}

inline ConsumeOptions group_options(
    std::string group, std::size_t max_inflight = 100,
    std::optional<std::chrono::milliseconds> visibility_timeout = std::nullopt) {
  ConsumeOptions options;
  options.group = std::move(group);
  options.max_inflight = max_inflight;
  options.visibility_timeout = visibility_timeout;
  return options;
}

// Receives until `count` messages arrived in all or `timeout` passed (each receive waits for the
// next message: no sleeping).
inline std::vector<ReceivedMessage> receive_n(Consumer& consumer, std::size_t count,
                                              std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  std::vector<ReceivedMessage> all;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (all.size() < count) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    auto got = consumer.receive(count - all.size(), left);
    REQUIRE_MESSAGE(got.ok(), got.status().to_string());
    for (auto& m : *got) all.push_back(std::move(m));
  }
  return all;
}

// Receives for `quiet` with nothing expected; returns what came anyway.
inline std::vector<ReceivedMessage> receive_for(Consumer& consumer, std::chrono::milliseconds quiet) {
  auto got = consumer.receive(1000, quiet);
  REQUIRE_MESSAGE(got.ok(), got.status().to_string());
  return std::move(got).value();
}

inline ProduceResult produce_ok(Queue& queue, const std::string& payload,
                                std::optional<std::string> key = std::nullopt,
                                std::optional<std::uint32_t> partition = std::nullopt,
                                const std::string& topic = "events") {
  auto parsed = Payload::parse(payload);
  REQUIRE_MESSAGE(parsed.ok(), parsed.status().to_string());
  auto result = queue.produce(topic, Message{std::move(parsed).value(), std::move(key)}, partition);
  REQUIRE_MESSAGE(result.ok(), result.status().to_string());
  return std::move(result).value();
}

inline std::size_t ack_ok(Queue& queue, const std::vector<ReceivedMessage>& messages) {
  auto acked = queue.ack(messages);
  REQUIRE_MESSAGE(acked.ok(), acked.status().to_string());
  return *acked;
}

inline std::multiset<std::string> payloads_of(const std::vector<ReceivedMessage>& messages) {
  std::multiset<std::string> out;
  for (const auto& m : messages) out.insert(m.payload);
  return out;
}

}  // namespace mq::testing

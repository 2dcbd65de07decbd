// Conveniences for tests of the Broker and consumer groups.
#pragma once

#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "manual_clock.h"
#include "mq/mq.h"
#include "store_helpers.h"

namespace mq::testing {

inline Config broker_config(const std::string& dir, const std::string& topics = "events:2") {
  Config config;
  config.store.data_dir = dir;
  config.store.fsync = FsyncMode::kNever;
  config.topics = *parse_topics(topics);
  return config;
}

inline std::unique_ptr<Broker> open_broker(const Config& config, std::shared_ptr<Clock> clock = nullptr) {
  auto broker = Broker::open(config, std::move(clock));
  REQUIRE_MESSAGE(broker.ok(), broker.status().to_string());
  return std::move(broker.value());
}

// Produces payloads {"n": first..first+count-1} one by one to `partition`.
inline void produce_numbers(Broker& broker, int count, int first = 0, std::uint32_t partition = 0,
                            const std::string& topic = "events") {
  for (int n = first; n < first + count; ++n) {
    auto result =
        broker.produce(topic, std::vector<Message>{message("{\"n\":" + std::to_string(n) + "}")}, partition);
    REQUIRE_MESSAGE(result.ok(), result.status().to_string());
  }
}

inline std::unique_ptr<Subscription> subscribe(Broker& broker, const std::string& group,
                                               SubscribeOptions options = {}, std::uint32_t partition = 0,
                                               const std::string& topic = "events") {
  auto sub = broker.subscribe(topic, partition, group, options);
  REQUIRE_MESSAGE(sub.ok(), sub.status().to_string());
  return std::move(sub.value());
}

// Takes what is deliverable now (no waiting).
inline std::vector<Delivery> take_now(Subscription& sub, std::size_t max = 1000) {
  auto deliveries = sub.next(max, std::chrono::milliseconds(0));
  REQUIRE_MESSAGE(deliveries.ok(), deliveries.status().to_string());
  return std::move(deliveries.value());
}

inline int number_of(const Delivery& d) { return nlohmann::json::parse(d.record)["payload"]["n"].get<int>(); }

inline std::vector<std::uint64_t> offsets_of(const std::vector<Delivery>& deliveries) {
  std::vector<std::uint64_t> offsets;
  for (const auto& d : deliveries) offsets.push_back(d.offset);
  return offsets;
}

inline std::size_t ack_all(Broker& broker, const std::vector<Delivery>& deliveries, const std::string& group,
                           std::uint32_t partition = 0, const std::string& topic = "events") {
  std::vector<std::string> ids;
  for (const auto& d : deliveries) ids.push_back(d.id);
  if (ids.empty()) return 0;
  auto acked = broker.ack(topic, partition, group, ids);
  REQUIRE_MESSAGE(acked.ok(), acked.status().to_string());
  return *acked;
}

}  // namespace mq::testing

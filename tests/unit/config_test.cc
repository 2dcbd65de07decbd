// Configuration from the environment: defaults, every variable, and errors that name the variable.
#include <doctest/doctest.h>

#include <map>

#include "mq/options.h"

using namespace mq;

namespace {
EnvLookup env(std::map<std::string, std::string, std::less<>> vars) {
  return [vars = std::move(vars)](std::string_view name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}
}  // namespace

TEST_CASE("DefaultsMatchTheApiContract") {
  auto config = config_from_env(env({}));
  REQUIRE(config.ok());
  CHECK(config->store.data_dir == "./data");
  CHECK(config->store.fsync == FsyncMode::kAlways);
  CHECK(config->store.fsync_interval == std::chrono::milliseconds(100));
  CHECK(config->store.max_payload_bytes == 1048576);
  CHECK(config->groups.visibility_timeout == std::chrono::milliseconds(30000));
  CHECK(config->groups.max_deliveries == 0);
  CHECK(config->broker.index == 0);
  CHECK(config->broker.count == 1);
  REQUIRE(config->topics.size() == 3);
  CHECK(config->topics[0].name == "events");
  CHECK(config->topics[0].partitions == 8);
  CHECK(config->topics[1].name == "orders");
  CHECK(config->topics[1].partitions == 4);
  CHECK(config->topics[2].name == "default");
  CHECK(config->store.segment_bytes == 134217728u);
  CHECK(config->retention.bytes == 0u);
  CHECK(config->retention.time == std::chrono::milliseconds(0));
  CHECK_FALSE(config->retention.acked);
  CHECK(config->retention.check_interval == std::chrono::milliseconds(1000));
  CHECK_FALSE(config->topics[0].settings.segment_bytes.has_value());
}

TEST_CASE("TheLogsLifeIsConfiguredGloballyAndPerTopic") {
  auto config = config_from_env(
      env({{"SEGMENT_BYTES", "1048576"},
           {"RETENTION_BYTES", "1073741824"},
           {"RETENTION_MS", "86400000"},
           {"RETENTION_ACKED", "true"},
           {"RETENTION_CHECK_MS", "250"},
           {"TOPICS",
            "events:8,audit:4:retention_ms=604800000,jobs:8:retention_acked=false:segment_bytes=16777216:"
            "retention_bytes=0"}}));
  REQUIRE_MESSAGE(config.ok(), config.status().to_string());
  CHECK(config->store.segment_bytes == 1048576u);
  CHECK(config->retention.bytes == 1073741824u);
  CHECK(config->retention.time == std::chrono::milliseconds(86400000));
  CHECK(config->retention.acked);
  CHECK(config->retention.check_interval == std::chrono::milliseconds(250));
  REQUIRE(config->topics.size() == 3);
  CHECK_FALSE(config->topics[0].settings.retention_time.has_value());
  CHECK(config->topics[1].partitions == 4u);
  CHECK(config->topics[1].settings.retention_time == std::chrono::milliseconds(604800000));
  CHECK(config->topics[2].settings.retention_acked == false);
  CHECK(config->topics[2].settings.segment_bytes == 16777216u);
  CHECK(config->topics[2].settings.retention_bytes == 0u);
}

TEST_CASE("EveryVariableIsRead") {
  auto config = config_from_env(env({{"TOPICS", "a:1,b.c_d-e:16"},
                                     {"DATA_DIR", "/var/lib/mq"},
                                     {"BROKER_INDEX", "2"},
                                     {"BROKER_COUNT", "3"},
                                     {"FSYNC", "interval"},
                                     {"FSYNC_INTERVAL_MS", "250"},
                                     {"MAX_PAYLOAD_BYTES", "4096"},
                                     {"VISIBILITY_TIMEOUT_MS", "1500"},
                                     {"MAX_DELIVERIES", "5"}}));
  REQUIRE_MESSAGE(config.ok(), config.status().to_string());
  CHECK(config->topics.size() == 2);
  CHECK(config->topics[1].name == "b.c_d-e");
  CHECK(config->topics[1].partitions == 16);
  CHECK(config->store.data_dir == "/var/lib/mq");
  CHECK(config->broker.index == 2);
  CHECK(config->broker.count == 3);
  CHECK(config->broker.owns(5));
  CHECK_FALSE(config->broker.owns(4));
  CHECK(config->store.fsync == FsyncMode::kInterval);
  CHECK(config->store.fsync_interval == std::chrono::milliseconds(250));
  CHECK(config->store.max_payload_bytes == 4096);
  CHECK(config->groups.visibility_timeout == std::chrono::milliseconds(1500));
  CHECK(config->groups.max_deliveries == 5);
  CHECK(config_from_env(env({{"FSYNC", "never"}}))->store.fsync == FsyncMode::kNever);
}

TEST_CASE("BadValuesNameTheVariableAndTheValue") {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"TOPICS", ""},
      {"TOPICS", "events"},
      {"TOPICS", "events:0"},
      {"TOPICS", "events:x"},
      {"TOPICS", "../etc:1"},
      {"TOPICS", "a:1,a:2"},
      {"TOPICS", "a:1,"},
      {"TOPICS", "a:99999999"},
      {"BROKER_COUNT", "0"},
      {"BROKER_COUNT", "-1"},
      {"BROKER_INDEX", "abc"},
      {"BROKER_INDEX", "1"},
      {"FSYNC", "sometimes"},
      {"FSYNC", "ALWAYS"},
      {"FSYNC_INTERVAL_MS", "0"},
      {"FSYNC_INTERVAL_MS", "10ms"},
      {"MAX_PAYLOAD_BYTES", ""},
      {"DATA_DIR", ""},
      {"BROKER_INDEX", " 0"},
      {"VISIBILITY_TIMEOUT_MS", "0"},
      {"VISIBILITY_TIMEOUT_MS", "soon"},
      {"MAX_DELIVERIES", "-1"},
      {"SEGMENT_BYTES", "1023"},
      {"SEGMENT_BYTES", "1MB"},
      {"RETENTION_BYTES", "-1"},
      {"RETENTION_MS", "a day"},
      {"RETENTION_ACKED", "yes"},
      {"RETENTION_CHECK_MS", "0"},
      {"TOPICS", "a:1:"},
      {"TOPICS", "a:1:colour=blue"},
      {"TOPICS", "a:1:segment_bytes"},
      {"TOPICS", "a:1:segment_bytes=100"},
      {"TOPICS", "a:1:retention_ms=-5"},
      {"TOPICS", "a:1:retention_acked=1"},
      {"TOPICS", "a:1:retention_bytes=1:retention_bytes=2"},
      {"TOPICS", "a:x:retention_ms=5"},
  };
  for (const auto& entry : bad) {
    const auto& name = entry.first;  // not a structured binding: CAPTURE captures it
    const auto& value = entry.second;
    CAPTURE(name);
    CAPTURE(value);
    auto config = config_from_env(env({{name, value}}));
    REQUIRE_FALSE(config.ok());
    CHECK(config.status().code() == ErrorCode::kInvalidArgument);
    const std::string& message = config.status().message();
    CHECK(message.find(name) != std::string::npos);
    CHECK(message.find("'" + value + "'") != std::string::npos);
  }
}

TEST_CASE("BrokerIndexMustBeBelowBrokerCount") {
  CHECK(config_from_env(env({{"BROKER_INDEX", "1"}, {"BROKER_COUNT", "2"}})).ok());
  auto config = config_from_env(env({{"BROKER_INDEX", "2"}, {"BROKER_COUNT", "2"}}));
  REQUIRE_FALSE(config.ok());
  CHECK(config.status().message().find("BROKER_INDEX") != std::string::npos);
}

TEST_CASE("NamesFollowTheContract") {
  for (const char* good : {"a", "A9", "events", "orders-dlq", "x.y_z-1", "0"}) CHECK(is_valid_name(good));
  for (const char* bad : {"", ".", "..", "a/b", "-a", "_a", ".a", "a b", "a\n", "é"}) {
    CAPTURE(bad);
    CHECK_FALSE(is_valid_name(bad));
  }
  CHECK(is_valid_name(std::string(128, 'a')));
  CHECK_FALSE(is_valid_name(std::string(129, 'a')));
}

TEST_CASE("BrokerIndexAutoTakesTheOrdinalOfAStatefulSetPodsHostName") {
  auto host = [](std::optional<std::string> name) { return [name] { return name; }; };
  auto config = config_from_env(env({{"BROKER_INDEX", "auto"}, {"BROKER_COUNT", "3"}}), host("mq-2"));
  REQUIRE_MESSAGE(config.ok(), config.status().to_string());
  CHECK(config->broker.index == 2);
  CHECK(config->broker.count == 3);
  CHECK(config_from_env(env({{"BROKER_INDEX", "auto"}, {"BROKER_COUNT", "2"}}),
                        host("my-queue-0.mq.default.svc"))
            ->broker.index == 0);
  for (std::string bad : {"mq", "mq-", "mq-x", "mq-2a", "", "mq-+1"}) {
    CAPTURE(bad);
    auto refused = config_from_env(env({{"BROKER_INDEX", "auto"}, {"BROKER_COUNT", "4"}}), host(bad));
    CHECK(refused.status().code() == ErrorCode::kInvalidArgument);
    CHECK(refused.status().message().find("BROKER_INDEX") != std::string::npos);
  }
  // The ordinal must still be below BROKER_COUNT: a fourth pod of a three-broker set is refused.
  auto beyond = config_from_env(env({{"BROKER_INDEX", "auto"}, {"BROKER_COUNT", "3"}}), host("mq-3"));
  CHECK(beyond.status().code() == ErrorCode::kInvalidArgument);
  CHECK(beyond.status().message().find("BROKER_COUNT") != std::string::npos);
  CHECK_FALSE(broker_index_from_host_name(std::nullopt).ok());
  CHECK(system_host_name().has_value());
}

// Configuration from the environment: parse_topics on the whole input, then config_from_env (libmq)
// and daemon_config_from_env (mqd) with one variable set to a fuzzed value (the rest unset) and a
// fuzzed host name for BROKER_INDEX=auto. Accepted topics must be valid and unique; an error must be a
// kInvalidArgument that names the variable.
#include <fuzzer/FuzzedDataProvider.h>

#include <set>

#include "daemon_config.h"
#include "fuzz_support.h"
#include "mq/options.h"

namespace {

constexpr std::string_view kVariables[] = {
    "TOPICS",
    "DATA_DIR",
    "BROKER_INDEX",
    "BROKER_COUNT",
    "FSYNC",
    "FSYNC_INTERVAL_MS",
    "MAX_PAYLOAD_BYTES",
    "VISIBILITY_TIMEOUT_MS",
    "MAX_DELIVERIES",
    "RECOVERY",
    "PORT",
    "HOST",
    "BROKER_ADDRS",
    "MAX_BODY_BYTES",
    "MAX_CONNECTIONS",
    "AUTH_TOKEN",
    "HEARTBEAT_MS",
    "REQUEST_TIMEOUT_MS",
    "TLS_CERT_FILE",
    "TLS_KEY_FILE",
};

void check_topics(std::string_view value) {
  auto topics = mq::parse_topics(value);
  if (!topics.ok()) {
    FUZZ_CHECK(topics.status().code() == mq::ErrorCode::kInvalidArgument, "a bad TOPICS is invalid_argument");
    return;
  }
  FUZZ_CHECK(!topics->empty(), "TOPICS names at least one topic");
  std::set<std::string> names;
  std::string again;
  for (const auto& topic : *topics) {
    FUZZ_CHECK(mq::is_valid_name(topic.name), "topic names are valid");
    FUZZ_CHECK(topic.partitions >= 1 && topic.partitions <= 65536, "partition counts in [1, 65536]");
    FUZZ_CHECK(names.insert(topic.name).second, "topic names are unique");
    if (!again.empty()) again += ',';
    again += topic.name + ":" + std::to_string(topic.partitions);
  }
  auto reparsed = mq::parse_topics(again);
  FUZZ_CHECK(reparsed.ok() && reparsed->size() == topics->size(), "accepted topics written out parse again");
  for (std::size_t i = 0; i < topics->size(); ++i) {
    FUZZ_CHECK(
        (*reparsed)[i].name == (*topics)[i].name && (*reparsed)[i].partitions == (*topics)[i].partitions,
        "accepted topics written out parse to the same topics");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  check_topics(mq::fuzzing::as_text(data, size));

  FuzzedDataProvider input(data, size);
  const std::string_view variable =
      kVariables[input.ConsumeIntegralInRange<std::size_t>(0, std::size(kVariables) - 1)];
  const std::string host = input.ConsumeRandomLengthString(300);
  const std::string value = input.ConsumeRemainingBytesAsString();
  const mq::EnvLookup lookup = [&](std::string_view name) -> std::optional<std::string> {
    if (name == variable) return value;
    return std::nullopt;
  };

  auto config = mq::config_from_env(lookup, [&] { return std::optional<std::string>(host); });
  if (config.ok()) {
    if (variable == "TOPICS") {
      auto topics = mq::parse_topics(value);
      FUZZ_CHECK(topics.ok() && topics->size() == config->topics.size(), "TOPICS is read by parse_topics");
    }
    FUZZ_CHECK(config->broker.count >= 1 && config->broker.index < config->broker.count,
               "a broker index is below the count");
    FUZZ_CHECK(!config->store.data_dir.empty(), "DATA_DIR is never empty");
  } else {
    FUZZ_CHECK(config.status().code() == mq::ErrorCode::kInvalidArgument,
               "a bad variable is invalid_argument");
    FUZZ_CHECK(config.status().message().find(variable) != std::string::npos, "the error names the variable");
  }

  auto daemon = mqd::daemon_config_from_env(lookup);
  if (!daemon.ok()) {
    FUZZ_CHECK(daemon.status().code() == mq::ErrorCode::kInvalidArgument,
               "a bad variable is invalid_argument");
    FUZZ_CHECK(daemon.status().message().find(variable) != std::string::npos, "the error names the variable");
  }
  return 0;
}

// Queue::from_env's reading of the environment: USE_HTTP_QUEUE picks the backend, every other
// variable is checked, and a bad value is an error that names the variable.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <vector>

#include "mq/queue.h"

using namespace mq;

namespace {

EnvLookup env(std::map<std::string, std::string> values) {
  return [values = std::move(values)](std::string_view name) -> std::optional<std::string> {
    auto it = values.find(std::string(name));
    if (it == values.end()) return std::nullopt;
    return it->second;
  };
}

Status error_of(std::map<std::string, std::string> values) {
  return queue_settings_from_env(env(std::move(values))).status();
}

}  // namespace

TEST_CASE("UseHttpQueueChoosesTheBackendAndATypoIsAnError") {
  for (const char* yes : {"true", "1", "yes", "on", "TRUE", "On"}) {
    CAPTURE(yes);
    auto s = queue_settings_from_env(env({{"USE_HTTP_QUEUE", yes}}));
    REQUIRE(s.ok());
    CHECK(s->backend == QueueSettings::Backend::kHttp);
  }
  for (const char* no : {"false", "0", "no", "off", "", "FALSE"}) {
    CAPTURE(no);
    auto s = queue_settings_from_env(env({{"USE_HTTP_QUEUE", no}}));
    REQUIRE(s.ok());
    CHECK(s->backend == QueueSettings::Backend::kRedis);
  }
  CHECK(queue_settings_from_env(env({}))->backend == QueueSettings::Backend::kRedis);
  for (const char* typo : {"ture", "2", "y", "enabled"}) {
    CAPTURE(typo);
    const Status s = error_of({{"USE_HTTP_QUEUE", typo}});
    CHECK(s.code() == ErrorCode::kInvalidArgument);
    CHECK(s.message().find("USE_HTTP_QUEUE") != std::string::npos);
  }
}

TEST_CASE("TheDefaultsServeALocalMqdOrRedis") {
  auto s = queue_settings_from_env(env({}));
  REQUIRE(s.ok());
  CHECK(s->http.addrs == std::vector<std::string>{"http://127.0.0.1:8080"});
  CHECK(s->redis.host == "127.0.0.1");
  CHECK(s->redis.port == 6379);
  CHECK(s->redis.partitions == 1);
  CHECK(s->http.producer.linger == ProducerOptions{}.linger);  // unset: the library's defaults
  CHECK(s->redis.producer.batch_max_messages == ProducerOptions{}.batch_max_messages);
  CHECK(s->topic == "events");
  CHECK(s->group == "default");
  CHECK(is_valid_name(s->producer_name));  // "<host>-<pid>"
}

TEST_CASE("MsgQueueVariablesAreRead") {
  auto s = queue_settings_from_env(env({{"USE_HTTP_QUEUE", "1"},
                                        {"MSG_QUEUE_ADDR", "http://a:1, http://b:2/"},
                                        {"MSG_QUEUE_TOPIC", "orders"},
                                        {"MSG_QUEUE_GROUP", "billing"},
                                        {"MSG_QUEUE_PRODUCER_NAME", "svc-7"},
                                        {"MSG_QUEUE_TOKEN", "t"},
                                        {"MSG_QUEUE_PARTITIONS", "8"},
                                        {"MSG_QUEUE_LINGER_MS", "5"},
                                        {"MSG_QUEUE_BATCH_MAX_MESSAGES", "200"},
                                        {"MSG_QUEUE_BATCH_MAX_BYTES", " 65536 "}}));
  REQUIRE_MESSAGE(s.ok(), s.status().to_string());
  for (const ProducerOptions& producer : {s->http.producer, s->redis.producer}) {
    CHECK(producer.linger == std::chrono::milliseconds(5));
    CHECK(producer.batch_max_messages == 200);
    CHECK(producer.batch_max_bytes == 65536);
  }
  CHECK(s->http.addrs == std::vector<std::string>{"http://a:1", "http://b:2/"});
  CHECK(s->topic == "orders");
  CHECK(s->group == "billing");
  CHECK(s->producer_name == "svc-7");
  CHECK(s->http.auth_token == "t");
  CHECK(s->redis.partitions == 8);
}

TEST_CASE("RedisUrlWinsOverRedisAddr") {
  auto s =
      queue_settings_from_env(env({{"REDIS_URL", "redis://:pw@cache:6380/2"}, {"REDIS_ADDR", "other:1"}}));
  REQUIRE_MESSAGE(s.ok(), s.status().to_string());
  CHECK(s->redis.host == "cache");
  CHECK(s->redis.port == 6380);
  CHECK(s->redis.password == "pw");
  CHECK(s->redis.username.empty());
  CHECK(s->redis.db == 2);
  auto user = queue_settings_from_env(env({{"REDIS_URL", "redis://app:pw@cache"}}));
  REQUIRE(user.ok());
  CHECK(user->redis.username == "app");
  CHECK(user->redis.port == 6379);
  auto addr = queue_settings_from_env(env({{"REDIS_ADDR", "10.0.0.5:7000"}}));
  REQUIRE(addr.ok());
  CHECK(addr->redis.host == "10.0.0.5");
  CHECK(addr->redis.port == 7000);
  auto v6 = queue_settings_from_env(env({{"REDIS_ADDR", "[::1]:7001"}}));
  REQUIRE(v6.ok());
  CHECK(v6->redis.host == "::1");
}

TEST_CASE("BadValuesAreErrorsNamingTheVariable") {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"MSG_QUEUE_ADDR", "ftp://files:21"},
      {"MSG_QUEUE_ADDR", "http://host"},
      {"MSG_QUEUE_ADDR", "http://::1:8080"},
      {"MSG_QUEUE_ADDR", "http://h:99999"},
      {"MSG_QUEUE_TOPIC", "a/b"},
      {"MSG_QUEUE_TOPIC", ""},
      {"MSG_QUEUE_GROUP", "has space"},
      {"MSG_QUEUE_PRODUCER_NAME", ".x"},
      {"MSG_QUEUE_PARTITIONS", "0"},
      {"MSG_QUEUE_PARTITIONS", "four"},
      {"MSG_QUEUE_LINGER_MS", "-1"},
      {"MSG_QUEUE_LINGER_MS", "60001"},
      {"MSG_QUEUE_BATCH_MAX_MESSAGES", "0"},
      {"MSG_QUEUE_BATCH_MAX_BYTES", "1k"},
      {"MSG_QUEUE_BATCH_MAX_BYTES", "8388609"},  // over 8 MiB
      {"REDIS_URL", "http://h:1"},
      {"REDIS_URL", "redis://h:port"},
      {"REDIS_URL", "redis://h:1/db"},
      {"REDIS_ADDR", "h:0"},
      {"REDIS_ADDR", ":6379"},
      {"REDIS_URL", "redis://:p%4@cache"},
      {"MSG_QUEUE_CA_FILE", "/nonexistent/ca.pem"},
  };
  for (const auto& entry : bad) {
    const auto& name = entry.first;  // not a structured binding: CAPTURE captures it
    const auto& value = entry.second;
    CAPTURE(name);
    CAPTURE(value);
    const Status s = error_of({{name, value}});
    CHECK(s.code() == ErrorCode::kInvalidArgument);
    CHECK(s.message().find(name) != std::string::npos);
  }
}

TEST_CASE("FromEnvOpensTheChosenBackendWithoutContactingIt") {
  auto http = Queue::from_env(env({{"USE_HTTP_QUEUE", "yes"}, {"MSG_QUEUE_ADDR", "http://127.0.0.1:1"}}));
  REQUIRE_MESSAGE(http.ok(), http.status().to_string());
  CHECK(http->queue->backend_name() == "http");
  auto redis = Queue::from_env(env({{"REDIS_ADDR", "127.0.0.1:1"}}));
  REQUIRE_MESSAGE(redis.ok(), redis.status().to_string());
  CHECK(redis->queue->backend_name() == "redis");
  CHECK(Queue::from_env(env({{"USE_HTTP_QUEUE", "maybe"}})).status().code() == ErrorCode::kInvalidArgument);
}

TEST_CASE("IPv6RedisAddressesParse") {
  for (const auto& entry : std::vector<std::pair<std::string, int>>{{"::1", 6379}, {"[::1]:6380", 6380}}) {
    const auto& addr = entry.first;  // not a structured binding: CAPTURE captures it
    const auto& port = entry.second;
    CAPTURE(addr);
    auto s = queue_settings_from_env(env({{"REDIS_ADDR", addr}}));
    REQUIRE_MESSAGE(s.ok(), s.status().to_string());
    CHECK(s->redis.host == "::1");
    CHECK(s->redis.port == port);
  }
  auto url = queue_settings_from_env(env({{"REDIS_URL", "redis://[fe80::2]:6381/1"}}));
  REQUIRE_MESSAGE(url.ok(), url.status().to_string());
  CHECK(url->redis.host == "fe80::2");
  CHECK(url->redis.port == 6381);
}

TEST_CASE("RedisUrlUserAndPasswordArePercentDecoded") {
  auto s = queue_settings_from_env(env({{"REDIS_URL", "redis://app%2Dx:p%40ss%3Aw%2Fo%25rd@cache:6380"}}));
  REQUIRE_MESSAGE(s.ok(), s.status().to_string());
  CHECK(s->redis.username == "app-x");
  CHECK(s->redis.password == "p@ss:w/o%rd");
  CHECK(s->redis.host == "cache");
}

TEST_CASE("AnEmptyMsgQueueAddrIsAnErrorOnlyForTheHttpBackend") {
  for (const char* empty : {"", " , ", "\t"}) {
    CAPTURE(empty);
    auto redis = queue_settings_from_env(env({{"MSG_QUEUE_ADDR", empty}, {"REDIS_ADDR", "cache:6379"}}));
    REQUIRE_MESSAGE(redis.ok(), redis.status().to_string());
    CHECK(redis->redis.host == "cache");
    const Status http = error_of({{"USE_HTTP_QUEUE", "true"}, {"MSG_QUEUE_ADDR", empty}});
    CHECK(http.code() == ErrorCode::kInvalidArgument);
    CHECK(http.message().find("MSG_QUEUE_ADDR") != std::string::npos);
  }
}

TEST_CASE("TabsAndCarriageReturnsAroundValuesAreIgnored") {
  auto s = queue_settings_from_env(env({{"USE_HTTP_QUEUE", "\ttrue\r"},
                                        {"MSG_QUEUE_ADDR", "\thttp://a:1\t,\thttps://b:2 "},
                                        {"MSG_QUEUE_TOPIC", "orders\t"},
                                        {"MSG_QUEUE_PARTITIONS", "8\t"},
                                        {"REDIS_ADDR", "\tcache:7000\t"}}));
  REQUIRE_MESSAGE(s.ok(), s.status().to_string());
  CHECK(s->backend == QueueSettings::Backend::kHttp);
  CHECK(s->http.addrs == std::vector<std::string>{"http://a:1", "https://b:2"});
  CHECK(s->topic == "orders");
  CHECK(s->redis.partitions == 8);
  CHECK(s->redis.host == "cache");
  CHECK(s->redis.port == 7000);
}

TEST_CASE("MsgQueueCaFileIsCheckedAndKept") {
  char path[] = "/tmp/mq-ca-XXXXXX";
  const int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  ::close(fd);
  {
    std::ofstream(path) << "not a certificate\n";
    const Status s = error_of({{"MSG_QUEUE_CA_FILE", path}});
    CHECK(s.code() == ErrorCode::kInvalidArgument);
    CHECK(s.message().find("MSG_QUEUE_CA_FILE") != std::string::npos);
  }
  std::ofstream(path) << "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
  auto s = queue_settings_from_env(env({{"MSG_QUEUE_CA_FILE", path}}));
  REQUIRE_MESSAGE(s.ok(), s.status().to_string());
  CHECK(s->http.ca_file == path);
  ::unlink(path);
}

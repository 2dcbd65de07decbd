// mqd's parsing and formatting without a server: request bodies, query parameters, the error table,
// Server-Sent Events and the Prometheus text, and the daemon's configuration.
#include <doctest/doctest.h>

#include <map>
#include <nlohmann/json.hpp>

#include "daemon_config.h"
#include "error_responses.h"
#include "request_parsing.h"
#include "wire_format.h"

using namespace mqd;
using nlohmann::json;

TEST_CASE("ProduceBodiesInBothFormsKeepPayloadsAsProduced") {
  auto single = parse_produce_body(
      R"({ "key" : "k", "payload" : { "n" : 1.50, "big": 123456789012345678901234567890 } })");
  REQUIRE(single.ok());
  CHECK_FALSE(single->batch);
  REQUIRE(single->messages.size() == 1);
  CHECK(single->messages[0].payload.json() == R"({"n":1.50,"big":123456789012345678901234567890})");
  CHECK(single->messages[0].key == "k");
  auto batch = parse_produce_body(
      R"({"messages": [{"payload": null}, {"payload": "s", "key": null}, {"payload": [1]}]})");
  REQUIRE(batch.ok());
  CHECK(batch->batch);
  REQUIRE(batch->messages.size() == 3);
  CHECK(batch->messages[0].payload.json() == "null");
  CHECK_FALSE(batch->messages[1].key.has_value());
  for (const char* bad :
       {"", "{", "[]", "1", R"({"key":"k"})", R"({"payload":1,"key":2})", R"({"messages":{}})",
        R"({"messages":[]})", R"({"messages":[{"key":"k"}]})", R"({"payload":1} trailing)"}) {
    CAPTURE(bad);
    auto parsed = parse_produce_body(bad);
    REQUIRE_FALSE(parsed.ok());
    CHECK(parsed.status().code() == mq::ErrorCode::kInvalidArgument);
  }
}

// The produce body is read in one on-demand pass: whatever it skips would go unvalidated, so every
// kind of invalid text in every place must still be refused.
TEST_CASE("ProduceBodiesAreValidatedEverywhereInOnePass") {
  const std::string deep_payload = std::string(1000, '[') + std::string(1000, ']');
  const std::string too_deep = std::string(1001, '[') + std::string(1001, ']');
  for (const std::string& bad : std::vector<std::string>{
           R"({"payload":1}})", R"({"payload":1},)", R"({"payload":1} {"payload":2})",
           R"({"payload":1 "x":2})", R"({"payload":1,})", R"({"payload":[1}})",
           R"({"payload":1,"other":[1,})", R"({"payload":1,"other":tru})", R"({"payload":1,"other":"\x"})",
           R"({"payload":1,"other":{"a" 1}})", R"({"payload":01})", "{\"payload\":\"a\x01\"}",
           R"({"payload":"\ud800x"})", "{\"payload\":\"\xff\"}",
           R"({"messages":[{"payload":1}],"messages":[{"payload":2}]})", R"({"messages":[{"payload":1},]})",
           R"({"messages":[{"payload":1,"other":nul}]})", R"({"messages":[{"payload":1}] x})",
           R"({"payload":)" + too_deep + "}", R"({"messages":[{"payload":)" + too_deep + "}]}",
           std::string("{\"payload\":3514159265\0\0\0\x01"
                       "2653835792896}",
                       39),
           // A string followed by ':' (simdjson would skip what follows as if the string were a key).
           R"({"payload":"a":]})", R"({"payload":"a": tru \q garbage "x":"y" ], "key":"k"})",
           R"({"payload":1,"x":"s": 1 2 3 }, "key":"k"})",
           R"({"messages":[{"payload":"a": !!! ]}, {"payload":2}]})",
           R"({"payload":"a":{"payload":"evil"}},"payload":"b"})", R"({"payload":1,"key":"k": 5})",
           R"({"payload":"a":[1,2,{"b":null}]},"key":"k"})"}) {
    CAPTURE(bad);
    auto parsed = parse_produce_body(bad);
    REQUIRE_FALSE(parsed.ok());
    CHECK(parsed.status().code() == mq::ErrorCode::kInvalidArgument);
  }
  // The deepest payload allowed, in both forms; a key that is not a string matters only where it
  // would be used (the single form); unknown fields are validated and ignored.
  for (const std::string& good : std::vector<std::string>{
           R"({"payload":)" + deep_payload + "}", R"({"messages":[{"payload":)" + deep_payload + "}]}",
           R"({"key":7,"messages":[{"payload":1}]})", R"({"payload":1,"other":{"a":[1e400,-0.0]}} )",
           " \t\n{\"payload\":1}\r\n"}) {
    CAPTURE(good);
    CHECK(parse_produce_body(good).ok());
  }
  // A body larger than what a thread keeps its parser for (1 MiB) is read the same way.
  std::string big = R"({"messages":[)";
  for (int i = 0; i < 50000; ++i)
    big += std::string(i ? "," : "") + R"({"payload":{"n":)" + std::to_string(i) + "}}";
  big += "]}";
  REQUIRE(big.size() > (1u << 20));
  auto parsed = parse_produce_body(big);
  REQUIRE(parsed.ok());
  CHECK(parsed->messages.size() == 50000u);
  CHECK(parsed->messages.back().payload.json() == R"({"n":49999})");
  CHECK(parse_produce_body(R"({"payload":"small after big"})")->messages[0].payload.json() ==
        R"("small after big")");
}

TEST_CASE("AckNackAndTouchBodies") {
  CHECK(*parse_ack_body(R"({"id":"0-1"})") == std::vector<std::string>{"0-1"});
  CHECK(*parse_ack_body(R"({"ids":["0-1","0-2"]})") == std::vector<std::string>{"0-1", "0-2"});
  for (const char* bad :
       {"{}", R"({"id":1})", R"({"ids":[]})", R"({"ids":[1]})", R"({"ids":"0-1"})", "[", ""}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_ack_body(bad).ok());
  }
  auto nack = parse_nack_body(R"({"id":"0-1","delay_ms":250})");
  REQUIRE(nack.ok());
  CHECK(nack->delay == std::chrono::milliseconds(250));
  CHECK(parse_nack_body(R"({"id":"0-1"})")->delay == std::chrono::milliseconds(0));
  CHECK_FALSE(parse_nack_body(R"({"id":"0-1","delay_ms":-1})").ok());
  CHECK_FALSE(parse_nack_body(R"({"id":"0-1","delay_ms":"soon"})").ok());
  CHECK(*parse_touch_body(R"({"id":"3-9"})") == "3-9");
}

TEST_CASE("QueryParameters") {
  CHECK(*required_name("topic", std::string("events")) == "events");
  CHECK_FALSE(required_name("topic", std::nullopt).ok());
  CHECK_FALSE(required_name("group", std::string("")).ok());
  CHECK_FALSE(required_name("group", std::string("../x")).ok());
  CHECK(**optional_partition(std::string("7")) == 7u);
  CHECK_FALSE(optional_partition(std::nullopt)->has_value());
  for (const char* bad : {"-1", "abc", "1.5", "", " 1", "99999999999"})
    CHECK_FALSE(optional_partition(std::string(bad)).ok());
  auto options = subscribe_options(std::string("1500"), std::string("7"), std::string("latest"));
  REQUIRE(options.ok());
  CHECK(options->visibility_timeout == std::chrono::milliseconds(1500));
  CHECK(options->max_inflight == 7u);
  CHECK(options->from == mq::StartPosition::kLatest);
  CHECK_FALSE(subscribe_options(std::string("0"), std::nullopt, std::nullopt).ok());
  CHECK_FALSE(subscribe_options(std::nullopt, std::string("0"), std::nullopt).ok());
  CHECK_FALSE(subscribe_options(std::nullopt, std::nullopt, std::string("now")).ok());
}

TEST_CASE("EveryLibraryErrorHasOneStatusAndNotOwnedNamesItsOwner") {
  CHECK(http_status_of(mq::ErrorCode::kInvalidArgument) == 400);
  CHECK(http_status_of(mq::ErrorCode::kNotFound) == 404);
  CHECK(http_status_of(mq::ErrorCode::kConflict) == 409);
  CHECK(http_status_of(mq::ErrorCode::kPayloadTooLarge) == 413);
  CHECK(http_status_of(mq::ErrorCode::kNotOwned) == 421);
  CHECK(http_status_of(mq::ErrorCode::kShuttingDown) == 503);
  CHECK(http_status_of(mq::ErrorCode::kIOError) == 500);
  const auto body =
      json::parse(error_json(mq::Status::not_owned("owned by 1", 1), {"http://a:1", "http://b:2"}));
  CHECK(body == json{{"error", "owned by 1"}, {"owner", 1}, {"owner_url", "http://b:2"}});
  CHECK(json::parse(error_json(mq::Status::not_owned("x", 1), {})) == json{{"error", "x"}, {"owner", 1}});
}

TEST_CASE("AnEventSplicesTheDeliveryFieldsInFrontOfTheStoredRecord") {
  mq::Delivery d{"2-7", 2, 7, 3, R"({"offset":7,"timestamp":5,"key":"k","payload":{"a":[1,2]}})"};
  std::string out;
  append_event(out, "events", d);
  REQUIRE(out.starts_with("id: 2-7\ndata: "));
  REQUIRE(out.ends_with("\n\n"));
  const auto data = json::parse(out.substr(out.find("data: ") + 6));
  CHECK(data ==
        json::parse(R"({"id":"2-7","topic":"events","partition":2,"delivery":3,"offset":7,"timestamp":5,
                                 "key":"k","payload":{"a":[1,2]}})"));
}

TEST_CASE("PrometheusTextHasEveryFamilyWithLabels") {
  mq::PartitionStats partition;
  partition.partition = 0;
  partition.next_offset = 12;
  partition.log_start_offset = 4;
  partition.segments = 3;
  partition.retention_deleted = 4;
  partition.log_bytes = 345;
  partition.groups = {{"g", 10, 1, 2, 11, 10, 1, 0}};
  mq::TopicStats topic{"events", {partition}};
  const std::string text = prometheus_text({topic});
  CHECK(text.find(
            "# TYPE mq_produced_total counter\nmq_produced_total{topic=\"events\",partition=\"0\"} 12\n") !=
        std::string::npos);
  CHECK(text.find("mq_delivered_total{topic=\"events\",partition=\"0\",group=\"g\"} 11\n") !=
        std::string::npos);
  CHECK(text.find("mq_lag{topic=\"events\",partition=\"0\",group=\"g\"} 2\n") != std::string::npos);
  CHECK(text.find("mq_inflight{topic=\"events\",partition=\"0\",group=\"g\"} 1\n") != std::string::npos);
  CHECK(text.find("# TYPE mq_dead_lettered_total counter") != std::string::npos);
  CHECK(text.find("mq_log_start_offset{topic=\"events\",partition=\"0\"} 4\n") != std::string::npos);
  CHECK(text.find("mq_log_segments{topic=\"events\",partition=\"0\"} 3\n") != std::string::npos);
  CHECK(text.find(
            "# TYPE mq_retention_deleted_messages_total counter\nmq_retention_deleted_messages_total{topic="
            "\"events\",partition=\"0\"} 4\n") != std::string::npos);
}

TEST_CASE("DaemonConfigurationReadsEveryVariableAndNamesBadOnes") {
  std::map<std::string, std::string, std::less<>> vars = {{"PORT", "9000"},
                                                          {"MAX_BODY_BYTES", "2048"},
                                                          {"MAX_CONNECTIONS", "8"},
                                                          {"AUTH_TOKEN", "t"},
                                                          {"HEARTBEAT_MS", "500"},
                                                          {"BROKER_COUNT", "2"},
                                                          {"BROKER_ADDRS", "http://a:1/,http://b:2"}};
  auto lookup = [&](std::string_view name) -> std::optional<std::string> {
    auto it = vars.find(name);
    return it == vars.end() ? std::nullopt : std::optional<std::string>(it->second);
  };
  auto config = daemon_config_from_env(lookup);
  REQUIRE_MESSAGE(config.ok(), config.status().to_string());
  CHECK(config->port == 9000);
  CHECK(config->max_body_bytes == 2048u);
  CHECK(config->max_connections == 8u);
  CHECK(config->auth_token == "t");
  CHECK(config->heartbeat == std::chrono::milliseconds(500));
  CHECK(config->broker_addrs == std::vector<std::string>{"http://a:1", "http://b:2"});
  for (const auto& entry :
       std::vector<std::pair<std::string, std::string>>{{"PORT", "0"},
                                                        {"PORT", "http"},
                                                        {"MAX_CONNECTIONS", "0"},
                                                        {"HEARTBEAT_MS", "x"},
                                                        {"BROKER_ADDRS", "http://only-one:1"},
                                                        {"BROKER_ADDRS", "a:1,b:2"},
                                                        {"MAX_BODY_BYTES", "-5"}}) {
    const auto& name = entry.first;  // not a structured binding: CAPTURE captures it
    const auto& value = entry.second;
    CAPTURE(name);
    auto saved = vars;
    vars[name] = value;
    auto bad = daemon_config_from_env(lookup);
    REQUIRE_FALSE(bad.ok());
    CHECK(bad.status().message().find(name) != std::string::npos);
    vars = saved;
  }
}

TEST_CASE("BatchesAndAckListsAreBoundedAndHugePartitionNumbersAreNotFound") {
  std::string body = "{\"messages\":[";
  for (std::size_t i = 0; i <= kMaxBatchMessages; ++i) body += i ? ",{\"payload\":1}" : "{\"payload\":1}";
  body += "]}";
  auto too_many = parse_produce_body(body);
  REQUIRE_FALSE(too_many.ok());
  CHECK(too_many.status().code() == mq::ErrorCode::kPayloadTooLarge);
  body.replace(body.size() - 16, 14, "");  // one message fewer: exactly the limit
  CHECK(parse_produce_body(body).ok());

  std::string ids = "{\"ids\":[";
  for (std::size_t i = 0; i <= kMaxBatchMessages; ++i) ids += i ? ",\"0-1\"" : "\"0-1\"";
  ids += "]}";
  CHECK(parse_ack_body(ids).status().code() == mq::ErrorCode::kPayloadTooLarge);

  CHECK(optional_partition(std::string("4294967296")).status().code() == mq::ErrorCode::kNotFound);
  CHECK(optional_partition(std::string("99999999999999999999999")).status().code() ==
        mq::ErrorCode::kNotFound);
  CHECK(optional_partition(std::string("4294967295")).ok());
  CHECK(optional_partition(std::string("-1")).status().code() == mq::ErrorCode::kInvalidArgument);
  CHECK(optional_partition(std::string("\xff")).status().code() == mq::ErrorCode::kInvalidArgument);
}

TEST_CASE("ErrorBodiesAreValidJsonWhateverBytesTheyQuote") {
  const std::string body = error_json(mq::Status::invalid_argument("invalid topic '\xff\xfe'"), {});
  CHECK(json::parse(body)["error"].get<std::string>().find("invalid topic") == 0);
  CHECK(json::parse(error_json("no route GET /\xc3\x28"))["error"].is_string());
  auto failed = mq::Status::storage_failed("sync failed", /*outcome_unknown=*/true);
  CHECK(json::parse(error_json(failed, {}))["outcome"] == "unknown");
  CHECK(http_status_of(mq::ErrorCode::kStorageFailed) == 503);
  CHECK(http_status_of(mq::ErrorCode::kNoSpace) == 507);
}

TEST_CASE("AnEmptyAuthTokenIsInvalidConfiguration") {
  std::map<std::string, std::string> env{{"AUTH_TOKEN", ""}};
  auto config = daemon_config_from_env([&](std::string_view name) -> std::optional<std::string> {
    auto it = env.find(std::string(name));
    return it == env.end() ? std::nullopt : std::optional(it->second);
  });
  REQUIRE_FALSE(config.ok());
  CHECK(config.status().message().find("AUTH_TOKEN") != std::string::npos);
}

TEST_CASE("ReplicationIsConfiguredByEtcdEndpointsAndItsVariablesAreChecked") {
  std::map<std::string, std::string, std::less<>> vars = {
      {"BROKER_COUNT", "3"},
      {"BROKER_INDEX", "1"},
      {"BROKER_ADDRS", "http://a:1,http://b:2,http://c:3"},
      {"ETCD_ENDPOINTS", "http://e:2379/,http://f:2379"},
      {"REPLICATION_FACTOR", "3"},
      {"LEASE_TTL_S", "3"}};
  auto lookup = [&](std::string_view name) -> std::optional<std::string> {
    auto it = vars.find(name);
    return it == vars.end() ? std::nullopt : std::optional<std::string>(it->second);
  };
  auto config = daemon_config_from_env(lookup);
  REQUIRE_MESSAGE(config.ok(), config.status().to_string());
  REQUIRE(config->replication);
  CHECK(config->replication->etcd_endpoints == std::vector<std::string>{"http://e:2379", "http://f:2379"});
  CHECK(config->replication->factor == 3u);
  CHECK(config->replication->min_insync == 2u);  // min(2, REPLICATION_FACTOR)
  CHECK(config->replication->lease_ttl == std::chrono::seconds(3));
  CHECK(config->replication->prefix == "/mq");
  CHECK(config->library.broker.replicas == 3u);
  CHECK(config->library.broker.hosts(0));  // broker 1 keeps copies of every partition (R = 3 of 3)

  for (const auto& entry : std::vector<std::pair<std::string, std::string>>{
           {"REPLICATION_FACTOR", "4"},  // more than BROKER_COUNT
           {"REPLICATION_FACTOR", "0"},
           {"MIN_INSYNC_REPLICAS", "4"},  // more than REPLICATION_FACTOR
           {"LEASE_TTL_S", "1"},
           {"ETCD_ENDPOINTS", "etcd:2379"},
           {"ETCD_PREFIX", "mq"}}) {
    const auto& name = entry.first;  // not a structured binding: CAPTURE captures it
    const auto& value = entry.second;
    CAPTURE(name);
    CAPTURE(value);
    auto saved = vars;
    vars[name] = value;
    auto bad = daemon_config_from_env(lookup);
    REQUIRE_FALSE(bad.ok());
    CHECK(bad.status().message().find(name) != std::string::npos);
    vars = saved;
  }
  // Without BROKER_ADDRS the brokers cannot reach each other; without ETCD_ENDPOINTS there is no
  // replication to ask for.
  vars.erase("BROKER_ADDRS");
  CHECK(daemon_config_from_env(lookup).status().message().find("BROKER_ADDRS") != std::string::npos);
  vars = {{"REPLICATION_FACTOR", "2"}, {"BROKER_COUNT", "2"}};
  CHECK(daemon_config_from_env(lookup).status().message().find("ETCD_ENDPOINTS") != std::string::npos);
  vars = {{"BROKER_COUNT", "2"}};
  auto single = daemon_config_from_env(lookup);
  REQUIRE(single.ok());
  CHECK_FALSE(single->replication);
  CHECK(single->library.broker.replicas == 1u);
}

TEST_CASE("BrokerIdentityHostsTheReplicasOfAPartition") {
  mq::BrokerIdentity b{2, 5, 3};  // broker 2 of 5, three copies: replicas of p are p, p+1, p+2 (mod 5)
  std::vector<std::uint32_t> hosted;
  for (std::uint32_t p = 0; p < 10; ++p) {
    if (b.hosts(p)) hosted.push_back(p);
  }
  CHECK(hosted == std::vector<std::uint32_t>{0, 1, 2, 5, 6, 7});
  mq::BrokerIdentity single{2, 5};
  for (std::uint32_t p = 0; p < 10; ++p) CHECK(single.hosts(p) == single.owns(p));
}

TEST_CASE("ReplicatedPartitionsAddLeaderAndIsrGauges") {
  const std::string text = prometheus_replication_text({{"events", 0, true, 3}, {"events", 1, false, 0}});
  CHECK(text.find("# TYPE mq_partition_leader gauge\n") != std::string::npos);
  CHECK(text.find("mq_partition_leader{topic=\"events\",partition=\"0\"} 1\n") != std::string::npos);
  CHECK(text.find("mq_partition_leader{topic=\"events\",partition=\"1\"} 0\n") != std::string::npos);
  CHECK(text.find("mq_isr_size{topic=\"events\",partition=\"0\"} 3\n") != std::string::npos);
  CHECK(text.find("mq_isr_size{topic=\"events\",partition=\"1\"}") ==
        std::string::npos);  // only the leader knows
}

// mqd as a real process on 127.0.0.1: the routes the storage core serves, JSON errors, start-up
// validation and a clean stop.
#include <doctest/doctest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>

#include "mqd_process.h"
#include "store_helpers.h"
#include "temp_dir.h"

using namespace mq::testing;
using nlohmann::json;

TEST_CASE("MqdServesHealthAndTopicsAndStopsCleanlyOnSigterm") {
  TempDir dir;
  const int port = free_port();
  MqdProcess mqd({{"PORT", std::to_string(port)},
                  {"DATA_DIR", dir / "data"},
                  {"TOPICS", "events:8,orders:4"},
                  {"BROKER_INDEX", "1"},
                  {"BROKER_COUNT", "2"},
                  {"BROKER_ADDRS", "http://127.0.0.1:1,http://127.0.0.1:" + std::to_string(port)}});
  REQUIRE(mqd.wait_until_listening(port));
  httplib::Client client("127.0.0.1", port);

  auto health = client.Get("/healthz");
  REQUIRE(health);
  CHECK(health->status == 200);
  CHECK(health->get_header_value("Content-Type") == "application/json");
  CHECK(json::parse(health->body) == json{{"status", "ok"}});

  auto topics = client.Get("/topics");
  REQUIRE(topics);
  CHECK(topics->status == 200);
  const json body = json::parse(topics->body);
  CHECK(body["broker"] == json{{"index", 1}, {"count", 2}});
  CHECK(body["brokers"].size() == 2);
  REQUIRE(body["topics"].size() == 2);
  CHECK(body["topics"][0] == json{{"name", "events"}, {"partitions", 8}, {"owned", {1, 3, 5, 7}}});
  CHECK(body["topics"][1] == json{{"name", "orders"}, {"partitions", 4}, {"owned", {1, 3}}});

  auto unknown = client.Get("/nope");
  REQUIRE(unknown);
  CHECK(unknown->status == 404);
  CHECK(json::parse(unknown->body).contains("error"));
  auto wrong_method = client.Post("/topics", "{}", "application/json");
  REQUIRE(wrong_method);
  CHECK(wrong_method->status == 405);
  CHECK(json::parse(wrong_method->body).contains("error"));

  // The owned partitions' logs exist on disk, the others do not.
  CHECK(std::filesystem::exists(dir / "data/events/partition-1.log"));
  CHECK_FALSE(std::filesystem::exists(dir / "data/events/partition-0.log"));

  auto status = mqd.stop(SIGTERM);
  REQUIRE(status);
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
}

TEST_CASE("MqdRefusesInvalidConfigurationWithOneLineNamingTheVariable") {
  TempDir dir;
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"TOPICS", "events:zero"}, {"BROKER_COUNT", "0"}, {"FSYNC", "sometimes"},
      {"PORT", "http"},          {"PORT", "70000"},     {"DATA_DIR", "/proc/forbidden"}};
  for (const auto& entry : bad) {
    const auto& name = entry.first;  // not a structured binding: CAPTURE captures it
    const auto& value = entry.second;
    CAPTURE(name);
    const std::string log = dir / "stderr.txt";
    std::map<std::string, std::string> env = {{"PORT", std::to_string(free_port())},
                                              {"DATA_DIR", dir / "data"}};
    env[name] = value;
    MqdProcess mqd(env, log);
    auto status = mqd.wait_exit();
    REQUIRE(status);
    CHECK(WIFEXITED(*status));
    CHECK(WEXITSTATUS(*status) != 0);
    const auto lines = split_lines(file_contents(log));
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].find(name) != std::string::npos);
  }
}

TEST_CASE("MqdRefusesFewerPartitionsThanOnDisk") {
  TempDir dir;
  {
    const int port = free_port();
    MqdProcess mqd({{"PORT", std::to_string(port)}, {"DATA_DIR", dir / "data"}, {"TOPICS", "events:4"}});
    REQUIRE(mqd.wait_until_listening(port));
    REQUIRE(mqd.stop());
  }
  const std::string log = dir / "stderr.txt";
  MqdProcess mqd({{"PORT", std::to_string(free_port())}, {"DATA_DIR", dir / "data"}, {"TOPICS", "events:2"}},
                 log);
  auto status = mqd.wait_exit();
  REQUIRE(status);
  CHECK(WEXITSTATUS(*status) != 0);
  CHECK(file_contents(log).find("TOPICS") != std::string::npos);
}

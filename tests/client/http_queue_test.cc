// The HTTP backend's own behaviour: routing to partition owners across brokers, following a 421,
// reconnecting event streams, credentials, unreachable brokers.
#include <doctest/doctest.h>

#include <httplib.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "http_helpers.h"
#include "mq/topic.h"
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

// A stand-in for mqd on 127.0.0.1 (plain or TLS): /topics names one broker with `events:1`, and
// every POST gets the answer `reply` gives, so a test can play failures a real mqd seldom shows.
class FakeMqd {
 public:
  using Reply = std::function<void(const httplib::Request&, httplib::Response&)>;
  static constexpr const char* kOneBroker = R"({"broker":{"index":0,"count":1},"brokers":[],)"
                                            R"("topics":[{"name":"events","partitions":1,"owned":[0]}]})";
  // Replicated (a placement): this broker leads partition 0 and remembers dedup_ids for 120 s.
  static constexpr const char* kReplicatedLeader =
      R"({"broker":{"index":0,"count":1},"brokers":[],"dedup_window_ms":120000,)"
      R"("topics":[{"name":"events","partitions":1,"owned":[0],)"
      R"("placement":[{"partition":0,"leader":0,"leader_epoch":1,"replicas":[0],"isr":[0]}]}]})";

  explicit FakeMqd(Reply reply, std::unique_ptr<httplib::Server> server = std::make_unique<httplib::Server>(),
                   std::string topics = kOneBroker)
      : server_(std::move(server)), topics_(std::move(topics)) {
    server_->Get("/topics", [this](const httplib::Request&, httplib::Response& res) {
      std::lock_guard lock(topics_mutex_);
      res.set_content(topics_, "application/json");
    });
    server_->Post(".*", [reply = std::move(reply)](const httplib::Request& req, httplib::Response& res) {
      reply(req, res);
    });
    REQUIRE(server_->is_valid());
    // Listening once bound: a client that connects before the thread runs waits in the backlog. A
    // port the kernel picks is bound at once: cpp-httplib binds with SO_REUSEPORT, so a port chosen
    // beforehand could end up shared with another process's server, each answering some requests.
    port_ = server_->bind_to_any_port("127.0.0.1");
    REQUIRE(port_ > 0);
    thread_ = std::thread([this] { server_->listen_after_bind(); });
    // stop() is lost on a server whose thread has not begun listening yet: a test that ends at once
    // would wait for that thread for ever.
    while (!server_->is_running()) std::this_thread::yield();
  }
  ~FakeMqd() {
    server_->stop();
    thread_.join();
  }
  int port() const { return port_; }
  // From now on /topics answers `topics`.
  void answer_topics(std::string topics) {
    std::lock_guard lock(topics_mutex_);
    topics_ = std::move(topics);
  }

 private:
  std::unique_ptr<httplib::Server> server_;
  int port_ = -1;
  std::mutex topics_mutex_;
  std::string topics_;  // GUARDED_BY(topics_mutex_)
  std::thread thread_;
};

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
  for (const char* addr : {"https://x", "http://x", "http://x:0", "http://x:1/path", "ftp://x:1",
                           "http://:80", "http://::1:80"}) {
    CAPTURE(addr);
    HttpQueueOptions options;
    options.addrs = {addr};
    CHECK(Queue::http(options).status().code() == ErrorCode::kInvalidArgument);
  }
  HttpQueueOptions no_ca;
  no_ca.ca_file = "/nonexistent/ca.pem";
  CHECK(Queue::http(no_ca).status().code() == ErrorCode::kInvalidArgument);
  HttpQueueOptions ok;
  ok.addrs = {"127.0.0.1:8080", "http://localhost:1/", "http://[::1]:8080", "https://mqd.example:443"};
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

TEST_CASE("A503WhoseOutcomeIsUnknownIsAnIOErrorWhileOther503sAnd507TellNothingWasStored") {
  std::atomic<int> status{503};
  std::string body;
  FakeMqd fake([&](const httplib::Request&, httplib::Response& res) {
    res.status = status;
    res.set_content(body, "application/json");
  });
  auto queue = http_queue({url_of(fake.port())});
  // A failed fdatasync: the message was written and may survive — a retry could store it twice.
  body = R"({"error":"fdatasync failed: Input/output error","outcome":"unknown"})";
  auto unknown = queue->produce_json("events", "1");
  CHECK(unknown.status().code() == ErrorCode::kIOError);
  CHECK(unknown.status().message().find("fdatasync failed") != std::string::npos);
  // Shutting down, at MAX_CONNECTIONS, a partition refusing writes: nothing was done.
  body = R"({"error":"partition 0 refuses writes until mqd is restarted"})";
  CHECK(queue->produce_json("events", "1").status().code() == ErrorCode::kUnavailable);
  body = R"({"error":"shutting down","outcome":"none"})";
  CHECK(queue->produce_json("events", "1").status().code() == ErrorCode::kUnavailable);
  // The disk is full: nothing was stored, and mqd's reason is passed on.
  status = 507;
  body = R"({"error":"no space left on device writing events/partition-0.log"})";
  auto full = queue->produce_json("events", "1");
  CHECK(full.status().code() == ErrorCode::kNoSpace);
  CHECK(full.status().message().find("no space left on device") != std::string::npos);
}

TEST_CASE("ReplicatedAProduceWhoseMessagesAllHaveADedupIdIsSentAgainAfterOutcomeUnknownOthersAreNot") {
  // The leader lost its lease while replicating: "outcome unknown". With a dedup_id on every
  // message, sending it again cannot store one twice; the next answer (here a duplicate) counts.
  std::atomic<int> produces{0};
  FakeMqd fake(
      [&](const httplib::Request& req, httplib::Response& res) {
        if (++produces % 2 == 1) {
          res.status = 503;
          res.set_content(R"({"error":"this broker's etcd lease lapsed","outcome":"unknown"})",
                          "application/json");
          return;
        }
        res.set_content(R"({"partition":0,"offset":7,"id":"0-7","duplicate":true})", "application/json");
        CHECK(req.body.find("\"dedup_id\":\"order-1\"") != std::string::npos);
      },
      std::make_unique<httplib::Server>(), FakeMqd::kReplicatedLeader);
  auto queue = http_queue({url_of(fake.port())});
  Message message{Payload::parse("1").value(), std::nullopt};
  message.dedup_id = "order-1";
  auto sent = queue->produce("events", std::span(&message, 1), 0);
  REQUIRE_MESSAGE(sent.ok(), sent.status().to_string());
  CHECK(sent->first_offset == 7);
  CHECK(sent->duplicates == std::vector<std::size_t>{0});
  CHECK(produces == 2);
  // Without a dedup_id a second copy could be stored: the caller is told, nothing is sent again.
  produces = 0;
  auto unknown = queue->produce_json("events", "1");
  CHECK(unknown.status().code() == ErrorCode::kIOError);
  CHECK(produces == 1);
}

TEST_CASE("ReplicatedAProduceIsNotSentAgainWhenTheBrokersDedupWindowIsTooShortOrUnknown") {
  // DEDUP_WINDOW_MS=0 (or a window shorter than a failover's retries take, or a broker that does not
  // say): a second attempt could be stored beside the first, so the caller is told the outcome is
  // unknown, and with idempotent_produce no ids are given.
  const std::string placement =
      R"("topics":[{"name":"events","partitions":1,"owned":[0],)"
      R"("placement":[{"partition":0,"leader":0,"leader_epoch":1,"replicas":[0],"isr":[0]}]}]})";
  for (const std::string window : {R"("dedup_window_ms":0,)", R"("dedup_window_ms":29999,)", ""}) {
    CAPTURE(window);
    std::atomic<int> produces{0};
    std::string last_body;
    FakeMqd fake(
        [&](const httplib::Request& req, httplib::Response& res) {
          ++produces;
          last_body = req.body;
          res.status = 503;
          res.set_content(R"({"error":"this broker's etcd lease lapsed","outcome":"unknown"})",
                          "application/json");
        },
        std::make_unique<httplib::Server>(),
        R"({"broker":{"index":0,"count":1},"brokers":[],)" + window + placement);
    HttpQueueOptions options;
    options.addrs = {url_of(fake.port())};
    options.idempotent_produce = true;
    auto made = Queue::http(options);
    REQUIRE(made.ok());
    auto& queue = *made;
    Message message{Payload::parse("1").value(), std::nullopt};
    message.dedup_id = "order-1";
    auto sent = queue->produce("events", std::span(&message, 1), 0);
    CHECK(sent.status().code() == ErrorCode::kIOError);
    CHECK(produces == 1);
    produces = 0;
    CHECK(queue->produce_json("events", "1").status().code() == ErrorCode::kIOError);
    CHECK(produces == 1);
    CHECK(last_body.find("dedup_id") == std::string::npos);
  }
}

TEST_CASE("ReplicatedAProduceIsNotSentAgainWhenTheMapReadBeforeTheRetryShowsAShorterDedupWindow") {
  // The window is asked again before every retry: a broker restarted meanwhile with DEDUP_WINDOW_MS=0
  // would store the retry beside the first attempt.
  std::atomic<int> produces{0};
  FakeMqd* broker = nullptr;
  FakeMqd fake(
      [&](const httplib::Request&, httplib::Response& res) {
        ++produces;
        std::string topics = FakeMqd::kReplicatedLeader;
        topics.replace(topics.find("120000"), 6, "0");
        broker->answer_topics(topics);
        res.status = 503;
        res.set_content(R"({"error":"this broker's etcd lease lapsed","outcome":"unknown"})",
                        "application/json");
      },
      std::make_unique<httplib::Server>(), FakeMqd::kReplicatedLeader);
  broker = &fake;
  HttpQueueOptions options;
  options.addrs = {url_of(fake.port())};
  options.metadata_max_age = std::chrono::milliseconds(1);  // the retry, 50 ms later, reads the map
  auto queue = Queue::http(options);
  REQUIRE(queue.ok());
  Message message{Payload::parse("1").value(), std::nullopt};
  message.dedup_id = "order-1";
  auto sent = (*queue)->produce("events", std::span(&message, 1), 0);
  CHECK(sent.status().code() == ErrorCode::kIOError);
  CHECK(sent.status().message().find("not sent again") != std::string::npos);
  CHECK(produces == 1);
}

TEST_CASE("ReplicatedARetryThatEndsInAnotherErrorStillSaysTheOutcomeIsUnknown") {
  // The first attempt may have been stored: whatever its retry is answered, the caller must not be
  // told that nothing was done.
  std::atomic<int> produces{0};
  FakeMqd fake(
      [&](const httplib::Request&, httplib::Response& res) {
        if (++produces == 1) {
          res.status = 503;
          res.set_content(R"({"error":"this broker's etcd lease lapsed","outcome":"unknown"})",
                          "application/json");
          return;
        }
        res.status = 404;
        res.set_content(R"({"error":"no topic events"})", "application/json");
      },
      std::make_unique<httplib::Server>(), FakeMqd::kReplicatedLeader);
  auto queue = http_queue({url_of(fake.port())});
  Message message{Payload::parse("1").value(), std::nullopt};
  message.dedup_id = "order-1";
  auto sent = queue->produce("events", std::span(&message, 1), 0);
  CHECK(sent.status().code() == ErrorCode::kIOError);
  CHECK(sent.status().message().find("etcd lease lapsed") != std::string::npos);
  CHECK(produces == 2);
}

TEST_CASE("ReplicatedWithIdempotentProduceTheQueueGivesDedupIdsAndSendsTheSameOnesAgain") {
  std::vector<std::string> bodies;
  std::mutex bodies_mutex;
  FakeMqd fake(
      [&](const httplib::Request& req, httplib::Response& res) {
        std::lock_guard lock(bodies_mutex);
        bodies.push_back(req.body);
        if (bodies.size() == 1) {
          res.status = 503;
          res.set_content(R"({"error":"this broker's etcd lease lapsed","outcome":"unknown"})",
                          "application/json");
          return;
        }
        res.set_content(R"({"partition":0,"offsets":[3,4],"ids":["0-3","0-4"]})", "application/json");
      },
      std::make_unique<httplib::Server>(), FakeMqd::kReplicatedLeader);
  HttpQueueOptions options;
  options.addrs = {url_of(fake.port())};
  options.idempotent_produce = true;
  auto queue = Queue::http(options);
  REQUIRE(queue.ok());
  std::vector<Message> batch{{Payload::parse("1").value(), std::nullopt},
                             {Payload::parse("2").value(), std::nullopt}};
  batch[1].dedup_id = "mine";
  auto sent = (*queue)->produce("events", batch, 0);
  REQUIRE_MESSAGE(sent.ok(), sent.status().to_string());
  std::lock_guard lock(bodies_mutex);
  REQUIRE(bodies.size() == 2);
  CHECK(bodies[0] == bodies[1]);  // the same ids again
  const auto first = nlohmann::json::parse(bodies[0]);
  CHECK(first["messages"][0]["dedup_id"].get<std::string>().starts_with("mq-q"));
  CHECK(first["messages"][1]["dedup_id"] == "mine");
}

TEST_CASE("AQueueUsesPartitionsThatARestartOfMqdAddedForKeysAndConsumers") {
  TempDir dir;
  const int port = free_port();
  const std::string data = dir.path() + "/data";
  auto mqd = std::make_unique<RunningMqd>(
      RunningMqd::Env{{"PORT", std::to_string(port)}, {"TOPICS", "events:4"}}, data);
  HttpQueueOptions options;
  options.addrs = {url_of(port)};
  options.metadata_max_age = 300ms;
  auto queue = Queue::http(options);
  REQUIRE(queue.ok());
  auto consumer = open_consumer(**queue, group_options("g"));  // every partition: 4 now
  std::string key = "user-0";
  for (int i = 1; partition_for_key(key, 4) == partition_for_key(key, 8); ++i)
    key = "user-" + std::to_string(i);
  CHECK(produce_ok(**queue, "1", key).partition == partition_for_key(key, 4));
  auto first = receive_n(*consumer, 1);
  REQUIRE(first.size() == 1);
  CHECK(ack_ok(**queue, first) == 1);

  REQUIRE(mqd->stop());
  mqd = std::make_unique<RunningMqd>(RunningMqd::Env{{"PORT", std::to_string(port)}, {"TOPICS", "events:8"}},
                                     data);
  // Nothing tells the queue of the change but the age of its map: let that pass. (Whatever was read
  // before now, from the old mqd or of none while it was down, is that old by then.)
  std::this_thread::sleep_for(options.metadata_max_age);
  const auto keyed = produce_ok(**queue, "2", key);
  CHECK(keyed.partition == partition_for_key(key, 8));  // the same partition a new client picks
  CHECK(produce_ok(**queue, "3", std::nullopt, 7u).partition == 7);
  auto got = receive_n(*consumer, 2);  // the consumer reads the new partitions too
  CHECK(payloads_of(got) == std::multiset<std::string>{"2", "3"});
  CHECK(ack_ok(**queue, got) == got.size());
}

TEST_CASE("ConsumersWithoutAVisibilityTimeoutOfTheirOwnUseMqds") {
  RunningMqd mqd(RunningMqd::Env{{"VISIBILITY_TIMEOUT_MS", "300"}});
  auto queue = http_queue({url_of(mqd.port())});
  // As in the conformance test of held messages, but the 300 ms come from mqd: the copy of
  // "second" waiting in `idle` is stale once mqd has given it to `other`.
  auto idle = open_consumer(*queue, group_options("g", 2));
  const std::vector<Message> batch{{*Payload::parse("\"first\""), std::nullopt},
                                   {*Payload::parse("\"second\""), std::nullopt}};
  REQUIRE(queue->produce("events", batch, 0u).ok());
  auto first = receive_n(*idle, 1);
  REQUIRE(first.size() == 1);
  CHECK(ack_ok(*queue, first) == 1);
  auto other = open_consumer(*queue, group_options("g", 1, 60s));
  auto redelivered = receive_n(*other, 1, 10s);
  REQUIRE(redelivered.size() == 1);
  CHECK(redelivered[0].payload == "\"second\"");
  CHECK(ack_ok(*queue, redelivered) == 1);
  // Nothing more for `other`; meanwhile the copy in `idle` is 300 ms older still (it reached `idle`
  // a little after mqd sent it, so just past mqd's timeout it could still look fresh).
  CHECK(receive_for(*other, 300ms).empty());
  for (const auto& m : receive_for(*idle, 300ms)) CHECK(m.delivery >= 2);
}

TEST_CASE("BrokersWhoseBrokerAddrsAreOutOfOrderAreReportedInsteadOfRetriedForever") {
  const int port0 = free_port();
  const int port1 = free_port();
  const std::string misordered = url_of(port1) + "," + url_of(port0);  // BROKER_INDEX 0 is at port0
  RunningMqd b0(broker_env(port0, 0, 2, misordered));
  RunningMqd b1(broker_env(port1, 1, 2, misordered));
  auto queue = http_queue({url_of(port0)});
  // Partition 0 goes to port1 (BROKER_ADDRS[0]), which answers 421 naming BROKER_ADDRS[0]: itself.
  const Message m{*Payload::parse("1"), std::nullopt};
  auto produced = queue->produce("events", m, 0u);
  CHECK(produced.status().code() == ErrorCode::kNotOwned);
  CHECK(produced.status().message().find("BROKER_ADDRS") != std::string::npos);
  CHECK(produced.status().message().find(url_of(port1)) != std::string::npos);

  ConsumeOptions options = group_options("g");
  options.partitions = {0};
  auto consumer = open_consumer(*queue, options);
  const auto start = std::chrono::steady_clock::now();
  auto got = consumer->receive(1, 20s);  // fails long before: a bounded number of backed-off tries
  CHECK(std::chrono::steady_clock::now() - start < 10s);
  REQUIRE_FALSE(got.ok());
  CHECK(got.status().code() == ErrorCode::kNotOwned);
  CHECK(got.status().message().find("BROKER_ADDRS") != std::string::npos);
}

TEST_CASE("HttpsBrokersAreVerifiedAgainstTheSystemCAsOrTheGivenCaFile") {
  TempDir dir;
  const std::string cert = dir / "cert.pem";
  const std::string key = dir / "key.pem";
  const std::string openssl =
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
      "-addext subjectAltName=IP:127.0.0.1 -keyout " +
      key + " -out " + cert + " 2>/dev/null";
  REQUIRE(std::system(openssl.c_str()) == 0);
  RunningMqd mqd(RunningMqd::Env{{"TLS_CERT_FILE", cert}, {"TLS_KEY_FILE", key}});
  const std::string url = "https://127.0.0.1:" + std::to_string(mqd.port());

  // A self-signed certificate is no system CA's: the client refuses it before sending anything.
  auto untrusting = http_queue({url});
  auto refused = untrusting->produce_json("events", "1");
  CHECK(refused.status().code() == ErrorCode::kUnavailable);
  INFO(refused.status().to_string());
  CHECK(refused.status().message().find("certificate could not be verified") != std::string::npos);
  CHECK(refused.status().message().find("MSG_QUEUE_CA_FILE") != std::string::npos);

  HttpQueueOptions options;
  options.addrs = {url};
  options.ca_file = cert;
  auto trusting = Queue::http(options);
  REQUIRE_MESSAGE(trusting.ok(), trusting.status().to_string());
  produce_ok(**trusting, "{\"over\":\"tls\"}");
  auto consumer = open_consumer(**trusting, group_options("g"));
  auto got = receive_n(*consumer, 1);
  REQUIRE(got.size() == 1);
  CHECK(got[0].payload == "{\"over\":\"tls\"}");
  CHECK(ack_ok(**trusting, got) == 1);

  // The same from the environment, as a service is configured.
  const std::map<std::string, std::string> variables{
      {"USE_HTTP_QUEUE", "true"}, {"MSG_QUEUE_ADDR", url}, {"MSG_QUEUE_CA_FILE", cert}};
  auto from_env = Queue::from_env([&](std::string_view name) -> std::optional<std::string> {
    auto it = variables.find(std::string(name));
    return it == variables.end() ? std::nullopt : std::optional<std::string>(it->second);
  });
  REQUIRE_MESSAGE(from_env.ok(), from_env.status().to_string());
  CHECK(from_env->queue->produce_json("events", "2").ok());
  // Plain http to the TLS port is refused too.
  CHECK_FALSE(http_queue({url_of(mqd.port())})->produce_json("events", "3").ok());
}

TEST_CASE("ReadAndSeekGoToThePartitionsOwnerAndFollowA421") {
  const int port0 = free_port();
  const int port1 = free_port();
  const std::string addrs = url_of(port0) + "," + url_of(port1);
  auto queue = http_queue({url_of(port0)});  // one address: /topics names the other broker
  auto check_partition = [&](std::uint32_t p, std::uint64_t count) {
    CAPTURE(p);
    auto page = queue->read("events", p, {}, 100);
    REQUIRE_MESSAGE(page.ok(), page.status().to_string());
    CHECK(page->next_offset == count);
    REQUIRE(page->messages.size() == count);
    for (const auto& m : page->messages) CHECK(m.payload == "{\"p\":" + std::to_string(p) + "}");
    auto position = queue->seek("events", p, "g", SeekTarget{1, std::nullopt, std::nullopt});
    REQUIRE_MESSAGE(position.ok(), position.status().to_string());
    CHECK(*position == std::min<std::uint64_t>(1, count));
  };
  {
    RunningMqd b0(broker_env(port0, 0, 2, addrs));
    RunningMqd b1(broker_env(port1, 1, 2, addrs));
    for (std::uint32_t p = 0; p < 4; ++p) {
      for (int i = 0; i < 2; ++i) produce_ok(*queue, "{\"p\":" + std::to_string(p) + "}", std::nullopt, p);
    }
    for (std::uint32_t p = 0; p < 4; ++p) check_partition(p, 2);  // broker 1's too
  }
  // The brokers come back with their indexes swapped: the queue's map is stale, and the first read
  // or seek of each partition gets a 421 naming the new owner.
  const std::string swapped = url_of(port1) + "," + url_of(port0);
  RunningMqd b0(broker_env(port1, 0, 2, swapped));
  RunningMqd b1(broker_env(port0, 1, 2, swapped));
  for (std::uint32_t p = 0; p < 4; ++p) check_partition(p, 0);  // the new owners have empty logs
}

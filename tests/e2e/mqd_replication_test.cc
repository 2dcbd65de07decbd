// Replicated partitions end to end (API.md "Replicated partitions", libmq/docs/replication.md): a
// real etcd and three real mqd brokers on 127.0.0.1, REPLICATION_FACTOR=3, MIN_INSYNC_REPLICAS=2.
#include <doctest/doctest.h>

#include <chrono>
#include <csignal>
#include <future>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "http_helpers.h"
#include "mq/queue.h"
#include "running_etcd.h"
#include "running_mqd.h"

namespace {

using mq::testing::http_get;
using mq::testing::http_post;
using mq::testing::RunningEtcd;
using mq::testing::RunningMqd;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int kLeaseTtlSeconds = 2;

class Cluster {
 public:
  explicit Cluster(const RunningEtcd& etcd, const RunningMqd::Env& extra = {}) {
    for (int i = 0; i < 3; ++i) ports_.push_back(mq::testing::free_port());
    std::string addrs;
    for (int port : ports_)
      addrs += (addrs.empty() ? "" : ",") + std::string("http://127.0.0.1:") + std::to_string(port);
    for (int i = 0; i < 3; ++i) {
      RunningMqd::Env env{
          {"PORT", std::to_string(ports_[i])},
          {"BROKER_INDEX", std::to_string(i)},
          {"BROKER_COUNT", "3"},
          {"BROKER_ADDRS", addrs},
          {"ETCD_ENDPOINTS", etcd.url()},
          {"REPLICATION_FACTOR", "3"},
          {"MIN_INSYNC_REPLICAS", "2"},
          {"LEASE_TTL_S", std::to_string(kLeaseTtlSeconds)},
          {"TOPICS", "events:1"},
          {"FSYNC", "always"},
      };
      for (const auto& [name, value] : extra) env[name] = value;
      brokers_.push_back(std::make_unique<RunningMqd>(env));
    }
  }
  RunningMqd& broker(int i) { return *brokers_[static_cast<std::size_t>(i)]; }
  int port(int i) const { return ports_[static_cast<std::size_t>(i)]; }

  // Partition 0 of `topic` as broker `asked` sees it (json null when it does not answer).
  json placement(int asked, const std::string& topic_name = "events") {
    auto answer = http_get(port(asked), "/topics");
    if (answer.status != 200) return nullptr;
    const json topics = answer.json();  // not a temporary in the loop's head: it would end first
    for (const auto& topic : topics["topics"]) {
      if (topic["name"] == topic_name) return topic["placement"][0];
    }
    return nullptr;
  }

  // Waits (polling /topics: there is no event to await from outside) until one of `alive` leads
  // partition 0 of `topic` with `isr_size` in-sync replicas; returns the leader.
  int await_leader(const std::vector<int>& alive, std::size_t isr_size,
                   std::chrono::seconds timeout = std::chrono::seconds(20),
                   const std::string& topic = "events") {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      for (int i : alive) {
        json p = placement(i, topic);
        if (p.is_object() && p.contains("isr") && p["leader"] == i && p["isr"].size() == isr_size) return i;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::string seen;
    for (int i : alive)
      seen +=
          " " + std::to_string(i) + ": " + http_get(port(i), "/topics").body + " " + broker(i).stderr_text();
    FAIL("no broker of the alive ones led partition 0 of " << topic << " with " << isr_size
                                                           << " in-sync replicas in time;" << seen);
    return -1;
  }

  mq::testing::HttpAnswer produce(int i, const json& body) {
    return http_post(port(i), "/produce?topic=events&partition=0", body.dump());
  }

 private:
  std::vector<int> ports_;
  std::vector<std::unique_ptr<RunningMqd>> brokers_;
};

std::vector<json> read_all(int port, const std::string& topic = "events") {
  std::vector<json> messages;
  std::uint64_t offset = 0;
  while (true) {
    auto answer = http_get(
        port, "/messages?topic=" + topic + "&partition=0&limit=1000&offset=" + std::to_string(offset));
    REQUIRE(answer.status == 200);
    const json page = answer.json();
    if (page["messages"].empty()) return messages;
    for (const auto& m : page["messages"]) messages.push_back(m);
    offset = messages.back()["offset"].get<std::uint64_t>() + 1;
  }
}

}  // namespace

TEST_CASE(
    "replicated mqd: a follower answers 421 with the leader epoch, kill -9 of the leader loses no "
    "acknowledged "
    "produce, another broker takes writes within LEASE_TTL_S + 6 s, and the old leader catches up as a "
    "follower") {
  RunningEtcd etcd;
  Cluster cluster(etcd);
  const int leader = cluster.await_leader({0, 1, 2}, 3);
  const json before = cluster.placement(leader);
  const std::uint64_t epoch = before["leader_epoch"];

  std::vector<std::string> acknowledged;
  for (int n = 0; n < 50; ++n) {
    auto answer = cluster.produce(leader, {{"payload", n}, {"dedup_id", "m-" + std::to_string(n)}});
    REQUIRE_MESSAGE(answer.status == 200, answer.body);
    acknowledged.push_back(answer.json()["id"]);
  }
  const int follower = (leader + 1) % 3;
  auto refused = cluster.produce(follower, {{"payload", "to a follower"}});
  CHECK(refused.status == 421);
  CHECK(refused.json()["owner"] == leader);
  CHECK(refused.json()["leader_epoch"] == epoch);
  CHECK(refused.json()["owner_url"] == "http://127.0.0.1:" + std::to_string(cluster.port(leader)));
  // Only brokers of the cluster (holding the secret kept in etcd) fetch: anyone else posing as a
  // follower would make acknowledged writes rest on the leader's disk alone.
  const std::string forged = "/replica/fetch?topic=events&partition=0&epoch=" + std::to_string(epoch) +
                             "&offset=50&log_start=50&durable=50&broker=" + std::to_string(follower) +
                             "&disk_id=x&wait_ms=0";
  CHECK(http_get(cluster.port(leader), forged).status == 403);
  CHECK(http_get(cluster.port(leader), forged, {{"X-Mq-Replica-Secret", std::string(64, 'a')}}).status ==
        403);
  // Consumers read only what is on enough replicas; here all of it.
  CHECK(read_all(cluster.port(leader)).size() == 50);
  const json stats = json::parse(http_get(cluster.port(leader), "/stats?topic=events").body);
  CHECK(stats["topics"][0]["partitions"][0]["high_watermark"] == 50);
  CHECK(stats["topics"][0]["partitions"][0]["isr"].size() == 3);
  const std::string leader_metrics = http_get(cluster.port(leader), "/metrics").body;
  CHECK(leader_metrics.find("mq_partition_leader{topic=\"events\",partition=\"0\"} 1\n") !=
        std::string::npos);
  CHECK(leader_metrics.find("mq_isr_size{topic=\"events\",partition=\"0\"} 3\n") != std::string::npos);
  CHECK(http_get(cluster.port(follower), "/metrics")
            .body.find("mq_partition_leader{topic=\"events\",partition=\"0\"} 0\n") != std::string::npos);

  REQUIRE(cluster.broker(leader).stop(SIGKILL));
  const auto killed_at = Clock::now();
  std::vector<int> survivors;
  for (int i = 0; i < 3; ++i) {
    if (i != leader) survivors.push_back(i);
  }
  // A producer retrying on every survivor (the same dedup_id: a retry is never stored twice) until
  // one takes the write.
  std::optional<int> new_leader;
  while (!new_leader && Clock::now() - killed_at < std::chrono::seconds(kLeaseTtlSeconds + 10)) {
    for (int i : survivors) {
      if (cluster.produce(i, {{"payload", "after"}, {"dedup_id", "after"}}).status == 200) new_leader = i;
    }
    if (!new_leader) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  REQUIRE(new_leader);
  const double failover_s = std::chrono::duration<double>(Clock::now() - killed_at).count();
  MESSAGE("failover after kill -9 of the leader: " << failover_s << " s (LEASE_TTL_S=" << kLeaseTtlSeconds
                                                   << ")");
  // 1.7-2.5 s measured on an idle machine (the lease, then an election through etcd); CI runs this
  // against three ASan-built mqd beside compilations on 2 cores, so the bound leaves 6 s past the lease.
  if (failover_s > kLeaseTtlSeconds + 2.0)
    MESSAGE("over LEASE_TTL_S + 2 s, the documented bound on an idle machine");
  CHECK(failover_s <= kLeaseTtlSeconds + 6.0);
  CHECK(cluster.placement(*new_leader)["leader_epoch"].get<std::uint64_t>() > epoch);

  // Every acknowledged produce is there, at its offset, once.
  const auto messages = read_all(cluster.port(*new_leader));
  REQUIRE(messages.size() == 51);
  for (std::size_t n = 0; n < acknowledged.size(); ++n) {
    CHECK(messages[n]["id"] == acknowledged[n]);
    CHECK(messages[n]["payload"] == n);
  }
  CHECK(messages[50]["payload"] == "after");

  // The old leader comes back on its disk, follows, and is in sync again.
  cluster.broker(leader).start();
  cluster.await_leader({*new_leader}, 3);
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  while (Clock::now() < deadline && cluster.placement(leader)["high_watermark"] != 51) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  CHECK(cluster.placement(leader)["high_watermark"] == 51);
  auto redirected = cluster.produce(leader, {{"payload", "to the old leader"}});
  CHECK(redirected.status == 421);
  CHECK(redirected.json()["owner"] == *new_leader);
}

TEST_CASE(
    "replicated mqd: with fewer in-sync replicas than MIN_INSYNC_REPLICAS a produce gets 503 and nothing is "
    "delivered") {
  RunningEtcd etcd;
  Cluster cluster(etcd);
  const int leader = cluster.await_leader({0, 1, 2}, 3);
  REQUIRE(cluster.produce(leader, {{"payload", "kept"}}).status == 200);
  for (int i = 0; i < 3; ++i) {
    if (i != leader) REQUIRE(cluster.broker(i).stop(SIGKILL));
  }
  // The leader drops members whose broker key is gone as soon as their leases lapse.
  cluster.await_leader({leader}, 1, std::chrono::seconds(kLeaseTtlSeconds + 10));
  auto refused = cluster.produce(leader, {{"payload", "refused"}});
  CHECK(refused.status == 503);
  CHECK(refused.json()["error"].get<std::string>().find("not enough in-sync replicas") != std::string::npos);
  const auto messages = read_all(cluster.port(leader));
  REQUIRE(messages.size() == 1);
  CHECK(messages[0]["payload"] == "kept");
}

TEST_CASE(
    "replicated mqd: a retry answered as a duplicate waits, as its original does, until the followers have "
    "it") {
  RunningEtcd etcd;
  Cluster cluster(etcd);
  const int leader = cluster.await_leader({0, 1, 2}, 3);
  std::vector<int> followers;
  for (int i = 0; i < 3; ++i) {
    if (i != leader) followers.push_back(i);
  }
  for (int f : followers) REQUIRE(::kill(cluster.broker(f).pid(), SIGSTOP) == 0);
  const json message = {{"payload", "once"}, {"dedup_id", "order-1"}};
  // The original is stored on the leader and waits for followers that do not fetch.
  auto original = std::async(std::launch::async, [&] { return cluster.produce(leader, message); });
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  auto next_offset = [&] {
    const json stats = json::parse(http_get(cluster.port(leader), "/stats?topic=events").body);
    return stats["topics"][0]["partitions"][0]["next_offset"].get<std::uint64_t>();
  };
  while (next_offset() == 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // the append: seen from outside only
  }
  REQUIRE(next_offset() == 1);
  // Its retry must not be acknowledged while the original is on one disk only: it fails as the original
  // does (the followers' leases lapse meanwhile). (Here the retry waits behind the original's append;
  // the wait of a duplicate for its original, replication.md section 12, is not isolated by this.)
  const auto retry = cluster.produce(leader, message);
  CHECK_MESSAGE(retry.status == 503, retry.body);
  const auto first = original.get();
  CHECK_MESSAGE(first.status == 503, first.body);
  for (int f : followers) REQUIRE(::kill(cluster.broker(f).pid(), SIGCONT) == 0);
  // Once the followers are back and have the original, a retry is its duplicate, and it is stored once.
  cluster.await_leader({leader}, 3, std::chrono::seconds(kLeaseTtlSeconds + 20));
  const auto later = cluster.produce(leader, message);
  REQUIRE_MESSAGE(later.status == 200, later.body);
  CHECK(later.json()["duplicate"] == true);
  CHECK(later.json()["offset"] == 0);
  const auto messages = read_all(cluster.port(leader));
  REQUIRE(messages.size() == 1);
  CHECK(messages[0]["payload"] == "once");
}

TEST_CASE("replicated mqd: a leader paused past its lease (SIGSTOP) acknowledges nothing once it lapsed") {
  RunningEtcd etcd;
  Cluster cluster(etcd);
  const int leader = cluster.await_leader({0, 1, 2}, 3);
  REQUIRE(cluster.produce(leader, {{"payload", "before"}}).status == 200);
  // A consumer's stream open on the leader when it is paused: it must end once that broker follows
  // (it would otherwise go on delivering from a replica whose group state is no longer the one used).
  mq::testing::SseStream stream(cluster.port(leader), "/consume?topic=events&partition=0&group=g");
  REQUIRE(stream.status() == 200);
  REQUIRE(stream.next());
  REQUIRE(::kill(cluster.broker(leader).pid(), SIGSTOP) == 0);
  // A produce sent to the paused leader waits in its socket.
  auto stalled = std::async(std::launch::async, [&] {
    return cluster.produce(leader, {{"payload", "sent to the paused leader"}, {"dedup_id", "paused"}});
  });
  std::vector<int> others;
  for (int i = 0; i < 3; ++i) {
    if (i != leader) others.push_back(i);
  }
  const int successor = cluster.await_leader(others, 2, std::chrono::seconds(kLeaseTtlSeconds + 10));
  REQUIRE(cluster.produce(successor, {{"payload", "to the successor"}}).status == 200);
  REQUIRE(::kill(cluster.broker(leader).pid(), SIGCONT) == 0);
  const auto answer = stalled.get();
  // It may have been refused (the usual case) or, had it been stored and confirmed in time, it must be
  // in the successor's log: never acknowledged and lost.
  const auto messages = read_all(cluster.port(successor));
  bool found = false;
  for (const auto& m : messages) found = found || m["payload"] == "sent to the paused leader";
  MESSAGE("the paused leader answered " << answer.status << " " << answer.body);
  CHECK((answer.status != 200 || found));
  CHECK(messages.front()["payload"] == "before");
  CHECK(messages.back()["payload"] == "to the successor");
  CHECK(stream.wait_ended(std::chrono::seconds(10)));
}

TEST_CASE("replicated mqd: the HTTP Queue follows the leader, through a 421 and through a kill -9 of it") {
  RunningEtcd etcd;
  Cluster cluster(etcd);
  const int leader = cluster.await_leader({0, 1, 2}, 3);
  const int follower = (leader + 1) % 3;
  // Given only a follower's address: /topics' placement names the leader.
  mq::HttpQueueOptions options;
  options.addrs = {"http://127.0.0.1:" + std::to_string(cluster.port(follower))};
  auto queue = mq::Queue::http(options);
  REQUIRE(queue.ok());
  std::vector<std::string> ids;
  for (int n = 0; n < 10; ++n) {
    mq::Message message{mq::Payload::parse(std::to_string(n)).value(), std::nullopt};
    message.dedup_id = "q-" + std::to_string(n);
    auto produced = (*queue)->produce("events", std::span(&message, 1), 0u);
    REQUIRE_MESSAGE(produced.ok(), produced.status().to_string());
    ids.push_back(produced->ids.at(0));
  }
  REQUIRE(cluster.broker(leader).stop(SIGKILL));
  // The next produce waits out the failover (the old leader refuses connections) and lands on the new one.
  mq::Message after{mq::Payload::parse("\"after\"").value(), std::nullopt};
  after.dedup_id = "q-after";
  auto produced = (*queue)->produce("events", std::span(&after, 1), 0u);
  REQUIRE_MESSAGE(produced.ok(), produced.status().to_string());
  std::vector<int> survivors;
  for (int i = 0; i < 3; ++i) {
    if (i != leader) survivors.push_back(i);
  }
  const int new_leader = cluster.await_leader(survivors, 2);
  const auto messages = read_all(cluster.port(new_leader));
  REQUIRE(messages.size() == 11);
  for (std::size_t n = 0; n < ids.size(); ++n) CHECK(messages[n]["id"] == ids[n]);
  CHECK(messages[10]["payload"] == "after");
}

TEST_CASE(
    "replicated mqd: a redrive answered 200 survives kill -9 of its leader, and of the next: no letter goes "
    "back twice") {
  RunningEtcd etcd;
  // Every nack dead-letters; no dedup window, so that a letter sent back twice would be stored twice.
  Cluster cluster(etcd, {{"MAX_DELIVERIES", "1"}, {"DEDUP_WINDOW_MS", "0"}});
  const int leader = cluster.await_leader({0, 1, 2}, 3);
  // Dead lettering and redrive need one broker leading a partition and its dead-letter partition
  // (libmq/docs/replication.md section 12): both have the same preferred leader, and the same order
  // of successors.
  REQUIRE(cluster.await_leader({leader}, 3, std::chrono::seconds(20), "events-dlq") == leader);
  // Both have the same successors, so they are elected together unless the preferred one is out of
  // sync for one of them only; then this test cannot go on (not a lost letter: the redrive refuses).
  static constexpr const char* kSplitLeaders =
      "events/0 and events-dlq/0 are led by different brokers after the failover: redrive needs both on "
      "one (a known limitation, libmq/docs/replication.md section 12)";
  constexpr int kLetters = 5;
  for (int n = 0; n < kLetters; ++n) REQUIRE(cluster.produce(leader, {{"payload", n}}).status == 200);
  {
    mq::testing::SseStream stream(cluster.port(leader), "/consume?topic=events&partition=0&group=g");
    REQUIRE(stream.status() == 200);
    for (int n = 0; n < kLetters; ++n) {
      auto event = stream.next();
      REQUIRE(event);
      REQUIRE(http_post(cluster.port(leader), "/nack?topic=events&partition=0&group=g",
                        json{{"id", event->id}}.dump())
                  .status == 200);
    }
  }
  const auto letters_deadline = Clock::now() + std::chrono::seconds(10);
  while (read_all(cluster.port(leader), "events-dlq").size() < kLetters && Clock::now() < letters_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // dead lettering: polled from outside
  }
  REQUIRE(read_all(cluster.port(leader), "events-dlq").size() == kLetters);

  const auto redrive = [&](int broker, const json& body) {
    return http_post(cluster.port(broker), "/redrive?topic=events-dlq&partition=0", body.dump());
  };
  auto first = redrive(leader, {{"limit", 3}});
  REQUIRE_MESSAGE(first.status == 200, first.body);
  CHECK(first.json()["redriven"] == 3);
  // Kills `victim` (kill -9) and returns the broker that leads both partitions next.
  const auto kill_and_find_successor = [&](int victim) {
    REQUIRE(cluster.broker(victim).stop(SIGKILL));
    std::vector<int> alive;
    for (int i = 0; i < 3; ++i) {
      if (i != victim) alive.push_back(i);
    }
    const int next = cluster.await_leader(alive, 2, std::chrono::seconds(20), "events-dlq");
    REQUIRE_MESSAGE(cluster.await_leader(alive, 2) == next, kSplitLeaders);
    return next;
  };
  // At the worst moment: the 200 has just gone out. The next leader sends the other two back, not five.
  const int successor = kill_and_find_successor(leader);
  auto second = redrive(successor, json::object());
  REQUIRE_MESSAGE(second.status == 200, second.body);
  CHECK(second.json()["redriven"] == 2);

  // The old leader comes back as a follower; then the successor is killed too: whoever leads next
  // (the old leader or the third broker) knows that every letter went.
  cluster.broker(leader).start();
  cluster.await_leader({successor}, 3, std::chrono::seconds(20), "events-dlq");
  cluster.await_leader({successor}, 3);
  const int third = kill_and_find_successor(successor);
  auto last = redrive(third, json::object());
  REQUIRE_MESSAGE(last.status == 200, last.body);
  CHECK(last.json()["redriven"] == 0);

  // The source holds the five messages and each letter once, in the order they went back.
  std::vector<json> payloads;
  for (const auto& m : read_all(cluster.port(third))) payloads.push_back(m["payload"]);
  CHECK(payloads == std::vector<json>{0, 1, 2, 3, 4, 0, 1, 2, 3, 4});
}

TEST_CASE(
    "replicated mqd: after a restart, RETENTION_ACKED counts the groups on disk, not only those used since") {
  RunningEtcd etcd;
  const int port = mq::testing::free_port();
  RunningMqd broker(RunningMqd::Env{{"PORT", std::to_string(port)},
                                    {"BROKER_ADDRS", "http://127.0.0.1:" + std::to_string(port)},
                                    {"ETCD_ENDPOINTS", etcd.url()},
                                    {"LEASE_TTL_S", "2"},
                                    {"TOPICS", "jobs:1:retention_acked=true:segment_bytes=1024"},
                                    {"RETENTION_CHECK_MS", "100"}});
  auto leads = [&] {
    const auto deadline = Clock::now() + std::chrono::seconds(20);
    while (Clock::now() < deadline) {
      if (http_post(port, "/produce?topic=jobs&partition=0", R"({"payload":"probe"})").status == 200) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // an election: polled from outside
    }
    FAIL("the broker did not lead jobs/0 in time");
  };
  leads();
  json all_ids = json::array();
  for (int n = 0; n < 40; ++n) {
    auto answer =
        http_post(port, "/produce?topic=jobs&partition=0", json{{"payload", std::string(100, 'x')}}.dump());
    REQUIRE(answer.status == 200);
    all_ids.push_back(answer.json()["id"]);
  }
  // Group "slow" has taken only the first message; "fast" all of them.
  REQUIRE(http_post(port, "/ack?topic=jobs&partition=0&group=slow", R"({"id":"0-0"})").status == 200);
  REQUIRE(http_post(port, "/ack?topic=jobs&partition=0&group=fast", json{{"ids", all_ids}}.dump()).status ==
          200);
  REQUIRE(http_post(port, "/ack?topic=jobs&partition=0&group=fast", R"({"id":"0-0"})").status == 200);

  broker.restart();
  leads();
  // Once retention has run after the restart, it has opened "slow" from disk (stats show it).
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  json partition;
  while (Clock::now() < deadline) {
    partition = json::parse(http_get(port, "/stats?topic=jobs").body)["topics"][0]["partitions"][0];
    bool slow_open = false;
    for (const auto& g : partition["groups"]) slow_open = slow_open || g["group"] == "slow";
    if (slow_open) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  REQUIRE(partition["groups"].size() == 2);
  CHECK(partition["log_start_offset"].get<std::uint64_t>() <= 1);  // "slow" has not read the rest
  const json page = json::parse(http_get(port, "/messages?topic=jobs&partition=0&offset=1&limit=1").body);
  CHECK(page["messages"][0]["offset"] == 1);
}

namespace {

std::string group_route(const std::string& route, const std::string& group) {
  return route + "?topic=events&partition=0&group=" + group;
}

// Group `name` of events/0 in /stats of broker port `port` (null when it is not there).
json group_stats(int port, const std::string& name) {
  const json stats = json::parse(http_get(port, "/stats?topic=events").body);
  for (const auto& g : stats["topics"][0]["partitions"][0]["groups"]) {
    if (g["group"] == name) return g;
  }
  return nullptr;
}

// Reads `count` deliveries from a new stream of `group`, then closes it.
std::vector<std::uint64_t> consume_offsets(int port, const std::string& group, std::size_t count) {
  mq::testing::SseStream stream(port, group_route("/consume", group) + "&max_inflight=100");
  REQUIRE(stream.status() == 200);
  std::vector<std::uint64_t> offsets;
  while (offsets.size() < count) {
    auto event = stream.next();
    if (!event) break;
    offsets.push_back(event->data["offset"].get<std::uint64_t>());
  }
  return offsets;
}

}  // namespace

TEST_CASE(
    "replicated mqd: group state follows the leader: after kill -9 of the leader no acknowledged message is "
    "delivered again, and seeks and group deletions hold") {
  RunningEtcd etcd;
  Cluster cluster(etcd);
  const int leader = cluster.await_leader({0, 1, 2}, 3);
  std::vector<std::string> ids;
  for (int n = 0; n < 20; ++n) {
    auto answer = cluster.produce(leader, {{"payload", n}});
    REQUIRE(answer.status == 200);
    ids.push_back(answer.json()["id"]);
  }
  const int port = cluster.port(leader);
  // "g" acknowledges 0..9 in one request and 15 alone (without consuming: an ack names messages).
  json first_ten = json::array();
  for (int n = 0; n < 10; ++n) first_ten.push_back(ids[static_cast<std::size_t>(n)]);
  REQUIRE(http_post(port, group_route("/ack", "g"), json{{"ids", first_ten}}.dump()).status == 200);
  REQUIRE(http_post(port, group_route("/ack", "g"), json{{"id", ids[15]}}.dump()).status == 200);
  // "replay" is moved to 18; "keyed" orders by key and starts at the latest message; "doomed" is deleted.
  REQUIRE(http_post(port, group_route("/seek", "replay"), R"({"offset":18})").status == 200);
  {
    mq::testing::SseStream keyed(port, group_route("/consume", "keyed") + "&ordering=key&from=latest");
    REQUIRE(keyed.status() == 200);
  }
  REQUIRE(http_post(port, group_route("/ack", "doomed"), json{{"id", ids[0]}}.dump()).status == 200);
  httplib::Client client("127.0.0.1", port);
  auto deleted = client.Delete("/group?topic=events&group=doomed");
  REQUIRE(deleted);
  REQUIRE(deleted->status == 200);

  REQUIRE(cluster.broker(leader).stop(SIGKILL));
  std::vector<int> survivors;
  for (int i = 0; i < 3; ++i) {
    if (i != leader) survivors.push_back(i);
  }
  const int new_leader = cluster.await_leader(survivors, 2);
  const int new_port = cluster.port(new_leader);

  // The new leader knows every group as the old one answered it.
  CHECK(group_stats(new_port, "g")["committed_offset"] == 10);
  CHECK(group_stats(new_port, "replay")["committed_offset"] == 18);
  CHECK(group_stats(new_port, "keyed")["committed_offset"] == 20);
  CHECK(group_stats(new_port, "keyed")["ordering"] == "key");
  CHECK(group_stats(new_port, "doomed").is_null());
  // "g" is delivered exactly what it had not acknowledged, in offset order.
  const auto delivered = consume_offsets(new_port, "g", 9);
  CHECK(delivered == std::vector<std::uint64_t>{10, 11, 12, 13, 14, 16, 17, 18, 19});
  CHECK(consume_offsets(new_port, "replay", 2) == std::vector<std::uint64_t>{18, 19});
  // A mismatched ordering is refused as on the old leader: the group's ordering moved with it.
  CHECK(http_get(new_port, group_route("/consume", "keyed") + "&ordering=none").status == 409);

  // Acknowledged on the new leader, with the old one back as a follower: its journals take the
  // new leader's state, and it would serve it in turn.
  json rest = json::array();
  for (std::uint64_t offset : delivered) rest.push_back(ids[offset]);
  REQUIRE(http_post(new_port, group_route("/ack", "g"), json{{"ids", rest}}.dump()).status == 200);
  CHECK(group_stats(new_port, "g")["committed_offset"] == 20);
  cluster.broker(leader).start();
  cluster.await_leader({new_leader}, 3);
  REQUIRE(cluster.broker(new_leader).stop(SIGKILL));
  std::vector<int> third;
  for (int i = 0; i < 3; ++i) {
    if (i != new_leader) third.push_back(i);
  }
  const int last_leader = cluster.await_leader(third, 2);
  CHECK(group_stats(cluster.port(last_leader), "g")["committed_offset"] == 20);
  CHECK(group_stats(cluster.port(last_leader), "replay")["committed_offset"] == 18);
  CHECK(group_stats(cluster.port(last_leader), "doomed").is_null());
}

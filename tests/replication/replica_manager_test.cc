// Replicated partitions end to end inside one process (libmq/docs/replication.md): three brokers'
// logs, each with its ReplicaManager, a real etcd as coordinator, fetches carried by direct calls.
// A leader elected, writes acknowledged only on every in-sync replica, the leader killed (its lease
// left to lapse) and another taking over with everything acknowledged, the old leader back and cut
// to the new leader's log, and too few replicas refusing writes with nothing stored.
#include "replication/replica_manager.h"

#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "mq/log_store.h"
#include "running_etcd.h"
#include "store_helpers.h"
#include "temp_dir.h"

namespace {

using namespace std::chrono_literals;
using mq::replication::EtcdClient;
using mq::replication::FetchAnswer;
using mq::replication::FetchRequest;
using mq::replication::FetchTransport;
using mq::replication::ReplicaId;
using mq::replication::ReplicaManager;
using mq::replication::ReplicaManagerOptions;
using SteadyClock = std::chrono::steady_clock;

constexpr std::uint32_t kBrokers = 3;
constexpr auto kLeaseTtl = 2s;

// Fetches go straight to the leader's manager; a broker that is down refuses them like a closed port.
class LocalTransport : public FetchTransport {
 public:
  void up(std::uint32_t broker, std::shared_ptr<ReplicaManager> manager) {
    std::lock_guard lock(mutex_);
    managers_[broker] = std::move(manager);
  }
  std::shared_ptr<ReplicaManager> down(std::uint32_t broker) {
    std::lock_guard lock(mutex_);
    auto manager = std::move(managers_[broker]);
    managers_.erase(broker);
    return manager;
  }
  mq::Result<FetchAnswer> fetch(std::uint32_t leader, const std::string& topic, std::uint32_t partition,
                                const FetchRequest& request, const ReplicaId& me,
                                std::chrono::milliseconds wait) override {
    std::shared_ptr<ReplicaManager> target;
    {
      std::lock_guard lock(mutex_);
      if (auto it = managers_.find(leader); it != managers_.end()) target = it->second;
    }
    if (!target) return mq::Status::unavailable("connection refused");
    return target->serve_fetch(topic, partition, request, me, wait);
  }

 private:
  std::mutex mutex_;
  std::map<std::uint32_t, std::shared_ptr<ReplicaManager>> managers_;
};

// One broker: its data directory, log store and (while it runs) its manager.
struct Broker {
  std::uint32_t index = 0;
  mq::testing::TempDir dir;
  std::unique_ptr<mq::LogStore> store;
  std::shared_ptr<ReplicaManager> manager;

  mq::Partition& log() { return mq::testing::open_partition(*store, "events", 0); }
};

class Cluster {
 public:
  // `existing`: messages broker 0 (partition 0's preferred replica) holds from before replication.
  explicit Cluster(std::uint32_t min_insync = 2, int existing = 0) : min_insync_(min_insync) {
    auto client = EtcdClient::create({etcd_.url()});
    REQUIRE_MESSAGE(client.ok(), client.status().to_string());
    etcd_client_ = std::shared_ptr<EtcdClient>(std::move(*client));
    transport_ = std::make_shared<LocalTransport>();
    for (std::uint32_t i = 0; i < kBrokers; ++i) {
      brokers_.push_back(std::make_unique<Broker>());
      brokers_.back()->index = i;
      open_store(i);
      for (int n = 0; i == 0 && n < existing; ++n)
        REQUIRE(brokers_.back()
                    ->log()
                    .append(mq::testing::message(R"({"before":)" + std::to_string(n) + "}"))
                    .ok());
      start(i);
    }
  }
  ~Cluster() {
    for (auto& b : brokers_) {
      if (b->manager) {
        transport_->down(b->index);
        b->manager->stop(/*hand_over=*/true);
      }
    }
  }

  void open_store(std::uint32_t i) {
    mq::StoreOptions options;
    options.data_dir = brokers_[i]->dir.path();
    options.fsync = mq::FsyncMode::kAlways;
    options.segment_bytes = 4096;
    auto store = mq::LogStore::open(options);
    REQUIRE_MESSAGE(store.ok(), store.status().to_string());
    brokers_[i]->store = std::move(*store);
  }

  void start(std::uint32_t i) {
    ReplicaManagerOptions options;
    options.self = i;
    options.broker_count = kBrokers;
    options.replication_factor = 3;
    options.min_insync = min_insync_;
    options.lease_ttl = kLeaseTtl;
    options.replica_lag = 1000ms;
    options.disk_id = "disk-" + std::to_string(i);
    options.data_dir = brokers_[i]->dir.path();
    options.fetch_wait = 100ms;
    options.tick = 50ms;
    options.on_change = [this] {
      std::lock_guard lock(change_mutex_);
      ++changes_;
      change_cv_.notify_all();
    };
    Broker& b = *brokers_[i];
    auto manager = ReplicaManager::start(
        options, {{"events", 1}},
        [&b](const std::string& topic, std::uint32_t p) -> mq::Result<mq::Partition*> {
          return b.store->partition(topic, p);
        },
        etcd_client_, transport_);
    REQUIRE_MESSAGE(manager.ok(), manager.status().to_string());
    b.manager = std::shared_ptr<ReplicaManager>(std::move(*manager));
    transport_->up(i, b.manager);
  }

  // A crash: the broker stops answering and its lease is left to lapse.
  void kill(std::uint32_t i) {
    auto manager = transport_->down(i);
    manager->stop(/*hand_over=*/false);
    brokers_[i]->manager.reset();
  }

  // Waits until some broker leads with an ISR of `isr_size`; returns its index.
  std::uint32_t await_leader(std::size_t isr_size, std::chrono::milliseconds timeout = 15s) {
    const auto deadline = SteadyClock::now() + timeout;
    while (true) {
      const std::uint64_t seen = change_count();
      for (auto& b : brokers_) {
        if (!b->manager) continue;
        auto role = b->manager->role("events", 0);
        if (role.ok() && role->leading && role->isr.size() == isr_size) return b->index;
      }
      if (!await_change(seen, deadline)) break;
    }
    FAIL("no leader with an ISR of " << isr_size << " within " << timeout.count() << " ms");
    return 0;
  }

  // Writes one batch through `leader`; the offset after it once acknowledged, or the error.
  mq::Result<std::uint64_t> produce(std::uint32_t leader, int n) {
    Broker& b = *brokers_[leader];
    std::vector<mq::Message> batch{mq::testing::message(R"({"n":)" + std::to_string(n) + "}")};
    auto end = b.manager->append_as_leader("events", 0, [&]() -> mq::Result<std::uint64_t> {
      auto first = b.log().append(batch);
      if (!first.ok()) return first.status();
      return *first + batch.size();
    });
    if (!end.ok()) return end.status();
    if (auto s = b.manager->await_replicated("events", 0, *end, 5s); !s.ok()) return s;
    return *end;
  }

  // Every line of broker i's log, whatever the read limit.
  std::vector<std::string> lines(std::uint32_t i) {
    std::vector<std::string> out;
    auto& log = brokers_[i]->log();
    for (std::uint64_t offset = log.log_start_offset(); offset < log.log_end_offset();) {
      auto batch = log.read_past_limit(offset, 1000, 1 << 20);
      REQUIRE(batch.ok());
      for (const auto& m : *batch) out.emplace_back(m.line);
      offset = batch->next_offset();
    }
    return out;
  }

  // Waits until broker i's log equals the leader's.
  void await_copy(std::uint32_t i, std::uint32_t leader, std::chrono::milliseconds timeout = 10s) {
    const auto deadline = SteadyClock::now() + timeout;
    while (true) {
      const std::uint64_t seen = change_count();
      if (lines(i) == lines(leader) || !await_change(seen, deadline)) break;
    }
    REQUIRE(lines(i) == lines(leader));
  }

  Broker& broker(std::uint32_t i) { return *brokers_[i]; }

 private:
  // Changes the managers reported (on_change): awaited instead of polling their roles.
  std::uint64_t change_count() {
    std::lock_guard lock(change_mutex_);
    return changes_;
  }
  // Waits until a change after `seen`; false once `deadline` passed.
  bool await_change(std::uint64_t seen, SteadyClock::time_point deadline) {
    std::unique_lock lock(change_mutex_);
    return change_cv_.wait_until(lock, deadline, [&] { return changes_ != seen; });
  }
  std::mutex change_mutex_;
  std::condition_variable change_cv_;
  std::uint64_t changes_ = 0;

  mq::testing::RunningEtcd etcd_;
  std::shared_ptr<EtcdClient> etcd_client_;
  std::shared_ptr<LocalTransport> transport_;
  std::vector<std::unique_ptr<Broker>> brokers_;
  std::uint32_t min_insync_;
};

}  // namespace

TEST_CASE(
    "replica manager: a leader is elected, followers join, and writes are acknowledged on all of them") {
  Cluster cluster;
  const std::uint32_t leader = cluster.await_leader(3);
  CHECK(leader == 0);  // the preferred leader of partition 0
  std::uint64_t end = 0;
  for (int n = 0; n < 50; ++n) {
    auto acked = cluster.produce(leader, n);
    REQUIRE_MESSAGE(acked.ok(), acked.status().to_string());
    end = *acked;
    // Acknowledged means durable on every in-sync replica: both followers hold it now.
    for (std::uint32_t f : {1u, 2u}) CHECK(cluster.broker(f).log().log_end_offset() >= end);
  }
  // Readers of the leader see everything acknowledged.
  CHECK(cluster.broker(leader).log().next_offset() == end);
  // A follower does not take writes; it names the leader.
  auto refused =
      cluster.broker(1).manager->append_as_leader("events", 0, [] { return mq::Result<std::uint64_t>(0); });
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == mq::ErrorCode::kNotOwned);
  CHECK(refused.status().owner() == leader);
}

TEST_CASE(
    "replica manager: the leader dies, another takes over within the lease TTL + 6 s with every acknowledged "
    "write") {
  Cluster cluster;
  const std::uint32_t first = cluster.await_leader(3);
  std::vector<std::string> acknowledged;
  for (int n = 0; n < 30; ++n) REQUIRE(cluster.produce(first, n).ok());
  acknowledged = cluster.lines(first);

  const auto killed_at = SteadyClock::now();
  cluster.kill(first);
  // A write that reached the old leader's disk as it died, before any follower fetched it: never
  // acknowledged, and it must not survive.
  REQUIRE(cluster.broker(first).log().append(mq::testing::message(R"({"orphan":true})")).ok());
  const std::uint32_t second = cluster.await_leader(2, kLeaseTtl + 10s);
  const auto failover = SteadyClock::now() - killed_at;
  MESSAGE("failover took " << std::chrono::duration_cast<std::chrono::milliseconds>(failover).count()
                           << " ms");
  // Under 2.5 s on an idle machine; CI runs this under ASan and TSan beside compilations on 2 cores.
  if (failover > kLeaseTtl + 2s) MESSAGE("over the lease TTL + 2 s, the documented bound on an idle machine");
  CHECK(failover < kLeaseTtl + 6s);
  CHECK(second != first);
  auto kept = cluster.lines(second);
  REQUIRE(kept.size() >= acknowledged.size());
  CHECK(std::vector<std::string>(kept.begin(), kept.begin() + static_cast<long>(acknowledged.size())) ==
        acknowledged);
  // Writes go on with two in sync.
  for (int n = 30; n < 40; ++n) REQUIRE(cluster.produce(second, n).ok());

  // The old leader comes back: it cuts the write only it had and copies the new leader's log.
  cluster.start(first);
  cluster.await_copy(first, second);
  for (const auto& line : cluster.lines(first)) {
    CAPTURE(line);
    CHECK(line.find("orphan") == std::string::npos);
  }

  cluster.await_leader(3);  // and joins the ISR again
}

TEST_CASE("replica manager: with too few replicas in sync, writes are refused and nothing is stored") {
  Cluster cluster;
  const std::uint32_t leader = cluster.await_leader(3);
  REQUIRE(cluster.produce(leader, 0).ok());
  for (std::uint32_t f = 0; f < kBrokers; ++f)
    if (f != leader) cluster.kill(f);
  // Until the leader notices, writes wait for the dead followers and time out unacknowledged; once
  // it has shrunk the ISR to itself, they are refused before anything is stored.
  cluster.await_leader(1, 10s);
  const std::uint64_t end = cluster.broker(leader).log().log_end_offset();
  auto refused = cluster.produce(leader, 1);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == mq::ErrorCode::kUnavailable);
  CHECK(refused.status().message() == "not enough in-sync replicas (1 of 2)");
  CHECK(cluster.broker(leader).log().log_end_offset() == end);
}

TEST_CASE("replica manager: lines from before replication are copied to the followers") {
  // Found by review: they belonged to no epoch, and followers were told to cut them over and over.
  Cluster cluster(2, 25);
  const std::uint32_t leader = cluster.await_leader(3);
  CHECK(leader == 0);
  REQUIRE(cluster.produce(leader, 0).ok());
  for (std::uint32_t f : {1u, 2u}) cluster.await_copy(f, leader);
  CHECK(cluster.lines(1).size() == 26);
}

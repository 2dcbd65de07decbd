// The leader's in-sync bookkeeping (libmq/docs/replication.md "ISR changes", "Becoming leader"):
// a write is acknowledged only once every in-sync and joining replica has it durable and the ISR
// is large enough; lagging members are proposed for removal and still waited for until etcd has
// the change; caught-up followers join; the high watermark only rises.
#include "replication/in_sync_tracker.h"

#include <doctest/doctest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "manual_clock.h"

namespace {

using mq::replication::InSyncTracker;
using mq::replication::ReplicaId;
using namespace std::chrono_literals;

const ReplicaId kLeader{0, "disk-a"};
const ReplicaId kF1{1, "disk-b"};
const ReplicaId kF2{2, "disk-c"};

InSyncTracker make_tracker(std::shared_ptr<mq::testing::ManualClock> clock, std::vector<ReplicaId> isr,
                           std::uint32_t min_insync = 2) {
  return InSyncTracker(kLeader, std::move(isr), InSyncTracker::Options{min_insync, 5000ms}, clock, 0);
}

}  // namespace

TEST_CASE("in sync: a write is acknowledged once every in-sync replica has it durable") {
  auto clock = std::make_shared<mq::testing::ManualClock>();
  auto tracker = make_tracker(clock, {kLeader, kF1, kF2});
  tracker.leader_appended(10, 10);
  tracker.follower_fetched(kF1, 10);
  CHECK(tracker.high_watermark() == 0);  // F2 has not got it: two copies are not all of the ISR
  CHECK(tracker.wait_acknowledged(10, 20ms).code() == mq::ErrorCode::kUnavailable);
  tracker.follower_fetched(kF2, 4);
  CHECK(tracker.high_watermark() == 4);
  tracker.follower_fetched(kF2, 10);
  CHECK(tracker.high_watermark() == 10);
  CHECK(tracker.wait_acknowledged(10, 0ms).ok());
  // The leader's own durability counts as well.
  tracker.leader_appended(15, 12);
  tracker.follower_fetched(kF1, 15);
  tracker.follower_fetched(kF2, 15);
  CHECK(tracker.high_watermark() == 12);
  tracker.leader_appended(15, 15);
  CHECK(tracker.high_watermark() == 15);
  // Never down: a late, smaller report changes nothing.
  tracker.follower_fetched(kF1, 3);
  CHECK(tracker.high_watermark() == 15);
}

TEST_CASE("in sync: a lagging member is proposed for removal, and waited for until etcd has the change") {
  auto clock = std::make_shared<mq::testing::ManualClock>();
  auto tracker = make_tracker(clock, {kLeader, kF1, kF2});
  for (std::uint64_t end = 10; end <= 60; end += 10) {
    tracker.leader_appended(end, end);
    tracker.follower_fetched(kF1, end);  // F1 keeps up, F2 is gone
    clock->advance(1000ms);
  }
  const auto proposal = tracker.proposed_isr();
  REQUIRE(proposal.has_value());
  CHECK(*proposal == std::vector<ReplicaId>{kLeader, kF1});
  // Not committed yet: R2 still counts F2.
  CHECK(tracker.wait_acknowledged(60, 10ms).code() == mq::ErrorCode::kUnavailable);
  CHECK(tracker.high_watermark() == 0);
  tracker.isr_committed(*proposal);
  CHECK(tracker.wait_acknowledged(60, 0ms).ok());
  CHECK(tracker.high_watermark() == 60);
  CHECK_FALSE(tracker.proposed_isr().has_value());
}

TEST_CASE("in sync: under steady load a follower one fetch behind stays in sync") {
  auto clock = std::make_shared<mq::testing::ManualClock>();
  auto tracker = make_tracker(clock, {kLeader, kF1});
  std::uint64_t end = 0;
  for (int round = 0; round < 100; ++round) {
    const std::uint64_t before = end;
    end += 100;
    tracker.leader_appended(end, end);      // a new write lands before each fetch...
    tracker.follower_fetched(kF1, before);  // ...which brings what the leader had at the last one
    clock->advance(200ms);
  }
  CHECK_FALSE(tracker.proposed_isr().has_value());
  CHECK(tracker.high_watermark() == end - 100);
}

TEST_CASE("in sync: too few in-sync replicas refuse at once, and a caught-up follower joins") {
  auto clock = std::make_shared<mq::testing::ManualClock>();
  auto tracker = make_tracker(clock, {kLeader});
  CHECK_FALSE(tracker.enough_in_sync());
  tracker.leader_appended(20, 20);
  const auto refused = tracker.wait_acknowledged(20, 10s);  // at once, not after the timeout
  CHECK(refused.code() == mq::ErrorCode::kUnavailable);
  CHECK(refused.message() == "not enough in-sync replicas (1 of 2)");
  // F1 copies: behind, then caught up. Caught up, it joins: writes wait for it from then on.
  tracker.follower_fetched(kF1, 5);
  CHECK_FALSE(tracker.proposed_isr().has_value());
  tracker.follower_fetched(kF1, 20);
  CHECK(tracker.high_watermark() == 20);
  tracker.leader_appended(30, 30);
  CHECK(tracker.high_watermark() == 20);  // 30 waits for the joiner, though it is not in the ISR yet
  const auto proposal = tracker.proposed_isr();
  REQUIRE(proposal.has_value());
  CHECK(*proposal == std::vector<ReplicaId>{kLeader, kF1});
  tracker.isr_committed(*proposal);
  CHECK(tracker.enough_in_sync());
  tracker.follower_fetched(kF1, 30);
  CHECK(tracker.wait_acknowledged(30, 0ms).ok());
  // A replica on a new disk is another replica: it must catch up itself.
  const ReplicaId kF1NewDisk{1, "disk-b2"};
  tracker.follower_fetched(kF1NewDisk, 0);
  CHECK_FALSE(tracker.proposed_isr().has_value());
}

TEST_CASE("in sync: a joiner that falls behind stops holding writes back") {
  auto clock = std::make_shared<mq::testing::ManualClock>();
  auto tracker = make_tracker(clock, {kLeader, kF1}, 2);
  tracker.leader_appended(10, 10);
  tracker.follower_fetched(kF1, 10);
  tracker.follower_fetched(kF2, 10);  // joins
  tracker.leader_appended(20, 20);
  tracker.follower_fetched(kF1, 20);
  CHECK(tracker.high_watermark() == 10);  // F2 holds it
  clock->advance(6000ms);
  tracker.follower_fetched(kF1, 20);
  const auto proposal = tracker.proposed_isr();  // F2 lagged: no longer joining, not proposed
  CHECK_FALSE(proposal.has_value());
  CHECK(tracker.high_watermark() == 20);
}

TEST_CASE(
    "in sync: a member that never reported holds the watermark, reports are the latest, within the log") {
  auto clock = std::make_shared<mq::testing::ManualClock>();
  auto tracker = make_tracker(clock, {kLeader, kF1});
  tracker.leader_appended(20, 20);
  tracker.isr_committed({kLeader, kF1, kF2});  // F2 in the ISR, never fetched
  tracker.follower_fetched(kF1, 20);
  CHECK(tracker.high_watermark() == 0);
  tracker.follower_fetched(kF2, 1000);  // beyond the leader's log: counted as the log's end
  CHECK(tracker.high_watermark() == 20);
  tracker.leader_appended(30, 30);
  tracker.follower_fetched(kF1, 30);
  tracker.follower_fetched(kF2, 25);  // less than before (its recovery cut lines): the latest counts
  CHECK(tracker.high_watermark() == 25);
  // A member known gone is dropped at once, not after replica_lag.
  tracker.mark_gone({kF2});
  const auto proposal = tracker.proposed_isr();
  REQUIRE(proposal.has_value());
  CHECK(*proposal == std::vector<ReplicaId>{kLeader, kF1});
}

TEST_CASE("in sync: waiters wake on progress from other threads, and on stop") {
  auto clock = std::make_shared<mq::testing::ManualClock>();
  auto tracker = make_tracker(clock, {kLeader, kF1, kF2});
  std::atomic<int> acknowledged{0};
  std::vector<std::thread> producers;
  for (std::uint64_t end = 1; end <= 8; ++end) {
    producers.emplace_back([&, end] {
      if (tracker.wait_acknowledged(end * 100, 30s).ok()) ++acknowledged;
    });
  }
  std::thread leader([&] {
    for (std::uint64_t o = 1; o <= 800; ++o) tracker.leader_appended(o, o);
  });
  std::thread f1([&] {
    for (std::uint64_t o = 1; o <= 800; ++o) tracker.follower_fetched(kF1, o);
  });
  std::thread f2([&] {
    for (std::uint64_t o = 1; o <= 800; ++o) tracker.follower_fetched(kF2, o);
  });
  leader.join();
  f1.join();
  f2.join();
  // Reports ahead of the leader's log were not believed: the followers report once more.
  tracker.follower_fetched(kF1, 800);
  tracker.follower_fetched(kF2, 800);
  for (auto& t : producers) t.join();
  CHECK(acknowledged == 8);
  std::thread waiting(
      [&] { CHECK(tracker.wait_acknowledged(10'000, 30s).code() == mq::ErrorCode::kShuttingDown); });
  tracker.stop();
  waiting.join();
}

TEST_CASE("in sync: a group-state record is acknowledged once every in-sync replica holds it") {
  auto clock = std::make_shared<mq::testing::ManualClock>();
  auto tracker = make_tracker(clock, {kLeader, kF1, kF2});
  tracker.state_published(3);
  tracker.follower_fetched(kF1, 0, 3);
  CHECK(tracker.wait_state_acknowledged(3, 20ms).code() == mq::ErrorCode::kUnavailable);
  tracker.follower_fetched(kF2, 0, 2);
  CHECK(tracker.wait_state_acknowledged(2, 0ms).ok());
  CHECK(tracker.wait_state_acknowledged(3, 0ms).code() == mq::ErrorCode::kUnavailable);
  // A follower claiming more than was published is not believed.
  tracker.follower_fetched(kF2, 0, 99);
  CHECK(tracker.wait_state_acknowledged(3, 0ms).ok());
  CHECK(tracker.wait_state_acknowledged(4, 0ms).code() == mq::ErrorCode::kUnavailable);
  // Waiters wake on a follower's fetch from another thread.
  tracker.state_published(4);
  tracker.follower_fetched(kF1, 0, 4);
  std::thread later([&] { tracker.follower_fetched(kF2, 0, 4); });
  CHECK(tracker.wait_state_acknowledged(4, 10s).ok());
  later.join();
}

TEST_CASE("in sync: a follower behind on group state neither joins nor stays caught up") {
  auto clock = std::make_shared<mq::testing::ManualClock>();
  auto tracker = make_tracker(clock, {kLeader, kF1});
  tracker.leader_appended(10, 10);
  tracker.state_published(5);
  tracker.follower_fetched(kF1, 10, 5);
  // F2 has the whole log but not the group state: it does not join.
  tracker.follower_fetched(kF2, 10, 2);
  tracker.follower_fetched(kF2, 10, 2);
  CHECK_FALSE(tracker.proposed_isr());
  tracker.follower_fetched(kF2, 10, 5);
  auto grown = tracker.proposed_isr();
  REQUIRE(grown);
  CHECK(grown->size() == 3);
  tracker.isr_committed(*grown);
  // F1 keeps the log but stops taking group state: after replica_lag it is proposed for removal.
  for (std::uint64_t v = 6; v <= 12; ++v) {
    tracker.state_published(v);
    tracker.follower_fetched(kF1, 10, 5);
    tracker.follower_fetched(kF2, 10, v);
    clock->advance(1000ms);
  }
  auto shrunk = tracker.proposed_isr();
  REQUIRE(shrunk);
  CHECK(*shrunk == std::vector<ReplicaId>{kLeader, kF2});
}

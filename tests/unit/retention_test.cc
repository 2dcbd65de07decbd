// Retention through the Broker (libmq/docs/log_format.md "Segments"): the global rules and a topic's
// own, "acknowledged by every group" with a lagging group and with none, groups moving up to the log
// start, acks, nacks and touches of deleted messages, the statistics, and restarts.
#include <doctest/doctest.h>

#include "broker_helpers.h"
#include "groups/message_ids.h"
#include "temp_dir.h"

using namespace mq;
using mq::detail::message_id;
using namespace mq::testing;
using std::chrono::milliseconds;

namespace {

Config small_segments(const std::string& dir, const std::string& topics = "events:1") {
  Config config = broker_config(dir, topics);
  config.store.segment_bytes = 1024;
  return config;
}

const PartitionStats& partition_stats(Broker& broker, const std::string& topic = "events") {
  static thread_local std::vector<TopicStats> kept;
  auto stats = broker.stats(topic);
  REQUIRE(stats.ok());
  kept = std::move(stats.value());
  return kept.front().partitions.front();
}

}  // namespace

TEST_CASE("RetentionRunsAfterEachRollAndShowsInTheStatistics") {
  TempDir dir;
  auto clock = std::make_shared<ManualClock>();
  Config config = small_segments(dir.path());
  config.retention.bytes = 4096;
  config.retention.check_interval = std::chrono::hours(1);  // never, in this test
  auto broker = open_broker(config, clock);
  produce_numbers(*broker, 200);
  const auto segments = partition_stats(*broker).segments;
  CHECK(segments > 4u);
  // The rolls scheduled a retention run for now (on the timer thread, which this clock leaves to us).
  broker->fire_due_timers();
  const PartitionStats& after = partition_stats(*broker);
  CHECK(after.log_start_offset > 0u);
  CHECK(after.log_bytes <= 4096u);
  CHECK(after.log_bytes + 1024 + 200 > 4096u);  // no more than needed went
  CHECK(after.retention_deleted == after.log_start_offset);
  CHECK(after.next_offset == 200u);
  // Reads without a group start at the log start, and take 1 to kMaxReadLimit messages a call.
  auto page = broker->read("events", 0, {}, kMaxReadLimit);
  REQUIRE(page.ok());
  CHECK(page->messages.size() == 200u - after.log_start_offset);
  CHECK(broker->read("events", 0, {}, 0).status().code() == ErrorCode::kInvalidArgument);
  CHECK(broker->read("events", 0, {}, kMaxReadLimit + 1).status().code() == ErrorCode::kInvalidArgument);
  // Appends that do not roll schedule nothing; the next roll does.
  const std::uint64_t start = after.log_start_offset;
  produce_numbers(*broker, 1, 200);
  broker->fire_due_timers();
  CHECK(partition_stats(*broker).log_start_offset == start);
  produce_numbers(*broker, 40, 201);
  broker->fire_due_timers();
  CHECK(partition_stats(*broker).log_start_offset > start);
  CHECK(partition_stats(*broker).log_bytes <= 4096u);
}

TEST_CASE("RetentionRunsOnTheTimerForWhatNoRollChanges") {
  TempDir dir;
  auto clock = std::make_shared<ManualClock>();
  Config config = small_segments(dir.path(), "jobs:1:retention_acked=true");
  config.retention.check_interval = milliseconds(500);
  auto broker = open_broker(config, clock);
  produce_numbers(*broker, 200, 0, 0, "jobs");
  broker->fire_due_timers();  // after the rolls: no group has read the partition, nothing goes
  CHECK(partition_stats(*broker, "jobs").log_start_offset == 0u);
  // A group acknowledges everything: no roll, so the timer's run is the one that deletes.
  auto group = broker->subscribe("jobs", 0, "g", {});
  REQUIRE(group.ok());
  std::vector<std::string> all;
  for (std::uint64_t o = 0; o < 200; ++o) all.push_back(message_id(0, o));
  REQUIRE(broker->ack("jobs", 0, "g", all).ok());
  clock->advance(milliseconds(499));
  broker->fire_due_timers();
  CHECK(partition_stats(*broker, "jobs").log_start_offset == 0u);  // not due yet
  clock->advance(milliseconds(1));
  broker->fire_due_timers();
  const PartitionStats& after = partition_stats(*broker, "jobs");
  CHECK(after.log_start_offset > 0u);
  CHECK(after.segments == 1u);  // every sealed segment was acknowledged; the active one stays
  CHECK(after.retention_deleted == after.log_start_offset);
}

TEST_CASE("RetentionAckedKeepsWhatALaggingGroupNeedsAndEverythingWithoutAGroup") {
  TempDir dir;
  Config config = small_segments(dir.path(), "events:1,jobs:1:retention_acked=true");
  auto broker = open_broker(config, std::make_shared<ManualClock>());
  produce_numbers(*broker, 200, 0, 0, "jobs");
  // No group has read the partition: nothing goes.
  CHECK(*broker->apply_retention() == 0u);
  // Two groups: one acknowledges 150, the other lags at 40.
  auto fast = broker->subscribe("jobs", 0, "fast", {});
  auto slow = broker->subscribe("jobs", 0, "slow", {});
  REQUIRE(fast.ok());
  REQUIRE(slow.ok());
  std::vector<std::string> first_150;
  for (std::uint64_t o = 0; o < 150; ++o) first_150.push_back(message_id(0, o));
  REQUIRE(broker->ack("jobs", 0, "fast", first_150).ok());
  REQUIRE(broker->ack("jobs", 0, "slow", std::span(first_150).first(40)).ok());
  REQUIRE(broker->apply_retention().ok());
  const std::uint64_t start = partition_stats(*broker, "jobs").log_start_offset;
  CHECK(start > 0u);
  CHECK(start <= 40u);  // the lagging group still gets everything it has not acknowledged
  // The slow group catches up: now what both acknowledged may go.
  REQUIRE(broker->ack("jobs", 0, "slow", first_150).ok());
  REQUIRE(broker->apply_retention().ok());
  const std::uint64_t later = partition_stats(*broker, "jobs").log_start_offset;
  CHECK(later > 40u);
  CHECK(later <= 150u);
  // The topic without retention_acked keeps everything.
  produce_numbers(*broker, 200);
  auto reader = broker->subscribe("events", 0, "r", {});
  REQUIRE(broker->ack("events", 0, "r", first_150).ok());
  REQUIRE(broker->apply_retention().ok());
  CHECK(partition_stats(*broker).log_start_offset == 0u);
}

TEST_CASE("AGroupBelowTheLogStartMovesUpAndDeletedMessagesAreGoneForIt") {
  TempDir dir;
  auto clock = std::make_shared<ManualClock>();
  Config config = small_segments(dir.path());
  config.retention.bytes = 2048;
  auto broker = open_broker(config, clock);
  produce_numbers(*broker, 100);
  SubscribeOptions options;
  options.visibility_timeout = milliseconds(1000);
  options.max_inflight = 5;
  auto sub = broker->subscribe("events", 0, "g", options);
  REQUIRE(sub.ok());
  auto held = take_now(**sub, 5);  // offsets 0-4 in flight
  REQUIRE(held.size() == 5u);
  REQUIRE(*broker->apply_retention() > 0u);
  const std::uint64_t start = partition_stats(*broker).log_start_offset;
  REQUIRE(start > 5u);
  const GroupStats& group = partition_stats(*broker).groups.front();
  CHECK(group.committed_offset == start);
  CHECK(group.inflight == 0u);
  CHECK(group.lag == 100u - start);
  // A nack or touch of a deleted message: not in flight (409); an ack: 200, and counted only if it
  // had not been acknowledged (here: the group moved past it, so it counts as acknowledged).
  CHECK(broker->nack("events", 0, "g", held[0].id).code() == ErrorCode::kConflict);
  CHECK(broker->touch("events", 0, "g", held[1].id).code() == ErrorCode::kConflict);
  auto acked = broker->ack("events", 0, "g", std::vector<std::string>{held[2].id});
  REQUIRE(acked.ok());
  CHECK(*acked == 0u);
  // Deliveries go on from the log start; the deleted ones never come back, even after their timeout.
  clock->advance(milliseconds(2000));
  broker->fire_due_timers();
  auto next = take_now(**sub, 5);
  REQUIRE_FALSE(next.empty());
  CHECK(next.front().offset == start);
  // A group created now starts at the log start too, and after a restart the start holds.
  auto fresh = broker->subscribe("events", 0, "new", {});
  REQUIRE(fresh.ok());
  CHECK(take_now(**fresh, 1).front().offset == start);
  sub->reset();
  fresh->reset();
  broker.reset();
  auto reopened = open_broker(config, clock);
  CHECK(partition_stats(*reopened).log_start_offset == start);
  CHECK(partition_stats(*reopened).next_offset == 100u);
  auto again = reopened->subscribe("events", 0, "g", {});
  REQUIRE(again.ok());
  CHECK(take_now(**again, 1).front().offset >= start);
}

TEST_CASE("SeekReplaysOrSkipsDurablyAndOpenSubscriptionsFollow") {
  TempDir dir;
  auto clock = std::make_shared<ManualClock>();
  Config config = small_segments(dir.path());
  auto broker = open_broker(config, clock);
  produce_numbers(*broker, 50);
  SubscribeOptions options;
  options.visibility_timeout = milliseconds(1000);
  options.max_inflight = 1000;
  auto sub = broker->subscribe("events", 0, "g", options);
  REQUIRE(sub.ok());
  auto first = take_now(**sub, 30);
  REQUIRE(first.size() == 30u);
  REQUIRE(ack_all(*broker, std::vector<Delivery>(first.begin(), first.begin() + 20), "g") == 20u);

  // Replay from 5: nothing in flight any more, everything from 5 comes again, delivery 1.
  SeekTarget back;
  back.offset = 5;
  CHECK(*broker->seek("events", 0, "g", back) == 5u);
  CHECK(partition_stats(*broker).groups.front().committed_offset == 5u);
  CHECK(partition_stats(*broker).groups.front().inflight == 0u);
  CHECK(broker->nack("events", 0, "g", first[25].id).code() == ErrorCode::kConflict);
  auto replayed = take_now(**sub, 100);
  REQUIRE(replayed.size() == 45u);
  CHECK(replayed.front().offset == 5u);
  for (const auto& d : replayed) CHECK(d.delivery == 1u);

  // Skip to 40 (an ack of 30 afterwards acknowledges it as usual), then latest, earliest, clamping.
  SeekTarget skip;
  skip.offset = 40;
  CHECK(*broker->seek("events", 0, "g", skip) == 40u);
  SeekTarget far;
  far.offset = 10'000;
  CHECK(*broker->seek("events", 0, "g", far) == 50u);  // clamped to the next offset
  SeekTarget latest;
  latest.position = SeekTarget::Position::kLatest;
  CHECK(*broker->seek("events", 0, "g", latest) == 50u);
  CHECK(take_now(**sub, 10).empty());
  SeekTarget earliest;
  earliest.position = SeekTarget::Position::kEarliest;
  CHECK(*broker->seek("events", 0, "g", earliest) == 0u);
  SeekTarget by_time;
  by_time.timestamp_ms = 0;
  CHECK(*broker->seek("events", 0, "g", by_time) == 0u);
  SeekTarget both = skip;
  both.position = SeekTarget::Position::kLatest;
  CHECK(broker->seek("events", 0, "g", both).status().code() == ErrorCode::kInvalidArgument);
  CHECK(broker->seek("events", 0, "g2", SeekTarget{}).status().code() == ErrorCode::kInvalidArgument);
  CHECK(partition_stats(*broker).groups.size() == 1u);  // a refused seek creates no group

  // Durable: after a restart the group is where the last seek put it, plus what was acked since.
  SeekTarget to_10;
  to_10.offset = 10;
  REQUIRE(broker->seek("events", 0, "g", to_10).ok());
  REQUIRE(broker->ack("events", 0, "g", std::vector<std::string>{message_id(0, 10), message_id(0, 11)}).ok());
  sub->reset();
  broker.reset();
  auto reopened = open_broker(config, clock);
  CHECK(partition_stats(*reopened).groups.front().committed_offset == 12u);
  auto again = reopened->subscribe("events", 0, "g", {});
  REQUIRE(again.ok());
  CHECK(take_now(**again, 1).front().offset == 12u);
}

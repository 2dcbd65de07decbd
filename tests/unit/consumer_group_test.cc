// Consumer groups through the Broker, with a hand-driven clock: competing consumers, visibility
// timeouts, touch, nack, max_inflight, acknowledgements, restarts, dead letters, statistics.
#include <doctest/doctest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "broker_helpers.h"
#include "common/partition_turns.h"
#include "groups/message_ids.h"  // ids of messages not delivered
#include "temp_dir.h"

using namespace mq;
using mq::detail::message_id;
using namespace mq::testing;
using nlohmann::json;
using std::chrono::milliseconds;

namespace {
SubscribeOptions with_timeout(int ms, std::size_t max_inflight = 100) {
  SubscribeOptions options;
  options.visibility_timeout = milliseconds(ms);
  options.max_inflight = max_inflight;
  return options;
}
}  // namespace

TEST_CASE("TwoSubscriptionsInOneGroupShareEveryMessageExactlyOnce") {
  TempDir dir;
  auto clock = std::make_shared<ManualClock>();
  auto broker = open_broker(broker_config(dir.path()), clock);
  produce_numbers(*broker, 1000);
  auto a = subscribe(*broker, "workers", with_timeout(1000, 7));
  auto b = subscribe(*broker, "workers", with_timeout(1000, 5));
  std::multiset<int> seen;
  std::size_t from_a = 0, from_b = 0;
  while (seen.size() < 1000) {
    for (auto* sub : {a.get(), b.get()}) {
      auto got = take_now(*sub, 4);
      for (const auto& d : got) {
        seen.insert(number_of(d));
        CHECK(d.delivery == 1);
      }
      (sub == a.get() ? from_a : from_b) += got.size();
      CHECK(ack_all(*broker, got, "workers") == got.size());
    }
  }
  CHECK(seen.size() == 1000);
  CHECK(std::set<int>(seen.begin(), seen.end()).size() == 1000);  // no duplicates
  CHECK(from_a > 0);
  CHECK(from_b > 0);
  CHECK(take_now(*a).empty());
  CHECK(take_now(*b).empty());

  // Another group gets all 1000 too, independently.
  auto other = subscribe(*broker, "auditors");
  std::set<int> audited;
  while (true) {
    auto got = take_now(*other, 100);
    if (got.empty()) break;
    for (const auto& d : got) audited.insert(number_of(d));
    ack_all(*broker, got, "auditors");
  }
  CHECK(audited.size() == 1000);
}

TEST_CASE("AnUnacknowledgedMessageComesBackAfterItsTimeoutAndAnAcknowledgedOneNever") {
  TempDir dir;
  auto clock = std::make_shared<ManualClock>();
  auto broker = open_broker(broker_config(dir.path()), clock);
  produce_numbers(*broker, 2);
  auto sub = subscribe(*broker, "g", with_timeout(500));
  auto first = take_now(*sub);
  REQUIRE(first.size() == 2);
  ack_all(*broker, {first[1]}, "g");
  clock->advance(milliseconds(499));
  broker->fire_due_timers();
  CHECK(take_now(*sub).empty());
  clock->advance(milliseconds(1));
  broker->fire_due_timers();
  auto again = take_now(*sub);
  REQUIRE(again.size() == 1);
  CHECK(again[0].offset == 0);
  CHECK(again[0].delivery == 2);
  CHECK(again[0].id == first[0].id);
  ack_all(*broker, again, "g");
  clock->advance(milliseconds(10'000));
  broker->fire_due_timers();
  CHECK(take_now(*sub).empty());
}

TEST_CASE("TouchPostponesTheTimeout") {
  TempDir dir;
  auto clock = std::make_shared<ManualClock>();
  auto broker = open_broker(broker_config(dir.path()), clock);
  produce_numbers(*broker, 1);
  auto sub = subscribe(*broker, "g", with_timeout(1000));
  auto got = take_now(*sub);
  REQUIRE(got.size() == 1);
  clock->advance(milliseconds(800));
  REQUIRE(broker->touch("events", 0, "g", got[0].id).ok());
  clock->advance(milliseconds(800));  // 1600 ms after delivery, 800 after the touch
  broker->fire_due_timers();
  CHECK(take_now(*sub).empty());
  clock->advance(milliseconds(200));
  broker->fire_due_timers();
  CHECK(take_now(*sub).size() == 1);
  // Touching what is not in flight is a conflict; an id of no message is not found.
  auto none = broker->touch("events", 0, "g", "0-99");
  CHECK(none.code() == ErrorCode::kNotFound);
}

TEST_CASE("NackGivesAMessageBackNowOrAfterADelayDuringWhichItIsNotInFlight") {
  TempDir dir;
  auto clock = std::make_shared<ManualClock>();
  auto broker = open_broker(broker_config(dir.path()), clock);
  produce_numbers(*broker, 2);
  auto sub = subscribe(*broker, "g", with_timeout(60'000, 1));
  auto got = take_now(*sub);
  REQUIRE(got.size() == 1);
  REQUIRE(broker->nack("events", 0, "g", got[0].id).ok());
  auto again = take_now(*sub);
  REQUIRE(again.size() == 1);
  CHECK(again[0].offset == 0);
  CHECK(again[0].delivery == 2);

  REQUIRE(broker->nack("events", 0, "g", again[0].id, milliseconds(5000)).ok());
  CHECK(broker->nack("events", 0, "g", again[0].id).code() == ErrorCode::kConflict);  // not in flight now
  // While it waits out its delay it holds no room: max_inflight 1 lets offset 1 through.
  auto next = take_now(*sub);
  REQUIRE(next.size() == 1);
  CHECK(next[0].offset == 1);
  ack_all(*broker, next, "g");
  CHECK(take_now(*sub).empty());
  clock->advance(milliseconds(5000));
  broker->fire_due_timers();
  auto delayed = take_now(*sub);
  REQUIRE(delayed.size() == 1);
  CHECK(delayed[0].offset == 0);
  CHECK(delayed[0].delivery == 3);
}

TEST_CASE("MaxInflightCapsWhatOneSubscriptionHolds") {
  TempDir dir;
  auto clock = std::make_shared<ManualClock>();
  auto broker = open_broker(broker_config(dir.path()), clock);
  produce_numbers(*broker, 10);
  auto sub = subscribe(*broker, "g", with_timeout(60'000, 3));
  auto got = take_now(*sub, 10);
  CHECK(offsets_of(got) == std::vector<std::uint64_t>{0, 1, 2});
  CHECK(sub->inflight() == 3);
  CHECK(take_now(*sub, 10).empty());
  ack_all(*broker, {got[1]}, "g");
  CHECK(offsets_of(take_now(*sub, 10)) == std::vector<std::uint64_t>{3});
}

TEST_CASE("RedeliveriesComeBeforeNewMessagesInOffsetOrder") {
  TempDir dir;
  auto clock = std::make_shared<ManualClock>();
  auto broker = open_broker(broker_config(dir.path()), clock);
  produce_numbers(*broker, 6);
  auto sub = subscribe(*broker, "g", with_timeout(1000));
  auto got = take_now(*sub, 3);
  REQUIRE(broker->nack("events", 0, "g", got[2].id).ok());
  REQUIRE(broker->nack("events", 0, "g", got[0].id).ok());
  CHECK(offsets_of(take_now(*sub, 10)) == std::vector<std::uint64_t>{0, 2, 3, 4, 5});
}

TEST_CASE("EndingASubscriptionHandsItsMessagesToAnotherAtOnce") {
  TempDir dir;
  auto clock = std::make_shared<ManualClock>();
  auto broker = open_broker(broker_config(dir.path()), clock);
  produce_numbers(*broker, 5);
  auto keeper = subscribe(*broker, "g", with_timeout(60'000));
  {
    auto leaver = subscribe(*broker, "g", with_timeout(60'000));
    CHECK(take_now(*leaver).size() == 5);
    CHECK(take_now(*keeper).empty());
  }  // closed with everything in flight; no clock advance needed
  auto got = take_now(*keeper);
  CHECK(offsets_of(got) == std::vector<std::uint64_t>{0, 1, 2, 3, 4});
  for (const auto& d : got) CHECK(d.delivery == 2);
}

TEST_CASE("AcknowledgementsAreIdempotentAndCheckTheirIds") {
  TempDir dir;
  auto clock = std::make_shared<ManualClock>();
  auto broker = open_broker(broker_config(dir.path()), clock);
  produce_numbers(*broker, 3);
  auto sub = subscribe(*broker, "g");
  auto got = take_now(*sub);
  const std::vector<std::string> ids{got[0].id, got[0].id, got[1].id};
  CHECK(*broker->ack("events", 0, "g", ids) == 2);
  CHECK(*broker->ack("events", 0, "g", ids) == 0);  // twice is not an error
  for (const char* bad : {"0-3", "0-999", "1-2", "abc", "", "0-", "-1", "0-1x", "00"}) {
    CAPTURE(bad);
    const std::vector<std::string> one{bad};
    CHECK(broker->ack("events", 0, "g", one).status().code() == ErrorCode::kNotFound);
  }
  // Acknowledging a message before it is delivered means it is never delivered.
  produce_numbers(*broker, 2, 3);
  const std::vector<std::string> early{message_id(0, 4)};
  CHECK(*broker->ack("events", 0, "g", early) == 1);
  ack_all(*broker, {got[2]}, "g");
  CHECK(offsets_of(take_now(*sub)) == std::vector<std::uint64_t>{3});
}

TEST_CASE("PartitionsTopicsAndNamesAreChecked") {
  TempDir dir;
  Config config = broker_config(dir.path(), "events:4");
  config.broker = {1, 2};
  auto broker = open_broker(config, std::make_shared<ManualClock>());
  auto not_owned = broker->subscribe("events", 2, "g", {});
  REQUIRE_FALSE(not_owned.ok());
  CHECK(not_owned.status().code() == ErrorCode::kNotOwned);
  CHECK(not_owned.status().owner() == 0u);
  CHECK(broker->subscribe("events", 4, "g", {}).status().code() == ErrorCode::kNotFound);
  CHECK(broker->subscribe("nope", 1, "g", {}).status().code() == ErrorCode::kNotFound);
  CHECK(broker->subscribe("events", 1, "../g", {}).status().code() == ErrorCode::kInvalidArgument);
  CHECK(broker->subscribe("../x", 1, "g", {}).status().code() == ErrorCode::kInvalidArgument);
  SubscribeOptions zero;
  zero.max_inflight = 0;
  CHECK(broker->subscribe("events", 1, "g", zero).status().code() == ErrorCode::kInvalidArgument);
  CHECK(broker->produce("events", std::vector<Message>{message("1")}, 0).status().code() ==
        ErrorCode::kNotOwned);
  // Without a partition or key, produce takes the owned partitions in turn.
  std::set<std::uint32_t> used;
  for (int i = 0; i < 4; ++i)
    used.insert(broker->produce("events", std::vector<Message>{message("1")})->partition);
  CHECK(used == std::set<std::uint32_t>{1, 3});
  // With a key, Kafka's partitioner decides; a key of another broker's partition is refused.
  for (const char* key : {"a", "b", "c", "d", "e", "f"}) {
    auto r = broker->produce("events", std::vector<Message>{message("1", key)});
    const std::uint32_t expected = partition_for_key(key, 4);
    if (expected % 2 == 1) {
      REQUIRE(r.ok());
      CHECK(r->partition == expected);
    } else {
      CHECK(r.status().code() == ErrorCode::kNotOwned);
    }
  }
}

TEST_CASE("ANewGroupFromLatestSkipsTheBacklogAndAnExistingGroupKeepsItsPosition") {
  TempDir dir;
  auto clock = std::make_shared<ManualClock>();
  auto broker = open_broker(broker_config(dir.path()), clock);
  produce_numbers(*broker, 5);
  SubscribeOptions latest;
  latest.from = StartPosition::kLatest;
  {
    auto sub = subscribe(*broker, "late", latest);
    CHECK(take_now(*sub).empty());
    produce_numbers(*broker, 1, 5);
    CHECK(offsets_of(take_now(*sub)) == std::vector<std::uint64_t>{5});
  }
  auto stats = broker->stats("events");
  REQUIRE(stats.ok());
  const auto& groups = (*stats)[0].partitions[0].groups;
  REQUIRE(groups.size() == 1);
  CHECK(groups[0].committed_offset == 5);
  CHECK(groups[0].lag == 1);
  {
    auto early = subscribe(*broker, "early");
    CHECK(take_now(*early).size() == 6);
  }
  auto again = subscribe(*broker, "early", latest);  // exists: from=latest changes nothing
  CHECK(take_now(*again).size() == 6);
}

TEST_CASE("AfterARestartOnlyUnacknowledgedMessagesComeBack") {
  TempDir dir;
  const Config config = broker_config(dir.path());
  {
    auto broker = open_broker(config, std::make_shared<ManualClock>());
    produce_numbers(*broker, 10);
    auto sub = subscribe(*broker, "g");
    auto got = take_now(*sub, 6);  // 0..5 in flight
    ack_all(*broker, {got[0], got[2], got[5]}, "g");
    const std::vector<std::string> early{message_id(0, 8)};
    ack_all(*broker, {}, "g");
    REQUIRE(broker->ack("events", 0, "g", early).ok());
    sub.reset();
  }
  auto broker = open_broker(config, std::make_shared<ManualClock>());
  auto stats = broker->stats("events");
  REQUIRE(stats.ok());
  REQUIRE((*stats)[0].partitions[0].groups.size() == 1);  // the group was found on disk
  CHECK((*stats)[0].partitions[0].groups[0].committed_offset == 1);
  auto sub = subscribe(*broker, "g");
  auto got = take_now(*sub);
  CHECK(offsets_of(got) == std::vector<std::uint64_t>{1, 3, 4, 6, 7, 9});
  for (const auto& d : got) CHECK(d.delivery == 1);
}

TEST_CASE("AMessageDeliveredMaxDeliveriesTimesWithoutAnAckIsDeadLettered") {
  TempDir dir;
  Config config = broker_config(dir.path());
  config.groups.max_deliveries = 2;
  auto clock = std::make_shared<ManualClock>();
  {
    auto broker = open_broker(config, clock);
    Message poison = message("{\"poison\":true}", "k1");
    poison.headers = {{"trace", "t-1"}};
    REQUIRE(broker->produce("events", std::vector<Message>{poison}, 1).ok());
    produce_numbers(*broker, 1, 7, 1);
    auto sub = subscribe(*broker, "g", with_timeout(100), 1);
    auto first = take_now(*sub);
    REQUIRE(first.size() == 2);
    ack_all(*broker, {first[1]}, "g", 1);
    clock->advance(milliseconds(100));
    broker->fire_due_timers();
    auto second = take_now(*sub);
    REQUIRE(second.size() == 1);
    CHECK(second[0].delivery == 2);
    REQUIRE(broker->nack("events", 1, "g", second[0].id).ok());  // the 2nd delivery ends without an ack
    CHECK(take_now(*sub).empty());                               // not delivered a third time
    clock->advance(milliseconds(1000));
    broker->fire_due_timers();
    CHECK(take_now(*sub).empty());

    auto stats = broker->stats("events");
    const auto& g = (*stats)[0].partitions[1].groups.at(0);
    CHECK(g.dead_lettered == 1);
    CHECK(g.acked == 1);
    CHECK(g.committed_offset == 2);
    CHECK(g.inflight == 0);
  }
  // The dead-letter topic exists on disk and is found again at start-up.
  auto broker = open_broker(config, clock);
  bool listed = false;
  for (const auto& t : broker->topics()) {
    if (t.name == "events-dlq") {
      listed = true;
      CHECK(t.partitions == 2);
    }
  }
  CHECK(listed);
  auto dlq = subscribe(*broker, "inspect", {}, 1, "events-dlq");
  auto letters = take_now(*dlq);
  REQUIRE(letters.size() == 1);
  const json letter = json::parse(letters[0].record);
  CHECK(letter["payload"] == json{{"poison", true}});
  CHECK(letter["key"] == "k1");
  CHECK(letter["headers"] == json{{"trace", "t-1"}});  // a dead letter keeps its headers
  CHECK(letter["source"] ==
        json{{"topic", "events"}, {"partition", 1}, {"offset", 0}, {"group", "g"}, {"deliveries", 2}});
  // And the original group never sees it again.
  auto sub = subscribe(*broker, "g", {}, 1);
  CHECK(take_now(*sub).empty());
}

TEST_CASE("StatisticsCountDeliveriesAcksAndRedeliveries") {
  TempDir dir;
  auto clock = std::make_shared<ManualClock>();
  auto broker = open_broker(broker_config(dir.path()), clock);
  produce_numbers(*broker, 4);
  auto sub = subscribe(*broker, "g", with_timeout(100));
  auto got = take_now(*sub, 3);
  ack_all(*broker, {got[0]}, "g");
  clock->advance(milliseconds(100));
  broker->fire_due_timers();
  take_now(*sub, 1);  // offset 1 again
  auto stats = broker->stats();
  REQUIRE(stats.ok());
  const auto& partition = (*stats)[0].partitions[0];
  CHECK(partition.next_offset == 4);
  CHECK(partition.log_bytes > 0);
  const GroupStats& g = partition.groups.at(0);
  CHECK(g.group == "g");
  CHECK(g.committed_offset == 1);
  CHECK(g.inflight == 1);
  CHECK(g.lag == 3);
  CHECK(g.delivered == 4);
  CHECK(g.acked == 1);
  CHECK(g.redelivered == 1);
  CHECK(g.dead_lettered == 0);
  CHECK(broker->stats("nope").status().code() == ErrorCode::kNotFound);
}

TEST_CASE("TheAckRecordIsCompactedAndSurvivesRestart") {
  TempDir dir;
  const Config config = broker_config(dir.path(), "events:1");
  {
    auto broker = open_broker(config, std::make_shared<ManualClock>());
    std::vector<Message> batch(1000, message("1"));
    for (int i = 0; i < 60; ++i) REQUIRE(broker->produce("events", batch, 0).ok());
    // Acknowledge every other message one by one (gaps keep the acked set large), then the rest.
    for (std::uint64_t o = 0; o < 60000; o += 2) {
      const std::vector<std::string> id{message_id(0, o)};
      REQUIRE(broker->ack("events", 0, "g", id).ok());
    }
    for (std::uint64_t o = 1; o < 50000; o += 2) {
      const std::vector<std::string> id{message_id(0, o)};
      REQUIRE(broker->ack("events", 0, "g", id).ok());
    }
  }
  const std::string group_dir = dir.path() + "/events/groups/g";
  CHECK(std::filesystem::exists(group_dir + "/partition-0.snapshot"));
  CHECK(std::filesystem::file_size(group_dir + "/partition-0.log") < (1u << 20));
  auto broker = open_broker(config, std::make_shared<ManualClock>());
  auto sub = subscribe(*broker, "g", with_timeout(1000, 100000));
  auto got = take_now(*sub, 100000);
  REQUIRE(got.size() == 5000);  // the odd offsets from 50001 on
  CHECK(got.front().offset == 50001);
  CHECK(got.back().offset == 59999);
  CHECK((*broker->stats())[0].partitions[0].groups[0].committed_offset == 50001);
}

TEST_CASE("AConsumerGroupFromTheBrokerSubscribesAcksNacksTouchesAndCounts") {
  TempDir dir;
  auto clock = std::make_shared<ManualClock>();
  auto broker = open_broker(broker_config(dir.path()), clock);
  produce_numbers(*broker, 3);
  auto group = broker->group("events", 0, "billing");
  REQUIRE(group.ok());
  ConsumerGroup& billing = **group;
  CHECK(billing.topic() == "events");
  CHECK(billing.partition() == 0u);
  CHECK(billing.name() == "billing");
  // The same group by name is the same object; another name is another group.
  CHECK(*broker->group("events", 0, "billing") == &billing);
  CHECK(*broker->group("events", 0, "audit") != &billing);
  CHECK(broker->group("events", 9, "billing").status().code() == ErrorCode::kNotFound);
  CHECK(broker->group("events", 0, "../x").status().code() == ErrorCode::kInvalidArgument);

  SubscribeOptions zero;
  zero.max_inflight = 0;
  CHECK(billing.subscribe(zero).status().code() == ErrorCode::kInvalidArgument);
  auto sub = billing.subscribe(with_timeout(1000));
  REQUIRE(sub.ok());
  CHECK(&(*sub)->group() == &billing);
  auto got = take_now(**sub);
  REQUIRE(got.size() == 3);

  // ack by id; a malformed id, an id of another partition or beyond the end acknowledges nothing.
  CHECK(billing.ack(std::vector<std::string>{"junk"}).status().code() == ErrorCode::kNotFound);
  CHECK(billing.ack(std::vector<std::string>{message_id(1, 0)}).status().code() == ErrorCode::kNotFound);
  CHECK(billing.ack(std::vector<std::string>{got[0].id, message_id(0, 99)}).status().code() ==
        ErrorCode::kNotFound);
  CHECK(billing.ack(std::vector<std::string>{}).status().code() == ErrorCode::kInvalidArgument);
  CHECK(*billing.ack(std::vector<std::string>{got[0].id}) == 1u);
  CHECK(*billing.ack(std::vector<std::string>{got[0].id}) == 0u);  // idempotent

  // touch postpones the timeout; nack gives the message back at once.
  clock->advance(milliseconds(900));
  REQUIRE(billing.touch(got[1].id).ok());
  clock->advance(milliseconds(900));
  broker->fire_due_timers();
  CHECK((*sub)->inflight() == 1u);  // got[2] timed out, got[1] was touched
  REQUIRE(billing.nack(got[1].id).ok());
  CHECK(billing.nack(got[1].id).code() == ErrorCode::kConflict);   // no longer in flight
  CHECK(billing.touch(got[0].id).code() == ErrorCode::kConflict);  // acknowledged
  CHECK(billing.nack(got[1].id, milliseconds(-1)).code() == ErrorCode::kInvalidArgument);
  auto again = take_now(**sub);
  CHECK(offsets_of(again) == std::vector<std::uint64_t>{1, 2});
  for (const auto& d : again) CHECK(d.delivery == 2u);

  const GroupStats stats = billing.stats();
  CHECK(stats.group == "billing");
  CHECK(stats.acked == 1u);
  CHECK(stats.delivered == 5u);
  CHECK(stats.redelivered == 2u);
  CHECK(stats.inflight == 2u);

  // Once the broker stops, the group refuses new subscriptions, and so does one opened afterwards.
  broker->shutdown();
  CHECK(billing.subscribe().status().code() == ErrorCode::kShuttingDown);
  auto late = broker->group("events", 1, "late");
  REQUIRE(late.ok());
  CHECK((*late)->subscribe().status().code() == ErrorCode::kShuttingDown);
  CHECK((*late)->ack(std::vector<std::string>{}).status().code() == ErrorCode::kInvalidArgument);
}

TEST_CASE("KeylessProducesTakeTurnsPerCallOnTheBrokerAndInRunsInTheClients") {
  detail::PartitionTurns per_call(1);
  std::vector<std::uint32_t> picked;
  for (int i = 0; i < 6; ++i) picked.push_back(per_call.next("t", 3));
  CHECK(picked == std::vector<std::uint32_t>{0, 1, 2, 0, 1, 2});
  CHECK(per_call.next("other", 3) == 0u);  // each topic has its own turns
  detail::PartitionTurns runs(2);
  picked.clear();
  for (int i = 0; i < 6; ++i) picked.push_back(runs.next("t", 2));
  CHECK(picked == std::vector<std::uint32_t>{0, 0, 1, 1, 0, 0});
}

TEST_CASE("AGroupConsumesAcrossSegmentsInRunsThatSpanTheirBoundaries") {
  TempDir dir;
  Config config = broker_config(dir.path());
  config.store.segment_bytes = 1024;
  auto broker = open_broker(config, std::make_shared<ManualClock>());
  produce_numbers(*broker, 300);
  auto sub = subscribe(*broker, "g", with_timeout(1000, 1000));
  std::vector<int> seen;
  while (true) {
    auto got = take_now(*sub, 37);  // runs that cross segment ends
    if (got.empty()) break;
    for (const auto& d : got) seen.push_back(number_of(d));
    CHECK(ack_all(*broker, got, "g") == got.size());
  }
  REQUIRE(seen.size() == 300u);
  for (int i = 0; i < 300; ++i) CHECK(seen[static_cast<std::size_t>(i)] == i);
  auto stats = broker->stats("events");
  REQUIRE(stats.ok());
  CHECK(stats->front().partitions.front().next_offset == 300u);
}

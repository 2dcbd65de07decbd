// One behavioural suite, run against every Queue backend: in-process, HTTP (a real mqd) and Redis
// Streams (a real redis-server).
#include <doctest/doctest.h>

#include <condition_variable>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <type_traits>

#include "queue_backends.h"

using namespace mq;
using namespace mq::testing;
using namespace std::chrono_literals;

#define MQ_BACKENDS InProcessBackend, HttpBackend, RedisBackend

TEST_CASE_TEMPLATE("ProducedMessagesAreReceivedWithTheirFieldsAndAckedOnesAreNotRedelivered", B,
                   MQ_BACKENDS) {
  B backend;
  auto queue = backend.queue();
  std::multiset<std::string> sent;
  std::map<std::string, std::uint32_t> keyed;  // payload -> partition its key maps to
  for (int i = 0; i < 8; ++i) {
    const std::string payload = "{\"n\":" + std::to_string(i) + "}";
    sent.insert(payload);
    produce_ok(*queue, payload);
  }
  for (int i = 0; i < 8; ++i) {
    const std::string key = "user-" + std::to_string(i);
    const std::string payload = "{\"k\":" + std::to_string(i) + "}";
    auto result = produce_ok(*queue, payload, key);
    CHECK(result.partition == partition_for_key(key, kTestPartitions));
    keyed[payload] = result.partition;
    sent.insert(payload);
  }
  std::vector<Message> batch;
  for (int i = 0; i < 5; ++i) {
    batch.push_back(Message{*Payload::parse("[" + std::to_string(i) + ", \"b\"]"), std::nullopt});
    sent.insert("[" + std::to_string(i) + ",\"b\"]");
  }
  auto batched = queue->produce("events", batch, 2u);
  REQUIRE_MESSAGE(batched.ok(), batched.status().to_string());
  CHECK(batched->partition == 2);
  CHECK(batched->ids.size() == 5);
  auto j = queue->produce_json("events", " { \"spaced\" : true } ");
  REQUIRE(j.ok());
  sent.insert("{\"spaced\":true}");

  auto consumer = open_consumer(*queue, group_options("g"));
  auto got = receive_n(*consumer, sent.size());
  REQUIRE(got.size() == sent.size());
  CHECK(payloads_of(got) == sent);
  std::map<std::uint32_t, std::vector<std::uint64_t>> offsets;
  std::set<std::pair<std::uint32_t, std::string>> ids;  // ids are unique within a partition
  for (const auto& m : got) {
    CHECK(m.topic == "events");
    CHECK(m.group == "g");
    CHECK(m.delivery == 1);
    CHECK(m.timestamp_ms > 1'600'000'000'000);
    CHECK(m.partition < kTestPartitions);
    ids.emplace(m.partition, m.id);
    offsets[m.partition].push_back(m.offset);
    if (auto it = keyed.find(m.payload); it != keyed.end()) {
      CHECK(m.partition == it->second);
      REQUIRE(m.key.has_value());
    } else {
      CHECK_FALSE(m.key.has_value());
    }
  }
  CHECK(ids.size() == got.size());
  for (auto& [partition, list] : offsets) {  // 0, 1, 2, ... in order within a partition
    for (std::size_t i = 0; i < list.size(); ++i) CHECK(list[i] == i);
  }
  CHECK(ack_ok(*queue, got) == got.size());
  CHECK(ack_ok(*queue, got) == 0);  // acknowledging twice is not an error
  consumer.reset();
  auto again = open_consumer(*queue, group_options("g"));
  CHECK(receive_for(*again, 300ms).empty());
}

TEST_CASE_TEMPLATE("TwoGroupsEachGetEveryMessage", B, MQ_BACKENDS) {
  B backend;
  auto queue = backend.queue();
  for (int i = 0; i < 12; ++i) produce_ok(*queue, std::to_string(i));
  auto first = open_consumer(*queue, group_options("first"));
  auto second = open_consumer(*queue, group_options("second"));
  auto a = receive_n(*first, 12);
  auto b = receive_n(*second, 12);
  CHECK(payloads_of(a) == payloads_of(b));
  CHECK(a.size() == 12);
  CHECK(ack_ok(*queue, a) == 12);
  CHECK(ack_ok(*queue, b) == 12);  // the groups' acknowledgements are separate
}

TEST_CASE_TEMPLATE("CompetingConsumersOfAGroupShareTheMessages", B, MQ_BACKENDS) {
  B backend;
  auto queue = backend.queue();
  constexpr int kMessages = 40;
  for (int i = 0; i < kMessages; ++i)
    produce_ok(*queue, std::to_string(i), std::nullopt, i % kTestPartitions);
  // One message in flight per partition each: the first consumer, never acking, holds at most 4.
  auto holder = open_consumer(*queue, group_options("g", 1));
  auto held = receive_n(*holder, kTestPartitions, 5s);
  CHECK(held.size() == kTestPartitions);
  CHECK(receive_for(*holder, 200ms).empty());
  auto worker = open_consumer(*queue, group_options("g", 1));
  std::vector<ReceivedMessage> worked;
  while (worked.size() < kMessages - held.size()) {
    auto got = receive_n(*worker, 1, 10s);
    REQUIRE(got.size() == 1);
    ack_ok(*queue, got);
    worked.push_back(got.front());
  }
  auto all = payloads_of(held);
  for (const auto& m : worked) all.insert(m.payload);
  std::multiset<std::string> expected;
  for (int i = 0; i < kMessages; ++i) expected.insert(std::to_string(i));
  CHECK(all == expected);  // each message went to exactly one of them
  ack_ok(*queue, held);
}

TEST_CASE_TEMPLATE("AMessageNotAcknowledgedInItsVisibilityTimeoutIsDeliveredAgain", B, MQ_BACKENDS) {
  B backend;
  auto queue = backend.queue();
  produce_ok(*queue, "\"late\"", std::nullopt, 1u);
  auto consumer = open_consumer(*queue, group_options("g", 100, 300ms));
  auto first = receive_n(*consumer, 1);
  REQUIRE(first.size() == 1);
  CHECK(first[0].delivery == 1);
  auto second = receive_n(*consumer, 1);  // the timeout passes while this waits
  REQUIRE(second.size() == 1);
  CHECK(second[0].id == first[0].id);
  CHECK(second[0].offset == first[0].offset);
  CHECK(second[0].payload == "\"late\"");
  CHECK(second[0].delivery == 2);
  CHECK(ack_ok(*queue, second) == 1);
}

TEST_CASE_TEMPLATE("ANackedMessageIsDeliveredAgainAtOnceAndNotInFlightAfterAck", B, MQ_BACKENDS) {
  B backend;
  auto queue = backend.queue();
  produce_ok(*queue, "{\"job\":1}");
  auto consumer = open_consumer(*queue, group_options("g", 100, 60s));
  auto first = receive_n(*consumer, 1);
  REQUIRE(first.size() == 1);
  CHECK(queue->touch(first[0]).ok());
  REQUIRE(queue->nack(first[0]).ok());
  const auto nacked_at = std::chrono::steady_clock::now();
  auto second = receive_n(*consumer, 1);
  REQUIRE(second.size() == 1);
  CHECK(std::chrono::steady_clock::now() - nacked_at < 10s);  // long before the 60 s timeout
  CHECK(second[0].id == first[0].id);
  CHECK(second[0].delivery == 2);
  CHECK(ack_ok(*queue, second) == 1);
  CHECK(queue->nack(second[0]).code() == ErrorCode::kConflict);
  CHECK(queue->touch(second[0]).code() == ErrorCode::kConflict);
}

TEST_CASE_TEMPLATE("ANackWithADelayRedeliversAfterIt", B, MQ_BACKENDS) {
  B backend;
  auto queue = backend.queue();
  produce_ok(*queue, "7");
  auto consumer = open_consumer(*queue, group_options("g", 100, 5s));
  auto first = receive_n(*consumer, 1);
  REQUIRE(first.size() == 1);
  // Timed from before the call: the delay starts when the queue handles the nack, and the answer
  // may reach this thread later than the redelivery reaches the consumer's.
  const auto nacked_at = std::chrono::steady_clock::now();
  REQUIRE(queue->nack(first[0], 400ms).ok());
  auto second = receive_n(*consumer, 1);
  REQUIRE(second.size() == 1);
  CHECK(std::chrono::steady_clock::now() - nacked_at >= 390ms);  // 390: clocks read in whole ms
  CHECK(second[0].id == first[0].id);
  ack_ok(*queue, second);
}

TEST_CASE_TEMPLATE("ClosingAConsumerHandsItsMessagesToTheOthersOfTheGroup", B, MQ_BACKENDS) {
  B backend;
  auto queue = backend.queue();
  produce_ok(*queue, "\"x\"");
  auto leaving = open_consumer(*queue, group_options("g", 100, 60s));
  auto taken = receive_n(*leaving, 1);
  REQUIRE(taken.size() == 1);
  leaving.reset();
  auto staying = open_consumer(*queue, group_options("g", 100, 60s));
  auto handed = receive_n(*staying, 1, 10s);  // long before the 60 s timeout
  REQUIRE(handed.size() == 1);
  CHECK(handed[0].id == taken[0].id);
  CHECK(handed[0].delivery == 2);
}

TEST_CASE_TEMPLATE("AckingAnIdThatNamesNoMessageFails", B, MQ_BACKENDS) {
  B backend;
  auto queue = backend.queue();
  produce_ok(*queue, "1", std::nullopt, 0u);
  ReceivedMessage bogus;
  bogus.topic = "events";
  bogus.group = "g";
  bogus.partition = 0;
  bogus.id = "not-an-id";
  auto acked = queue->ack(bogus);
  CHECK(acked.status().code() == ErrorCode::kNotFound);
}

TEST_CASE_TEMPLATE("BadNamesAreRefusedBeforeAnythingIsSent", B, MQ_BACKENDS) {
  B backend;
  auto queue = backend.queue();
  CHECK(queue->produce_json("../etc", "1").status().code() == ErrorCode::kInvalidArgument);
  CHECK(queue->produce_json("events", "{not json").status().code() == ErrorCode::kInvalidArgument);
  CHECK(queue->consume("events", group_options("bad group")).status().code() == ErrorCode::kInvalidArgument);
}

TEST_CASE_TEMPLATE("KeylessProducesStayOnAPartitionForARunOfCallsAndVisitThemAll", B, InProcessBackend,
                   HttpBackend) {
  B backend;
  auto queue = backend.queue();
  std::map<std::uint32_t, int> per_partition;
  std::vector<std::uint32_t> order;
  for (int i = 0; i < 64; ++i) {
    const auto p = produce_ok(*queue, std::to_string(i)).partition;
    per_partition[p]++;
    if (order.empty() || order.back() != p) order.push_back(p);
  }
  CHECK(per_partition.size() == kTestPartitions);  // every partition had its turn
  CHECK(order.size() == kTestPartitions);          // in runs of 16 calls, not call by call
}

TEST_CASE_TEMPLATE("AMessageWaitingInAConsumerPastItsVisibilityTimeoutIsNotHandedOut", B, InProcessBackend,
                   HttpBackend) {
  B backend;
  auto queue = backend.queue();
  // Two messages become visible at once (one batch) and reach `idle` together; the application
  // takes the first only. Past the visibility timeout the server gives the second to `other`, and
  // the copy still waiting in `idle` must not come out as well.
  auto idle = open_consumer(*queue, group_options("g", 2, 300ms));
  const std::vector<Message> batch{{*Payload::parse("\"first\""), std::nullopt},
                                   {*Payload::parse("\"second\""), std::nullopt}};
  REQUIRE(queue->produce("events", batch, 0u).ok());
  auto first = receive_n(*idle, 1);
  REQUIRE(first.size() == 1);
  CHECK(first[0].payload == "\"first\"");
  CHECK(ack_ok(*queue, first) == 1);
  auto other = open_consumer(*queue, group_options("g", 1, 60s));
  auto redelivered = receive_n(*other, 1, 10s);
  REQUIRE(redelivered.size() == 1);
  CHECK(redelivered[0].payload == "\"second\"");
  CHECK(redelivered[0].delivery >= 2);  // `idle` had it first
  CHECK(ack_ok(*queue, redelivered) == 1);
  // Nothing more for `other`; meanwhile the copy in `idle` gets 300 ms older still (over HTTP it
  // reached `idle` a little after the server sent it, so just past the timeout it could look fresh).
  CHECK(receive_for(*other, 300ms).empty());
  // The first delivery's copy is stale. (Over HTTP a later redelivery may still be in the socket,
  // sent while `idle` was not reading: at-least-once allows that one.)
  for (const auto& m : receive_for(*idle, 300ms)) CHECK(m.delivery >= 2);
}

TEST_CASE("AnInProcessQueueOnABrokerOwningNoPartitionOfATopicRefusesKeylessProduces") {
  TempDir dir;
  Config config = broker_config(dir.path(), "events:2");
  config.broker = {2, 3};  // broker 2 of 3 owns no partition of a 2-partition topic
  auto queue = Queue::in_process(open_broker(config));
  for (int i = 0; i < 3; ++i) CHECK_FALSE(queue->produce_json("events", "1").ok());
}

// --- Queue::read and Queue::seek -----------------------------------------------------------------

namespace {

ReadPage read_ok(Queue& queue, std::uint32_t partition, ReadFrom from, std::size_t limit,
                 const std::string& topic = "events") {
  auto page = queue.read(topic, partition, from, limit);
  REQUIRE_MESSAGE(page.ok(), page.status().to_string());
  return std::move(page).value();
}

ReadFrom at_offset(std::uint64_t offset) { return ReadFrom{offset, std::nullopt}; }
ReadFrom at_time(std::int64_t timestamp_ms) { return ReadFrom{std::nullopt, timestamp_ms}; }

std::uint64_t seek_ok(Queue& queue, std::uint32_t partition, const SeekTarget& target,
                      const std::string& group = "g") {
  auto position = queue.seek("events", partition, group, target);
  REQUIRE_MESSAGE(position.ok(), position.status().to_string());
  return *position;
}

SeekTarget to_offset(std::uint64_t offset) { return SeekTarget{offset, std::nullopt, std::nullopt}; }
SeekTarget to_time(std::int64_t timestamp_ms) { return SeekTarget{std::nullopt, timestamp_ms, std::nullopt}; }
SeekTarget to_position(SeekTarget::Position position) {
  return SeekTarget{std::nullopt, std::nullopt, position};
}

std::vector<std::uint64_t> offsets_of(const std::vector<ReceivedMessage>& messages) {
  std::vector<std::uint64_t> offsets;
  for (const auto& m : messages) offsets.push_back(m.offset);
  return offsets;
}

std::vector<std::uint64_t> range(std::uint64_t first, std::uint64_t end) {
  std::vector<std::uint64_t> out;
  for (auto o = first; o < end; ++o) out.push_back(o);
  return out;
}

// Returns once the wall clock (which stamps messages on every backend) is past `timestamp_ms`, so
// that what is produced next has a later timestamp.
void wait_for_clock_past(std::int64_t timestamp_ms) {
  auto now_ms = [] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  while (now_ms() <= timestamp_ms) std::this_thread::sleep_for(1ms);
}

// The first offset whose timestamp is at least `t`, given the timestamps by offset (0, 1, ...).
std::uint64_t first_at_or_after(const std::vector<std::int64_t>& stamps, std::int64_t t) {
  std::uint64_t offset = 0;
  while (offset < stamps.size() && stamps[offset] < t) ++offset;
  return offset;
}

ConsumeOptions one_partition(std::string group, std::uint32_t partition,
                             std::optional<std::chrono::milliseconds> visibility_timeout = std::nullopt) {
  ConsumeOptions options = group_options(std::move(group), 100, visibility_timeout);
  options.partitions = {partition};
  return options;
}

}  // namespace

TEST_CASE_TEMPLATE("ReadingAPartitionPagesThroughItInOffsetOrderAndDeliversNothing", B, MQ_BACKENDS) {
  B backend;
  auto queue = backend.queue();
  constexpr std::uint64_t kCount = 25;
  std::vector<ProduceResult> produced;
  for (std::uint64_t i = 0; i < kCount; ++i) {
    const auto key = i % 3 == 0 ? std::optional<std::string>("k" + std::to_string(i)) : std::nullopt;
    produced.push_back(produce_ok(*queue, "{\"n\":" + std::to_string(i) + "}", key, 1u));
  }
  produce_ok(*queue, "\"elsewhere\"", std::nullopt, 2u);  // another partition's message is not read

  std::vector<ReceivedMessage> all;
  ReadFrom from;  // the log start
  std::size_t pages = 0;
  for (; pages < 10; ++pages) {
    auto page = read_ok(*queue, 1, from, 10);
    CHECK(page.log_start_offset == 0);
    CHECK(page.next_offset == kCount);
    if (page.messages.empty()) break;
    CHECK(page.messages.size() == std::min<std::size_t>(10, kCount - all.size()));
    for (auto& m : page.messages) all.push_back(std::move(m));
    from = at_offset(all.back().offset + 1);
  }
  CHECK(pages == 3);  // 10, 10 and 5 messages, then an empty page
  REQUIRE(all.size() == kCount);
  for (std::uint64_t i = 0; i < kCount; ++i) {
    CAPTURE(i);
    const ReceivedMessage& m = all[i];
    CHECK(m.offset == i);
    CHECK(m.id == produced[i].ids.at(0));
    CHECK(m.payload == "{\"n\":" + std::to_string(i) + "}");
    CHECK(m.key == (i % 3 == 0 ? std::optional<std::string>("k" + std::to_string(i)) : std::nullopt));
    CHECK(m.topic == "events");
    CHECK(m.partition == 1);
    CHECK(m.group.empty());
    CHECK(m.delivery == 0);
    CHECK(m.timestamp_ms > 1'600'000'000'000);
  }
  CHECK(offsets_of(read_ok(*queue, 1, at_offset(7), 3).messages) == range(7, 10));
  auto past = read_ok(*queue, 1, at_offset(1000), 10);
  CHECK(past.messages.empty());
  CHECK(past.next_offset == kCount);
  CHECK(read_ok(*queue, 1, {}, kMaxReadLimit).messages.size() == kCount);

  // Reading delivered nothing: a new group gets every message, each for the first time.
  auto consumer = open_consumer(*queue, one_partition("g", 1));
  auto got = receive_n(*consumer, kCount);
  CHECK(offsets_of(got) == range(0, kCount));
  for (const auto& m : got) CHECK(m.delivery == 1);
  CHECK(ack_ok(*queue, got) == kCount);
}

TEST_CASE_TEMPLATE("ReadingFromATimeStartsAtTheFirstMessageStampedAtOrAfterIt", B, MQ_BACKENDS) {
  B backend;
  auto queue = backend.queue();
  // Three runs of four messages, each run produced after the clock passed the previous one's stamps.
  for (int run = 0; run < 3; ++run) {
    for (int i = 0; i < 4; ++i) produce_ok(*queue, std::to_string(run * 4 + i), std::nullopt, 3u);
    wait_for_clock_past(read_ok(*queue, 3, {}, 100).messages.back().timestamp_ms);
  }
  std::vector<std::int64_t> stamps;
  for (const auto& m : read_ok(*queue, 3, {}, 100).messages) stamps.push_back(m.timestamp_ms);
  REQUIRE(stamps.size() == 12);
  CHECK(stamps[4] > stamps[3]);
  CHECK(stamps[8] > stamps[7]);
  for (std::size_t i = 0; i < stamps.size(); ++i) {
    CAPTURE(i);
    const std::uint64_t first = first_at_or_after(stamps, stamps[i]);
    CHECK(offsets_of(read_ok(*queue, 3, at_time(stamps[i]), 100).messages) == range(first, 12));
  }
  CHECK(offsets_of(read_ok(*queue, 3, at_time(stamps[4]), 2).messages) == range(4, 6));
  CHECK(offsets_of(read_ok(*queue, 3, at_time(0), 100).messages) == range(0, 12));
  auto later = read_ok(*queue, 3, at_time(stamps.back() + 1), 100);
  CHECK(later.messages.empty());
  CHECK(later.next_offset == 12);
}

TEST_CASE_TEMPLATE("ReadAndSeekRefuseBadArgumentsAndUnknownPartitions", B, MQ_BACKENDS) {
  B backend;
  auto queue = backend.queue();
  produce_ok(*queue, "1", std::nullopt, 0u);
  auto read_code = [&](std::string_view topic, std::uint32_t partition, ReadFrom from, std::size_t limit) {
    return queue->read(topic, partition, from, limit).status().code();
  };
  CHECK(read_code("events", 0, {}, 0) == ErrorCode::kInvalidArgument);
  CHECK(read_code("events", 0, {}, kMaxReadLimit + 1) == ErrorCode::kInvalidArgument);
  CHECK(read_code("events", 0, ReadFrom{0, 0}, 10) == ErrorCode::kInvalidArgument);  // both
  CHECK(read_code("events", 0, at_time(-1), 10) == ErrorCode::kInvalidArgument);
  CHECK(read_code("bad topic", 0, {}, 10) == ErrorCode::kInvalidArgument);
  CHECK(read_code("events", kTestPartitions, {}, 10) == ErrorCode::kNotFound);
  CHECK(read_code("events", 0, {}, 10) == ErrorCode::kOk);

  auto seek_code = [&](std::string_view topic, std::uint32_t partition, std::string_view group,
                       const SeekTarget& target) {
    return queue->seek(topic, partition, group, target).status().code();
  };
  const auto earliest = to_position(SeekTarget::Position::kEarliest);
  CHECK(seek_code("events", 0, "g", SeekTarget{}) == ErrorCode::kInvalidArgument);
  CHECK(seek_code("events", 0, "g", SeekTarget{0, std::nullopt, SeekTarget::Position::kLatest}) ==
        ErrorCode::kInvalidArgument);
  CHECK(seek_code("events", 0, "g", to_time(-1)) == ErrorCode::kInvalidArgument);
  CHECK(seek_code("events", 0, "bad group", earliest) == ErrorCode::kInvalidArgument);
  CHECK(seek_code("events", 0, "", earliest) == ErrorCode::kInvalidArgument);
  CHECK(seek_code("bad topic", 0, "g", earliest) == ErrorCode::kInvalidArgument);
  CHECK(seek_code("events", kTestPartitions, "g", earliest) == ErrorCode::kNotFound);

  if constexpr (std::is_same_v<B, RedisBackend>) {
    // Redis keeps no list of topics: a topic nobody produced to is an empty partition, and a seek
    // makes its stream and group, as consume() does.
    auto page = read_ok(*queue, 0, {}, 10, "nobody");
    CHECK(page.messages.empty());
    CHECK(page.next_offset == 0);
    auto position = queue->seek("nobody", 0, "g", earliest);
    REQUIRE_MESSAGE(position.ok(), position.status().to_string());
    CHECK(*position == 0);
  } else {
    CHECK(read_code("nobody", 0, {}, 10) == ErrorCode::kNotFound);
    CHECK(seek_code("nobody", 0, "g", earliest) == ErrorCode::kNotFound);
  }
}

TEST_CASE_TEMPLATE("SeekingAGroupReplaysOrSkipsAndItsOpenConsumerFollows", B, MQ_BACKENDS) {
  B backend;
  auto queue = backend.queue();
  for (int i = 0; i < 10; ++i) produce_ok(*queue, std::to_string(i), std::nullopt, 0u);
  auto consumer = open_consumer(*queue, one_partition("g", 0));
  CHECK(ack_ok(*queue, receive_n(*consumer, 10)) == 10);

  // Earliest: everything again, in order, each a first delivery.
  CHECK(seek_ok(*queue, 0, to_position(SeekTarget::Position::kEarliest)) == 0);
  auto replayed = receive_n(*consumer, 10);
  CHECK(offsets_of(replayed) == range(0, 10));
  for (const auto& m : replayed) CHECK(m.delivery == 1);
  CHECK(ack_ok(*queue, replayed) == 10);

  // An offset: from there on.
  CHECK(seek_ok(*queue, 0, to_offset(6)) == 6);
  auto tail = receive_n(*consumer, 4);
  CHECK(offsets_of(tail) == range(6, 10));
  CHECK(ack_ok(*queue, tail) == 4);

  // Latest: nothing of the backlog, only what is produced afterwards. (With no consumer open: an
  // open one could take the backlog between the two seeks, and hand it out after the second.)
  consumer.reset();
  CHECK(seek_ok(*queue, 0, to_offset(2)) == 2);                                 // a backlog of 8 again ...
  CHECK(seek_ok(*queue, 0, to_position(SeekTarget::Position::kLatest)) == 10);  // ... skipped
  produce_ok(*queue, "10", std::nullopt, 0u);
  consumer = open_consumer(*queue, one_partition("g", 0));
  auto next = receive_n(*consumer, 1);
  CHECK(offsets_of(next) == std::vector<std::uint64_t>{10});
  CHECK(ack_ok(*queue, next) == 1);

  // A time: from the first message stamped at or after it.
  std::vector<std::int64_t> stamps;
  for (const auto& m : read_ok(*queue, 0, {}, 100).messages) stamps.push_back(m.timestamp_ms);
  const std::uint64_t from_time = first_at_or_after(stamps, stamps[5]);
  CHECK(seek_ok(*queue, 0, to_time(stamps[5])) == from_time);
  auto since = receive_n(*consumer, 11 - from_time);
  CHECK(offsets_of(since) == range(from_time, 11));
  ack_ok(*queue, since);

  // Past the end is the next offset; nothing comes.
  CHECK(seek_ok(*queue, 0, to_offset(1000)) == 11);
  CHECK(seek_ok(*queue, 0, to_time(stamps.back() + 60'000)) == 11);
  CHECK(receive_for(*consumer, 300ms).empty());

  // Another group is not moved by any of it; a seek creates a group that does not exist yet.
  CHECK(seek_ok(*queue, 0, to_offset(9), "late") == 9);
  auto late = open_consumer(*queue, one_partition("late", 0));
  CHECK(offsets_of(receive_n(*late, 2)) == range(9, 11));
}

TEST_CASE_TEMPLATE("AfterASeekEarlierDeliveriesAreNoLongerInFlight", B, InProcessBackend, HttpBackend) {
  B backend;
  auto queue = backend.queue();
  for (int i = 0; i < 3; ++i) produce_ok(*queue, std::to_string(i), std::nullopt, 0u);
  auto consumer = open_consumer(*queue, one_partition("g", 0, 60s));
  auto before = receive_n(*consumer, 3);
  REQUIRE(before.size() == 3);
  // To the end, so that nothing is delivered again: the three are not in flight any more (they
  // would be for a minute without the seek) ...
  CHECK(seek_ok(*queue, 0, to_position(SeekTarget::Position::kLatest)) == 3);
  CHECK(queue->nack(before[1]).code() == ErrorCode::kConflict);
  CHECK(queue->touch(before[1]).code() == ErrorCode::kConflict);
  // ... and count as acknowledged: an ack of one acknowledges nothing new, and none comes back.
  CHECK(ack_ok(*queue, {before[2]}) == 0);
  CHECK(receive_for(*consumer, 300ms).empty());
}

TEST_CASE("OnRedisASeekLeavesThePendingEntriesAlone") {
  RedisBackend backend;
  auto queue = backend.queue();
  for (int i = 0; i < 3; ++i) produce_ok(*queue, std::to_string(i), std::nullopt, 0u);
  auto consumer = open_consumer(*queue, one_partition("g", 0, 2s));
  auto before = receive_n(*consumer, 3);
  REQUIRE(before.size() == 3);
  CHECK(seek_ok(*queue, 0, to_offset(1)) == 1);
  // Still pending: touch works (XGROUP SETID does not change the pending-entries list).
  CHECK(queue->touch(before[0]).ok());
  // At or above the target: read again at once, as first deliveries.
  auto replayed = receive_n(*consumer, 2, 1500ms);
  CHECK(offsets_of(replayed) == range(1, 3));
  for (const auto& m : replayed) CHECK(m.delivery == 1);
  CHECK(ack_ok(*queue, replayed) == 2);
  // Below the target and never acknowledged: back after the visibility timeout.
  auto late = receive_n(*consumer, 1, 10s);
  CHECK(offsets_of(late) == std::vector<std::uint64_t>{0});
  CHECK(late.at(0).delivery == 2);
  CHECK(ack_ok(*queue, late) == 1);
}

// Queue::produce_async (and the single-message produce, which goes the same way): every message is
// answered with its own place, batches are shared between threads, and each partition stores a
// thread's messages in the order it handed them in.
TEST_CASE_TEMPLATE("ProduceAsyncAnswersEveryMessageWithItsPlaceAndKeepsEachThreadsOrderInAPartition", B,
                   MQ_BACKENDS) {
  B backend;
  auto queue = backend.queue();
  constexpr int kThreads = 4;
  constexpr int kPerThread = 100;
  std::vector<std::vector<ProduceResult>> results(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::future<Result<ProduceResult>>> answers;
      for (int i = 0; i < kPerThread; ++i) {
        const std::string payload = "{\"t\":" + std::to_string(t) + ",\"i\":" + std::to_string(i) + "}";
        answers.push_back(queue->produce_async("events", Message{*Payload::parse(payload), std::nullopt},
                                               static_cast<std::uint32_t>(t % 2)));
      }
      for (auto& answer : answers) {
        auto result = answer.get();
        CHECK_MESSAGE(result.ok(), result.status().to_string());
        if (result.ok()) results[t].push_back(*result);
      }
    });
  }
  for (auto& thread : threads) thread.join();

  // Keyed messages with a callback, and the single-message produce from several threads at once.
  std::mutex mutex;
  std::condition_variable answered;
  std::vector<std::pair<std::string, Result<ProduceResult>>> keyed;
  for (int i = 0; i < 8; ++i) {
    const std::string key = "user-" + std::to_string(i);
    queue->produce_async("events", Message{*Payload::parse("{\"k\":" + std::to_string(i) + "}"), key},
                         [&, key](Result<ProduceResult> result) {
                           std::lock_guard lock(mutex);
                           keyed.emplace_back(key, std::move(result));
                           answered.notify_all();
                         });
  }
  std::vector<std::thread> singles;
  for (int t = 0; t < 4; ++t) {
    singles.emplace_back([&, t] { produce_ok(*queue, "{\"single\":" + std::to_string(t) + "}"); });
  }
  for (auto& thread : singles) thread.join();
  {
    std::unique_lock lock(mutex);
    REQUIRE(answered.wait_for(lock, 10s, [&] { return keyed.size() == 8; }));
  }
  for (const auto& entry : keyed) {
    const auto& key = entry.first;  // not a structured binding: CAPTURE captures it
    const auto& result = entry.second;
    REQUIRE_MESSAGE(result.ok(), result.status().to_string());
    CHECK(result->partition == partition_for_key(key, kTestPartitions));
    CHECK(result->ids.size() == 1);
  }

  std::set<std::pair<std::uint32_t, std::uint64_t>> places;
  for (int t = 0; t < kThreads; ++t) {
    REQUIRE(results[t].size() == kPerThread);
    for (std::size_t i = 0; i < results[t].size(); ++i) {
      CHECK(results[t][i].partition == static_cast<std::uint32_t>(t % 2));
      CHECK(results[t][i].ids.size() == 1);
      if (i > 0) CHECK(results[t][i].first_offset > results[t][i - 1].first_offset);
      places.emplace(results[t][i].partition, results[t][i].first_offset);
    }
  }
  CHECK(places.size() == kThreads * kPerThread);  // no two messages at one place

  const std::size_t total = kThreads * kPerThread + 8 + 4;
  auto consumer = open_consumer(*queue, group_options("g", total));
  auto got = receive_n(*consumer, total);
  REQUIRE(got.size() == total);
  std::map<std::pair<std::uint32_t, std::uint64_t>, std::string> stored;
  for (const auto& m : got) stored[{m.partition, m.offset}] = m.payload;
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPerThread; ++i) {
      const auto& r = results[t][static_cast<std::size_t>(i)];
      CHECK(stored[{r.partition, r.first_offset}] ==
            "{\"t\":" + std::to_string(t) + ",\"i\":" + std::to_string(i) + "}");
    }
  }
}

TEST_CASE_TEMPLATE("AnAsyncMessageTheServerRefusesFailsAloneAndTheOthersOfItsBatchAreStored", B,
                   InProcessBackend, HttpBackend) {
  B backend;
  auto queue = backend.queue();
  std::vector<std::future<Result<ProduceResult>>> answers;
  const std::string too_long_key(70 * 1024, 'k');
  for (int i = 0; i < 41; ++i) {
    std::optional<std::string> key;
    if (i == 20) key = too_long_key;
    answers.push_back(
        queue->produce_async("events", Message{*Payload::parse(std::to_string(i)), key}, std::uint32_t{1}));
  }
  std::size_t stored = 0;
  for (int i = 0; i < 41; ++i) {
    auto result = answers[static_cast<std::size_t>(i)].get();
    if (i == 20) {
      CHECK(result.status().code() == ErrorCode::kInvalidArgument);
    } else {
      CHECK_MESSAGE(result.ok(), result.status().to_string());
      stored += result.ok();
    }
  }
  CHECK(stored == 40);
  auto consumer = open_consumer(*queue, group_options("g"));
  CHECK(receive_n(*consumer, 40).size() == 40);
  CHECK(receive_for(*consumer, 200ms).empty());
}

namespace {
ConsumeOptions on_partition(std::string group, std::uint32_t partition) {
  ConsumeOptions options = group_options(std::move(group));
  options.partitions = {partition};
  return options;
}
}  // namespace

TEST_CASE_TEMPLATE("HeadersAndDedupIdsGoThroughEveryBackend", B, MQ_BACKENDS) {
  B backend;
  auto queue = backend.queue();
  Message m{*Payload::parse("{\"n\":1}"), std::nullopt};
  m.headers = {{"trace-id", "t-1"}, {"content.type", "text/plain; ü"}};
  m.dedup_id = "order-1";
  auto first = queue->produce("events", std::span(&m, 1), 1u);
  REQUIRE_MESSAGE(first.ok(), first.status().to_string());
  CHECK(first->duplicates.empty());
  CHECK(first->offsets == std::vector<std::uint64_t>{first->first_offset});
  // The same id again, alone and in a batch with a new one: not stored again.
  auto again = queue->produce("events", std::span(&m, 1), 1u);
  REQUIRE(again.ok());
  CHECK(again->duplicates == std::vector<std::size_t>{0});
  CHECK(again->ids == first->ids);
  Message other{*Payload::parse("2"), std::nullopt};
  other.dedup_id = "order-2";
  std::vector<Message> batch{other, m};
  auto mixed = queue->produce("events", batch, 1u);
  REQUIRE(mixed.ok());
  CHECK(mixed->duplicates == std::vector<std::size_t>{1});
  CHECK(mixed->offsets[1] == first->first_offset);
  CHECK(mixed->ids[1] == first->ids[0]);
  // The single-message produce (batched with others) says so too.
  auto async = queue->produce("events", m, 1u);
  REQUIRE(async.ok());
  CHECK(async->duplicates == std::vector<std::size_t>{0});
  CHECK(async->first_offset == first->first_offset);
  // Keyless with a dedup id: the id's partition, on every backend.
  Message keyless{*Payload::parse("3"), std::nullopt};
  keyless.dedup_id = "where-am-i";
  auto placed = queue->produce("events", std::span(&keyless, 1));
  REQUIRE(placed.ok());
  CHECK(placed->partition == partition_for_key("where-am-i", kTestPartitions));

  auto consumer = open_consumer(*queue, on_partition("g", 1));
  auto got = receive_n(*consumer, 2);
  REQUIRE(got.size() == 2);
  CHECK(got[0].headers == m.headers);
  CHECK(got[1].headers.empty());
  CHECK_FALSE(got[0].deliver_at_ms);
  auto page = queue->read("events", 1, ReadFrom{}, 10);
  REQUIRE(page.ok());
  REQUIRE(page->messages.size() == 2);
  CHECK(page->messages[0].headers == m.headers);
}

TEST_CASE_TEMPLATE("BadMessageOptionsAreRefusedByEveryBackend", B, MQ_BACKENDS) {
  B backend;
  auto queue = backend.queue();
  auto refused = [&](Message m) {
    auto result = queue->produce("events", std::span(&m, 1), 0u);
    REQUIRE_FALSE(result.ok());
    CHECK(result.status().code() == ErrorCode::kInvalidArgument);
  };
  Message bad_header{*Payload::parse("1"), std::nullopt};
  bad_header.headers = {{"no spaces", "v"}};
  refused(bad_header);
  Message bad_id{*Payload::parse("1"), std::nullopt};
  bad_id.dedup_id = std::string(129, 'x');
  refused(bad_id);
  Message both{*Payload::parse("1"), std::nullopt};
  both.delay = 1ms;
  both.deliver_at_ms = 1;
  refused(both);
}

TEST_CASE_TEMPLATE("ADelayedMessageComesAfterItsTime", B, InProcessBackend, HttpBackend) {
  B backend;
  auto queue = backend.queue();
  Message late{*Payload::parse("\"late\""), std::nullopt};
  late.delay = 400ms;
  const auto sent = std::chrono::system_clock::now();
  REQUIRE(queue->produce("events", std::span(&late, 1), 0u).ok());
  produce_ok(*queue, "\"now\"", std::nullopt, 0u);
  auto consumer = open_consumer(*queue, on_partition("g", 0));
  auto first = receive_n(*consumer, 1);
  REQUIRE(first.size() == 1);
  CHECK(first[0].payload == "\"now\"");
  auto second = receive_n(*consumer, 1, 5s);
  REQUIRE(second.size() == 1);
  CHECK(second[0].payload == "\"late\"");
  CHECK(std::chrono::system_clock::now() - sent >= 400ms);
  REQUIRE(second[0].deliver_at_ms);
  CHECK(*second[0].deliver_at_ms >= second[0].timestamp_ms + 400);
}

TEST_CASE_TEMPLATE("OrderingByKeyHoldsAKeysNextMessageUntilItsPredecessorIsAcknowledged", B, InProcessBackend,
                   HttpBackend) {
  B backend;
  auto queue = backend.queue();
  std::vector<Message> batch;
  for (const char* key : {"a", "a", "b"}) batch.push_back(Message{*Payload::parse("1"), std::string(key)});
  REQUIRE(queue->produce("events", batch, 0u).ok());
  ConsumeOptions options = on_partition("g", 0);
  options.ordering = Ordering::kKey;
  auto consumer = open_consumer(*queue, options);
  auto got = receive_n(*consumer, 2);
  REQUIRE(got.size() == 2);
  CHECK(got[0].offset == 0);
  CHECK(got[1].offset == 2);
  CHECK(receive_for(*consumer, 300ms).empty());
  ack_ok(*queue, {got[0]});
  auto next = receive_n(*consumer, 1);
  REQUIRE(next.size() == 1);
  CHECK(next[0].offset == 1);
  // Another ordering for the same group is refused.
  ConsumeOptions unordered = on_partition("g", 0);
  unordered.ordering = Ordering::kNone;
  auto refused = queue->consume("events", unordered);
  if (refused.ok()) {  // HTTP learns it from the stream
    auto r = (*refused)->receive(10, 5s);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == ErrorCode::kConflict);
  } else {
    CHECK(refused.status().code() == ErrorCode::kConflict);
  }
}

TEST_CASE("TheRedisBackendRefusesWhatRedisCannotDoAndNamesItself") {
  RedisBackend backend;
  auto queue = backend.queue();
  Message late{*Payload::parse("1"), std::nullopt};
  late.delay = 10ms;
  auto produced = queue->produce("events", std::span(&late, 1), 0u);
  REQUIRE_FALSE(produced.ok());
  CHECK(produced.status().code() == ErrorCode::kInvalidArgument);
  CHECK(produced.status().message().find("redis backend") != std::string::npos);
  ConsumeOptions options = group_options("g");
  options.ordering = Ordering::kKey;
  auto consumer = queue->consume("events", options);
  REQUIRE_FALSE(consumer.ok());
  CHECK(consumer.status().message().find("redis backend") != std::string::npos);
}

TEST_CASE_TEMPLATE("ADeletedGroupStartsAnewOnEveryBackendAndStatsShowGroups", B, MQ_BACKENDS) {
  B backend;
  auto queue = backend.queue();
  for (int i = 0; i < 3; ++i) produce_ok(*queue, std::to_string(i), std::nullopt, 0u);
  {
    auto consumer = open_consumer(*queue, one_partition("g", 0));
    CHECK(ack_ok(*queue, receive_n(*consumer, 3)) == 3);
  }
  if constexpr (std::is_same_v<B, RedisBackend>) {
    auto stats = queue->stats();
    REQUIRE_FALSE(stats.ok());
    CHECK(stats.status().code() == ErrorCode::kInvalidArgument);
    CHECK(stats.status().message().find("redis backend") != std::string::npos);
  } else {
    auto stats = queue->stats("events");
    REQUIRE_MESSAGE(stats.ok(), stats.status().to_string());
    REQUIRE(stats->size() == 1);
    REQUIRE((*stats)[0].partitions.size() == 4);
    const PartitionStats& p0 = (*stats)[0].partitions[0];
    CHECK(p0.next_offset == 3);
    REQUIRE(p0.groups.size() == 1);
    CHECK(p0.groups[0].group == "g");
    CHECK(p0.groups[0].committed_offset == 3);
    CHECK(queue->stats("nothing").status().code() == ErrorCode::kNotFound);
  }
  auto deleted = queue->delete_group("events", "g");
  REQUIRE_MESSAGE(deleted.ok(), deleted.status().to_string());
  CHECK(*deleted);
  auto again = queue->delete_group("events", "g");
  REQUIRE(again.ok());
  CHECK_FALSE(*again);
  CHECK(queue->delete_group("events", "..").status().code() == ErrorCode::kInvalidArgument);
  // Consumed again, the group starts anew (from the earliest message).
  auto consumer = open_consumer(*queue, one_partition("g", 0));
  CHECK(offsets_of(receive_n(*consumer, 3)) == range(0, 3));
}

TEST_CASE_TEMPLATE("RedriveRefusesWhatIsNotADeadLetterTopicOnEveryBackend", B, MQ_BACKENDS) {
  B backend;
  auto queue = backend.queue();
  produce_ok(*queue, "1", std::nullopt, 0u);
  auto refused = queue->redrive("events", 0);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == ErrorCode::kInvalidArgument);
  if constexpr (std::is_same_v<B, RedisBackend>) {
    CHECK(refused.status().message().find("redis backend") != std::string::npos);
  }
}

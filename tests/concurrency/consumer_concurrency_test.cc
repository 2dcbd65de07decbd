// Consumer groups with real threads and the real timer thread: competing consumers, timeouts that
// fire by themselves, prompt hand-over when a subscription ends, and shutdown. Every wait is a
// bounded wait on an event (next() returning), never a sleep.
#include <doctest/doctest.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "broker_helpers.h"
#include "groups/group_state.h"
#include "groups/message_ids.h"  // ids of messages not delivered
#include "groups/timer.h"
#include "temp_dir.h"

using namespace mq;
using mq::detail::message_id;
using namespace mq::testing;
using std::chrono::milliseconds;
using std::chrono::seconds;

TEST_CASE("CompetingConsumerThreadsGetEveryMessageOncePerGroup") {
  TempDir dir;
  Config config = broker_config(dir.path(), "events:1");
  config.store.fsync = FsyncMode::kAlways;
  auto broker = open_broker(config);
  constexpr int kMessages = 1000;
  std::thread producer([&] { produce_numbers(*broker, kMessages); });
  std::mutex mutex;
  std::map<std::string, std::multiset<int>> seen;  // group -> numbers
  std::vector<std::thread> consumers;
  for (const std::string group : {"g1", "g1", "g2", "g2"}) {
    consumers.emplace_back([&, group] {
      auto sub = subscribe(*broker, group);
      while (true) {
        {
          std::lock_guard lock(mutex);
          if (seen[group].size() >= kMessages) return;
        }
        auto got = sub->next(16, milliseconds(200));
        REQUIRE(got.ok());
        ack_all(*broker, *got, group);
        std::lock_guard lock(mutex);
        for (const auto& d : *got) seen[group].insert(number_of(d));
      }
    });
  }
  producer.join();
  for (auto& c : consumers) c.join();
  for (const std::string group : {"g1", "g2"}) {
    CAPTURE(group);
    CHECK(seen[group].size() == kMessages);
    CHECK(std::set<int>(seen[group].begin(), seen[group].end()).size() == kMessages);
  }
}

TEST_CASE("TheTimerRedeliversByItselfAfterTheVisibilityTimeout") {
  TempDir dir;
  auto broker = open_broker(broker_config(dir.path()));
  produce_numbers(*broker, 1);
  SubscribeOptions quick;
  quick.visibility_timeout = milliseconds(50);
  auto sub = subscribe(*broker, "g", quick);
  auto first = sub->next(1, seconds(10));
  REQUIRE(first.ok());
  REQUIRE(first->size() == 1);
  const auto start = std::chrono::steady_clock::now();
  auto again = sub->next(1, seconds(10));  // returns when the timer thread gives it back
  REQUIRE(again.ok());
  REQUIRE(again->size() == 1);
  CHECK((*again)[0].delivery == 2);
  CHECK(std::chrono::steady_clock::now() - start >= milliseconds(40));
}

TEST_CASE("AWaitingConsumerGetsMessagesPromptlyWhenAnotherSubscriptionEnds") {
  TempDir dir;
  auto broker = open_broker(broker_config(dir.path()));
  produce_numbers(*broker, 3);
  auto holder = subscribe(*broker, "g");
  REQUIRE(take_now(*holder).size() == 3);
  auto waiter = subscribe(*broker, "g");
  std::atomic<bool> received{false};
  std::thread waiting([&] {
    auto got = waiter->next(10, seconds(20));  // far shorter than the 30 s visibility timeout
    REQUIRE(got.ok());
    CHECK(got->size() == 3);
    received = true;
  });
  const auto start = std::chrono::steady_clock::now();
  holder.reset();
  waiting.join();
  CHECK(received);
  CHECK(std::chrono::steady_clock::now() - start < seconds(5));
}

TEST_CASE("AConsumerWaitingAtItsMaxInflightGoesOnWhenItsAckFreesRoom") {
  TempDir dir;
  auto broker = open_broker(broker_config(dir.path()));
  produce_numbers(*broker, 2);
  SubscribeOptions one;
  one.max_inflight = 1;
  auto sub = subscribe(*broker, "g", one);
  auto first = take_now(*sub);
  REQUIRE(first.size() == 1);
  std::thread waiting([&] {
    auto got = sub->next(1, seconds(20));  // full: waits until the ack below frees room
    REQUIRE(got.ok());
    REQUIRE(got->size() == 1);
    CHECK((*got)[0].offset == 1);
  });
  ack_all(*broker, first, "g");
  waiting.join();
}

TEST_CASE("EachNewMessageWakesOneOfManyWaitingConsumersAndNoneIsLeftBehind") {
  TempDir dir;
  auto broker = open_broker(broker_config(dir.path()));
  constexpr int kConsumers = 8;
  constexpr int kMessages = 400;
  std::mutex mutex;
  std::condition_variable all_received;
  int received = 0;  // GUARDED_BY(mutex)
  std::vector<std::thread> consumers;
  for (int c = 0; c < kConsumers; ++c) {
    // Subscribed here, not in the thread: a thread that starts late (a slow sanitizer build) must
    // still count among the consumers, and must not find the broker already stopping.
    consumers.emplace_back([&, sub = subscribe(*broker, "g")] {
      while (true) {
        // A long wait: a lost wake-up would leave messages undelivered far past the bound below.
        auto got = sub->next(3, seconds(30));
        if (!got.ok()) return;  // shutting down
        ack_all(*broker, *got, "g");
        std::lock_guard lock(mutex);
        received += static_cast<int>(got->size());
        all_received.notify_all();
      }
    });
  }
  for (int i = 0; i < kMessages; i += 4) {
    std::vector<Message> batch(4, message("{\"n\":1}"));
    REQUIRE(broker->produce("events", batch, 0).ok());
  }
  {
    std::unique_lock lock(mutex);
    CHECK(all_received.wait_for(lock, seconds(15), [&] { return received == kMessages; }));
  }
  broker->shutdown();
  for (auto& c : consumers) c.join();
  auto stats = broker->stats("events");
  CHECK((*stats)[0].partitions[0].groups[0].committed_offset == kMessages);
  CHECK((*stats)[0].partitions[0].groups[0].redelivered == 0);
}

TEST_CASE("AProducedMessageWakesAWaitingConsumer") {
  TempDir dir;
  auto broker = open_broker(broker_config(dir.path()));
  auto sub = subscribe(*broker, "g");
  std::thread producer([&] { produce_numbers(*broker, 1, 42); });
  auto got = sub->next(1, seconds(20));
  producer.join();
  REQUIRE(got.ok());
  REQUIRE(got->size() == 1);
  CHECK(number_of((*got)[0]) == 42);
}

TEST_CASE("EveryAppendWakesTheConsumerWaitingForItEvenWhenItLandsAsTheConsumerDecidesToWait") {
  // An append takes the group's lock to wake a consumer only when one counts itself as waiting; a
  // consumer counts itself and then looks at the partition's end once more (GroupState::take). Here
  // one message at a time goes to a lone consumer: the producer appends as soon as the previous
  // one arrived, the consumer spins a varying while before it asks for the next, so that the
  // append lands before, during and after the consumer's decision to wait. A lost wake-up would
  // hold one round for the whole 30 s wait.
  TempDir dir;
  auto broker = open_broker(broker_config(dir.path()));
  auto sub = subscribe(*broker, "g");
  constexpr int kRounds = 5000;
  std::atomic<int> received{0};
  std::atomic<std::int64_t> slowest_ms{0};
  std::atomic<bool> consumer_ended{false};
  // A few microseconds of work, varying from call to call (a cheap generator: no sleeps, no clock).
  auto spin = [](std::uint64_t& state, std::uint64_t spread) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    volatile std::uint64_t sink = 0;
    for (std::uint64_t n = (state >> 33) % spread; n > 0; --n) sink = sink + n;
  };
  std::thread consumer([&] {
    struct EndMark {
      std::atomic<bool>& ended;
      ~EndMark() { ended = true; }
    } end_mark{consumer_ended};
    std::uint64_t state = 7;
    for (int i = 0; i < kRounds; ++i) {
      const auto start = std::chrono::steady_clock::now();
      auto got = sub->next(1, seconds(30));
      const auto waited = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start);
      if (!got.ok() || got->size() != 1 || number_of((*got)[0]) != i) return;
      slowest_ms = std::max<std::int64_t>(slowest_ms.load(), waited.count());
      ack_all(*broker, *got, "g");
      received = i + 1;
      spin(state, 6000);
    }
  });
  std::uint64_t state = 1;
  for (int i = 0; i < kRounds; ++i) {
    while (received.load() < i && !consumer_ended) std::this_thread::yield();  // the previous one arrived
    if (consumer_ended) break;  // it got something else: the checks below say what
    spin(state, 500);
    produce_numbers(*broker, 1, i);
  }
  consumer.join();
  CHECK(received.load() == kRounds);
  CHECK(slowest_ms.load() < 5'000);
}

// One GroupState on partition 0 of "events", opened directly (no Broker) so that a test can set the
// test-only seams of its GroupContext: `seams` fills them in before the group opens.
class GroupWithSeams {
 public:
  explicit GroupWithSeams(const std::function<void(detail::GroupContext&)>& seams,
                          std::uint64_t segment_bytes = StoreOptions{}.segment_bytes) {
    options_.data_dir = dir_.path();
    options_.fsync = FsyncMode::kNever;
    options_.segment_bytes = segment_bytes;
    auto store = LogStore::open(options_);
    REQUIRE(store.ok());
    store_ = std::move(*store);
    auto partition = store_->partition("events", 0);
    REQUIRE(partition.ok());
    partition_ = *partition;
    detail::GroupContext context;
    context.partition = partition_;
    context.topic = "events";
    context.group = "g";
    context.timer = &timer_;
    context.dead_letter = [](const Message&) { return Status{}; };
    seams(context);
    auto group = detail::GroupState::open(std::move(context), *file_system_, options_,
                                          dir_.path() + "/groups", StartPosition::kEarliest);
    REQUIRE(group.ok());
    group_ = std::move(*group);
  }
  detail::GroupState& group() { return *group_; }
  Partition& partition() { return *partition_; }
  std::uint64_t subscribe() {
    auto subscriber = group_->subscribe(seconds(30), 10);
    REQUIRE(subscriber.ok());
    return *subscriber;
  }

 private:
  TempDir dir_;
  StoreOptions options_;
  std::unique_ptr<LogStore> store_;
  Partition* partition_ = nullptr;
  Timer timer_{make_steady_clock(), /*run_thread=*/false};
  std::shared_ptr<FileSystem> file_system_ = make_posix_file_system();
  std::unique_ptr<detail::GroupState> group_;
};

TEST_CASE("AnAppendLandingJustBeforeTheConsumerCountsItselfAsWaitingIsSeenByItsSecondLook") {
  // The one moment the fast path of the append listener depends on, made to happen every time: the
  // append lands after the consumer's look found nothing and before it counts itself as waiting,
  // so its listener sees no waiter and wakes nobody. The consumer's second look must find it (it
  // would otherwise wait out the whole 20 s).
  int appended_in_between = 0;
  Partition* partition = nullptr;
  GroupWithSeams fixture([&](detail::GroupContext& context) {
    partition = context.partition;
    context.before_counting_as_waiting = [&] {
      if (appended_in_between++ > 0) return;
      REQUIRE(partition->append(message(R"({"n":7})")).ok());
    };
  });
  const std::uint64_t subscriber = fixture.subscribe();
  const auto start = std::chrono::steady_clock::now();
  auto got = fixture.group().take(subscriber, 1, seconds(20));
  const auto took = std::chrono::steady_clock::now() - start;
  REQUIRE(got.ok());
  CHECK(appended_in_between >= 1);
  REQUIRE(got->size() == 1);
  CHECK(number_of((*got)[0]) == 7);
  CHECK(took < seconds(10));
  fixture.group().unsubscribe(subscriber);
}

TEST_CASE(
    "MessagesChosenFromRecordsReadAheadKeepTheirBytesWhenASeekDropsTheReadAheadBeforeTheyAreDelivered") {
  // A take delivers new messages from the records its group read ahead, not from a second read. Here
  // a seek drops that read ahead, and another take reads the same offsets again, between the first
  // take's choice and its deliveries: the first take's messages must still have their own bytes
  // (under AddressSanitizer, a batch freed too early is a use after free).
  detail::GroupState* group = nullptr;
  std::uint64_t second_subscriber = 0;
  std::vector<int> second_take;
  int interruptions = 0;
  GroupWithSeams fixture([&](detail::GroupContext& context) {
    context.after_choosing = [&] {
      if (interruptions++ > 0) return;  // the second take below runs this too
      REQUIRE(group->seek(0).ok());
      auto again = group->take(second_subscriber, 3, seconds(5));
      REQUIRE(again.ok());
      for (const Delivery& d : *again) second_take.push_back(number_of(d));
    };
  });
  group = &fixture.group();
  for (int n = 0; n < 3; ++n)
    REQUIRE(fixture.partition().append(message(R"({"n":)" + std::to_string(n) + "}")).ok());
  const std::uint64_t first = fixture.subscribe();
  second_subscriber = fixture.subscribe();
  auto got = group->take(first, 2, seconds(5));
  REQUIRE(got.ok());
  CHECK(interruptions == 2);
  REQUIRE(got->size() == 2);
  CHECK(number_of((*got)[0]) == 0);
  CHECK(number_of((*got)[1]) == 1);
  CHECK((*got)[1].offset == 1);
  CHECK(second_take == std::vector<int>{0, 1, 2});
  group->unsubscribe(first);
  group->unsubscribe(second_subscriber);
}

TEST_CASE("MessagesChosenFromRecordsReadAheadAreNotDeliveredWhenRetentionDeletesThemBeforeTheyAreDelivered") {
  // As for records read back: what retention deleted between the choice and the delivery is gone
  // for the group too, even though its bytes are still at hand in the batch read ahead.
  Partition* partition = nullptr;
  int interruptions = 0;
  GroupWithSeams fixture(
      [&](detail::GroupContext& context) {
        partition = context.partition;
        context.after_choosing = [&] {
          if (interruptions++ > 0) return;
          RetentionRule rule;
          rule.delete_below = 20;
          REQUIRE(partition->apply_retention(rule).ok());
        };
      },
      /*segment_bytes=*/1024);  // about 7 records of 100-byte payloads per segment
  for (int n = 0; n < 40; ++n) {
    REQUIRE(
        partition
            ->append(message(R"({"n":)" + std::to_string(n) + R"(,"pad":")" + std::string(80, 'x') + "\"}"))
            .ok());
  }
  REQUIRE(partition->log_start_offset() == 0);
  const std::uint64_t subscriber = fixture.subscribe();
  auto got = fixture.group().take(subscriber, 3, seconds(5));
  REQUIRE(got.ok());
  const std::uint64_t log_start = partition->log_start_offset();
  REQUIRE(log_start > 2);  // offsets 0-2, the ones chosen, were deleted
  CHECK(got->empty());
  auto next = fixture.group().take(subscriber, 3, seconds(5));
  REQUIRE(next.ok());
  REQUIRE_FALSE(next->empty());
  CHECK(next->front().offset == log_start);
  CHECK(number_of(next->front()) == static_cast<int>(log_start));
  fixture.group().unsubscribe(subscriber);
}

TEST_CASE("ShutdownEndsWaitsWithShuttingDown") {
  TempDir dir;
  auto broker = open_broker(broker_config(dir.path()));
  auto sub = subscribe(*broker, "g");
  std::thread waiting([&] {
    auto got = sub->next(1, seconds(30));
    CHECK(got.status().code() == ErrorCode::kShuttingDown);
  });
  broker->shutdown();
  waiting.join();
  CHECK(broker->subscribe("events", 0, "g", {}).status().code() == ErrorCode::kShuttingDown);
  // Pending work still completes: produce and ack keep working during shutdown.
  CHECK(broker->produce("events", std::vector<Message>{message("1")}, 0).ok());
}

// Issue 10, defect 7: compaction replaced the journal's log while another acknowledging thread read
// its size without the journal's lock (TSan saw the race). Enough acks from several threads to
// compact the journal (1 MiB) several times; every acknowledgement must survive a reopen.
TEST_CASE("ConcurrentAcksWhileTheJournalCompactsLoseNothing") {
  TempDir dir;
  const Config config = broker_config(dir.path(), "events:1");
  constexpr int kThreads = 4;
  constexpr int kPerThread = 6000;
  {
    auto broker = open_broker(config);
    std::vector<Message> batch;
    for (int i = 0; i < kThreads * kPerThread; ++i) batch.push_back(message(std::to_string(i)));
    REQUIRE(broker->produce("events", batch, 0).ok());
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          const std::vector<std::string> id{message_id(0, static_cast<std::uint64_t>(i * kThreads + t))};
          if (!broker->ack("events", 0, "g", id).ok()) ++failures;
        }
      });
    }
    for (auto& th : threads) th.join();
    CHECK(failures == 0);
  }
  auto broker = open_broker(config);
  auto stats = broker->stats("events");
  REQUIRE(stats.ok());
  REQUIRE((*stats)[0].partitions[0].groups.size() == 1);
  CHECK((*stats)[0].partitions[0].groups[0].committed_offset == kThreads * kPerThread);
}

// API.md "Message options" in the library: headers, delayed delivery (with the hand-driven clock)
// and deduplication, through the Broker, across restarts and segments; the record options reader.
#include <doctest/doctest.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "broker_helpers.h"
#include "common/mapped_memory.h"
#include "common/siphash.h"
#include "forwarding_file_system.h"
#include "groups/key_queues.h"
#include "storage/dedup_window.h"
#include "storage/partition_log.h"
#include "storage/record_format.h"
#include "temp_dir.h"

using namespace mq;
using namespace mq::testing;
using nlohmann::json;
using std::chrono::milliseconds;

namespace {

Message delayed_until(std::string_view payload, std::int64_t deliver_at_ms) {
  Message m = message(payload);
  m.deliver_at_ms = deliver_at_ms;
  return m;
}

Message with_dedup_id(std::string_view payload, std::string id) {
  Message m = message(payload);
  m.dedup_id = std::move(id);
  return m;
}

ProduceResult produce(Broker& broker, std::vector<Message> messages,
                      std::optional<std::uint32_t> partition = 0) {
  auto result = broker.produce("events", messages, partition);
  REQUIRE_MESSAGE(result.ok(), result.status().to_string());
  return std::move(result.value());
}

GroupStats group_stats(Broker& broker, const std::string& group, std::uint32_t partition = 0) {
  auto stats = broker.stats("events");
  REQUIRE(stats.ok());
  for (const auto& g : (*stats)[0].partitions[partition].groups) {
    if (g.group == group) return g;
  }
  FAIL("no stats for group " << group);
  return {};
}

}  // namespace

TEST_CASE("ADelayedMessageWaitsForItsTimeWhileTheMessagesAfterItFlow") {
  TempDir dir;
  auto clock = std::make_shared<ManualClock>();
  auto broker = open_broker(broker_config(dir.path()), clock);
  const std::int64_t due = clock->system_ms() + 10'000;
  produce(*broker, {delayed_until(R"({"n":0})", due)});
  produce_numbers(*broker, 2, 1);
  auto sub = subscribe(*broker, "g");
  auto first = take_now(*sub);
  CHECK(offsets_of(first) == std::vector<std::uint64_t>{1, 2});
  ack_all(*broker, first, "g");
  GroupStats stats = group_stats(*broker, "g");
  CHECK(stats.delayed == 1);
  CHECK(stats.inflight == 0);
  CHECK(stats.committed_offset == 0);  // cannot pass a message that is not acknowledged
  CHECK(stats.lag == 3);

  clock->advance(milliseconds(9'999));
  broker->fire_due_timers();
  CHECK(take_now(*sub).empty());
  clock->advance(milliseconds(1));
  broker->fire_due_timers();
  auto late = take_now(*sub);
  REQUIRE(late.size() == 1);
  CHECK(late[0].offset == 0);
  CHECK(late[0].delivery == 1);
  CHECK(json::parse(late[0].record)["deliver_at"] == due);
  CHECK(group_stats(*broker, "g").delayed == 0);
  ack_all(*broker, late, "g");
  stats = group_stats(*broker, "g");
  CHECK(stats.committed_offset == 3);
  CHECK(stats.lag == 0);
}

TEST_CASE("ADelayCountsFromWhenTheMessageIsStoredAndEveryGroupWaits") {
  TempDir dir;
  auto clock = std::make_shared<ManualClock>();
  auto broker = open_broker(broker_config(dir.path()), clock);
  Message m = message(R"({"n":0})");
  m.delay = milliseconds(60'000);
  produce(*broker, {m});
  auto a = subscribe(*broker, "a");
  auto b = subscribe(*broker, "b");
  CHECK(take_now(*a).empty());
  CHECK(take_now(*b).empty());
  // The record's time is the real one; the clock's wall time started from it a moment earlier.
  clock->advance(milliseconds(59'000));
  broker->fire_due_timers();
  CHECK(take_now(*a).empty());
  clock->advance(milliseconds(2'000));
  broker->fire_due_timers();
  CHECK(take_now(*a).size() == 1);
  CHECK(take_now(*b).size() == 1);
}

TEST_CASE("ADelayedMessageStaysDelayedAcrossARestartAndAnAckBeforeItsTimeDropsIt") {
  TempDir dir;
  const Config config = broker_config(dir.path());
  std::int64_t due = 0;
  {
    auto clock = std::make_shared<ManualClock>();
    auto broker = open_broker(config, clock);
    due = clock->system_ms() + 5'000;
    auto produced = produce(*broker, {delayed_until(R"({"n":0})", due), delayed_until(R"({"n":1})", due)});
    auto sub = subscribe(*broker, "g");
    CHECK(take_now(*sub).empty());
    CHECK(group_stats(*broker, "g").delayed == 2);
    // Acknowledged before it is due (a consumer that knows its id): it is never delivered.
    CHECK(*broker->ack("events", 0, "g", std::vector<std::string>{produced.ids[1]}) == 1);
    CHECK(group_stats(*broker, "g").delayed == 1);
  }
  auto clock = std::make_shared<ManualClock>();
  auto broker = open_broker(config, clock);
  auto sub = subscribe(*broker, "g");
  CHECK(take_now(*sub).empty());
  CHECK(group_stats(*broker, "g").delayed == 1);
  clock->advance(milliseconds(due - clock->system_ms()));
  broker->fire_due_timers();
  auto got = take_now(*sub);
  REQUIRE(got.size() == 1);
  CHECK(number_of(got[0]) == 0);
}

TEST_CASE("ASeekForgetsWhatWaitedAndFindsTheDelayedMessagesAgain") {
  TempDir dir;
  auto clock = std::make_shared<ManualClock>();
  auto broker = open_broker(broker_config(dir.path()), clock);
  produce(*broker, {delayed_until(R"({"n":0})", clock->system_ms() + 1'000)});
  produce_numbers(*broker, 1, 1);
  auto sub = subscribe(*broker, "g");
  ack_all(*broker, take_now(*sub), "g");
  REQUIRE(broker->seek("events", 0, "g", SeekTarget{0, std::nullopt, std::nullopt}).ok());
  auto again = take_now(*sub);
  CHECK(offsets_of(again) == std::vector<std::uint64_t>{1});
  CHECK(group_stats(*broker, "g").delayed == 1);
  clock->advance(milliseconds(1'000));
  broker->fire_due_timers();
  CHECK(offsets_of(take_now(*sub)) == std::vector<std::uint64_t>{0});
}

TEST_CASE("AGroupHoldsBackAtMostMaxHeldMessagesAndReadsOnWhenOneGoes") {
  TempDir dir;
  Config config = broker_config(dir.path());
  config.groups.max_held_messages = 2;
  auto clock = std::make_shared<ManualClock>();
  auto broker = open_broker(config, clock);
  const std::int64_t now = clock->system_ms();
  produce(*broker, {delayed_until("0", now + 100), delayed_until("1", now + 200), message("2")});
  auto sub = subscribe(*broker, "g");
  CHECK(take_now(*sub).empty());  // two held back: it reads no further
  CHECK(group_stats(*broker, "g").delayed == 2);
  clock->advance(milliseconds(100));
  broker->fire_due_timers();
  CHECK(offsets_of(take_now(*sub)) == std::vector<std::uint64_t>{0, 2});
}

TEST_CASE("DelayAndDeliverAtAreChecked") {
  TempDir dir;
  auto broker = open_broker(broker_config(dir.path()));
  auto refused = [&](Message m, std::string_view words) {
    auto result = broker->produce("events", std::vector<Message>{message("1"), m}, 0);
    REQUIRE_FALSE(result.ok());
    CHECK(result.status().code() == ErrorCode::kInvalidArgument);
    CHECK(result.status().message().find(words) != std::string::npos);
  };
  Message both = message("1");
  both.delay = milliseconds(1);
  both.deliver_at_ms = 1;
  refused(both, "not both");
  Message too_long = message("1");
  too_long.delay = kMaxDeliveryDelay + milliseconds(1);
  refused(too_long, "delay_ms");
  Message negative = message("1");
  negative.delay = milliseconds(-1);
  refused(negative, "delay_ms");
  refused(delayed_until("1", -5), "deliver_at");
  const auto now =
      std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch());
  refused(delayed_until("1", (now + kMaxDeliveryDelay + milliseconds(60'000)).count()), "deliver_at");
  CHECK(broker->stats("events")->front().partitions[0].next_offset == 0);  // nothing of a refused batch
  // A deliver_at in the past is due at once, and is not written.
  auto past = produce(*broker, {delayed_until(R"({"n":0})", 1)});
  auto read = broker->read("events", 0, ReadFrom{}, 10);
  REQUIRE(read.ok());
  CHECK(json::parse(read->messages[0].line).contains("deliver_at") == false);
}

TEST_CASE("ADuplicateIsNotStoredAgainAndItsAnswerNamesTheStoredMessage") {
  TempDir dir;
  auto broker = open_broker(broker_config(dir.path()));
  auto first = produce(*broker, {with_dedup_id(R"({"n":0})", "order-1")});
  CHECK(first.duplicates.empty());
  auto again = produce(*broker, {with_dedup_id(R"({"n":99})", "order-1")});
  CHECK(again.duplicates == std::vector<std::size_t>{0});
  CHECK(again.ids == first.ids);
  CHECK(again.first_offset == first.first_offset);
  // In a batch: earlier ones, and repeats within the batch itself.
  auto batch = produce(*broker, {with_dedup_id("1", "order-2"), with_dedup_id("2", "order-1"), message("3"),
                                 with_dedup_id("4", "order-2")});
  CHECK(batch.duplicates == std::vector<std::size_t>{1, 3});
  CHECK(batch.offsets == std::vector<std::uint64_t>{1, 0, 2, 1});
  auto read = broker->read("events", 0, ReadFrom{}, 10);
  REQUIRE(read.ok());
  REQUIRE(read->messages.size() == 3);
  CHECK(json::parse(read->messages[0].line)["payload"]["n"] == 0);
  CHECK(json::parse(read->messages[1].line)["dedup_id"] == "order-2");
  // Another partition has its own window.
  auto elsewhere = produce(*broker, {with_dedup_id("5", "order-1")}, 1);
  CHECK(elsewhere.duplicates.empty());
  // A batch of nothing but duplicates stores nothing.
  auto all_dups = produce(*broker, {with_dedup_id("6", "order-1"), with_dedup_id("7", "order-2")});
  CHECK(all_dups.duplicates == std::vector<std::size_t>{0, 1});
  CHECK(broker->stats("events")->front().partitions[0].next_offset == 3);
}

TEST_CASE("AKeylessMessageWithADedupIdGoesWhereItsIdHashes") {
  TempDir dir;
  auto broker = open_broker(broker_config(dir.path(), "events:8"));
  for (const std::string id : {"a", "b", "c", "order-17", "x-y-z"}) {
    auto first = produce(*broker, {with_dedup_id("1", id)}, std::nullopt);
    CHECK(first.partition == partition_for_key(id, 8));
    auto retry = produce(*broker, {with_dedup_id("1", id)}, std::nullopt);
    CHECK(retry.partition == first.partition);
    CHECK(retry.duplicates.size() == 1);
  }
  // A keyless batch goes where its first dedup_id hashes, whichever message carries it.
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto batch = produce(*broker, {message("1"), with_dedup_id("2", "second-one")}, std::nullopt);
    CHECK(batch.partition == partition_for_key("second-one", 8));
    CHECK(batch.duplicates.size() == (attempt == 0 ? 0u : 1u));
  }
}

TEST_CASE("TheDedupWindowIsFoundAgainAfterARestartAcrossSegmentsAndForgetsWhatIsOlder") {
  TempDir dir;
  Config config = broker_config(dir.path());
  config.store.segment_bytes = 1024;  // many segments: the window spans them
  std::vector<std::uint64_t> offsets;
  {
    auto broker = open_broker(config);
    for (int i = 0; i < 100; ++i) {
      offsets.push_back(
          produce(*broker, {with_dedup_id(R"({"n":)" + std::to_string(i) + "}", "id-" + std::to_string(i))})
              .first_offset);
    }
    CHECK(broker->stats("events")->front().partitions[0].segments > 3);
  }
  {
    auto broker = open_broker(config);
    for (int i = 0; i < 100; i += 7) {
      auto retry = produce(*broker, {with_dedup_id("0", "id-" + std::to_string(i))});
      CHECK(retry.duplicates.size() == 1);
      CHECK(retry.first_offset == offsets[i]);
    }
    CHECK(broker->stats("events")->front().partitions[0].next_offset == 100);
  }
  // Reopened with a window shorter than the messages' age: they are forgotten and stored again.
  config.store.dedup_window = milliseconds(1);
  std::this_thread::sleep_for(milliseconds(5));  // the messages must be older than the window
  auto broker = open_broker(config);
  auto stored = produce(*broker, {with_dedup_id("0", "id-3")});
  CHECK(stored.duplicates.empty());
  CHECK(stored.first_offset == 100);
}

TEST_CASE("WithoutAWindowDedupIdsAreKeptButNothingIsDeduplicated") {
  TempDir dir;
  Config config = broker_config(dir.path());
  config.store.dedup_window = milliseconds(0);
  auto broker = open_broker(config);
  produce(*broker, {with_dedup_id("1", "same")});
  auto second = produce(*broker, {with_dedup_id("2", "same")});
  CHECK(second.duplicates.empty());
  CHECK(second.first_offset == 1);
}

TEST_CASE("TheDedupWindowExpiresInArrivalOrderAndForgetsDroppedAppends") {
  detail::DedupWindow window(milliseconds(100));
  window.remember("a", 0, 1'000);
  window.remember("b", 1, 1'050);
  CHECK(window.find("a", 1'100) == 0u);
  CHECK(window.find("a", 1'101) == std::nullopt);  // older than the window
  CHECK(window.find("b", 1'101) == 1u);
  CHECK(window.size() == 1);
  window.remember("a", 2, 1'120);
  window.remember("c", 3, 1'130);
  window.forget_from(3);  // a full disk dropped offset 3
  CHECK(window.find("c", 1'130) == std::nullopt);
  CHECK(window.find("a", 1'130) == 2u);
  window.forget_from(2);
  CHECK(window.find("a", 1'130) == std::nullopt);
  CHECK(window.memory_bytes() > 0);
}

TEST_CASE("SipHash24With128BitResultsGivesTheReferenceVectors") {
  // The reference implementation's vectors (github.com/veorq/SipHash, vectors.h, vectors_sip128):
  // key 00 01 .. 0f, message 00 01 .. (n-1), the result's 16 bytes in order.
  const detail::SipKey key{0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL};
  std::string message;
  for (int i = 0; i < 64; ++i) message.push_back(static_cast<char>(i));
  auto bytes_of = [](const detail::Hash128& h) {
    std::string out;
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((h.low >> (8 * i)) & 0xff));
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((h.high >> (8 * i)) & 0xff));
    return out;
  };
  auto expect = [&](std::size_t length, std::initializer_list<unsigned char> want) {
    CAPTURE(length);
    CHECK(bytes_of(detail::siphash_2_4_128(std::string_view(message).substr(0, length), key)) ==
          std::string(want.begin(), want.end()));
  };
  expect(0, {0xa3, 0x81, 0x7f, 0x04, 0xba, 0x25, 0xa8, 0xe6, 0x6d, 0xf6, 0x72, 0x14, 0xc7, 0x55, 0x02, 0x93});
  expect(1, {0xda, 0x87, 0xc1, 0xd8, 0x6b, 0x99, 0xaf, 0x44, 0x34, 0x76, 0x59, 0x11, 0x9b, 0x22, 0xfc, 0x45});
  expect(15,
         {0x54, 0x93, 0xe9, 0x99, 0x33, 0xb0, 0xa8, 0x11, 0x7e, 0x08, 0xec, 0x0f, 0x97, 0xcf, 0xc3, 0xd9});
  expect(16,
         {0x6e, 0xe2, 0xa4, 0xca, 0x67, 0xb0, 0x54, 0xbb, 0xfd, 0x33, 0x15, 0xbf, 0x85, 0x23, 0x05, 0x77});
  expect(63,
         {0x51, 0x50, 0xd1, 0x77, 0x2f, 0x50, 0x83, 0x4a, 0x50, 0x3e, 0x06, 0x9a, 0x97, 0x3f, 0xbd, 0x7c});
  // Two windows draw different keys: the same id hashes differently in each.
  CHECK(detail::DedupWindow(milliseconds(1)).hash_of("id") !=
        detail::DedupWindow(milliseconds(1)).hash_of("id"));
}

namespace {

// In a child process whose seccomp filter answers getrandom with ENOSYS (as an old kernel or a
// container's profile may), and with `refuse_opens` every open too: the child's exit status says
// what random_sip_key did. 0: two keys, different and not zero; 1: equal or zero; 2: it threw.
int random_key_without_getrandom(bool refuse_opens) {
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    auto answer = [](int nr, int error) {
      return std::array<sock_filter, 2>{
          sock_filter BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<unsigned>(nr), 0, 1),
          sock_filter BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | static_cast<unsigned>(error))};
    };
    std::vector<sock_filter> program{BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr))};
    for (auto f : answer(SYS_getrandom, ENOSYS)) program.push_back(f);
    if (refuse_opens) {
      for (auto f : answer(SYS_openat, EACCES)) program.push_back(f);
      for (auto f : answer(SYS_open, EACCES)) program.push_back(f);
    }
    program.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    sock_fprog filter{static_cast<unsigned short>(program.size()), program.data()};
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &filter) != 0)
      ::_exit(3);
    try {
      const auto a = detail::random_sip_key(), b = detail::random_sip_key();
      const bool fine = (a.k0 != b.k0 || a.k1 != b.k1) && (a.k0 | a.k1) != 0;
      ::_exit(fine ? 0 : 1);
    } catch (const std::system_error&) {
      ::_exit(2);
    }
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  return WEXITSTATUS(status);
}

}  // namespace

TEST_CASE("WithoutGetrandomTheHashKeyComesFromDevUrandomAndWithoutEitherTheWindowCannotBeMade") {
  CHECK(random_key_without_getrandom(false) == 0);
  CHECK(random_key_without_getrandom(true) == 2);  // a window with a guessable key would be worse
}

TEST_CASE("MappedMemoryRefusesASizeThatRoundingUpWouldWrapAround") {
  CHECK_THROWS_AS(detail::MappedMemory(SIZE_MAX), std::bad_alloc);
  CHECK_THROWS_AS(detail::MappedMemory(SIZE_MAX - 4096), std::bad_alloc);
  detail::MappedMemory small(1);
  CHECK(small.size() == 1);
  CHECK(static_cast<const char*>(small.data())[0] == 0);
}

TEST_CASE("ADedupWindowOfManyIdsGrowsIntoHugePagesFindsEveryIdAndGivesTheMemoryBackWhenTheyExpire") {
  // 300,000 ids: the ring (32 bytes an id) and the index (8-byte slots, at most half full) both
  // pass the 2 MiB from which their memory is mapped in huge pages.
  detail::DedupWindow window(milliseconds(1'000));
  constexpr std::uint64_t kIds = 300'000;
  for (std::uint64_t n = 0; n < kIds; ++n) {
    REQUIRE(window.find_or_remember("order-" + std::to_string(n), n, 5'000) == std::nullopt);
  }
  CHECK(window.size() == kIds);
  CHECK(window.memory_bytes() >= kIds * (32 + 16));
  CHECK(window.memory_bytes() <= kIds * (64 + 32));
  for (std::uint64_t n = 0; n < kIds; n += 997) {
    REQUIRE(window.find("order-" + std::to_string(n), 5'500) == n);
  }
  CHECK(window.find_or_remember("order-7", 1'000'000, 5'900) == 7u);  // a duplicate: not stored again
  CHECK(window.size() == kIds);
  window.remember("later", kIds, 6'000);
  CHECK(window.find("order-0", 6'001) == std::nullopt);  // all but the last one expired
  CHECK(window.find("later", 6'001) == kIds);
  CHECK(window.size() == 1);
  CHECK(window.memory_bytes() <= 8192);  // back to one page each
}

TEST_CASE("ADedupWindowPastAQuarterMebibyteTakesAWholeHugePageAndShrinksOnlyToSmallerMappings") {
  // 20,000 ids would take a ring of 1 MiB and an index of 512 KiB: each takes a 2 MiB huge page
  // instead, rather than growing through mappings of 4 KiB pages (each page's first touch is dear).
  constexpr std::size_t kHuge = 2 << 20;
  detail::DedupWindow window(milliseconds(1'000));
  for (std::uint64_t n = 0; n < 20'000; ++n) {
    REQUIRE(window.find_or_remember("order-" + std::to_string(n), n, n < 15'000 ? 1'000 : 1'500) ==
            std::nullopt);
  }
  CHECK(window.memory_bytes() == 2 * kHuge);
  // 8,192 ids and fewer fit in 256 KiB each: a window that never grows past them stays small.
  detail::DedupWindow small(milliseconds(1'000));
  for (std::uint64_t n = 0; n < 8'192; ++n) small.remember("order-" + std::to_string(n), n, 1'000);
  CHECK(small.memory_bytes() == 8'192 * 32 + 16'384 * 8);
  // 15,000 expire, 5,000 stay: the index shrinks to 32,768 slots (256 KiB); the ring would shrink
  // to 1 MiB, which rounds up to the huge page it has: it stays.
  CHECK(window.find("order-0", 2'001) == std::nullopt);
  CHECK(window.size() == 5'000);
  CHECK(window.memory_bytes() == kHuge + (256 << 10));
  for (std::uint64_t n = 15'000; n < 20'000; n += 7)
    REQUIRE(window.find("order-" + std::to_string(n), 2'001) == n);
}

TEST_CASE("AReserveOfTheDedupWindowLeavesItsNextIdsNothingToAllocateAndARefusedOneChangesNothing") {
  detail::DedupWindow window(milliseconds(1'000));
  window.reserve(1'024);  // exactly a ring of 1,024 entries and an index of 2,048 slots
  const std::size_t reserved = window.memory_bytes();
  CHECK(reserved == 1'024 * 32 + 2'048 * 8);
  for (std::uint64_t n = 0; n < 1'024; ++n) {
    REQUIRE(window.find_or_remember("id-" + std::to_string(n), n, 0) == std::nullopt);
  }
  CHECK(window.memory_bytes() == reserved);  // neither the ring nor the index grew on the way
  // A mapping refused (here by the test limit, as mmap's ENOMEM would): nothing changes.
  window.limit_memory_for_tests(reserved);
  CHECK_THROWS_AS(window.reserve(1'000'000), std::bad_alloc);
  CHECK_THROWS_AS(window.find_or_remember("one more", 1'024, 0), std::bad_alloc);
  CHECK(window.size() == 1'024);
  CHECK(window.memory_bytes() == reserved);
  CHECK(window.find("one more", 0) == std::nullopt);
  CHECK(window.find("id-999", 0) == 999u);
  // Expiry would shrink the window but cannot get the smaller mappings either: it keeps the larger
  // ones and still forgets what expired (an append without ids, which expires too, must not fail).
  window.limit_memory_for_tests(0);
  CHECK_THROWS_AS(window.remember("late", 1'024, 900), std::bad_alloc);  // the ring is full
  CHECK_NOTHROW(window.expire(1'500));
  CHECK(window.size() == 0);
  CHECK(window.memory_bytes() == reserved);
  window.limit_memory_for_tests(SIZE_MAX);
  window.remember("late", 1'024, 1'500);
  CHECK(window.find("id-0", 1'500) == std::nullopt);
  CHECK(window.find("late", 1'500) == 1'024u);
  window.expire(2'600);  // the next expiry that forgets something shrinks it
  CHECK(window.size() == 0);
  CHECK(window.memory_bytes() == 128 * 32 + 512 * 8);
}

TEST_CASE("ABatchWhoseDedupIdsTheWindowHasNoRoomForIsStoredNotAtAllAndItsRetryWhole") {
  // The partition remembers a batch's ids before it writes the batch: had a refused allocation part
  // way left some of them remembered, the retry would be answered "duplicate" of offsets that other
  // messages take, and those messages lost.
  TempDir dir;
  StoreOptions options;
  options.data_dir = dir.path();
  options.fsync = FsyncMode::kNever;
  auto fs = make_posix_file_system();
  auto log = PartitionLog::open(*fs, options, dir.path() + "/events", "partition-0", "events", 0);
  REQUIRE(log.ok());
  detail::DedupWindow window(milliseconds(60'000));
  (*log)->deduplicate_with(&window);
  auto batch_of = [](const std::string& prefix, int count) {
    std::vector<Message> batch;
    for (int i = 0; i < count; ++i) {
      batch.push_back(message(R"({"n":)" + std::to_string(i) + "}"));
      batch.back().dedup_id = prefix + std::to_string(i);
    }
    return batch;
  };
  REQUIRE((*log)->append(batch_of("a-", 100)).ok());  // the window has room for 128 entries now
  window.limit_memory_for_tests(window.memory_bytes());
  const auto refused = batch_of("b-", 100);
  CHECK_THROWS_AS((void)(*log)->append(refused), std::bad_alloc);
  CHECK((*log)->next_offset() == 100u);
  CHECK(window.size() == 100);
  window.limit_memory_for_tests(SIZE_MAX);
  AppendResult result;
  auto retried = (*log)->append(refused, &result);
  REQUIRE(retried.ok());
  CHECK(*retried == 100u);
  CHECK(result.duplicates.empty());
  CHECK(window.size() == 200);
  (*log)->deduplicate_with(nullptr);
}

namespace {

// Log files whose sync, once armed, waits for the test to let it finish (with the status the test
// chooses): an append can then be caught while its fdatasync is under way.
class HeldSyncs final : public ForwardingFileSystem {
 public:
  Result<std::unique_ptr<File>> open(const std::string& path) override {
    auto file = real_->open(path);
    if (!file.ok() || !path.ends_with(".log")) return file;
    return std::unique_ptr<File>(std::make_unique<HeldFile>(std::move(file.value()), *this));
  }
  void arm() {
    std::lock_guard lock(mutex_);
    armed_ = true;
  }
  // False when none was held within a minute (an append that never syncs, for one).
  bool wait_until_a_sync_is_held() {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, std::chrono::minutes(1), [&] { return held_; });
  }
  void release(Status outcome) {
    std::lock_guard lock(mutex_);
    outcome_ = std::move(outcome);
    armed_ = false;
    changed_.notify_all();
  }

 private:
  class HeldFile final : public ForwardingFile {
   public:
    HeldFile(std::unique_ptr<File> real, HeldSyncs& owner) : ForwardingFile(std::move(real)), owner_(owner) {}
    Status sync() override {
      Status status = real_->sync();
      std::unique_lock lock(owner_.mutex_);
      if (!owner_.armed_) return status;
      owner_.held_ = true;
      owner_.changed_.notify_all();
      owner_.changed_.wait(lock, [&] { return !owner_.armed_; });
      return owner_.outcome_;
    }

   private:
    HeldSyncs& owner_;
  };

  std::mutex mutex_;
  std::condition_variable changed_;
  bool armed_ = false, held_ = false;
  Status outcome_;
};

}  // namespace

TEST_CASE("ADuplicateOfAnAppendStillSyncingIsAnsweredOnlyOnceThatAppendIsDurable") {
  // With FSYNC=always, "duplicate of offset N" promises what a stored answer does: N is durable.
  // An all-duplicate batch writes nothing itself, so it must wait for the sync of the append it
  // names, and fail with it.
  for (const bool sync_fails : {false, true}) {
    CAPTURE(sync_fails);
    TempDir dir;
    StoreOptions options;
    options.data_dir = dir.path();
    options.fsync = FsyncMode::kAlways;
    HeldSyncs fs;
    detail::DedupWindow window(milliseconds(60'000));  // before the log: it outlives the log's use of it
    auto log = PartitionLog::open(fs, options, dir.path() + "/events", "partition-0", "events", 0);
    REQUIRE(log.ok());
    (*log)->deduplicate_with(&window);
    AppendResult duplicate_result;
    std::future<Result<std::uint64_t>> original, duplicate;
    // Whatever fails below, the held sync ends before the futures wait for their appends.
    struct ReleaseAtExit {
      HeldSyncs& fs;
      ~ReleaseAtExit() { fs.release(Status{}); }
    } release_at_exit{fs};
    fs.arm();
    original = std::async(std::launch::async, [&] {
      return (*log)->append(std::vector{with_dedup_id(R"({"n":1})", "order-1")});
    });
    REQUIRE(fs.wait_until_a_sync_is_held());
    duplicate = std::async(std::launch::async, [&] {
      return (*log)->append(std::vector{with_dedup_id(R"({"n":2})", "order-1")}, &duplicate_result);
    });
    // A bound, not an event: nothing happens when the wait is right. Answered at once, the
    // duplicate would be back well within it. (On a machine so loaded that its thread has not
    // reached the wait by then, this passes without having tested it: never the other way.)
    CHECK(duplicate.wait_for(milliseconds(200)) == std::future_status::timeout);
    fs.release(sync_fails ? Status::io_error("the disk is gone") : Status{});
    auto first = original.get();
    auto second = duplicate.get();
    if (sync_fails) {
      CHECK_FALSE(first.ok());
      CHECK_FALSE(second.ok());
    } else {
      REQUIRE(first.ok());
      REQUIRE(second.ok());
      CHECK(*second == 0u);
      CHECK(duplicate_result.duplicates == std::vector<std::size_t>{0});
      CHECK(duplicate_result.offsets == std::vector<std::uint64_t>{0});
      CHECK((*log)->next_offset() == 1u);
    }
    (*log)->deduplicate_with(nullptr);
  }
}

TEST_CASE("AnIdRememberedTwiceIsFoundAtItsNewerOffsetAndOutlivesTheOlderOne") {
  // Recovery can find one id stored twice within a window (stored again after a shorter window
  // passed, or a clock that stepped back): the newer one counts, and the older one's expiry must
  // not leave the index pointing at memory that went with it (AddressSanitizer checks that here).
  detail::DedupWindow window(milliseconds(1'000));
  window.remember(std::string(40, 'x'), 0, 0);
  window.remember(std::string(40, 'x'), 1, 500);
  CHECK(window.find(std::string(40, 'x'), 1'200) == 1u);  // the first one expired
  CHECK(window.find(std::string(40, 'x'), 1'400) == 1u);
  CHECK(window.find_or_remember(std::string(40, 'x'), 9, 1'450) == 1u);
  CHECK(window.find(std::string(40, 'x'), 1'501) == std::nullopt);
  CHECK(window.size() == 0);
}

TEST_CASE("IdsWhoseIndexTagsCollideAreToldApartByTheirWholeHashThroughExpiryAndRollback") {
  // The index keeps 32 bits of each id's hash (its tag); two ids with the same tag are told apart
  // by the whole 128-bit hash in the ring. Among a few hundred thousand ids some tags collide
  // (about 37 pairs in 400,000): found with a fixed key, so that the test sees the same ones
  // every run.
  const detail::SipKey key{0x0123456789abcdefULL, 0xfedcba9876543210ULL};
  detail::DedupWindow probe(milliseconds(1), key);
  auto tag_of = [&](const std::string& id) { return static_cast<std::uint32_t>(probe.hash_of(id).low); };
  std::map<std::uint32_t, std::string> by_tag;
  std::vector<std::pair<std::string, std::string>> pairs;
  for (int i = 0; i < 400'000 && pairs.size() < 8; ++i) {
    std::string id = "t" + std::to_string(i);
    auto [it, fresh] = by_tag.emplace(tag_of(id) | 0x8000'0000u, id);
    if (!fresh) pairs.emplace_back(it->second, id);
  }
  REQUIRE(pairs.size() == 8);
  for (const auto& [a, b] : pairs) REQUIRE(probe.hash_of(a) != probe.hash_of(b));

  detail::DedupWindow window(milliseconds(1'000), key);
  std::uint64_t offset = 0;
  // Each pair's first id at time 0, its second at time 500: same slot run, different entries.
  for (const auto& pair : pairs) REQUIRE(window.find_or_remember(pair.first, offset++, 0) == std::nullopt);
  for (const auto& pair : pairs) {
    CHECK(window.find(pair.second, 0) == std::nullopt);  // a tag match is not a match
    REQUIRE(window.find_or_remember(pair.second, offset++, 500) == std::nullopt);
  }
  CHECK(window.size() == 16);
  for (std::size_t i = 0; i < pairs.size(); ++i) {
    CHECK(window.find(pairs[i].first, 600) == i);
    CHECK(window.find(pairs[i].second, 600) == pairs.size() + i);
  }
  // A full disk dropped the last four appends: those second ids go, their partners stay.
  window.forget_from(pairs.size() + 4);
  for (std::size_t i = 0; i < pairs.size(); ++i) {
    CHECK(window.find(pairs[i].first, 700) == i);
    CHECK(window.find(pairs[i].second, 700) ==
          (i < 4 ? std::optional<std::uint64_t>(pairs.size() + i) : std::nullopt));
  }
  // The first ids expire: the second ids that are left are still found, at their own offsets.
  for (std::size_t i = 0; i < pairs.size(); ++i) {
    CHECK(window.find(pairs[i].first, 1'200) == std::nullopt);
    CHECK(window.find(pairs[i].second, 1'200) ==
          (i < 4 ? std::optional<std::uint64_t>(pairs.size() + i) : std::nullopt));
  }
  CHECK(window.size() == 4);
}

TEST_CASE("TheDedupWindowAgreesWithAPlainListThroughRandomStoresExpiriesAndRollbacks") {
  // The window is an open-addressing table with backward-shift deletion over a ring of entries:
  // easy to get subtly wrong. A list of (id, offset, time) in arrival order says what it must
  // answer. Ids are drawn from a small pool (repeats), some of them long; time mostly moves on,
  // sometimes a little back; enough ids come and go that the index and the ring grow, shrink and
  // wrap around.
  struct Stored {
    std::string id;
    std::uint64_t offset;
    std::int64_t timestamp_ms;
  };
  for (std::uint32_t seed = 1; seed <= 4; ++seed) {
    CAPTURE(seed);
    std::mt19937 random(seed);
    auto below = [&](std::uint32_t n) { return static_cast<std::uint32_t>(random() % n); };
    constexpr std::int64_t kWindow = 200;
    detail::DedupWindow window{milliseconds(kWindow)};
    std::deque<Stored> model;
    auto model_expire = [&](std::int64_t now) {
      while (!model.empty() && model.front().timestamp_ms < now - kWindow) model.pop_front();
    };
    auto model_find = [&](const std::string& id) -> std::optional<std::uint64_t> {
      for (auto it = model.rbegin(); it != model.rend(); ++it) {
        if (it->id == id) return it->offset;
      }
      return std::nullopt;
    };
    std::vector<std::string> pool;
    for (int i = 0; i < 3000; ++i) {
      std::string id = "id-" + std::to_string(i);
      if (i % 7 == 0) id += std::string(100, 'L');  // longer than a hash block or two
      pool.push_back(id);
    }
    std::uint64_t next_offset = 0;
    std::int64_t now = 1'000;
    for (int step = 0; step < 40'000; ++step) {
      now += below(10) == 0 ? -static_cast<std::int64_t>(below(3)) : static_cast<std::int64_t>(below(2));
      const std::string& id = pool[below(static_cast<std::uint32_t>(pool.size()))];
      const std::uint32_t action = below(100);
      if (action < 60) {
        model_expire(now);
        const auto expected = model_find(id);
        // Half the time the way a batch looks its ids up: room made first (the index may grow by
        // more than double), the slot fetched ahead, the hash handed in.
        std::optional<std::uint64_t> got;
        if (below(2) == 0) {
          got = window.find_or_remember(id, next_offset, now);
        } else {
          window.reserve(below(3) == 0 ? below(5'000) : 1);
          const detail::Hash128 hash = window.hash_of(id);
          window.prefetch(hash);
          got = window.find_or_remember(hash, next_offset, now);
        }
        REQUIRE(got == expected);
        if (!expected) model.push_back({id, next_offset++, now});
      } else if (action < 80) {
        model_expire(now);
        REQUIRE(window.find(id, now) == model_find(id));
      } else if (action < 95) {
        // Recovery's way in: stores the model keeps as they come, repeats included.
        window.remember(id, next_offset, now);
        model.push_back({id, next_offset++, now});
      } else if (!model.empty()) {
        // A full disk dropped the last few appends.
        const std::uint64_t from =
            model.back().offset - std::min<std::uint64_t>(below(5), model.back().offset);
        window.forget_from(from);
        while (!model.empty() && model.back().offset >= from) model.pop_back();
        next_offset = from;
      }
      if (step % 1000 == 0) {
        std::set<std::string> distinct;
        for (const auto& stored : model) distinct.insert(stored.id);
        REQUIRE(window.size() == distinct.size());
      }
    }
    // Everything goes once time passes the window: the index empties and shrinks.
    model_expire(now + kWindow + 10);
    CHECK(model.empty());
    CHECK(window.find("id-1", now + kWindow + 10) == std::nullopt);
    CHECK(window.size() == 0);
  }
}

TEST_CASE("HeadersComeBackWithTheMessageAndItsDeadLetter") {
  TempDir dir;
  Config config = broker_config(dir.path(), "events:1,events-dlq:1");
  config.groups.max_deliveries = 1;
  auto clock = std::make_shared<ManualClock>();
  auto broker = open_broker(config, clock);
  Message m = message(R"({"n":0})");
  m.headers = {{"trace-id", "t-1"}, {"content.type", "application/json"}};
  produce(*broker, {m});
  auto sub = subscribe(*broker, "g");
  auto got = take_now(*sub);
  REQUIRE(got.size() == 1);
  const json record = json::parse(got[0].record);
  CHECK(record["headers"] == json{{"trace-id", "t-1"}, {"content.type", "application/json"}});
  REQUIRE((*broker->group("events", 0, "g"))->nack(got[0].id).ok());  // its one delivery ends
  auto dead = broker->read("events-dlq", 0, ReadFrom{}, 10);
  REQUIRE(dead.ok());
  REQUIRE(dead->messages.size() == 1);
  CHECK(json::parse(dead->messages[0].line)["headers"]["trace-id"] == "t-1");
}

TEST_CASE("TheRecordOptionsReaderReadsTheWritersPrefixAndAnyOtherOrder") {
  Message m = message(R"({"n":1})", std::string("k\"ey"));
  m.headers = {{"a", "x\"}y"}, {"b", ""}};
  m.deliver_at_ms = 2'000;
  m.dedup_id = "d-1";
  std::string line;
  detail::append_record_line(line, 7, 1'000, std::nullopt, m);
  line.pop_back();
  auto options = detail::parse_record_options(line);
  REQUIRE(options);
  CHECK(options->offset == 7);
  CHECK(options->timestamp_ms == 1'000);
  CHECK(options->raw_key == R"("k\"ey")");
  CHECK(options->deliver_at_ms == 2'000);
  CHECK(options->dedup_id == "d-1");
  // Written by something else, in another order, with an escaped id: the same fields.
  auto other = detail::parse_record_options(
      R"({"payload":{"n":1},"dedup_id":"d\u002d1","key":"k\"ey","deliver_at":2000,"timestamp":1000,"offset":7})");
  REQUIRE(other);
  CHECK(other->raw_key == options->raw_key);
  CHECK(other->deliver_at_ms == 2'000);
  CHECK(other->dedup_id == "d-1");
  // Old records have none of them.
  auto old = detail::parse_record_options(R"({"offset":3,"timestamp":5,"key":"k","payload":1})");
  REQUIRE(old);
  CHECK_FALSE(old->deliver_at_ms);
  CHECK_FALSE(old->dedup_id);
  CHECK_FALSE(detail::parse_record_options("not json"));
  // A raw control byte inside a string (which the validator keeps out of every log): the scanner
  // looking for the string's end steps over it, neither stopping nor reading past the line.
  for (const std::string& odd :
       {std::string(R"({"offset":1,"timestamp":2,"headers":{"a":"x)") + '\x01' + R"(y"},"payload":1})",
        std::string(R"({"offset":1,"timestamp":2,"dedup_id":"d)") + '\x1f' + R"(","payload":1})",
        std::string(R"({"offset":1,"timestamp":2,"key":"k)") + '\n' + R"(","payload":1})"}) {
    CAPTURE(odd);
    const auto read = detail::parse_record_options(odd);
    REQUIRE(read);
    CHECK(read->offset == 1);
  }
  CHECK(detail::parse_record_options(std::string(R"({"offset":1,"timestamp":2,"dedup_id":"d)") + '\x1f' +
                                     R"(","payload":1})")
            ->dedup_id == std::string("d\x1f"));
  // A string that never ends, a backslash last: no read past the line.
  CHECK_FALSE(detail::parse_record_options(R"({"offset":1,"timestamp":2,"headers":{"a":"xxxxxxxxxxxx\)"));
}

namespace {
SubscribeOptions ordered_by_key(std::size_t max_inflight = 100, int timeout_ms = 1000) {
  SubscribeOptions options;
  options.ordering = Ordering::kKey;
  options.max_inflight = max_inflight;
  options.visibility_timeout = milliseconds(timeout_ms);
  return options;
}

std::vector<Message> keyed(std::initializer_list<const char*> keys) {
  std::vector<Message> batch;
  int n = 0;
  for (const char* key : keys) {
    batch.push_back(message(R"({"n":)" + std::to_string(n++) + "}",
                            *key ? std::optional<std::string>(key) : std::nullopt));
  }
  return batch;
}
}  // namespace

TEST_CASE("KeyQueuesLetTheFirstOfEachKeyGoAndNameTheNextWhenItIsDone") {
  detail::KeyQueues queues;
  auto a1 = queues.push("a", 1);
  CHECK(a1.first);
  CHECK(queues.push("b", 2).first);
  auto a3 = queues.push("a", 3);
  auto a4 = queues.push("a", 4);
  CHECK_FALSE(a3.first);
  CHECK_FALSE(a4.first);
  CHECK(queues.keys() == 2);
  // Not the first (dead-lettered while it waited): nothing new may go.
  CHECK(queues.remove(a3.ref, 3) == std::nullopt);
  CHECK(queues.queued("a") == 2);
  CHECK(queues.remove(a1.ref, 1) == 4u);
  // A Ref is void once its message is removed: removing it again does nothing.
  CHECK_FALSE(a1.ref);
  CHECK(queues.remove(a1.ref, 1) == std::nullopt);
  CHECK(queues.queued("a") == 1);
  CHECK(queues.remove(a4.ref, 4) == std::nullopt);
  CHECK(queues.keys() == 1);
  detail::KeyQueues::Ref none;
  CHECK(queues.remove(none, 9) == std::nullopt);  // no key: nothing queued
  // The emptied queue stays for the key's next message, which finds it empty.
  CHECK(queues.empty_queues() == 1);
  auto a10 = queues.push("a", 10);
  CHECK(a10.first);
  CHECK(queues.empty_queues() == 0);
  CHECK(queues.queued("a") == 1);
  CHECK(queues.remove(a10.ref, 10) == std::nullopt);
  // A key longer than kLongestKeptKey is not kept once its queue empties (keys may have 64 KiB).
  const std::string long_key(detail::KeyQueues::kLongestKeptKey + 1, 'k');
  auto long_one = queues.push(long_key, 11);
  CHECK(queues.remove(long_one.ref, 11) == std::nullopt);
  CHECK(queues.empty_queues() == 1);  // "a" only
  CHECK(queues.queued(long_key) == 0);
  auto again = queues.push(long_key, 12);  // made afresh
  CHECK(again.first);
  CHECK(queues.empty_queues() == 1);
  CHECK(queues.remove(again.ref, 12) == std::nullopt);
  queues.clear();
  CHECK(queues.keys() == 0);
  CHECK(queues.empty_queues() == 0);
}

TEST_CASE("KeyQueuesSweepEmptiedQueuesOncePastTheKeptNumberAndTakeAHotKeyInOrder") {
  detail::KeyQueues queues;
  // Every message a key of its own, done in turn: at most kKeptEmptyQueues empty queues are kept
  // while nothing else is queued; one more and they all go.
  const std::size_t kept = detail::KeyQueues::kKeptEmptyQueues;
  for (std::uint64_t k = 0; k < kept; ++k) {
    auto pushed = queues.push("key-" + std::to_string(k), k);
    REQUIRE(pushed.first);
    REQUIRE(queues.remove(pushed.ref, k) == std::nullopt);
  }
  CHECK(queues.empty_queues() == kept);
  CHECK(queues.keys() == 0);
  auto last = queues.push("key-last", kept);
  CHECK(queues.remove(last.ref, kept) == std::nullopt);
  CHECK(queues.empty_queues() == 0);
  // While more keys than that have messages queued, their emptied queues are kept up to as many.
  std::vector<detail::KeyQueues::Pushed> held;
  for (std::uint64_t k = 0; k < 2 * kept; ++k) held.push_back(queues.push("held-" + std::to_string(k), k));
  for (std::uint64_t k = 0; k < kept; ++k) REQUIRE(queues.remove(held[k].ref, k) == std::nullopt);
  CHECK(queues.empty_queues() == kept);
  CHECK(queues.keys() == kept);
  CHECK(queues.remove(held[kept].ref, kept) == std::nullopt);  // kept + 1 empty, kept - 1 queued
  CHECK(queues.empty_queues() == 0);
  CHECK(queues.keys() == kept - 1);
  for (std::uint64_t k = kept + 1; k < 2 * kept; ++k)
    REQUIRE(queues.queued("held-" + std::to_string(k)) == 1);

  // A long key's queue is erased when it empties, and that too can let the kept ones go: 1,100
  // short keys empty while 1,100 long ones are in flight (kept: not more than the keys in flight);
  // the first long one done leaves fewer keys in flight than empty queues, and they all go.
  queues.clear();
  std::vector<detail::KeyQueues::Pushed> long_ones;
  for (std::uint64_t k = 0; k < 1'100; ++k) {
    long_ones.push_back(
        queues.push(std::string(detail::KeyQueues::kLongestKeptKey + 1, 'k') + std::to_string(k), k));
  }
  for (std::uint64_t k = 0; k < 1'100; ++k) {
    auto pushed = queues.push("short-" + std::to_string(k), 10'000 + k);
    REQUIRE(queues.remove(pushed.ref, 10'000 + k) == std::nullopt);
  }
  CHECK(queues.empty_queues() == 1'100);
  CHECK(queues.remove(long_ones[0].ref, 0) == std::nullopt);
  CHECK(queues.empty_queues() == 0);
  CHECK(queues.keys() == 1'099);

  // One hot key with many waiting: taken from the front in order, each names the next.
  queues.clear();
  const std::uint64_t waiting = detail::KeyQueues::kLargestKeptQueue * 4;
  std::vector<detail::KeyQueues::Ref> refs;
  for (std::uint64_t offset = 0; offset < waiting; ++offset) {
    const auto pushed = queues.push("hot", offset);
    CHECK(pushed.first == (offset == 0));
    refs.push_back(pushed.ref);
  }
  for (std::uint64_t offset = 0; offset + 1 < waiting; ++offset) {
    REQUIRE(queues.remove(refs[offset], offset) == offset + 1);
    REQUIRE(queues.queued("hot") == waiting - offset - 1);
  }
  CHECK(queues.remove(refs.back(), waiting - 1) == std::nullopt);
  CHECK(queues.empty_queues() == 1);
}

TEST_CASE("KeyQueuesAgreeWithAPlainListThroughRandomPushesAndRemovals") {
  std::mt19937 random(14);
  detail::KeyQueues queues;
  std::map<std::string, std::deque<std::uint64_t>> model;
  // What the group keeps with each queued message: its key's Ref (and, for the model, its key).
  std::map<std::uint64_t, std::pair<detail::KeyQueues::Ref, std::string>> queued;
  std::uint64_t next_offset = 0;
  std::size_t sweeps = 0, empty_before = 0;
  for (int step = 0; step < 100'000; ++step) {
    // Now and then a run of keys seen once, so that emptied queues pile up and are swept.
    const bool fresh = step % 5'000 < 1'200;
    // (One in three of those longer than kLongestKeptKey: not kept once done.)
    const std::string key = !fresh ? "k" + std::to_string(random() % 20)
                            : step % 3 == 0
                                ? std::string(detail::KeyQueues::kLongestKeptKey, 'x') + std::to_string(step)
                                : "once-" + std::to_string(step);
    if (fresh || random() % 2 == 0 || model[key].empty()) {
      auto& expected = model[key];
      const auto pushed = queues.push(key, next_offset);
      REQUIRE(pushed.first == expected.empty());
      queued[next_offset] = {pushed.ref, key};
      expected.push_back(next_offset++);
    }
    // Done with one of any key: the first of its key (acknowledged in turn) or one behind it.
    if (random() % 2 == 0 && !queued.empty()) {
      auto chosen = queued.lower_bound(random() % next_offset);
      if (chosen == queued.end()) chosen = queued.begin();
      const std::uint64_t offset = chosen->first;
      auto [ref, owner] = chosen->second;
      auto& expected = model.at(owner);
      const auto at = std::find(expected.begin(), expected.end(), offset) - expected.begin();
      REQUIRE(at < static_cast<std::ptrdiff_t>(expected.size()));
      expected.erase(expected.begin() + at);
      const std::optional<std::uint64_t> next =
          at == 0 && !expected.empty() ? std::optional(expected.front()) : std::nullopt;
      REQUIRE(queues.remove(ref, offset) == next);
      queued.erase(chosen);
      REQUIRE(queues.queued(owner) == expected.size());
      if (expected.empty()) model.erase(owner);
    }
    REQUIRE(queues.keys() == model.size());
    REQUIRE(queues.empty_queues() <= std::max(detail::KeyQueues::kKeptEmptyQueues, queues.keys()));
    if (queues.empty_queues() + 1 < empty_before) ++sweeps;
    empty_before = queues.empty_queues();
  }
  CHECK(sweeps > 0);
}

TEST_CASE("OrderingByKeyHandsOutOneMessageOfAKeyAtATimeAndOtherKeysInParallel") {
  TempDir dir;
  Config config = broker_config(dir.path(), "events:1,events-dlq:1");
  config.groups.max_deliveries = 2;
  auto clock = std::make_shared<ManualClock>();
  auto broker = open_broker(config, clock);
  //                           0    1    2    3    4   5    6
  produce(*broker, keyed({"a", "a", "b", "a", "b", "", "c"}));
  auto one = subscribe(*broker, "g", ordered_by_key());
  auto two = subscribe(*broker, "g", ordered_by_key());
  CHECK(offsets_of(take_now(*one, 2)) == std::vector<std::uint64_t>{0, 2});
  CHECK(offsets_of(take_now(*two)) == std::vector<std::uint64_t>{5, 6});  // 1, 3, 4 wait for 0 and 2
  CHECK(take_now(*one).empty());
  CHECK(group_stats(*broker, "g").ordering == Ordering::kKey);

  // Done with 0: 1 goes (and 3 still waits for it).
  CHECK(*broker->ack("events", 0, "g", std::vector<std::string>{"0-0"}) == 1);
  CHECK(offsets_of(take_now(*two)) == std::vector<std::uint64_t>{1});
  // 1 comes back (nack): it is again the only one of "a" that may go, before 3.
  REQUIRE(broker->nack("events", 0, "g", "0-1").ok());
  auto again = take_now(*one);
  REQUIRE(offsets_of(again) == std::vector<std::uint64_t>{1});
  CHECK(again[0].delivery == 2);
  // Its second delivery times out: dead-lettered (max_deliveries 2), which releases "a" for 3.
  clock->advance(milliseconds(1000));
  broker->fire_due_timers();
  CHECK(broker->stats("events-dlq")->front().partitions[0].next_offset == 1);
  // 2, 5 and 6 timed out too: they come again; "b" goes on with 2, not 4.
  CHECK(offsets_of(take_now(*two)) == std::vector<std::uint64_t>{2, 3, 5, 6});
  CHECK(take_now(*one).empty());
  CHECK(*broker->ack("events", 0, "g", std::vector<std::string>{"0-2"}) == 1);
  CHECK(offsets_of(take_now(*one)) == std::vector<std::uint64_t>{4});
}

TEST_CASE("ADelayedMessageHoldsTheLaterMessagesOfItsKey") {
  TempDir dir;
  auto clock = std::make_shared<ManualClock>();
  auto broker = open_broker(broker_config(dir.path(), "events:1"), clock);
  Message first = message("1", std::string("k"));
  first.deliver_at_ms = clock->system_ms() + 500;
  produce(*broker, {first, message("2", std::string("k")), message("3", std::string("other"))});
  auto sub = subscribe(*broker, "g", ordered_by_key());
  CHECK(offsets_of(take_now(*sub)) == std::vector<std::uint64_t>{2});
  clock->advance(milliseconds(500));
  broker->fire_due_timers();
  auto due = take_now(*sub);
  CHECK(offsets_of(due) == std::vector<std::uint64_t>{0});
  ack_all(*broker, due, "g");
  CHECK(offsets_of(take_now(*sub)) == std::vector<std::uint64_t>{1});
}

TEST_CASE("AGroupsOrderingIsFixedWhenItComesIntoBeingDurablyAndAnotherOneIsAConflict") {
  TempDir dir;
  const Config config = broker_config(dir.path(), "events:2");
  {
    auto broker = open_broker(config);
    subscribe(*broker, "keyed", ordered_by_key());
    SubscribeOptions none;
    none.ordering = Ordering::kNone;
    auto refused = broker->subscribe("events", 0, "keyed", none);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.status().code() == ErrorCode::kConflict);
    CHECK(refused.status().message().find("ordering=key") != std::string::npos);
    CHECK(broker->subscribe("events", 0, "keyed", SubscribeOptions{}).ok());  // joins as it is
    // Per partition: on partition 1 the group comes into being without ordering.
    subscribe(*broker, "keyed", {}, 1);
    CHECK(group_stats(*broker, "keyed", 1).ordering == Ordering::kNone);
    CHECK_FALSE(broker->subscribe("events", 1, "keyed", ordered_by_key()).ok());
  }
  auto broker = open_broker(config);
  CHECK(group_stats(*broker, "keyed").ordering == Ordering::kKey);
  CHECK(broker->subscribe("events", 0, "keyed", ordered_by_key()).ok());
  CHECK_FALSE(broker->subscribe("events", 1, "keyed", ordered_by_key()).ok());
}

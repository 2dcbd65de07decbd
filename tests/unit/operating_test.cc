// API.md "Operating it" in the library: redrive of dead letters (at most once, across restarts,
// concurrent calls and a crash in the middle of a run) and the removal of consumer groups
// (durable, with and without the shared acknowledgement log).
#include <doctest/doctest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "broker_helpers.h"
#include "groups/redriver.h"
#include "temp_dir.h"

using namespace mq;
using namespace mq::testing;
using nlohmann::json;

namespace {

// Two partitions; every nack dead-letters (one delivery each).
Config dead_lettering_config(const std::string& dir, FsyncMode fsync = FsyncMode::kNever) {
  Config config = broker_config(dir, "events:2");
  config.groups.max_deliveries = 1;
  config.store.fsync = fsync;
  return config;
}

// Produces `count` messages to `partition` (key, a header) and dead-letters each of them.
void dead_letter(Broker& broker, int count, std::uint32_t partition = 0, int first = 0) {
  for (int n = first; n < first + count; ++n) {
    Message m = message("{\"n\":" + std::to_string(n) + "}", "key-" + std::to_string(n));
    m.headers = {{"trace-id", "t-" + std::to_string(n)}};
    REQUIRE(broker.produce("events", std::span(&m, 1), partition).ok());
  }
  auto sub = subscribe(broker, "workers", {}, partition);
  auto got = take_now(*sub);
  REQUIRE(got.size() == static_cast<std::size_t>(count));
  auto group = broker.group("events", partition, "workers");
  REQUIRE(group.ok());
  for (const auto& d : got) REQUIRE((*group)->nack(d.id).ok());  // its only delivery ends: a dead letter
}

std::vector<json> records(Broker& broker, const std::string& topic, std::uint32_t partition = 0) {
  auto read = broker.read(topic, partition, ReadFrom{}, kMaxReadLimit);
  REQUIRE_MESSAGE(read.ok(), read.status().to_string());
  std::vector<json> out;
  for (const auto& r : read->messages) out.push_back(json::parse(r.line));
  return out;
}

std::uint64_t redrive(Broker& broker, std::uint32_t partition = 0, std::optional<std::uint64_t> limit = {}) {
  auto redriven = broker.redrive("events-dlq", partition, limit);
  REQUIRE_MESSAGE(redriven.ok(), redriven.status().to_string());
  return *redriven;
}

}  // namespace

TEST_CASE("RedriveSendsDeadLettersBackWithPayloadKeyAndHeadersOnce") {
  TempDir dir;
  auto broker = open_broker(dead_lettering_config(dir.path()));
  dead_letter(*broker, 3);
  REQUIRE(records(*broker, "events-dlq").size() == 3);

  CHECK(redrive(*broker, 0, 2) == 2);  // a limit
  CHECK(redrive(*broker) == 1);
  CHECK(redrive(*broker) == 0);  // each at most once
  const auto source = records(*broker, "events");
  REQUIRE(source.size() == 6);
  for (int n = 0; n < 3; ++n) {
    const json& back = source[3 + n];
    CHECK(back["offset"] == 3 + n);  // new offsets
    CHECK(back["payload"]["n"] == n);
    CHECK(back["key"] == "key-" + std::to_string(n));
    CHECK(back["headers"]["trace-id"] == "t-" + std::to_string(n));
    CHECK_FALSE(back.contains("source"));
    CHECK(back["dedup_id"] == detail::Redriver::marker(0, n));
  }
  // The group gets them again, and dead-letters them again; redrive sends only the new ones back.
  auto sub = subscribe(*broker, "workers");
  auto again = take_now(*sub);
  REQUIRE(again.size() == 3);
  auto group = broker->group("events", 0, "workers");
  for (const auto& d : again) REQUIRE((*group)->nack(d.id).ok());
  CHECK(redrive(*broker) == 3);
  CHECK(records(*broker, "events").size() == 9);
}

TEST_CASE("TheRedrivePositionSurvivesARestart") {
  TempDir dir;
  {
    auto broker = open_broker(dead_lettering_config(dir.path(), FsyncMode::kAlways));
    dead_letter(*broker, 4, 1);
    CHECK(redrive(*broker, 1, 3) == 3);
  }
  auto broker = open_broker(dead_lettering_config(dir.path(), FsyncMode::kAlways));
  CHECK(redrive(*broker, 1) == 1);
  CHECK(redrive(*broker, 1) == 0);
  CHECK(records(*broker, "events", 1).size() == 8);
  CHECK(redrive(*broker, 0) == 0);  // the other partition has its own position (and no letters)
}

TEST_CASE("ConcurrentRedrivesSendEachLetterBackOnce") {
  TempDir dir;
  auto broker = open_broker(dead_lettering_config(dir.path()));
  dead_letter(*broker, 50);
  std::atomic<std::uint64_t> total{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        auto n = broker->redrive("events-dlq", 0, 3);
        if (n.ok()) total += *n;
      }
    });
  }
  for (auto& t : threads) t.join();
  total += redrive(*broker);
  CHECK(total == 50);
  const auto source = records(*broker, "events");
  REQUIRE(source.size() == 100);
  std::set<int> seen;
  for (std::size_t i = 50; i < source.size(); ++i) seen.insert(source[i]["payload"]["n"].get<int>());
  CHECK(seen.size() == 50);
}

TEST_CASE("ARunLeftPendingIsSettledByWhatTheSourceHolds") {
  // A crash between a run's append and its new position (or an append whose outcome was unknown,
  // as after a failed fdatasync) leaves the run pending in the file: the next call, or the next
  // process, looks for the run's first message in the source and moves on only if it is there.
  for (const bool stored : {true, false}) {
    CAPTURE(stored);
    TempDir dir;
    StoreOptions options;
    options.data_dir = dir.path();
    options.fsync = FsyncMode::kNever;
    auto store = LogStore::open(options);
    REQUIRE(store.ok());
    Partition& letters = *(*store)->partition("events-dlq", 0).value();
    Partition& source = *(*store)->partition("events", 0).value();
    for (int n = 0; n < 4; ++n) {
      Message m = message("{\"n\":" + std::to_string(n) + "}");
      m.source = *Payload::parse(R"({"topic":"events","partition":0,"offset":)" + std::to_string(n) +
                                 R"(,"group":"g","deliveries":1})");
      REQUIRE(letters.append(m).ok());
    }
    auto fs = make_posix_file_system();
    const std::string redrive_dir = dir.path() + "/events-dlq/redrive";
    auto resolve = [&](std::string_view topic, std::uint32_t) -> Result<Partition*> {
      REQUIRE(topic == "events");
      return &source;
    };
    auto append = [](Partition& p, std::span<const Message> batch) { return p.append_messages(batch); };
    auto append_then_fail = [&](Partition& p, std::span<const Message> batch) -> Result<AppendResult> {
      if (stored) REQUIRE(p.append_messages(batch).ok());
      return Status::storage_failed("fdatasync failed: the write may or may not survive", true);
    };
    {
      detail::Redriver crashing(*fs, redrive_dir, 0, letters, true, resolve, append_then_fail);
      CHECK(crashing.redrive(std::nullopt).status().code() == ErrorCode::kStorageFailed);
    }
    CHECK(source.next_offset() == (stored ? 4u : 0u));
    detail::Redriver restarted(*fs, redrive_dir, 0, letters, true, resolve, append);
    auto redriven = restarted.redrive(std::nullopt);
    REQUIRE(redriven.ok());
    CHECK(*redriven == (stored ? 0u : 4u));
    CHECK(source.next_offset() == 4);  // once, either way
    CHECK(*restarted.redrive(std::nullopt) == 0);
  }
}

TEST_CASE("ADeadLetterOfADeadLetterGoesBackAsTheDeadLetterItWasAndOneWithoutSourceIsSteppedOver") {
  TempDir dir;
  Config config = dead_lettering_config(dir.path());
  config.topics = *parse_topics("events:1,events-dlq:1");
  auto broker = open_broker(config);
  // By hand into the dead-letter topic: no source, nothing to send back.
  REQUIRE(broker->produce("events-dlq", std::vector<Message>{message(R"({"by":"hand"})")}, 0u).ok());
  dead_letter(*broker, 1);  // events-dlq offset 1
  // A consumer of the dead-letter topic gives up on it too: events-dlq-dlq.
  auto sub = subscribe(*broker, "auditors", {}, 0, "events-dlq");
  auto got = take_now(*sub);
  REQUIRE(got.size() == 2);
  auto group = broker->group("events-dlq", 0, "auditors");
  REQUIRE((*group)->nack(got[1].id).ok());
  auto twice = broker->redrive("events-dlq-dlq", 0);
  REQUIRE(twice.ok());
  CHECK(*twice == 1);
  const auto back = records(*broker, "events-dlq");
  REQUIRE(back.size() == 3);
  CHECK(back[2]["source"]["topic"] == "events");  // its own source again
  CHECK(back[2]["payload"]["n"] == 0);
  CHECK(redrive(*broker) == 2);  // the hand-made one is stepped over, the two letters go back
  CHECK(records(*broker, "events").size() == 3);
}

TEST_CASE("RedriveRefusesATopicThatIsNotADeadLetterTopic") {
  TempDir dir;
  auto broker = open_broker(dead_lettering_config(dir.path()));
  CHECK(broker->redrive("events", 0).status().code() == ErrorCode::kInvalidArgument);
  CHECK(broker->redrive("nothing-dlq", 0).status().code() == ErrorCode::kInvalidArgument);
  CHECK(broker->redrive("../x-dlq", 0).status().code() == ErrorCode::kInvalidArgument);
  CHECK(redrive(*broker, 1) == 0);  // no dead letter yet: nothing to do
  CHECK(broker->redrive("events-dlq", 2).status().code() == ErrorCode::kNotFound);
  // The redrive marker is reserved in the library too (a planted one makes a letter count as back).
  Message planted = message("1");
  planted.dedup_id = detail::Redriver::marker(0, 0);
  CHECK(broker->produce("events", std::span(&planted, 1), 0u).status().code() == ErrorCode::kInvalidArgument);
}

TEST_CASE("ADeletedGroupIsGoneEndsItsSubscriptionsAndComesBackNewWhenUsedAgain") {
  TempDir dir;
  auto broker = open_broker(broker_config(dir.path(), "events:2"));
  produce_numbers(*broker, 5, 0, 0);
  produce_numbers(*broker, 2, 0, 1);
  auto sub = subscribe(*broker, "g");
  auto first = take_now(*sub);
  REQUIRE(first.size() == 5);
  first.resize(3);
  ack_all(*broker, first, "g");  // 3 and 4 stay in flight
  auto other = subscribe(*broker, "g", {}, 1);
  auto kept = broker->group("events", 0, "g");
  REQUIRE(kept.ok());
  std::thread waiter([&] {
    // Waiting for a message when the group goes: the wait ends with kNotFound.
    auto next = sub->next(10, std::chrono::seconds(30));
    CHECK(next.status().code() == ErrorCode::kNotFound);
  });
  auto deleted = broker->delete_group("events", "g");
  REQUIRE(deleted.ok());
  CHECK(*deleted);
  waiter.join();
  CHECK(other->next(1, std::chrono::milliseconds(0)).status().code() == ErrorCode::kNotFound);
  // The pointer handed out before still works, and refuses everything.
  CHECK((*kept)->ack(std::vector<std::string>{first[0].id}).status().code() == ErrorCode::kNotFound);
  SeekTarget to_start;
  to_start.offset = 0;
  CHECK((*kept)->seek(to_start).status().code() == ErrorCode::kNotFound);
  CHECK((*broker->stats("events"))[0].partitions[0].groups.empty());
  CHECK(*broker->delete_group("events", "g") == false);  // nothing left to delete
  CHECK(broker->delete_group("nope", "g").status().code() == ErrorCode::kNotFound);
  CHECK(broker->delete_group("events", "../g").status().code() == ErrorCode::kInvalidArgument);
  // Used again, it is a new group, from the start.
  auto fresh = subscribe(*broker, "g");
  CHECK(offsets_of(take_now(*fresh)) == std::vector<std::uint64_t>{0, 1, 2, 3, 4});
}

TEST_CASE("AGroupDeletionIsDurableWithEveryFsyncMode") {
  for (const FsyncMode fsync : {FsyncMode::kAlways, FsyncMode::kInterval, FsyncMode::kNever}) {
    CAPTURE(static_cast<int>(fsync));
    TempDir dir;
    Config config = broker_config(dir.path(), "events:1");
    config.store.fsync = fsync;
    {
      auto broker = open_broker(config);
      produce_numbers(*broker, 4);
      auto sub = subscribe(*broker, "g");
      ack_all(*broker, take_now(*sub, 2), "g");
      auto sub2 = subscribe(*broker, "h");
      ack_all(*broker, take_now(*sub2, 1), "h");
      REQUIRE(*broker->delete_group("events", "g"));
      // A new group of the same name after the deletion: its records follow the removal in the
      // shared acknowledgement log, and must be what the restart finds.
      SubscribeOptions latest;
      latest.from = StartPosition::kLatest;
      auto again = subscribe(*broker, "g", latest);
      produce_numbers(*broker, 1, 4);
      ack_all(*broker, take_now(*again), "g");
    }
    auto broker = open_broker(config);
    const auto stats = (*broker->stats("events"))[0].partitions[0].groups;
    REQUIRE(stats.size() == 2);
    CHECK(stats[0].group == "g");
    CHECK(stats[0].committed_offset == 5);  // the new g: started at 4, acknowledged 4
    CHECK(stats[1].group == "h");
    CHECK(stats[1].committed_offset == 1);
    REQUIRE(*broker->delete_group("events", "g"));
    REQUIRE(*broker->delete_group("events", "h"));
  }
}

TEST_CASE("AGroupDeletedBeforeACrashStaysDeletedWhenTheSharedLogIsFolded") {
  // With FSYNC=always every record is in the shared acknowledgement log until a checkpoint; the
  // broker is not closed cleanly here (its files stay as a kill -9 leaves them), so the next open
  // folds that log, removal record and all.
  TempDir dir;
  Config config = broker_config(dir.path(), "events:1");
  config.store.fsync = FsyncMode::kAlways;
  {
    auto broker = open_broker(config);
    produce_numbers(*broker, 3);
    auto sub = subscribe(*broker, "g");
    ack_all(*broker, take_now(*sub), "g");
    // A crash between the removal record and the removal of the journal's files: kept aside now,
    // put back after, as that crash would have left them.
    const std::filesystem::path journal_dir = dir.path() + "/events/groups/g";
    const std::filesystem::path aside = dir.path() + "/aside";
    std::filesystem::copy(journal_dir, aside);
    REQUIRE(*broker->delete_group("events", "g"));
    CHECK_FALSE(std::filesystem::exists(journal_dir / "partition-0.log"));
    std::filesystem::copy(
        aside, journal_dir,
        std::filesystem::copy_options::recursive | std::filesystem::copy_options::overwrite_existing);
    REQUIRE(std::filesystem::exists(journal_dir / "partition-0.log"));
  }
  auto broker = open_broker(config);
  CHECK((*broker->stats("events"))[0].partitions[0].groups.empty());
}

TEST_CASE("ALateAckDoesNotBringADeletedGroupBackButAConsumeMakesItAgain") {
  TempDir dir;
  auto broker = open_broker(broker_config(dir.path(), "events:1"));
  produce_numbers(*broker, 3);
  auto sub = subscribe(*broker, "g");
  auto got = take_now(*sub);
  REQUIRE(got.size() == 3);
  REQUIRE(*broker->delete_group("events", "g"));
  // A consumer that still holds a delivery from before acknowledges it: no group to go to.
  CHECK(broker->ack("events", 0, "g", std::vector<std::string>{got[0].id}).status().code() ==
        ErrorCode::kNotFound);
  CHECK((*broker->stats("events"))[0].partitions[0].groups.empty());
  // A consume makes it again (where `from` says), and then acks go to the new group.
  SubscribeOptions latest;
  latest.from = StartPosition::kLatest;
  auto again = subscribe(*broker, "g", latest);
  produce_numbers(*broker, 1, 3);
  auto fresh = take_now(*again);
  CHECK(offsets_of(fresh) == std::vector<std::uint64_t>{3});
  CHECK(ack_all(*broker, fresh, "g") == 1);
}

TEST_CASE("ADeletionACrashCutShortIsFinishedAtTheNextStart") {
  // The marker partition-<N>.removed is written before the journal's files go and removed after:
  // found at a start with the files (or some of them) still there, the deletion is finished.
  TempDir dir;
  Config config = broker_config(dir.path(), "events:1");
  {
    auto broker = open_broker(config);
    produce_numbers(*broker, 2);
    auto sub = subscribe(*broker, "g");
    ack_all(*broker, take_now(*sub), "g");
  }
  const std::filesystem::path journal_dir = dir.path() + "/events/groups/g";
  REQUIRE(std::filesystem::exists(journal_dir / "partition-0.log"));
  { std::ofstream marker(journal_dir / "partition-0.removed"); }
  auto broker = open_broker(config);
  CHECK((*broker->stats("events"))[0].partitions[0].groups.empty());
  CHECK_FALSE(std::filesystem::exists(journal_dir / "partition-0.log"));
  CHECK_FALSE(std::filesystem::exists(journal_dir / "partition-0.removed"));
}

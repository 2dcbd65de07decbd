// Group state on the replication path, at the groups layer (libmq/docs/replication.md section 7):
// a leader Broker publishes every change of its groups (acks, seeks, creation, deletion, ordering)
// and waits for its confirmation; a follower Broker writes its leader's records (or a snapshot) to
// its journals, closes the groups it had open as leader (their streams end), refuses damaged
// records, and serves exactly that state once it leads. The replication layer is replaced by a
// stand-in that hands the records over by hand.
#include <doctest/doctest.h>

#include <atomic>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <thread>

#include "broker_helpers.h"
#include "forwarding_file_system.h"
#include "groups/ack_journal.h"
#include "groups/leadership.h"
#include "groups/message_ids.h"
#include "hand_leadership.h"
#include "temp_dir.h"

using namespace mq;
using namespace mq::testing;
using mq::detail::GroupStateRecord;

namespace {

// Once armed, writes to groups' journal logs fail after `budget` more of them: the process died
// there (a kill -9 keeps everything written before).
class JournalWriteBudget final : public mq::testing::ForwardingFileSystem {
 public:
  void arm(std::int64_t budget) { budget_ = budget; }
  Result<std::unique_ptr<File>> open(const std::string& path) override {
    auto file = real_->open(path);
    if (!file.ok() || path.find("/groups/") == std::string::npos || !path.ends_with(".log")) return file;
    return std::unique_ptr<File>(std::make_unique<Counted>(this, std::move(file.value())));
  }

 private:
  class Counted final : public mq::testing::ForwardingFile {
   public:
    Counted(JournalWriteBudget* fs, std::unique_ptr<File> real) : ForwardingFile(std::move(real)), fs_(fs) {}
    Status append(std::string_view data) override { return fs_->take() ? real_->append(data) : died(); }
    Status write_at(std::uint64_t position, std::string_view data) override {
      return fs_->take() ? real_->write_at(position, data) : died();
    }

   private:
    static Status died() { return Status::io_error("the process died here (injected)"); }
    JournalWriteBudget* fs_;
  };
  bool take() { return budget_.fetch_sub(1) > 0; }
  std::atomic<std::int64_t> budget_{INT64_MAX};
};

struct Replica {
  explicit Replica(FsyncMode fsync = FsyncMode::kAlways, std::size_t max_payload = 1 << 20,
                   std::uint32_t deliveries = 0)
      : max_deliveries(deliveries) {
    open(fsync, max_payload);
  }
  void open(FsyncMode fsync = FsyncMode::kAlways, std::size_t max_payload = 1 << 20,
            std::shared_ptr<FileSystem> fs = nullptr) {
    broker.reset();
    leadership = std::make_shared<HandLeadership>();
    Config config = broker_config(dir.path(), "events:1");
    config.store.fsync = fsync;
    config.store.max_payload_bytes = max_payload;
    config.store.file_system = std::move(fs);
    config.groups.max_deliveries = max_deliveries;
    auto opened = Broker::open(config, std::make_shared<ManualClock>(), leadership);
    REQUIRE_MESSAGE(opened.ok(), opened.status().to_string());
    broker = std::move(opened.value());
  }
  std::optional<GroupStats> group(const std::string& name) {
    auto stats = broker->stats("events");
    REQUIRE(stats.ok());
    for (const auto& g : (*stats)[0].partitions.at(0).groups) {
      if (g.group == name) return g;
    }
    return std::nullopt;
  }
  Status apply(bool replace, const std::vector<GroupStateRecord>& records) {
    return leadership->host->apply_state("events", 0, replace, records);
  }

  std::uint32_t max_deliveries;  // 1: every nack dead-letters
  TempDir dir;
  std::shared_ptr<HandLeadership> leadership;
  std::unique_ptr<Broker> broker;
};

SeekTarget seek_to(std::uint64_t offset) {
  SeekTarget target;
  target.offset = offset;
  return target;
}

std::vector<std::string> ids(std::initializer_list<std::uint64_t> offsets) {
  std::vector<std::string> out;
  for (auto o : offsets) out.push_back(detail::message_id(0, o));
  return out;
}

// The leader and the follower hold the same 10 messages (as replication would have copied them).
void same_log(Replica& leader, Replica& follower) {
  produce_numbers(*leader.broker, 10);
  follower.leadership->leading = true;
  produce_numbers(*follower.broker, 10);
  follower.leadership->leading = false;
}

// Produces `count` messages and dead-letters each (the replica's max_deliveries is 1).
void dead_letter(Replica& replica, int count) {
  produce_numbers(*replica.broker, count);
  auto sub = subscribe(*replica.broker, "workers");
  auto got = take_now(*sub);
  REQUIRE(got.size() == static_cast<std::size_t>(count));
  auto group = replica.broker->group("events", 0, "workers");
  REQUIRE(group.ok());
  for (const auto& d : got) REQUIRE((*group)->nack(d.id).ok());
}

// The replica followed another leader for a while (its groups closed, as at a first apply),
// then leads again; what it published before is forgotten.
void follow_then_lead(Replica& replica) {
  replica.leadership->leading = false;
  REQUIRE(replica.apply(false, {}).ok());
  replica.leadership->leading = true;
  replica.leadership->take_published();
}

std::vector<GroupStateRecord> redrive_records(std::vector<GroupStateRecord> published) {
  std::erase_if(published, [](const GroupStateRecord& r) { return r.group != detail::kRedrivePositionName; });
  return published;
}

}  // namespace

TEST_CASE("group state: a follower applying its leader's records serves the same groups once it leads") {
  Replica leader, follower;
  same_log(leader, follower);
  REQUIRE(leader.broker->ack("events", 0, "g", ids({0, 1, 2, 3, 4})).ok());
  REQUIRE(leader.broker->ack("events", 0, "g", ids({7})).ok());
  REQUIRE(leader.broker->seek("events", 0, "replay", seek_to(8)).ok());
  SubscribeOptions keyed;
  keyed.from = StartPosition::kLatest;
  keyed.ordering = Ordering::kKey;
  REQUIRE(leader.broker->subscribe("events", 0, "keyed", keyed).ok());
  REQUIRE(leader.broker->ack("events", 0, "doomed", ids({0})).ok());
  REQUIRE(leader.broker->delete_group("events", "doomed").ok());
  const auto records = leader.leadership->take_published();
  CHECK(records.size() >= 8);  // four creations, three acks or seeks, one removal

  REQUIRE(follower.apply(false, records).ok());
  // It serves nothing while it follows; once it leads, exactly the leader's state.
  CHECK(follower.broker->ack("events", 0, "g", ids({5})).status().code() == ErrorCode::kNotOwned);
  follower.leadership->leading = true;
  CHECK(follower.group("g")->committed_offset == 5);
  CHECK(follower.group("replay")->committed_offset == 8);
  CHECK(follower.group("keyed")->committed_offset == 10);
  CHECK(follower.group("keyed")->ordering == Ordering::kKey);
  CHECK_FALSE(follower.group("doomed"));
  auto g = subscribe(*follower.broker, "g");
  CHECK(offsets_of(take_now(*g)) == std::vector<std::uint64_t>{5, 6, 8, 9});
  g.reset();

  // Through a restart too (the records went through the shared acknowledgement log, FSYNC=always).
  follower.open();
  follower.leadership->leading = true;
  auto again = subscribe(*follower.broker, "g");
  CHECK(offsets_of(take_now(*again)) == std::vector<std::uint64_t>{5, 6, 8, 9});
  CHECK(follower.group("replay")->committed_offset == 8);
  CHECK_FALSE(follower.group("doomed"));
}

TEST_CASE("group state: a snapshot replaces the follower's groups, removing those the leader has not") {
  for (FsyncMode fsync : {FsyncMode::kAlways, FsyncMode::kNever}) {
    CAPTURE(int(fsync));
    Replica leader(fsync), follower(fsync);
    same_log(leader, follower);
    REQUIRE(follower.apply(false, {{"stale", "[0,1,2]"}, {"g", "[0,1,2,3,4,5,6,7,8]"}}).ok());
    REQUIRE(leader.broker->ack("events", 0, "g", ids({0, 1, 2, 4})).ok());
    REQUIRE(leader.broker->seek("events", 0, "replay", seek_to(6)).ok());
    auto snapshot = leader.leadership->host->state_snapshot("events", 0);
    REQUIRE(snapshot.ok());
    CHECK(snapshot->size() == 2);
    REQUIRE(follower.apply(true, *snapshot).ok());
    follower.open(fsync);
    follower.leadership->leading = true;
    CHECK_FALSE(follower.group("stale"));
    CHECK(follower.group("g")->committed_offset == 3);  // the leader's, not the follower's own 9
    CHECK(follower.group("replay")->committed_offset == 6);
    auto g = subscribe(*follower.broker, "g");
    CHECK(offsets_of(take_now(*g)) == std::vector<std::uint64_t>{3, 5, 6, 7, 8, 9});
  }
}

TEST_CASE("group state: a follower refuses records libmq does not write, and writes none of the batch") {
  Replica follower;
  follower.leadership->leading = true;
  produce_numbers(*follower.broker, 3);
  follower.leadership->leading = false;
  const std::vector<std::vector<GroupStateRecord>> refused = {
      {{"g", "[0]"}, {"g", "[1,"}},
      {{"g", "[0]"}, {"bad/name", "[1]"}},
      {{"g", "[0]"}, {"g", R"({"unknown":1})"}},
      {{"g", "[0]"}, {"g", "[-1]"}},
      {{"g", "[0]"}, {"", "[1]"}},
  };
  for (const auto& records : refused) {
    CAPTURE(records.back().record);
    CHECK(follower.apply(false, records).code() == ErrorCode::kInvalidArgument);
  }
  // A snapshot is made of whole-state records only.
  CHECK(follower.apply(true, {{"g", "[0]"}}).code() == ErrorCode::kInvalidArgument);
  follower.leadership->leading = true;
  CHECK_FALSE(follower.group("g"));
}

TEST_CASE("group state: a broker that stops leading closes its groups, and their streams end") {
  Replica replica;
  produce_numbers(*replica.broker, 4);
  auto sub = subscribe(*replica.broker, "g");
  CHECK(take_now(*sub).size() == 4);
  const auto published = replica.leadership->take_published();
  replica.leadership->leading = false;
  // The new leader's first answer: its snapshot (the acks it holds: none).
  REQUIRE(replica.apply(true, {{"g", R"({"progress":{"committed":0,"acked":[1]}})"}}).ok());
  auto next = sub->next(10, std::chrono::milliseconds(0));
  CHECK(next.status().code() == ErrorCode::kUnavailable);
  CHECK(replica.broker->ack("events", 0, "g", ids({0})).status().code() == ErrorCode::kNotOwned);
  // Leading again: the state is the one applied, every delivery of before offered anew but 1.
  replica.leadership->leading = true;
  auto again = subscribe(*replica.broker, "g");
  CHECK(offsets_of(take_now(*again)) == std::vector<std::uint64_t>{0, 2, 3});
  // A follower's apply is refused while it leads (its groups are open).
  CHECK(replica.apply(false, {{"g", "[0]"}}).code() == ErrorCode::kConflict);
}

TEST_CASE("group state: an ack the followers did not confirm is answered with their error") {
  Replica leader;
  produce_numbers(*leader.broker, 2);
  leader.leadership->set(&HandLeadership::confirm,
                         Status::unavailable("not enough in-sync replicas (1 of 2)"));
  auto acked = leader.broker->ack("events", 0, "g", ids({0}));
  CHECK(acked.status().code() == ErrorCode::kUnavailable);
  CHECK(leader.broker->seek("events", 0, "g", seek_to(1)).status().code() == ErrorCode::kUnavailable);
  CHECK(leader.broker->subscribe("events", 0, "new", {}).status().code() == ErrorCode::kUnavailable);
}

TEST_CASE("group state: an ack of an acknowledged offset waits for the confirmation of the first") {
  Replica leader;
  produce_numbers(*leader.broker, 2);
  REQUIRE(leader.broker->ack("events", 0, "g", ids({0})).ok());
  leader.leadership->set(&HandLeadership::confirm,
                         Status::unavailable("not enough in-sync replicas confirmed it"));
  // Nothing new to record, but the record that acknowledged it is not confirmed (any more): no 200.
  CHECK(leader.broker->ack("events", 0, "g", ids({0})).status().code() == ErrorCode::kUnavailable);
  REQUIRE(leader.broker->delete_group("events", "g").status().code() == ErrorCode::kUnavailable);
}

TEST_CASE("group state: with too few replicas in sync a change is refused before it is made") {
  Replica leader;
  produce_numbers(*leader.broker, 3);
  REQUIRE(leader.broker->ack("events", 0, "g", ids({0})).ok());
  leader.leadership->set(&HandLeadership::writable,
                         Status::unavailable("not enough in-sync replicas (1 of 2)"));
  const auto published = leader.leadership->take_published().size();
  auto refused = leader.broker->ack("events", 0, "g", ids({1}));
  CHECK(refused.status().code() == ErrorCode::kUnavailable);
  CHECK_FALSE(refused.status().outcome_unknown());
  CHECK(leader.broker->seek("events", 0, "g", seek_to(2)).status().code() == ErrorCode::kUnavailable);
  CHECK(leader.leadership->take_published().empty());
  (void)published;
  leader.leadership->set(&HandLeadership::writable, Status());
  CHECK(leader.group("g")->committed_offset == 1);  // the refused ack and seek did nothing
}

TEST_CASE("group state: a group this broker deleted as leader comes back when its new leader has it") {
  Replica replica;
  produce_numbers(*replica.broker, 3);
  REQUIRE(replica.broker->ack("events", 0, "x", ids({0})).ok());
  REQUIRE(replica.broker->delete_group("events", "x").ok());
  replica.leadership->leading = false;
  // Another leader made x again and acknowledged 0 and 1 in it.
  REQUIRE(replica.apply(true, {{"x", R"({"progress":{"committed":2,"acked":[]}})"}}).ok());
  replica.leadership->leading = true;
  CHECK(replica.group("x")->committed_offset == 2);
  auto snapshot = replica.leadership->host->state_snapshot("events", 0);
  REQUIRE(snapshot.ok());
  REQUIRE(snapshot->size() == 1);
  CHECK(snapshot->front().group == "x");
}

TEST_CASE("group state: a state larger than a journal record is written in parts and reads back whole") {
  Replica leader(FsyncMode::kAlways, 8192), follower(FsyncMode::kAlways, 8192);
  produce_numbers(*leader.broker, 3000);
  follower.leadership->leading = true;
  produce_numbers(*follower.broker, 3000);
  follower.leadership->leading = false;
  std::vector<std::string> every_other;
  for (std::uint64_t o = 1; o < 3000; o += 2) every_other.push_back(detail::message_id(0, o));
  for (std::size_t i = 0; i < every_other.size(); i += 200) {
    std::vector<std::string> part(
        every_other.begin() + static_cast<std::ptrdiff_t>(i),
        every_other.begin() + static_cast<std::ptrdiff_t>(std::min(every_other.size(), i + 200)));
    REQUIRE(leader.broker->ack("events", 0, "g", part).ok());
  }
  // As deltas, merged into one list longer than a record may be, and as a snapshot.
  REQUIRE(follower.apply(false, leader.leadership->take_published()).ok());
  auto snapshot = leader.leadership->host->state_snapshot("events", 0);
  REQUIRE(snapshot.ok());
  CHECK(snapshot->front().record.size() > 8192 / 2);  // more than a record copied from the leader may hold
  REQUIRE(follower.apply(true, *snapshot).ok());
  follower.open(FsyncMode::kAlways, 8192);
  follower.leadership->leading = true;
  SubscribeOptions all;
  all.max_inflight = 5000;
  auto g = subscribe(*follower.broker, "g", all, 0);
  const auto offered = offsets_of(take_now(*g, 5000));
  REQUIRE(offered.size() == 1500);
  CHECK(offered.front() == 0);
  CHECK(offered.back() == 2998);
}

TEST_CASE("group state: after a new leader epoch a retried ack, deletion and consume are published again") {
  // The broker lost its lease and won the partition again at once: nothing was applied in between,
  // and the tickets of the old epoch can never be confirmed. Retries must not fail forever.
  Replica leader;
  produce_numbers(*leader.broker, 3);
  REQUIRE(leader.broker->ack("events", 0, "g", ids({0})).ok());
  REQUIRE(leader.broker->ack("events", 0, "doomed", ids({1})).ok());
  leader.leadership->set(&HandLeadership::confirm,
                         Status::unconfirmed("not enough in-sync replicas confirmed it"));
  CHECK(leader.broker->subscribe("events", 0, "fresh", {}).status().code() == ErrorCode::kUnavailable);
  CHECK(leader.broker->delete_group("events", "doomed").status().code() == ErrorCode::kUnavailable);
  leader.leadership->new_epoch();
  leader.leadership->set(&HandLeadership::confirm, Status());
  leader.leadership->take_published();

  CHECK(leader.broker->ack("events", 0, "g", ids({0})).ok());
  CHECK(leader.leadership->take_published() == std::vector<GroupStateRecord>{{"g", "[0]"}});
  auto fresh = leader.broker->subscribe("events", 0, "fresh", {});
  CHECK_MESSAGE(fresh.ok(), fresh.status().to_string());
  auto published = leader.leadership->take_published();
  REQUIRE(published.size() == 1);
  CHECK(published[0].group == "fresh");
  CHECK(published[0].record.starts_with(R"({"progress":)"));
  fresh = Status::not_found("closed");

  auto deleted = leader.broker->delete_group("events", "doomed");
  CHECK_MESSAGE(deleted.ok(), deleted.status().to_string());
  CHECK(leader.leadership->take_published() ==
        std::vector<GroupStateRecord>{{"doomed", std::string(kRemovedRecord)}});
  CHECK_FALSE(leader.group("doomed"));
  // The name is free again: a consume makes a new group of it.
  CHECK(leader.broker->subscribe("events", 0, "doomed", {}).ok());
}

TEST_CASE("group state: a change made here but not handed to the followers is answered outcome unknown") {
  Replica leader;
  produce_numbers(*leader.broker, 3);
  REQUIRE(leader.broker->ack("events", 0, "g", ids({2})).ok());
  leader.leadership->set(&HandLeadership::publish_error,
                         Status::unavailable("this broker's etcd lease lapsed"));
  auto acked = leader.broker->ack("events", 0, "g", ids({0}));
  CHECK(acked.status().code() == ErrorCode::kUnavailable);
  CHECK(acked.status().outcome_unknown());
  auto sought = leader.broker->seek("events", 0, "other", seek_to(1));
  CHECK(sought.status().code() == ErrorCode::kUnavailable);
  leader.leadership->set(&HandLeadership::publish_error, Status());
  leader.leadership->take_published();
  // The retry changes nothing here, and publishes what it repeats.
  CHECK(leader.broker->ack("events", 0, "g", ids({0})).ok());
  CHECK(leader.leadership->take_published() == std::vector<GroupStateRecord>{{"g", "[0]"}});
  // The group whose creation was not published is published whole by its first consume.
  CHECK(leader.broker->subscribe("events", 0, "other", {}).ok());
  auto published = leader.leadership->take_published();
  REQUIRE(published.size() == 1);
  CHECK(published[0].group == "other");
  CHECK(published[0].record.starts_with(R"({"progress":)"));
}

TEST_CASE("group state: a group reopened from disk is published whole before its first acknowledgement") {
  Replica leader;
  produce_numbers(*leader.broker, 5);
  REQUIRE(leader.broker->seek("events", 0, "g", seek_to(3)).ok());
  // It followed for a while, then leads again: the group opens from its journal on first use,
  // and publishing it fails.
  follow_then_lead(leader);
  leader.leadership->set(&HandLeadership::publish_error, Status::unavailable("not leading any more"));
  CHECK(leader.broker->ack("events", 0, "g", ids({3})).status().code() == ErrorCode::kUnavailable);
  leader.leadership->set(&HandLeadership::publish_error, Status());
  // The ack publishes the whole group first: a follower applying [4] to a group it never heard of
  // would start it at offset 0.
  REQUIRE(leader.broker->ack("events", 0, "g", ids({4})).ok());
  auto published = leader.leadership->take_published();
  REQUIRE(published.size() == 2);
  CHECK(published[0].record == R"({"progress":{"committed":3,"acked":[]}})");
  CHECK(published[1].record == "[4]");
  // Confirmed once: the next ack publishes only its offsets.
  REQUIRE(leader.broker->ack("events", 0, "g", ids({3})).ok());
  CHECK(leader.leadership->take_published() == std::vector<GroupStateRecord>{{"g", "[3]"}});
}

TEST_CASE("group state: consumes racing to confirm a group publish it once") {
  Replica leader;
  produce_numbers(*leader.broker, 3);
  leader.leadership->set(&HandLeadership::publish_error, Status::unavailable("not leading any more"));
  CHECK_FALSE(leader.broker->subscribe("events", 0, "g", {}).ok());
  leader.leadership->set(&HandLeadership::publish_error, Status());
  leader.leadership->stall_next_confirm = true;
  std::thread first([&] { CHECK(leader.broker->subscribe("events", 0, "g", {}).ok()); });
  leader.leadership->wait_stalled();  // published, waiting for the followers
  CHECK(leader.broker->subscribe("events", 0, "g", {}).ok());
  leader.leadership->release();
  first.join();
  CHECK(leader.leadership->take_published().size() == 1);
}

TEST_CASE("group state: with too few replicas in sync no group is created") {
  Replica leader;
  produce_numbers(*leader.broker, 3);
  leader.leadership->set(&HandLeadership::writable,
                         Status::unavailable("not enough in-sync replicas (1 of 2)"));
  CHECK(leader.broker->subscribe("events", 0, "new", {}).status().code() == ErrorCode::kUnavailable);
  CHECK(leader.broker->seek("events", 0, "new", seek_to(1)).status().code() == ErrorCode::kUnavailable);
  CHECK(leader.leadership->take_published().empty());
  leader.leadership->set(&HandLeadership::writable, Status());
  leader.open();  // nothing of it on disk either
  CHECK_FALSE(leader.group("new"));
}

TEST_CASE("group state: a crash between the parts of a large state never loses an acknowledgement") {
  // The follower held every odd offset acknowledged; its leader's next snapshot adds the even ones
  // below 100 and from 150 on. Written in parts (256-byte payloads: 128-byte records), a crash after any part
  // must keep every odd offset acknowledged.
  constexpr std::size_t kPayload = 256;
  Replica leader(FsyncMode::kInterval, kPayload);
  produce_numbers(*leader.broker, 200);
  const auto ack_range = [&](std::uint64_t from, std::uint64_t to) {
    for (std::uint64_t o = from; o < to; o += 20) {
      std::vector<std::string> part;
      for (std::uint64_t k = o; k < std::min(to, o + 20); k += 2) part.push_back(detail::message_id(0, k));
      REQUIRE(leader.broker->ack("events", 0, "g", part).ok());
    }
  };
  ack_range(1, 200);
  auto before = leader.leadership->host->state_snapshot("events", 0);
  REQUIRE(before.ok());
  ack_range(0, 100);
  ack_range(150, 200);
  auto after = leader.leadership->host->state_snapshot("events", 0);
  REQUIRE(after.ok());
  REQUIRE(after->front().record.size() > kPayload / 2);  // more than one record copied may hold

  std::vector<std::uint64_t> unacked_after;
  for (std::uint64_t o = 100; o < 150; o += 2) unacked_after.push_back(o);
  for (std::int64_t budget = 0;; ++budget) {
    CAPTURE(budget);
    Replica follower(FsyncMode::kInterval, kPayload);
    follower.leadership->leading = true;
    produce_numbers(*follower.broker, 200);
    follower.leadership->leading = false;
    REQUIRE(follower.apply(true, *before).ok());
    auto dying = std::make_shared<JournalWriteBudget>();
    follower.open(FsyncMode::kInterval, kPayload, dying);
    follower.leadership->leading = false;
    dying->arm(budget);
    const Status applied = follower.apply(true, *after);
    CAPTURE(applied.to_string());
    const bool whole = applied.ok();
    follower.open(FsyncMode::kInterval, kPayload);
    follower.leadership->leading = true;
    SubscribeOptions all;
    all.max_inflight = 500;
    auto g = subscribe(*follower.broker, "g", all, 0);
    const auto offered = offsets_of(take_now(*g, 500));
    for (std::uint64_t o : offered) CHECK_MESSAGE(o % 2 == 0, "offset " << o << " was acknowledged before");
    if (whole) {
      CHECK(offered == unacked_after);
      CHECK(budget > 3);  // it took parts
      break;
    }
    REQUIRE(budget < 30);
  }
}

TEST_CASE("group state: a follower copies a state with a tiny MAX_PAYLOAD_BYTES in records of 256 bytes") {
  // MAX_PAYLOAD_BYTES bounds producers' payloads, not the broker's own records: journal records
  // may hold 256 bytes (ack_journal_record_limit), a state copied is written in parts of 128.
  Replica leader(FsyncMode::kAlways, 64), follower(FsyncMode::kAlways, 64);
  produce_numbers(*leader.broker, 200);
  follower.leadership->leading = true;
  produce_numbers(*follower.broker, 200);
  follower.leadership->leading = false;
  std::vector<std::string> odd;
  for (std::uint64_t o = 1; o < 200; o += 2) odd.push_back(detail::message_id(0, o));
  REQUIRE(leader.broker->ack("events", 0, "g", odd).ok());  // more offsets than one record holds
  std::vector<std::uint64_t> even;
  for (std::uint64_t o = 0; o < 200; o += 2) even.push_back(o);
  auto snapshot = leader.leadership->host->state_snapshot("events", 0);
  REQUIRE(snapshot.ok());
  REQUIRE(snapshot->front().record.size() > 256);
  REQUIRE(follower.apply(true, *snapshot).ok());
  follower.open(FsyncMode::kAlways, 64);
  follower.leadership->leading = true;
  SubscribeOptions all;
  all.max_inflight = 200;
  auto g = subscribe(*follower.broker, "g", all, 0);
  CHECK(offsets_of(take_now(*g, 200)) == even);
}

TEST_CASE("group state: a DELETE that lost the race to its retry removes no newer group of the name") {
  // Found by review: T1 found the group, then stalled before removing it; its retry T2 removed it
  // (confirmed, the name freed); T3 made the group anew and acknowledged in it. T1 must not publish
  // the removal again after T3's records.
  Replica leader, follower;
  same_log(leader, follower);
  REQUIRE(leader.broker->ack("events", 0, "g", ids({0})).ok());
  leader.leadership->stall_next_writable = true;
  Result<bool> first = false;
  std::thread t1([&] { first = leader.broker->delete_group("events", "g"); });
  leader.leadership->wait_stalled();
  REQUIRE(leader.broker->delete_group("events", "g").ok());
  SubscribeOptions latest;
  latest.from = StartPosition::kLatest;
  REQUIRE(leader.broker->subscribe("events", 0, "g", latest).ok());
  produce_numbers(*leader.broker, 2, 10);  // offsets 10, 11
  follower.leadership->leading = true;
  produce_numbers(*follower.broker, 2, 10);
  follower.leadership->leading = false;
  REQUIRE(leader.broker->ack("events", 0, "g", ids({11})).ok());
  leader.leadership->release();
  t1.join();
  CHECK(first.ok());
  const auto records = leader.leadership->take_published();
  CHECK(records.back().record != std::string(kRemovedRecord));
  REQUIRE(follower.apply(false, records).ok());
  follower.leadership->leading = true;
  CHECK(leader.group("g")->committed_offset == 10);
  REQUIRE(follower.group("g"));
  CHECK(follower.group("g")->committed_offset == 10);
}

TEST_CASE("group state: a redrive position reaches the followers, so a new leader redrives no letter again") {
  Replica leader(FsyncMode::kAlways, 1 << 20, 1), follower(FsyncMode::kAlways, 1 << 20, 1);
  dead_letter(leader, 3);
  follower.leadership->leading = true;
  dead_letter(follower, 3);  // (as replication would have copied the letters)
  follower.leadership->leading = false;
  leader.leadership->take_published();

  auto redriven = leader.broker->redrive("events-dlq", 0, 2);
  REQUIRE_MESSAGE(redriven.ok(), redriven.status().to_string());
  CHECK(*redriven == 2);
  const auto published = redrive_records(leader.leadership->take_published());
  CHECK(published == std::vector<GroupStateRecord>{{"~redrive", R"({"position":2})"}});
  {
    const Status applied = follower.leadership->host->apply_state("events-dlq", 0, false, published);
    REQUIRE_MESSAGE(applied.ok(), applied.to_string());
  }

  // A snapshot carries it too (a follower that was away).
  Replica away(FsyncMode::kAlways, 1 << 20, 1);
  auto snapshot = leader.leadership->host->state_snapshot("events-dlq", 0);
  REQUIRE(snapshot.ok());
  CHECK(redrive_records(*snapshot) == published);
  away.leadership->leading = false;
  const Status copied = away.leadership->host->apply_state("events-dlq", 0, true, *snapshot);
  REQUIRE_MESSAGE(copied.ok(), copied.to_string());
  away.leadership->leading = true;
  dead_letter(away, 3);
  CHECK(*away.broker->redrive("events-dlq", 0, std::nullopt) == 1);

  // The follower leads: only the third letter goes back.
  follower.open(FsyncMode::kAlways, 1 << 20);  // and a restart keeps the position
  follower.leadership->leading = true;
  auto again = follower.broker->redrive("events-dlq", 0, std::nullopt);
  REQUIRE_MESSAGE(again.ok(), again.status().to_string());
  CHECK(*again == 1);
}

TEST_CASE(
    "group state: a redrive whose position was not handed over is answered outcome unknown, a retry "
    "publishes it") {
  Replica leader(FsyncMode::kAlways, 1 << 20, 1);
  dead_letter(leader, 2);
  leader.leadership->take_published();
  leader.leadership->set(&HandLeadership::publish_error,
                         Status::unavailable("this broker's etcd lease lapsed"));
  auto redriven = leader.broker->redrive("events-dlq", 0, std::nullopt);
  CHECK(redriven.status().code() == ErrorCode::kUnavailable);
  CHECK(redriven.status().outcome_unknown());
  leader.leadership->set(&HandLeadership::publish_error, Status());
  auto retried = leader.broker->redrive("events-dlq", 0, std::nullopt);
  REQUIRE(retried.ok());
  CHECK(*retried == 0);  // went back the first time
  CHECK(redrive_records(leader.leadership->take_published()) ==
        std::vector<GroupStateRecord>{{"~redrive", R"({"position":2})"}});
}

TEST_CASE(
    "group state: a follower refuses a redrive position that is not one, or not of a dead-letter topic") {
  Replica follower(FsyncMode::kAlways, 1 << 20, 1);
  follower.leadership->leading = true;
  dead_letter(follower, 1);
  follower.leadership->leading = false;
  for (const char* bad :
       {R"({"position":-1})", R"({"position":"1"})", R"({"position":1,"pending":{}})", "[1]"}) {
    CAPTURE(bad);
    CHECK(follower.leadership->host->apply_state("events-dlq", 0, false, {{"~redrive", bad}}).code() ==
          ErrorCode::kInvalidArgument);
  }
  CHECK(follower.leadership->host->apply_state("events", 0, false, {{"~redrive", R"({"position":1})"}})
            .code() == ErrorCode::kInvalidArgument);
  CHECK(follower.leadership->host->apply_state("events-dlq", 0, false, {{"~redrive", R"({"position":1})"}})
            .ok());
}

TEST_CASE("group state: a broker that stopped leading applies its leader's redrive position at once") {
  // A redrive waits for its position's confirmation without holding what a follower's apply takes.
  Replica a(FsyncMode::kAlways, 1 << 20, 1);
  dead_letter(a, 2);
  a.leadership->stall_next_confirm = true;
  Result<std::uint64_t> redriven = std::uint64_t{0};
  std::thread redrive([&] { redriven = a.broker->redrive("events-dlq", 0, std::nullopt); });
  a.leadership->wait_stalled();  // the letters went back; the position waits for its followers
  a.leadership->leading = false;
  CHECK(a.leadership->host->apply_state("events-dlq", 0, false, {{"~redrive", R"({"position":1})"}}).ok());
  a.leadership->release();
  redrive.join();
  CHECK(redriven.status().outcome_unknown());  // it stopped leading before the followers confirmed
}

TEST_CASE(
    "group state: a snapshot with an unreadable redrive file serves the position the broker holds, or none") {
  Replica leader(FsyncMode::kAlways, 1 << 20, 1);
  dead_letter(leader, 1);
  REQUIRE(leader.broker->redrive("events-dlq", 0, std::nullopt).ok());
  const auto damage = [&] {
    std::ofstream damaged(leader.dir.path() + "/events-dlq/redrive/partition-0.json", std::ios::trunc);
    damaged << R"({"position":)";
  };
  damage();
  // The redriver has the position in memory: the snapshot carries it.
  auto snapshot = leader.leadership->host->state_snapshot("events-dlq", 0);
  REQUIRE_MESSAGE(snapshot.ok(), snapshot.status().to_string());
  CHECK(redrive_records(*snapshot) == std::vector<GroupStateRecord>{{"~redrive", R"({"position":1})"}});
  // Restarted, nothing has read it: left out, and the snapshot still serves the partition.
  leader.open(FsyncMode::kAlways, 1 << 20);
  damage();
  snapshot = leader.leadership->host->state_snapshot("events-dlq", 0);
  REQUIRE_MESSAGE(snapshot.ok(), snapshot.status().to_string());
  CHECK(redrive_records(*snapshot).empty());
}

TEST_CASE("group state: with too few replicas in sync a redrive is refused before a letter goes back") {
  Replica leader(FsyncMode::kAlways, 1 << 20, 1);
  dead_letter(leader, 2);
  const std::uint64_t before = (*leader.broker->stats("events"))[0].partitions.at(0).next_offset;
  leader.leadership->set(&HandLeadership::writable,
                         Status::unavailable("not enough in-sync replicas (1 of 2)"));
  auto refused = leader.broker->redrive("events-dlq", 0, std::nullopt);
  CHECK(refused.status().code() == ErrorCode::kUnavailable);
  CHECK_FALSE(refused.status().outcome_unknown());
  CHECK((*leader.broker->stats("events"))[0].partitions.at(0).next_offset == before);
  leader.leadership->set(&HandLeadership::writable, Status());
  CHECK(*leader.broker->redrive("events-dlq", 0, std::nullopt) == 2);
}

TEST_CASE(
    "group state: a group reached through Broker::group() is published whole before its first ack too") {
  Replica leader;
  produce_numbers(*leader.broker, 3);
  REQUIRE(leader.broker->seek("events", 0, "g", seek_to(2)).ok());
  follow_then_lead(leader);
  leader.leadership->set(&HandLeadership::publish_error, Status::unavailable("lease lapsed"));
  CHECK_FALSE(leader.broker->group("events", 0, "g").ok());
  leader.leadership->set(&HandLeadership::publish_error, Status());
  auto g = leader.broker->group("events", 0, "g");
  REQUIRE(g.ok());
  REQUIRE((*g)->ack(ids({2})).ok());
  const auto published = leader.leadership->take_published();
  REQUIRE(published.size() == 2);
  CHECK(published[0].record == R"({"progress":{"committed":2,"acked":[]}})");
  CHECK(published[1].record == "[2]");
}

TEST_CASE(
    "group state: an ack whose group's opening was published in a past epoch is a plain 503, then works") {
  Replica leader;
  produce_numbers(*leader.broker, 3);
  REQUIRE(leader.broker->seek("events", 0, "g", seek_to(1)).ok());
  follow_then_lead(leader);
  REQUIRE(leader.broker->group("events", 0, "g").ok());  // opened: published in epoch 1
  leader.leadership->new_epoch();                        // the lease flapped before its first ack
  auto acked = leader.broker->ack("events", 0, "g", ids({1}));
  CHECK(acked.status().code() == ErrorCode::kUnavailable);
  CHECK_FALSE(acked.status().outcome_unknown());  // nothing was applied
  CHECK(leader.group("g")->committed_offset == 1);
  REQUIRE(leader.broker->ack("events", 0, "g", ids({1})).ok());  // the retry publishes the group again
  CHECK(leader.group("g")->committed_offset == 2);
}

TEST_CASE("group state: a redrive stopped before its second run answers for the first") {
  Replica leader(FsyncMode::kAlways, 1 << 20, 1);
  dead_letter(leader, 1);                                    // letter 0 of events/0
  produce_numbers(*leader.broker, 1, 100, 0, "events-dlq");  // letter 1 without a source: a run of its own
  const std::uint64_t before = (*leader.broker->stats("events"))[0].partitions.at(0).next_offset;
  leader.leadership->writable_calls_left = 1;  // the check before the call passes, the one before run 2 fails
  auto redriven = leader.broker->redrive("events-dlq", 0, std::nullopt);
  REQUIRE_MESSAGE(redriven.ok(), redriven.status().to_string());
  CHECK(*redriven == 1);  // the letter that went, its position confirmed
  CHECK((*leader.broker->stats("events"))[0].partitions.at(0).next_offset == before + 1);
  // And with that position unconfirmed: outcome unknown, not "nothing done".
  Replica other(FsyncMode::kAlways, 1 << 20, 1);
  dead_letter(other, 1);
  produce_numbers(*other.broker, 1, 100, 0, "events-dlq");
  other.leadership->writable_calls_left = 1;
  other.leadership->set(&HandLeadership::confirm, Status::unconfirmed("followers did not confirm"));
  auto unknown = other.broker->redrive("events-dlq", 0, std::nullopt);
  CHECK(unknown.status().outcome_unknown());
}

TEST_CASE(
    "group state: a redrive run its source's replicas did not confirm is not counted as gone on a retry") {
  Replica leader(FsyncMode::kAlways, 1 << 20, 1);
  dead_letter(leader, 1);
  leader.leadership->take_published();
  leader.leadership->unconfirm_next_append = true;
  auto first = leader.broker->redrive("events-dlq", 0, std::nullopt);
  CHECK(first.status().outcome_unknown());
  auto retry = leader.broker->redrive("events-dlq", 0, std::nullopt);
  CHECK(retry.status().code() == ErrorCode::kUnavailable);  // stored above the source's high watermark
  CHECK(redrive_records(leader.leadership->take_published()).empty());
  // Its replicas hold it now: the retry counts it as gone (the letter went once).
  auto events = leader.leadership->partitions("events", 0);
  REQUIRE(events.ok());
  (*events)->set_read_limit(std::nullopt);
  auto settled = leader.broker->redrive("events-dlq", 0, std::nullopt);
  REQUIRE_MESSAGE(settled.ok(), settled.status().to_string());
  CHECK(*settled == 0);
  CHECK(redrive_records(leader.leadership->take_published()) ==
        std::vector<GroupStateRecord>{{"~redrive", R"({"position":1})"}});
}

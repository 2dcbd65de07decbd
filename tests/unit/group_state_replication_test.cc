// Group state on the replication path, at the groups layer (libmq/docs/replication.md section 7):
// a leader Broker publishes every change of its groups (acks, seeks, creation, deletion, ordering)
// and waits for its confirmation; a follower Broker writes its leader's records (or a snapshot) to
// its journals, closes the groups it had open as leader (their streams end), refuses damaged
// records, and serves exactly that state once it leads. The replication layer is replaced by a
// stand-in that hands the records over by hand.
#include <doctest/doctest.h>

#include <atomic>
#include <mutex>

#include "broker_helpers.h"
#include "groups/leadership.h"
#include "groups/message_ids.h"
#include "temp_dir.h"

using namespace mq;
using namespace mq::testing;
using mq::detail::GroupStateRecord;

namespace {

// Leads while `leading`; keeps what the Broker publishes.
class HandLeadership final : public detail::Leadership {
 public:
  Status start(std::vector<detail::ReplicatedTopic>, PartitionLookup, detail::GroupStateHost* groups) override {
    host = groups;
    return {};
  }
  void stop() override {}
  Status check_leading(const std::string&, std::uint32_t) const override {
    return leading ? Status() : Status::not_owned("led by broker 1", 1);
  }
  Result<AppendResult> append(const std::string& topic, std::uint32_t partition,
                              const std::function<Result<AppendResult>()>& append) override {
    if (auto s = check_leading(topic, partition); !s.ok()) return s;
    return append();
  }
  Result<detail::StateTicket> publish_state(const std::string& topic, std::uint32_t partition,
                                            GroupStateRecord record) override {
    if (auto s = check_leading(topic, partition); !s.ok()) return s;
    std::lock_guard lock(mutex);
    published.push_back(std::move(record));
    return detail::StateTicket{1, published.size()};
  }
  Status confirm_state(const std::string&, std::uint32_t, detail::StateTicket) override {
    std::lock_guard lock(mutex);
    return confirm;
  }
  Status state_writable(const std::string& topic, std::uint32_t partition) const override {
    if (auto s = check_leading(topic, partition); !s.ok()) return s;
    std::lock_guard lock(mutex);
    return writable;
  }
  std::vector<GroupStateRecord> take_published() {
    std::lock_guard lock(mutex);
    return std::exchange(published, {});
  }

  std::atomic<bool> leading{true};
  detail::GroupStateHost* host = nullptr;
  mutable std::mutex mutex;
  std::vector<GroupStateRecord> published;  // GUARDED_BY(mutex)
  Status writable;                          // GUARDED_BY(mutex)
  Status confirm;                           // GUARDED_BY(mutex)
};

struct Replica {
  explicit Replica(FsyncMode fsync = FsyncMode::kAlways, std::size_t max_payload = 1 << 20) {
    open(fsync, max_payload);
  }
  void open(FsyncMode fsync = FsyncMode::kAlways, std::size_t max_payload = 1 << 20) {
    broker.reset();
    leadership = std::make_shared<HandLeadership>();
    Config config = broker_config(dir.path(), "events:1");
    config.store.fsync = fsync;
    config.store.max_payload_bytes = max_payload;
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
  {
    std::lock_guard lock(leader.leadership->mutex);
    leader.leadership->confirm = Status::unavailable("not enough in-sync replicas (1 of 2)");
  }
  auto acked = leader.broker->ack("events", 0, "g", ids({0}));
  CHECK(acked.status().code() == ErrorCode::kUnavailable);
  CHECK(leader.broker->seek("events", 0, "g", seek_to(1)).status().code() ==
        ErrorCode::kUnavailable);
  CHECK(leader.broker->subscribe("events", 0, "new", {}).status().code() == ErrorCode::kUnavailable);
}

TEST_CASE("group state: an ack of an acknowledged offset waits for the confirmation of the first") {
  Replica leader;
  produce_numbers(*leader.broker, 2);
  REQUIRE(leader.broker->ack("events", 0, "g", ids({0})).ok());
  {
    std::lock_guard lock(leader.leadership->mutex);
    leader.leadership->confirm = Status::unavailable("not enough in-sync replicas confirmed it");
  }
  // Nothing new to record, but the record that acknowledged it is not confirmed (any more): no 200.
  CHECK(leader.broker->ack("events", 0, "g", ids({0})).status().code() == ErrorCode::kUnavailable);
  REQUIRE(leader.broker->delete_group("events", "g").status().code() == ErrorCode::kUnavailable);
}

TEST_CASE("group state: with too few replicas in sync a change is refused before it is made") {
  Replica leader;
  produce_numbers(*leader.broker, 3);
  REQUIRE(leader.broker->ack("events", 0, "g", ids({0})).ok());
  {
    std::lock_guard lock(leader.leadership->mutex);
    leader.leadership->writable = Status::unavailable("not enough in-sync replicas (1 of 2)");
  }
  const auto published = leader.leadership->take_published().size();
  auto refused = leader.broker->ack("events", 0, "g", ids({1}));
  CHECK(refused.status().code() == ErrorCode::kUnavailable);
  CHECK_FALSE(refused.status().outcome_unknown());
  CHECK(leader.broker->seek("events", 0, "g", seek_to(2)).status().code() == ErrorCode::kUnavailable);
  CHECK(leader.leadership->take_published().empty());
  (void)published;
  {
    std::lock_guard lock(leader.leadership->mutex);
    leader.leadership->writable = Status();
  }
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
    std::vector<std::string> part(every_other.begin() + static_cast<std::ptrdiff_t>(i),
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

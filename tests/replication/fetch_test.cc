// The replication data path without a network (libmq/docs/replication.md "The data path"):
// followers copy their leader through fetch answers, and after leader changes every replica's
// log ends up the new leader's — the divergence cases of Kafka KIP-101 and KIP-279.
#include "replication/fetch.h"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "forwarding_file_system.h"
#include "mq/log_store.h"
#include "store_helpers.h"
#include "temp_dir.h"

namespace {

using mq::replication::answer_fetch;
using mq::replication::apply_fetch_answer;
using mq::replication::decode_fetch_answer;
using mq::replication::encode_fetch_answer;
using mq::replication::EpochCache;
using mq::replication::FetchAnswer;
using mq::replication::FetchRequest;

// One broker's copy of partition events/0: its log and its epoch cache.
struct Replica {
  explicit Replica(std::string replica_name, std::uint64_t segment_bytes = 4096,
                   std::shared_ptr<mq::FileSystem> store_fs = nullptr)
      : name(std::move(replica_name)) {
    mq::StoreOptions options;
    options.data_dir = dir.path();
    options.file_system = std::move(store_fs);
    options.fsync = mq::FsyncMode::kAlways;
    options.segment_bytes = segment_bytes;
    auto opened = mq::LogStore::open(options);
    REQUIRE_MESSAGE(opened.ok(), opened.status().to_string());
    store = std::move(*opened);
    log = &mq::testing::open_partition(*store, "events", 0);
    auto cache = EpochCache::open(*fs, dir.path() + "/events", "partition-0.epochs");
    REQUIRE_MESSAGE(cache.ok(), cache.status().to_string());
    epochs = std::make_unique<EpochCache>(std::move(*cache));
  }

  // Elected leader of `epoch`: the epoch starts at its log's end.
  void lead(std::uint64_t new_epoch) {
    epoch = new_epoch;
    REQUIRE(epochs->assign(epoch, log->log_end_offset()).ok());
  }
  // Produces `batches` batches of 1 to 3 messages as leader.
  void produce(int batches) {
    for (int b = 0; b < batches; ++b) {
      std::vector<mq::Message> batch;
      for (int i = 0; i <= (b + produced) % 3; ++i) {
        batch.push_back(mq::testing::message(R"({"by":")" + name + R"(","epoch":)" + std::to_string(epoch) +
                                             R"(,"n":)" + std::to_string(produced) + "}"));
      }
      ++produced;
      REQUIRE(log->append(batch).ok());
    }
  }
  // One fetch round against `leader`, as the follower of `leader_epoch`; returns what it applied.
  FetchAnswer fetch_from(const Replica& leader, std::size_t max_bytes = 1 << 20) {
    FetchRequest request;
    request.leader_epoch = leader.epoch;
    request.offset = log->log_end_offset();
    request.log_start = log->log_start_offset();
    if (auto newest = epochs->newest()) request.last_epoch = newest->epoch;
    request.max_bytes = max_bytes;
    auto answer = answer_fetch(*leader.log, *leader.epochs, leader.epoch, leader.log->next_offset(), request);
    REQUIRE_MESSAGE(answer.ok(), answer.status().to_string());
    // Through the wire format, as mqd carries it.
    auto decoded = decode_fetch_answer(encode_fetch_answer(*answer));
    REQUIRE_MESSAGE(decoded.ok(), decoded.status().to_string());
    FetchAnswer applied = *decoded;
    auto next = apply_fetch_answer(*log, *epochs, std::move(*decoded));
    REQUIRE_MESSAGE(next.ok(), next.status().to_string());
    return applied;
  }
  // Fetches until it has everything `leader` has; returns the number of rounds.
  int catch_up(const Replica& leader, std::size_t max_bytes = 1 << 20) {
    for (int rounds = 1;; ++rounds) {
      const FetchAnswer answer = fetch_from(leader, max_bytes);
      if (!answer.truncate_to && !answer.reset_to && answer.line_count == 0) return rounds;
      REQUIRE(rounds < 10000);
    }
  }
  std::vector<std::string> lines() const { return mq::testing::read_all(*log, log->log_start_offset()); }

  std::string name;
  mq::testing::TempDir dir;
  std::shared_ptr<mq::FileSystem> fs = mq::make_posix_file_system();
  std::unique_ptr<mq::LogStore> store;
  mq::Partition* log = nullptr;
  std::unique_ptr<EpochCache> epochs;
  std::uint64_t epoch = 0;
  int produced = 0;
};

}  // namespace

TEST_CASE("fetch: a follower copies its leader in whole batches, answer by answer") {
  Replica leader("a"), follower("b");
  leader.lead(1);
  leader.produce(40);
  // A budget of one byte: every answer is exactly one batch, never a part of one.
  std::uint64_t batches = 0;
  while (true) {
    const FetchAnswer answer = follower.fetch_from(leader, 1);
    if (answer.line_count == 0) break;
    ++batches;
    CHECK(answer.line_count <= 3);
  }
  CHECK(batches == 40);
  CHECK(follower.lines() == leader.lines());
  CHECK(follower.epochs->entries() == leader.epochs->entries());
  // With room, many batches an answer.
  Replica second("c");
  CHECK(second.catch_up(leader) == 2);
  CHECK(second.lines() == leader.lines());
}

TEST_CASE("fetch: a leader changed after the follower copied part of its log (KIP-101)") {
  Replica a("a"), b("b");
  a.lead(1);
  a.produce(10);
  b.catch_up(a);
  a.produce(5);  // never reached b: not acknowledged (R2), a dies
  b.lead(2);     // b takes over at its own end
  b.produce(7);
  // a comes back as b's follower: it cuts what only it had, then copies b's.
  const FetchAnswer first = a.fetch_from(b);
  REQUIRE(first.truncate_to.has_value());
  CHECK(*first.truncate_to == b.epochs->entries().back().start);
  a.catch_up(b);
  CHECK(a.lines() == b.lines());
  CHECK(a.epochs->entries() == b.epochs->entries());
}

TEST_CASE("fetch: several leader changes with every replica holding a different tail (KIP-279)") {
  Replica a("a"), b("b"), c("c");
  a.lead(1);
  a.produce(6);
  c.catch_up(a);
  a.produce(3);
  b.catch_up(a);
  a.produce(4);  // a: 13 batches, b: 9, c: 6
  // a dies; b leads epoch 2 and writes; then b dies before anyone copied that.
  b.lead(2);
  b.produce(3);
  // c leads epoch 3 from its shorter log and writes.
  c.lead(3);
  c.produce(5);
  // a (last epoch 1, longest log) and b (last epoch 2, which c never saw) come back as followers.
  a.catch_up(c);
  b.catch_up(c);
  CHECK(a.lines() == c.lines());
  CHECK(b.lines() == c.lines());
  CHECK(a.epochs->entries() == c.epochs->entries());
  CHECK(b.epochs->entries() == c.epochs->entries());
  // And copying goes on from the converged logs.
  c.produce(2);
  a.catch_up(c);
  CHECK(a.lines() == c.lines());
}

TEST_CASE("fetch: a follower below the leader's log start starts over at it") {
  Replica leader("a", 1024), follower("b");
  leader.lead(1);
  leader.produce(3);
  follower.catch_up(leader);
  leader.produce(60);
  mq::RetentionRule rule;
  rule.max_bytes = 4096;
  auto deleted = leader.log->apply_retention(rule);
  REQUIRE(deleted.ok());
  REQUIRE(leader.log->log_start_offset() > follower.log->next_offset());
  const FetchAnswer first = follower.fetch_from(leader);
  REQUIRE(first.reset_to.has_value());
  CHECK(*first.reset_to == leader.log->log_start_offset());
  follower.catch_up(leader);
  CHECK(follower.log->log_start_offset() == leader.log->log_start_offset());
  CHECK(follower.lines() == leader.lines());
}

TEST_CASE("fetch: a request for another leader epoch is refused") {
  Replica leader("a"), follower("b");
  leader.lead(4);
  FetchRequest request;
  request.leader_epoch = 3;
  auto answer = answer_fetch(*leader.log, *leader.epochs, leader.epoch, 0, request);
  REQUIRE_FALSE(answer.ok());
  CHECK(answer.status().code() == mq::ErrorCode::kConflict);
}

TEST_CASE("fetch: damaged or hostile answers are refused, not applied") {
  Replica leader("a"), follower("b");
  leader.lead(1);
  leader.produce(3);
  FetchRequest request;
  request.leader_epoch = 1;
  auto answer = answer_fetch(*leader.log, *leader.epochs, 1, 0, request);
  REQUIRE(answer.ok());
  const std::string good = encode_fetch_answer(*answer);
  const std::vector<std::string> bodies = {
      "",
      "\n",
      "not json\n",
      "[]\n",
      R"({"leader_epoch":1,"high_watermark":0,"log_start":0})"
      "\n",
      R"({"leader_epoch":1,"high_watermark":0,"log_start":0,"truncate_to":3,"reset_to":1,"truncate_epoch":1})"
      "\n",
      R"({"leader_epoch":-1,"high_watermark":0,"log_start":0,"reset_to":1})"
      "\n",
      R"({"leader_epoch":1,"high_watermark":0,"log_start":0,"first_offset":0,"lines":2,"epochs":[]})"
      "\n",
      R"({"leader_epoch":1,"high_watermark":0,"log_start":0,"first_offset":0,"lines":0,"epochs":[[1]]})"
      "\n",
      R"({"leader_epoch":1,"high_watermark":0,"log_start":0,"reset_to":1})"
      "\n{\"offset\":0}\n",
      good.substr(0, good.size() - 1),  // the last line torn
      good + "{\"offset\":99}\n",       // more lines than announced
  };
  for (const auto& body : bodies) {
    CAPTURE(body);
    CHECK(decode_fetch_answer(body).status().code() == mq::ErrorCode::kInvalidArgument);
  }
  // Lines that do not fit the follower's log are refused by the log itself.
  auto decoded = decode_fetch_answer(good);
  REQUIRE(decoded.ok());
  decoded->first_offset = 5;
  auto applied = apply_fetch_answer(*follower.log, *follower.epochs, std::move(*decoded));
  REQUIRE_FALSE(applied.ok());
  CHECK(follower.log->next_offset() == 0);
}

TEST_CASE("fetch: a follower whose newest epoch the new leader never had is cut where its copies part") {
  // Found by review: a leads epoch 1 (offsets 0-4), b copies 0-2; b leads epoch 2 and writes at 3,
  // then dies; a, still in the ISR, wins epoch 3. b's epoch 2 is unknown to a.
  for (const int b_batches : {1, 3}) {
    CAPTURE(b_batches);
    Replica a("a", 1 << 20), b("b", 1 << 20);
    a.lead(1);
    a.produce(2);  // batches of 1 and 2 lines: offsets 0 | 1 2
    b.catch_up(a);
    a.produce(1);  // 3 lines more: 3 4 5, never copied to b
    b.lead(2);
    b.produced = b_batches == 1 ? 3 : 2;  // a batch of 1, or of 3 lines
    b.produce(1);
    a.lead(3);
    a.produce(2);
    b.catch_up(a);
    CHECK(b.lines() == a.lines());
    CHECK(b.epochs->entries() == a.epochs->entries());
  }
}

TEST_CASE("fetch: a follower with lines but no epochs starts over") {
  Replica leader("a", 1 << 20), follower("b", 1 << 20);
  follower.produce(3);  // lines of its own, from before replication or with its epoch file lost
  leader.lead(1);
  leader.produce(3);
  follower.catch_up(leader);
  CHECK(follower.lines() == leader.lines());
}

// Counts the reads of partition logs (*.log).
class LogReadCounter final : public mq::testing::ForwardingFileSystem {
 public:
  mq::Result<std::unique_ptr<mq::File>> open(const std::string& path) override {
    auto file = real_->open(path);
    if (!file.ok() || !path.ends_with(".log")) return file;
    return std::unique_ptr<mq::File>(std::make_unique<Counted>(reads, std::move(*file)));
  }
  std::shared_ptr<std::atomic<std::uint64_t>> reads = std::make_shared<std::atomic<std::uint64_t>>(0);

 private:
  class Counted final : public mq::testing::ForwardingFile {
   public:
    Counted(std::shared_ptr<std::atomic<std::uint64_t>> reads, std::unique_ptr<mq::File> real)
        : ForwardingFile(std::move(real)), reads_(std::move(reads)) {}
    mq::Status read(std::uint64_t position, std::size_t length, std::string& out) const override {
      ++*reads_;
      return real_->read(position, length, out);
    }

   private:
    std::shared_ptr<std::atomic<std::uint64_t>> reads_;
  };
};

TEST_CASE("fetch: a batch larger than the answer budget goes whole, read at once") {
  auto counter = std::make_shared<LogReadCounter>();
  Replica leader("a", 64 << 20, counter), follower("b", 64 << 20);
  leader.lead(1);
  std::vector<mq::Message> big;
  for (int i = 0; i < 20000; ++i) big.push_back(mq::testing::message(R"({"i":)" + std::to_string(i) + "}"));
  REQUIRE(leader.log->append(big).ok());
  const std::uint64_t reads_before = *counter->reads;
  const FetchAnswer answer = follower.fetch_from(leader, 4096);
  CHECK(answer.line_count == 20000);
  // Quadratic before: a read per line, each from the batch's start (20,000 reads); a few now.
  CHECK(*counter->reads - reads_before < 20);
  CHECK(follower.lines() == leader.lines());
}

TEST_CASE("fetch: group-state lines travel after the log lines, and damaged ones are refused") {
  Replica leader("a");
  leader.lead(1);
  leader.produce(2);
  FetchRequest request;
  request.leader_epoch = 1;
  auto answer = answer_fetch(*leader.log, *leader.epochs, 1, 0, request);
  REQUIRE(answer.ok());
  answer->state_version = 7;
  answer->state_snapshot = true;
  answer->state = {{"billing", R"({"progress":{"committed":2,"acked":[4]}})"}, {"audit \"x\"", "[1,2]"}};
  const std::string body = encode_fetch_answer(*answer);
  auto decoded = decode_fetch_answer(body);
  REQUIRE(decoded.ok());
  CHECK(decoded->line_count == answer->line_count);
  CHECK(decoded->lines == answer->lines);
  CHECK(decoded->state_version == 7);
  CHECK(decoded->state_snapshot);
  REQUIRE(decoded->state.size() == 2);
  CHECK(decoded->state[0].group == "billing");
  CHECK(nlohmann::json::parse(decoded->state[0].record) ==
        nlohmann::json::parse(R"({"progress":{"committed":2,"acked":[4]}})"));
  CHECK(decoded->state[1] == mq::detail::GroupStateRecord{"audit \"x\"", "[1,2]"});
  // Without state: no state_version (a leader that replicates no group state).
  answer->state_version.reset();
  answer->state.clear();
  auto plain = decode_fetch_answer(encode_fetch_answer(*answer));
  REQUIRE(plain.ok());
  CHECK_FALSE(plain->state_version);
  for (const std::string& damaged : {
           body.substr(0, body.size() - 1),              // the last state line torn
           body + "{\"group\":\"g\",\"record\":[3]}\n",  // more state lines than announced
           body.substr(0, body.rfind("{\"group\"")) + "{\"record\":[1]}\n",  // no group
       }) {
    CAPTURE(damaged);
    CHECK(decode_fetch_answer(damaged).status().code() == mq::ErrorCode::kInvalidArgument);
  }
}

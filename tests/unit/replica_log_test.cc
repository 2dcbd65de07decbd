// What a follower does to its log (libmq/docs/replication.md): copy another replica's lines as they
// are (Partition::append_copied), cut its log back to where it parts from its leader's
// (truncate_to), and start over at the leader's log start (reset_to) — durably, across segments,
// and recoverably after a crash at any step.
#include <doctest/doctest.h>

#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "mq/log_store.h"
#include "mq/partition.h"
#include "store_helpers.h"
#include "temp_dir.h"

namespace {

using mq::testing::message;
using mq::testing::read_all;

constexpr std::uint64_t kSmallSegments = 2048;

std::unique_ptr<mq::LogStore> open_store(const std::string& dir, std::uint64_t segment_bytes = kSmallSegments,
                                         std::shared_ptr<mq::FileSystem> fs = nullptr,
                                         mq::FsyncMode fsync = mq::FsyncMode::kAlways) {
  mq::StoreOptions options;
  options.data_dir = dir;
  options.fsync = fsync;
  options.segment_bytes = segment_bytes;
  options.dedup_window = std::chrono::minutes(2);
  options.file_system = std::move(fs);
  auto store = mq::LogStore::open(options);
  REQUIRE_MESSAGE(store.ok(), store.status().to_string());
  return std::move(store.value());
}

mq::Partition& partition_of(mq::LogStore& store) { return mq::testing::open_partition(store, "events", 0); }

// A leader's log: `batches` batches of 1 to 3 messages, some with keys, headers and dedup ids.
void fill(mq::Partition& leader, int batches) {
  for (int b = 0; b < batches; ++b) {
    std::vector<mq::Message> batch;
    for (int i = 0; i <= b % 3; ++i) {
      mq::Message m = message(R"({"batch":)" + std::to_string(b) + R"(,"i":)" + std::to_string(i) +
                              R"(,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"})");
      if (i == 1) m.key = "key-" + std::to_string(b % 5);
      if (b % 4 == 0) m.dedup_id = "id-" + std::to_string(b) + "-" + std::to_string(i);
      if (b % 7 == 0) m.headers = {{"trace", std::to_string(b)}};
      batch.push_back(std::move(m));
    }
    auto stored = leader.append(batch);
    REQUIRE_MESSAGE(stored.ok(), stored.status().to_string());
  }
}

std::string joined(const std::vector<std::string>& lines, std::size_t from = 0,
                   std::size_t to = std::string::npos) {
  std::string text;
  for (std::size_t i = from; i < std::min(to, lines.size()); ++i) text += lines[i] + "\n";
  return text;
}

// Copies `lines` to `follower` in chunks of whole batches, as fetches would bring them.
void copy_in_chunks(mq::Partition& follower, const std::vector<std::string>& lines, std::size_t chunk) {
  std::size_t i = follower.next_offset();
  while (i < lines.size()) {
    std::size_t end = std::min(lines.size(), i + chunk);
    // Extend to the end of the batch the chunk would split.
    while (end < lines.size() && lines[end - 1].find("\"batch_last\":") != std::string::npos &&
           lines[end - 1].find("\"batch_last\":" + std::to_string(end - 1)) == std::string::npos)
      ++end;
    auto stored = follower.append_copied(joined(lines, i, end), i);
    REQUIRE_MESSAGE(stored.ok(), stored.status().to_string());
    CHECK(*stored == i);
    i = end;
  }
}

// The offset where a batch starts at or after `offset`.
std::uint64_t batch_start_at_or_after(const std::vector<std::string>& lines, std::uint64_t offset) {
  while (offset < lines.size() && offset > 0 &&
         lines[offset - 1].find("\"batch_last\":") != std::string::npos &&
         lines[offset - 1].find("\"batch_last\":" + std::to_string(offset - 1)) == std::string::npos)
    ++offset;
  return offset;
}

}  // namespace

TEST_CASE("replica log: copied lines are stored exactly as the leader's, across segments and a reopen") {
  mq::testing::TempDir leader_dir, follower_dir;
  auto leader_store = open_store(leader_dir.path());
  auto& leader = partition_of(*leader_store);
  fill(leader, 60);
  const auto lines = read_all(leader);
  REQUIRE(leader.segment_count() > 3);
  {
    auto follower_store = open_store(follower_dir.path());
    auto& follower = partition_of(*follower_store);
    copy_in_chunks(follower, lines, 7);
    CHECK(read_all(follower) == lines);
    CHECK(follower.next_offset() == leader.next_offset());
    CHECK(follower.segment_count() > 3);
    // Nothing to copy: nothing stored.
    auto none = follower.append_copied("", follower.next_offset());
    REQUIRE(none.ok());
    CHECK(*none == follower.next_offset());
  }
  auto reopened = open_store(follower_dir.path());
  auto& follower = partition_of(*reopened);
  CHECK(follower.recovery_report().truncated_bytes == 0);
  CHECK(read_all(follower) == lines);
  // The time index works on the copy: the first message of the newest timestamp is found.
  auto newest = follower.offset_for_time(std::numeric_limits<std::int64_t>::min());
  REQUIRE(newest.ok());
  CHECK(*newest == 0);
}

TEST_CASE("replica log: bad copied lines are refused whole, nothing stored") {
  mq::testing::TempDir leader_dir, follower_dir;
  auto leader_store = open_store(leader_dir.path(), 1 << 20);
  auto& leader = partition_of(*leader_store);
  fill(leader, 6);  // batches of 1, 2, 3, 1, 2, 3 messages
  const auto lines = read_all(leader);
  auto follower_store = open_store(follower_dir.path(), 1 << 20);
  auto& follower = partition_of(*follower_store);
  REQUIRE(follower.append_copied(joined(lines, 0, 1), 0).ok());

  struct Case {
    std::string what;
    std::string text;
    std::uint64_t first;
    mq::ErrorCode code;
  };
  const std::string rest = joined(lines, 1);
  std::string zero_byte = rest;
  zero_byte[zero_byte.find("xxx")] = '\0';
  std::string bad_json = rest;
  bad_json.insert(bad_json.find("\"payload\""), "\"payload\":{,");
  const std::vector<Case> cases = {
      {"not at the log's end", joined(lines), 0, mq::ErrorCode::kConflict},
      {"a gap", joined(lines, 2), 1, mq::ErrorCode::kInvalidArgument},
      {"half a batch", joined(lines, 1, 2), 1, mq::ErrorCode::kInvalidArgument},
      {"no newline at the end", rest.substr(0, rest.size() - 1), 1, mq::ErrorCode::kInvalidArgument},
      {"a zero byte", zero_byte, 1, mq::ErrorCode::kInvalidArgument},
      {"damaged JSON", bad_json, 1, mq::ErrorCode::kInvalidArgument},
      {"not a record", "{\"hello\":1}\n", 1, mq::ErrorCode::kInvalidArgument},
      {"an empty line", "\n", 1, mq::ErrorCode::kInvalidArgument},
      // Each of these a valid record that recovery or reads would not keep (found by review and
      // by fuzz_copied_lines): a batch's last line without batch_last, other shapes than libmq's
      // prefix, a raw carriage return.
      {"a batch's last line without batch_last",
       R"({"offset":1,"timestamp":1,"batch_last":2,"payload":1})"
       "\n"
       R"({"offset":2,"timestamp":1,"payload":2})"
       "\n",
       1, mq::ErrorCode::kInvalidArgument},
      {"a space after the brace",
       R"({ "offset":1,"timestamp":1,"payload":1})"
       "\n",
       1, mq::ErrorCode::kInvalidArgument},
      {"fields reordered",
       R"({"timestamp":1,"offset":1,"payload":1})"
       "\n",
       1, mq::ErrorCode::kInvalidArgument},
      {"minus zero",
       R"({"offset":-0,"timestamp":1,"payload":1})"
       "\n",
       0, mq::ErrorCode::kInvalidArgument},
      {"a carriage return", "{\"offset\":1,\"timestamp\":1,\"payload\":1}\r\n", 1,
       mq::ErrorCode::kInvalidArgument},
      {"a line of another offset", joined(lines, 1, 3).replace(10, 1, "9"), 1,
       mq::ErrorCode::kInvalidArgument},
  };
  for (const auto& c : cases) {
    CAPTURE(c.what);
    auto stored = follower.append_copied(c.text, c.first);
    REQUIRE_FALSE(stored.ok());
    CHECK(stored.status().code() == c.code);
    CHECK(follower.next_offset() == 1);
  }
  CHECK(read_all(follower) == std::vector<std::string>(lines.begin(), lines.begin() + 1));
  REQUIRE(follower.append_copied(rest, 1).ok());
  CHECK(read_all(follower) == lines);
}

TEST_CASE("replica log: a copy deduplicates as its leader did, and forgets what a truncation cut") {
  mq::testing::TempDir leader_dir, follower_dir;
  auto leader_store = open_store(leader_dir.path(), 1 << 20);
  auto& leader = partition_of(*leader_store);
  fill(leader, 9);  // dedup ids on batches 0, 4 and 8
  const auto lines = read_all(leader);
  auto follower_store = open_store(follower_dir.path(), 1 << 20);
  auto& follower = partition_of(*follower_store);
  copy_in_chunks(follower, lines, 100);

  mq::Message again = message(R"({"again":true})");
  again.dedup_id = "id-4-0";
  auto result = follower.append_messages(std::span(&again, 1));
  REQUIRE(result.ok());
  CHECK(result->duplicates.size() == 1);
  const std::uint64_t batch4 = result->offsets[0];

  // Cut at batch 4: its id is no longer stored, so the same id is new again; batch 0's is not.
  REQUIRE(follower.truncate_to(batch4).ok());
  result = follower.append_messages(std::span(&again, 1));
  REQUIRE(result.ok());
  CHECK(result->duplicates.empty());
  CHECK(result->offsets[0] == batch4);
  again.dedup_id = "id-0-0";
  result = follower.append_messages(std::span(&again, 1));
  REQUIRE(result.ok());
  CHECK(result->duplicates.size() == 1);
}

TEST_CASE("replica log: truncation within and across segments, durable, then copying goes on") {
  mq::testing::TempDir leader_dir;
  auto leader_store = open_store(leader_dir.path());
  auto& leader = partition_of(*leader_store);
  fill(leader, 60);
  const auto lines = read_all(leader);
  const std::uint64_t end = lines.size();

  // Every batch boundary from the end back to 0: within the active segment, at a sealed segment's
  // first offset, inside a sealed segment, everything.
  for (std::uint64_t cut = end; cut-- > 0;) {
    if (batch_start_at_or_after(lines, cut) != cut) continue;
    if (cut % 4 != 0 && cut > 8 && cut < end - 8) continue;  // a sample of the middle, every edge
    CAPTURE(cut);
    mq::testing::TempDir follower_dir;
    {
      auto store = open_store(follower_dir.path());
      auto& follower = partition_of(*store);
      copy_in_chunks(follower, lines, 10);
      REQUIRE(follower.truncate_to(cut).ok());
      CHECK(follower.next_offset() == cut);
      CHECK(read_all(follower) ==
            std::vector<std::string>(lines.begin(), lines.begin() + static_cast<long>(cut)));
      REQUIRE(follower.truncate_to(cut).ok());      // again: nothing to do
      REQUIRE(follower.truncate_to(end + 5).ok());  // beyond the end: nothing to do
    }
    auto store = open_store(follower_dir.path());
    auto& follower = partition_of(*store);
    CHECK(follower.recovery_report().truncated_bytes == 0);
    CHECK(follower.next_offset() == cut);
    // The follower then takes what its leader has from there.
    copy_in_chunks(follower, lines, 10);
    CHECK(read_all(follower) == lines);
  }
}

TEST_CASE("replica log: a cut inside a batch goes back to its first line, and none below the log start") {
  mq::testing::TempDir dir;
  auto store = open_store(dir.path(), 1 << 20);
  auto& log = partition_of(*store);
  fill(log, 3);  // offsets 0 | 1 2 | 3 4 5
  REQUIRE(log.truncate_to(5).ok());
  CHECK(log.next_offset() == 3);
  REQUIRE(log.truncate_to(2).ok());
  CHECK(log.next_offset() == 1);
  REQUIRE(log.reset_to(10).ok());
  CHECK(log.log_start_offset() == 10);
  CHECK(log.truncate_to(4).code() == mq::ErrorCode::kInvalidArgument);
  CHECK(log.reset_to(9).code() == mq::ErrorCode::kInvalidArgument);
}

TEST_CASE("replica log: reset_to starts an empty log at the leader's log start, durably") {
  mq::testing::TempDir leader_dir, follower_dir;
  auto leader_store = open_store(leader_dir.path());
  auto& leader = partition_of(*leader_store);
  fill(leader, 60);
  const auto lines = read_all(leader);
  const std::uint64_t start = batch_start_at_or_after(lines, lines.size() / 2);
  {
    auto store = open_store(follower_dir.path());
    auto& follower = partition_of(*store);
    copy_in_chunks(follower, std::vector<std::string>(lines.begin(), lines.begin() + 6), 10);
    REQUIRE(follower.reset_to(start).ok());
    CHECK(follower.log_start_offset() == start);
    CHECK(follower.next_offset() == start);
    CHECK(follower.segment_count() == 1);
  }
  auto store = open_store(follower_dir.path());
  auto& follower = partition_of(*store);
  CHECK(follower.log_start_offset() == start);
  CHECK(follower.next_offset() == start);
  copy_in_chunks(follower, lines, 10);
  CHECK(read_all(follower, start) ==
        std::vector<std::string>(lines.begin() + static_cast<long>(start), lines.end()));
}

namespace {

// The real file system; once armed, until `steps` changing operations (remove, rename, truncate,
// directory sync) have run; then every change fails, as if the process had been killed at that step.
class KilledAtStep : public mq::FileSystem {
 public:
  KilledAtStep() : real_(mq::make_posix_file_system()) {}
  void arm(int steps) { steps_ = steps; }
  bool killed() const { return steps_ < 0; }

  mq::Result<std::unique_ptr<mq::File>> open(const std::string& path) override {
    if (killed()) return mq::Status::io_error("killed");
    auto file = real_->open(path);
    if (!file.ok()) return file.status();
    return std::unique_ptr<mq::File>(std::make_unique<StepFile>(this, std::move(*file)));
  }
  mq::Status create_directories(const std::string& path) override { return real_->create_directories(path); }
  mq::Status sync_directory(const std::string& path) override {
    return step() ? real_->sync_directory(path) : mq::Status::io_error("killed");
  }
  mq::Result<std::vector<std::string>> list_directory(const std::string& path) override {
    return real_->list_directory(path);
  }
  bool exists(const std::string& path) override { return real_->exists(path); }
  mq::Status remove(const std::string& path) override {
    return step() ? real_->remove(path) : mq::Status::io_error("killed");
  }
  mq::Status rename(const std::string& from, const std::string& to) override {
    return step() ? real_->rename(from, to) : mq::Status::io_error("killed");
  }

 private:
  bool step() { return --steps_ >= 0; }
  class StepFile : public mq::File {
   public:
    StepFile(KilledAtStep* fs, std::unique_ptr<mq::File> real) : fs_(fs), real_(std::move(real)) {}
    mq::Status append(std::string_view data) override {
      return fs_->killed() ? mq::Status::io_error("killed") : real_->append(data);
    }
    mq::Status sync() override { return fs_->killed() ? mq::Status::io_error("killed") : real_->sync(); }
    mq::Status read(std::uint64_t position, std::size_t length, std::string& out) const override {
      return real_->read(position, length, out);
    }
    mq::Result<std::uint64_t> size() const override { return real_->size(); }
    mq::Status truncate(std::uint64_t length) override {
      return fs_->step() ? real_->truncate(length) : mq::Status::io_error("killed");
    }

   private:
    KilledAtStep* fs_;
    std::unique_ptr<mq::File> real_;
  };

  std::shared_ptr<mq::FileSystem> real_;
  int steps_ = std::numeric_limits<int>::max();
};

}  // namespace

TEST_CASE("replica log: a truncation killed at any step leaves a prefix, and truncating again finishes it") {
  mq::testing::TempDir leader_dir;
  auto leader_store = open_store(leader_dir.path());
  auto& leader = partition_of(*leader_store);
  fill(leader, 60);
  const auto lines = read_all(leader);
  mq::testing::TempDir original;
  {
    auto store = open_store(original.path());
    copy_in_chunks(partition_of(*store), lines, 10);
  }
  // A cut inside a sealed segment (the active one and newer sealed ones go) and one that empties it.
  for (const std::uint64_t cut : {batch_start_at_or_after(lines, lines.size() / 3), std::uint64_t{0}}) {
    for (int steps = 0;; ++steps) {
      CAPTURE(cut);
      CAPTURE(steps);
      mq::testing::TempDir copy;
      std::filesystem::copy(original.path(), copy.path(), std::filesystem::copy_options::recursive);
      bool finished = false;
      {
        auto fs = std::make_shared<KilledAtStep>();
        auto store = open_store(copy.path(), kSmallSegments, fs);
        auto& log = partition_of(*store);
        fs->arm(steps);
        finished = log.truncate_to(cut).ok();
      }
      auto store = open_store(copy.path());
      auto& log = partition_of(*store);
      const auto left = read_all(log);
      REQUIRE(left.size() >= cut);
      CHECK(left == std::vector<std::string>(lines.begin(), lines.begin() + static_cast<long>(left.size())));
      REQUIRE(log.truncate_to(cut).ok());
      CHECK(read_all(log) == std::vector<std::string>(lines.begin(), lines.begin() + static_cast<long>(cut)));
      copy_in_chunks(log, lines, 10);
      CHECK(read_all(log) == lines);
      if (finished) break;
      REQUIRE(steps < 100);
    }
  }
}

TEST_CASE("replica log: a read limit caps what readers see, not what replication copies") {
  mq::testing::TempDir dir;
  auto store = open_store(dir.path());
  auto& log = partition_of(*store);
  fill(log, 30);
  const auto lines = read_all(log);
  const std::uint64_t end = lines.size();
  const std::uint64_t limit = batch_start_at_or_after(lines, end / 2);
  log.set_read_limit(limit);
  CHECK(log.next_offset() == limit);
  CHECK(log.log_end_offset() == end);
  CHECK(read_all(log) == std::vector<std::string>(lines.begin(), lines.begin() + static_cast<long>(limit)));
  auto at_limit = log.read(limit, 10, 1 << 20);
  REQUIRE(at_limit.ok());
  CHECK(at_limit->empty());
  CHECK(at_limit->next_offset() == limit);
  CHECK(log.read(limit + 1, 10, 1 << 20).status().code() == mq::ErrorCode::kNotFound);
  auto past = log.read_past_limit(limit, 1000, 1 << 20);
  REQUIRE(past.ok());
  REQUIRE_FALSE(past->empty());  // (from one segment: a read never spans two)
  CHECK((*past)[0].offset == limit);
  CHECK(std::string((*past)[0].line) == lines[limit]);
  // A waiter beyond the limit wakes when the limit rises, though nothing was appended.
  CHECK(log.wait_beyond(limit, std::chrono::milliseconds(0)) == limit);
  std::thread raiser([&] { log.set_read_limit(end); });
  CHECK(log.wait_beyond(limit, std::chrono::seconds(30)) == end);
  raiser.join();
  CHECK(read_all(log) == lines);
  // Appends above the limit stay hidden from readers until it moves; lifted, everything shows.
  log.set_read_limit(end);
  mq::testing::append_ok(log, message(R"({"late":true})"));
  CHECK(log.next_offset() == end);
  CHECK(log.wait_beyond_end(end, std::chrono::milliseconds(0)) == end + 1);
  log.set_read_limit(std::nullopt);
  CHECK(log.next_offset() == end + 1);
}

TEST_CASE("replica log: retention keeps what readers cannot see yet") {
  mq::testing::TempDir dir;
  auto store = open_store(dir.path(), 1024);
  auto& log = partition_of(*store);
  fill(log, 60);
  REQUIRE(log.segment_count() > 4);
  log.set_read_limit(3);
  mq::RetentionRule rule;
  rule.max_bytes = 1;  // everything sealed would go
  auto deleted = log.apply_retention(rule);
  REQUIRE(deleted.ok());
  CHECK(log.log_start_offset() <= 3);  // nothing above the limit went
  CHECK(log.next_offset() >= log.log_start_offset());
  log.set_read_limit(std::nullopt);
  deleted = log.apply_retention(rule);
  REQUIRE(deleted.ok());
  CHECK(log.log_start_offset() > 3);
}

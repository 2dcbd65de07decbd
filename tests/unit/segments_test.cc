// A partition's log in segments (libmq/docs/log_format.md "Segments"): rolls at segment_bytes, reads
// and waits across segments, reopening, and a process killed at every step of a roll.
#include <doctest/doctest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "fault_file_system.h"
#include "store_helpers.h"
#include "temp_dir.h"

using namespace mq;
using namespace mq::testing;
namespace fs = std::filesystem;

namespace {

constexpr std::uint64_t kSegmentBytes = 1024;

std::unique_ptr<LogStore> open_segmented(const std::string& dir,
                                         std::shared_ptr<FileSystem> file_system = nullptr,
                                         FsyncMode fsync = FsyncMode::kNever) {
  StoreOptions options;
  options.data_dir = dir;
  options.fsync = fsync;
  options.segment_bytes = kSegmentBytes;
  options.index_interval_bytes = 128;
  options.file_system = std::move(file_system);
  options.recovery_log = [](const std::string&) {};  // a killed roll may leave a torn tail to cut
  auto store = LogStore::open(options);
  REQUIRE_MESSAGE(store.ok(), store.status().to_string());
  return std::move(store.value());
}

std::string numbered(int n) {
  return "{\"n\":" + std::to_string(n) + ",\"pad\":\"" + std::string(40, 'x') + "\"}";
}

std::set<std::string> segment_files(const std::string& dir) {
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir + "/events"))
    names.insert(entry.path().filename().string());
  return names;
}

// Every stored message's "n", in offset order.
std::vector<int> numbers_of(const Partition& partition) {
  std::vector<int> numbers;
  for (const std::string& line : read_all(partition, partition.log_start_offset())) {
    const auto at = line.find("\"n\":");
    REQUIRE(at != std::string::npos);
    numbers.push_back(std::stoi(line.substr(at + 4)));
  }
  return numbers;
}

// Kills the process, as far as the log can tell, at its k-th file-system step (opening, renaming,
// removing, syncing a file or a directory): that step and every later one fail, and nothing already
// written is lost (kill -9 keeps the page cache).
class KillingFileSystem : public FileSystem {
 public:
  explicit KillingFileSystem(std::shared_ptr<FileSystem> real) : real_(std::move(real)) {}
  void kill_at_step(std::int64_t k) { steps_left_ = k; }
  bool killed() const { return steps_left_ < 0; }
  // How many times a segment's log (*.log) was opened.
  int log_opens() const { return log_opens_; }
  // Removals ("remove <file name>") and directory syncs ("sync"), in order.
  std::vector<std::string> steps() const {
    std::lock_guard lock(steps_mutex_);
    return steps_;
  }

  Result<std::unique_ptr<File>> open(const std::string& path) override {
    if (!step()) return dead();
    if (path.ends_with(".log")) ++log_opens_;
    auto file = real_->open(path);
    if (!file.ok()) return file.status();
    return std::unique_ptr<File>(std::make_unique<KillableFile>(this, std::move(file.value())));
  }
  Status create_directories(const std::string& path) override {
    return step() ? real_->create_directories(path) : dead();
  }
  Status sync_directory(const std::string& path) override {
    record("sync");
    return step() ? real_->sync_directory(path) : dead();
  }
  Result<std::vector<std::string>> list_directory(const std::string& path) override {
    return real_->list_directory(path);
  }
  bool exists(const std::string& path) override { return real_->exists(path); }
  Result<std::uint64_t> file_size(const std::string& path) override { return real_->file_size(path); }
  Status remove(const std::string& path) override {
    record("remove " + path.substr(path.rfind('/') + 1));
    if (!refused_.empty() && path.ends_with(refused_)) return Status::io_error("Operation not permitted");
    return step() ? real_->remove(path) : dead();
  }
  // Removing a file whose name ends with `suffix` fails, as for an immutable file.
  void refuse_removal_of(std::string suffix) { refused_ = std::move(suffix); }
  Status rename(const std::string& from, const std::string& to) override {
    return step() ? real_->rename(from, to) : dead();
  }

 private:
  class KillableFile : public File {
   public:
    KillableFile(KillingFileSystem* fs, std::unique_ptr<File> real) : fs_(fs), real_(std::move(real)) {}
    Status append(std::string_view data) override { return fs_->killed() ? dead() : real_->append(data); }
    Status sync() override { return fs_->step() ? real_->sync() : dead(); }
    Status read(std::uint64_t position, std::size_t length, std::string& out) const override {
      return real_->read(position, length, out);
    }
    Result<std::uint64_t> size() const override { return real_->size(); }
    Status truncate(std::uint64_t length) override {
      return fs_->killed() ? dead() : real_->truncate(length);
    }

   private:
    KillingFileSystem* fs_;
    std::unique_ptr<File> real_;
  };

  static Status dead() { return Status::io_error("the process was killed"); }
  void record(std::string step) {
    std::lock_guard lock(steps_mutex_);
    steps_.push_back(std::move(step));
  }
  // False once the step count ran out (this step is the one killed).
  bool step() { return steps_left_.fetch_sub(1) > 0; }

  std::shared_ptr<FileSystem> real_;
  std::atomic<std::int64_t> steps_left_{INT64_MAX};
  std::atomic<int> log_opens_{0};
  std::string refused_;  // set before use, then only read
  mutable std::mutex steps_mutex_;
  std::vector<std::string> steps_;  // GUARDED_BY(steps_mutex_)
};

}  // namespace

TEST_CASE("TheLogRollsAtSegmentBytesAndReadsBackInOrderAcrossSegmentsAndRestarts") {
  TempDir dir;
  {
    auto store = open_segmented(dir.path());
    Partition& p = open_partition(*store);
    for (int i = 0; i < 200; ++i) append_ok(p, message(numbered(i)));
    // A batch is never split between segments.
    std::vector<Message> batch;
    for (int i = 200; i < 230; ++i) batch.push_back(message(numbered(i)));
    REQUIRE(p.append(batch).ok());
    CHECK(p.segment_count() > 10u);
    CHECK(p.next_offset() == 230u);
    CHECK(p.log_start_offset() == 0u);
    std::vector<int> expected(230);
    for (int i = 0; i < 230; ++i) expected[static_cast<std::size_t>(i)] = i;
    CHECK(numbers_of(p) == expected);
    // Reading from the middle of a sealed segment, and across its end.
    CHECK(read_all(p, 57).size() == 173u);
  }
  const auto files = segment_files(dir.path());
  CHECK(files.contains("partition-0.log"));
  CHECK(files.contains("partition-0.00000000000000000000.log"));
  CHECK(files.contains("partition-0.meta"));
  std::uint64_t bytes = 0;
  std::size_t sealed = 0;
  for (const auto& name : files) {
    if (name.ends_with(".log")) bytes += fs::file_size(dir.path() + "/events/" + name);
    if (name.ends_with(".log") && name != "partition-0.log") {
      ++sealed;
      // Every sealed segment is about segment_bytes (it rolls at the first append that finds it full).
      CHECK(fs::file_size(dir.path() + "/events/" + name) >= kSegmentBytes);
    }
  }
  auto store = open_segmented(dir.path());
  Partition& p = open_partition(*store);
  CHECK(p.segment_count() == sealed + 1);
  CHECK(p.log_bytes() == bytes);
  CHECK(p.next_offset() == 230u);
  CHECK(numbers_of(p).size() == 230u);
  CHECK(append_ok(p, message(numbered(230))) == 230u);
  // The store counts a topic's partitions from sealed segments too.
  CHECK(*store->partitions_on_disk("events") == 1u);
}

TEST_CASE("AWaitOnTheActiveSegmentFollowsARoll") {
  TempDir dir;
  auto store = open_segmented(dir.path());
  Partition& p = open_partition(*store);
  // Fill the active segment until the next append rolls it; then wait beyond the end while another
  // thread's append rolls it (the message lands in the new segment): the wait must end with the
  // message, not at its timeout, whether it began before the roll or after.
  const std::string active = dir.path() + "/events/partition-0.log";
  append_ok(p, message(numbered(0)));
  while (fs::file_size(active) < kSegmentBytes) append_ok(p, message(numbered(1)));
  const std::uint64_t end = p.next_offset();
  const std::size_t segments = p.segment_count();
  std::thread appender([&] { append_ok(p, message(numbered(2))); });
  const auto start = std::chrono::steady_clock::now();
  const std::uint64_t next = p.wait_beyond(end, std::chrono::seconds(20));
  appender.join();
  CHECK(p.segment_count() == segments + 1);
  CHECK(next == end + 1);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(10));
}

TEST_CASE("ARollInterruptedAtAnyStepLosesNoAcknowledgedMessage") {
  // Each k kills the process at the k-th file-system step of the append that rolls (and of what
  // follows it), then a restart with the real file system must find every acknowledged message,
  // in order, and take appends at the next offset.
  for (std::int64_t k = 0; k < 30; ++k) {
    CAPTURE(k);
    TempDir dir;
    auto killing = std::make_shared<KillingFileSystem>(make_posix_file_system());
    std::vector<int> acknowledged;
    {
      auto store = open_segmented(dir.path(), killing, FsyncMode::kAlways);
      Partition& p = open_partition(*store);
      int n = 0;
      while (p.log_bytes() < kSegmentBytes) {
        append_ok(p, message(numbered(n)));
        acknowledged.push_back(n++);
      }
      killing->kill_at_step(k);
      for (int i = 0; i < 3; ++i, ++n) {
        if (p.append(message(numbered(n))).ok()) acknowledged.push_back(n);
      }
    }
    auto store = open_segmented(dir.path());
    Partition& p = open_partition(*store);
    const std::vector<int> stored = numbers_of(p);
    // Every acknowledged message, in order; an append that failed may or may not be there (its
    // bytes may have been written before the step that failed), but nothing else is.
    std::size_t next_ack = 0;
    for (int number : stored) {
      if (next_ack < acknowledged.size() && number == acknowledged[next_ack]) ++next_ack;
    }
    CHECK(next_ack == acknowledged.size());
    CHECK(stored.size() <= acknowledged.size() + 3);
    CHECK(p.next_offset() == stored.size());
    CHECK(append_ok(p, message(numbered(1000))) == stored.size());
    CHECK(numbers_of(p).back() == 1000);
  }
}

TEST_CASE("ARollCutShortIsFinishedOrUndoneAtTheNextOpen") {
  TempDir dir;
  std::uint64_t next = 0;
  {
    auto store = open_segmented(dir.path());
    Partition& p = open_partition(*store);
    for (int i = 0; i < 60; ++i) append_ok(p, message(numbered(i)));
    REQUIRE(p.segment_count() >= 2);
    next = p.next_offset();
  }
  const std::string events = dir.path() + "/events/";
  // The last append went to the active segment (a segment rolls before the append that finds it full).
  REQUIRE(fs::file_size(events + "partition-0.log") > 0);
  SUBCASE("before the commit point: an index of a sealed name without its log") {
    const std::string orphan = events + "partition-0.00000000000099999999.index";
    fs::copy_file(events + "partition-0.index", orphan);
    auto store = open_segmented(dir.path());
    Partition& p = open_partition(*store);
    CHECK_FALSE(fs::exists(orphan));
    CHECK(p.next_offset() == next);
    CHECK(numbers_of(p).size() == next);
  }
  SUBCASE("after the commit point: the active segment is sealed and no new one exists") {
    const std::string first_line = split_lines(file_contents(events + "partition-0.log")).front();
    REQUIRE(first_line.starts_with("{\"offset\":"));
    std::string digits = std::to_string(std::stoull(first_line.substr(10)));
    digits = std::string(20 - digits.size(), '0') + digits;
    fs::rename(events + "partition-0.index", events + "partition-0." + digits + ".index");
    fs::rename(events + "partition-0.log", events + "partition-0." + digits + ".log");
    auto store = open_segmented(dir.path());
    Partition& p = open_partition(*store);
    CHECK(p.next_offset() == next);
    CHECK(numbers_of(p).size() == next);
    CHECK(append_ok(p, message(numbered(7))) == next);
  }
  SUBCASE("an active segment that does not join the sealed ones is refused, not cut") {
    const std::string line = "{\"offset\":5,\"timestamp\":1,\"payload\":1}\n";
    fs::remove(events + "partition-0.log");
    fs::remove(events + "partition-0.index");
    {
      std::ofstream out(events + "partition-0.log");
      out << line;
    }
    StoreOptions options;
    options.data_dir = dir.path();
    options.segment_bytes = kSegmentBytes;
    auto store = LogStore::open(options);
    REQUIRE(store.ok());
    auto p = (*store)->partition("events", 0);
    REQUIRE_FALSE(p.ok());
    CHECK(p.status().code() == ErrorCode::kCorruption);
    CHECK(fs::file_size(events + "partition-0.log") == line.size());
  }
}

namespace {
std::int64_t wall_clock_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}
}  // namespace

TEST_CASE("RetentionDeletesWholeSealedSegmentsOldestFirstByEachRuleAndNeverTheActiveOne") {
  TempDir dir;
  auto store = open_segmented(dir.path());
  Partition& p = open_partition(*store);
  for (int i = 0; i < 120; ++i) append_ok(p, message(numbered(i)));
  const std::size_t segments = p.segment_count();
  REQUIRE(segments >= 8);
  const std::uint64_t end = p.next_offset();

  SUBCASE("by size") {
    RetentionRule rule;
    rule.max_bytes = 3 * kSegmentBytes;
    auto deleted = p.apply_retention(rule);
    REQUIRE(deleted.ok());
    CHECK(*deleted == p.log_start_offset());
    CHECK(p.log_bytes() <= 3 * kSegmentBytes);
    CHECK(p.log_bytes() + kSegmentBytes + 200 > 3 * kSegmentBytes);  // no more than needed went
    CHECK(p.segment_count() < segments);
  }
  SUBCASE("by age") {
    RetentionRule keep;
    keep.max_age = std::chrono::hours(1);
    keep.now_ms = wall_clock_ms();
    CHECK(*p.apply_retention(keep) == 0u);
    RetentionRule expire = keep;
    expire.now_ms = wall_clock_ms() + 2 * 3600 * 1000;
    CHECK(*p.apply_retention(expire) > 0u);
    CHECK(p.segment_count() == 1u);  // every sealed segment, not the active one
  }
  SUBCASE("below an offset (what every group acknowledged)") {
    RetentionRule rule;
    rule.delete_below = 50;
    REQUIRE(p.apply_retention(rule).ok());
    CHECK(p.log_start_offset() <= 50u);
    CHECK(p.log_start_offset() > 0u);
    // The next segment holds offset 50: it stays.
    CHECK(read_all(p, 50).size() == end - 50);
  }
  SUBCASE("nothing asked: nothing goes") {
    CHECK(*p.apply_retention(RetentionRule{}) == 0u);
    CHECK(p.segment_count() == segments);
  }
  const std::uint64_t start = p.log_start_offset();
  CHECK(p.next_offset() == end);
  if (start > 0) CHECK(p.read(start - 1, 1, 1024).status().code() == ErrorCode::kNotFound);
  CHECK(read_all(p, start).size() == end - start);
  // Appends go on; after a restart the log starts where it started and offsets go on.
  append_ok(p, message(numbered(500)));
  store.reset();
  auto reopened = open_segmented(dir.path());
  Partition& again = open_partition(*reopened);
  CHECK(again.log_start_offset() == start);
  CHECK(again.next_offset() == end + 1);
  CHECK(append_ok(again, message(numbered(501))) == end + 1);
}

TEST_CASE("RetentionMakesEachRemovalDurableBeforeTheNextOneAndWritesNoMeta") {
  // log_format.md "The log start": no gap may open at the bottom after a power cut, so a segment's
  // files are removed only once every earlier removal is durable (a directory sync since), and
  // retention itself writes no meta (its fsyncs stalled the appends beside it).
  TempDir dir;
  auto recording = std::make_shared<KillingFileSystem>(make_posix_file_system());
  auto store = open_segmented(dir.path(), recording);
  Partition& p = open_partition(*store);
  RetentionRule rule;
  rule.max_bytes = 2 * kSegmentBytes;
  auto retention_pass = [&] {
    const std::size_t before = recording->steps().size();
    REQUIRE(p.apply_retention(rule).ok());
    const std::vector<std::string> steps = recording->steps();
    for (std::size_t i = before; i < steps.size(); ++i) CHECK(steps[i].find(".meta") == std::string::npos);
  };
  for (int i = 0; i < 150; ++i) {
    append_ok(p, message(numbered(i)));
    if (i % 40 == 39) retention_pass();  // several segments per pass
  }
  retention_pass();
  REQUIRE(p.log_start_offset() > 0u);
  bool unsynced_removal = false;
  int removed_logs = 0;
  for (const std::string& step : recording->steps()) {
    CAPTURE(step);
    if (step == "sync") {
      unsynced_removal = false;
    } else if (step.starts_with("remove partition-0.") && step.ends_with(".log")) {
      CHECK_FALSE(unsynced_removal);
      unsynced_removal = true;
      ++removed_logs;
    }
  }
  CHECK(removed_logs >= 5);
  const std::uint64_t start = p.log_start_offset();
  const std::uint64_t end = p.next_offset();
  store.reset();
  auto reopened = open_segmented(dir.path());
  Partition& again = open_partition(*reopened);
  CHECK(again.log_start_offset() == start);
  CHECK(again.next_offset() == end);
  CHECK(numbers_of(again).size() == end - start);
}

// A roll killed after its commit point (step 3), before its meta write (step 4): the next open
// starts the active segment itself. If retention then deletes every sealed segment while the active
// one is still empty, the meta alone says where it starts: it must not be the stale one.
TEST_CASE("ARollCutAfterItsCommitPointThenRetentionDeletingEverySealedSegmentLosesNoOffset") {
  for (const bool first_roll : {false, true}) {  // first roll: there is no meta at all
    CAPTURE(first_roll);
    TempDir dir;
    const std::string events = dir.path() + "/events/";
    std::uint64_t next = 0;
    {
      auto store = open_segmented(dir.path());
      Partition& p = open_partition(*store);
      const int count = first_roll ? 5 : 60;  // 5 fit in one segment
      for (int i = 0; i < count; ++i) append_ok(p, message(numbered(i)));
      if (first_roll) REQUIRE(p.segment_count() == 1u);
      if (!first_roll) REQUIRE(p.segment_count() > 2u);
      next = p.next_offset();
    }
    CHECK(fs::exists(events + "partition-0.meta") != first_roll);
    // The roll's steps 2 and 3, by hand, as a process killed right after them leaves them.
    const std::string first_line = split_lines(file_contents(events + "partition-0.log")).front();
    std::string digits = std::to_string(std::stoull(first_line.substr(first_line.find(':') + 1)));
    const std::string sealed = "partition-0." + std::string(20 - digits.size(), '0') + digits;
    fs::rename(events + "partition-0.index", events + sealed + ".index");
    fs::rename(events + "partition-0.log", events + sealed + ".log");
    {
      auto store = open_segmented(dir.path());
      Partition& p = open_partition(*store);
      CHECK(p.next_offset() == next);
      RetentionRule rule;
      rule.delete_below = next;  // every group acknowledged everything
      REQUIRE(p.apply_retention(rule).ok());
      CHECK(p.segment_count() == 1u);
      CHECK(p.log_start_offset() == next);
    }
    auto store = open_segmented(dir.path());
    Partition& p = open_partition(*store);
    CHECK(p.next_offset() == next);
    CHECK(p.log_start_offset() == next);
    CHECK(append_ok(p, message(numbered(999))) == next);
  }
}

TEST_CASE("RecordsLongerThanTheRecoveryScansChunkRecoverInTheMiddleAtTheTailAndTorn") {
  // Recovery reads 64 KiB at a time; a record may be up to MAX_PAYLOAD_BYTES and more.
  for (int variant = 0; variant < 3; ++variant) {
    CAPTURE(variant);  // 0: long records in the middle; 1: at the tail; 2: the last one torn
    TempDir dir;
    const std::string events = dir.path() + "/events/";
    const std::string long_one = "{\"n\":1,\"pad\":\"" + std::string(900 * 1024, 'y') + "\"}";
    const std::string long_two = "{\"n\":2,\"pad\":\"" + std::string(200 * 1024, 'z') + "\"}";
    StoreOptions options;
    options.data_dir = dir.path();
    options.fsync = FsyncMode::kNever;
    options.recovery_log = [](const std::string&) {};
    {
      auto store = LogStore::open(options);
      REQUIRE(store.ok());
      Partition& p = open_partition(**store);
      append_ok(p, message(numbered(0)));
      append_ok(p, message(long_one));
      append_ok(p, message(long_two));
      if (variant == 0) append_ok(p, message(numbered(3)));
    }
    fs::remove(events + "partition-0.index");  // the whole log is scanned
    if (variant == 2)
      fs::resize_file(events + "partition-0.log", fs::file_size(events + "partition-0.log") - 100 * 1024);
    auto store = LogStore::open(options);
    REQUIRE(store.ok());
    Partition& p = open_partition(**store);
    const std::uint64_t expected = variant == 0 ? 4 : variant == 1 ? 3 : 2;
    CHECK(p.next_offset() == expected);
    const std::vector<std::string> lines = read_all(p, 0);
    REQUIRE(lines.size() == expected);
    if (variant < 2) CHECK(lines[2].find(std::string(200 * 1024, 'z')) != std::string::npos);
    CHECK(append_ok(p, message(numbered(9))) == expected);
  }
}

TEST_CASE("ARemovalThatFailsEndsTheRetentionRunAndLeavesNoGap") {
  // A segment whose file cannot be removed (read-only, immutable) stays the log's start: deleting a
  // newer one first would leave a gap that every later read of the start reports as corruption.
  TempDir dir;
  auto killing = std::make_shared<KillingFileSystem>(make_posix_file_system());
  auto store = open_segmented(dir.path(), killing);
  Partition& p = open_partition(*store);
  for (int i = 0; i < 120; ++i) append_ok(p, message(numbered(i)));
  const std::size_t segments = p.segment_count();
  RetentionRule rule;
  rule.max_bytes = 3 * kSegmentBytes;
  killing->kill_at_step(0);  // the run's first file-system step, the oldest segment's removal, fails
  CHECK_FALSE(p.apply_retention(rule).ok());
  killing->kill_at_step(INT64_MAX);
  CHECK(p.log_start_offset() == 0u);
  CHECK(p.segment_count() == segments);
  CHECK(numbers_of(p).size() == 120u);
  REQUIRE(p.apply_retention(rule).ok());  // the next run deletes, oldest first
  const std::uint64_t start = p.log_start_offset();
  CHECK(start > 0u);
  store.reset();
  auto reopened = open_segmented(dir.path());
  Partition& again = open_partition(*reopened);
  CHECK(again.log_start_offset() == start);
  CHECK(numbers_of(again).size() == 120u - start);
}

TEST_CASE("AnIndexWithoutItsLogThatCannotBeRemovedIsReportedAndThePartitionOpens") {
  // Retention removes a segment's log, then its index; when only the index resists, the next open
  // finds it without its log. Harmless: it must not keep the partition from opening.
  TempDir dir;
  {
    auto store = open_segmented(dir.path());
    Partition& p = open_partition(*store);
    for (int i = 0; i < 60; ++i) append_ok(p, message(numbered(i)));
    REQUIRE(p.segment_count() > 3u);
  }
  auto killing = std::make_shared<KillingFileSystem>(make_posix_file_system());
  killing->refuse_removal_of(".index");
  std::uint64_t start = 0;
  {
    auto store = open_segmented(dir.path(), killing);
    Partition& p = open_partition(*store);
    RetentionRule rule;
    rule.max_bytes = 2 * kSegmentBytes;
    CHECK_FALSE(p.apply_retention(rule).ok());  // the first segment's log went, its index did not
    start = p.log_start_offset();
    CHECK(start > 0u);
  }
  std::vector<std::string> reported;
  StoreOptions options;
  options.data_dir = dir.path();
  options.fsync = FsyncMode::kNever;
  options.segment_bytes = kSegmentBytes;
  options.file_system = killing;
  options.recovery_log = [&](const std::string& line) { reported.push_back(line); };
  auto store = LogStore::open(options);
  REQUIRE(store.ok());
  auto p = (*store)->partition("events", 0);
  REQUIRE_MESSAGE(p.ok(), p.status().to_string());
  CHECK((*p)->log_start_offset() == start);
  CHECK(numbers_of(**p).size() == 60u - start);
  REQUIRE(reported.size() == 1u);
  CHECK(reported[0].find("an index without its log") != std::string::npos);
}

TEST_CASE("ReadersOfASegmentBeingDeletedFinishOrAreToldItIsGone") {
  TempDir dir;
  auto store = open_segmented(dir.path());
  Partition& p = open_partition(*store);
  for (int i = 0; i < 300; ++i) append_ok(p, message(numbered(i)));
  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> lines{0};
  std::thread reader([&] {
    while (!done) {
      std::uint64_t offset = 0;
      while (offset < p.next_offset()) {
        auto batch = p.read(offset, 5, 1 << 20);
        if (!batch.ok()) {
          // Only "gone" (below the log start) is allowed; start again from the new start.
          REQUIRE_MESSAGE(batch.status().code() == ErrorCode::kNotFound, batch.status().to_string());
          offset = p.log_start_offset();
          continue;
        }
        for (const auto& m : *batch)
          CHECK(m.line.starts_with("{\"offset\":" + std::to_string(m.offset) + ","));
        lines += batch->size();
        offset = batch->next_offset();
      }
    }
  });
  // Delete one segment at a time while the reader reads, until only the active one is left.
  for (std::uint64_t below = 20; p.segment_count() > 1; below += 20) {
    RetentionRule rule;
    rule.delete_below = below;
    REQUIRE(p.apply_retention(rule).ok());
  }
  done = true;
  reader.join();
  CHECK(lines > 0u);
  CHECK(read_all(p, p.log_start_offset()).size() == p.next_offset() - p.log_start_offset());
}

TEST_CASE("AfterRetentionTheActiveSegmentsFirstRecordSaysWhereTheLogStartsEvenWithoutTheMeta") {
  TempDir dir;
  std::uint64_t next = 0;
  {
    auto store = open_segmented(dir.path());
    Partition& p = open_partition(*store);
    for (int i = 0; i < 60; ++i) append_ok(p, message(numbered(i)));
    RetentionRule everything;
    everything.max_age = std::chrono::milliseconds(1);
    everything.now_ms = wall_clock_ms() + 60'000;
    REQUIRE(*p.apply_retention(everything) > 0u);
    REQUIRE(p.segment_count() == 1u);
    next = p.next_offset();
  }
  fs::remove(dir.path() + "/events/partition-0.meta");
  auto store = open_segmented(dir.path());
  Partition& p = open_partition(*store);
  CHECK(p.next_offset() == next);
  CHECK(p.log_start_offset() > 0u);
  CHECK(append_ok(p, message(numbered(99))) == next);
}

TEST_CASE("SealedSegmentsLeftBelowTheLogStartAreRemovedAndAGapIsReportedNotHidden") {
  TempDir dir;
  {
    auto store = open_segmented(dir.path());
    Partition& p = open_partition(*store);
    for (int i = 0; i < 80; ++i) append_ok(p, message(numbered(i)));
    REQUIRE(p.segment_count() >= 6);
  }
  std::vector<std::string> sealed;
  for (const auto& name : segment_files(dir.path())) {
    if (name.ends_with(".log") && name != "partition-0.log") sealed.push_back(name);
  }
  // A crash after retention recorded its new start but before it deleted the files.
  const std::uint64_t second = std::stoull(sealed[1].substr(12, 20));
  {
    std::ofstream meta(dir.path() + "/events/partition-0.meta", std::ios::trunc);
    meta << "{\"log_start_offset\":" << second << ",\"active_first_offset\":0}\n";
  }
  // A sealed segment in the middle goes missing (deleted by hand, a damaged disk).
  fs::remove(dir.path() + "/events/" + sealed[3]);
  auto store = open_segmented(dir.path());
  Partition& p = open_partition(*store);
  CHECK_FALSE(fs::exists(dir.path() + "/events/" + sealed[0]));
  CHECK(p.log_start_offset() == second);
  auto read = p.read(second, 1000, 1 << 20);
  REQUIRE(read.ok());
  const std::uint64_t gap_before = read->next_offset();
  auto at_gap = p.read(std::stoull(sealed[2].substr(12, 20)), 1000, 1 << 20);
  CHECK(at_gap.status().code() == ErrorCode::kCorruption);
  CHECK(gap_before > second);
}

TEST_CASE("OpeningAPartitionOpensOnlyItsNewestSealedSegmentAndTheActiveOne") {
  // log_format.md: opening reads only the last segments' tails; the older ones are sized (one
  // stat each, FileSystem::file_size) and opened by the first read that needs them.
  TempDir dir;
  std::uint64_t log_bytes = 0;
  {
    auto store = open_segmented(dir.path());
    Partition& p = open_partition(*store);
    for (int i = 0; i < 400; ++i) append_ok(p, message(numbered(i)));
    REQUIRE(p.segment_count() > 20u);
    log_bytes = p.log_bytes();
  }
  auto counting = std::make_shared<KillingFileSystem>(make_posix_file_system());
  auto store = open_segmented(dir.path(), counting);
  Partition& p = open_partition(*store);
  // The active segment twice (its first record checked against the segments before it, then
  // opened) and the newest sealed one, whose end is where the active segment starts.
  CHECK(counting->log_opens() == 3);
  CHECK(p.log_bytes() == log_bytes);
  CHECK(numbers_of(p).size() == 400u);
}

TEST_CASE("ClosingALogSyncsItsIndexOnlyWhenSomethingWasWrittenToItSinceItsLastSync") {
  // The index is not synced on the append path; closing syncs it so that the next open need not
  // rebuild it. A sealed segment (synced when it rolled) closed after a read has nothing to sync:
  // an fdatasync there stalled appends elsewhere on the disk.
  TempDir dir;
  auto faults = std::make_shared<FaultFileSystem>();
  const std::string events = dir.path() + "/events/";
  {
    auto store = open_segmented(dir.path(), faults);
    Partition& p = open_partition(*store);
    for (int i = 0; i < 6; ++i) append_ok(p, message(numbered(i)));  // one segment, some index entries
    REQUIRE(p.segment_count() == 1u);
    REQUIRE(fs::file_size(events + "partition-0.index") > 8u);
    const std::uint64_t before = faults->syncs(events + "partition-0.index");
    store.reset();
    CHECK(faults->syncs(events + "partition-0.index") == before + 1);  // written since: synced at close
  }
  for (int i = 6; i < 200; ++i) {
    auto store = open_segmented(dir.path());
    append_ok(open_partition(*store), message(numbered(i)));
  }
  auto store = open_segmented(dir.path(), faults);
  Partition& p = open_partition(*store);
  REQUIRE(p.segment_count() > 12u);
  std::uint64_t before = 0;
  std::vector<std::string> sealed_indexes;
  for (const auto& entry : fs::directory_iterator(events)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with("partition-0.") && name.ends_with(".index") && name != "partition-0.index") {
      sealed_indexes.push_back(entry.path().string());
      before += faults->syncs(entry.path().string());
    }
  }
  CHECK(numbers_of(p).size() == 200u);  // opens every sealed segment; only 8 stay open
  std::uint64_t after = 0;
  for (const auto& path : sealed_indexes) after += faults->syncs(path);
  CHECK(after == before);
}

TEST_CASE("OnlyAFewSealedSegmentsStayOpen") {
  TempDir dir;
  auto count_fds = [] {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& entry : fs::directory_iterator("/proc/self/fd")) ++n;
    return n;
  };
  auto store = open_segmented(dir.path());
  Partition& p = open_partition(*store);
  const std::size_t before = count_fds();
  for (int i = 0; i < 600; ++i) append_ok(p, message(numbered(i)));
  REQUIRE(p.segment_count() > 50u);
  CHECK(read_all(p).size() == 600u);  // opens every sealed segment once
  CHECK(count_fds() <= before + 2 * 8 + 8);
}

// A sealed segment's file size is its records' size (segment sizes are read with stat at open):
// the active segment's preallocated zeros are cut, durably, before the roll renames it.
TEST_CASE("SealedSegmentsHoldNoPreallocatedZeros") {
  TempDir dir;
  auto store = open_segmented(dir.path(), nullptr, FsyncMode::kAlways);
  Partition& p = open_partition(*store);
  for (int i = 0; i < 100; ++i) REQUIRE(append_ok(p, message(numbered(i))) == std::uint64_t(i));
  REQUIRE(p.segment_count() > 3u);
  std::uint64_t sealed_files = 0;
  for (const auto& name : segment_files(dir.path())) {
    if (!name.ends_with(".log") || name == "partition-0.log") continue;
    ++sealed_files;
    std::ifstream in(dir.path() + "/events/" + name, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CAPTURE(name);
    REQUIRE_FALSE(bytes.empty());
    CHECK(bytes.back() == '\n');
    CHECK(bytes.find('\0') == std::string::npos);
  }
  CHECK(sealed_files + 1 == p.segment_count());
  // The active one is preallocated while open.
  CHECK(fs::file_size(dir.path() + "/events/partition-0.log") > kSegmentBytes);
}

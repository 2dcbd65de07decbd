// The time index (libmq/docs/log_format.md "The time index"): Partition::offset_for_time agrees with
// a scan of the log across segments, restarts, a rebuilt or outdated index and retention, and reads
// the index and about one index interval of the log, not the log.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "forwarding_file_system.h"
#include "storage/offset_index.h"  // to write an index that lies
#include "store_helpers.h"
#include "temp_dir.h"

using namespace mq;
using namespace mq::testing;
namespace fs = std::filesystem;

namespace {

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Returns once the clock shows a later millisecond than `after` (at most a millisecond away), so
// that the next append gets a new timestamp.
std::int64_t next_millisecond(std::int64_t after) {
  std::int64_t now = now_ms();
  while (now <= after) now = now_ms();
  return now;
}

std::int64_t timestamp_of(const std::string& line) {
  const auto at = line.find("\"timestamp\":");
  REQUIRE(at != std::string::npos);
  return std::stoll(line.substr(at + 12));
}

// Every timestamp in the log, the millisecond before each, and times before and after the log:
// the lookup must give the answer by definition, the first offset, in offset order, whose
// timestamp is at least t.
void check_every_time(const Partition& p) {
  std::vector<std::int64_t> stored;  // by offset from the log start
  for (const std::string& line : read_all(p, p.log_start_offset())) stored.push_back(timestamp_of(line));
  std::vector<std::int64_t> times = {0, -1, std::numeric_limits<std::int64_t>::min(),
                                     std::numeric_limits<std::int64_t>::max(), now_ms() + 3600 * 1000};
  for (const std::int64_t t : stored) {
    times.push_back(t);
    times.push_back(t - 1);
  }
  for (const std::int64_t t : times) {
    std::uint64_t expected = p.log_start_offset();
    while (expected - p.log_start_offset() < stored.size() && stored[expected - p.log_start_offset()] < t) {
      ++expected;
    }
    auto found = p.offset_for_time(t);
    REQUIRE_MESSAGE(found.ok(), found.status().to_string());
    if (*found != expected) {
      CAPTURE(t);
      CHECK(*found == expected);
    }
  }
}

std::unique_ptr<LogStore> open_small_segments(const std::string& dir,
                                              std::shared_ptr<FileSystem> fs = nullptr,
                                              std::uint64_t segment_bytes = 2048,
                                              std::size_t index_interval_bytes = 256) {
  StoreOptions options;
  options.data_dir = dir;
  options.fsync = FsyncMode::kNever;
  options.segment_bytes = segment_bytes;
  options.index_interval_bytes = index_interval_bytes;
  options.file_system = std::move(fs);
  options.recovery_log = [](const std::string&) {};  // rebuilt indexes are reported; not a failure here
  auto store = LogStore::open(options);
  REQUIRE_MESSAGE(store.ok(), store.status().to_string());
  return std::move(store.value());
}

std::string padded(int n) {
  return "{\"n\":" + std::to_string(n) + ",\"pad\":\"" + std::string(60, 'p') + "\"}";
}

// Appends `messages` messages, a new millisecond every `per_millisecond` of them, in batches of
// one and of several.
void append_over_time(Partition& p, int messages, int per_millisecond) {
  std::int64_t last = now_ms();
  for (int i = 0; i < messages;) {
    last = next_millisecond(last);
    const int run = std::min(per_millisecond, messages - i);
    if (run % 2 == 0) {
      std::vector<Message> batch;
      for (int j = 0; j < run; ++j) batch.push_back(message(padded(i + j)));
      REQUIRE(p.append(batch).ok());
    } else {
      for (int j = 0; j < run; ++j) append_ok(p, message(padded(i + j)));
    }
    i += run;
  }
}

std::vector<fs::path> files_ending(const std::string& dir, const std::string& suffix) {
  std::vector<fs::path> found;
  for (const auto& entry : fs::directory_iterator(dir + "/events"))
    if (entry.path().string().ends_with(suffix)) found.push_back(entry.path());
  return found;
}

// Counts the bytes read from partition logs (*.log), to see what a lookup reads.
class CountingFileSystem : public ForwardingFileSystem {
 public:
  std::uint64_t log_bytes_read() const { return log_bytes_read_; }

  Result<std::unique_ptr<File>> open(const std::string& path) override {
    auto file = real_->open(path);
    if (!file.ok()) return file.status();
    return std::unique_ptr<File>(
        std::make_unique<CountedFile>(path.ends_with(".log") ? &log_bytes_read_ : nullptr, std::move(*file)));
  }

 private:
  class CountedFile : public ForwardingFile {
   public:
    CountedFile(std::atomic<std::uint64_t>* counter, std::unique_ptr<File> real)
        : ForwardingFile(std::move(real)), counter_(counter) {}
    Status read(std::uint64_t position, std::size_t length, std::string& out) const override {
      auto s = real_->read(position, length, out);
      if (counter_ != nullptr) *counter_ += out.size();
      return s;
    }

   private:
    std::atomic<std::uint64_t>* counter_;
  };

  std::atomic<std::uint64_t> log_bytes_read_{0};
};

}  // namespace

TEST_CASE("FileSizeByDefaultOpensTheFileAndAMissingFileIsNotFoundAndNotCreated") {
  // CountingFileSystem does not override file_size: it gets FileSystem's default.
  TempDir dir;
  CountingFileSystem counting;
  const auto posix = make_posix_file_system();
  const std::string path = dir.path() + "/f";
  for (FileSystem* file_system : {static_cast<FileSystem*>(&counting), posix.get()}) {
    CHECK(file_system->file_size(path).status().code() == ErrorCode::kNotFound);
  }
  CHECK_FALSE(fs::exists(path));
  {
    auto file = counting.open(path);
    REQUIRE(file.ok());
    REQUIRE((*file)->append("12345").ok());
  }
  CHECK(counting.file_size(path).value() == 5u);
  CHECK(posix->file_size(path).value() == 5u);
}

TEST_CASE("ALookupByTimeAgreesWithAScanAcrossSegmentsRestartsAndARebuiltIndex") {
  TempDir dir;
  {
    auto store = open_small_segments(dir.path());
    Partition& p = open_partition(*store);
    append_over_time(p, 300, 7);
    REQUIRE(p.segment_count() > 8u);
    check_every_time(p);
  }
  SUBCASE("after a restart") {}
  SUBCASE("with every index lost") {
    for (const auto& index : files_ending(dir.path(), ".index")) fs::remove(index);
  }
  SUBCASE("with every index in the format before timestamps (mqidx01)") {
    for (const auto& index : files_ending(dir.path(), ".index")) {
      std::ofstream out(index, std::ios::binary | std::ios::trunc);
      out << "mqidx01\n" << std::string(48, '\x07');
    }
  }
  auto store = open_small_segments(dir.path());
  Partition& p = open_partition(*store);
  check_every_time(p);
  // Appends after the restart are found too, and retention moves the answers up with the log start.
  append_over_time(p, 60, 5);
  check_every_time(p);
  RetentionRule rule;
  rule.delete_below = p.next_offset() / 2;
  REQUIRE(p.apply_retention(rule).ok());
  REQUIRE(p.log_start_offset() > 0u);
  CHECK(*p.offset_for_time(0) == p.log_start_offset());
  check_every_time(p);
}

TEST_CASE("ALookupByTimeWithEveryMessageInOneMillisecondFindsTheFirst") {
  TempDir dir;
  auto store = open_small_segments(dir.path());
  Partition& p = open_partition(*store);
  std::vector<Message> batch;
  for (int i = 0; i < 80; ++i) batch.push_back(message(padded(i)));
  REQUIRE(p.append(batch).ok());  // one batch: one timestamp, one segment however large
  const std::int64_t t = timestamp_of(read_all(p).front());
  CHECK(*p.offset_for_time(t) == 0u);
  CHECK(*p.offset_for_time(t + 1) == 80u);
  CHECK(*p.offset_for_time(t - 1) == 0u);
}

TEST_CASE("ALookupByTimeReadsTheIndexAndAboutOneIntervalOfTheLogNotTheLog") {
  TempDir dir;
  auto counting = std::make_shared<CountingFileSystem>();
  std::vector<std::int64_t> probes;
  {
    // Segments of 1 MiB with the default 4 KiB index interval: a scan would read megabytes.
    auto store = open_small_segments(dir.path(), counting, 1u << 20, 4096);
    Partition& p = open_partition(*store);
    std::int64_t last = now_ms();
    for (int b = 0; b < 300; ++b) {
      last = next_millisecond(last);
      std::vector<Message> batch;
      for (int i = 0; i < 100; ++i) batch.push_back(message(padded(b * 100 + i)));
      REQUIRE(p.append(batch).ok());
      if (b % 37 == 5) probes.push_back(last);
    }
    REQUIRE(p.segment_count() >= 3u);
    REQUIRE(p.log_bytes() > (3u << 20));
  }
  // Cold: after a restart, so that sealed segments are opened (their index and tail) by the lookup.
  auto store = open_small_segments(dir.path(), counting, 1u << 20, 4096);
  Partition& p = open_partition(*store);
  for (const std::int64_t t : probes) {
    const std::uint64_t before = counting->log_bytes_read();
    auto found = p.offset_for_time(t);
    REQUIRE(found.ok());
    const std::uint64_t read = counting->log_bytes_read() - before;
    CAPTURE(t);
    CAPTURE(read);
    CHECK(read <= 4 * 64 * 1024);  // segments' tails and one 64 KiB read chunk, not the log
    auto line = p.read(*found, 1, 1 << 20);
    REQUIRE(line.ok());
    CHECK(timestamp_of(std::string((*line)[0].line)) >= t);
    if (*found > p.log_start_offset()) {
      auto previous = p.read(*found - 1, 1, 1 << 20);
      REQUIRE(previous.ok());
      CHECK(timestamp_of(std::string((*previous)[0].line)) < t);
    }
  }
}

TEST_CASE("ALookupByTimeBesideAppendsNeverSkipsAMessageAppendedMeanwhile") {
  TempDir dir;
  auto store = open_small_segments(dir.path(), nullptr, 1 << 20, 256);
  Partition& p = open_partition(*store);
  std::atomic<bool> done{false};
  std::vector<std::thread> appenders;
  for (int t = 0; t < 3; ++t) {
    appenders.emplace_back([&, t] {
      for (int i = 0; !done; ++i) REQUIRE(p.append(message(padded(t * 1000000 + i))).ok());
    });
  }
  std::int64_t t = now_ms();
  for (int round = 0; round < 200; ++round) {
    t = next_millisecond(t);
    auto found = p.offset_for_time(t);
    REQUIRE(found.ok());
    // Whatever came before the answer is older than t: nothing newer was skipped.
    if (*found > 0) {
      auto before = p.read(*found - 1, 1, 1 << 20);
      REQUIRE(before.ok());
      REQUIRE(!before->empty());
      CHECK(timestamp_of(std::string((*before)[0].line)) < t);
    }
  }
  done = true;
  for (auto& a : appenders) a.join();
}

TEST_CASE("AnIndexWhoseTimestampsLieCostsAScanNotAWrongAnswer") {
  TempDir dir;
  {
    auto store = open_small_segments(dir.path(), nullptr, 1 << 20, 256);
    append_over_time(open_partition(*store), 200, 9);
  }
  // Rewrite the index with valid checks but timestamps the log contradicts.
  const fs::path index_path = dir.path() + "/events/partition-0.index";
  const auto entries = mq::detail::decode_index(file_contents(index_path.string()));
  REQUIRE(entries.has_value());
  REQUIRE(entries->size() > 5u);
  for (const std::int64_t lie : {mq::detail::kNoTimestamp, std::numeric_limits<std::int64_t>::max()}) {
    std::string bytes;
    mq::detail::encode_index_header(bytes);
    for (auto e : *entries) {
      e.timestamp = lie;
      mq::detail::encode_index_entry(bytes, e);
    }
    {
      std::ofstream out(index_path, std::ios::binary | std::ios::trunc);
      out << bytes;
    }
    auto store = open_small_segments(dir.path(), nullptr, 1 << 20, 256);
    CAPTURE(lie);
    check_every_time(open_partition(*store));
  }
}

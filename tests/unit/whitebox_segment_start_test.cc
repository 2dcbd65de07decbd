// A log that does not start at offset 0 (a segment of a partition, libmq/docs/log_format.md "A segment
// that does not start at 0"): appends, reads, reopening, a rebuilt index and a torn tail all count
// from the segment's first offset.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "mq/file_system.h"
#include "storage/partition_log.h"
#include "store_helpers.h"
#include "temp_dir.h"

using namespace mq;
using mq::testing::message;
using mq::testing::TempDir;

namespace {

constexpr std::uint64_t kFirst = 12000;

struct SegmentAt {
  explicit SegmentAt(const std::string& dir, std::size_t index_interval = 64) {
    options.data_dir = dir;
    options.fsync = FsyncMode::kNever;
    options.index_interval_bytes = index_interval;
  }
  std::unique_ptr<PartitionLog> open(std::uint64_t first = kFirst) {
    auto log = PartitionLog::open(*fs, options, options.data_dir + "/events",
                                  "partition-0.00000000000000012000", "events", 0, first);
    REQUIRE_MESSAGE(log.ok(), log.status().to_string());
    return std::move(log.value());
  }
  StoreOptions options;
  std::shared_ptr<FileSystem> fs = make_posix_file_system();
};

std::vector<std::uint64_t> offsets_read(const PartitionLog& log, std::uint64_t from) {
  std::vector<std::uint64_t> offsets;
  while (true) {
    auto batch = log.read(from, 7, 1 << 20);
    REQUIRE_MESSAGE(batch.ok(), batch.status().to_string());
    if (batch->empty()) return offsets;
    for (const auto& m : *batch) {
      offsets.push_back(m.offset);
      CHECK(m.line.starts_with("{\"offset\":" + std::to_string(m.offset) + ","));
    }
    from = batch->next_offset();
  }
}

}  // namespace

TEST_CASE("ASegmentStartsAtItsFirstOffsetAndKeepsItAcrossReopens") {
  TempDir dir;
  SegmentAt segment(dir.path());
  {
    auto log = segment.open();
    CHECK(log->first_offset() == kFirst);
    CHECK(log->next_offset() == kFirst);
    for (int i = 0; i < 50; ++i) {
      auto first = log->append(std::vector<Message>{message("{\"n\":" + std::to_string(i) + "}")});
      REQUIRE(first.ok());
      CHECK(*first == kFirst + static_cast<std::uint64_t>(i));
    }
    auto batch = log->append(std::vector<Message>{message("1"), message("2"), message("3")});
    REQUIRE(batch.ok());
    CHECK(*batch == kFirst + 50);
    CHECK(log->read(kFirst - 1, 1, 1024).status().code() == ErrorCode::kNotFound);
    CHECK(log->read(kFirst + 54, 1, 1024).status().code() == ErrorCode::kNotFound);
    std::vector<std::uint64_t> expected;
    for (std::uint64_t o = kFirst; o < kFirst + 53; ++o) expected.push_back(o);
    CHECK(offsets_read(*log, kFirst) == expected);
    CHECK(offsets_read(*log, kFirst + 30).size() == 23u);  // through the sparse index
  }
  // Reopened with its index, and again with the index gone (rebuilt from the log).
  for (bool drop_index : {false, true}) {
    CAPTURE(drop_index);
    if (drop_index) std::filesystem::remove(dir.path() + "/events/partition-0.00000000000000012000.index");
    auto log = segment.open();
    CHECK(log->recovery_report().truncated_bytes == 0);
    CHECK(log->next_offset() == kFirst + 53);
    CHECK(offsets_read(*log, kFirst + 10).size() == 43u);
  }
}

TEST_CASE("ASegmentCutsATornTailAndRefusesAnIndexOfAnotherStart") {
  TempDir dir;
  SegmentAt segment(dir.path());
  { REQUIRE(segment.open()->append(std::vector<Message>{message("1"), message("2")}).ok()); }
  const std::string log_path = dir.path() + "/events/partition-0.00000000000000012000.log";
  {
    std::ofstream torn(log_path, std::ios::app);
    torn << "{\"offset\":12002,\"timestamp\":1,\"payl";
  }
  {
    auto log = segment.open();
    CHECK(log->recovery_report().truncated_bytes > 0);
    CHECK(log->next_offset() == kFirst + 2);
  }
  // The same file opened as if it started elsewhere: its first line does not carry that offset, so
  // nothing of it is valid (a caller that names the wrong first offset loses nothing silently: the
  // report says what was cut).
  {
    StoreOptions strict = segment.options;
    strict.recovery = RecoveryMode::kStrict;
    auto wrong = PartitionLog::open(*segment.fs, strict, dir.path() + "/events",
                                    "partition-0.00000000000000012000", "events", 0, 0);
    CHECK_FALSE(wrong.ok());
  }
  // An empty segment's first append gets the first offset, also after a reopen.
  SegmentAt empty(dir.path() + "/other");
  { CHECK(empty.open(777)->next_offset() == 777u); }
  auto log = empty.open(777);
  CHECK(*log->append(std::vector<Message>{message("1")}) == 777u);
}

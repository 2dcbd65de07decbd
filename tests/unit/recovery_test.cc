// Restart and crash recovery: torn tails, half batches, garbage, and damaged or stale indexes.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "mq/mq.h"
#include "store_helpers.h"
#include "temp_dir.h"

using namespace mq;
using namespace mq::testing;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string payload_for(int n) {
  return "{\"n\":" + std::to_string(n) + ",\"text\":\"message " + std::to_string(n) + "\"}";
}

// Appends payload_for(0..count-1), one message per append.
void fill(const std::string& dir, int count, int first = 0) {
  auto store = open_store(dir);
  Partition& p = open_partition(*store);
  for (int i = first; i < first + count; ++i)
    REQUIRE(append_ok(p, message(payload_for(i))) == std::uint64_t(i));
}

// Checks that the partition holds exactly payload_for(0..count-1) at offsets 0..count-1.
void expect_messages(const Partition& p, int count) {
  const auto lines = read_all(p);
  REQUIRE(lines.size() == std::size_t(count));
  for (int i = 0; i < count; ++i) {
    const json j = json::parse(lines[i]);
    CHECK(j["offset"] == i);
    CHECK(j["payload"] == json::parse(payload_for(i)));
  }
  CHECK(p.next_offset() == std::uint64_t(count));
}

std::string log_file(const TempDir& dir) { return LogStore::log_path(dir.path(), "events", 0); }
std::string index_file(const TempDir& dir) { return dir.path() + "/events/partition-0.index"; }

void append_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::app);
  out << bytes;
}

}  // namespace

TEST_CASE("RestartKeepsEveryMessageAndContinuesOffsets") {
  TempDir dir;
  fill(dir.path(), 50);
  fill(dir.path(), 50, 50);
  auto store = open_store(dir.path());
  Partition& p = open_partition(*store);
  expect_messages(p, 100);
  CHECK(p.recovery_report().truncated_bytes == 0);
  CHECK_FALSE(p.recovery_report().index_rebuilt);
}

TEST_CASE("TruncatedTrailingRecordIsCutOffAndOffsetsContinue") {
  TempDir dir;
  fill(dir.path(), 10);
  const auto size = fs::file_size(log_file(dir));
  fs::resize_file(log_file(dir), size - 7);  // the writer died in the middle of the last line
  auto store = open_store(dir.path());
  Partition& p = open_partition(*store);
  expect_messages(p, 9);
  CHECK(p.recovery_report().truncated_bytes > 0);
  CHECK_FALSE(p.recovery_report().intact_records_after_damage);
  CHECK(append_ok(p, message(payload_for(9))) == 9);
  expect_messages(p, 10);
  // The file holds only complete lines again.
  const auto text = file_contents(log_file(dir));
  CHECK(split_lines(text).size() == 10);
  CHECK(text.back() == '\n');
}

TEST_CASE("GarbageAppendedToTheLogIsCutOff") {
  const std::vector<std::string> garbage = {
      "{\"offset\":10,\"timest",                          // a torn record
      std::string("{\"offset\":10,\"ti\0\0\0", 17),       // a torn record in preallocated space
      "not json at all\n",                                // a complete line that is not a record
      "{\"offset\":99,\"timestamp\":1,\"payload\":1}\n",  // a record with the wrong offset
      "\xff\xfe garbage \n with \n newlines",
  };
  for (const auto& junk : garbage) {
    CAPTURE(junk);
    TempDir dir;
    fill(dir.path(), 10);
    const auto good_size = fs::file_size(log_file(dir));
    append_bytes(log_file(dir), junk);
    auto store = open_store(dir.path());
    Partition& p = open_partition(*store);
    expect_messages(p, 10);
    // Zeros after the torn part are preallocated space, cut without being counted as damage.
    const auto torn = junk.find('\0') == std::string::npos ? junk.size() : junk.find('\0');
    CHECK(p.recovery_report().truncated_bytes == torn);
    CHECK(fs::file_size(log_file(dir)) == good_size);
  }
}

TEST_CASE("ZerosAfterTheLastRecordArePreallocatedSpaceCutWithoutAReport") {
  for (const std::size_t zeros : {std::size_t{1}, std::size_t{4096}, std::size_t{(1u << 20) + 7}}) {
    CAPTURE(zeros);
    TempDir dir;
    fill(dir.path(), 10);
    const auto good_size = fs::file_size(log_file(dir));
    append_bytes(log_file(dir), std::string(zeros, '\0'));
    {
      auto store = open_store(dir.path());
      Partition& p = open_partition(*store);
      expect_messages(p, 10);
      CHECK(p.recovery_report().truncated_bytes == 0);
      CHECK(fs::file_size(log_file(dir)) == good_size);
      REQUIRE(append_ok(p, message(payload_for(10))) == 10u);
    }
    auto store = open_store(dir.path());
    expect_messages(open_partition(*store), 11);
  }
}

TEST_CASE("ZerosInTheMiddleOfTheLogAreDamageNotPreallocatedSpace") {
  TempDir dir;
  fill(dir.path(), 10);
  append_bytes(log_file(dir), std::string(100, '\0') + "\n{\"offset\":10,\"timestamp\":1,\"payload\":1}\n");
  auto store = open_store(dir.path());
  Partition& p = open_partition(*store);
  expect_messages(p, 10);
  CHECK(p.recovery_report().truncated_bytes > 100);
  CHECK(p.recovery_report().intact_records_dropped == 1);
}

TEST_CASE("HalfABatchIsDroppedWhole") {
  TempDir dir;
  fill(dir.path(), 3);
  {
    auto store = open_store(dir.path());
    Partition& p = open_partition(*store);
    std::vector<Message> batch;
    for (int i = 3; i < 8; ++i) batch.push_back(message(payload_for(i)));
    REQUIRE(p.append(batch).ok());
  }
  // Keep the three single messages and two complete lines of the batch.
  const auto lines = split_lines(file_contents(log_file(dir)));
  REQUIRE(lines.size() == 8);
  std::uint64_t keep = 0;
  for (int i = 0; i < 5; ++i) keep += lines[i].size() + 1;
  for (std::uint64_t cut : {keep, keep + 10}) {  // on a line boundary, and inside the third line
    CAPTURE(cut);
    TempDir copy;
    fs::create_directories(copy / "events");
    fs::copy_file(log_file(dir), log_file(copy));
    fs::resize_file(log_file(copy), cut);
    auto store = open_store(copy.path());
    Partition& p = open_partition(*store);
    expect_messages(p, 3);
    CHECK(p.recovery_report().truncated_bytes == cut - (keep - lines[3].size() - lines[4].size() - 2));
    CHECK(append_ok(p, message(payload_for(3))) == 3);
  }
}

TEST_CASE("DamageFollowedByIntactRecordsIsCutByDefaultAndRefusedInStrictMode") {
  TempDir dir;
  fill(dir.path(), 10);
  // Overwrite the middle of line 5 (a flipped sector), leaving lines 6..9 intact.
  auto text = file_contents(log_file(dir));
  const auto lines = split_lines(text);
  std::size_t at = 0;
  for (int i = 0; i < 5; ++i) at += lines[i].size() + 1;
  text[at + 3] = '#';
  { std::ofstream(log_file(dir), std::ios::binary | std::ios::trunc) << text; }
  fs::remove(index_file(dir));  // scan the whole log

  {
    StoreOptions strict;
    strict.data_dir = dir.path();
    strict.recovery = RecoveryMode::kStrict;
    auto store = LogStore::open(strict);
    REQUIRE(store.ok());
    auto p = (*store)->partition("events", 0);
    REQUIRE_FALSE(p.ok());
    CHECK(p.status().code() == ErrorCode::kCorruption);
    CHECK(fs::file_size(log_file(dir)) == text.size());  // nothing was cut
  }
  auto store = open_store(dir.path());
  Partition& p = open_partition(*store);
  expect_messages(p, 5);
  CHECK(p.recovery_report().intact_records_after_damage);
}

TEST_CASE("DeletedOrCorruptIndexIsRebuiltFromTheLog") {
  TempDir dir;
  fill(dir.path(), 2000);
  const std::string original = file_contents(index_file(dir));
  REQUIRE(original.size() > 100);

  SUBCASE("deleted") { fs::remove(index_file(dir)); }
  SUBCASE("a flipped byte") {
    std::string bad = original;
    bad[bad.size() / 2] ^= 0x40;
    std::ofstream(index_file(dir), std::ios::binary | std::ios::trunc) << bad;
  }
  SUBCASE("a wrong magic") {
    std::string bad = original;
    bad[0] = 'X';
    std::ofstream(index_file(dir), std::ios::binary | std::ios::trunc) << bad;
  }
  SUBCASE("entries out of order") {
    std::string bad = original;
    std::swap_ranges(bad.begin() + 8, bad.begin() + 32, bad.begin() + 32);
    std::ofstream(index_file(dir), std::ios::binary | std::ios::trunc) << bad;
  }
  auto store = open_store(dir.path());
  Partition& p = open_partition(*store);
  CHECK(p.recovery_report().index_rebuilt);
  expect_messages(p, 2000);
  CHECK(file_contents(index_file(dir)) == original);
}

TEST_CASE("StaleIndexPointingPastTheEndOfATruncatedLogIsRepaired") {
  TempDir dir;
  fill(dir.path(), 2000);
  const auto lines = split_lines(file_contents(log_file(dir)));
  std::uint64_t half = 0;
  for (int i = 0; i < 1000; ++i) half += lines[i].size() + 1;
  fs::resize_file(log_file(dir), half);  // the index still describes 2000 messages
  {
    auto store = open_store(dir.path());
    Partition& p = open_partition(*store);
    expect_messages(p, 1000);
    for (int i = 1000; i < 1500; ++i) CHECK(append_ok(p, message(payload_for(i))) == std::uint64_t(i));
    expect_messages(p, 1500);
  }
  auto store = open_store(dir.path());
  Partition& p = open_partition(*store);
  expect_messages(p, 1500);
  CHECK_FALSE(p.recovery_report().index_rebuilt);
  CHECK(p.recovery_report().scanned_bytes < 16 * 1024);
}

TEST_CASE("LosingALongTailDropsStaleIndexEntriesWithoutRebuildingTheIndex") {
  TempDir dir;
  fill(dir.path(), 20000);  // ~1 MB, ~250 index entries
  const auto size = fs::file_size(log_file(dir));
  fs::resize_file(log_file(dir), size - 200 * 1024);  // a power cut took the last 200 KiB
  auto store = open_store(dir.path());
  Partition& p = open_partition(*store);
  CHECK_FALSE(p.recovery_report().index_rebuilt);
  CHECK(p.recovery_report().scanned_bytes < 16 * 1024);
  const auto count = p.next_offset();
  CHECK(count < 20000);
  expect_messages(p, static_cast<int>(count));
}

TEST_CASE("ATornIndexWriteIsRewrittenSoLaterEntriesStayAligned") {
  TempDir dir;
  fill(dir.path(), 2000);
  fs::resize_file(index_file(dir), fs::file_size(index_file(dir)) - 5);  // half an entry
  fill(dir.path(), 2000, 2000);
  auto store = open_store(dir.path());
  Partition& p = open_partition(*store);
  CHECK_FALSE(p.recovery_report().index_rebuilt);
  CHECK(p.recovery_report().scanned_bytes < 16 * 1024);
  expect_messages(p, 4000);
}

TEST_CASE("IndexEntriesThatDoNotMatchTheLogAreNotTrusted") {
  TempDir dir;
  fill(dir.path(), 2000);
  const std::string index = file_contents(index_file(dir));
  // Replace the log with different content of the same length scale: the index is well-formed
  // but describes another log.
  TempDir other;
  {
    auto store = open_store(other.path());
    Partition& p = open_partition(*store);
    for (int i = 0; i < 2000; ++i) append_ok(p, message("{\"other\":\"" + std::string(i % 5, 'z') + "\"}"));
  }
  fs::copy_file(log_file(other), log_file(dir), fs::copy_options::overwrite_existing);
  auto store = open_store(dir.path());
  Partition& p = open_partition(*store);
  CHECK(p.next_offset() == 2000);
  for (std::uint64_t offset : {0u, 777u, 1999u}) {
    auto batch = p.read(offset, 1, 1 << 20);
    REQUIRE(batch.ok());
    CHECK(json::parse((*batch)[0].line)["offset"] == offset);
  }
}

TEST_CASE("OpeningScansOnlyTheTailAfterTheIndex") {
  TempDir dir;
  {
    auto store = open_store(dir.path());
    Partition& p = open_partition(*store);
    std::vector<Message> batch(100, message("{\"payload\":\"" + std::string(200, 'x') + "\"}"));
    for (int i = 0; i < 200; ++i) REQUIRE(p.append(batch).ok());  // ~5 MB
  }
  auto store = open_store(dir.path());
  Partition& p = open_partition(*store);
  CHECK(p.next_offset() == 20000);
  CHECK(p.recovery_report().scanned_bytes < 64 * 1024);  // the last entry's batch and what follows
}

// With fsync, the writer extends the log ahead of its appends (StoreOptions::preallocate_bytes), so
// that the file holds zeros beyond the records while the partition is open. A copy taken then is
// what a crash leaves: it opens with every record and no report. A clean close cuts the zeros.
TEST_CASE("APreallocatedLogOpensWholeAfterACrashAndACleanCloseLeavesNoZeros") {
  TempDir dir;
  TempDir crashed;
  std::uint64_t logical = 0;
  {
    auto store = open_store(dir.path(), FsyncMode::kAlways);
    Partition& p = open_partition(*store);
    for (int i = 0; i < 10; ++i) REQUIRE(append_ok(p, message(payload_for(i))) == std::uint64_t(i));
    logical = p.log_bytes();
    const auto on_disk = fs::file_size(log_file(dir));
    CHECK(on_disk > logical + StoreOptions{}.preallocate_bytes / 2);  // zeros ahead of the records
    fs::copy(dir.path(), crashed.path(), fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  }
  CHECK(fs::file_size(log_file(dir)) == logical);  // closed: no zeros left
  {
    auto store = open_store(crashed.path(), FsyncMode::kAlways);
    Partition& p = open_partition(*store);
    expect_messages(p, 10);
    CHECK(p.recovery_report().truncated_bytes == 0);
    REQUIRE(append_ok(p, message(payload_for(10))) == 10u);
  }
  auto store = open_store(crashed.path());
  expect_messages(open_partition(*store), 11);
}

TEST_CASE("WithFsyncNeverOrPreallocateBytesZeroNothingIsPreallocated") {
  for (const bool never : {true, false}) {
    TempDir dir;
    StoreOptions options;
    options.data_dir = dir.path();
    options.fsync = never ? FsyncMode::kNever : FsyncMode::kAlways;
    if (!never) options.preallocate_bytes = 0;
    auto store = LogStore::open(options);
    REQUIRE(store.ok());
    Partition& p = open_partition(**store);
    for (int i = 0; i < 5; ++i) REQUIRE(append_ok(p, message(payload_for(i))) == std::uint64_t(i));
    CHECK(fs::file_size(log_file(dir)) == p.log_bytes());
  }
}

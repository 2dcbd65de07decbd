// The epoch cache of a replica's partition (libmq/docs/replication.md): durable, only growing at its
// end, cut by truncation, and answering where an epoch ends as KIP-101/KIP-279 ask.
#include "replication/epoch_cache.h"

#include <doctest/doctest.h>

#include <fstream>
#include <sstream>

#include "temp_dir.h"

namespace {

using mq::replication::EpochCache;
using Entry = EpochCache::Entry;
using EpochEnd = EpochCache::EpochEnd;

std::string file_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

EpochCache open_cache(mq::FileSystem& fs, const mq::testing::TempDir& dir) {
  auto cache = EpochCache::open(fs, dir.path(), "partition-0.epochs");
  REQUIRE_MESSAGE(cache.ok(), cache.status().message());
  return std::move(*cache);
}

}  // namespace

TEST_CASE("epoch cache: entries survive reopening, in the documented file format") {
  mq::testing::TempDir dir;
  auto fs = mq::make_posix_file_system();
  {
    auto cache = open_cache(*fs, dir);
    CHECK(cache.entries().empty());
    CHECK_FALSE(cache.newest().has_value());
    REQUIRE(cache.assign(1, 0).ok());
    REQUIRE(cache.assign(3, 17).ok());
    REQUIRE(cache.assign(3, 17).ok());  // the same newest entry again: nothing changes
  }
  CHECK(file_text(dir / "partition-0.epochs") == "{\"epoch\":1,\"start\":0}\n{\"epoch\":3,\"start\":17}\n");
  auto reopened = open_cache(*fs, dir);
  CHECK(reopened.entries() == std::vector<Entry>{{1, 0}, {3, 17}});
  CHECK(reopened.newest() == Entry{3, 17});
}

TEST_CASE("epoch cache: history only grows at its end") {
  mq::testing::TempDir dir;
  auto fs = mq::make_posix_file_system();
  auto cache = open_cache(*fs, dir);
  REQUIRE(cache.assign(2, 10).ok());
  CHECK(cache.assign(1, 20).code() == mq::ErrorCode::kInvalidArgument);  // an older epoch
  CHECK(cache.assign(2, 12).code() == mq::ErrorCode::kInvalidArgument);  // the same epoch elsewhere
  CHECK(cache.assign(4, 5).code() == mq::ErrorCode::kInvalidArgument);   // starting before epoch 2
  CHECK(cache.entries() == std::vector<Entry>{{2, 10}});
  // A newer epoch at the same start: epoch 2 holds no line, epoch 4 takes its place.
  REQUIRE(cache.assign(4, 10).ok());
  CHECK(cache.entries() == std::vector<Entry>{{4, 10}});
}

TEST_CASE("epoch cache: a truncation drops the entries it cut off, durably") {
  mq::testing::TempDir dir;
  auto fs = mq::make_posix_file_system();
  {
    auto cache = open_cache(*fs, dir);
    REQUIRE(cache.assign(1, 0).ok());
    REQUIRE(cache.assign(2, 10).ok());
    REQUIRE(cache.assign(5, 20).ok());
    REQUIRE(cache.truncate_from(25).ok());  // inside epoch 5: it keeps its lines below 25
    CHECK(cache.entries().size() == 3);
    REQUIRE(cache.truncate_from(10).ok());  // epoch 2 started at 10: nothing of it or later is left
    CHECK(cache.entries() == std::vector<Entry>{{1, 0}});
    // The follower now takes the new leader's future.
    REQUIRE(cache.assign(3, 10).ok());
  }
  CHECK(open_cache(*fs, dir).entries() == std::vector<Entry>{{1, 0}, {3, 10}});
}

TEST_CASE("epoch cache: where an epoch ends (KIP-101, KIP-279)") {
  mq::testing::TempDir dir;
  auto fs = mq::make_posix_file_system();
  auto cache = open_cache(*fs, dir);
  CHECK(cache.end_of(7, 40) == EpochEnd{7, 40});  // no history: the whole log might be that epoch's
  REQUIRE(cache.assign(2, 10).ok());
  REQUIRE(cache.assign(4, 25).ok());
  REQUIRE(cache.assign(6, 30).ok());
  const std::uint64_t log_end = 42;
  CHECK(cache.end_of(6, log_end) == EpochEnd{6, 42});  // the newest: the log's end
  CHECK(cache.end_of(9, log_end) == EpochEnd{6, 42});  // newer than any: the newest's end
  CHECK(cache.end_of(4, log_end) == EpochEnd{4, 30});
  CHECK(cache.end_of(2, log_end) == EpochEnd{2, 25});
  // An epoch this log never had: the newest one below it, and where that one ends (KIP-279).
  CHECK(cache.end_of(5, log_end) == EpochEnd{4, 30});
  CHECK(cache.end_of(3, log_end) == EpochEnd{2, 25});
  // Older than all: nothing at or past the oldest entry belongs to it.
  CHECK(cache.end_of(1, log_end) == EpochEnd{1, 10});
  CHECK(cache.entries_from(31) == std::vector<Entry>{{6, 30}});
  CHECK(cache.entries_from(26) == std::vector<Entry>{{4, 25}, {6, 30}});
  CHECK(cache.entries_from(25) == std::vector<Entry>{{4, 25}, {6, 30}});
  CHECK(cache.entries_from(3) == std::vector<Entry>{{2, 10}, {4, 25}, {6, 30}});  // before all: all
  CHECK(cache.entries_from(43) == std::vector<Entry>{{6, 30}});
}

TEST_CASE("epoch cache: a damaged file is refused, not guessed at") {
  auto fs = mq::make_posix_file_system();
  for (const std::string& text :
       {std::string("{\"epoch\":1,\"start\":0}"),  // no newline: a torn write
        std::string("{\"epoch\":2,\"start\":0}\n{\"epoch\":1,\"start\":5}\n"),
        std::string("{\"epoch\":1,\"start\":9}\n{\"epoch\":2,\"start\":5}\n"),
        std::string("{\"epoch\":-1,\"start\":0}\n"), std::string("[1,2]\n"),
        std::string("{\"epoch\":1,\"start\":0,\"x\":1}\n"), std::string("\xff\xfe\n")}) {
    CAPTURE(text);
    mq::testing::TempDir dir;
    std::ofstream(dir / "partition-0.epochs") << text;
    auto cache = EpochCache::open(*fs, dir.path(), "partition-0.epochs");
    REQUIRE_FALSE(cache.ok());
    CHECK(cache.status().code() == mq::ErrorCode::kCorruption);
  }
}

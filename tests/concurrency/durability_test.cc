// The durability modes mean what they say, shown through the file layer's seam: syncs are counted,
// and a simulated power cut drops every byte that was not synced.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "fault_file_system.h"
#include "mq/mq.h"
#include "store_helpers.h"
#include "temp_dir.h"

using namespace mq;
using namespace mq::testing;
using nlohmann::json;

namespace {

constexpr int kThreads = 8;

struct Ack {
  std::uint64_t offset;
  std::uint64_t synced_bytes_at_answer;
};

// Byte position just after each offset's line in the log file.
std::vector<std::uint64_t> line_ends(const std::string& log_text) {
  std::vector<std::uint64_t> ends;
  for (std::size_t i = 0; i < log_text.size(); ++i) {
    if (log_text[i] == '\n') ends.push_back(i + 1);
  }
  return ends;
}

std::string payload_for(int thread, int i) {
  return "{\"thread\":" + std::to_string(thread) + ",\"i\":" + std::to_string(i) + "}";
}

}  // namespace

TEST_CASE("AlwaysAnswersOnlyAfterASyncCoveringTheBytesAndSharesSyncs") {
  TempDir dir;
  // A disk whose flush takes 2 ms: appenders that arrive during a sync must share the next one.
  auto fs = std::make_shared<FaultFileSystem>(std::chrono::milliseconds(2));
  const std::string log = LogStore::log_path(dir.path(), "events", 0);
  constexpr int kPerThread = 200;
  std::vector<std::vector<Ack>> acks(kThreads);
  {
    auto store = open_store(dir.path(), FsyncMode::kAlways, fs);
    Partition& p = open_partition(*store);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          auto offset = p.append(message(payload_for(t, i)));
          REQUIRE(offset.ok());
          acks[t].push_back({*offset, fs->synced_bytes(log)});
        }
      });
    }
    for (auto& th : threads) th.join();
  }
  const auto ends = line_ends(file_contents(log));
  REQUIRE(ends.size() == kThreads * kPerThread);
  for (const auto& per_thread : acks) {
    for (const Ack& ack : per_thread) {
      CHECK(ends[ack.offset] <= ack.synced_bytes_at_answer);
    }
  }
  const auto syncs = fs->syncs(log);
  MESSAGE("appends: " << kThreads * kPerThread << ", syncs: " << syncs);
  CHECK(syncs >= 1);
  CHECK(syncs < kThreads * kPerThread / 5);  // group commit: far fewer syncs than appends
}

TEST_CASE("PowerCutLosesNoAcknowledgedMessageWithAlways") {
  for (unsigned seed : {1u, 2u, 3u, 4u, 5u}) {
    CAPTURE(seed);
    TempDir dir;
    auto fs = std::make_shared<FaultFileSystem>();
    std::vector<std::vector<std::uint64_t>> acked(kThreads);
    std::atomic<int> total{0};
    {
      auto store = open_store(dir.path(), FsyncMode::kAlways, fs);
      Partition& p = open_partition(*store);
      std::vector<std::thread> threads;
      for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
          for (int i = 0;; ++i) {
            std::vector<Message> batch;
            for (int j = 0; j <= i % 3; ++j) batch.push_back(message(payload_for(t, i * 10 + j)));
            auto offset = p.append(batch);
            if (!offset.ok()) return;  // the power is off
            for (std::size_t j = 0; j < batch.size(); ++j) acked[t].push_back(*offset + j);
            ++total;
          }
        });
      }
      // Cut the power while the appenders run, once each has been answered a few times.
      while (total.load() < 300) std::this_thread::yield();
      fs->power_cut(seed);
      for (auto& th : threads) th.join();
    }
    auto store = open_store(dir.path(), FsyncMode::kAlways);
    Partition& p = open_partition(*store);
    const auto lines = read_all(p);
    std::size_t count = 0;
    for (int t = 0; t < kThreads; ++t) {
      for (std::uint64_t offset : acked[t]) {
        REQUIRE(offset < lines.size());
        CHECK(json::parse(lines[offset])["payload"]["thread"] == t);
        ++count;
      }
    }
    // Every batch that survived survived whole: a line with batch_last L has all lines up to L.
    for (std::size_t i = 0; i < lines.size(); ++i) {
      const json line = json::parse(lines[i]);
      if (line.contains("batch_last")) CHECK(line["batch_last"].get<std::size_t>() < lines.size());
    }
    MESSAGE("seed " << seed << ": " << count << " acknowledged, " << lines.size() << " recovered");
  }
}

TEST_CASE("NeverWritesBeforeAnsweringWithoutSyncing") {
  TempDir dir;
  auto fs = std::make_shared<FaultFileSystem>();
  const std::string log = LogStore::log_path(dir.path(), "events", 0);
  auto store = open_store(dir.path(), FsyncMode::kNever, fs);
  Partition& p = open_partition(*store);
  for (int i = 0; i < 50; ++i) {
    const auto offset = append_ok(p, message(payload_for(0, i)));
    // In the file (a killed process would not lose it) the moment append returns.
    CHECK(line_ends(file_contents(log)).size() == offset + 1);
  }
  CHECK(fs->syncs(log) == 0);
  CHECK(p.positions().synced == 0);
  CHECK(p.positions().written == p.positions().appended);
}

TEST_CASE("IntervalSyncsInTheBackground") {
  TempDir dir;
  auto fs = std::make_shared<FaultFileSystem>();
  const std::string log = LogStore::log_path(dir.path(), "events", 0);
  StoreOptions options;
  options.data_dir = dir.path();
  options.fsync = FsyncMode::kInterval;
  options.fsync_interval = std::chrono::milliseconds(5);
  options.file_system = fs;
  auto store = LogStore::open(options);
  REQUIRE(store.ok());
  Partition& p = open_partition(**store);
  append_ok(p, message("1"));
  const auto written = p.positions().written;
  CHECK(line_ends(file_contents(log)).size() == 1);
  // Await the background sync (bounded): it must come without any further append.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (p.positions().synced < written && std::chrono::steady_clock::now() < deadline) {
    p.wait_beyond(1, std::chrono::milliseconds(5));  // a bounded wait on the partition, nothing arrives
  }
  CHECK(fs->synced_bytes(log) >= written);
  CHECK(p.positions().synced == written);
}

TEST_CASE("AFailedSyncStopsFurtherAppends") {
  TempDir dir;
  auto fs = std::make_shared<FaultFileSystem>();
  auto store = open_store(dir.path(), FsyncMode::kAlways, fs);
  Partition& p = open_partition(*store);
  append_ok(p, message("1"));
  fs->power_cut();
  auto failed = p.append(message("2"));
  REQUIRE_FALSE(failed.ok());
  // A failed write or sync fences the partition (kStorageFailed, 503 over HTTP); the failed append
  // may or may not survive a crash, the later one was never written.
  CHECK(failed.status().code() == ErrorCode::kStorageFailed);
  CHECK(failed.status().outcome_unknown());
  auto later = p.append(message("3"));
  CHECK(later.status().code() == ErrorCode::kStorageFailed);
  CHECK_FALSE(later.status().outcome_unknown());
  CHECK(p.next_offset() == 1);  // readers never see the unsynced message
}

TEST_CASE("WithAlwaysReadersNeverSeeAMessageBeforeItIsSynced") {
  TempDir dir;
  auto fs = std::make_shared<FaultFileSystem>();
  auto store = open_store(dir.path(), FsyncMode::kAlways, fs);
  Partition& p = open_partition(*store);
  fs->hold_syncs();
  std::thread producer([&] { append_ok(p, message("{\"unsynced\":true}")); });
  REQUIRE(fs->wait_for_held_sync(std::chrono::seconds(10)));  // written, its sync not yet done
  CHECK(line_ends(file_contents(LogStore::log_path(dir.path(), "events", 0))).size() == 1);  // in the file
  CHECK(p.next_offset() == 0);
  auto read = p.read(0, 10, 1 << 20);
  REQUIRE(read.ok());
  CHECK(read->empty());
  CHECK(p.wait_beyond(0, std::chrono::milliseconds(20)) == 0);
  fs->release_syncs();
  producer.join();
  CHECK(p.next_offset() == 1);
  CHECK(read_all(p).size() == 1);
}

TEST_CASE("AFailedFdatasyncFailsTheAppendAndStopsFurtherAppends") {
  TempDir dir;
  auto fs = std::make_shared<FaultFileSystem>();
  auto store = open_store(dir.path(), FsyncMode::kAlways, fs);
  Partition& p = open_partition(*store);
  append_ok(p, message("1"));
  fs->fail_next_sync();  // the write succeeds, the fdatasync reports an error
  auto failed = p.append(message("2"));
  REQUIRE_FALSE(failed.ok());
  // A failed write or sync fences the partition (kStorageFailed, 503 over HTTP); the failed append
  // may or may not survive a crash, the later one was never written.
  CHECK(failed.status().code() == ErrorCode::kStorageFailed);
  CHECK(failed.status().outcome_unknown());
  auto later = p.append(message("3"));
  CHECK(later.status().code() == ErrorCode::kStorageFailed);
  CHECK_FALSE(later.status().outcome_unknown());
  CHECK(p.next_offset() == 1);  // the unsynced message is never shown to readers
}

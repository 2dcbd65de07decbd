// Many threads appending to one partition and to several: offsets unique and contiguous, lines
// never interleaved, readers never see half a batch.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "mq/mq.h"
#include "store_helpers.h"
#include "temp_dir.h"

using namespace mq;
using namespace mq::testing;
using nlohmann::json;

namespace {
constexpr int kThreads = 8;
constexpr int kAppendsPerThread = 300;

// Appends from kThreads threads; thread t appends to partitions[t % size]. Batches of 1..4.
void hammer(std::vector<Partition*> partitions,
            std::vector<std::vector<std::pair<std::uint64_t, int>>>& offsets) {
  std::vector<std::thread> threads;
  offsets.assign(kThreads, {});
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Partition& p = *partitions[t % partitions.size()];
      for (int i = 0; i < kAppendsPerThread; ++i) {
        std::vector<Message> batch;
        const int size = 1 + i % 4;
        for (int j = 0; j < size; ++j) {
          batch.push_back(message("{\"t\":" + std::to_string(t) + ",\"i\":" + std::to_string(i) + ",\"j\":" +
                                  std::to_string(j) + ",\"pad\":\"" + std::string(t * 13, 'x') + "\"}"));
        }
        auto first = p.append(batch);
        REQUIRE(first.ok());
        for (int j = 0; j < size; ++j) offsets[t].emplace_back(*first + j, j);
      }
    });
  }
  for (auto& th : threads) th.join();
}

void check_partition(const std::string& log_path, const Partition& p, std::size_t expected_messages) {
  const auto on_disk = split_lines(file_contents(log_path));
  REQUIRE(on_disk.size() == expected_messages);
  const auto lines = read_all(p);
  REQUIRE(lines == on_disk);
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const json j = json::parse(lines[i]);  // a whole object per line: nothing interleaved
    CHECK(j["offset"] == i);
  }
}
}  // namespace

TEST_CASE("EightThreadsAppendingToOnePartitionGetUniqueContiguousOffsets") {
  TempDir dir;
  auto store = open_store(dir.path(), FsyncMode::kNever);
  Partition& p = open_partition(*store);
  std::vector<std::vector<std::pair<std::uint64_t, int>>> offsets;
  hammer({&p}, offsets);
  std::set<std::uint64_t> seen;
  for (int t = 0; t < kThreads; ++t) {
    bool first = true;
    std::uint64_t previous = 0;
    for (auto [offset, j] : offsets[t]) {
      CHECK(seen.insert(offset).second);
      CHECK((first || offset > previous));  // one thread's appends are ordered
      first = false;
      previous = offset;
    }
  }
  const std::size_t total = seen.size();
  CHECK(*seen.rbegin() == total - 1);  // contiguous from 0
  check_partition(LogStore::log_path(dir.path(), "events", 0), p, total);
  // Each thread's messages are in its own order, and each batch is contiguous.
  const auto lines = read_all(p);
  for (int t = 0; t < kThreads; ++t) {
    int last_i = -1;
    for (auto [offset, j] : offsets[t]) {
      const json m = json::parse(lines[offset])["payload"];
      CHECK(m["t"] == t);
      CHECK(m["j"] == j);
      CHECK(m["i"].get<int>() >= last_i);
      last_i = m["i"].get<int>();
    }
  }
}

TEST_CASE("EightThreadsAppendingToDifferentPartitions") {
  TempDir dir;
  auto store = open_store(dir.path(), FsyncMode::kAlways);
  std::vector<Partition*> partitions;
  for (std::uint32_t i = 0; i < 4; ++i) partitions.push_back(&open_partition(*store, "events", i));
  std::vector<std::vector<std::pair<std::uint64_t, int>>> offsets;
  hammer(partitions, offsets);
  for (std::uint32_t i = 0; i < 4; ++i) {
    std::set<std::uint64_t> seen;
    for (int t = static_cast<int>(i); t < kThreads; t += 4) {
      for (auto [offset, j] : offsets[t]) CHECK(seen.insert(offset).second);
    }
    CHECK(*seen.rbegin() == seen.size() - 1);
    check_partition(LogStore::log_path(dir.path(), "events", i), *partitions[i], seen.size());
  }
}

TEST_CASE("ReadersRacingAppendersSeeWholeBatchesInOrder") {
  TempDir dir;
  auto store = open_store(dir.path(), FsyncMode::kAlways);
  Partition& p = open_partition(*store);
  std::atomic<bool> done{false};
  std::thread reader([&] {
    std::uint64_t next = 0;
    while (!done.load() || next < p.next_offset()) {
      p.wait_beyond(next, std::chrono::milliseconds(50));
      auto batch = p.read(next, 64, 1 << 16);
      REQUIRE(batch.ok());
      for (const auto& m : *batch) {
        const json j = json::parse(m.line);
        REQUIRE(j["offset"] == next);
        ++next;
      }
      // Batches are appended as 5 messages: a reader at the end always stands on a batch boundary.
      if (batch->next_offset() == p.next_offset()) CHECK(next % 5 == 0);
    }
  });
  std::vector<std::thread> writers;
  for (int t = 0; t < 4; ++t) {
    writers.emplace_back([&] {
      std::vector<Message> batch(5, message("{\"x\":1}"));
      for (int i = 0; i < 200; ++i) REQUIRE(p.append(batch).ok());
    });
  }
  for (auto& w : writers) w.join();
  done = true;
  reader.join();
  CHECK(p.next_offset() == 4000);
}

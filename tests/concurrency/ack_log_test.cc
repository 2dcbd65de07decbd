// The shared acknowledgement log (libmq/docs/log_format.md "The shared acknowledgement log"): the
// acks of every group and partition share its syncs, nothing answered is lost in a power cut at any
// point (checkpoints included), and what it holds is folded into the journals at the next start.
#include <doctest/doctest.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <numeric>
#include <random>
#include <set>
#include <thread>

#include "broker_helpers.h"
#include "fault_file_system.h"
#include "groups/message_ids.h"
#include "storage/bounded_file_system.h"
#include "storage/internal_access.h"
#include "storage/partition_log.h"
#include "temp_dir.h"

using namespace mq;
using namespace mq::testing;
using mq::detail::message_id;

namespace {

constexpr std::uint32_t kPartitions = 4;
constexpr int kGroups = 2;
constexpr std::uint64_t kMessages = 200;

Config ack_log_config(const std::string& dir, std::shared_ptr<FileSystem> fs) {
  Config config = broker_config(dir, "events:" + std::to_string(kPartitions));
  config.store.fsync = FsyncMode::kAlways;
  config.store.file_system = std::move(fs);
  return config;
}

std::string group_name(int g) { return "g" + std::to_string(g); }

void produce_everywhere(Broker& broker) {
  std::vector<Message> batch;
  for (std::uint64_t n = 0; n < kMessages; ++n) batch.push_back(message("{\"n\":" + std::to_string(n) + "}"));
  for (std::uint32_t p = 0; p < kPartitions; ++p) REQUIRE(broker.produce("events", batch, p).ok());
}

// The offsets of `partition` that `group` would be given now: everything it has not acknowledged.
std::set<std::uint64_t> unacknowledged(Broker& broker, std::uint32_t partition, const std::string& group) {
  SubscribeOptions options;
  options.max_inflight = 100000;
  auto sub = subscribe(broker, group, options, partition);
  std::set<std::uint64_t> offsets;
  for (const Delivery& d : take_now(*sub, 100000)) offsets.insert(d.offset);
  return offsets;
}

// Posix underneath; syncs of paths containing `fail_path` fail once when armed; syncs of paths
// containing `gate_path` block while the gate is closed.
class ControlledFs : public FileSystem {
 public:
  std::shared_ptr<FileSystem> real = make_posix_file_system();
  std::mutex m;
  std::condition_variable cv;
  std::string fail_path, gate_path;
  bool fail_armed = false, gate_closed = false;
  int blocked = 0;

  Status before_sync(const std::string& path) {
    std::unique_lock lock(m);
    if (fail_armed && !fail_path.empty() && path.find(fail_path) != std::string::npos) {
      fail_armed = false;
      return Status::io_error("injected fdatasync EIO on " + path);
    }
    if (!gate_path.empty() && path.find(gate_path) != std::string::npos) {
      ++blocked;
      cv.notify_all();
      cv.wait(lock, [&] { return !gate_closed; });
      --blocked;
    }
    return {};
  }
  class F : public File {
   public:
    F(ControlledFs* fs, std::unique_ptr<File> f, std::string p)
        : fs_(fs), f_(std::move(f)), p_(std::move(p)) {}
    Status append(std::string_view d) override { return f_->append(d); }
    Status sync() override {
      if (auto s = fs_->before_sync(p_); !s.ok()) return s;
      return f_->sync();
    }
    Status read(std::uint64_t pos, std::size_t len, std::string& out) const override {
      return f_->read(pos, len, out);
    }
    Result<std::uint64_t> size() const override { return f_->size(); }
    Status truncate(std::uint64_t l) override { return f_->truncate(l); }
    Status write_at(std::uint64_t pos, std::string_view d) override { return f_->write_at(pos, d); }
    bool preallocate(std::uint64_t l) override { return f_->preallocate(l); }
    ControlledFs* fs_;
    std::unique_ptr<File> f_;
    std::string p_;
  };
  Result<std::unique_ptr<File>> open(const std::string& path) override {
    auto f = real->open(path);
    if (!f.ok()) return f.status();
    return std::unique_ptr<File>(std::make_unique<F>(this, std::move(f.value()), path));
  }
  Status create_directories(const std::string& p) override { return real->create_directories(p); }
  Status sync_directory(const std::string& p) override { return real->sync_directory(p); }
  Result<std::vector<std::string>> list_directory(const std::string& p) override {
    return real->list_directory(p);
  }
  bool exists(const std::string& p) override { return real->exists(p); }
  Result<std::uint64_t> file_size(const std::string& p) override { return real->file_size(p); }
  Status remove(const std::string& p) override { return real->remove(p); }
  Status rename(const std::string& a, const std::string& b) override { return real->rename(a, b); }
};

std::vector<std::string> shared_logs(const std::string& data_dir) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(data_dir + "/.acks")) {
    if (entry.path().extension() == ".log") names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

TEST_CASE("AcksOfEveryGroupAndPartitionShareTheSyncsOfOneLog") {
  TempDir dir;
  // A slow disk, so that acks arriving during a sync wait for the next one, as they do under load.
  auto fs = std::make_shared<FaultFileSystem>(std::chrono::microseconds(3000));
  const Config config = ack_log_config(dir.path(), fs);
  std::atomic<int> answered{0};
  {
    auto broker = open_broker(config, std::make_shared<ManualClock>());
    produce_everywhere(*broker);
    // One thread per (group, partition), each acking its messages one by one: each has its own
    // journal, so that without the shared log every ack would pay a sync of its own.
    std::vector<std::thread> threads;
    for (int g = 0; g < kGroups; ++g) {
      for (std::uint32_t p = 0; p < kPartitions; ++p) {
        threads.emplace_back([&, g, p] {
          for (std::uint64_t o = 0; o < kMessages; ++o) {
            const std::vector<std::string> id{message_id(p, o)};
            auto acked = broker->ack("events", p, group_name(g), id);
            REQUIRE(acked.ok());
            ++answered;
          }
        });
      }
    }
    for (auto& t : threads) t.join();
    const std::uint64_t shared_syncs = fs->syncs(dir / ".acks/wal-0.log");
    MESSAGE(answered.load() << " acks answered after " << shared_syncs << " syncs of the shared log");
    CHECK(shared_syncs >= 1);
    CHECK(shared_syncs * 2 < static_cast<std::uint64_t>(answered.load()));
    // The journals themselves were written, never synced, on the way.
    for (int g = 0; g < kGroups; ++g) {
      for (std::uint32_t p = 0; p < kPartitions; ++p) {
        CHECK(fs->syncs(dir / ("events/groups/" + group_name(g) + "/partition-" + std::to_string(p) +
                               ".log")) == 0);
      }
    }
  }
  auto broker = open_broker(ack_log_config(dir.path(), nullptr), std::make_shared<ManualClock>());
  for (int g = 0; g < kGroups; ++g) {
    for (std::uint32_t p = 0; p < kPartitions; ++p) CHECK(unacknowledged(*broker, p, group_name(g)).empty());
  }
}

TEST_CASE("APowerCutLosesNoAnsweredAcknowledgementOfAnyGroupCheckpointsIncluded") {
  for (unsigned seed : {1u, 2u, 3u, 4u}) {
    CAPTURE(seed);
    TempDir dir;
    auto fs = std::make_shared<FaultFileSystem>();
    Config config = ack_log_config(dir.path(), fs);
    // Small enough that the shared log is checkpointed many times during the run.
    config.groups.ack_log_checkpoint_bytes = 2048;
    // answered[g][p]: the offsets whose ack was answered.
    std::vector<std::vector<std::vector<std::uint64_t>>> answered(
        kGroups, std::vector<std::vector<std::uint64_t>>(kPartitions));
    std::atomic<int> total{0};
    {
      auto broker = open_broker(config, std::make_shared<ManualClock>());
      produce_everywhere(*broker);
      std::vector<std::thread> threads;
      for (int g = 0; g < kGroups; ++g) {
        for (std::uint32_t p = 0; p < kPartitions; ++p) {
          threads.emplace_back([&, g, p] {
            std::mt19937 random(seed * 100 + static_cast<unsigned>(g * kPartitions + p));
            std::vector<std::uint64_t> order(kMessages);
            std::iota(order.begin(), order.end(), 0);
            std::shuffle(order.begin(), order.end(), random);
            // Acks of 1 to 3 offsets, in random order, until the power goes.
            for (std::size_t i = 0; i < order.size();) {
              const std::size_t n = std::min<std::size_t>(1 + random() % 3, order.size() - i);
              std::vector<std::string> ids;
              for (std::size_t k = 0; k < n; ++k) ids.push_back(message_id(p, order[i + k]));
              if (!broker->ack("events", p, group_name(g), ids).ok()) return;
              for (std::size_t k = 0; k < n; ++k) answered[g][p].push_back(order[i + k]);
              i += n;
              ++total;
            }
          });
        }
      }
      while (total.load() < 200) std::this_thread::yield();
      fs->power_cut(seed);
      for (auto& t : threads) t.join();
    }
    auto broker = open_broker(ack_log_config(dir.path(), nullptr), std::make_shared<ManualClock>());
    std::size_t checked = 0;
    for (int g = 0; g < kGroups; ++g) {
      for (std::uint32_t p = 0; p < kPartitions; ++p) {
        const auto left = unacknowledged(*broker, p, group_name(g));
        for (std::uint64_t offset : answered[g][p]) {
          CHECK_MESSAGE(!left.contains(offset), "group " << g << " partition " << p << " offset " << offset);
          ++checked;
        }
      }
    }
    MESSAGE("seed " << seed << ": " << checked << " answered acknowledgements survived the power cut");
  }
}

TEST_CASE("ACheckpointFoldsTheSharedLogIntoTheJournalsAndRemovesIt") {
  TempDir dir;
  Config config = ack_log_config(dir.path(), nullptr);
  config.groups.ack_log_checkpoint_bytes = 1024;
  {
    auto broker = open_broker(config, std::make_shared<ManualClock>());
    produce_everywhere(*broker);
    for (std::uint64_t o = 0; o < kMessages; o += 2) {
      const std::vector<std::string> id{message_id(1, o)};
      REQUIRE(broker->ack("events", 1, "g", id).ok());
    }
    // Each checkpoint ran in the ack that passed the mark and removed the log before it.
    const auto logs = shared_logs(dir.path());
    REQUIRE(logs.size() == 1);
    CHECK(logs[0] != "wal-0.log");
    CHECK(std::filesystem::file_size(dir / (".acks/" + logs[0])) < 1024 + 256);
  }
  auto broker = open_broker(config, std::make_shared<ManualClock>());
  const auto left = unacknowledged(*broker, 1, "g");
  CHECK(left.size() == kMessages / 2);
  for (std::uint64_t o : left) CHECK(o % 2 == 1);
}

TEST_CASE("WhatTheJournalsLostIsRecoveredFromTheSharedLogSeeksIncluded") {
  TempDir dir;
  const Config config = ack_log_config(dir.path(), nullptr);
  {
    auto broker = open_broker(config, std::make_shared<ManualClock>());
    produce_everywhere(*broker);
    const std::vector<std::string> early{message_id(0, 150), message_id(0, 160)};
    REQUIRE(broker->ack("events", 0, "g", early).ok());
    SeekTarget target;
    target.offset = 100;
    REQUIRE(broker->seek("events", 0, "g", target).ok());  // forgets 150 and 160
    const std::vector<std::string> later{message_id(0, 120), message_id(0, 199)};
    REQUIRE(broker->ack("events", 0, "g", later).ok());
    const std::vector<std::string> other{message_id(3, 0), message_id(3, 1)};
    REQUIRE(broker->ack("events", 3, "h", other).ok());
  }
  // As a power cut could leave them: the journals lost everything since they were last synced,
  // files and directories included.
  std::filesystem::remove_all(dir / "events/groups");
  REQUIRE(shared_logs(dir.path()) == std::vector<std::string>{"wal-0.log"});
  TempDir saved;
  std::filesystem::copy_file(dir / ".acks/wal-0.log", saved / "wal-0.log");
  {
    auto broker = open_broker(config, std::make_shared<ManualClock>());
    CHECK(shared_logs(dir.path()) == std::vector<std::string>{"wal-1.log"});  // folded, then removed
    std::set<std::uint64_t> expected;
    for (std::uint64_t o = 100; o < kMessages; ++o) {
      if (o != 120 && o != 199) expected.insert(o);
    }
    CHECK(unacknowledged(*broker, 0, "g") == expected);
    CHECK(unacknowledged(*broker, 3, "h").size() == kMessages - 2);
    CHECK(unacknowledged(*broker, 3, "h").count(1) == 0);
  }
  // Folding the same log again (a power cut undid its removal) changes nothing, seek included.
  std::filesystem::copy_file(saved / "wal-0.log", dir / ".acks/wal-0.log");
  {
    auto broker = open_broker(config, std::make_shared<ManualClock>());
    CHECK(unacknowledged(*broker, 0, "g").size() == kMessages - 100 - 2);
    CHECK(unacknowledged(*broker, 0, "g").count(150) == 1);
    CHECK(unacknowledged(*broker, 3, "h").size() == kMessages - 2);
  }
}

TEST_CASE("ARunWithFsyncNeverFoldsTheSharedLogFirstSoThatItIsNeverReplayedLater") {
  TempDir dir;
  Config config = ack_log_config(dir.path(), nullptr);
  {
    auto broker = open_broker(config, std::make_shared<ManualClock>());
    produce_everywhere(*broker);
    const std::vector<std::string> id{message_id(0, 5)};
    REQUIRE(broker->ack("events", 0, "g", id).ok());
  }
  // The journal lost its record (a power cut): the never run must restore it from the shared log.
  std::filesystem::remove_all(dir / "events/groups");
  config.store.fsync = FsyncMode::kNever;
  {
    auto broker = open_broker(config, std::make_shared<ManualClock>());
    CHECK(unacknowledged(*broker, 0, "g").count(5) == 0);
    CHECK(shared_logs(dir.path()).empty());
    SeekTarget target;
    target.offset = 0;
    REQUIRE(broker->seek("events", 0, "g", target).ok());  // 5 is to be delivered again
  }
  config.store.fsync = FsyncMode::kAlways;
  auto broker = open_broker(config, std::make_shared<ManualClock>());
  CHECK(unacknowledged(*broker, 0, "g").size() == kMessages);  // no stale record acknowledged 5 again
}

TEST_CASE("ManyJournalsAckWithoutSyncingTheirOwnFiles") {
  TempDir dir;
  auto fs = std::make_shared<FaultFileSystem>(std::chrono::microseconds(1000));
  const Config config = ack_log_config(dir.path(), fs);
  constexpr int kManyGroups = 96;  // 384 journals, past the 128 whose files stay open at once
  auto broker = open_broker(config, std::make_shared<ManualClock>());
  produce_everywhere(*broker);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int g = t; g < kManyGroups; g += 8) {
        for (std::uint32_t p = 0; p < kPartitions; ++p) {
          const std::vector<std::string> ids{message_id(p, 0), message_id(p, 1)};
          REQUIRE(broker->ack("events", p, group_name(g), ids).ok());
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  std::uint64_t journal_syncs = 0;
  for (int g = 0; g < kManyGroups; ++g) {
    for (std::uint32_t p = 0; p < kPartitions; ++p) {
      journal_syncs +=
          fs->syncs(dir / ("events/groups/" + group_name(g) + "/partition-" + std::to_string(p) + ".log"));
    }
  }
  const std::uint64_t acks = kManyGroups * kPartitions;
  const std::uint64_t shared_syncs = fs->syncs(dir / ".acks/wal-0.log");
  MESSAGE(acks << " acks, each on its own journal: " << journal_syncs << " journal syncs (to close a file), "
               << shared_syncs << " syncs of the shared log");
  // Only a journal whose descriptor was closed to make room was synced (256 descriptors hold 128).
  CHECK(journal_syncs <= acks - 128);
  CHECK(shared_syncs < acks);
}

TEST_CASE("AFailedSyncOfTheSharedLogFailsOneAckAndTheNextOnesGoToANewLog") {
  TempDir dir;
  auto fs = std::make_shared<FaultFileSystem>();
  const Config config = ack_log_config(dir.path(), fs);
  {
    auto broker = open_broker(config, std::make_shared<ManualClock>());
    produce_everywhere(*broker);
    fs->fail_next_sync();
    const std::vector<std::string> first{message_id(0, 0)};
    auto failed = broker->ack("events", 0, "g", first);
    REQUIRE_FALSE(failed.ok());
    CHECK(failed.status().code() == ErrorCode::kStorageFailed);
    // Every group goes on: the next acknowledgements are made durable in a new shared log.
    for (std::uint32_t p = 0; p < kPartitions; ++p) {
      const std::vector<std::string> ids{message_id(p, 1), message_id(p, 2)};
      REQUIRE(broker->ack("events", p, "h", ids).ok());
    }
    REQUIRE(broker->ack("events", 0, "g", std::vector<std::string>{message_id(0, 3)}).ok());
    CHECK(shared_logs(dir.path()) == std::vector<std::string>{"wal-0.log", "wal-1.log"});
  }
  auto broker = open_broker(ack_log_config(dir.path(), nullptr), std::make_shared<ManualClock>());
  for (std::uint32_t p = 0; p < kPartitions; ++p) {
    CHECK(unacknowledged(*broker, p, "h").count(1) == 0);
    CHECK(unacknowledged(*broker, p, "h").count(2) == 0);
  }
  CHECK(unacknowledged(*broker, 0, "g").count(3) == 0);
}

TEST_CASE("ASharedLogRecordLibmqDidNotWriteRefusesTheStart") {
  for (const std::string payload :
       {R"({"journal":"../groups/g/partition-0","record":[1]})",
        R"({"journal":"events/groups/g/partition-00","record":[1]})",
        R"({"journal":"events/groups/g/partition-0","record":{"bogus":1}})", R"({"record":[1]})"}) {
    CAPTURE(payload);
    TempDir dir;
    const Config config = ack_log_config(dir.path(), nullptr);
    open_broker(config, std::make_shared<ManualClock>()).reset();
    {
      StoreOptions options = config.store;
      auto fs = make_posix_file_system();
      auto log = PartitionLog::open(*fs, options, dir / ".acks", "wal-0", "test", 0);
      REQUIRE(log.ok());
      const Message m{detail::PayloadInternal::from_minified_json(payload), std::nullopt};
      REQUIRE((*log)->append(std::span(&m, 1)).ok());
    }
    auto broker = Broker::open(config, std::make_shared<ManualClock>());
    REQUIRE_FALSE(broker.ok());
    CHECK(broker.status().code() == ErrorCode::kCorruption);
    CHECK(broker.status().message().find("wal-0.log") != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(dir / "../groups/g"));  // nothing written outside DATA_DIR
  }
}

TEST_CASE("WithFsyncNeverThereIsNoSharedLog") {
  TempDir dir;
  Config config = ack_log_config(dir.path(), nullptr);
  config.store.fsync = FsyncMode::kNever;
  auto broker = open_broker(config, std::make_shared<ManualClock>());
  produce_everywhere(*broker);
  const std::vector<std::string> id{message_id(0, 0)};
  REQUIRE(broker->ack("events", 0, "g", id).ok());
  CHECK_FALSE(std::filesystem::exists(dir / ".acks"));
}

TEST_CASE("AFailedSyncToCloseAPooledFileIsReportedByEveryLaterSyncOfIt") {
  TempDir dir;
  auto fault = std::make_shared<FaultFileSystem>();
  auto pool = detail::BoundedFileSystem::make(fault, 2);
  auto a = pool->open(dir / "a.log");
  REQUIRE(a.ok());
  REQUIRE((*a)->append("x").ok());
  auto b = pool->open(dir / "b.log");
  REQUIRE(b.ok());
  REQUIRE((*b)->append("y").ok());
  fault->fail_next_sync();
  auto c = pool->open(dir / "c.log");  // over the bound: a (dirty) is synced to be closed, and that fails
  REQUIRE(c.ok());
  // Linux reports a failed fdatasync once: a second one on the descriptor would say ok.
  CHECK_FALSE((*a)->sync().ok());
  CHECK_FALSE((*a)->sync().ok());
  CHECK((*b)->sync().ok());
}

TEST_CASE("AJournalThatCannotBeSyncedHasItsRecordsCarriedForwardNotEveryOldLogKept") {
  TempDir dir;
  auto fs = std::make_shared<ControlledFs>();
  Config config = ack_log_config(dir.path(), fs);
  config.groups.ack_log_checkpoint_bytes = 2048;
  {
    auto broker = open_broker(config, std::make_shared<ManualClock>());
    produce_everywhere(*broker);
    REQUIRE(broker->ack("events", 0, "bad", std::vector<std::string>{message_id(0, 7)}).ok());
    {
      std::lock_guard lock(fs->m);
      fs->fail_path = "/bad/partition-0.log";
      fs->fail_armed = true;  // its next sync fails, and its log refuses everything after
    }
    for (std::uint64_t o = 0; o < kMessages; ++o)
      REQUIRE(broker->ack("events", 1, "h", std::vector<std::string>{message_id(1, o)}).ok());
    const auto logs = shared_logs(dir.path());
    MESSAGE(logs.size() << " shared logs kept after a journal failed its sync");
    CHECK(logs.size() == 1);
  }
  // What the failed journal never made durable (here: all of it) comes back from the shared log.
  std::filesystem::remove_all(dir / "events/groups/bad");
  auto broker = open_broker(ack_log_config(dir.path(), nullptr), std::make_shared<ManualClock>());
  CHECK(unacknowledged(*broker, 0, "bad").count(7) == 0);
  CHECK(unacknowledged(*broker, 0, "bad").size() == kMessages - 1);
  CHECK(unacknowledged(*broker, 1, "h").empty());
}

TEST_CASE("AFailedSharedLogIsReplacedEvenWhileACheckpointWaitsForAJournal") {
  TempDir dir;
  auto fs = std::make_shared<ControlledFs>();
  Config config = ack_log_config(dir.path(), fs);
  config.groups.ack_log_checkpoint_bytes = 4096;
  auto broker = open_broker(config, std::make_shared<ManualClock>());
  produce_everywhere(*broker);
  REQUIRE(broker->ack("events", 0, "slow", std::vector<std::string>{message_id(0, 0)}).ok());
  {
    std::lock_guard lock(fs->m);
    fs->gate_path = "/slow/partition-0.log";
    fs->gate_closed = true;
  }
  // Acks until its record passes the mark; its checkpoint then waits at the gate.
  std::thread acker([&] {
    for (std::uint64_t o = 0; o < kMessages; ++o)
      (void)broker->ack("events", 2, "h", std::vector<std::string>{message_id(2, o)});
  });
  {
    std::unique_lock lock(fs->m);
    REQUIRE(fs->cv.wait_for(lock, std::chrono::seconds(30), [&] { return fs->blocked > 0; }));
    fs->fail_path = ".acks/wal-";
    fs->fail_armed = true;
  }
  int failed = 0;
  for (std::uint64_t o = 0; o < 20; ++o) {
    if (!broker->ack("events", 1, "k", std::vector<std::string>{message_id(1, o)}).ok()) ++failed;
  }
  {
    std::lock_guard lock(fs->m);
    fs->gate_closed = false;
    fs->cv.notify_all();
  }
  acker.join();
  CHECK(failed == 1);
}

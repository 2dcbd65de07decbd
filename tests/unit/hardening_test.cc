// Issue 10's library defects, each as the behaviour that must hold: what the write path accepts
// survives recovery, recovery says what it cut, groups are never ahead of their log, refused calls
// create no group, open files do not grow with groups, a full disk or a failed sync loses nothing
// that was confirmed, and one process owns a data directory.
#include <doctest/doctest.h>
#include <sys/resource.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "broker_helpers.h"
#include "fault_file_system.h"
#include "mq/mq.h"
#include "store_helpers.h"
#include "temp_dir.h"

using namespace mq;
using namespace mq::testing;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr std::string_view kBigInteger =
    R"({"big":123456789012345678901234567890,"neg":-98765432109876543210})";

std::string nested(std::size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

std::size_t open_descriptors() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

std::uint64_t committed_of(Broker& broker, const std::string& group, std::uint32_t partition = 0) {
  auto stats = broker.stats("events");
  REQUIRE(stats.ok());
  for (const auto& p : (*stats)[0].partitions) {
    if (p.partition != partition) continue;
    for (const auto& g : p.groups) {
      if (g.group == group) return g.committed_offset;
    }
  }
  FAIL("group " << group << " not found");
  return 0;
}

bool has_group(Broker& broker, const std::string& group) {
  auto stats = broker.stats();
  REQUIRE(stats.ok());
  for (const auto& t : *stats) {
    for (const auto& p : t.partitions) {
      for (const auto& g : p.groups) {
        if (g.group == group) return true;
      }
    }
  }
  return false;
}

}  // namespace

TEST_CASE("An integer beyond 64 bits that the write path accepts survives every restart") {
  TempDir dir;
  {
    auto store = open_store(dir.path());
    Partition& p = open_partition(*store);
    CHECK(append_ok(p, message(kBigInteger)) == 0);
    CHECK(append_ok(p, message(R"({"after":1})")) == 1);
    CHECK(append_ok(p, message("[1e-400,-0.0]")) == 2);
  }
  for (bool drop_index : {false, true}) {
    if (drop_index) fs::remove(dir.path() + "/events/partition-0.index");
    auto store = open_store(dir.path());
    Partition& p = open_partition(*store);
    CHECK(p.recovery_report().truncated_bytes == 0);
    REQUIRE(p.next_offset() == 3);
    const auto lines = read_all(p);
    CHECK(lines[0].find("123456789012345678901234567890") != std::string::npos);
    CHECK(lines[1].find(R"("after":1)") != std::string::npos);
  }
}

TEST_CASE("A payload with a NUL byte is refused, whatever simdjson makes of it") {
  // simdjson 3.0 ends a top-level number at a NUL and ignores the rest: "1\0..." was accepted as a
  // payload and stored whole, and recovery, which reads it inside its record, would cut the log there.
  for (const std::string& bad :
       {std::string("1\0", 2),
        std::string("3514159265\0\0\0\x01"
                    "2653835792896",
                    27),
        std::string("-1.5e3\0x", 8), std::string("\"a\0\"", 4), std::string("[1]\0", 4)}) {
    CAPTURE(bad);
    auto parsed = Payload::parse(bad);
    REQUIRE_FALSE(parsed.ok());
    CHECK(parsed.status().code() == ErrorCode::kInvalidArgument);
  }
  CHECK(Payload::parse("\"\\u0000\"").ok());  // an escaped NUL inside a string is valid JSON
}

TEST_CASE("Payloads nest up to the documented depth, and what is accepted is recovered") {
  // Numbers of any size (JSON sets no limit), and duplicate keys, read the same by both parsers.
  TempDir numbers;
  {
    auto store = open_store(numbers.path());
    Partition& p = open_partition(*store);
    append_ok(p, message("{\"long\":" + std::string(5000, '9') + ",\"huge\":1e400,\"tiny\":-1E-99999}"));
    append_ok(p, message("[1" + std::string(400, '0') + ".0]"));
  }
  fs::remove(numbers.path() + "/events/partition-0.index");
  {
    auto store = open_store(numbers.path());
    CHECK(open_partition(*store).next_offset() == 2);
  }
  CHECK_FALSE(Payload::parse("[1e]").ok());
  CHECK_FALSE(Payload::parse("[01" + std::string(400, '0') + "]").ok());
  CHECK_FALSE(Payload::parse(nested(1001)).ok());
  TempDir dir;
  {
    auto store = open_store(dir.path());
    Partition& p = open_partition(*store);
    append_ok(p, message(nested(1000)));
    append_ok(p, message("{\"deep\":" + nested(999) + ",\"big\":1" + std::string(40, '0') + "}"));
    append_ok(p, message("2"));
  }
  fs::remove(dir.path() + "/events/partition-0.index");
  auto store = open_store(dir.path());
  CHECK(open_partition(*store).next_offset() == 3);
}

TEST_CASE("Recovery that cuts intact records says so, with how many") {
  TempDir dir;
  {
    auto store = open_store(dir.path());
    Partition& p = open_partition(*store);
    for (int i = 0; i < 5; ++i) append_ok(p, message("{\"n\":" + std::to_string(i) + "}"));
  }
  {
    // Damage the second record in the middle of the log.
    std::fstream file(dir.path() + "/events/partition-0.log", std::ios::in | std::ios::out);
    std::string content((std::istreambuf_iterator<char>(file)), {});
    const auto second = content.find('\n') + 1;
    file.seekp(static_cast<std::streamoff>(second + 3));
    file.put('#');
  }
  std::vector<std::string> lines;
  StoreOptions options;
  options.data_dir = dir.path();
  options.fsync = FsyncMode::kNever;
  options.recovery_log = [&](const std::string& line) { lines.push_back(line); };
  auto store = LogStore::open(options);
  REQUIRE(store.ok());
  auto p = (*store)->partition("events", 0);
  REQUIRE(p.ok());
  CHECK((*p)->next_offset() == 1);
  CHECK((*p)->recovery_report().intact_records_dropped == 3);
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].find("partition-0.log") != std::string::npos);
  CHECK(lines[0].find("3 intact records") != std::string::npos);
  CHECK(lines[0].find("offset 1") != std::string::npos);
  // The cut bytes are kept beside the log for an operator.
  const std::string kept = dir.path() + "/events/partition-0.log.damaged-1";
  CHECK((*p)->recovery_report().damaged_bytes_kept_in == kept);
  CHECK(file_contents(kept).find(R"({"n":4})") != std::string::npos);
}

TEST_CASE("A group is never ahead of the recovered log, and new messages at reused offsets reach it") {
  TempDir dir;
  const Config config = broker_config(dir.path(), "events:1");
  {
    auto broker = open_broker(config);
    produce_numbers(*broker, 5);
    auto acked = broker->ack("events", 0, "g", std::vector<std::string>{"0-0", "0-1", "0-2", "0-3", "0-4"});
    REQUIRE(acked.ok());
    CHECK(committed_of(*broker, "g") == 5);
  }
  // The log loses its last three records (as a cut by recovery would leave it).
  const std::string log = dir.path() + "/events/partition-0.log";
  {
    std::ifstream in(log);
    std::string first, second;
    std::getline(in, first);
    std::getline(in, second);
    std::ofstream out(log, std::ios::trunc);
    out << first << "\n" << second << "\n";
  }
  fs::remove(dir.path() + "/events/partition-0.index");
  for (int restart = 0; restart < 2; ++restart) {
    auto broker = open_broker(config);
    CHECK(committed_of(*broker, "g") == 2);
    if (restart == 0) produce_numbers(*broker, 1, 100);  // lands at offset 2 again
    auto sub = subscribe(*broker, "g");
    auto got = take_now(*sub);
    REQUIRE(got.size() == 1);
    CHECK(got[0].offset == 2);
    CHECK(number_of(got[0]) == 100);
  }
}

TEST_CASE("Refused nacks, touches and acks create no group") {
  TempDir dir;
  auto broker = open_broker(broker_config(dir.path(), "events:1"));
  produce_numbers(*broker, 1);
  CHECK(broker->nack("events", 0, "n1", "0-0", {}).code() == ErrorCode::kConflict);
  CHECK(broker->touch("events", 0, "n2", "0-0").code() == ErrorCode::kConflict);
  CHECK(broker->nack("events", 0, "n3", "garbage", {}).code() == ErrorCode::kNotFound);
  CHECK(broker->nack("events", 0, "n4", "0-99", {}).code() == ErrorCode::kNotFound);
  CHECK(broker->ack("events", 0, "a1", std::vector<std::string>{"garbage"}).status().code() ==
        ErrorCode::kNotFound);
  CHECK(broker->ack("events", 0, "a2", std::vector<std::string>{"0-0", "0-7"}).status().code() ==
        ErrorCode::kNotFound);
  for (const char* g : {"n1", "n2", "n3", "n4", "a1", "a2"}) CHECK_MESSAGE(!has_group(*broker, g), g);
  CHECK_FALSE(fs::exists(dir.path() + "/events/groups/n1"));
  // A valid ack does create its group: it must remember the acknowledgement.
  CHECK(*broker->ack("events", 0, "a3", std::vector<std::string>{"0-0"}) == 1);
  CHECK(has_group(*broker, "a3"));
}

TEST_CASE("Open files do not grow with the number of groups") {
  TempDir dir;
  auto broker = open_broker(broker_config(dir.path(), "events:1"));
  produce_numbers(*broker, 1);
  const std::size_t before = open_descriptors();
  // 300 journals, two files each, past the 256 descriptors they share.
  for (int g = 0; g < 300; ++g) {
    REQUIRE(broker->ack("events", 0, "g" + std::to_string(g), std::vector<std::string>{"0-0"}).ok());
  }
  CHECK(open_descriptors() < before + 256 + 20);
  // Every group still works after its files were closed and reopened.
  produce_numbers(*broker, 1, 1);
  for (int g = 0; g < 300; g += 37) {
    CHECK(*broker->ack("events", 0, "g" + std::to_string(g), std::vector<std::string>{"0-1"}) == 1);
  }
  broker.reset();
  auto reopened = open_broker(broker_config(dir.path(), "events:1"));
  CHECK(committed_of(*reopened, "g0") == 2);
  CHECK(committed_of(*reopened, "g1") == 1);
}

TEST_CASE("A topic too long for its dead-letter topic is refused when dead-lettering is on") {
  TempDir dir;
  Config config = broker_config(dir.path(), "events:1");
  config.topics.push_back({std::string(125, 't'), 1});
  CHECK(Broker::open(config).ok());  // no dead letters, no problem
  config.groups.max_deliveries = 1;
  auto refused = Broker::open(config);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == ErrorCode::kInvalidArgument);
  CHECK(refused.status().message().find(std::string(125, 't') + "-dlq") != std::string::npos);
}

TEST_CASE("The dead letter of a dead letter keeps where the message first came from") {
  TempDir dir;
  auto clock = std::make_shared<ManualClock>();
  Config config = broker_config(dir.path(), "jobs:1");
  config.groups.max_deliveries = 1;
  auto broker = open_broker(config, clock);
  produce_numbers(*broker, 1, 0, 0, "jobs");
  {
    auto sub = subscribe(*broker, "g", {}, 0, "jobs");
    REQUIRE(take_now(*sub).size() == 1);
    REQUIRE(broker->nack("jobs", 0, "g", "0-0", {}).ok());
  }
  {
    auto sub = subscribe(*broker, "g", {}, 0, "jobs-dlq");
    REQUIRE(take_now(*sub).size() == 1);
    REQUIRE(broker->nack("jobs-dlq", 0, "g", "0-0", {}).ok());
  }
  auto sub = subscribe(*broker, "reader", {}, 0, "jobs-dlq-dlq");
  auto got = take_now(*sub);
  REQUIRE(got.size() == 1);
  const json record = json::parse(got[0].record);
  CHECK(record["payload"]["n"] == 0);
  CHECK(record["source"]["topic"] == "jobs-dlq");
  CHECK(record["source"]["source"]["topic"] == "jobs");
  CHECK(record["source"]["source"]["offset"] == 0);
}

TEST_CASE("One process at a time owns a data directory") {
  TempDir dir;
  auto first = open_store(dir.path());
  StoreOptions options;
  options.data_dir = dir.path();
  auto second = LogStore::open(options);
  REQUIRE_FALSE(second.ok());
  CHECK(second.status().message().find(dir.path()) != std::string::npos);
  CHECK(second.status().message().find("pid " + std::to_string(::getpid())) != std::string::npos);
  first.reset();
  CHECK(LogStore::open(options).ok());
}

TEST_CASE("A full disk refuses the write, keeps nothing of it, and writes again once there is room") {
  for (FsyncMode mode : {FsyncMode::kNever, FsyncMode::kAlways}) {
    CAPTURE(static_cast<int>(mode));
    TempDir dir;
    auto faults = std::make_shared<FaultFileSystem>();
    {
      auto store = open_store(dir.path(), mode, faults);
      Partition& p = open_partition(*store);
      CHECK(append_ok(p, message(R"({"n":0})")) == 0);
      faults->set_space_left(10);  // part of the next record fits
      auto full = p.append(message(R"({"n":1,"text":"does not fit"})"));
      REQUIRE_FALSE(full.ok());
      CHECK(full.status().code() == ErrorCode::kNoSpace);
      CHECK(full.status().message().find("no space left on device") != std::string::npos);
      CHECK(p.next_offset() == 1);
      CHECK(read_all(p).size() == 1);  // what was stored stays readable
      faults->set_space_left(std::nullopt);
      CHECK(append_ok(p, message(R"({"n":2})")) == 1);  // no restart needed, no gap
    }
    auto store = open_store(dir.path());
    Partition& p = open_partition(*store);
    CHECK(p.recovery_report().truncated_bytes == 0);
    const auto lines = read_all(p);
    REQUIRE(lines.size() == 2);
    CHECK(json::parse(lines[1])["payload"]["n"] == 2);
  }
}

TEST_CASE("Concurrent appenders all get the full-disk error and none of their messages is kept") {
  TempDir dir;
  auto faults = std::make_shared<FaultFileSystem>();
  auto store = open_store(dir.path(), FsyncMode::kAlways, faults);
  Partition& p = open_partition(*store);
  faults->hold_syncs();
  std::vector<std::thread> threads;
  std::atomic<int> ok{0}, no_space{0};
  auto append = [&](int n) {
    auto r = p.append(message("{\"n\":" + std::to_string(n) + "}"));
    if (r.ok()) {
      ++ok;
    } else {
      CHECK(r.status().code() == ErrorCode::kNoSpace);
      ++no_space;
    }
  };
  threads.emplace_back(append, 0);  // its round syncs first and is held
  REQUIRE(faults->wait_for_held_sync(std::chrono::seconds(10)));
  faults->set_space_left(0);  // the next rounds cannot write
  for (int n = 1; n <= 4; ++n) threads.emplace_back(append, n);
  faults->release_syncs();
  for (auto& t : threads) t.join();
  CHECK(ok + no_space == 5);
  CHECK(ok >= 1);
  CHECK(p.next_offset() == static_cast<std::uint64_t>(ok.load()));
  faults->set_space_left(std::nullopt);
  CHECK(append_ok(p, message(R"({"n":9})")) == static_cast<std::uint64_t>(ok.load()));
}

TEST_CASE("A failed fdatasync stops the partition's writes, earlier messages stay readable") {
  TempDir dir;
  auto faults = std::make_shared<FaultFileSystem>();
  auto store = open_store(dir.path(), FsyncMode::kAlways, faults);
  Partition& p = open_partition(*store);
  CHECK(append_ok(p, message(R"({"n":0})")) == 0);
  faults->fail_next_sync();
  auto failed = p.append(message(R"({"n":1})"));
  REQUIRE_FALSE(failed.ok());
  CHECK(failed.status().code() == ErrorCode::kStorageFailed);
  CHECK(failed.status().outcome_unknown());  // it reached the file: it may survive a crash
  auto refused = p.append(message(R"({"n":2})"));
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == ErrorCode::kStorageFailed);
  CHECK_FALSE(refused.status().outcome_unknown());  // never written
  CHECK(read_all(p).size() == 1);
}

TEST_CASE("An acknowledgement that cannot be stored acknowledges nothing") {
  TempDir dir;
  auto faults = std::make_shared<FaultFileSystem>();
  Config config = broker_config(dir.path(), "events:1");
  config.store.file_system = faults;
  auto broker = open_broker(config);
  produce_numbers(*broker, 2);
  REQUIRE(broker->ack("events", 0, "g", std::vector<std::string>{"0-0"}).ok());
  faults->set_space_left(0);
  auto refused = broker->ack("events", 0, "g", std::vector<std::string>{"0-1"});
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == ErrorCode::kNoSpace);
  CHECK(committed_of(*broker, "g") == 1);
  faults->set_space_left(std::nullopt);
  CHECK(*broker->ack("events", 0, "g", std::vector<std::string>{"0-1"}) == 1);
}

TEST_CASE("Large batches formatted outside the lock keep offsets dense and batches whole under contention") {
  TempDir dir;
  constexpr int kThreads = 4;
  constexpr int kRounds = 30;
  {
    auto store = open_store(dir.path());
    Partition& p = open_partition(*store);
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int r = 0; r < kRounds; ++r) {
          // Odd threads send big batches (formatted outside the lock), even ones single messages.
          const int size = t % 2 ? 200 : 1;
          std::vector<Message> batch;
          for (int i = 0; i < size; ++i) {
            batch.push_back(Message{*Payload::parse("[" + std::to_string(t) + "," + std::to_string(r) + "," +
                                                    std::to_string(i) + "]"),
                                    std::nullopt});
          }
          if (!p.append(batch).ok()) ++failures;
        }
      });
    }
    for (auto& th : threads) th.join();
    CHECK(failures == 0);
  }
  fs::remove(dir.path() + "/events/partition-0.index");
  auto store = open_store(dir.path());
  Partition& p = open_partition(*store);
  CHECK(p.recovery_report().truncated_bytes == 0);
  const auto lines = read_all(p);
  REQUIRE(lines.size() == std::size_t(kRounds * (200 + 1) * kThreads / 2));
  // Each batch's messages are consecutive, in order, and carry the batch's last offset.
  for (std::size_t i = 0; i < lines.size();) {
    const json first = json::parse(lines[i]);
    if (!first.contains("batch_last")) {
      ++i;
      continue;
    }
    const std::uint64_t last = first["batch_last"];
    for (std::uint64_t k = 0; k <= last - first["offset"].get<std::uint64_t>(); ++k) {
      const json line = json::parse(lines[i + k]);
      CHECK(line["payload"][2] == k);
      CHECK(line["payload"][0] == first["payload"][0]);
      CHECK(line["batch_last"] == last);
    }
    i += static_cast<std::size_t>(last - first["offset"].get<std::uint64_t>() + 1);
  }
}

TEST_CASE("An acknowledgement of more ids than one payload holds is stored whole, across a restart") {
  // Journal records are the broker's own: MAX_PAYLOAD_BYTES bounds what producers send, not how
  // many messages one request may acknowledge (up to 100,000 ids over HTTP).
  TempDir dir;
  Config config = broker_config(dir.path(), "events:1");
  config.store.max_payload_bytes = 64;
  std::vector<std::string> ids;
  {
    auto broker = open_broker(config);
    produce_numbers(*broker, 3000);
    for (std::uint64_t offset = 1; offset < 3000; ++offset) ids.push_back("0-" + std::to_string(offset));
    auto acked = broker->ack("events", 0, "g", ids);
    REQUIRE_MESSAGE(acked.ok(), acked.status().to_string());
    CHECK(*acked == ids.size());
    REQUIRE(broker->ack("events", 0, "g", std::vector<std::string>{"0-0"}).ok());
    CHECK(committed_of(*broker, "g") == 3000);
  }
  auto broker = open_broker(config);
  CHECK(committed_of(*broker, "g") == 3000);
}

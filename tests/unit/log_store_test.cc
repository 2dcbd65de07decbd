// Append/read round trips, the on-disk form of records, and the offset index.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "mq/mq.h"
#include "storage/internal_access.h"  // PayloadInternal: exact stored bytes
#include "store_helpers.h"
#include "temp_dir.h"

using namespace mq;
using namespace mq::testing;
using nlohmann::json;

TEST_CASE("PayloadsOfEveryJsonTypeRoundTripAsOneLineEach") {
  TempDir dir;
  auto store = open_store(dir.path());
  Partition& p = open_partition(*store);
  const std::string big(1 << 20, 'x');
  const std::vector<std::string> payloads = {
      "null",
      "true",
      "false",
      "0",
      "-12.5e3",
      "\"plain\"",
      "[]",
      "{}",
      R"("line one\nline two\r\n\ttabbed")",
      R"({"quote":"she said \"hi\"","backslash":"a\\b"})",
      R"("unicode: é 中文 😀 \u00e9 \ud83d\ude00")",
      "{\n  \"pretty\": [1, 2,\n    3],\n  \"nested\": {\"a\": null}\n}",
      "\"" + std::string(big.size() - 2, 'y') + "\"",
  };
  StoreOptions limits;
  for (std::size_t i = 0; i < payloads.size(); ++i) {
    auto m = message(payloads[i], i % 2 ? std::optional<std::string>("key \"with\"\nnewline") : std::nullopt);
    CHECK(append_ok(p, m) == i);
  }
  const auto lines = read_all(p);
  REQUIRE(lines.size() == payloads.size());
  for (std::size_t i = 0; i < payloads.size(); ++i) {
    const json stored = json::parse(lines[i]);
    CHECK(stored["offset"] == i);
    CHECK(stored["timestamp"].is_number_integer());
    CHECK(stored["payload"] == json::parse(payloads[i]));
    if (i % 2)
      CHECK(stored["key"] == "key \"with\"\nnewline");
    else
      CHECK_FALSE(stored.contains("key"));
  }
  // One line per message on disk, and the file is exactly what read() returns.
  const auto on_disk = split_lines(file_contents(LogStore::log_path(dir.path(), "events", 0)));
  CHECK(on_disk == lines);
}

TEST_CASE("InvalidPayloadsAreRejected") {
  for (const char* bad : {"", "{", "[1,]", "1 2", "{\"a\":1}}", "nul", "\"unterminated"}) {
    CAPTURE(bad);
    auto payload = Payload::parse(bad);
    REQUIRE_FALSE(payload.ok());
    CHECK(payload.status().code() == ErrorCode::kInvalidArgument);
  }
}

TEST_CASE("PayloadAboveTheLimitIsRejectedAndNothingIsWritten") {
  TempDir dir;
  StoreOptions options;
  options.data_dir = dir.path();
  options.fsync = FsyncMode::kNever;
  options.max_payload_bytes = 16;
  auto store = LogStore::open(options);
  REQUIRE(store.ok());
  Partition& p = open_partition(**store);
  std::vector<Message> batch = {message("1"), message("\"this payload is far too long\"")};
  auto result = p.append(batch);
  REQUIRE_FALSE(result.ok());
  CHECK(result.status().code() == ErrorCode::kPayloadTooLarge);
  CHECK(p.next_offset() == 0);
  CHECK(p.append(std::span<const Message>()).status().code() == ErrorCode::kInvalidArgument);
  CHECK(append_ok(p, message("\"short\"")) == 0);
}

TEST_CASE("OffsetsAreContiguousPerPartitionAndBatchesGetConsecutiveOffsets") {
  TempDir dir;
  auto store = open_store(dir.path());
  Partition& a = open_partition(*store, "events", 0);
  Partition& b = open_partition(*store, "events", 1);
  CHECK(append_ok(a, message("1")) == 0);
  std::vector<Message> batch(5, message("{\"b\":1}"));
  auto first = a.append(batch);
  REQUIRE(first.ok());
  CHECK(*first == 1);
  CHECK(append_ok(a, message("2")) == 6);
  CHECK(append_ok(b, message("3")) == 0);
  CHECK(a.next_offset() == 7);
  CHECK(b.next_offset() == 1);
  const auto lines = read_all(a);
  REQUIRE(lines.size() == 7);
  for (std::size_t i = 1; i <= 5; ++i) CHECK(json::parse(lines[i])["batch_last"] == 5);
  CHECK_FALSE(json::parse(lines[0]).contains("batch_last"));
}

TEST_CASE("ReadHonoursMaxMessagesAndMaxBytesAndReturnsAnOversizedFirstMessage") {
  TempDir dir;
  auto store = open_store(dir.path());
  Partition& p = open_partition(*store);
  for (int i = 0; i < 100; ++i) append_ok(p, message("{\"n\":" + std::to_string(i) + "}"));
  auto batch = p.read(10, 7, 1 << 20);
  REQUIRE(batch.ok());
  REQUIRE(batch->size() == 7);
  CHECK((*batch)[0].offset == 10);
  CHECK(batch->next_offset() == 17);
  CHECK(json::parse((*batch)[6].line)["payload"]["n"] == 16);

  auto one = p.read(20, 100, 1);  // smaller than any line: still one message
  REQUIRE(one.ok());
  CHECK(one->size() == 1);
  auto some = p.read(0, 100, 3 * (*batch)[0].line.size());
  REQUIRE(some.ok());
  CHECK(some->size() == 3);

  auto at_end = p.read(100, 10, 1000);
  REQUIRE(at_end.ok());
  CHECK(at_end->empty());
  CHECK(at_end->next_offset() == 100);
  CHECK(p.read(101, 10, 1000).status().code() == ErrorCode::kNotFound);
}

TEST_CASE("ReadsSeekThroughTheIndexAcrossALargeLog") {
  TempDir dir;
  auto store = open_store(dir.path());
  Partition& p = open_partition(*store);
  const int count = 20000;
  std::vector<Message> batch;
  for (int i = 0; i < count; ++i) {
    batch.push_back(
        message("{\"n\":" + std::to_string(i) + ",\"pad\":\"" + std::string(i % 97, 'p') + "\"}"));
    if (batch.size() == 37 || i == count - 1) {
      REQUIRE(p.append(batch).ok());
      batch.clear();
    }
  }
  for (int offset : {0, 1, 36, 37, 5000, 12345, 19999}) {
    auto read = p.read(offset, 2, 1 << 20);
    REQUIRE(read.ok());
    REQUIRE_FALSE(read->empty());
    CHECK(json::parse((*read)[0].line)["payload"]["n"] == offset);
  }
  // A reader that starts in the middle of a batch gets the rest of it.
  auto mid = p.read(40, 1000, 1 << 20);
  REQUIRE(mid.ok());
  CHECK(mid->size() == 1000);
}

TEST_CASE("WaitBeyondWakesOnAppendAndTimesOutOtherwise") {
  TempDir dir;
  auto store = open_store(dir.path());
  Partition& p = open_partition(*store);
  CHECK(p.wait_beyond(0, std::chrono::milliseconds(10)) == 0);  // nothing there: times out
  std::thread producer([&] { append_ok(p, message("1")); });
  CHECK(p.wait_beyond(0, std::chrono::seconds(10)) == 1);
  producer.join();
  CHECK(p.wait_beyond(0, std::chrono::seconds(10)) == 1);  // already there: returns at once
}

TEST_CASE("TopicNamesThatCouldEscapeTheDataDirectoryAreRejected") {
  TempDir dir;
  auto store = open_store(dir.path());
  for (const char* bad : {"..", ".", "../x", "a/b", "", " x", "x y", "/etc", ".hidden", "-dash"}) {
    CAPTURE(bad);
    CHECK(store->partition(bad, 0).status().code() == ErrorCode::kInvalidArgument);
  }
  CHECK(store->partition(std::string(128, 'a'), 0).ok());
  CHECK_FALSE(store->partition(std::string(129, 'a'), 0).ok());
}

TEST_CASE("StoreListsTopicsAndPartitionsFoundOnDisk") {
  TempDir dir;
  {
    auto store = open_store(dir.path());
    open_partition(*store, "orders", 0);
    open_partition(*store, "orders", 3);
    open_partition(*store, "events-dlq", 1);
  }
  auto store = open_store(dir.path());
  CHECK(*store->topics_on_disk() == std::vector<std::string>{"events-dlq", "orders"});
  CHECK(*store->partitions_on_disk("orders") == 4);
  CHECK(*store->partitions_on_disk("missing") == 0);
}

TEST_CASE("OpeningAnUnwritableDataDirFailsWithItsName") {
  TempDir dir;
  StoreOptions options;
  options.data_dir = dir / "file";
  { std::ofstream(options.data_dir) << "not a directory"; }
  auto store = LogStore::open(options);
  REQUIRE_FALSE(store.ok());
  CHECK(store.status().message().find(options.data_dir) != std::string::npos);
}

TEST_CASE("KeysThatAreNotValidUtf8AreRefusedSoTheLogSurvivesRestart") {
  TempDir dir;
  {
    auto store = open_store(dir.path());
    Partition& p = open_partition(*store);
    append_ok(p, message("1"));
    auto bad = p.append(message("2", std::string("\xff\xfe")));
    REQUIRE_FALSE(bad.ok());
    CHECK(bad.status().code() == ErrorCode::kInvalidArgument);
    CHECK(p.append(message("2", std::string(64 * 1024 + 1, 'k'))).status().code() ==
          ErrorCode::kInvalidArgument);
    append_ok(p, message("3", std::string("ключ ✓")));
  }
  auto store = open_store(dir.path());
  Partition& p = open_partition(*store);
  CHECK(p.next_offset() == 2);
  CHECK(json::parse(read_all(p)[1])["key"] == "ключ ✓");
}

TEST_CASE("APayloadWithARawNewlineIsRefused") {
  TempDir dir;
  auto store = open_store(dir.path());
  Partition& p = open_partition(*store);
  const Message m{mq::detail::PayloadInternal::from_minified_json("[1,\n2]"), std::nullopt};
  CHECK(p.append(m).status().code() == ErrorCode::kInvalidArgument);
  CHECK(p.next_offset() == 0);
}

TEST_CASE("PayloadNumbersKeepTheDigitsTheyWereProducedWith") {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"123456789012345678901234567890", "123456789012345678901234567890"},
      {"3.14159265358979323846", "3.14159265358979323846"},
      {"-0", "-0"},
      {"1e2", "1e2"},
      {"{ \"n\" : [ 1.50 , 2E-3 ] }", "{\"n\":[1.50,2E-3]}"},
      {"\" keep  spaces \"", "\" keep  spaces \""},
  };
  for (const auto& entry : cases) {
    const auto& produced = entry.first;  // not a structured binding: CAPTURE captures it
    const auto& stored = entry.second;
    CAPTURE(produced);
    auto payload = Payload::parse(produced);
    REQUIRE_MESSAGE(payload.ok(), payload.status().to_string());
    CHECK(payload->json() == stored);
  }
  CHECK_FALSE(Payload::parse("01").ok());
  CHECK_FALSE(Payload::parse("[1, 2").ok());
}

TEST_CASE("HeadersAreStoredReadBackAfterARestartAndBadOnesAreRefusedWithNothingStored") {
  TempDir dir;
  {
    auto store = open_store(dir.path());
    Partition& p = open_partition(*store);
    Message m = message(R"({"n":1})");
    m.headers = {{"a", "1"}, {"content-type", "application/json"}};
    REQUIRE(p.append(std::vector<Message>{m}).ok());
    const auto refuse = [&](std::vector<std::pair<std::string, std::string>> headers) {
      Message bad = message("2");
      bad.headers = std::move(headers);
      auto appended = p.append(std::vector<Message>{message("3"), bad});
      REQUIRE_FALSE(appended.ok());
      CHECK(appended.status().code() == ErrorCode::kInvalidArgument);
      CHECK(appended.status().message().find("headers") != std::string::npos);
    };
    refuse({{"", "v"}});
    refuse({{"bad name", "v"}});
    refuse({{std::string(129, 'n'), "v"}});
    refuse({{"dup", "1"}, {"dup", "2"}});
    refuse({{"v", std::string(4097, 'x')}});
    refuse({{"v", "\xff"}});
    std::vector<std::pair<std::string, std::string>> many;
    for (int i = 0; i < 33; ++i) many.emplace_back("h" + std::to_string(i), "v");
    refuse(many);
    CHECK(p.next_offset() == 1);  // nothing of a refused batch was stored
  }
  auto store = open_store(dir.path());
  Partition& p = open_partition(*store);
  const auto lines = read_all(p);
  REQUIRE(lines.size() == 1);
  const auto line = nlohmann::json::parse(lines[0]);
  CHECK(line["headers"] == nlohmann::json({{"a", "1"}, {"content-type", "application/json"}}));
}

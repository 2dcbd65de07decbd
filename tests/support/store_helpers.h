// Small conveniences shared by the storage tests.
#pragma once

#include <doctest/doctest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "mq/mq.h"

namespace mq::testing {

inline Message message(std::string_view payload_json, std::optional<std::string> key = std::nullopt) {
  auto payload = Payload::parse(payload_json);
  REQUIRE_MESSAGE(payload.ok(), payload.status().to_string());
  return Message{*payload, std::move(key)};
}

inline std::unique_ptr<LogStore> open_store(const std::string& dir, FsyncMode fsync = FsyncMode::kNever,
                                            std::shared_ptr<FileSystem> fs = nullptr) {
  StoreOptions options;
  options.data_dir = dir;
  options.fsync = fsync;
  options.file_system = std::move(fs);
  auto store = LogStore::open(options);
  REQUIRE_MESSAGE(store.ok(), store.status().to_string());
  return std::move(store.value());
}

inline Partition& open_partition(LogStore& store, const std::string& topic = "events",
                                 std::uint32_t index = 0) {
  auto partition = store.partition(topic, index);
  REQUIRE_MESSAGE(partition.ok(), partition.status().to_string());
  return **partition;
}

inline std::uint64_t append_ok(Partition& partition, const Message& message) {
  auto offset = partition.append(message);
  REQUIRE_MESSAGE(offset.ok(), offset.status().to_string());
  return *offset;
}

// Every stored line from `offset` to the end.
inline std::vector<std::string> read_all(const Partition& partition, std::uint64_t offset = 0) {
  std::vector<std::string> lines;
  while (true) {
    auto batch = partition.read(offset, 1000, 1 << 20);
    REQUIRE_MESSAGE(batch.ok(), batch.status().to_string());
    if (batch->empty()) return lines;
    std::uint64_t expected = offset;
    for (const auto& m : *batch) {
      CHECK(m.offset == expected++);
      lines.emplace_back(m.line);
    }
    offset = batch->next_offset();
  }
}

inline std::string file_contents(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

inline std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  for (std::size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1) {
    lines.push_back(text.substr(start, nl - start));
  }
  return lines;
}

}  // namespace mq::testing

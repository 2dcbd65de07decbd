// What the fuzz targets share: a check that stops the run with a message (libFuzzer then saves the
// input as a crash), and an in-memory mq::File for recovery.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "mq/file_system.h"

// FUZZ_CHECK(condition, what): a broken invariant is a crash, with the invariant named on stderr.
#define FUZZ_CHECK(condition, what)                                                                     \
  do {                                                                                                  \
    if (!(condition)) {                                                                                 \
      std::fprintf(stderr, "%s:%d: invariant broken: %s (%s)\n", __FILE__, __LINE__, #condition, what); \
      std::abort();                                                                                     \
    }                                                                                                   \
  } while (0)

namespace mq::fuzzing {

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// A file held in memory: appends, reads at positions, truncation. Never fails.
class MemoryFile : public File {
 public:
  explicit MemoryFile(std::string bytes = {}) : bytes_(std::move(bytes)) {}
  Status append(std::string_view data) override {
    bytes_.append(data);
    return {};
  }
  Status sync() override {
    ++syncs_;
    return {};
  }
  Status read(std::uint64_t position, std::size_t length, std::string& out) const override {
    out.clear();
    if (position < bytes_.size()) out = bytes_.substr(static_cast<std::size_t>(position), length);
    return {};
  }
  Result<std::uint64_t> size() const override { return static_cast<std::uint64_t>(bytes_.size()); }
  // Recovery only ever cuts: growing a file through truncate() is a bug here.
  Status truncate(std::uint64_t length) override {
    FUZZ_CHECK(length <= bytes_.size(), "truncate() past the end of the file");
    bytes_.resize(static_cast<std::size_t>(length));
    return {};
  }

  const std::string& bytes() const { return bytes_; }
  int syncs() const { return syncs_; }

 private:
  std::string bytes_;
  int syncs_ = 0;
};

}  // namespace mq::fuzzing

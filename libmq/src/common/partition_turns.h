// The one policy for a message that names neither a partition nor a key: the partitions take
// turns, `run` consecutive calls each. The Broker (and so mqd) uses runs of 1, as the HTTP API
// promises ("partitions owned by this broker take turns"); the Queue clients use longer runs, like
// Kafka's sticky partitioner, so that concurrent producers append to one partition at a time and
// share its group commit (one fdatasync for all of them) instead of each paying for its own.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

namespace mq::detail {

class PartitionTurns {
 public:
  explicit PartitionTurns(std::uint64_t run) : run_(run == 0 ? 1 : run) {}

  // An index in [0, count) for the next call producing to `topic` (each topic has its own turns).
  // count must be at least 1. Thread-safe.
  std::uint32_t next(std::string_view topic, std::uint32_t count) {
    std::lock_guard lock(mutex_);
    auto it = calls_.find(topic);
    if (it == calls_.end()) it = calls_.emplace(std::string(topic), 0).first;
    const std::uint64_t call = it->second++;
    return static_cast<std::uint32_t>((call / run_) % count);
  }

 private:
  const std::uint64_t run_;
  std::mutex mutex_;
  std::map<std::string, std::uint64_t, std::less<>> calls_;  // GUARDED_BY(mutex_)
};

}  // namespace mq::detail

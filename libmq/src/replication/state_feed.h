// A leader's group-state records of one partition for its followers (libmq/docs/replication.md
// section 7): numbered 1, 2, ... within the leader's epoch, the most recent kept in memory so that a
// follower gets only what it lacks; one that is further behind (or follows another epoch) gets a
// snapshot of every group instead. Nothing here is on disk: each replica's journals are.
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <vector>

#include "groups/leadership.h"

namespace mq::replication {

using mq::detail::GroupStateRecord;

// Thread-safe.
class StateFeed {
 public:
  // Keeps the newest `capacity_bytes` of records (at least the newest one).
  explicit StateFeed(std::size_t capacity_bytes = std::size_t{8} << 20) : capacity_bytes_(capacity_bytes) {}

  // Adds a record; returns its version.
  std::uint64_t publish(GroupStateRecord record);
  // The newest version (0 before the first record).
  std::uint64_t head() const;
  // The records after `version`, up to about `max_bytes` (at least one when there is one), or
  // nullopt when some of them are no longer kept (or `version` is beyond the head).
  std::optional<std::vector<GroupStateRecord>> read_after(std::uint64_t version, std::size_t max_bytes) const;

 private:
  const std::size_t capacity_bytes_;
  mutable std::mutex mutex_;
  std::deque<GroupStateRecord> records_;  // GUARDED_BY(mutex_): versions first_ .. head_
  std::uint64_t first_ = 1;               // GUARDED_BY(mutex_)
  std::uint64_t head_ = 0;                // GUARDED_BY(mutex_)
  std::size_t bytes_ = 0;                 // GUARDED_BY(mutex_)
};

}  // namespace mq::replication

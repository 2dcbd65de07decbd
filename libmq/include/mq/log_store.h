// The data directory: opens, recovers and owns every partition log, and runs the background sync
// of FsyncMode::kInterval.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "mq/export.h"
#include "mq/options.h"
#include "mq/partition.h"
#include "mq/status.h"

namespace mq {

// Thread-safe. Partitions it hands out live as long as the store.
class MQ_EXPORT LogStore {
 public:
  // Creates `options.data_dir` when missing and checks it is writable (kIOError naming it if not).
  static Result<std::unique_ptr<LogStore>> open(StoreOptions options);

  // Syncs every partition (whatever the FsyncMode) and closes the files.
  ~LogStore();
  LogStore(const LogStore&) = delete;
  LogStore& operator=(const LogStore&) = delete;

  // The partition `index` of `topic`, opened and recovered on first use (creating an empty log).
  // kInvalidArgument for an invalid topic name; kCorruption or kIOError when the log cannot be
  // recovered.
  Result<Partition*> partition(std::string_view topic, std::uint32_t index);
  // The same, with the topic's own settings (its segment_bytes) when it opens the partition.
  Result<Partition*> partition(std::string_view topic, std::uint32_t index, const TopicSettings& settings);

  // The number of partitions `topic` has on disk: one more than the highest partition-<N>.log (0
  // without a directory). kIOError when the directory exists but cannot be read: callers that guard
  // data on disk must not mistake that for "nothing there".
  Result<std::uint32_t> partitions_on_disk(std::string_view topic) const;
  // The topics that have a directory with at least one partition log, sorted; kIOError as above.
  Result<std::vector<std::string>> topics_on_disk() const;

  // Syncs every open partition now.
  Status sync_all();
  // Wakes every reader blocked in Partition::wait_beyond, and makes later waits return at once
  // (for shutdown).
  void interrupt_waiters();

  const StoreOptions& options() const;

  // The path of a partition's log, as the on-disk layout defines it.
  static std::string log_path(const std::string& data_dir, std::string_view topic, std::uint32_t index);

 private:
  struct State;
  explicit LogStore(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace mq

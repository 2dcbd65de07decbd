// A partition's log as a chain of segments (libmq/docs/log_format.md "Segments"): the active
// segment takes appends and rolls into a sealed one at StoreOptions::segment_bytes; reads, waits and
// offsets see one log across them. Each segment is a PartitionLog.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mq/file_system.h"
#include "mq/message.h"
#include "mq/options.h"
#include "mq/partition.h"
#include "storage/append_listeners.h"
#include "storage/copied_lines.h"
#include "storage/dedup_window.h"
#include "storage/partition_log.h"

namespace mq::detail {

// "<stem>.<first offset, zero-padded to 20 digits>": the stem of a sealed segment's files.
std::string sealed_stem(std::string_view stem, std::uint64_t first_offset);
// The first offset of a sealed segment's file "<stem>.<20 digits><suffix>"; nullopt for any other name.
std::optional<std::uint64_t> sealed_first_offset(std::string_view file_name, std::string_view stem,
                                                 std::string_view suffix);

// Thread-safe. Appends run concurrently (they share the active segment's group commit) and a roll
// waits for the appends in flight; reads and waits run beside both.
class SegmentedLog {
 public:
  // Opens the partition's segments in <dir> (files <stem>.log, <stem>.<first>.log, ...), finishing
  // or undoing a roll that a crash interrupted. Reads the newest sealed segment's and the active
  // segment's tails only; older segments are opened when a read reaches them.
  static Result<std::unique_ptr<SegmentedLog>> open(FileSystem& fs, const StoreOptions& options,
                                                    std::string dir, std::string stem, std::string topic,
                                                    std::uint32_t index);
  ~SegmentedLog();
  SegmentedLog(const SegmentedLog&) = delete;
  SegmentedLog& operator=(const SegmentedLog&) = delete;

  const std::string& topic() const { return topic_; }
  std::uint32_t index() const { return index_; }

  // PartitionLog::append on the active segment, which is rolled first when it reached segment_bytes.
  Result<std::uint64_t> append(std::span<const Message> batch, AppendResult* result = nullptr);
  // Partition::append_copied: the lines, checked, on the active segment (rolled first when full).
  Result<std::uint64_t> append_copied(const CopiedLines& copied);
  // Partition::truncate_to and Partition::reset_to.
  Status truncate_to(std::uint64_t offset);
  Status reset_to(std::uint64_t offset);
  // Reads from the segment holding `offset` (a batch never spans two segments: read on from
  // next_offset()). kNotFound beyond the end and below the log start.
  Result<ReadBatch> read(std::uint64_t offset, std::size_t max_messages, std::size_t max_bytes) const;
  // The end readers see: the log's end, or the read limit when one is set and lower.
  std::uint64_t next_offset() const;
  // Partition::set_read_limit, log_end_offset, read_past_limit, wait_beyond_end.
  void set_read_limit(std::optional<std::uint64_t> limit);
  std::uint64_t log_end_offset() const;
  Result<ReadBatch> read_past_limit(std::uint64_t offset, std::size_t max_messages,
                                    std::size_t max_bytes) const;
  std::uint64_t wait_beyond_end(std::uint64_t offset, std::chrono::milliseconds timeout) const;
  // The first offset still stored (the oldest segment's first offset).
  std::uint64_t log_start_offset() const;
  std::size_t segment_count() const;
  // Bytes of every segment (sealed ones as sealed, the active one as written).
  std::uint64_t log_bytes() const;
  // The active segment's positions, shifted by the bytes of the sealed segments before it.
  LogPositions positions() const;
  std::uint64_t wait_beyond(std::uint64_t offset, std::chrono::milliseconds timeout) const;
  void interrupt_waiters();
  bool waits_interrupted_flag() const;
  // The read limit, never below the log start (kNoLimit: none).
  std::uint64_t effective_limit() const;
  // What opening the active segment found and repaired.
  const RecoveryReport& recovery_report() const { return report_; }
  Status sync(bool only_if_behind = false);
  // Partition::offset_for_time.
  Result<std::uint64_t> offset_for_time(std::int64_t timestamp_ms) const;
  // Partition::apply_retention.
  Result<std::uint64_t> apply_retention(const RetentionRule& rule);

  std::uint64_t add_append_listener(std::function<void()> on_append);
  void remove_append_listener(std::uint64_t id);

 private:
  struct Sealed {
    std::uint64_t bytes = 0;
    // Its largest timestamp, kept once known (retention by age and lookups by time ask for it).
    mutable std::optional<std::int64_t> largest_timestamp;  // GUARDED_BY(segments_mutex_)
    // Opened when a read first reaches the segment (or kept from when it was the active one).
    mutable std::shared_ptr<PartitionLog> log;  // GUARDED_BY(segments_mutex_)
  };

  SegmentedLog(FileSystem& fs, const StoreOptions& options, std::string dir, std::string stem,
               std::string topic, std::uint32_t index);
  // append() and append_copied(): `append_to` on the active segment, rolling it first when full.
  Result<std::uint64_t> append_rolling(const std::function<Result<std::uint64_t>(PartitionLog&)>& append_to);
  // truncate_to() with roll_mutex_ and retention_mutex_ held.
  Status truncate_locked(std::uint64_t offset);
  // With roll_mutex_ held exclusively: seals the active segment and starts a new one.
  Status roll_locked();
  // With roll_mutex_ held exclusively: starts the active segment after sealed_pending_.
  Status start_active_locked();
  // With segments_mutex_ held exclusively: `first` was just opened; returns the least recently
  // opened sealed segments beyond kMaxOpenSealedSegments, for the caller to close once it released
  // segments_mutex_ (closing syncs an index: appends must not wait for that).
  std::vector<std::shared_ptr<PartitionLog>> keep_open_locked(std::uint64_t first) const;
  static constexpr std::size_t kMaxOpenSealedSegments = 8;
  // With meta_mutex_ held.
  Status write_meta(std::uint64_t log_start, std::uint64_t active_first);
  // The largest timestamp in the sealed segment starting at `first` (opened if not known yet).
  Result<std::int64_t> largest_timestamp(std::uint64_t first) const;
  Result<std::shared_ptr<PartitionLog>> open_segment(const std::string& stem,
                                                     std::uint64_t first_offset) const;
  // The segment holding `offset`: the active one, or a sealed one (opened if needed).
  Result<std::shared_ptr<PartitionLog>> segment_for(std::uint64_t offset) const;
  std::shared_ptr<PartitionLog> active() const;
  // Makes `segment` the one appends go to: listened to, deduplicating with dedup_.
  void attach_listener(PartitionLog& segment);
  // Before the first append with a dedup id, and before the first copy: rebuild_dedup_window()
  // once, with roll_mutex_ held exclusively.
  Status ensure_dedup_window();
  // With roll_mutex_ held exclusively, before the first append with a dedup id: remembers the
  // dedup ids of the last dedup_window of log.
  Status rebuild_dedup_window();

  FileSystem& fs_;
  const StoreOptions options_;
  const std::string dir_;
  const std::string stem_;
  const std::string topic_;
  const std::uint32_t index_;
  RecoveryReport report_;

  // Shared by appends, exclusive for a roll (which must find no append in flight).
  std::shared_mutex roll_mutex_;
  // GUARDED_BY(roll_mutex_): what the last roll evicted from the open set, for append() to close
  // after it released roll_mutex_.
  std::vector<std::shared_ptr<PartitionLog>> evicted_by_roll_;
  // One retention run at a time.
  std::mutex retention_mutex_;
  // Writes of partition-N.meta, each with the log start and active start of its moment.
  // Also held while retention removes a segment's files.
  std::mutex meta_mutex_;
  std::uint64_t removed_ = 0;  // GUARDED_BY(meta_mutex_): segments retention removed
  std::uint64_t removed_synced_ =
      0;  // GUARDED_BY(meta_mutex_): of those, how many a directory sync made durable
  // Held while a sealed segment is opened (which may create its files) and while retention deletes
  // one, so that a deleted segment is never recreated empty.
  mutable std::mutex open_mutex_;
  // The segment list; taken briefly, never while waiting on a segment.
  mutable std::shared_mutex segments_mutex_;
  std::shared_ptr<PartitionLog> active_;    // GUARDED_BY(segments_mutex_)
  std::map<std::uint64_t, Sealed> sealed_;  // GUARDED_BY(segments_mutex_): by first offset
  std::uint64_t sealed_bytes_ = 0;          // GUARDED_BY(segments_mutex_)
  mutable std::deque<std::uint64_t>
      opened_;                   // GUARDED_BY(segments_mutex_): open sealed segments, oldest first
  std::uint64_t log_start_ = 0;  // GUARDED_BY(segments_mutex_)
  Status failure_;               // GUARDED_BY(roll_mutex_): a roll left no active segment
  struct Sealing {
    std::shared_ptr<PartitionLog> old;
    std::uint64_t first = 0;
    std::uint64_t next = 0;
  };
  std::optional<Sealing> sealed_pending_;  // GUARDED_BY(roll_mutex_): sealed, its successor not started yet
  bool waits_interrupted_ = false;         // GUARDED_BY(segments_mutex_)

  // The read limit (none: kNoLimit); raised or cleared, its waiters are woken.
  static constexpr std::uint64_t kNoLimit = std::numeric_limits<std::uint64_t>::max();
  std::atomic<std::uint64_t> read_limit_{kNoLimit};
  mutable std::mutex limit_mutex_;
  mutable std::condition_variable limit_changed_;

  AppendListeners listeners_;
  // The partition's deduplication window (nullptr when StoreOptions::dedup_window is 0), used by
  // the active segment under its append lock.
  const std::unique_ptr<DedupWindow> dedup_;
  std::atomic<bool> dedup_rebuilt_{false};
  std::uint64_t active_listener_ = 0;  // GUARDED_BY(segments_mutex_): ours on the active segment
};

}  // namespace mq::detail

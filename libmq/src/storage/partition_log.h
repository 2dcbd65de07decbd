// The implementation behind mq::Partition: one log file, its sparse index, the group commit that
// writes and syncs it, and reads by offset.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "mq/file_system.h"
#include "mq/message.h"
#include "mq/options.h"
#include "mq/partition.h"
#include "storage/append_listeners.h"
#include "storage/copied_lines.h"
#include "storage/dedup_window.h"
#include "storage/log_recovery.h"
#include "storage/offset_index.h"

namespace mq {

// Thread-safe; see mq::Partition for the contract.
//
// Appenders format their lines into pending_ under mutex_. With kNever and kInterval the appender
// writes them at once, still under the lock. With kAlways they are group-committed: whoever finds
// no writer active becomes the writer, takes everything pending, writes it with one append and
// syncs it with one fdatasync outside the lock, then publishes the new positions; appenders that
// arrive meanwhile queue up for the next round, so concurrent appenders share writes and syncs.
// sync() (the kInterval thread, close) runs beside writes.
class PartitionLog {
 public:
  // Opens (creating when missing) the log <dir>/<stem>.log and its index <dir>/<stem>.index, and
  // recovers them. `dir` and its missing parents are created; new directory entries are synced
  // unless options.fsync is kNever. `topic` and `index` only label the log in messages.
  // `first_offset`: the offset of the log's first message (a segment that does not start the
  // partition, libmq/docs/log_format.md "Segments"); an empty log's first append gets it.
  static Result<std::unique_ptr<PartitionLog>> open(FileSystem& fs, const StoreOptions& options,
                                                    const std::string& dir, const std::string& stem,
                                                    std::string topic, std::uint32_t index,
                                                    std::uint64_t first_offset = 0);

  PartitionLog(std::string topic, std::uint32_t index, const StoreOptions& options, std::unique_ptr<File> log,
               std::unique_ptr<File> index_file, detail::RecoveredLog recovered);
  ~PartitionLog();

  const std::string& topic() const { return topic_; }
  std::uint32_t index() const { return index_; }
  // The offset of this log's first message (also when it has none yet).
  std::uint64_t first_offset() const { return first_offset_; }

  // Appends `batch` (see mq::Partition::append_messages) and returns the offset of its first
  // message (of the first one stored, or the first duplicate's when none was); `result`, when
  // given, learns every message's offset and which were duplicates.
  Result<std::uint64_t> append(std::span<const Message> batch, AppendResult* result = nullptr);
  // Appends lines of another replica's log as they are (checked by detail::check_copied_lines),
  // durably per FSYNC like append(); kConflict when they do not start at the log's next offset.
  Result<std::uint64_t> append_copied(const detail::CopiedLines& copied);
  // Appends deduplicate with `window` (nullptr: not at all); set while no append runs.
  void deduplicate_with(detail::DedupWindow* window);
  // Ids the log holds, found again (SegmentedLog::rebuild_dedup_window), in offset order.
  struct StoredDedupId {
    std::string id;
    std::uint64_t offset;
    std::int64_t timestamp_ms;
  };
  void remember_dedup_ids(const std::vector<StoredDedupId>& ids);
  std::uint64_t add_append_listener(std::function<void()> on_append);
  void remove_append_listener(std::uint64_t id);
  Result<ReadBatch> read(std::uint64_t offset, std::size_t max_messages, std::size_t max_bytes) const;
  // Where the batch holding `offset` starts: its first offset and byte position in the log file
  // (for next_offset(): the end). One scan from the index entry below it.
  struct LineStart {
    std::uint64_t offset = 0;
    std::uint64_t position = 0;
  };
  Result<LineStart> batch_start_of(std::uint64_t offset) const;
  std::uint64_t next_offset() const;
  std::uint64_t wait_beyond(std::uint64_t offset, std::chrono::milliseconds timeout) const;
  void interrupt_waiters();
  // Retention is deleting this segment's files: closing it syncs nothing.
  void mark_deleted() { deleted_ = true; }
  LogPositions positions() const;
  // The largest timestamp of this log's messages (kNoTimestamp when it has none). Appends a full
  // disk made fail may still count: it is an upper bound, exact otherwise.
  std::int64_t largest_timestamp() const;
  // The first offset of this log whose message has a timestamp of at least `timestamp_ms`, found
  // with the index (libmq/docs/log_format.md "The time index"); when no message has, the end of
  // what it looked at (later appends are newer). An index contradicted by the log costs a scan of
  // the log, never a wrong answer.
  Result<std::uint64_t> offset_for_time(std::int64_t timestamp_ms) const;
  const RecoveryReport& recovery_report() const { return report_; }
  // Syncs what is written; with only_if_behind, skips the sync when nothing new was written.
  Status sync(bool only_if_behind = false);
  // For a segment being sealed (no append may run): syncs, then cuts the preallocated zeros beyond
  // the records and syncs that too, so that a sealed segment's file size is its records' size.
  Status seal();

 private:
  // Where a group of appended bytes ends: a byte position and the offset after it.
  struct Mark {
    std::uint64_t position = 0;
    std::uint64_t offset = 0;
  };

  Result<std::uint64_t> append_durably(std::span<const Message> batch, AppendResult* result);
  // With `lock` held and the append's bytes in pending_: writes them (and syncs, with kAlways,
  // sharing the round with other appenders), returning `first` once they are durable per FSYNC.
  Result<std::uint64_t> finish_append_locked(std::unique_lock<std::mutex>& lock, std::uint64_t first,
                                             std::uint64_t epoch);
  // With mutex_ held: which messages of `batch` are duplicates (fills `result`), and the rest, to
  // store, in `kept` (left empty when every message is to be stored).
  void deduplicate_locked(std::span<const Message> batch, std::int64_t now_ms, AppendResult& result,
                          std::vector<Message>& kept);
  // Appends `data` to the log and `entries` to the index.
  // Writes `data` at `position` (the written position) and the index `entries`, preallocating ahead.
  Status write_out(std::uint64_t position, std::string_view data,
                   const std::vector<detail::IndexEntry>& entries);
  // kNever/kInterval: writes everything pending without releasing mutex_.
  void write_pending_locked();
  // kAlways: writes and syncs everything pending with `lock` released; the caller holds `lock` and
  // no writer is active. Publishes the result or records the error.
  void write_and_sync_pending(std::unique_lock<std::mutex>& lock);
  void publish(Mark written, bool synced, const std::vector<detail::IndexEntry>& new_entries);
  // kAlways, before a round takes what is pending: waits briefly for more appenders (see .cc).
  void gather_locked(std::unique_lock<std::mutex>& lock);
  // The error for an append ending at `end_position` once the partition failed.
  Status failure_for_locked(std::uint64_t end_position) const;
  // Records a write or sync failure; every later append fails with it (kStorageFailed).
  void fail(const Status& status, Mark round_end);
  // A full disk: cuts the log back to what was written before `from` and drops every append not yet
  // written (their offsets followed the failed ones), which then fail with `status`. False when
  // the cut itself failed (then the partition is failed instead).
  bool roll_back_locked(const Status& status);
  Mark visible_locked() const { return options_.fsync == FsyncMode::kAlways ? synced_ : written_; }
  Status check_payloads(std::span<const Message> batch) const;

  const std::string topic_;
  const std::uint32_t index_;
  const StoreOptions options_;
  const std::unique_ptr<File> log_;         // appended and synced only by the active writer
  const std::unique_ptr<File> index_file_;  // likewise
  const RecoveryReport report_;
  const std::uint64_t first_offset_;

  mutable std::mutex mutex_;
  std::condition_variable round_done_[2];       // group commit round k ended: round_done_[k % 2]
  std::condition_variable synced_cv_;           // a sync() finished
  mutable std::condition_variable visible_cv_;  // more messages are visible (readers wait)
  bool writer_active_ = false;                  // GUARDED_BY(mutex_): a group commit is under way
  std::uint64_t round_ = 0;                     // GUARDED_BY(mutex_): group commit rounds started
  std::uint64_t round_target_ = 0;              // GUARDED_BY(mutex_): where the latest round syncs to
  std::size_t pending_appends_ = 0;             // GUARDED_BY(mutex_): append calls in pending_
  std::size_t expected_appends_ = 0;            // GUARDED_BY(mutex_): appenders seen around the last round
  std::chrono::steady_clock::duration last_sync_time_{};  // GUARDED_BY(mutex_)
  bool gathering_ = false;                           // GUARDED_BY(mutex_): a leader waits in gather_locked
  std::condition_variable gathered_;                 // an append arrived while gathering
  bool syncing_ = false;                             // GUARDED_BY(mutex_): a sync() is under way
  std::string pending_;                              // GUARDED_BY(mutex_): formatted, not yet written
  std::string spare_;                                // GUARDED_BY(mutex_): reused write buffer
  std::string format_spare_;                         // GUARDED_BY(mutex_): reused formatting buffer
  std::vector<detail::IndexEntry> pending_entries_;  // GUARDED_BY(mutex_)
  Mark appended_;                                    // GUARDED_BY(mutex_)
  Mark written_;                                     // GUARDED_BY(mutex_)
  Mark synced_;                                      // GUARDED_BY(mutex_)
  std::uint64_t last_indexed_position_ = 0;          // GUARDED_BY(mutex_)
  std::int64_t largest_timestamp_ = detail::kNoTimestamp;  // GUARDED_BY(mutex_): of every message appended
  std::vector<detail::IndexEntry> entries_;  // GUARDED_BY(mutex_): starts with {first_offset_, 0}
  Status error_;                             // GUARDED_BY(mutex_): sticky once a write fails
  std::uint64_t failed_round_end_ = 0;    // GUARDED_BY(mutex_): appends up to here were in the failed round
  std::uint64_t epoch_ = 0;               // GUARDED_BY(mutex_): bumped when unwritten appends are dropped
  Status rollback_status_;                // GUARDED_BY(mutex_): why they were dropped
  bool waits_interrupted_ = false;        // GUARDED_BY(mutex_): sticky, for shutdown
  detail::DedupWindow* dedup_ = nullptr;  // GUARDED_BY(mutex_): owned by the SegmentedLog
  std::vector<detail::Hash128> dedup_hashes_;  // GUARDED_BY(mutex_): a batch's id hashes, reused

  detail::AppendListeners listeners_;  // called after appends, with no other lock of this log held
  std::atomic<bool> deleted_{false};
  // Writes to the index file (recovery's counts as one), and how many of them a sync covered
  // (GUARDED_BY(mutex_)): a log closes without syncing an index nothing was written to since.
  std::atomic<std::uint64_t> index_writes_{0};
  std::uint64_t index_writes_synced_ = 0;
  // The log file's size when it was preallocated beyond written_ (else written_'s position). Used
  // by the one writer (write_out, under mutex_ or as the round's writer) and at open, seal and close.
  std::uint64_t preallocated_end_ = 0;
};

}  // namespace mq

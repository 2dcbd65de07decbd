// One partition: an append-only log of JSON lines plus its offsets.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "mq/export.h"
#include "mq/message.h"
#include "mq/status.h"

namespace mq {

namespace detail {
class PartitionInternal;
class SegmentedLog;
}  // namespace detail

// What opening a partition found and repaired.
struct RecoveryReport {
  std::uint64_t truncated_bytes = 0;         // bytes cut off the end of the log (torn tail, garbage)
  bool intact_records_after_damage = false;  // the cut also dropped complete records (not a mere torn tail)
  std::uint64_t intact_records_dropped = 0;  // how many complete, valid records followed the damage
  std::uint64_t damage_position = 0;         // where the log was cut (byte), when truncated_bytes > 0
  std::uint64_t damage_offset = 0;           // the offset the first dropped record would have had
  std::string damaged_bytes_kept_in;  // where the cut bytes were copied, when intact records were among them
  bool index_rebuilt = false;         // the offset index was missing or untrustworthy
  bool index_write_failed = false;    // it could not be written (full disk): rebuilt at the next open
  std::uint64_t scanned_bytes = 0;    // log bytes read to recover (the tail after the index)
};

// Where each message of an append went (Partition::append_messages).
struct AppendResult {
  // The offset of each message, in order; a duplicate's is the offset it was stored at before.
  std::vector<std::uint64_t> offsets;
  // The indexes in the batch of the duplicates (not stored again), ascending.
  std::vector<std::size_t> duplicates;
};

// Byte positions in the log, in the order appended >= written >= synced.
struct LogPositions {
  std::uint64_t appended = 0;  // handed to the writer
  std::uint64_t written = 0;   // in the file (survives a killed process)
  std::uint64_t synced = 0;    // fdatasync'ed (survives a power cut)
};

// When sealed segments may be deleted (Partition::apply_retention). Every rule is optional.
struct RetentionRule {
  std::uint64_t max_bytes = 0;           // while the segments together are larger: 0 for no limit
  std::chrono::milliseconds max_age{0};  // a segment whose newest message is older: 0 for no limit
  std::int64_t now_ms = 0;               // the time max_age counts back from (ms since the epoch)
  // A segment whose every offset is below this (consumer groups committed past it).
  std::optional<std::uint64_t> delete_below;
};

// Thread-safe. Appends are serialised; reads and waits run concurrently with them. Readers see a
// message once it is as durable as the store's FsyncMode promises (with kAlways: once synced), and
// a batch all at once. Created and owned by LogStore.
class MQ_EXPORT Partition {
 public:
  ~Partition();
  Partition(const Partition&) = delete;
  Partition& operator=(const Partition&) = delete;

  const std::string& topic() const;
  std::uint32_t index() const;

  // Appends `batch` atomically, in order, and returns the offset of its first message once the
  // batch is durable per the store's FsyncMode. After a crash, recovery finds all of the batch or
  // none of it. kInvalidArgument for an empty batch, a key that is not valid UTF-8 or longer than
  // 64 KiB, or a payload with a raw newline; kPayloadTooLarge for a payload above max_payload_bytes; kIOError
  // (and every later append fails too) when the disk refused.
  Result<std::uint64_t> append(std::span<const Message> batch);
  Result<std::uint64_t> append(const Message& message) { return append(std::span(&message, 1)); }
  // The same, saying where each message went: with Message::dedup_id, a message whose id the
  // partition stored within StoreOptions::dedup_window (or earlier in the batch) is not stored
  // again; the others are stored atomically, in order. Once it returns, what the duplicates name
  // is as durable as the append would have made them.
  Result<AppendResult> append_messages(std::span<const Message> batch);

  // Reads stored lines from `offset` on: at most `max_messages`, and no more than `max_bytes` of
  // lines unless the first line alone is larger (it is returned anyway). Empty at the end of the
  // log; kNotFound for an offset beyond it or below log_start_offset(). A batch never spans two
  // segments: read on from its next_offset().
  Result<ReadBatch> read(std::uint64_t offset, std::size_t max_messages, std::size_t max_bytes) const;

  // The offset the next message will get, as visible to readers.
  std::uint64_t next_offset() const;
  // The first offset still stored.
  std::uint64_t log_start_offset() const;
  // Segments of the log (libmq/docs/log_format.md "Segments"): sealed ones plus the active one.
  std::size_t segment_count() const;

  // Blocks until a message with an offset >= `offset` is visible, `timeout` passes or
  // interrupt_waiters() is called; returns next_offset() (event-driven, no polling).
  std::uint64_t wait_beyond(std::uint64_t offset, std::chrono::milliseconds timeout) const;

  // Wakes every waiter in wait_beyond() now and makes later waits return at once (shutdown).
  void interrupt_waiters();

  // Size in bytes of the log's segments (what readers can see).
  std::uint64_t log_bytes() const;
  LogPositions positions() const;
  const RecoveryReport& recovery_report() const;

  // Makes everything written durable now, whatever the FsyncMode.
  Status sync();

  // The first offset, in offset order, of a message whose timestamp is at least `timestamp_ms`;
  // next_offset() when there is none. Found with the time index (libmq/docs/log_format.md): a
  // binary search over the segments, then about one index interval of one segment's log.
  Result<std::uint64_t> offset_for_time(std::int64_t timestamp_ms) const;

  // Replicated partitions (libmq/docs/replication.md).
  //
  // Caps what readers see at `limit` (the high watermark: below it every in-sync replica has the
  // log): next_offset(), read() and wait_beyond() act as if the log ended there; raising it wakes
  // waiters and append listeners as an append would. nullopt (the default): no cap.
  void set_read_limit(std::optional<std::uint64_t> limit);
  // The log's own end and reads of it, the read limit notwithstanding: what replication copies.
  std::uint64_t log_end_offset() const;
  Result<ReadBatch> read_past_limit(std::uint64_t offset, std::size_t max_messages,
                                    std::size_t max_bytes) const;
  std::uint64_t wait_beyond_end(std::uint64_t offset, std::chrono::milliseconds timeout) const;
  //
  // What a follower does to keep its log a copy of its leader's. None of the three may run while
  // anything reads or waits on the partition (a follower's partition serves nothing).
  //
  // Stores another replica's lines exactly as they are: `lines` are whole batches of records, each
  // line ending in '\n', the first at `first_offset`, which must be log_end_offset() (else
  // kConflict). Every line is checked as recovery checks it, offsets must follow one another and
  // batches be whole (else kInvalidArgument, nothing stored). Durable per FsyncMode on return, like
  // append(); returns the first offset stored (log_end_offset() for no lines). The lines' dedup ids
  // join the deduplication window.
  Result<std::uint64_t> append_copied(std::string lines, std::uint64_t first_offset);
  // Cuts the log back so that `offset` is its next offset (nothing when it already ends there or
  // before): later segments go, the one holding `offset` is cut at its line, durably (file and
  // directory synced). A cut inside a batch goes back to the batch's first line (batches stay
  // whole). A crash half-way leaves a shorter prefix of the log, and truncating again finishes the
  // work. kInvalidArgument below log_start_offset().
  Status truncate_to(std::uint64_t offset);
  // Drops the whole log and starts it empty at `offset` (>= log_start_offset()), durably: for a
  // follower whose log ends below its leader's log start.
  Status reset_to(std::uint64_t offset);

  // Deletes sealed segments, oldest first, while `rule` says so; never the active segment. The log
  // start moves up durably before any file goes, and readers of a deleted segment finish their
  // reads. Returns how many messages were deleted.
  Result<std::uint64_t> apply_retention(const RetentionRule& rule);

 private:
  friend class LogStore;
  friend class detail::PartitionInternal;  // libmq's consumer groups: an append hook
  explicit Partition(std::unique_ptr<detail::SegmentedLog> log);
  std::unique_ptr<detail::SegmentedLog> log_;
};

}  // namespace mq

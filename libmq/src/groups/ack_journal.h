// The durable acknowledgement record of one consumer group on one partition:
//   <dir>/<stem>.log       a record log (same format and recovery as a partition); each record's
//                          payload is [offset, ...] (acks), {"start": N}, {"seek": N} or
//                          {"ordering": "key"}
//   <dir>/<stem>.snapshot  {"committed": C, "acked": [offset, ...][, "ordering": "key"]} written
//                          by compaction
// Progress = snapshot + every record of the log replayed over it (replaying is idempotent).
// With a shared acknowledgement log (AckWal; FSYNC other than never), each record is written here
// unsynced and made durable there (libmq/docs/log_format.md "The shared acknowledgement log").
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <string_view>

#include "mq/file_system.h"
#include "mq/options.h"
#include "mq/status.h"

namespace mq {

class AckWal;
class PartitionLog;
struct GroupProgress;

// The options a journal's log is opened with: with a shared log, written at once and synced only
// when the shared log is checkpointed (FSYNC=interval's behaviour: directories synced at open,
// space preallocated), since the shared log makes each record durable.
// Its max_payload_bytes is ack_journal_record_limit(options).
StoreOptions ack_journal_options(StoreOptions options, bool shared_log);
// The largest journal record: MAX_PAYLOAD_BYTES bounds what producers send, not the broker's own
// records, so it is at least 256 bytes (a whole-state record without acknowledgements, any start
// or seek record and a few offsets fit). Longer lists of offsets are written in several records.
std::size_t ack_journal_record_limit(const StoreOptions& options);
// True when `json` is a journal record's payload as libmq writes them (kRemovedRecord included).
bool is_ack_journal_record(std::string_view json);
// Applies a journal record's payload (not kRemovedRecord) to `progress`; false when it is not one.
bool apply_ack_journal_record(std::string_view json, GroupProgress& progress);
// The record that replaces a group's whole state with `progress`:
// {"progress":{"committed":C,"acked":[...][,"ordering":"key"]}} (a follower taking its leader's).
std::string progress_record(const GroupProgress& progress);
// The record of the shared acknowledgement log that says a group was deleted on a partition
// (DELETE /group): folding the log removes the journal's files there and applies only the records
// after it. It is never written to a journal itself.
inline constexpr std::string_view kRemovedRecord = R"({"removed":true})";

// What a group has acknowledged on a partition.
struct GroupProgress {
  std::uint64_t committed = 0;    // every offset below is acknowledged
  std::set<std::uint64_t> acked;  // acknowledged offsets >= committed
  bool ordering_key = false;      // the group orders by key ({"ordering":"key"}, never undone)

  // Marks `offset` acknowledged; false when it already was.
  bool acknowledge(std::uint64_t offset);
  bool is_acknowledged(std::uint64_t offset) const { return offset < committed || acked.contains(offset); }
  // Everything below `offset` counts as acknowledged (a group starting at the latest message).
  void start_at(std::uint64_t offset);
  // The group was seeked to `offset`: everything below is acknowledged, nothing from it on.
  void seek_to(std::uint64_t offset) {
    committed = offset;
    acked.clear();
  }
  // Forgets every acknowledgement at or beyond `end` (the log was cut there); true when any went.
  bool truncate_to(std::uint64_t end);
};

// Not thread-safe for compact(); record_* may be called concurrently (they group-commit).
class AckJournal {
 public:
  // Opens or creates the journal and recovers `progress` from it; `created` tells whether the group
  // did not exist here before. `shared_log` (may be null) makes records durable under the name
  // `key` (ack_journal_key()); the broker folded what it held into the journals before.
  static Result<std::unique_ptr<AckJournal>> open(FileSystem& fs, const StoreOptions& options,
                                                  AckWal* shared_log, std::string key, std::string dir,
                                                  std::string stem, std::string label,
                                                  GroupProgress& progress, bool& created);
  ~AckJournal();
  AckJournal(const AckJournal&) = delete;
  AckJournal& operator=(const AckJournal&) = delete;

  // Durably (per FSYNC) records that the group starts at `offset` / acknowledged `offsets` (in as
  // many records as ack_journal_record_limit() needs: a crash between them keeps some, which a
  // retry of the unanswered acknowledgement adds to).
  Status record_start(std::uint64_t offset);
  Status record_acks(std::span<const std::uint64_t> offsets);
  // Durably records a seek of the group to `offset` (GroupProgress::seek_to).
  Status record_seek(std::uint64_t offset);
  // Durably records that the group orders by key (written when it comes into being so).
  Status record_ordering_key();
  // Durably records `payload_json`, which must pass is_ack_journal_record and not be kRemovedRecord
  // (a follower copying its leader's records, libmq/docs/replication.md section 7).
  Status record_raw(std::string payload_json);
  // Syncs the log and closes it (the journal's group is handed to another owner); reopen_if_closed()
  // opens it again.
  Status close();
  // Deletes the journal (its log, index and snapshot) durably per FSYNC: with a shared log, the
  // removal is recorded there first (and synced), so that folding that log after a crash cannot
  // bring older records of this journal back. No record may be written meanwhile or afterwards.
  Status remove();
  // Finishes a removal a crash interrupted (the marker <stem>.removed is there): removes the
  // journal's files, then the marker. True when there was one.
  static Result<bool> remove_if_marked(FileSystem& fs, const std::string& dir, const std::string& stem,
                                       bool durable);
  // Replaces the log with a snapshot of `progress`, which must include every record written so
  // far; no record may be written meanwhile. Crash-safe at every step.
  Status compact(const GroupProgress& progress);
  // A compaction that failed after the old log went (no descriptor, a full disk) leaves none open:
  // this opens a new one. Not thread-safe, like compact(). is_open() may run beside record_*.
  Status reopen_if_closed();
  bool is_open() const { return log_ != nullptr; }
  // Bytes in the log since the last compaction.
  std::uint64_t log_bytes() const;
  // Syncs the journal's own log if anything was written since its last sync.
  Status sync_if_behind();

 private:
  AckJournal(FileSystem& fs, const StoreOptions& options, AckWal* shared_log, std::string key,
             std::string dir, std::string stem, std::string label);
  Status open_log();
  Status record(std::string payload_json);

  FileSystem& fs_;
  const StoreOptions options_;
  AckWal* const shared_log_;
  const std::string key_;
  const std::string dir_;
  const std::string stem_;
  const std::string label_;
  std::unique_ptr<PartitionLog> log_;
};

}  // namespace mq

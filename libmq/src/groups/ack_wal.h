// The broker's shared acknowledgement log (libmq/docs/log_format.md "The shared acknowledgement
// log"): every journal record is also appended here, and only this log is synced per FSYNC, so that
// the acknowledgements of all groups and partitions of a broker share group commits.
//   <data_dir>/.acks/wal-<G>.log   records {"journal":"<topic>/groups/<group>/partition-<N>","record":...}
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "mq/file_system.h"
#include "mq/options.h"
#include "mq/status.h"

namespace mq {

class PartitionLog;

// The name of a journal in the shared log: its path below the data directory, without extension.
std::string ack_journal_key(std::string_view topic, std::string_view group, std::uint32_t partition);

// Thread-safe.
class AckWal {
 public:
  // Folds what earlier runs left in <data_dir>/.acks into the groups' journals (each written and
  // synced once per log), then removes those logs durably. Must run at every start before any
  // journal is opened, whatever the FSYNC mode (a run with FSYNC=never writes no shared log, but
  // must not leave an older one to be replayed over its records later).
  static Status fold_earlier_logs(FileSystem& fs, const StoreOptions& options);
  // fold_earlier_logs(), then starts a new log. `fs` must not reopen files by path behind the log's
  // back (not a BoundedFileSystem): a checkpoint removes a log appenders may still hold.
  static Result<std::unique_ptr<AckWal>> open(std::shared_ptr<FileSystem> fs, const StoreOptions& options,
                                              std::uint64_t checkpoint_bytes);
  ~AckWal();
  AckWal(const AckWal&) = delete;
  AckWal& operator=(const AckWal&) = delete;

  // Appends `record` (a journal record's payload, minified JSON) for the journal named `journal_key`,
  // which the caller has written to the journal's own log already; returns once it is durable per
  // FSYNC. Concurrent appends share syncs. When the log fails (a failed write or fdatasync), this
  // append fails and the next ones go to a new log; the failed one stays until a checkpoint.
  Status append(std::string_view journal_key, std::string_view record);
  // The current log holds at least the checkpoint size.
  bool checkpoint_due() const;
  // Syncs every journal record written so far; returns the keys of the journals it could not sync.
  using SyncJournals = std::function<std::vector<std::string>()>;
  // Starts a new log, then calls `sync_journals`, copies the records of the journals it could not
  // sync from the older logs to the new one, then removes the older logs. Does nothing when another
  // checkpoint is under way or none is due. On failure the older logs stay, for the next checkpoint
  // or the next start.
  Status checkpoint(const SyncJournals& sync_journals);
  // FSYNC=interval: syncs what was appended, if anything.
  Status sync_if_behind();

 private:
  AckWal(std::shared_ptr<FileSystem> fs, const StoreOptions& options, std::uint64_t checkpoint_bytes);
  Result<std::shared_ptr<PartitionLog>> open_generation(std::uint64_t generation);
  Status remove_generation(std::uint64_t generation);
  std::shared_ptr<PartitionLog> current() const;
  struct Retired {
    std::uint64_t generation;
    std::shared_ptr<PartitionLog> log;  // read (not reopened) to carry records forward
  };
  // Replaces `failed` (if it is still the current log) with a new generation; the failed one is
  // retired.
  Status replace_failed(const std::shared_ptr<PartitionLog>& failed);
  // With swap_mutex_ held: opens the next generation and makes it current; the old one is retired.
  Status start_next_generation_locked();
  // Appends the records of `journals` held by `logs` to the current log, durably.
  Status carry_forward(const std::vector<Retired>& logs, const std::vector<std::string>& journals);

  const std::shared_ptr<FileSystem> owned_fs_;
  FileSystem& fs_;
  const StoreOptions options_;  // the shared log's own: the store's, with room for the envelope
  const std::string dir_;
  const std::uint64_t checkpoint_bytes_;

  mutable std::shared_mutex mutex_;        // shared by appenders reading current_, exclusive to swap it
  std::shared_ptr<PartitionLog> current_;  // GUARDED_BY(mutex_)
  std::uint64_t generation_ = 0;           // GUARDED_BY(mutex_): current_'s
  // GUARDED_BY(mutex_): the written size of current_ at which a checkpoint is due; raised past a
  // checkpoint that could not start a new log, so that not every later append retries at once.
  std::uint64_t due_at_ = 0;

  std::mutex checkpoint_mutex_;  // one checkpoint at a time (held while it syncs every journal)
  // Starting a new log, by a checkpoint or after a failure; never held while waiting for a journal.
  std::mutex swap_mutex_;
  std::vector<Retired> retired_;  // GUARDED_BY(swap_mutex_): logs to remove once their journals synced
};

}  // namespace mq

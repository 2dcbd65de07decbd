// The leader epochs a replica's partition log has seen, each with the first offset written in it
// (libmq/docs/replication.md, "Terms", the divergence check of "The data path", and "Files"):
//   <dir>/<name>   JSON lines {"epoch":E,"start":O}, ascending in both, replaced whole
// A leader adds its epoch when elected; a follower adds the leader's entries as it copies the lines
// they cover, and drops the entries a truncation cut off. Comparing epochs is how a follower finds
// the last offset its log shares with a new leader's (Kafka KIP-101, KIP-279).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "mq/file_system.h"
#include "mq/status.h"

namespace mq::replication {

// Not thread-safe: one per partition, used under its replication lock.
class EpochCache {
 public:
  struct Entry {
    std::uint64_t epoch = 0;
    std::uint64_t start = 0;  // the first offset written in this epoch
    bool operator==(const Entry&) const = default;
  };
  // Where an epoch's lines end in a log: `end_offset` is the start of the next newer epoch (or the
  // log's end for the newest), `epoch` the epoch that answer is for (the newest one not above the
  // one asked for, KIP-279).
  struct EpochEnd {
    std::uint64_t epoch = 0;
    std::uint64_t end_offset = 0;
    bool operator==(const EpochEnd&) const = default;
  };

  // Reads <dir>/<name> (none yet: an empty cache). kCorruption when the file does not parse or its
  // entries are not ascending: a replica must not guess its history.
  static Result<EpochCache> open(FileSystem& fs, std::string dir, std::string name);

  // Records that `epoch` starts at `start`, durably (written, synced, renamed, directory synced)
  // before it returns. The newest epoch again at the same start does nothing; an epoch below the
  // newest, or a start below the newest entry's, is kInvalidArgument (history only grows at its
  // end: a follower drops entries with truncate_from() before it takes a different future). A newer
  // epoch at the newest entry's start replaces that entry: no line was written in it.
  Status assign(std::uint64_t epoch, std::uint64_t start);

  // A truncation of the log to `offset`: drops every entry starting at or after it, durably.
  Status truncate_from(std::uint64_t offset);

  // Where `epoch` ends in a log whose next offset is `log_end`. Asked for an epoch older than every
  // entry, the answer is that epoch ending at the oldest entry's start (no line of the log below it
  // can be told apart, and none at or above it belongs to that epoch); with no entry at all, `epoch`
  // ending at `log_end`.
  EpochEnd end_of(std::uint64_t epoch, std::uint64_t log_end) const;

  std::optional<Entry> newest() const;
  const std::vector<Entry>& entries() const { return entries_; }
  // The entries that cover the offsets from `offset` on: the one `offset` falls in (the newest
  // starting at or before it) and every later one. What a fetch answer from `offset` carries.
  std::vector<Entry> entries_from(std::uint64_t offset) const;

 private:
  EpochCache(FileSystem& fs, std::string dir, std::string name, std::vector<Entry> entries);
  Status write(const std::vector<Entry>& entries);

  FileSystem* fs_;
  std::string dir_;
  std::string name_;
  std::vector<Entry> entries_;
};

}  // namespace mq::replication

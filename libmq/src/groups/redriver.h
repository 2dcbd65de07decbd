// Redrive of one dead-letter partition (API.md "Operating it", POST /redrive): the letters from its
// redrive position on go back to their source topic and partition, with their payload, key and
// headers, each at most once, across restarts and concurrent calls alike.
//
// How (libmq/docs/log_format.md "Redrive positions"):
//   <data_dir>/<T>-dlq/redrive/partition-<P>.json  {"position":N} or, while a run is under way,
//       {"position":N,"pending":{"to":M,"topic":S,"partition":Q,"from":F,"first":L}}, replaced whole.
// A run is letters [N, M) bound for one source partition, appended there as one atomic batch. The
// file says the run is pending before the append and gives the new position after it. Each
// redriven message carries the dedup_id "mq-redrive:<P>:<letter's offset>", so a run still pending
// when the file is next read (a crash, an append whose outcome was unknown) is settled by looking
// for its first message (that of letter L) in the source partition from offset F (its next offset
// before the run): found, the run was appended and the position moves to M; absent, it was not and
// stays at N.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "groups/leadership.h"
#include "mq/file_system.h"
#include "mq/message.h"
#include "mq/partition.h"
#include "mq/status.h"

namespace mq::detail {

class Redriver {
 public:
  // The source partition letters go back to (kNotFound, kNotOwned as the broker resolves it).
  using ResolveSource = std::function<Result<Partition*>(std::string_view topic, std::uint32_t partition)>;
  // Appends to a partition as the broker does (retention after a roll).
  using Append = std::function<Result<AppendResult>(Partition&, std::span<const Message>)>;
  // Replicated (libmq/docs/replication.md section 7), the dead-letter partition's state path:
  // whether a change could be confirmed now, hand a position to the followers, wait until they
  // hold it.
  struct Replication {
    std::function<Status()> writable;
    std::function<Result<StateTicket>(std::uint64_t position)> publish;
    std::function<Status(StateTicket)> confirm;
  };

  // For partition `partition` (whose log is `letters`) of a dead-letter topic whose redrive files
  // are in `dir`. `durable`: sync the file (false with FSYNC=never).
  Redriver(FileSystem& fs, std::string dir, std::uint32_t partition, Partition& letters, bool durable,
           ResolveSource resolve, Append append, std::optional<Replication> replication = std::nullopt);

  // Appends up to `limit` letters (nullopt: all there are now) from the position on to their
  // sources and moves the position past them; returns how many went. Letters without a readable
  // source (produced to the dead-letter topic by hand) are stepped over, not counted. Thread-safe:
  // concurrent calls take turns. On an error, the letters redriven before it stay redriven.
  // Replicated: refused (nothing done) unless a change could be confirmed now, checked again before
  // each run (a broker that stopped leading stops after the run under way); the position is
  // published after each run (or once, moved or not, when no run went: a retry repeats what an
  // earlier call could not confirm), and the call succeeds only once the followers hold the last.
  Result<std::uint64_t> redrive(std::optional<std::uint64_t> limit);

  // A follower: the position its leader published replaces this one (the file, and what a later
  // call reads).
  Status replace_position(std::uint64_t position);

  // The position this redriver read or wrote last; nullopt when it has none, or a call holds it now
  // (a run under way: its file says where the run started).
  std::optional<std::uint64_t> loaded_position();

  // The position in `dir`'s file of `partition` (0 when there is none), without settling a run
  // left pending (its position before the run): what a leader's snapshot hands its followers.
  static Result<std::uint64_t> stored_position(FileSystem& fs, const std::string& dir,
                                               std::uint32_t partition);

  // Reads the position and settles a run left pending (a crash): done by the broker at start,
  // before retention can delete what settling reads; redrive() does it too when it was not done.
  Status settle();

  // The record that carries a position to the followers, {"position":N}, and the position in one
  // (nullopt: not such a record).
  static std::string position_record(std::uint64_t position);
  static std::optional<std::uint64_t> position_of(std::string_view record);

  // The dedup_id a redriven message carries.
  static std::string marker(std::uint32_t partition, std::uint64_t letter_offset);

 private:
  struct Pending {
    std::uint64_t to = 0;
    std::string topic;
    std::uint32_t partition = 0;
    std::uint64_t from = 0;   // the source partition's next offset before the run
    std::uint64_t first = 0;  // the offset of the run's first letter that goes back
  };

  // `ticket`: that of the last position published.
  Result<std::uint64_t> redrive_locked(std::optional<std::uint64_t> limit,
                                       std::optional<StateTicket>& ticket);
  Result<StateTicket> publish_locked();
  Status load_locked();
  Status settle_locked(const Pending& pending);
  Status save_locked(std::uint64_t position, const std::optional<Pending>& pending);

  FileSystem& fs_;
  const std::string dir_;
  const std::uint32_t partition_;
  Partition& letters_;
  const bool durable_;
  const ResolveSource resolve_;
  const Append append_;
  const std::optional<Replication> replication_;

  std::mutex mutex_;
  bool loaded_ = false;         // GUARDED_BY(mutex_)
  std::uint64_t position_ = 0;  // GUARDED_BY(mutex_)
};

}  // namespace mq::detail

// A leader's view of one partition's replicas (libmq/docs/replication.md, "ISR changes" and
// "Becoming leader and the high watermark"): how far each follower has its log durable, which of
// them are in sync, the high watermark, and whether a write is acknowledged.
//
// Rules it keeps:
// - A write ending at offset `end` is acknowledged once every in-sync member (the leader included)
//   and every joining one has it durable, and the ISR has at least min_insync members (R2).
// - A follower is caught up at a fetch that shows it durable up to where the leader's log ended
//   at its previous fetch (Kafka's rule: under steady load nobody ever equals the leader's end),
//   and holds the group-state records published by then likewise.
// - An ISR member not caught up for replica_lag is proposed for removal; until the removal is
//   committed in etcd (isr_committed), writes still wait for it.
// - A follower outside the ISR that is caught up and durable up to the high watermark joins: from
//   then on writes wait for it, and it is proposed for the ISR.
// - The high watermark only rises.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "mq/clock.h"
#include "mq/status.h"

namespace mq::replication {

// A replica as the ISR names it: a broker, on the disk it was in sync with.
struct ReplicaId {
  std::uint32_t broker = 0;
  std::string disk_id;
  bool operator==(const ReplicaId&) const = default;
  auto operator<=>(const ReplicaId&) const = default;
};

// Thread-safe.
class InSyncTracker {
 public:
  struct Options {
    std::uint32_t min_insync = 1;
    std::chrono::milliseconds replica_lag{5000};
  };

  // The leader `leader` (in `isr`) at epoch start; the high watermark starts at `high_watermark`
  // (what it learnt as a follower), which the caller keeps at or below the leader's log end.
  InSyncTracker(ReplicaId leader, std::vector<ReplicaId> isr, Options options, std::shared_ptr<Clock> clock,
                std::uint64_t high_watermark);

  // The leader's own log: where it ends and how much of it is durable.
  void leader_appended(std::uint64_t end, std::uint64_t durable);
  // A follower's fetch: its durable offset, and the newest group-state record of this epoch it
  // holds durably (0: none, or it holds another epoch's).
  void follower_fetched(const ReplicaId& follower, std::uint64_t durable, std::uint64_t state_version = 0);
  // The newest group-state record the leader published (replication.md section 7). A follower is
  // caught up (and may join) only with the group state too.
  void state_published(std::uint64_t version);
  // Waits until every in-sync (and joining) replica holds the group-state record `version`, with
  // wait_acknowledged's answers.
  Status wait_state_acknowledged(std::uint64_t version, std::chrono::milliseconds timeout);

  std::uint64_t high_watermark() const;
  // The committed ISR (members in the order given).
  std::vector<ReplicaId> isr() const;
  bool enough_in_sync() const;
  // ok, or kUnavailable "not enough in-sync replicas (n of m)".
  Status writable() const;
  // Waits until a write ending at `end` is acknowledged (ok), the ISR is below min_insync
  // (kUnavailable "not enough in-sync replicas (n of m)"), stop() was called (kShuttingDown), or
  // `timeout` passed (kUnavailable).
  Status wait_acknowledged(std::uint64_t end, std::chrono::milliseconds timeout);

  // The ISR the leader should write to etcd now (members dropped for lag, joiners added), or
  // nullopt when it is right as it is. Evaluated at the clock's now; a joiner that fell behind
  // for replica_lag stops joining (writes no longer wait for it).
  std::optional<std::vector<ReplicaId>> proposed_isr();
  // Replicas known gone (their broker's lease lapsed, or it came back on another disk): not caught
  // up any more, so proposed_isr() drops them at once instead of after replica_lag.
  void mark_gone(const std::vector<ReplicaId>& gone);
  // The ISR etcd now holds, after the leader's transaction with the latest proposed_isr() succeeded
  // (no other proposed_isr() call in between).
  void isr_committed(std::vector<ReplicaId> isr);
  // Wakes every waiter with kShuttingDown (the lease lapsed, the leader steps down).
  void stop();

 private:
  struct Follower {
    std::uint64_t durable = 0;
    std::uint64_t leader_end_at_last_fetch = 0;
    std::uint64_t state_version = 0;
    std::uint64_t state_head_at_last_fetch = 0;
    Clock::TimePoint caught_up_at{};
    bool joining = false;
    bool gone = false;  // mark_gone(), until it fetches again
  };
  // With mutex_ held: recomputes the high watermark and wakes waiters when it rose.
  void advance_locked();
  bool in_isr_locked(const ReplicaId& r) const;
  Status not_enough_locked() const;

  const ReplicaId leader_;
  const Options options_;
  const std::shared_ptr<Clock> clock_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<ReplicaId> isr_;  // GUARDED_BY(mutex_)
  std::map<ReplicaId, Follower>
      followers_;                      // GUARDED_BY(mutex_): every follower that fetched, or is in the ISR
  std::uint64_t leader_end_ = 0;       // GUARDED_BY(mutex_)
  std::uint64_t leader_durable_ = 0;   // GUARDED_BY(mutex_)
  std::uint64_t high_watermark_ = 0;   // GUARDED_BY(mutex_)
  std::uint64_t state_head_ = 0;       // GUARDED_BY(mutex_): the newest group-state record published
  std::uint64_t state_confirmed_ = 0;  // GUARDED_BY(mutex_): held by every in-sync and joining replica
  bool stopped_ = false;               // GUARDED_BY(mutex_)
};

}  // namespace mq::replication

#include "replication/in_sync_tracker.h"

#include <algorithm>
#include <utility>

namespace mq::replication {

InSyncTracker::InSyncTracker(ReplicaId leader, std::vector<ReplicaId> isr, Options options,
                             std::shared_ptr<Clock> clock, std::uint64_t high_watermark)
    : leader_(std::move(leader)),
      options_(options),
      clock_(std::move(clock)),
      isr_(std::move(isr)),
      high_watermark_(high_watermark) {
  if (std::find(isr_.begin(), isr_.end(), leader_) == isr_.end()) isr_.insert(isr_.begin(), leader_);
  // ISR members start caught up now: they get replica_lag to show they still are.
  for (const auto& member : isr_)
    if (member != leader_) followers_[member].caught_up_at = clock_->now();
}

bool InSyncTracker::in_isr_locked(const ReplicaId& r) const {
  return std::find(isr_.begin(), isr_.end(), r) != isr_.end();
}

void InSyncTracker::leader_appended(std::uint64_t end, std::uint64_t durable) {
  std::lock_guard lock(mutex_);
  leader_end_ = std::max(leader_end_, end);
  leader_durable_ = std::max(leader_durable_, durable);
  advance_locked();
}

void InSyncTracker::follower_fetched(const ReplicaId& follower, std::uint64_t durable,
                                     std::uint64_t state_version) {
  if (follower == leader_) return;
  std::lock_guard lock(mutex_);
  Follower& f = followers_[follower];
  f.gone = false;
  // Its latest report, never beyond this log's end: a follower whose own recovery cut lines has
  // less than it said before, and one claiming more than the leader has is not believed.
  f.durable = std::min(durable, leader_end_);
  f.state_version = std::min(state_version, state_head_);
  // Caught up: durable to where the leader ended at this follower's previous fetch (Kafka's
  // lastCaughtUpTime), or to the leader's end now; the same for the group state.
  const bool log_caught_up = f.durable >= f.leader_end_at_last_fetch || f.durable >= leader_end_;
  const bool state_caught_up =
      f.state_version >= f.state_head_at_last_fetch || f.state_version >= state_head_;
  if (log_caught_up && state_caught_up) f.caught_up_at = clock_->now();
  f.leader_end_at_last_fetch = leader_end_;
  f.state_head_at_last_fetch = state_head_;
  // Joining: from now on writes wait for it too, so nothing acknowledged can miss on it once it is
  // in the ISR (docs: "ISR changes", grow).
  if (!in_isr_locked(follower) && !f.joining && f.durable >= high_watermark_ && f.durable >= leader_end_ &&
      f.state_version >= state_head_)
    f.joining = true;
  advance_locked();
}

void InSyncTracker::state_published(std::uint64_t version) {
  std::lock_guard lock(mutex_);
  state_head_ = std::max(state_head_, version);
  advance_locked();
}

Status InSyncTracker::wait_state_acknowledged(std::uint64_t version, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  const bool done = changed_.wait_for(lock, timeout, [&] {
    return stopped_ || isr_.size() < options_.min_insync || state_confirmed_ >= version;
  });
  if (stopped_) return Status::shutting_down("this broker no longer leads the partition");
  if (isr_.size() < options_.min_insync) return not_enough_locked();
  if (!done) {
    return Status::unavailable("the in-sync replicas did not confirm the group state within " +
                               std::to_string(timeout.count()) + " ms");
  }
  return {};
}

void InSyncTracker::advance_locked() {
  std::uint64_t hw = leader_durable_;
  // Every in-sync member counts, one that never reported as having nothing.
  for (const auto& member : isr_) {
    if (member == leader_) continue;
    const auto it = followers_.find(member);
    hw = std::min(hw, it == followers_.end() ? 0 : it->second.durable);
  }
  for (const auto& [id, f] : followers_) {
    if (f.joining) hw = std::min(hw, f.durable);
  }
  std::uint64_t state = state_head_;
  for (const auto& member : isr_) {
    if (member == leader_) continue;
    const auto it = followers_.find(member);
    state = std::min(state, it == followers_.end() ? 0 : it->second.state_version);
  }
  for (const auto& [id, f] : followers_) {
    if (f.joining) state = std::min(state, f.state_version);
  }
  bool changed = false;
  if (hw > high_watermark_) {
    high_watermark_ = hw;
    changed = true;
  }
  // Unlike the high watermark this may fall (a member joins that holds less): waits compare with
  // it, and a record once confirmed was on every member of its time, which is what counts (R2).
  if (state != state_confirmed_) {
    changed |= state > state_confirmed_;
    state_confirmed_ = state;
  }
  if (changed) changed_.notify_all();
}

std::uint64_t InSyncTracker::high_watermark() const {
  std::lock_guard lock(mutex_);
  return high_watermark_;
}

std::vector<ReplicaId> InSyncTracker::isr() const {
  std::lock_guard lock(mutex_);
  return isr_;
}

bool InSyncTracker::enough_in_sync() const {
  std::lock_guard lock(mutex_);
  return isr_.size() >= options_.min_insync;
}

Status InSyncTracker::writable() const {
  std::lock_guard lock(mutex_);
  return isr_.size() >= options_.min_insync ? Status{} : not_enough_locked();
}

Status InSyncTracker::not_enough_locked() const {
  return Status::unavailable("not enough in-sync replicas (" + std::to_string(isr_.size()) + " of " +
                             std::to_string(options_.min_insync) + ")");
}

Status InSyncTracker::wait_acknowledged(std::uint64_t end, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  const bool done = changed_.wait_for(
      lock, timeout, [&] { return stopped_ || isr_.size() < options_.min_insync || high_watermark_ >= end; });
  if (stopped_) return Status::shutting_down("this broker no longer leads the partition");
  if (isr_.size() < options_.min_insync) return not_enough_locked();
  if (!done) {
    return Status::unavailable("the in-sync replicas did not confirm the write within " +
                               std::to_string(timeout.count()) + " ms");
  }
  return {};
}

std::optional<std::vector<ReplicaId>> InSyncTracker::proposed_isr() {
  std::lock_guard lock(mutex_);
  const auto now = clock_->now();
  bool unjoined = false;
  for (auto& [id, f] : followers_) {
    if (f.joining && now - f.caught_up_at > options_.replica_lag) {
      f.joining = false;
      unjoined = true;
    }
  }
  if (unjoined) advance_locked();
  std::vector<ReplicaId> proposal;
  for (const auto& member : isr_) {
    if (member == leader_) {
      proposal.push_back(member);
      continue;
    }
    const auto it = followers_.find(member);
    if (it != followers_.end() && !it->second.gone && now - it->second.caught_up_at <= options_.replica_lag)
      proposal.push_back(member);
  }
  for (const auto& [id, f] : followers_) {
    if (f.joining && !in_isr_locked(id) && now - f.caught_up_at <= options_.replica_lag)
      proposal.push_back(id);
  }
  if (proposal == isr_) return std::nullopt;
  return proposal;
}

void InSyncTracker::mark_gone(const std::vector<ReplicaId>& gone) {
  std::lock_guard lock(mutex_);
  for (const auto& id : gone) {
    if (id == leader_) continue;
    auto it = followers_.find(id);
    if (it == followers_.end()) continue;
    it->second.gone = true;
    it->second.joining = false;
  }
  advance_locked();
}

void InSyncTracker::isr_committed(std::vector<ReplicaId> isr) {
  // Given the latest proposed_isr() (no call in between): a member it added was joining then, so
  // every write acknowledged since waited for it.
  std::lock_guard lock(mutex_);
  isr_ = std::move(isr);
  for (auto& [id, f] : followers_) {
    if (in_isr_locked(id)) f.joining = false;
  }
  // A removed member no longer holds the high watermark back; fewer members may leave too few.
  advance_locked();
  changed_.notify_all();
}

void InSyncTracker::stop() {
  std::lock_guard lock(mutex_);
  stopped_ = true;
  changed_.notify_all();
}

}  // namespace mq::replication

// The state of one consumer group on one partition: which messages are in flight with which
// subscription until when, which wait to be delivered again, what is acknowledged (durably, in an
// AckJournal), and the counters behind /stats and /metrics.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "groups/ack_journal.h"
#include "groups/ack_wal.h"
#include "groups/key_queues.h"
#include "groups/leadership.h"
#include "groups/timer.h"
#include "mq/consumer_group.h"
#include "mq/message.h"
#include "mq/options.h"
#include "mq/partition.h"

namespace mq::detail {

// What a group needs from the broker.
struct GroupContext {
  Partition* partition = nullptr;
  std::string topic;
  std::uint32_t partition_index = 0;
  std::string group;
  GroupOptions options;
  Timer* timer = nullptr;
  // Appends a dead letter to the dead-letter topic's partition of the same number.
  std::function<Status(const Message&)> dead_letter;
  // The broker's shared acknowledgement log (nullptr with FSYNC=never), and what checkpoints it
  // when it is due; called after a record was answered durable, with no lock of the group held.
  AckWal* ack_log = nullptr;
  std::function<void()> checkpoint_acks;
  // The ordering the group gets if it does not exist yet (fixed then, durably).
  Ordering ordering_if_new = Ordering::kNone;
  // Replicated partitions (unset otherwise; libmq/docs/replication.md section 7): every journal
  // record, once durable here and applied, is published to the followers (under the journal lock,
  // so in the order applied) and confirmed (with no lock held) before it is answered.
  std::function<Result<StateTicket>(std::string record)> publish_state;
  std::function<Status(StateTicket)> confirm_state;
  // Checked before a change is made: refuses (kUnavailable, nothing done) when it could not be
  // confirmed now (this broker does not lead, too few replicas in sync).
  std::function<Status()> state_writable;
  // Tests only: runs in take() with the group's lock held, after a look found nothing and before
  // the subscriber counts itself as waiting (where an append needs the second look to be seen).
  std::function<void()> before_counting_as_waiting;
  // Tests only: runs in take() with no lock held, after the messages were chosen and before their
  // deliveries are made (where a seek or another take may drop the records read ahead).
  std::function<void()> after_choosing;
};

// kInvalidArgument for a max_inflight of 0 or a visibility timeout below 1 ms.
Status check_subscribe_options(const SubscribeOptions& options);

// Thread-safe. Lock order: the journal lock, then mutex_, then the partition's locks; the
// partition calls the append listener with none of its own locks held.
class GroupState : private Timer::Target {
 public:
  // Opens the group's journal under `groups_dir` (creating the group, at `from`, if it is new).
  static Result<std::unique_ptr<GroupState>> open(GroupContext context, FileSystem& fs,
                                                  const StoreOptions& store_options,
                                                  const std::string& groups_dir, StartPosition from);
  ~GroupState();  // the broker stops the timer first
  GroupState(const GroupState&) = delete;
  GroupState& operator=(const GroupState&) = delete;

  const GroupContext& context() const { return context_; }

  // A new subscriber; returns its id. kShuttingDown after shutdown().
  Result<std::uint64_t> subscribe(std::chrono::milliseconds visibility_timeout, std::size_t max_inflight);
  // Ends a subscriber: its in-flight messages become deliverable at once.
  void unsubscribe(std::uint64_t subscriber);
  Result<std::vector<Delivery>> take(std::uint64_t subscriber, std::size_t max_messages,
                                     std::chrono::milliseconds timeout);
  std::size_t inflight_of(std::uint64_t subscriber) const;
  // Ends the subscriber's current wait in take() and makes later takes return without waiting.
  void cancel_waits(std::uint64_t subscriber);

  // kNotFound when an offset is beyond the partition's end (nothing is acknowledged then).
  Result<std::size_t> ack(std::span<const std::uint64_t> offsets);
  Status nack(std::uint64_t offset, std::chrono::milliseconds delay);
  Status touch(std::uint64_t offset);

  GroupStats stats() const;
  Ordering ordering() const;
  // Moves the group to `target` (clamped to [log start, next offset]), durably: everything below
  // counts as acknowledged, everything from it on is delivered again in offset order with delivery
  // counts from 1, and nothing is in flight. Returns the new committed offset.
  Result<std::uint64_t> seek(std::uint64_t target);
  // Retention deleted every offset below `log_start`: the group's committed offset moves up to it
  // and nothing below it is in flight or delivered again.
  void forget_below(std::uint64_t log_start);
  void shutdown();
  Status sync_journal();
  // DELETE /group: deletes the group's journal durably (AckJournal::remove), ends its
  // subscriptions and cancels its timers. Every later call fails with kNotFound (the broker makes
  // a new GroupState for a group of the same name); idempotent.
  Status remove();
  // The broker stopped leading the partition (replicated): closes the journal (synced) without
  // deleting it and ends every subscription; every later call fails with kUnavailable. The
  // journal's files are then the replica's, which writes its leader's records to them.
  Status retire();
  // What the group has acknowledged (for a snapshot of the partition's groups).
  GroupProgress progress() const {
    std::lock_guard lock(mutex_);
    return progress_;
  }
  // The broker published the group as it opened (nullopt: that failed). Kept in memory only: a
  // broker that opens the group again (after a restart, or leading again) publishes it again.
  void opened(std::optional<StateTicket> published);
  bool removed() const { return is_removed(); }

 private:
  // Replicated: waits until the followers hold the group as it opened (published by the broker),
  // publishing it again if that failed before; once it succeeded, returns at once. Called first by
  // subscribe(), ack() and seek(): the start position and ordering must be on the followers before
  // anything that builds on them (a follower would otherwise start the group at offset 0, without
  // its ordering). Its failure is a plain kUnavailable: nothing of the request was done.
  Status confirm_opening();
  // Publishes `record` to the followers when replicated (nullopt: not replicated). A failure is
  // kUnconfirmed when `changed_here` (the change was made on this broker), else the refusal.
  Result<std::optional<StateTicket>> publish(std::string record, bool changed_here);
  bool removal_confirmed() const {
    std::lock_guard lock(mutex_);
    return removal_confirmed_;
  }
  Status writable() const { return context_.state_writable ? context_.state_writable() : Status(); }
  Status confirm(const std::optional<StateTicket>& ticket) const;
  Status deleted_status() const;
  // Ends the group in memory (remove() or retire(), with the journal lock held exclusively).
  void end_locked(bool retired);
  bool is_removed() const {
    std::lock_guard lock(mutex_);
    return removed_;
  }

  // kDelayed: nacked with a delay, or a delayed message (deliver_at) not yet due.
  // kBlocked (ordering=key): behind an earlier message of its key; never delivered yet.
  enum class State { kInFlight, kReady, kDelayed, kDeadLettering, kBlocked };
  // A message handed out at least once, or waiting for its deliver_at, and not acknowledged.
  struct Tracked {
    std::uint32_t deliveries = 0;
    State state = State::kReady;
    std::int64_t due_ms = 0;  // deliver_at (wall clock): its timer re-checks it against system_ms()
    // ordering=key: its key's queue in key_queues_, when it has a key.
    KeyQueues::Ref key_queue;
    std::uint64_t holder = 0;  // the subscriber, while in flight
    std::uint64_t token = 0;   // identifies the timer entry that still applies
    Timer::Handle timer;       // the pending timeout or delay, cancelled when it no longer applies
  };
  struct Subscriber {
    Subscriber(std::chrono::milliseconds timeout, std::size_t max)
        : visibility_timeout(timeout), max_inflight(max) {}
    std::size_t room() const { return max_inflight > inflight ? max_inflight - inflight : 0; }
    std::chrono::milliseconds visibility_timeout;
    std::size_t max_inflight;
    std::size_t inflight = 0;
    // Waking: each waiting subscriber has its own condition variable, so that one new message
    // wakes one consumer rather than all of them (with many open streams, waking every thread per
    // append costs more than the delivery).
    std::condition_variable wake;
    bool waiting = false;
    bool woken = false;
    bool cancelled = false;  // cancel_waits(): take() no longer waits
  };
  struct Chosen {
    std::uint64_t offset;
    std::uint32_t delivery;
    // The record as read ahead (its bytes in a batch of Choice::pinned), or empty: read back at
    // delivery (a redelivery, or a message that waited).
    std::string_view line;
  };
  // What one take() chose. Its new messages' records were read ahead already: the batches they are
  // in stay alive until the deliveries are made, after mutex_ is released, even if the group's read
  // ahead is dropped or replaced meanwhile (a seek, another take).
  struct Choice {
    std::vector<Chosen> messages;
    std::vector<std::shared_ptr<const ReadBatch>> pinned;
  };
  struct DeadLetter {
    std::uint64_t offset;
    std::uint32_t deliveries;
  };
  // A message beyond next_new_ read ahead of its delivery, for what decides when it may go.
  struct ReadAhead {
    std::uint64_t offset;
    std::optional<std::int64_t> deliver_at_ms;
    std::optional<std::string> key;  // only with ordering=key
    std::string_view line;           // the record, in read_ahead_batch_; empty if it was forgotten
  };

  GroupState(GroupContext context, std::unique_ptr<AckJournal> journal, GroupProgress progress);

  // The following run with mutex_ held.
  void choose_locked(std::uint64_t subscriber, Subscriber& sub, std::size_t count, Choice& choice);
  // `line` is the record if it was read ahead, else empty.
  void start_delivery_locked(std::uint64_t offset, Tracked& tracked, std::uint64_t subscriber,
                             Subscriber& sub, std::vector<Chosen>& chosen, std::string_view line = {});
  // Ends the delivery of an in-flight message: back to ready, delayed, or to be dead-lettered.
  void end_delivery_locked(std::map<std::uint64_t, Tracked>::iterator it, std::chrono::milliseconds delay,
                           std::vector<DeadLetter>& dead);
  std::size_t apply_acks_locked(std::span<const std::uint64_t> offsets, bool dead_lettered);
  void schedule_locked(std::uint64_t offset, Tracked& tracked, std::chrono::milliseconds after);
  void cancel_timer_locked(Tracked& tracked);
  // forget_below with mutex_ held.
  void forget_below_locked(std::uint64_t log_start);
  // True when a message may be deliverable now (a redelivery, or offsets not yet handed out).
  bool deliverable_locked() const;
  // False once the group holds GroupOptions::max_held_messages back (delayed or blocked): it
  // reads no further until some of them go.
  bool may_read_on_locked() const {
    return context_.options.max_held_messages == 0 ||
           delayed_ + blocked_ < context_.options.max_held_messages;
  }
  // After held messages went: wakes a waiting subscriber if the group may read on again.
  void wake_if_read_resumes_locked(bool could_read_on);
  // Reads the records from next_new_ on into read_ahead_, with mutex_ released meanwhile (`lock`
  // holds it on entry and on return). Only one thread reads ahead at a time.
  Status read_ahead(std::unique_lock<std::mutex>& lock);
  // next_new_ jumped (a seek, retention) or the group ended: what was read ahead is not next any more.
  void drop_read_ahead_locked();
  // The records read ahead stay, their lines go (they are read back at delivery): frees the batch.
  void forget_read_ahead_lines_locked();
  // Puts a message that is not due before `due_ms` (wall clock) on the timer.
  void schedule_due_locked(std::uint64_t offset, Tracked& tracked, std::int64_t due_ms);
  // A never-delivered message may go: it waits for its time if it is not due yet, else it is ready.
  void release_locked(std::uint64_t offset, Tracked& tracked, std::int64_t now_ms);
  // `offset` leaves the tracked messages (acknowledged, dead-lettered, forgotten): the next message
  // of its key, if any, may go.
  void release_key_locked(std::uint64_t offset, Tracked& tracked);
  // Wakes the longest-waiting subscriber that has room, if any.
  void wake_one_locked();
  // Wakes `subscriber` if it is waiting (its room grew).
  void wake_locked(std::uint64_t subscriber);

  void on_timer(std::uint64_t offset, std::uint64_t token) override;
  void dead_letter(const std::vector<DeadLetter>& dead);
  Status acknowledge_durably(std::span<const std::uint64_t> offsets, bool dead_lettered, std::size_t& newly);
  void compact_if_large();
  // seek() with the journal lock and mutex_ held.
  Result<std::uint64_t> seek_locked(std::uint64_t target);
  // After a record was written, with no lock held: lets the broker checkpoint the shared log.
  void after_record() const {
    if (context_.checkpoint_acks) context_.checkpoint_acks();
  }
  // The deliveries of what take() chose: the records read ahead as they are, the others read back.
  Result<std::vector<Delivery>> read_deliveries(const std::vector<Chosen>& chosen) const;

  const GroupContext context_;
  std::uint64_t listener_id_ = 0;
  // Subscribers in take() from the moment they decide to wait until they stop waiting. Changed
  // under mutex_, read without it: an append takes mutex_ to wake one only when this is not zero
  // (the listener in open()).
  std::atomic<std::size_t> waiting_subscribers_{0};

  // Shared by writers of journal records (with the in-memory update that follows each), exclusive
  // for compaction, which needs memory to hold every record written.
  std::shared_mutex journal_mutex_;
  std::unique_ptr<AckJournal> journal_;

  mutable std::mutex mutex_;
  GroupProgress progress_;                    // GUARDED_BY(mutex_)
  std::uint64_t next_new_ = 0;                // GUARDED_BY(mutex_): first never-delivered offset
  std::map<std::uint64_t, Tracked> tracked_;  // GUARDED_BY(mutex_)
  std::set<std::uint64_t> ready_;             // GUARDED_BY(mutex_): redeliverable, by offset
  // GUARDED_BY(mutex_): the records from next_new_ on, consecutive, read ahead of their delivery,
  // all from the one batch read_ahead_batch_ (a read ahead fills read_ahead_ only when it is empty).
  // The batch is kept so that a new message is delivered from it rather than read a second time: 256
  // KiB of records at most (or one record if a record is larger; Partition::read trims the batch's
  // buffer to about that). It goes when read_ahead_ is empty or the last subscriber leaves.
  std::deque<ReadAhead> read_ahead_;
  std::shared_ptr<const ReadBatch> read_ahead_batch_;
  bool reading_ahead_ = false;          // GUARDED_BY(mutex_)
  std::uint64_t read_ahead_epoch_ = 0;  // GUARDED_BY(mutex_): bumped when next_new_ jumps
  std::uint64_t delayed_ = 0;           // GUARDED_BY(mutex_): delayed messages not yet due
  std::uint64_t blocked_ = 0;           // GUARDED_BY(mutex_): messages in State::kBlocked
  // GUARDED_BY(mutex_), ordering=key: per key, the tracked messages with it in offset order; only
  // the first may be delivered.
  KeyQueues key_queues_;
  std::unordered_map<std::uint64_t, Subscriber> subscribers_;  // GUARDED_BY(mutex_): nodes never move
  std::deque<std::uint64_t> waiters_;  // GUARDED_BY(mutex_): waiting subscribers, oldest first
  std::uint64_t next_subscriber_ = 0;  // GUARDED_BY(mutex_)
  std::uint64_t next_token_ = 0;       // GUARDED_BY(mutex_)
  std::uint64_t inflight_ = 0;         // GUARDED_BY(mutex_)
  bool stopping_ = false;              // GUARDED_BY(mutex_)
  bool removed_ = false;               // GUARDED_BY(mutex_): remove() deleted the group, or retire()
  // retire() ran (removed_ is set too); atomic: deleted_status() reads it with or without mutex_.
  std::atomic<bool> retired_{false};
  // GUARDED_BY(mutex_): the group as it opened is not yet confirmed on the followers; the ticket
  // of its publication (none: to be published again by the next confirm_opening()).
  bool opening_pending_ = false;
  bool removal_confirmed_ = false;  // GUARDED_BY(mutex_): remove() was confirmed on the followers
  std::optional<StateTicket> opening_ticket_;
  GroupStats counters_;  // GUARDED_BY(mutex_): delivered, acked, ...
};

}  // namespace mq::detail

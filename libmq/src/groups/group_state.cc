#include "groups/group_state.h"

#include <algorithm>
#include <limits>

#include "groups/message_ids.h"
#include "storage/internal_access.h"
#include "storage/log_recovery.h"
#include "storage/record_format.h"

namespace mq::detail {
namespace {
// The journal is compacted into a snapshot once its log passes this size.
constexpr std::uint64_t kCompactJournalBytes = 1 << 20;
}  // namespace

Status check_subscribe_options(const SubscribeOptions& options) {
  if (options.max_inflight == 0) return Status::invalid_argument("max_inflight must be at least 1");
  if (options.visibility_timeout && options.visibility_timeout->count() <= 0) {
    return Status::invalid_argument("visibility_timeout_ms must be at least 1");
  }
  return {};
}

Result<std::unique_ptr<GroupState>> GroupState::open(GroupContext context, FileSystem& fs,
                                                     const StoreOptions& store_options,
                                                     const std::string& groups_dir, StartPosition from) {
  GroupProgress progress;
  bool created = false;
  const std::string label =
      context.topic + "/" + std::to_string(context.partition_index) + " group " + context.group;
  auto journal =
      AckJournal::open(fs, store_options, context.ack_log,
                       ack_journal_key(context.topic, context.group, context.partition_index),
                       groups_dir + "/" + context.group,
                       "partition-" + std::to_string(context.partition_index), label, progress, created);
  if (!journal.ok()) return journal.status();
  // A group is never ahead of its log: when recovery cut the log below what the group acknowledged,
  // the offsets from the cut on will name new messages, which the group has not seen. Made durable
  // at once, or a replay of the journal would acknowledge them again at the next start. The log's
  // own end, not what readers see: a read limit (a replica's high watermark) is no cut.
  if (const std::uint64_t end = context.partition->log_end_offset(); progress.truncate_to(end)) {
    detail::write_recovery_line(store_options,
                                label + ": acknowledgements beyond the recovered log (next offset " +
                                    std::to_string(end) + ") were forgotten");
    if (auto s = (*journal)->compact(progress); !s.ok()) return s;
  }
  if (created && from == StartPosition::kLatest) {
    const std::uint64_t start = context.partition->next_offset();
    if (auto s = (*journal)->record_start(start); !s.ok()) return s;
    progress.start_at(start);
  }
  if (created && context.ordering_if_new == Ordering::kKey) {
    if (auto s = (*journal)->record_ordering_key(); !s.ok()) return s;
    progress.ordering_key = true;
  }
  std::unique_ptr<GroupState> group(
      new GroupState(std::move(context), std::move(journal.value()), std::move(progress)));
  GroupState* self = group.get();
  group->listener_id_ = PartitionInternal::add_append_listener(*group->context_.partition, [self] {
    // No subscriber waits: nobody to wake, and the producer does not queue for the group's lock
    // behind a consumer's take or ack (with 100,000 delayed messages pending, that queueing was
    // most of a producer's p99). A subscriber about to wait counts itself first and then looks at
    // the partition's end once more (take()). Both are read-modify-writes of one atomic, so one
    // comes first: if this one, the subscriber's acquires what was appended before it and its look
    // sees the append; if the subscriber's, this one reads its count and wakes by the lock as
    // before. (Not a relaxed load after a fence: GCC's ThreadSanitizer does not support fences.)
    if (self->waiting_subscribers_.fetch_add(0, std::memory_order_acq_rel) == 0) return;
    std::lock_guard lock(self->mutex_);
    self->wake_one_locked();
  });
  // A group behind the log start (retention ran while it was away) starts at the log start.
  group->forget_below(group->context_.partition->log_start_offset());
  return group;
}

GroupState::GroupState(GroupContext context, std::unique_ptr<AckJournal> journal, GroupProgress progress)
    : context_(std::move(context)), journal_(std::move(journal)), progress_(std::move(progress)) {
  next_new_ = progress_.committed;
  counters_.group = context_.group;
}

GroupState::~GroupState() {
  if (listener_id_ != 0) PartitionInternal::remove_append_listener(*context_.partition, listener_id_);
}

Result<std::uint64_t> GroupState::subscribe(std::chrono::milliseconds visibility_timeout,
                                            std::size_t max_inflight) {
  // Replicated: where a new group starts (from=latest) must be on the followers before it delivers.
  if (auto s = confirm_opening(); !s.ok()) return s;
  std::lock_guard lock(mutex_);
  if (stopping_) return Status::shutting_down("the broker is stopping");
  if (removed_) return deleted_status();
  const std::uint64_t id = ++next_subscriber_;
  subscribers_.try_emplace(id, visibility_timeout, max_inflight);
  return id;
}

void GroupState::unsubscribe(std::uint64_t subscriber) {
  std::vector<DeadLetter> dead;
  {
    std::lock_guard lock(mutex_);
    for (auto it = tracked_.begin(); it != tracked_.end(); ++it) {
      if (it->second.state == State::kInFlight && it->second.holder == subscriber) {
        end_delivery_locked(it, {}, dead);
      }
    }
    std::erase(waiters_, subscriber);
    subscribers_.erase(subscriber);
    // Nobody is left to take what was read ahead: its bytes go, its offsets stay (read back later).
    if (subscribers_.empty()) forget_read_ahead_lines_locked();
  }
  dead_letter(dead);
}

std::size_t GroupState::inflight_of(std::uint64_t subscriber) const {
  std::lock_guard lock(mutex_);
  auto it = subscribers_.find(subscriber);
  return it == subscribers_.end() ? 0 : it->second.inflight;
}

void GroupState::cancel_waits(std::uint64_t subscriber) {
  std::lock_guard lock(mutex_);
  auto it = subscribers_.find(subscriber);
  if (it == subscribers_.end()) return;
  it->second.cancelled = true;
  it->second.wake.notify_one();
}

Result<std::vector<Delivery>> GroupState::take(std::uint64_t subscriber, std::size_t max_messages,
                                               std::chrono::milliseconds timeout) {
  const auto give_up_at = std::chrono::steady_clock::now() + timeout;
  Choice choice;
  std::vector<Chosen>& chosen = choice.messages;
  {
    std::unique_lock lock(mutex_);
    Subscriber& sub = subscribers_.at(subscriber);
    bool timed_out = false;
    int empty_reads = 0;
    while (true) {
      if (stopping_) return Status::shutting_down("the broker is stopping");
      if (removed_) return deleted_status();
      // What this round of looking can see: an append after it is looked for before waiting.
      const std::uint64_t end_seen = context_.partition->next_offset();
      choose_locked(subscriber, sub, std::min(max_messages - chosen.size(), sub.room()), choice);
      // New messages are chosen from records read ahead; read more while this take wants more.
      if (chosen.size() < max_messages && sub.room() > 0 && !reading_ahead_ && read_ahead_.empty() &&
          may_read_on_locked() && next_new_ < context_.partition->next_offset()) {
        if (auto s = read_ahead(lock); !s.ok()) {
          if (!chosen.empty()) break;  // they are in flight: hand them out; the next take fails
          return s;
        }
        // Read nothing (retention deleted it meanwhile: the next choice moves past it, or another
        // thread moved the group): look again; a read that keeps finding nothing waits instead.
        if (!read_ahead_.empty() || ++empty_reads < 3) continue;
      }
      if (!chosen.empty()) {
        if (deliverable_locked()) wake_one_locked();  // more than we took: pass the wake-up on
        break;
      }
      if (timed_out || sub.cancelled) return std::vector<Delivery>{};
      if (context_.before_counting_as_waiting) context_.before_counting_as_waiting();
      // Counted as waiting first, then the end looked at again (the other half of the listener's
      // fast path in open()): an append this look misses sees the count and wakes by the lock.
      // Uncounted however this ends (a throw included), or every later append would take the lock.
      struct CountedAsWaiting {
        explicit CountedAsWaiting(std::atomic<std::size_t>& count) : count_(count) {
          count_.fetch_add(1, std::memory_order_acq_rel);
        }
        ~CountedAsWaiting() { count_.fetch_sub(1, std::memory_order_relaxed); }
        CountedAsWaiting(const CountedAsWaiting&) = delete;
        CountedAsWaiting& operator=(const CountedAsWaiting&) = delete;
        std::atomic<std::size_t>& count_;
      } counted(waiting_subscribers_);
      if (context_.partition->next_offset() != end_seen) continue;
      sub.waiting = true;
      waiters_.push_back(subscriber);
      timed_out = !sub.wake.wait_until(lock, give_up_at,
                                       [&] { return sub.woken || sub.cancelled || stopping_ || removed_; });
      sub.waiting = false;
      sub.woken = false;
      std::erase(waiters_, subscriber);
    }
  }
  if (context_.after_choosing) context_.after_choosing();
  return read_deliveries(chosen);
}

bool GroupState::deliverable_locked() const {
  return !ready_.empty() || next_new_ < context_.partition->next_offset();
}

Status GroupState::read_ahead(std::unique_lock<std::mutex>& lock) {
  // A few hundred records at a time: enough to fill any take, little memory per group (the batch is
  // kept until its messages are handed out: at most this much per group and partition).
  constexpr std::size_t kReadAheadMessages = 256;
  constexpr std::size_t kReadAheadBytes = 256 << 10;
  const std::uint64_t from = next_new_;
  const std::uint64_t epoch = read_ahead_epoch_;
  const bool ordering_key = progress_.ordering_key;
  reading_ahead_ = true;
  lock.unlock();
  std::vector<ReadAhead> records;
  std::shared_ptr<const ReadBatch> kept;
  Status status;
  auto batch = context_.partition->read(from, kReadAheadMessages, kReadAheadBytes);
  if (batch.ok()) {
    // (Moving a batch keeps its messages' views valid: they point into its heap buffer.)
    kept = std::make_shared<const ReadBatch>(std::move(*batch));
    records.reserve(kept->size());
    for (const StoredMessage& m : *kept) {
      auto options = parse_record_options(m.line, DedupIdField::kSkip);
      if (!options) {
        status = Status::corruption("a stored record of " + context_.topic + "/" +
                                    std::to_string(context_.partition_index) + " cannot be read");
        break;
      }
      records.push_back({m.offset, options->deliver_at_ms,
                         ordering_key ? std::move(options->raw_key) : std::nullopt, m.line});
    }
  } else if (!(batch.status().code() == ErrorCode::kNotFound &&
               from < context_.partition->log_start_offset())) {
    status = batch.status();  // (retention deleted `from` meanwhile: the next choice moves past it)
  }
  lock.lock();
  reading_ahead_ = false;
  if (!status.ok()) return status;
  // Kept only if nothing moved the group meanwhile (a seek, retention, another reader) and it is
  // still there (a deleted or retired group would hold the batch for the broker's whole life).
  if (epoch == read_ahead_epoch_ && next_new_ == from && read_ahead_.empty() && !records.empty() &&
      !removed_ && !stopping_) {
    read_ahead_.assign(std::make_move_iterator(records.begin()), std::make_move_iterator(records.end()));
    read_ahead_batch_ = std::move(kept);
    // (The last subscriber left while this read: as in unsubscribe(), keep the offsets only.)
    if (subscribers_.empty()) forget_read_ahead_lines_locked();
  }
  return {};
}

void GroupState::drop_read_ahead_locked() {
  read_ahead_.clear();
  read_ahead_batch_.reset();
  ++read_ahead_epoch_;
}

void GroupState::forget_read_ahead_lines_locked() {
  for (ReadAhead& record : read_ahead_) record.line = {};
  read_ahead_batch_.reset();
}

void GroupState::wake_if_read_resumes_locked(bool could_read_on) {
  if (!could_read_on && may_read_on_locked() && deliverable_locked()) wake_one_locked();
}

void GroupState::schedule_due_locked(std::uint64_t offset, Tracked& tracked, std::int64_t due_ms) {
  const Clock& clock = context_.timer->clock();
  tracked.due_ms = due_ms;
  cancel_timer_locked(tracked);
  tracked.token = ++next_token_;
  const auto wait = std::chrono::milliseconds(std::max<std::int64_t>(due_ms - clock.system_ms(), 0));
  tracked.timer = context_.timer->schedule(clock.now() + wait, this, offset, tracked.token);
}

void GroupState::wake_one_locked() {
  for (auto it = waiters_.begin(); it != waiters_.end(); ++it) {
    Subscriber& sub = subscribers_.at(*it);
    if (sub.room() == 0) continue;
    sub.woken = true;
    sub.wake.notify_one();
    waiters_.erase(it);
    return;
  }
}

void GroupState::wake_locked(std::uint64_t subscriber) {
  auto it = subscribers_.find(subscriber);
  if (it == subscribers_.end() || !it->second.waiting || it->second.woken) return;
  it->second.woken = true;
  it->second.wake.notify_one();
  std::erase(waiters_, subscriber);
}

Result<std::uint64_t> GroupState::seek(std::uint64_t target) {
  if (auto s = confirm_opening(); !s.ok()) return s;  // as for ack()
  std::optional<StateTicket> ticket;
  auto result = [&]() -> Result<std::uint64_t> {
    // Exclusive: no acknowledgement may be recorded between the seek's record and its effect, or
    // a replay would apply them in another order than memory did (nor be published in another).
    if (auto s = writable(); !s.ok()) return s;
    std::unique_lock journal_lock(journal_mutex_);
    auto moved = seek_locked(target);
    if (!moved.ok()) return moved;
    auto published = publish("{\"seek\":" + std::to_string(*moved) + "}", /*changed_here=*/true);
    if (!published.ok()) return published.status();
    ticket = *published;
    return moved;
  }();
  after_record();
  if (result.ok()) {
    if (auto s = confirm(ticket); !s.ok()) return s;
  }
  return result;
}

Result<std::optional<StateTicket>> GroupState::publish(std::string record, bool changed_here) {
  if (!context_.publish_state) return std::optional<StateTicket>();
  auto ticket = context_.publish_state(std::move(record));
  if (ticket.ok()) return std::optional<StateTicket>(*ticket);
  if (!changed_here) return ticket.status();
  // Made here and durable, but no follower will hear of it from this record: whether it lasts
  // depends on who leads next (a new leader's state replaces this broker's). A retry publishes it
  // again (the request then changes nothing here and republishes what it repeats).
  return Status::unconfirmed("the change was made on this broker but not handed to its followers (" +
                             ticket.status().message() + "); retry it");
}

Status GroupState::confirm(const std::optional<StateTicket>& ticket) const {
  return ticket ? context_.confirm_state(*ticket) : Status();
}

void GroupState::opened(std::optional<StateTicket> published) {
  std::lock_guard lock(mutex_);
  opening_pending_ = true;
  opening_ticket_ = published;
}

Status GroupState::confirm_opening() {
  std::optional<StateTicket> ticket;
  {
    std::lock_guard lock(mutex_);
    if (!opening_pending_) return {};
    ticket = opening_ticket_;
  }
  if (!ticket) {
    // Its publication failed, or its confirmation did (maybe in a past leader epoch, which can
    // never be confirmed now): the whole group again, under the exclusive journal lock so that no
    // acknowledgement is applied but not yet published while its state is read. Concurrent callers
    // wait for the one publication the first of them made.
    if (auto s = writable(); !s.ok()) return s;
    std::unique_lock journal_lock(journal_mutex_);
    if (is_removed()) return deleted_status();
    {
      std::lock_guard lock(mutex_);
      if (!opening_pending_) return {};
      ticket = opening_ticket_;
    }
    if (!ticket) {
      auto published = publish(progress_record(progress()), /*changed_here=*/false);
      if (!published.ok()) return published.status();
      if (!*published) return {};  // not replicated
      ticket = *published;
      std::lock_guard lock(mutex_);
      opening_ticket_ = ticket;
    }
  }
  const Status confirmed = confirm(ticket);
  std::lock_guard lock(mutex_);
  if (confirmed.ok()) {
    opening_pending_ = false;
    opening_ticket_.reset();
    return {};
  }
  if (opening_ticket_ && opening_ticket_->epoch == ticket->epoch &&
      opening_ticket_->version == ticket->version)
    opening_ticket_.reset();  // the next call publishes it again
  // A plain 503: the request that needed it has changed nothing yet (whatever the confirmation's
  // own status says of the opening record, republished by the retry).
  return Status::unavailable("the group's state is not confirmed on the followers yet (" +
                             confirmed.message() + "); nothing was done, retry");
}

Result<std::uint64_t> GroupState::seek_locked(std::uint64_t target) {
  if (is_removed()) return deleted_status();
  if (auto s = journal_->reopen_if_closed(); !s.ok()) return s;
  target = std::clamp(target, context_.partition->log_start_offset(), context_.partition->next_offset());
  if (auto s = journal_->record_seek(target); !s.ok()) return s;
  std::lock_guard lock(mutex_);
  progress_.seek_to(target);
  for (auto& [offset, tracked] : tracked_) cancel_timer_locked(tracked);
  tracked_.clear();
  ready_.clear();
  for (auto& [id, sub] : subscribers_) sub.inflight = 0;
  inflight_ = 0;
  delayed_ = 0;
  blocked_ = 0;
  key_queues_.clear();
  next_new_ = target;
  drop_read_ahead_locked();
  // Every waiting subscriber has room now: wake them all (each wake takes one off waiters_).
  for (std::size_t before = waiters_.size(); before > 0; before = waiters_.size()) {
    wake_one_locked();
    if (waiters_.size() == before) break;
  }
  return target;
}

void GroupState::forget_below(std::uint64_t log_start) {
  std::lock_guard lock(mutex_);
  forget_below_locked(log_start);
}

void GroupState::forget_below_locked(std::uint64_t log_start) {
  const bool could_read_on = may_read_on_locked();
  if (progress_.committed < log_start) progress_.start_at(log_start);
  if (next_new_ < log_start) {
    next_new_ = log_start;
    drop_read_ahead_locked();
  }
  for (auto it = tracked_.begin(); it != tracked_.end() && it->first < log_start;) {
    Tracked& tracked = it->second;
    cancel_timer_locked(tracked);
    if (tracked.state == State::kDelayed && tracked.deliveries == 0) --delayed_;
    if (tracked.state == State::kBlocked) --blocked_;
    if (tracked.state == State::kInFlight) {
      if (auto sub = subscribers_.find(tracked.holder);
          sub != subscribers_.end() && sub->second.inflight > 0) {
        --sub->second.inflight;
      }
      if (inflight_ > 0) --inflight_;
    }
    ready_.erase(it->first);
    const std::uint64_t offset = it->first;
    Tracked done = std::move(it->second);
    it = tracked_.erase(it);
    release_key_locked(offset, done);
  }
  wake_if_read_resumes_locked(could_read_on);
}

void GroupState::choose_locked(std::uint64_t subscriber, Subscriber& sub, std::size_t count, Choice& choice) {
  std::vector<Chosen>& chosen = choice.messages;
  // Nothing below the log start can be read any more (retention deleted it).
  if (const std::uint64_t start = context_.partition->log_start_offset();
      start > next_new_ || (!tracked_.empty() && tracked_.begin()->first < start))
    forget_below_locked(start);
  // Redeliveries first, in offset order.
  while (count > 0 && !ready_.empty()) {
    const std::uint64_t offset = *ready_.begin();
    ready_.erase(ready_.begin());
    start_delivery_locked(offset, tracked_.at(offset), subscriber, sub, chosen);
    --count;
  }
  if (count == 0) return;
  const std::int64_t now_ms = context_.timer->clock().system_ms();
  bool delivered_read_ahead = false;
  while (count > 0 && !read_ahead_.empty() && may_read_on_locked()) {
    ReadAhead next = std::move(read_ahead_.front());
    read_ahead_.pop_front();
    next_new_ = next.offset + 1;
    if (progress_.is_acknowledged(next.offset)) continue;  // acknowledged before it was ever delivered
    Tracked& tracked = tracked_[next.offset];
    tracked.due_ms = next.deliver_at_ms.value_or(0);
    if (next.key) {
      // ordering=key: behind an earlier message of its key, it waits until that one is done.
      const KeyQueues::Pushed pushed = key_queues_.push(*next.key, next.offset);
      tracked.key_queue = pushed.ref;
      if (!pushed.first) {
        tracked.state = State::kBlocked;
        ++blocked_;
        continue;
      }
    }
    if (tracked.due_ms > now_ms) {
      // Not due: it waits on the timer, neither in flight nor holding up the messages after it.
      release_locked(next.offset, tracked, now_ms);
      continue;
    }
    start_delivery_locked(next.offset, tracked, subscriber, sub, chosen, next.line);
    delivered_read_ahead = delivered_read_ahead || !next.line.empty();
    --count;
  }
  if (delivered_read_ahead && (choice.pinned.empty() || choice.pinned.back() != read_ahead_batch_)) {
    choice.pinned.push_back(read_ahead_batch_);
  }
  if (read_ahead_.empty()) read_ahead_batch_.reset();
}

void GroupState::release_locked(std::uint64_t offset, Tracked& tracked, std::int64_t now_ms) {
  if (tracked.state == State::kBlocked) --blocked_;
  if (tracked.due_ms > now_ms) {
    tracked.state = State::kDelayed;
    schedule_due_locked(offset, tracked, tracked.due_ms);
    ++delayed_;
  } else {
    tracked.state = State::kReady;
    ready_.insert(offset);
    wake_one_locked();
  }
}

void GroupState::release_key_locked(std::uint64_t offset, Tracked& tracked) {
  if (!tracked.key_queue) return;
  const std::optional<std::uint64_t> next = key_queues_.remove(tracked.key_queue, offset);
  if (!next) return;
  if (auto it = tracked_.find(*next); it != tracked_.end() && it->second.state == State::kBlocked) {
    release_locked(*next, it->second, context_.timer->clock().system_ms());
  }
}

void GroupState::start_delivery_locked(std::uint64_t offset, Tracked& tracked, std::uint64_t subscriber,
                                       Subscriber& sub, std::vector<Chosen>& chosen, std::string_view line) {
  ++tracked.deliveries;
  tracked.state = State::kInFlight;
  tracked.holder = subscriber;
  ++sub.inflight;
  ++inflight_;
  ++counters_.delivered;
  if (tracked.deliveries > 1) ++counters_.redelivered;
  schedule_locked(offset, tracked, sub.visibility_timeout);
  chosen.push_back({offset, tracked.deliveries, line});
}

void GroupState::schedule_locked(std::uint64_t offset, Tracked& tracked, std::chrono::milliseconds after) {
  cancel_timer_locked(tracked);
  tracked.token = ++next_token_;
  tracked.timer =
      context_.timer->schedule(context_.timer->clock().now() + after, this, offset, tracked.token);
}

void GroupState::cancel_timer_locked(Tracked& tracked) {
  context_.timer->cancel(tracked.timer);
  tracked.timer = {};
  tracked.token = 0;
}

void GroupState::end_delivery_locked(std::map<std::uint64_t, Tracked>::iterator it,
                                     std::chrono::milliseconds delay, std::vector<DeadLetter>& dead) {
  Tracked& tracked = it->second;
  if (auto sub = subscribers_.find(tracked.holder); sub != subscribers_.end()) --sub->second.inflight;
  --inflight_;
  cancel_timer_locked(tracked);  // the timeout no longer applies
  if (context_.options.max_deliveries > 0 && tracked.deliveries >= context_.options.max_deliveries) {
    tracked.state = State::kDeadLettering;
    dead.push_back({it->first, tracked.deliveries});
  } else if (delay.count() > 0) {
    tracked.state = State::kDelayed;
    schedule_locked(it->first, tracked, delay);
  } else {
    tracked.state = State::kReady;
    ready_.insert(it->first);
    wake_one_locked();
  }
  // The holder has room again; if it waits for exactly that and more is deliverable, it goes on.
  if (deliverable_locked()) wake_locked(tracked.holder);
}

void GroupState::on_timer(std::uint64_t offset, std::uint64_t token) {
  std::vector<DeadLetter> dead;
  {
    std::lock_guard lock(mutex_);
    if (removed_) return;
    auto it = tracked_.find(offset);
    if (it == tracked_.end() || it->second.token != token) return;  // acknowledged, touched or ended since
    if (it->second.state == State::kInFlight) {
      end_delivery_locked(it, {}, dead);
    } else if (it->second.state == State::kDelayed) {
      if (it->second.deliveries == 0) {
        // A delayed message: due by the wall clock, which the steady timer only approximates.
        if (it->second.due_ms > context_.timer->clock().system_ms()) {
          schedule_due_locked(offset, it->second, it->second.due_ms);
          return;
        }
        --delayed_;
      }
      it->second.state = State::kReady;
      it->second.timer = {};
      it->second.token = 0;
      ready_.insert(offset);
      wake_one_locked();
    }
  }
  dead_letter(dead);
}

void GroupState::dead_letter(const std::vector<DeadLetter>& dead) {
  detail::RecordValidator parser;
  for (const DeadLetter& d : dead) {
    Status status;
    auto read = context_.partition->read(d.offset, 1, std::numeric_limits<std::size_t>::max());
    if (!read.ok() || read->empty()) {
      status = read.ok() ? Status::not_found("message vanished") : read.status();
    } else {
      auto fields = parser.produced_fields((*read)[0].line);
      if (!fields) {
        status = Status::corruption("stored record cannot be parsed");
      } else {
        std::string source = "{\"topic\":";
        detail::append_json_string(source, context_.topic);
        source += ",\"partition\":" + std::to_string(context_.partition_index) +
                  ",\"offset\":" + std::to_string(d.offset) + ",\"group\":";
        detail::append_json_string(source, context_.group);
        source += ",\"deliveries\":" + std::to_string(d.deliveries);
        // The dead letter of a dead letter keeps where the message first came from.
        if (fields->source_json) source += ",\"source\":" + *fields->source_json;
        source += "}";
        const Message letter{PayloadInternal::from_minified_json(std::move(fields->payload_json)),
                             std::move(fields->key), PayloadInternal::from_minified_json(std::move(source)),
                             std::move(fields->headers)};
        status = context_.dead_letter(letter);
      }
    }
    std::size_t newly = 0;
    const std::uint64_t offset = d.offset;
    if (status.ok()) status = acknowledge_durably(std::span(&offset, 1), /*dead_lettered=*/true, newly);
    if (!status.ok()) {
      // Not moved: leave it deliverable rather than lose it.
      std::lock_guard lock(mutex_);
      if (auto it = tracked_.find(offset);
          it != tracked_.end() && it->second.state == State::kDeadLettering) {
        it->second.state = State::kReady;
        ready_.insert(offset);
        wake_one_locked();
      }
    }
  }
}

Result<std::size_t> GroupState::ack(std::span<const std::uint64_t> offsets) {
  const std::uint64_t end = context_.partition->next_offset();
  for (std::uint64_t offset : offsets) {
    if (offset >= end) {
      return Status::not_found("id " + message_id(context_.partition_index, offset) +
                               " names no message of " + context_.topic + "/" +
                               std::to_string(context_.partition_index));
    }
  }
  // Replicated: the group as it opened goes first (a follower applying these acknowledgements to
  // no group would start it at offset 0, without its ordering).
  if (auto s = confirm_opening(); !s.ok()) return s;
  std::size_t newly = 0;
  if (auto s = acknowledge_durably(offsets, /*dead_lettered=*/false, newly); !s.ok()) return s;
  return newly;
}

Status GroupState::acknowledge_durably(std::span<const std::uint64_t> offsets, bool dead_lettered,
                                       std::size_t& newly) {
  newly = 0;
  const bool replicated = static_cast<bool>(context_.publish_state);
  bool any_fresh = false;
  {
    std::lock_guard lock(mutex_);
    if (removed_) return deleted_status();
    for (std::uint64_t offset : offsets) any_fresh = any_fresh || !progress_.is_acknowledged(offset);
  }
  // Acknowledging twice is not an error and needs no record. Replicated, a repeat (a client
  // retrying after a failover or a lost answer) is published again and answered once the in-sync
  // replicas hold it: the first one's record may never have reached them (its publication failed,
  // or this broker led in another epoch then). Not for a dead letter: the timer thread would wait.
  if (!any_fresh && (!replicated || dead_lettered)) return {};
  if (auto s = writable(); !s.ok()) return s;  // nothing done: a plain refusal
  bool closed = false;
  {
    std::shared_lock journal_lock(journal_mutex_);
    if (is_removed()) return deleted_status();
    closed = !journal_->is_open();
  }
  if (closed && any_fresh) {
    // A failed compaction left no log: open a new one rather than fail every ack until a restart.
    std::unique_lock journal_lock(journal_mutex_);
    if (is_removed()) return deleted_status();  // (its journal is gone on purpose)
    if (auto s = journal_->reopen_if_closed(); !s.ok()) return s;
  }
  std::vector<std::uint64_t> fresh;
  std::optional<StateTicket> ticket;
  {
    std::shared_lock journal_lock(journal_mutex_);
    if (is_removed()) return deleted_status();
    std::vector<std::uint64_t> held;  // acknowledged already (looked up again: a seek may have come)
    {
      std::lock_guard lock(mutex_);
      for (std::uint64_t offset : offsets)
        (progress_.is_acknowledged(offset) ? held : fresh).push_back(offset);
    }
    std::sort(fresh.begin(), fresh.end());
    fresh.erase(std::unique(fresh.begin(), fresh.end()), fresh.end());
    if (!fresh.empty()) {
      // Durable first: an acknowledgement that is answered must survive a crash.
      if (auto s = journal_->record_acks(fresh); !s.ok()) return s;
      std::lock_guard lock(mutex_);
      newly = apply_acks_locked(fresh, dead_lettered);
    }
    if (replicated && (!fresh.empty() || !dead_lettered)) {  // a dead letter acknowledged meanwhile: nothing
      // Acknowledgements commute with each other, so those published under the shared lock may go
      // in any order among themselves; a seek (exclusive) is published between them as applied.
      std::vector<std::uint64_t> all = fresh;
      if (!dead_lettered) all.insert(all.end(), held.begin(), held.end());
      std::sort(all.begin(), all.end());
      all.erase(std::unique(all.begin(), all.end()), all.end());
      std::string record = "[";
      for (std::size_t i = 0; i < all.size(); ++i) {
        if (i > 0) record += ',';
        record += std::to_string(all[i]);
      }
      record += ']';
      auto published = publish(std::move(record), /*changed_here=*/!fresh.empty());
      if (!published.ok()) return published.status();
      ticket = *published;
    }
  }
  if (!fresh.empty()) {
    compact_if_large();
    after_record();
  }
  return confirm(ticket);
}

std::size_t GroupState::apply_acks_locked(std::span<const std::uint64_t> offsets, bool dead_lettered) {
  const bool could_read_on = may_read_on_locked();
  std::size_t newly = 0;
  std::vector<std::uint64_t> holders;  // subscribers whose room grew
  for (std::uint64_t offset : offsets) {
    if (!progress_.acknowledge(offset)) continue;
    ++newly;
    if (auto it = tracked_.find(offset); it != tracked_.end()) {
      cancel_timer_locked(it->second);
      if (it->second.state == State::kDelayed && it->second.deliveries == 0) --delayed_;
      if (it->second.state == State::kBlocked) --blocked_;
      if (it->second.state == State::kInFlight) {
        if (auto sub = subscribers_.find(it->second.holder); sub != subscribers_.end())
          --sub->second.inflight;
        --inflight_;
        holders.push_back(it->second.holder);
      }
      ready_.erase(offset);
      Tracked done = std::move(it->second);
      tracked_.erase(it);
      release_key_locked(offset, done);
    }
  }
  (dead_lettered ? counters_.dead_lettered : counters_.acked) += newly;
  wake_if_read_resumes_locked(could_read_on);
  if (!holders.empty() && deliverable_locked()) {
    for (std::uint64_t holder : holders) wake_locked(holder);
  }
  return newly;
}

void GroupState::compact_if_large() {
  {
    // Under the journal lock: compaction replaces the journal's log, which log_bytes() reads.
    std::shared_lock journal_lock(journal_mutex_);
    if (journal_->log_bytes() < kCompactJournalBytes) return;
  }
  std::unique_lock journal_lock(journal_mutex_);
  if (journal_->log_bytes() < kCompactJournalBytes) return;  // another thread compacted meanwhile
  GroupProgress snapshot;
  {
    std::lock_guard lock(mutex_);
    snapshot = progress_;
  }
  // A failed compaction leaves the old snapshot (and the old log, or none, which the next ack
  // opens again); the next ack tries again.
  (void)journal_->compact(snapshot);
}

Status GroupState::nack(std::uint64_t offset, std::chrono::milliseconds delay) {
  if (offset >= context_.partition->next_offset()) {
    return Status::not_found("id " + message_id(context_.partition_index, offset) + " names no message");
  }
  std::vector<DeadLetter> dead;
  {
    std::lock_guard lock(mutex_);
    if (removed_) return deleted_status();
    auto it = tracked_.find(offset);
    if (it == tracked_.end() || it->second.state != State::kInFlight) {
      return Status::conflict("message " + message_id(context_.partition_index, offset) +
                              " is not in flight for group " + context_.group);
    }
    end_delivery_locked(it, delay, dead);
  }
  dead_letter(dead);
  return {};
}

Status GroupState::touch(std::uint64_t offset) {
  if (offset >= context_.partition->next_offset()) {
    return Status::not_found("id " + message_id(context_.partition_index, offset) + " names no message");
  }
  std::lock_guard lock(mutex_);
  if (removed_) return deleted_status();
  auto it = tracked_.find(offset);
  if (it == tracked_.end() || it->second.state != State::kInFlight) {
    return Status::conflict("message " + message_id(context_.partition_index, offset) +
                            " is not in flight for group " + context_.group);
  }
  schedule_locked(offset, it->second, subscribers_.at(it->second.holder).visibility_timeout);
  return {};
}

Result<std::vector<Delivery>> GroupState::read_deliveries(const std::vector<Chosen>& chosen) const {
  std::vector<Delivery> deliveries;
  deliveries.reserve(chosen.size());
  // What retention deleted after it was chosen is gone for the group too (the next choice forgets
  // it), whether its record was read ahead or not.
  const std::uint64_t log_start = context_.partition->log_start_offset();
  auto deliver = [&](const Chosen& c, std::string_view line) {
    deliveries.push_back({message_id(context_.partition_index, c.offset), context_.partition_index, c.offset,
                          c.delivery, std::string(line)});
  };
  for (std::size_t i = 0; i < chosen.size();) {
    if (!chosen[i].line.empty()) {
      if (chosen[i].offset >= log_start) deliver(chosen[i], chosen[i].line);
      ++i;
      continue;
    }
    // One read per run of consecutive offsets not read ahead.
    std::size_t run = 1;
    while (i + run < chosen.size() && chosen[i + run].line.empty() &&
           chosen[i + run].offset == chosen[i].offset + run)
      ++run;
    // A read stops at the end of a segment: read on until the run is complete.
    while (run > 0) {
      auto batch = context_.partition->read(chosen[i].offset, run, std::numeric_limits<std::size_t>::max());
      if (!batch.ok() && batch.status().code() == ErrorCode::kNotFound &&
          chosen[i].offset < context_.partition->log_start_offset()) {
        ++i;  // deleted by retention meanwhile (above)
        --run;
        continue;
      }
      if (!batch.ok()) return batch.status();
      if (batch->empty()) return Status::corruption("a delivered message could not be read back");
      for (std::size_t j = 0; j < batch->size(); ++j) deliver(chosen[i + j], (*batch)[j].line);
      i += batch->size();
      run -= batch->size();
    }
  }
  return deliveries;
}

Ordering GroupState::ordering() const {
  std::lock_guard lock(mutex_);
  return progress_.ordering_key ? Ordering::kKey : Ordering::kNone;
}

GroupStats GroupState::stats() const {
  std::lock_guard lock(mutex_);
  GroupStats stats = counters_;
  stats.committed_offset = progress_.committed;
  stats.inflight = inflight_;
  const std::uint64_t end = context_.partition->next_offset();
  stats.lag = end > progress_.committed ? end - progress_.committed : 0;
  stats.delayed = delayed_;
  stats.ordering = progress_.ordering_key ? Ordering::kKey : Ordering::kNone;
  return stats;
}

void GroupState::shutdown() {
  std::lock_guard lock(mutex_);
  stopping_ = true;
  for (auto& [id, sub] : subscribers_) sub.wake.notify_all();
}

Status GroupState::deleted_status() const {
  if (retired_) {
    return Status::unavailable("this broker no longer leads " + context_.topic + "/" +
                               std::to_string(context_.partition_index) +
                               " (the leader is named in /topics): consume and acknowledge there");
  }
  return Status::not_found("consumer group '" + context_.group + "' of " + context_.topic + "/" +
                           std::to_string(context_.partition_index) + " was deleted");
}

Status GroupState::remove() {
  std::optional<StateTicket> ticket;
  {
    // Exclusive: no record is being written while the journal goes, and none after (each writer
    // checks removed_ under the journal lock).
    if (auto s = writable(); !s.ok()) return s;
    std::unique_lock journal_lock(journal_mutex_);
    if (is_removed()) {
      if (retired_ || !context_.publish_state) return deleted_status();
      // Confirmed already: the broker may have freed the name, and a newer group of that name
      // exists; publishing the removal again would remove that one on the followers.
      if (removal_confirmed()) return {};
      // Removed already (a second deletion, the first one unconfirmed): published again, as a
      // repeated acknowledgement is. The broker keeps this object under the group's name until a
      // deletion is confirmed, so no new group of that name can be removed by it.
      auto published = publish(std::string(kRemovedRecord), /*changed_here=*/false);
      if (!published.ok()) return published.status();
      ticket = *published;
    } else {
      if (auto s = journal_->remove(); !s.ok()) return s;
      end_locked(/*retired=*/false);
      auto published = publish(std::string(kRemovedRecord), /*changed_here=*/true);
      if (!published.ok()) return published.status();
      ticket = *published;
    }
  }
  if (auto s = confirm(ticket); !s.ok()) return s;
  std::lock_guard lock(mutex_);
  removal_confirmed_ = true;  // before the broker frees the name
  return {};
}

Status GroupState::retire() {
  std::unique_lock journal_lock(journal_mutex_);
  if (is_removed()) return {};
  Status closed = journal_->close();
  end_locked(/*retired=*/true);
  return closed;
}

void GroupState::end_locked(bool retired) {
  {
    std::lock_guard lock(mutex_);
    removed_ = true;
    retired_ = retired;
    for (auto& [offset, tracked] : tracked_) cancel_timer_locked(tracked);
    tracked_.clear();
    ready_.clear();
    drop_read_ahead_locked();  // (a read ahead under way then keeps nothing either)
    key_queues_.clear();
    // Their take() ends with kNotFound (deleted) or kUnavailable (retired).
    for (auto& [id, sub] : subscribers_) sub.wake.notify_all();
  }
  // The broker keeps the object (pointers to it were handed out) but it need hear of no append:
  // without this, every produce would wake every group ever deleted on the partition. (Not under
  // mutex_, which the listener takes: removal waits for a call under way.)
  PartitionInternal::remove_append_listener(*context_.partition, listener_id_);
  listener_id_ = 0;
}

Status GroupState::sync_journal() {
  std::shared_lock journal_lock(journal_mutex_);
  return journal_->sync_if_behind();
}

}  // namespace mq::detail

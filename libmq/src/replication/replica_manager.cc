#include "replication/replica_manager.h"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "storage/internal_access.h"

namespace mq::replication {
namespace {
constexpr std::uint64_t kUnpublished = UINT64_MAX;
}  // namespace

struct ReplicaManager::Replica {
  std::string topic;
  std::uint32_t partition = 0;
  std::vector<std::uint32_t> replicas;  // placement, preferred leader first
  Partition* log = nullptr;
  std::unique_ptr<PartitionCoordinator> coordinator;

  // Exclusive for a role change (control thread); shared for appends as leader and role reads.
  mutable std::shared_mutex role_mutex;
  bool leading = false;                     // GUARDED_BY(role_mutex)
  std::uint64_t epoch = 0;                  // GUARDED_BY(role_mutex): led or followed
  std::optional<std::uint32_t> leader;      // GUARDED_BY(role_mutex): as etcd names it
  std::int64_t leader_create_revision = 0;  // GUARDED_BY(role_mutex): of our leader key, leading
  PartitionCoordinator::View view;          // GUARDED_BY(role_mutex): the latest read, leading
  std::shared_ptr<InSyncTracker> tracker;   // GUARDED_BY(role_mutex): leading
  std::shared_ptr<StateFeed> feed;          // GUARDED_BY(role_mutex): leading, with group state

  // Wakes a leader's long polls: an append to the log, a group-state record published. A long
  // poll waits for the count to move and takes no other lock while it holds activity_mutex: the
  // append path calls wake_fetches() under the log's listener locks, so reading the log here
  // (which takes its segment locks) would close a lock cycle with a segment roll.
  std::mutex activity_mutex;
  std::condition_variable activity;
  std::uint64_t activity_count = 0;  // GUARDED_BY(activity_mutex)
  std::uint64_t append_listener = 0;
  void wake_fetches() {
    std::lock_guard lock(activity_mutex);
    ++activity_count;
    activity.notify_all();
  }
  std::uint64_t activity_seen() {
    std::lock_guard lock(activity_mutex);
    return activity_count;
  }

  // The fetch thread's: the group state it applied (the leader epoch it came from; 0: none yet).
  std::uint64_t state_epoch = 0;
  std::uint64_t state_version = 0;
  Clock::TimePoint failure_reported{};  // when a failed fetch was last reported on stderr

  std::mutex epochs_mutex;
  std::unique_ptr<EpochCache> epochs;                  // GUARDED_BY(epochs_mutex)
  std::atomic<std::uint64_t> known_high_watermark{0};  // learnt as a follower
  std::atomic<std::uint64_t> published_limit{kUnpublished};

  // Control thread only.
  bool leaderless_seen = false;
  Clock::TimePoint leaderless_since{};
  std::uint32_t fetch_leader = 0;
  std::uint64_t fetch_epoch = 0;

  // The fetch thread and how to stop it.
  std::thread fetcher;
  std::mutex fetch_mutex;
  std::condition_variable fetch_wake;
  bool fetch_stop = false;  // GUARDED_BY(fetch_mutex)

  Status not_leading() const {  // with role_mutex held
    const std::uint32_t owner = leader.value_or(replicas.front());
    return Status::not_owned("partition " + std::to_string(partition) + " of topic '" + topic +
                                 "' is led by broker " + std::to_string(owner) + " (leader epoch " +
                                 std::to_string(epoch) + ")",
                             owner);
  }
};

ReplicaManager::ReplicaManager(ReplicaManagerOptions options, std::shared_ptr<EtcdClient> etcd,
                               std::shared_ptr<FetchTransport> transport, std::shared_ptr<Clock> clock)
    : options_(std::move(options)),
      keys_(options_.prefix),
      me_{options_.self, options_.disk_id},
      etcd_(std::move(etcd)),
      transport_(std::move(transport)),
      clock_(std::move(clock)),
      fs_(make_posix_file_system()) {}

Result<std::unique_ptr<ReplicaManager>> ReplicaManager::start(ReplicaManagerOptions options,
                                                              std::vector<TopicPartitions> topics,
                                                              PartitionLookup lookup,
                                                              std::shared_ptr<EtcdClient> etcd,
                                                              std::shared_ptr<FetchTransport> transport,
                                                              std::shared_ptr<Clock> clock) {
  if (options.broker_count == 0 || options.self >= options.broker_count)
    return Status::invalid_argument("the broker index must be below the broker count");
  if (options.replication_factor == 0 || options.replication_factor > options.broker_count)
    return Status::invalid_argument("the replication factor must be 1 to the broker count");
  if (options.min_insync == 0 || options.min_insync > options.replication_factor)
    return Status::invalid_argument("the minimum of in-sync replicas must be 1 to the replication factor");
  std::unique_ptr<ReplicaManager> manager(
      new ReplicaManager(std::move(options), std::move(etcd), std::move(transport), std::move(clock)));
  const auto& o = manager->options_;
  for (const auto& t : topics) {
    for (std::uint32_t p = 0; p < t.partitions; ++p) {
      auto replicas = replicas_of(p, o.broker_count, o.replication_factor);
      if (std::find(replicas.begin(), replicas.end(), o.self) == replicas.end()) continue;
      auto r = std::make_unique<Replica>();
      r->topic = t.name;
      r->partition = p;
      r->replicas = std::move(replicas);
      auto log = lookup(t.name, p);
      if (!log.ok()) return log.status();
      r->log = *log;
      auto epochs = EpochCache::open(*manager->fs_, o.data_dir + "/" + t.name,
                                     "partition-" + std::to_string(p) + ".epochs");
      if (!epochs.ok()) return epochs.status();
      r->epochs = std::make_unique<EpochCache>(std::move(*epochs));
      r->coordinator = std::make_unique<PartitionCoordinator>(*manager->etcd_, manager->keys_, t.name, p);
      // Nothing is visible until this replica leads and its followers confirm (section 5).
      r->log->set_read_limit(0);
      r->published_limit = 0;
      r->append_listener = mq::detail::PartitionInternal::add_append_listener(
          *r->log, [raw = r.get()] { raw->wake_fetches(); });
      manager->replicas_[{t.name, p}] = std::move(r);
    }
  }
  LeaseKeeper::Options lease_options{o.lease_ttl, [m = manager.get()] {
                                       m->lease_lost_ = true;
                                       m->wake_control();
                                     }};
  auto lease = LeaseKeeper::start(*manager->etcd_, lease_options, manager->clock_);
  if (!lease.ok()) return lease.status();
  manager->lease_ = std::move(*lease);
  if (auto s = manager->register_broker(); !s.ok()) return s;
  manager->watch_ = manager->etcd_->watch_prefix(
      manager->keys_.partitions(), 0, [m = manager.get()](const auto&) { m->wake_control(); },
      [m = manager.get()](const auto&) { m->wake_control(); });
  manager->control_ = std::thread([m = manager.get()] { m->control_loop(); });
  manager->wake_control();
  return manager;
}

ReplicaManager::~ReplicaManager() { stop(/*hand_over=*/false); }

Status ReplicaManager::register_broker() {
  const auto lease = current_lease();
  if (!lease) return Status::unavailable("no lease");
  auto put = etcd_->put(keys_.broker(options_.self), encode(BrokerValue{options_.self_url, options_.disk_id}),
                        lease->id());
  return put.ok() ? Status{} : put.status();
}

std::int64_t ReplicaManager::lease_id() const {
  const auto lease = current_lease();
  return lease ? lease->id() : 0;
}

bool ReplicaManager::lease_valid() const {
  const auto lease = current_lease();
  return lease && !lease_lost_ && lease->valid();
}

void ReplicaManager::wake_control() {
  std::lock_guard lock(control_mutex_);
  control_pending_ = true;
  control_wake_.notify_all();
}

void ReplicaManager::stop(bool hand_over) {
  stopped_ = true;
  {
    std::lock_guard lock(control_mutex_);
    if (stopping_ && !control_.joinable()) return;
    stopping_ = true;
    control_wake_.notify_all();
  }
  if (control_.joinable()) control_.join();
  if (watch_) watch_->stop();
  for (auto& [key, r] : replicas_) {
    if (hand_over) {
      std::int64_t revision = 0;
      {
        std::shared_lock lock(r->role_mutex);
        if (r->leading) revision = r->leader_create_revision;
      }
      if (revision != 0) (void)r->coordinator->step_down(revision);
    }
    stop_leading(*r);
    stop_fetching(*r);
    r->wake_fetches();  // long polls under way answer now (stopped_)
    if (r->append_listener != 0) {
      mq::detail::PartitionInternal::remove_append_listener(*r->log, r->append_listener);
      r->append_listener = 0;
    }
  }
  if (const auto lease = current_lease()) lease->stop(/*revoke=*/hand_over);
}

Result<ReplicaManager::Replica*> ReplicaManager::find(const std::string& topic,
                                                      std::uint32_t partition) const {
  auto it = replicas_.find({topic, partition});
  if (it == replicas_.end()) {
    const auto replicas = replicas_of(partition, options_.broker_count, options_.replication_factor);
    return Status::not_owned("broker " + std::to_string(options_.self) + " holds no replica of partition " +
                                 std::to_string(partition) + " of topic '" + topic + "'",
                             replicas.front());
  }
  return it->second.get();
}

Result<ReplicaManager::Role> ReplicaManager::role(const std::string& topic, std::uint32_t partition) const {
  auto r = find(topic, partition);
  if (!r.ok()) return r.status();
  const bool lease = lease_valid();  // before the role lock: never the lease lock inside it
  std::shared_lock lock((*r)->role_mutex);
  Role role;
  role.leading = (*r)->leading;
  role.epoch = (*r)->epoch;
  role.leader = (*r)->leader;
  role.lease_valid = lease;
  if ((*r)->tracker) {
    role.high_watermark = (*r)->tracker->high_watermark();
    role.isr = (*r)->tracker->isr();
  } else {
    role.high_watermark = (*r)->known_high_watermark;
  }
  return role;
}

Result<std::uint64_t> ReplicaManager::append_as_leader(const std::string& topic, std::uint32_t partition,
                                                       const std::function<Result<std::uint64_t>()>& append) {
  auto found = find(topic, partition);
  if (!found.ok()) return found.status();
  Replica& r = **found;
  std::shared_lock lock(r.role_mutex);
  if (!r.leading) return r.not_leading();
  if (!lease_valid())
    return Status::unavailable("this broker's etcd lease lapsed; it leads nothing until it has a new one");
  // Too few in sync: refused before anything is stored (nothing acknowledged, nothing kept).
  if (auto s = r.tracker->writable(); !s.ok()) return s;
  auto end = append();
  if (!end.ok()) return end.status();
  r.tracker->leader_appended(*end, *end);
  publish_high_watermark(r);
  return end;
}

Status ReplicaManager::await_replicated(const std::string& topic, std::uint32_t partition, std::uint64_t end,
                                        std::chrono::milliseconds timeout) {
  auto found = find(topic, partition);
  if (!found.ok()) return found.status();
  Replica& r = **found;
  std::shared_ptr<InSyncTracker> tracker;
  {
    std::shared_lock lock(r.role_mutex);
    if (!r.leading) return r.not_leading();
    tracker = r.tracker;
  }
  Status s = tracker->wait_acknowledged(end, timeout);
  publish_high_watermark(r);
  if (s.code() == ErrorCode::kShuttingDown)
    return Status::unavailable("this broker stopped leading the partition before the write was confirmed");
  if (!s.ok()) return s;
  if (!lease_valid())
    return Status::unavailable("this broker's etcd lease lapsed before the write was confirmed");
  return {};
}

void ReplicaManager::publish_high_watermark(Replica& r) {
  std::shared_ptr<InSyncTracker> tracker;
  {
    std::shared_lock lock(r.role_mutex);
    if (!r.leading) return;
    tracker = r.tracker;
  }
  // Readers see the log up to the high watermark; published only upwards (kUnpublished: anything).
  const std::uint64_t hw = tracker->high_watermark();
  std::uint64_t published = r.published_limit.load();
  while (published == kUnpublished || published < hw) {
    if (r.published_limit.compare_exchange_weak(published, hw)) {
      r.log->set_read_limit(hw);
      return;
    }
  }
}

Result<mq::detail::StateTicket> ReplicaManager::publish_state(const std::string& topic,
                                                              std::uint32_t partition,
                                                              mq::detail::GroupStateRecord record) {
  auto found = find(topic, partition);
  if (!found.ok()) return found.status();
  Replica& r = **found;
  if (!lease_valid())
    return Status::unavailable("this broker's etcd lease lapsed; it leads nothing until it has a new one");
  mq::detail::StateTicket ticket;
  {
    std::shared_lock lock(r.role_mutex);
    if (!r.leading) return r.not_leading();
    if (!r.feed) return Status::unavailable("group state is not replicated here");
    ticket.epoch = r.epoch;
    ticket.version = r.feed->publish(std::move(record));
    r.tracker->state_published(ticket.version);
  }
  r.wake_fetches();
  return ticket;
}

Status ReplicaManager::state_writable(const std::string& topic, std::uint32_t partition) const {
  auto found = find(topic, partition);
  if (!found.ok()) return found.status();
  const Replica& r = **found;
  if (!lease_valid())
    return Status::unavailable("this broker's etcd lease lapsed; it leads nothing until it has a new one");
  std::shared_lock lock(r.role_mutex);
  if (!r.leading) return r.not_leading();
  return r.tracker->writable();
}

Status ReplicaManager::confirm_state(const std::string& topic, std::uint32_t partition,
                                     mq::detail::StateTicket ticket) {
  auto found = find(topic, partition);
  if (!found.ok()) return found.status();
  Replica& r = **found;
  std::shared_ptr<InSyncTracker> tracker;
  {
    std::shared_lock lock(r.role_mutex);
    if (!r.leading || r.epoch != ticket.epoch)
      return Status::unavailable("this broker stopped leading the partition before its followers confirmed");
    tracker = r.tracker;
  }
  Status s = tracker->wait_state_acknowledged(ticket.version, options_.state_timeout);
  if (s.code() == ErrorCode::kShuttingDown)
    return Status::unavailable("this broker stopped leading the partition before its followers confirmed");
  if (!s.ok()) return s;
  if (!lease_valid())
    return Status::unavailable("this broker's etcd lease lapsed before its followers confirmed");
  return {};
}

Result<FetchAnswer> ReplicaManager::serve_fetch(const std::string& topic, std::uint32_t partition,
                                                const FetchRequest& request, const ReplicaId& follower,
                                                std::chrono::milliseconds wait) {
  auto found = find(topic, partition);
  if (!found.ok()) return found.status();
  Replica& r = **found;
  std::shared_ptr<InSyncTracker> tracker;
  std::shared_ptr<StateFeed> feed;
  std::uint64_t epoch = 0;
  {
    std::shared_lock lock(r.role_mutex);
    if (!r.leading) return r.not_leading();
    tracker = r.tracker;
    feed = r.feed;
    epoch = r.epoch;
  }
  // The group state the follower holds counts only if it is this epoch's (versions restart with
  // each epoch); otherwise it gets a snapshot of every group.
  const bool state_current = request.state_epoch == epoch;
  const std::uint64_t follower_state = state_current ? request.state_version : 0;
  const auto add_state = [&](FetchAnswer& answer) -> Status {
    if (!feed || answer.truncate_to || answer.reset_to) return {};
    if (state_current) {
      if (auto records = feed->read_after(request.state_version, request.max_bytes)) {
        answer.state_version = request.state_version + records->size();
        answer.state = std::move(*records);
        return {};
      }
    }
    // The head first, then the groups: every record up to it was applied before it was published,
    // so the snapshot holds them (and maybe later ones, which replay harmlessly over it).
    const std::uint64_t head = feed->head();
    auto snapshot = options_.groups->state_snapshot(topic, partition);
    if (!snapshot.ok()) return snapshot.status();
    answer.state_version = head;
    answer.state_snapshot = true;
    answer.state = std::move(*snapshot);
    return {};
  };
  auto answer_now = [&]() -> Result<FetchAnswer> {
    if (stopped_) return Status::unavailable("this broker is stopping");
    std::unique_ptr<EpochCache> epochs;
    {
      std::lock_guard lock(r.epochs_mutex);
      epochs = std::make_unique<EpochCache>(*r.epochs);
    }
    auto answer = answer_fetch(*r.log, *epochs, epoch, tracker->high_watermark(), request);
    // The follower's progress counts only once its log is known to be a prefix of this one (the
    // divergence check passed): a returning old leader claims offsets whose lines differ.
    // A follower claiming more than this log holds (with an "empty" log past its end, which skips
    // the divergence check) gets no credit either.
    if (answer.ok() && !answer->truncate_to && !answer->reset_to &&
        request.offset <= r.log->log_end_offset()) {
      tracker->follower_fetched(
          follower, std::min({request.durable, request.offset, r.log->log_end_offset()}), follower_state);
      publish_high_watermark(r);
      answer->high_watermark = tracker->high_watermark();
    }
    if (answer.ok()) {
      if (auto s = add_state(*answer); !s.ok()) return s;
    }
    return answer;
  };
  const std::uint64_t activity_before = r.activity_seen();  // before looking: no wake-up is missed
  auto answer = answer_now();
  if (!answer.ok() || answer->truncate_to || answer->reset_to || answer->line_count > 0 ||
      !answer->state.empty() || answer->state_snapshot || wait.count() == 0)
    return answer;
  // Nothing new: a long poll, woken by the next append or group-state record.
  {
    std::unique_lock lock(r.activity_mutex);
    r.activity.wait_for(lock, wait, [&] { return stopped_.load() || r.activity_count != activity_before; });
  }
  return answer_now();
}

void ReplicaManager::control_loop() {
  while (true) {
    {
      std::unique_lock lock(control_mutex_);
      control_wake_.wait_for(lock, options_.tick, [&] { return control_pending_ || stopping_; });
      if (stopping_) return;
      control_pending_ = false;
    }
    if (lease_lost_) {
      // Lost: lead nothing, then start over with a new lease.
      for (auto& [key, r] : replicas_) stop_leading(*r);
      LeaseKeeper::Options lease_options{options_.lease_ttl, [this] {
                                           lease_lost_ = true;
                                           wake_control();
                                         }};
      auto lease = LeaseKeeper::start(*etcd_, lease_options, clock_);
      if (!lease.ok()) continue;  // etcd unreachable: the next tick tries again
      std::shared_ptr<LeaseKeeper> old_lease;
      {
        std::lock_guard lock(lease_mutex_);
        old_lease = std::exchange(lease_, std::move(*lease));
        lease_lost_ = false;
      }
      if (old_lease) old_lease->stop(/*revoke=*/false);
      if (!register_broker().ok()) continue;
    }
    // Which brokers are alive, on which disk: their keys live as long as their leases.
    std::optional<std::vector<ReplicaId>> alive;
    if (auto brokers = etcd_->get_prefix(keys_.brokers()); brokers.ok()) {
      alive.emplace();
      for (const auto& kv : brokers->kvs) {
        auto index = keys_.parse_broker_key(kv.key);
        auto value = decode_broker(kv.value);
        if (index && value.ok()) alive->push_back({*index, value->disk_id});
      }
    }
    for (auto& [key, r] : replicas_) {
      evaluate(*r, alive);
      keep_isr(*r, alive);
    }
  }
}

void ReplicaManager::evaluate(Replica& r, const std::optional<std::vector<ReplicaId>>& alive) {
  auto view = r.coordinator->read();
  if (!view.ok()) return;  // etcd unreachable: leaders go on while their lease holds
  if (!view->state) {
    if (r.replicas.front() != options_.self) return;  // the preferred leader creates it
    view = r.coordinator->create_state(me_);
    if (!view.ok() || !view->state) return;
  }
  bool leading = false;
  std::int64_t mine = 0;
  {
    std::shared_lock lock(r.role_mutex);
    leading = r.leading;
    mine = r.leader_create_revision;
  }
  if (view->leader) {
    r.leaderless_seen = false;
    if (leading && view->leader->broker == options_.self && view->leader_create_revision == mine) {
      std::unique_lock lock(r.role_mutex);
      r.view = *view;
      return;
    }
    if (leading) stop_leading(r);
    if (view->leader->broker == options_.self) return;  // a key of an earlier lease of ours: it lapses
    {
      std::unique_lock lock(r.role_mutex);
      r.leader = view->leader->broker;
      r.epoch = view->leader->epoch;
    }
    become_follower(r, view->leader->broker, view->leader->epoch);
    return;
  }
  // Nobody leads.
  if (leading) stop_leading(r);
  {
    std::unique_lock lock(r.role_mutex);
    r.leader.reset();
  }
  const auto& isr = view->state->isr;
  if (std::find(isr.begin(), isr.end(), me_) == isr.end() || !lease_valid()) return;
  // The preferred live in-sync replica first: each later one in placement order waits 300 ms
  // more, so that a live preferred leader is not pre-empted, and a dead one delays nobody.
  std::uint32_t rank = 0;
  for (std::uint32_t b : r.replicas) {
    if (b == options_.self) break;
    const auto member =
        std::find_if(isr.begin(), isr.end(), [b](const ReplicaId& m) { return m.broker == b; });
    if (member == isr.end()) continue;
    if (alive && std::find(alive->begin(), alive->end(), *member) == alive->end()) continue;
    ++rank;
  }
  const auto now = clock_->now();
  if (!r.leaderless_seen) {
    r.leaderless_seen = true;
    r.leaderless_since = now;
  }
  if (now < r.leaderless_since + rank * std::chrono::milliseconds(300)) return;
  auto election = r.coordinator->try_lead(*view, me_, lease_id());
  if (!election.ok()) return;
  if (election->won) {
    r.leaderless_seen = false;
    become_leader(r, election->view);
  }
}

void ReplicaManager::become_leader(Replica& r, const PartitionCoordinator::View& view) {
  stop_fetching(r);
  const std::uint64_t end = r.log->log_end_offset();
  {
    std::lock_guard lock(r.epochs_mutex);
    // A log with no epoch at all (data from before replication, or a lost epoch file): its lines
    // count as this epoch's, so that followers can compare them (else they could never copy them).
    const std::uint64_t start = r.epochs->newest() ? end : r.log->log_start_offset();
    if (!r.epochs->assign(view.state->epoch, start).ok()) {
      // Without its epoch on disk it cannot lead safely (R4): hand the leadership back.
      (void)r.coordinator->step_down(view.leader_create_revision);
      return;
    }
  }
  auto tracker = std::make_shared<InSyncTracker>(
      me_, view.state->isr, InSyncTracker::Options{options_.min_insync, options_.replica_lag}, clock_,
      std::min(r.known_high_watermark.load(), end));
  tracker->leader_appended(end, end);
  {
    std::unique_lock lock(r.role_mutex);
    r.feed = options_.groups ? std::make_shared<StateFeed>() : nullptr;
    r.leading = true;
    r.epoch = view.state->epoch;
    r.leader = options_.self;
    r.leader_create_revision = view.leader_create_revision;
    r.view = view;
    r.tracker = std::move(tracker);
  }
  r.published_limit = kUnpublished;  // publish whatever this epoch's tracker says
  publish_high_watermark(r);
  notify_changed();
}

void ReplicaManager::stop_leading(Replica& r) {
  std::shared_ptr<InSyncTracker> tracker;
  {
    std::unique_lock lock(r.role_mutex);
    if (!r.leading) return;
    r.leading = false;
    r.leader_create_revision = 0;
    tracker = std::move(r.tracker);
    r.feed.reset();
  }
  if (tracker) {
    r.known_high_watermark = tracker->high_watermark();
    tracker->stop();
  }
  notify_changed();
}

void ReplicaManager::stop_fetching(Replica& r) {
  if (!r.fetcher.joinable()) return;
  {
    std::lock_guard lock(r.fetch_mutex);
    r.fetch_stop = true;
    r.fetch_wake.notify_all();
  }
  r.fetcher.join();
}

void ReplicaManager::become_follower(Replica& r, std::uint32_t leader, std::uint64_t epoch) {
  if (r.fetcher.joinable() && r.fetch_leader == leader && r.fetch_epoch == epoch) return;
  stop_fetching(r);
  {
    std::lock_guard lock(r.fetch_mutex);
    r.fetch_stop = false;
  }
  r.fetch_leader = leader;
  r.fetch_epoch = epoch;
  r.fetcher = std::thread([this, &r, leader, epoch] { fetch_loop(r, leader, epoch); });
}

void ReplicaManager::fetch_loop(Replica& r, std::uint32_t leader, std::uint64_t epoch) {
  auto backoff = std::chrono::milliseconds(50);
  const auto pause = [&](std::chrono::milliseconds how_long) {
    std::unique_lock lock(r.fetch_mutex);
    return !r.fetch_wake.wait_for(lock, how_long, [&] { return r.fetch_stop; });
  };
  while (true) {
    {
      std::lock_guard lock(r.fetch_mutex);
      if (r.fetch_stop) return;
    }
    FetchRequest request;
    request.leader_epoch = epoch;
    request.offset = r.log->log_end_offset();
    request.log_start = r.log->log_start_offset();
    request.durable = request.offset;  // append_copied returns once durable per FSYNC
    request.max_bytes = options_.fetch_max_bytes;
    request.state_epoch = r.state_epoch;
    request.state_version = r.state_version;
    {
      std::lock_guard lock(r.epochs_mutex);
      if (auto newest = r.epochs->newest()) request.last_epoch = newest->epoch;
    }
    auto answer = transport_->fetch(leader, r.topic, r.partition, request, me_, options_.fetch_wait);
    if (!answer.ok()) report_fetch_failure(r, leader, answer.status());
    if (!answer.ok() || answer->leader_epoch != epoch) {
      // Another leader, or none reachable: the control thread looks at etcd again.
      if (answer.ok() || answer.status().code() == ErrorCode::kConflict ||
          answer.status().code() == ErrorCode::kNotOwned)
        wake_control();
      if (!pause(backoff)) return;
      backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
      continue;
    }
    backoff = std::chrono::milliseconds(50);
    const std::uint64_t hw = answer->high_watermark;
    const std::optional<std::uint64_t> state_version = answer->state_version;
    const bool state_snapshot = answer->state_snapshot;
    std::vector<mq::detail::GroupStateRecord> state = std::move(answer->state);
    Result<std::uint64_t> applied = Status{};
    {
      std::lock_guard lock(r.epochs_mutex);
      applied = apply_fetch_answer(*r.log, *r.epochs, std::move(*answer));
    }
    if (!applied.ok()) {
      report_fetch_failure(r, leader, applied.status());
      if (!pause(std::chrono::milliseconds(200))) return;
      continue;
    }
    // The group state after the lines: its records may name offsets just copied. A delta applies
    // only over this epoch's state; a snapshot replaces whatever is here.
    if (options_.groups && state_version && (state_snapshot || r.state_epoch == epoch)) {
      if (auto s = options_.groups->apply_state(r.topic, r.partition, state_snapshot, state); s.ok()) {
        r.state_epoch = epoch;
        r.state_version = *state_version;
      } else {
        report_fetch_failure(r, leader, s);
        r.state_epoch = 0;  // ask for a snapshot next
        if (!pause(std::chrono::milliseconds(200))) return;
        continue;
      }
    }
    r.known_high_watermark = std::min(hw, *applied);
    notify_changed();
    // Retention keeps what lies above the read limit: a follower's is its leader's high watermark.
    r.log->set_read_limit(r.known_high_watermark.load());
  }
}

void ReplicaManager::report_fetch_failure(Replica& r, std::uint32_t leader, const Status& why) {
  // Once per 10 s per partition: a follower that cannot copy (a wrong secret, a full disk) shrinks
  // the ISR, and the operator must be able to see why; a failover's few failed fetches are normal.
  const auto now = clock_->now();
  if (r.failure_reported != Clock::TimePoint{} && now - r.failure_reported < std::chrono::seconds(10)) return;
  r.failure_reported = now;
  std::fprintf(stderr, "mq replication: %s/%u: fetching from broker %u failed: %s\n", r.topic.c_str(),
               r.partition, leader, why.to_string().c_str());
}

void ReplicaManager::keep_isr(Replica& r, const std::optional<std::vector<ReplicaId>>& alive) {
  std::shared_ptr<InSyncTracker> tracker;
  PartitionCoordinator::View view;
  std::int64_t mine = 0;
  {
    std::shared_lock lock(r.role_mutex);
    if (!r.leading) return;
    tracker = r.tracker;
    view = r.view;
    mine = r.leader_create_revision;
  }
  if (alive) {
    // A member whose broker is gone (or back on another disk) leaves the ISR now: waiting
    // replica_lag for it would hold every write back that long after a failover.
    std::vector<ReplicaId> gone;
    for (const auto& member : view.state ? view.state->isr : std::vector<ReplicaId>{}) {
      if (std::find(alive->begin(), alive->end(), member) == alive->end()) gone.push_back(member);
    }
    if (!gone.empty()) tracker->mark_gone(gone);
  }
  auto proposal = tracker->proposed_isr();
  if (!proposal || !lease_valid()) return;
  auto changed = r.coordinator->change_isr(view, mine, *proposal);
  if (!changed.ok() || !*changed) {
    wake_control();  // the state moved: read it again
    return;
  }
  tracker->isr_committed(*proposal);
  publish_high_watermark(r);
  notify_changed();
  auto now = r.coordinator->read();
  if (now.ok()) {
    std::unique_lock lock(r.role_mutex);
    if (r.leading && r.leader_create_revision == mine) r.view = *now;
  }
}

}  // namespace mq::replication

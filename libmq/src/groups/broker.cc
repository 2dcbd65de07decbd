#include "mq/broker.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <tuple>

#include "common/names.h"
#include "common/partition_turns.h"
#include "groups/group_state.h"
#include "groups/leadership.h"
#include "groups/message_ids.h"
#include "groups/redriver.h"
#include "groups/timer.h"
#include "mq/log_store.h"
#include "mq/topic.h"
#include "storage/bounded_file_system.h"

namespace mq {
namespace {

constexpr std::string_view kDeadLetterSuffix = "-dlq";
// Descriptors the acknowledgement journals of all groups keep open between uses (two per journal).
// Closing a journal with unsynced writes (all of them, between checkpoints of the shared
// acknowledgement log) syncs it first: a broker acking on more journals at once than fit pays a sync
// per reopening. 256 is a quarter of the usual soft limit of 1024 a library user runs under.
constexpr std::size_t kMaxOpenJournalFiles = 256;

Status invalid_name(std::string_view what, std::string_view name) {
  return detail::invalid_name(std::string(what) + " name", name);
}

std::string groups_dir(const std::string& data_dir, std::string_view topic) {
  return data_dir + "/" + std::string(topic) + "/groups";
}

}  // namespace

struct Broker::State : private Timer::Target, public detail::GroupStateHost {
  struct TopicEntry {
    std::unique_ptr<Topic> topic;
    TopicSettings settings;
    // Messages retention deleted, per partition (since start); sized once, read by stats().
    std::vector<std::atomic<std::uint64_t>> retention_deleted;
  };
  // Timer entries of the broker itself: the journal sync (FSYNC=interval) and retention.
  static constexpr std::uint64_t kJournalSyncTimer = 0;
  static constexpr std::uint64_t kRetentionTimer = 1;
  static constexpr std::uint64_t kRetentionAfterRollTimer = 2;
  using GroupKey = std::tuple<std::string, std::uint32_t, std::string>;

  Config config;
  std::shared_ptr<Clock> clock;
  // Replicated partitions: who leads each (nullptr: ownership is static, BROKER_INDEX/COUNT).
  std::shared_ptr<detail::Leadership> leadership;
  std::unique_ptr<LogStore> store;
  mutable std::shared_mutex topics_mutex;
  std::map<std::string, std::unique_ptr<TopicEntry>, std::less<>> topics;  // GUARDED_BY(topics_mutex)
  // Shared by every group's journal (nullptr with FSYNC=never); declared before the groups so that
  // it outlives them.
  std::unique_ptr<AckWal> ack_log;
  mutable std::mutex groups_mutex;
  std::map<GroupKey, std::unique_ptr<ConsumerGroup>> groups;  // GUARDED_BY(groups_mutex)
  // Deleted groups, kept until the broker goes: Broker::group() handed out pointers to them.
  std::vector<std::unique_ptr<ConsumerGroup>> deleted_groups;  // GUARDED_BY(groups_mutex)
  // Groups deleted since start and not made again (by a consume or a seek): a late ack of a
  // delivery from before the deletion must not bring one back at the earliest message.
  std::set<GroupKey> deleted_names;  // GUARDED_BY(groups_mutex)
  // Replicated: the journals of groups on partitions this broker follows, written with its leader's
  // records (libmq/docs/replication.md section 7); a group's entry goes when it opens here as leader.
  struct FollowerJournal {
    std::mutex mutex;  // one writer at a time: the fetch thread's records, a checkpoint's sync
    std::unique_ptr<AckJournal> journal;
    GroupProgress progress;
  };
  std::mutex follower_journals_mutex;
  std::map<GroupKey, std::shared_ptr<FollowerJournal>>
      follower_journals;  // GUARDED_BY(follower_journals_mutex)
  // Keyless produces: the owned partitions of a topic take turns, one message or batch each.
  detail::PartitionTurns turns{1};
  // The redrive position of each dead-letter partition, opened on first use.
  std::mutex redrivers_mutex;
  std::map<std::pair<std::string, std::uint32_t>, std::unique_ptr<detail::Redriver>> redrivers;  // GUARDED_BY

  // nullptr when the dead-letter topic has no letters yet (it is created by the first).
  Result<detail::Redriver*> redriver(std::string_view topic, std::uint32_t partition) {
    if (!is_valid_name(topic)) return invalid_name("topic", topic);
    const std::string_view source =
        topic.substr(0, topic.size() - std::min(topic.size(), kDeadLetterSuffix.size()));
    if (!topic.ends_with(kDeadLetterSuffix) || !find_topic(source).ok()) {
      return Status::invalid_argument("'" + std::string(topic) + "' is not a dead-letter topic (<topic>" +
                                      std::string(kDeadLetterSuffix) + " of a topic of this broker)");
    }
    auto entry = find_topic(topic);
    if (!entry.ok()) {
      auto p = resolve(source, partition);  // the partitions it will have
      if (!p.ok()) return p.status();
      return static_cast<detail::Redriver*>(nullptr);
    }
    auto p = resolve(**entry, partition);
    if (!p.ok()) return p.status();
    return redriver_of(std::string(topic), partition, **p);
  }
  // The redriver of a dead-letter partition whose log is `letters`, made on first use.
  detail::Redriver* redriver_of(const std::string& topic, std::uint32_t partition, Partition& letters) {
    std::lock_guard lock(redrivers_mutex);
    auto& slot = redrivers[{topic, partition}];
    if (slot) return slot.get();
    std::optional<detail::Redriver::Replication> replication;
    if (leadership) {
      replication = detail::Redriver::Replication{
          [this, topic, partition] { return leadership->state_writable(topic, partition); },
          [this, topic, partition](std::uint64_t position) {
            return leadership->publish_state(
                topic, partition,
                {std::string(detail::kRedrivePositionName), detail::Redriver::position_record(position)});
          },
          [this, topic, partition](detail::StateTicket ticket) {
            return leadership->confirm_state(topic, partition, ticket);
          }};
    }
    slot = std::make_unique<detail::Redriver>(
        file_system(), redrive_dir(topic), partition, letters, store->options().fsync != FsyncMode::kNever,
        [this](std::string_view t, std::uint32_t q) { return resolve(t, q); },
        [this](Partition& log, std::span<const Message> messages) { return append(log, messages); },
        std::move(replication));
    return slot.get();
  }
  std::string redrive_dir(std::string_view topic) const {
    return store->options().data_dir + "/" + std::string(topic) + "/redrive";
  }

  // Declared last so that it is destroyed first: its callbacks use the groups and topics.
  std::unique_ptr<Timer> timer;
  std::atomic<bool> stopping{false};

  Result<TopicEntry*> find_topic(std::string_view name) const {
    if (!is_valid_name(name)) return invalid_name("topic", name);
    std::shared_lock lock(topics_mutex);
    auto it = topics.find(name);
    if (it == topics.end()) return Status::not_found("unknown topic '" + std::string(name) + "'");
    return it->second.get();
  }

  Status add_topic(const TopicSpec& spec) {
    auto topic = Topic::open(*store, spec, config.broker);
    if (!topic.ok()) return topic.status();
    auto entry = std::make_unique<TopicEntry>();
    entry->topic = std::move(topic.value());
    entry->settings = spec.settings;
    entry->retention_deleted = std::vector<std::atomic<std::uint64_t>>(entry->topic->partition_count());
    topics[spec.name] = std::move(entry);
    return {};
  }

  Result<Partition*> resolve(const TopicEntry& entry, std::uint32_t partition) const {
    const Topic& topic = *entry.topic;
    if (partition >= topic.partition_count()) {
      return Status::not_found("topic '" + topic.name() + "' has " + std::to_string(topic.partition_count()) +
                               " partitions; there is no partition " + std::to_string(partition));
    }
    Partition* p = topic.partition(partition);
    if (leadership) {
      if (auto s = leadership->check_leading(topic.name(), partition); !s.ok()) return s;
    }
    if (p == nullptr) {
      const std::uint32_t owner = partition % config.broker.count;
      return Status::not_owned("partition " + std::to_string(partition) + " of topic '" + topic.name() +
                                   "' is owned by broker " + std::to_string(owner),
                               owner);
    }
    return p;
  }

  // The partitions of `topic` this broker serves now: those it owns, or, replicated, those it leads.
  std::vector<std::uint32_t> served_partitions(const Topic& topic) const {
    auto kept = topic.owned_partitions();
    if (leadership) {
      std::erase_if(kept, [&](std::uint32_t p) { return !leadership->check_leading(topic.name(), p).ok(); });
    }
    return kept;
  }

  // The copy of a partition kept here, whoever leads it (what replication copies into).
  Result<Partition*> kept_copy(const std::string& topic, std::uint32_t partition) const {
    auto entry = find_topic(topic);
    if (!entry.ok()) return entry.status();
    Partition* p = (*entry)->topic->partition(partition);
    if (p == nullptr) return Status::not_found(topic + "/" + std::to_string(partition) + " is not kept here");
    return p;
  }

  Result<Partition*> resolve(std::string_view topic, std::uint32_t partition) const {
    auto entry = find_topic(topic);
    if (!entry.ok()) return entry.status();
    return resolve(**entry, partition);
  }

  // The group, opened (and created at `from` if new) on first use.
  // `create` false: only a group that exists (every group on disk is opened at start), else nullptr.
  // `revive_deleted` false (an ack): a group deleted since start is not made again.
  Result<ConsumerGroup*> group(std::string_view topic, std::uint32_t partition, std::string_view name,
                               StartPosition from, bool create = true, Ordering ordering = Ordering::kNone,
                               bool revive_deleted = true) {
    if (!is_valid_name(name)) return invalid_name("group", name);
    auto p = resolve(topic, partition);
    if (!p.ok()) return p.status();
    std::lock_guard lock(groups_mutex);
    GroupKey key{std::string(topic), partition, std::string(name)};
    if (auto it = groups.find(key); it != groups.end()) return it->second.get();
    if (!create) return static_cast<ConsumerGroup*>(nullptr);
    if (leadership) {
      // Again under the lock that apply_state takes to close a former leader's groups: no group
      // opens here once this broker follows the partition.
      if (auto s = leadership->check_leading(std::string(topic), partition); !s.ok()) return s;
      if (auto s = close_follower_journal(key); !s.ok()) return s;
      // A group that does not exist yet is a change of group state: refused, as any is, when it
      // could not be confirmed now (nothing is written then).
      if (!journal_on_disk(key)) {
        if (auto s = leadership->state_writable(std::string(topic), partition); !s.ok()) return s;
      }
    }
    if (deleted_names.contains(key)) {
      if (!revive_deleted) {
        return Status::not_found("consumer group '" + std::string(name) + "' of " + std::string(topic) + "/" +
                                 std::to_string(partition) +
                                 " was deleted: acknowledgements of its deliveries have no group to go to");
      }
      deleted_names.erase(key);  // made again (a consume or a seek)
    }
    detail::GroupContext context;
    context.partition = *p;
    context.topic = std::string(topic);
    context.partition_index = partition;
    context.group = std::string(name);
    context.options = config.groups;
    context.timer = timer.get();
    context.dead_letter = [this, topic = std::string(topic), partition](const Message& m) {
      return dead_letter(topic, partition, m);
    };
    context.ack_log = ack_log.get();
    context.checkpoint_acks = [this] { checkpoint_ack_log(); };
    context.ordering_if_new = ordering;
    if (leadership) {
      context.publish_state = [this, topic = std::string(topic), partition,
                               group = std::string(name)](std::string record) {
        return leadership->publish_state(topic, partition, {group, std::move(record)});
      };
      context.confirm_state = [this, topic = std::string(topic), partition](detail::StateTicket ticket) {
        return leadership->confirm_state(topic, partition, ticket);
      };
      context.state_writable = [this, topic = std::string(topic), partition] {
        return leadership->state_writable(topic, partition);
      };
    }
    auto opened = detail::GroupState::open(std::move(context), file_system(), store->options(),
                                           groups_dir(store->options().data_dir, topic), from);
    if (!opened.ok()) return opened.status();
    Status published;
    if (leadership) {
      // The group as it opens (created now, or as this leader found it on disk) goes to the
      // followers whole; the first call that needs it durable there confirms it. Kept when that
      // fails (its journal is on disk now): confirm_opening() publishes it again.
      auto ticket = leadership->publish_state(std::string(topic), partition,
                                              {std::string(name), progress_record((*opened)->progress())});
      published = ticket.status();
      (*opened)->opened(ticket.ok() ? std::optional(*ticket) : std::nullopt);
    }
    // A group opened while the broker stops (an ack may still come in) refuses subscriptions too.
    if (stopping) (*opened)->shutdown();
    auto* raw = new ConsumerGroup(std::move(opened.value()));
    groups.emplace(std::move(key), std::unique_ptr<ConsumerGroup>(raw));
    if (!published.ok()) return published;
    return raw;
  }

  // Folds the shared acknowledgement log into the journals once it is large enough (libmq/docs/
  // log_format.md "The shared acknowledgement log"). Runs on the thread whose record passed the mark.
  void checkpoint_ack_log() {
    if (!ack_log || !ack_log->checkpoint_due()) return;
    const Status s = ack_log->checkpoint([this] { return sync_journals(); });
    if (!s.ok()) {
      std::fprintf(stderr, "libmq: checkpointing the shared acknowledgement log failed (it is kept): %s\n",
                   s.to_string().c_str());
    }
  }
  // Syncs every group's journal; returns the keys of those whose sync failed (each reported).
  std::vector<std::string> sync_journals() {
    // Listed under groups_mutex, which a group's creation holds while it writes its first record:
    // every group with a record written so far is listed.
    std::vector<std::pair<GroupKey, ConsumerGroup*>> all;
    {
      std::lock_guard lock(groups_mutex);
      for (auto& [key, g] : groups) all.emplace_back(key, g.get());
    }
    std::vector<std::pair<GroupKey, std::shared_ptr<FollowerJournal>>> copies;
    {
      std::lock_guard lock(follower_journals_mutex);
      for (auto& [key, j] : follower_journals) copies.emplace_back(key, j);
    }
    std::vector<std::string> failed;
    const auto report = [&](const GroupKey& key, const Status& s) {
      const auto& [topic, partition, name] = key;
      failed.push_back(ack_journal_key(topic, name, partition));
      std::fprintf(stderr, "libmq: syncing the acknowledgements of %s failed: %s\n", failed.back().c_str(),
                   s.to_string().c_str());
    };
    for (const auto& [key, g] : all) {
      if (auto s = g->state_->sync_journal(); !s.ok()) report(key, s);
    }
    for (const auto& [key, j] : copies) {
      std::lock_guard lock(j->mutex);
      if (!j->journal) continue;
      if (auto s = j->journal->sync_if_behind(); !s.ok()) report(key, s);
    }
    return failed;
  }

  // GroupStateHost (libmq/docs/replication.md section 7).
  Result<std::vector<detail::GroupStateRecord>> state_snapshot(const std::string& topic,
                                                               std::uint32_t partition) override;
  Status apply_state(const std::string& topic, std::uint32_t partition, bool replace,
                     const std::vector<detail::GroupStateRecord>& records) override;
  // The follower's journal of a group, opened (or created) on first use.
  Result<std::shared_ptr<FollowerJournal>> follower_journal(const GroupKey& key);
  // Closes the follower's journal of `key`, if open (the group opens here as leader).
  Status close_follower_journal(const GroupKey& key) {
    std::shared_ptr<FollowerJournal> j;
    {
      std::lock_guard lock(follower_journals_mutex);
      auto it = follower_journals.find(key);
      if (it == follower_journals.end()) return {};
      j = std::move(it->second);
      follower_journals.erase(it);
    }
    std::lock_guard lock(j->mutex);
    Status s = j->journal ? j->journal->close() : Status();
    j->journal.reset();
    return s;
  }
  // A record copied from the leader larger than this is written in parts (write_in_parts). Half a
  // journal record (ack_journal_record_limit): each part's list of offsets is cut at this size, so
  // a part never reaches the limit, whatever the widths of its numbers.
  std::size_t max_state_record_bytes() const { return ack_journal_record_limit(store->options()) / 2; }
  Status write_in_parts(AckJournal& journal, const GroupProgress& before, const GroupProgress& after);
  bool journal_on_disk(const GroupKey& key) {
    const auto& [topic, partition, name] = key;
    const std::string stem =
        groups_dir(store->options().data_dir, topic) + "/" + name + "/partition-" + std::to_string(partition);
    return file_system().exists(stem + ".log") || file_system().exists(stem + ".snapshot");
  }
  // The names of the groups with a journal on disk for a partition (finishing interrupted removals).
  Result<std::vector<std::string>> groups_on_disk(const std::string& topic, std::uint32_t partition);

  // The groups' journals share a bounded number of open descriptors, so that the number of open
  // files does not grow with the number of groups.
  FileSystem& file_system() { return *fs; }
  // The store's file system itself (the shared acknowledgement log keeps its descriptors).
  std::shared_ptr<FileSystem> base_fs() { return base; }
  // Both made by Broker::open before any other thread runs, never replaced: their first users may
  // be threads racing (a replicated broker leads nothing at open, so the first group or redrive
  // position written may come from two fetch threads at once), and what they hand out is kept.
  std::shared_ptr<FileSystem> base;
  std::shared_ptr<FileSystem> fs;

  // Appends to <topic>-dlq, creating it with the topic's partition count on first use.
  Status dead_letter(const std::string& topic, std::uint32_t partition, const Message& message) {
    const std::string name = topic + std::string(kDeadLetterSuffix);
    if (!is_valid_name(name)) return invalid_name("dead-letter topic", name);
    TopicEntry* entry = nullptr;
    {
      std::unique_lock lock(topics_mutex);
      auto it = topics.find(name);
      if (it == topics.end()) {
        // Dead-letter topics take their source topic's settings.
        const TopicEntry& source = *topics.at(topic);
        if (auto s = add_topic({name, source.topic->partition_count(), source.settings}); !s.ok()) return s;
        it = topics.find(name);
      }
      entry = it->second.get();
    }
    auto p = resolve(*entry, partition);
    if (!p.ok()) return p.status();
    auto offset = append(**p, std::span(&message, 1));
    return offset.ok() ? Status() : offset.status();
  }

  // Partition::append, and retention soon after when the append rolled a segment (API.md: retention
  // runs every RETENTION_CHECK_MS and after every roll) — on the timer thread, not the producer's.
  Result<AppendResult> append(Partition& partition, std::span<const Message> messages) {
    const std::size_t segments = partition.segment_count();
    auto appended = leadership ? leadership->append(partition.topic(), partition.index(),
                                                    [&] { return partition.append_messages(messages); })
                               : partition.append_messages(messages);
    if (appended.ok() && partition.segment_count() > segments) retention_after_roll();
    return appended;
  }
  std::atomic<bool> retention_after_roll_pending{false};
  void retention_after_roll() {
    if (stopping || retention_after_roll_pending.exchange(true))
      return;  // one run covers every roll before it
    scheduler->schedule(clock->now(), this, kRetentionAfterRollTimer, 0);
  }

  // Opens the groups found on disk for owned partitions, so that stats show them after a restart.
  Status open_groups_on_disk() {
    std::vector<std::pair<std::string, std::uint32_t>> partitions;
    {
      std::shared_lock lock(topics_mutex);
      for (const auto& [name, entry] : topics) {
        for (std::uint32_t p : served_partitions(*entry->topic)) partitions.emplace_back(name, p);
      }
    }
    for (const auto& [topic, p] : partitions) {
      if (auto s = open_groups_on_disk(topic, p); !s.ok()) return s;
    }
    return {};
  }
  // Every group is tried; the first failure is returned (each one reported on stderr).
  Status open_groups_on_disk(const std::string& topic, std::uint32_t p) {
    auto names = groups_on_disk(topic, p);
    if (!names.ok()) return names.status();
    Status first;
    for (const auto& name : *names) {
      // A group deleted since start stays deleted (only a consume or a seek makes it again).
      auto g = group(topic, p, name, StartPosition::kEarliest, /*create=*/true, Ordering::kNone,
                     /*revive_deleted=*/false);
      if (g.ok() || g.status().code() == ErrorCode::kNotFound) continue;
      std::fprintf(stderr, "libmq: the consumer group %s of %s/%u could not be opened: %s\n", name.c_str(),
                   topic.c_str(), p, g.status().to_string().c_str());
      if (first.ok()) first = g.status();
    }
    return first;
  }

  // A redrive run left pending by a crash is settled before retention runs: retention could delete
  // the records that tell whether it was stored (it would then count as stored, at most once).
  void settle_redrives() {
    std::vector<std::pair<std::string, std::uint32_t>> partitions;
    {
      std::shared_lock lock(topics_mutex);
      for (const auto& [name, entry] : topics) {
        if (!name.ends_with(kDeadLetterSuffix)) continue;
        for (std::uint32_t p : served_partitions(*entry->topic)) partitions.emplace_back(name, p);
      }
    }
    for (const auto& [topic, p] : partitions) {
      const std::string file = redrive_dir(topic) + "/partition-" + std::to_string(p) + ".json";
      if (!file_system().exists(file)) continue;
      auto r = redriver(topic, p);
      Status s = r.ok() ? (*r == nullptr ? Status() : (*r)->settle()) : r.status();
      if (!s.ok()) {
        std::fprintf(
            stderr,
            "libmq: the redrive position of %s/%u could not be read (the next redrive tries again): %s\n",
            topic.c_str(), p, s.to_string().c_str());
      }
    }
  }

  Result<ConsumerGroup*> existing_group(std::string_view topic, std::uint32_t partition,
                                        std::string_view group, std::string_view id);

  // FSYNC=interval: the shared acknowledgement log is synced on the timer, every interval.
  // The timer thread reschedules through this pointer, never through `timer`, which ~Broker resets
  // while that thread may still run a last callback (the Timer itself lives until it joined it).
  Timer* scheduler = nullptr;
  void schedule_journal_sync() {
    scheduler->schedule(clock->now() + config.store.fsync_interval, this, kJournalSyncTimer, 0);
  }
  void schedule_retention() {
    scheduler->schedule(clock->now() + config.retention.check_interval, this, kRetentionTimer, 0);
  }
  std::mutex retention_mutex;  // one retention run at a time
  Result<std::uint64_t> apply_retention();
  void on_timer(std::uint64_t which, std::uint64_t) override {
    if (which == kRetentionTimer) {
      (void)apply_retention();  // each partition's failure was reported on stderr as it happened
      if (!stopping) schedule_retention();
      return;
    }
    if (which == kRetentionAfterRollTimer) {
      retention_after_roll_pending = false;  // first: a roll during this run schedules another
      (void)apply_retention();
      return;
    }
    // Nobody waits for this sync to answer: a failure is reported, never dropped. The acks it
    // covered were answered already (FSYNC=interval promises no more than a killed process keeps).
    if (auto s = ack_log->sync_if_behind(); !s.ok())
      std::fprintf(stderr, "libmq: syncing the shared acknowledgement log failed: %s\n",
                   s.to_string().c_str());
    if (!stopping) schedule_journal_sync();
  }
};

Result<std::vector<std::string>> Broker::State::groups_on_disk(const std::string& topic, std::uint32_t p) {
  const std::string dir = groups_dir(store->options().data_dir, topic);
  std::vector<std::string> found;
  if (!file_system().exists(dir)) return found;
  auto names = file_system().list_directory(dir);
  if (!names.ok()) return names.status();
  for (const auto& name : *names) {
    if (!is_valid_name(name)) continue;
    const std::string stem = dir + "/" + name + "/partition-" + std::to_string(p);
    auto interrupted =
        AckJournal::remove_if_marked(file_system(), dir + "/" + name, "partition-" + std::to_string(p),
                                     store->options().fsync != FsyncMode::kNever);
    if (!interrupted.ok()) return interrupted.status();
    if (*interrupted) continue;  // a deletion a crash cut short, finished now
    if (!file_system().exists(stem + ".log") && !file_system().exists(stem + ".snapshot")) continue;
    found.push_back(name);
  }
  return found;
}

Result<std::vector<detail::GroupStateRecord>> Broker::State::state_snapshot(const std::string& topic,
                                                                            std::uint32_t partition) {
  // Every group on disk too: this leader may not have opened them yet.
  if (auto s = open_groups_on_disk(topic, partition); !s.ok()) return s;
  std::vector<detail::GroupStateRecord> records;
  std::lock_guard lock(groups_mutex);
  for (auto it = groups.lower_bound({topic, partition, ""});
       it != groups.end() && std::get<0>(it->first) == topic && std::get<1>(it->first) == partition; ++it) {
    // A group being deleted (its removal published, awaiting confirmation) is not in the snapshot:
    // its version may already be past the removal record, which the follower would never see.
    if (it->second->state_->removed()) continue;
    records.push_back({std::get<2>(it->first), progress_record(it->second->state_->progress())});
  }
  if (topic.ends_with(kDeadLetterSuffix)) {
    // Its redrive position as the file says. A run left pending counts as not gone (settling it
    // may need a source partition led elsewhere): should a follower lead later, those letters go
    // back once more, and the source drops each copy whose dedup id its window still holds.
    auto position = detail::Redriver::stored_position(file_system(), redrive_dir(topic), partition);
    if (!position.ok()) {
      // Unreadable (damaged since, or a transient error): what this broker's redriver holds, if it
      // has read or written the position (a follower without the record would keep 0).
      std::lock_guard redrivers_lock(redrivers_mutex);
      if (auto it = redrivers.find({topic, partition}); it != redrivers.end()) {
        if (auto known = it->second->loaded_position()) position = *known;
      }
    }
    if (position.ok()) {
      records.push_back(
          {std::string(detail::kRedrivePositionName), detail::Redriver::position_record(*position)});
    } else {
      // Left out rather than failing the snapshot (which would stop replicating the partition's
      // letters too): the followers keep the position they have.
      std::fprintf(stderr, "libmq: the redrive position of %s/%u is not handed to followers: %s\n",
                   topic.c_str(), partition, position.status().to_string().c_str());
    }
  }
  return records;
}

Result<std::shared_ptr<Broker::State::FollowerJournal>> Broker::State::follower_journal(const GroupKey& key) {
  {
    std::lock_guard lock(follower_journals_mutex);
    if (auto it = follower_journals.find(key); it != follower_journals.end()) return it->second;
  }
  const auto& [topic, partition, name] = key;
  const std::string dir = groups_dir(store->options().data_dir, topic) + "/" + name;
  const std::string stem = "partition-" + std::to_string(partition);
  auto interrupted =
      AckJournal::remove_if_marked(file_system(), dir, stem, store->options().fsync != FsyncMode::kNever);
  if (!interrupted.ok()) return interrupted.status();
  auto j = std::make_shared<FollowerJournal>();
  bool created = false;
  auto journal = AckJournal::open(
      file_system(), store->options(), ack_log.get(), ack_journal_key(topic, name, partition), dir, stem,
      topic + "/" + std::to_string(partition) + " group " + name + " (replica)", j->progress, created);
  if (!journal.ok()) return journal.status();
  j->journal = std::move(journal.value());
  std::lock_guard lock(follower_journals_mutex);
  follower_journals[key] = j;  // only the partition's fetch thread opens them
  return j;
}

// A state too large for one journal record (a big snapshot, many acknowledgements merged), in
// parts of at most max_state_record_bytes() each, ordered so that a crash between two parts never
// leaves fewer acknowledgements than both the state before and the state after hold (those the
// leader may have answered 200 for): first the acknowledgements `after` adds (additive lists),
// then `{"start":C}` for its committed offset. That reaches `after` exactly when it acknowledges
// everything `before` did (the usual case: the leader only moved on). When it does not (the leader
// seeked back, or ordering changed), the acknowledgements `before` has beyond it must go too: a
// whole-state record without acknowledgements beyond its committed offset, then `after`'s again,
// and a crash in between forgets some of them (replication.md section 7).
Status Broker::State::write_in_parts(AckJournal& journal, const GroupProgress& before,
                                     const GroupProgress& after) {
  const std::size_t per_record = std::max<std::size_t>(1, max_state_record_bytes() / 24);  // <= 21 B each
  const auto write_lists = [&](const std::vector<std::uint64_t>& offsets) -> Status {
    for (std::size_t i = 0; i < offsets.size(); i += per_record) {
      std::string list = "[";
      for (std::size_t k = i; k < std::min(offsets.size(), i + per_record); ++k)
        list += (k == i ? "" : ",") + std::to_string(offsets[k]);
      if (auto s = journal.record_raw(list + "]"); !s.ok()) return s;
    }
    return {};
  };
  bool monotone = after.committed >= before.committed && (after.ordering_key || !before.ordering_key);
  for (auto it = before.acked.lower_bound(after.committed); monotone && it != before.acked.end(); ++it)
    monotone = after.acked.contains(*it);
  std::vector<std::uint64_t> added;
  for (std::uint64_t offset : after.acked) {
    if (!monotone || !before.is_acknowledged(offset)) added.push_back(offset);
  }
  if (!monotone) {
    GroupProgress bare;  // `after` without its acknowledgements beyond the committed offset
    bare.committed = after.committed;
    bare.ordering_key = after.ordering_key;
    if (auto s = journal.record_raw(progress_record(bare)); !s.ok()) return s;
    return write_lists(added);
  }
  // Ordering first: it is never undone, and a crash after the acknowledgements must not lose it.
  if (after.ordering_key && !before.ordering_key) {
    if (auto s = journal.record_raw(R"({"ordering":"key"})"); !s.ok()) return s;
  }
  if (auto s = write_lists(added); !s.ok()) return s;
  if (after.committed > before.committed)
    return journal.record_raw("{\"start\":" + std::to_string(after.committed) + "}");
  return {};
}

Status Broker::State::apply_state(const std::string& topic, std::uint32_t partition, bool replace,
                                  const std::vector<detail::GroupStateRecord>& records) {
  // Checked whole before anything is written: a record that is not one libmq writes would make the
  // journal unreadable at the next start.
  for (const auto& r : records) {
    if (r.group == detail::kRedrivePositionName) {
      if (!topic.ends_with(kDeadLetterSuffix) || !detail::Redriver::position_of(r.record))
        return Status::invalid_argument("the leader sent a redrive position libmq does not write: " +
                                        r.record.substr(0, 200));
      continue;
    }
    if (!is_valid_name(r.group)) return invalid_name("group (from the leader)", r.group);
    if (!is_ack_journal_record(r.record) || (replace && !r.record.starts_with(R"({"progress":)")))
      return Status::invalid_argument("the leader sent a group-state record libmq does not write: " +
                                      r.record.substr(0, 200));
  }
  // Groups this broker had open as the partition's leader are closed first: from now on their
  // journals hold the leader's state. (Under groups_mutex, which group() takes to open one: none
  // opens once this broker no longer leads.)
  std::vector<ConsumerGroup*> former;
  {
    std::lock_guard lock(groups_mutex);
    if (leadership->check_leading(topic, partition).ok())
      return Status::conflict("this broker leads " + topic + "/" + std::to_string(partition));
    for (auto it = groups.lower_bound({topic, partition, ""});
         it != groups.end() && std::get<0>(it->first) == topic && std::get<1>(it->first) == partition;) {
      former.push_back(it->second.get());
      deleted_groups.push_back(std::move(it->second));
      it = groups.erase(it);
    }
    // What this broker deleted as a leader no longer counts: the leader's records say which groups
    // exist (a stale name would make this broker, leading again, leave a live group out).
    for (auto it = deleted_names.lower_bound({topic, partition, ""});
         it != deleted_names.end() && std::get<0>(*it) == topic && std::get<1>(*it) == partition;)
      it = deleted_names.erase(it);
  }
  for (ConsumerGroup* g : former) {
    if (auto s = g->state_->retire(); !s.ok()) return s;
  }
  const auto remove_journal = [&](const GroupKey& key) -> Status {
    auto j = follower_journal(key);
    if (!j.ok()) return j.status();
    {
      std::lock_guard lock((*j)->mutex);
      if (auto s = (*j)->journal->remove(); !s.ok()) return s;
      (*j)->journal.reset();
    }
    std::lock_guard lock(follower_journals_mutex);
    follower_journals.erase(key);
    return {};
  };
  const auto write = [&](const std::string& group, std::string record) -> Status {
    if (group == detail::kRedrivePositionName) {
      auto letters = kept_copy(topic, partition);
      if (!letters.ok()) return letters.status();
      return redriver_of(topic, partition, **letters)
          ->replace_position(*detail::Redriver::position_of(record));
    }
    const GroupKey key{topic, partition, group};
    if (record == kRemovedRecord) return remove_journal(key);
    auto j = follower_journal(key);
    if (!j.ok()) return j.status();
    const Status written = [&]() -> Status {
      std::lock_guard lock((*j)->mutex);
      FollowerJournal& fj = **j;
      GroupProgress after = fj.progress;
      if (!apply_ack_journal_record(record, after)) return Status::invalid_argument("bad group-state record");
      // Nothing to write when it changes nothing (a snapshot of groups that did not move).
      if (after.committed == fj.progress.committed && after.acked == fj.progress.acked &&
          after.ordering_key == fj.progress.ordering_key)
        return {};
      if (auto s = fj.journal->reopen_if_closed(); !s.ok()) return s;
      if (record.size() <= max_state_record_bytes()) {
        if (auto s = fj.journal->record_raw(std::move(record)); !s.ok()) return s;
      } else if (auto s = write_in_parts(*fj.journal, fj.progress, after); !s.ok()) {
        return s;
      }
      fj.progress = std::move(after);
      if (fj.journal->log_bytes() >= (1 << 20)) (void)fj.journal->compact(fj.progress);  // retried next time
      return {};
    }();
    // A failed write may have left some parts on disk: the journal is read again on its next use,
    // so that what this broker compares the next records with is what its disk holds.
    if (!written.ok()) (void)close_follower_journal(key);
    return written;
  };
  Status status;
  if (replace) {
    std::set<std::string> named;
    for (const auto& r : records) named.insert(r.group);
    auto on_disk = groups_on_disk(topic, partition);
    if (!on_disk.ok()) return on_disk.status();
    for (const auto& name : *on_disk) {
      if (!named.contains(name)) {
        if (auto s = remove_journal({topic, partition, name}); !s.ok()) return s;
      }
    }
    for (const auto& r : records) {
      if (status = write(r.group, r.record); !status.ok()) break;
    }
  } else {
    // Acknowledgements of one group that follow each other are written as one record (one sync).
    std::map<std::string, std::string> pending;  // group -> offsets, comma-separated
    // `group` by value: it may be the key of the entry erased here.
    const auto flush = [&](std::string group) -> Status {
      auto it = pending.find(group);
      if (it == pending.end()) return {};
      std::string record = "[" + it->second + "]";
      pending.erase(it);
      return write(group, std::move(record));
    };
    for (const auto& r : records) {
      if (r.record.starts_with('[')) {
        const std::string_view inner = std::string_view(r.record).substr(1, r.record.size() - 2);
        if (inner.empty()) {
          if (!pending.contains(r.group)) pending[r.group];  // the group exists
          continue;
        }
        std::string& list = pending[r.group];
        if (!list.empty()) list += ',';
        list += inner;
        continue;
      }
      if (status = flush(r.group); !status.ok()) break;
      if (status = write(r.group, r.record); !status.ok()) break;
    }
    while (status.ok() && !pending.empty()) status = flush(pending.begin()->first);
  }
  checkpoint_ack_log();
  return status;
}

// Retention (libmq/docs/log_format.md "Segments"): each owned partition by its topic's rules; with
// retention_acked, below the lowest committed offset of the partition's groups (a partition no group
// has read keeps its messages). Groups then move up to the new log start.
Result<std::uint64_t> Broker::State::apply_retention() {
  std::lock_guard running(retention_mutex);
  // Replicated, a broker opens no group at start (it leads nothing yet): the groups on disk of the
  // partitions it leads now are opened here, so that RETENTION_ACKED counts every group, not only
  // those used since the start (it would delete what an idle group has not read).
  // A group that cannot be opened (reported) must not stop retention of the rest; a partition
  // whose groups did not all open keeps its messages when retention counts acknowledgements.
  std::set<std::pair<std::string, std::uint32_t>> groups_unknown;
  if (leadership) {
    std::vector<std::pair<std::string, std::uint32_t>> led;
    {
      std::shared_lock lock(topics_mutex);
      for (const auto& [name, entry] : topics) {
        for (std::uint32_t p : served_partitions(*entry->topic)) led.emplace_back(name, p);
      }
    }
    for (const auto& [topic, p] : led) {
      if (!open_groups_on_disk(topic, p).ok()) groups_unknown.emplace(topic, p);
    }
  }
  struct Owned {
    TopicEntry* entry;
    std::uint32_t partition;
    Partition* log;
  };
  std::vector<Owned> targets;
  {
    std::shared_lock lock(topics_mutex);
    for (const auto& [name, entry] : topics) {
      for (std::uint32_t p : served_partitions(*entry->topic))
        targets.push_back({entry.get(), p, entry->topic->partition(p)});
    }
  }
  const std::int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::system_clock::now().time_since_epoch())
                                  .count();
  std::uint64_t deleted = 0;
  Status failed;
  for (const Owned& t : targets) {
    const TopicSettings& settings = t.entry->settings;
    RetentionRule rule;
    rule.max_bytes = settings.retention_bytes.value_or(config.retention.bytes);
    rule.max_age = settings.retention_time.value_or(config.retention.time);
    rule.now_ms = now_ms;
    std::vector<ConsumerGroup*> partition_groups;
    {
      std::lock_guard lock(groups_mutex);
      const std::string& topic = t.entry->topic->name();
      for (auto it = groups.lower_bound({topic, t.partition, ""});
           it != groups.end() && std::get<0>(it->first) == topic && std::get<1>(it->first) == t.partition;
           ++it) {
        partition_groups.push_back(it->second.get());
      }
    }
    const bool acked_rule = settings.retention_acked.value_or(config.retention.acked);
    if (acked_rule && groups_unknown.contains({t.entry->topic->name(), t.partition})) continue;
    if (acked_rule && !partition_groups.empty()) {
      std::uint64_t lowest = UINT64_MAX;
      for (ConsumerGroup* g : partition_groups)
        lowest = std::min(lowest, g->state_->stats().committed_offset);
      rule.delete_below = lowest;
    }
    if (rule.max_bytes == 0 && rule.max_age.count() == 0 && !rule.delete_below) continue;
    auto gone = t.log->apply_retention(rule);
    if (!gone.ok()) {
      // One partition's failure must not stop retention of the others: report it and go on.
      std::fprintf(stderr, "libmq: retention of %s/%u failed: %s\n", t.entry->topic->name().c_str(),
                   t.partition, gone.status().to_string().c_str());
      failed = gone.status();
      continue;
    }
    if (*gone == 0) continue;
    deleted += *gone;
    t.entry->retention_deleted[t.partition] += *gone;  // partition < partition_count
    for (ConsumerGroup* g : partition_groups) g->state_->forget_below(t.log->log_start_offset());
  }
  if (!failed.ok()) return failed;
  return deleted;
}

Result<std::uint64_t> Broker::apply_retention() { return state_->apply_retention(); }

Broker::Broker(std::unique_ptr<State> state) : state_(std::move(state)) {}

Broker::~Broker() {
  if (state_->leadership) state_->leadership->stop();  // its threads use the partitions
  shutdown();
  state_->timer.reset();
  std::lock_guard lock(state_->groups_mutex);
  state_->groups.clear();
}

Result<std::unique_ptr<Broker>> Broker::open(Config config, std::shared_ptr<Clock> clock) {
  return open(std::move(config), std::move(clock), nullptr);
}

Result<std::unique_ptr<Broker>> Broker::open(Config config, std::shared_ptr<Clock> clock,
                                             std::shared_ptr<detail::Leadership> leadership) {
  // A dead letter that cannot be stored would be delivered again forever, silently: refuse a topic
  // whose dead-letter topic could not exist.
  if (config.groups.max_deliveries > 0) {
    for (const TopicSpec& spec : config.topics) {
      const std::string dead_letters = spec.name + std::string(kDeadLetterSuffix);
      if (!is_valid_name(dead_letters)) {
        return Status::invalid_argument("topic '" + spec.name +
                                        "' is too long to have a dead-letter topic ('" + dead_letters +
                                        "' is over 128 characters), and MAX_DELIVERIES is " +
                                        std::to_string(config.groups.max_deliveries));
      }
    }
  }
  auto state = std::make_unique<State>();
  state->leadership = std::move(leadership);
  const bool real_time = clock == nullptr;
  state->clock = real_time ? make_steady_clock() : std::move(clock);
  auto store = LogStore::open(config.store);
  if (!store.ok()) return store.status();
  state->store = std::move(store.value());
  state->base =
      state->store->options().file_system ? state->store->options().file_system : make_posix_file_system();
  state->fs = detail::BoundedFileSystem::make(state->base, kMaxOpenJournalFiles);
  // Before any group opens, whatever the FSYNC mode: what an earlier run left in the shared
  // acknowledgement log is folded into the journals.
  if (state->store->options().fsync != FsyncMode::kNever) {
    auto ack_log =
        AckWal::open(state->base_fs(), state->store->options(), config.groups.ack_log_checkpoint_bytes);
    if (!ack_log.ok()) return ack_log.status();
    state->ack_log = std::move(ack_log.value());
  } else if (auto s = AckWal::fold_earlier_logs(*state->base_fs(), state->store->options()); !s.ok()) {
    return s;
  }
  state->timer = std::make_unique<Timer>(state->clock, real_time);
  state->scheduler = state->timer.get();
  state->config = std::move(config);
  {
    std::unique_lock lock(state->topics_mutex);
    for (const TopicSpec& spec : state->config.topics) {
      if (auto s = state->add_topic(spec); !s.ok()) return s;
    }
    // Dead-letter topics come back with the partition count of their topic (or what is on disk).
    auto on_disk = state->store->topics_on_disk();
    if (!on_disk.ok()) return on_disk.status();
    for (const std::string& name : *on_disk) {
      if (!name.ends_with(kDeadLetterSuffix) || state->topics.contains(name)) continue;
      const std::string base = name.substr(0, name.size() - kDeadLetterSuffix.size());
      std::uint32_t count = 0;
      if (auto it = state->topics.find(base); it != state->topics.end()) {
        count = it->second->topic->partition_count();
      } else {
        auto partitions = state->store->partitions_on_disk(name);
        if (!partitions.ok()) return partitions.status();
        count = *partitions;
      }
      if (auto s = state->add_topic({name, count}); !s.ok()) return s;
    }
    // Replicated, every dead-letter partition is kept from the start, beside its source partition,
    // so that the replicas copy it as any other (the first dead letter must not create it on one).
    if (state->leadership) {
      for (const TopicSpec& spec : state->config.topics) {
        const std::string name = spec.name + std::string(kDeadLetterSuffix);
        if (state->topics.contains(name) || !is_valid_name(name)) continue;
        if (auto s = state->add_topic({name, spec.partitions, spec.settings}); !s.ok()) return s;
      }
    }
  }
  if (auto s = state->open_groups_on_disk(); !s.ok()) return s;
  state->settle_redrives();
  if (state->config.store.fsync == FsyncMode::kInterval) state->schedule_journal_sync();
  state->schedule_retention();
  if (state->leadership) {
    std::vector<detail::ReplicatedTopic> replicated;
    {
      std::shared_lock lock(state->topics_mutex);
      for (const auto& [name, entry] : state->topics)
        replicated.push_back({name, entry->topic->partition_count()});
    }
    State* raw = state.get();
    auto lookup = [raw](const std::string& topic, std::uint32_t partition) {
      return raw->kept_copy(topic, partition);
    };
    if (auto s = state->leadership->start(std::move(replicated), lookup, raw); !s.ok()) return s;
  }
  return std::unique_ptr<Broker>(new Broker(std::move(state)));
}

Result<ProduceResult> Broker::produce(std::string_view topic, std::span<const Message> messages,
                                      std::optional<std::uint32_t> partition) {
  if (messages.empty()) return Status::invalid_argument("nothing to produce: no messages");
  for (const Message& m : messages) {
    if (m.dedup_id && m.dedup_id->starts_with(kRedriveDedupIdPrefix)) {
      return Status::invalid_argument("dedup_id: the prefix \"" + std::string(kRedriveDedupIdPrefix) +
                                      "\" is reserved for redriven messages");
    }
  }
  auto entry = state_->find_topic(topic);
  if (!entry.ok()) return entry.status();
  const Topic& t = *(*entry)->topic;
  std::uint32_t chosen = 0;
  if (partition) {
    chosen = *partition;
  } else if (auto key = partition_key(messages)) {
    chosen = t.partition_for(*key);
  } else {
    const auto owned = state_->served_partitions(t);
    if (owned.empty() && state_->leadership) {
      // Leading none of them: send the producer to partition 0's leader (kNotOwned), or 503.
      if (auto s = state_->leadership->check_leading(t.name(), 0); !s.ok()) return s;
    }
    if (owned.empty()) {
      return Status::not_owned("this broker owns no partition of topic '" + t.name() + "'",
                               0 % state_->config.broker.count);
    }
    chosen = owned[state_->turns.next(t.name(), static_cast<std::uint32_t>(owned.size()))];
  }
  auto p = state_->resolve(**entry, chosen);
  if (!p.ok()) return p.status();
  auto appended = state_->append(**p, messages);
  if (!appended.ok()) return appended.status();
  ProduceResult result{chosen, appended->offsets.front(), {}};
  result.ids.reserve(messages.size());
  for (std::uint64_t offset : appended->offsets) result.ids.push_back(detail::message_id(chosen, offset));
  result.offsets = std::move(appended->offsets);
  result.duplicates = std::move(appended->duplicates);
  return result;
}

Result<std::uint64_t> Broker::redrive(std::string_view topic, std::uint32_t partition,
                                      std::optional<std::uint64_t> limit) {
  auto redriver = state_->redriver(topic, partition);
  if (!redriver.ok()) return redriver.status();
  if (*redriver == nullptr) return std::uint64_t{0};
  return (*redriver)->redrive(limit);
}

Result<bool> Broker::delete_group(std::string_view topic, std::string_view group) {
  if (!is_valid_name(group)) return invalid_name("group", group);
  auto entry = state_->find_topic(topic);
  if (!entry.ok()) return entry.status();
  bool deleted = false;
  for (std::uint32_t partition : state_->served_partitions(*(*entry)->topic)) {
    // Replicated, a leader opens groups on first use: one on disk but not used yet is deleted too.
    // (A group that cannot be opened is reported on stderr; it does not stop this deletion.)
    if (state_->leadership) (void)state_->open_groups_on_disk(std::string(topic), partition);
    const State::GroupKey key{std::string(topic), partition, std::string(group)};
    ConsumerGroup* doomed = nullptr;
    {
      std::lock_guard lock(state_->groups_mutex);
      auto it = state_->groups.find(key);
      if (it == state_->groups.end()) continue;
      doomed = it->second.get();
    }
    // Not under groups_mutex: removal writes to the shared acknowledgement log, whose checkpoint
    // lists the groups under that mutex. Meanwhile, calls that find the group fail with kNotFound.
    if (auto s = doomed->state_->remove(); !s.ok()) return s;
    std::lock_guard lock(state_->groups_mutex);
    if (auto it = state_->groups.find(key); it != state_->groups.end() && it->second.get() == doomed) {
      state_->deleted_groups.push_back(std::move(it->second));
      state_->groups.erase(it);
      state_->deleted_names.insert(key);
    }
    deleted = true;
  }
  return deleted;
}

Result<PartitionRead> Broker::read(std::string_view topic, std::uint32_t partition, const ReadFrom& from,
                                   std::size_t limit) {
  if (from.offset && from.timestamp_ms)
    return Status::invalid_argument("give an offset or a timestamp, not both");
  if (limit == 0 || limit > kMaxReadLimit) {
    return Status::invalid_argument("the read limit must be from 1 to " + std::to_string(kMaxReadLimit) +
                                    ", not " + std::to_string(limit));
  }
  auto p = state_->resolve(topic, partition);
  if (!p.ok()) return p.status();
  Partition& log = **p;
  std::uint64_t offset = from.offset.value_or(0);
  if (from.timestamp_ms) {
    auto found = log.offset_for_time(*from.timestamp_ms);
    if (!found.ok()) return found.status();
    offset = *found;
  }
  PartitionRead result;
  while (true) {
    result.log_start_offset = log.log_start_offset();
    result.next_offset = log.next_offset();
    offset = std::max(offset, result.log_start_offset);
    if (offset >= result.next_offset || result.messages.size() >= limit) break;
    auto batch = log.read(offset, limit - result.messages.size(), 4 << 20);
    // Retention may move the start between the two calls: read on from the new start.
    if (!batch.ok() && batch.status().code() == ErrorCode::kNotFound && offset < log.log_start_offset())
      continue;
    if (!batch.ok()) return batch.status();
    if (batch->empty()) break;
    for (const auto& m : *batch) {
      result.messages.push_back({detail::message_id(partition, m.offset), m.offset, std::string(m.line)});
    }
    offset = batch->next_offset();
  }
  return result;
}

Result<ConsumerGroup*> Broker::group(std::string_view topic, std::uint32_t partition, std::string_view name,
                                     StartPosition from) {
  return state_->group(topic, partition, name, from);
}

Result<std::unique_ptr<Subscription>> Broker::subscribe(std::string_view topic, std::uint32_t partition,
                                                        std::string_view group,
                                                        const SubscribeOptions& options) {
  if (state_->stopping) return Status::shutting_down("the broker is stopping");
  // Checked before the group is looked up, so that a refused subscription creates no group.
  if (auto s = detail::check_subscribe_options(options); !s.ok()) return s;
  auto g =
      state_->group(topic, partition, group, options.from, true, options.ordering.value_or(Ordering::kNone));
  if (!g.ok()) return g.status();
  return (*g)->subscribe(options);
}

Result<std::size_t> Broker::ack(std::string_view topic, std::uint32_t partition, std::string_view group,
                                std::span<const std::string> ids) {
  if (ids.empty()) return Status::invalid_argument("no ids to acknowledge");
  if (!is_valid_name(group)) return invalid_name("group", group);
  auto p = state_->resolve(topic, partition);
  if (!p.ok()) return p.status();
  // Every id must name a message before the acknowledgement may create the group: a refused
  // request leaves nothing behind.
  const std::uint64_t end = (*p)->next_offset();
  std::vector<std::uint64_t> offsets;
  offsets.reserve(ids.size());
  for (const std::string& id : ids) {
    auto offset = detail::offset_named_by(id, partition);
    if (!offset.ok()) return offset.status();
    if (*offset >= end) {
      return Status::not_found("id " + id + " names no message of " + std::string(topic) + "/" +
                               std::to_string(partition));
    }
    offsets.push_back(*offset);
  }
  // Not a group deleted since start (under the lock that creates groups: a deletion racing this
  // ack cannot be undone by it).
  auto g = state_->group(topic, partition, group, StartPosition::kEarliest, /*create=*/true, Ordering::kNone,
                         /*revive_deleted=*/false);
  if (!g.ok()) return g.status();
  return (*g)->state_->ack(offsets);
}

// nack and touch: the group, which they never create; 409 when it does not exist (nothing of it is
// in flight), 404 for an id that names no message.
Result<ConsumerGroup*> Broker::State::existing_group(std::string_view topic, std::uint32_t partition,
                                                     std::string_view group, std::string_view id) {
  if (!is_valid_name(group)) return invalid_name("group", group);
  auto p = resolve(topic, partition);
  if (!p.ok()) return p.status();
  auto offset = detail::offset_named_by(id, partition);
  if (!offset.ok()) return offset.status();
  if (*offset >= (*p)->next_offset()) {
    return Status::not_found("id " + std::string(id) + " names no message of " + std::string(topic) + "/" +
                             std::to_string(partition));
  }
  auto g = this->group(topic, partition, group, StartPosition::kEarliest, /*create=*/false);
  if (!g.ok()) return g.status();
  if (*g == nullptr) {
    return Status::conflict("message " + std::string(id) + " is not in flight for group " +
                            std::string(group) + " (the group has no state on " + std::string(topic) + "/" +
                            std::to_string(partition) + ")");
  }
  return *g;
}

Status Broker::nack(std::string_view topic, std::uint32_t partition, std::string_view group,
                    std::string_view id, std::chrono::milliseconds delay) {
  if (delay.count() < 0) return Status::invalid_argument("delay_ms must not be negative");
  auto g = state_->existing_group(topic, partition, group, id);
  if (!g.ok()) return g.status();
  return (*g)->nack(id, delay);
}

Status Broker::touch(std::string_view topic, std::uint32_t partition, std::string_view group,
                     std::string_view id) {
  auto g = state_->existing_group(topic, partition, group, id);
  if (!g.ok()) return g.status();
  return (*g)->touch(id);
}

Result<std::uint64_t> Broker::seek(std::string_view topic, std::uint32_t partition, std::string_view group,
                                   const SeekTarget& target) {
  // The target is checked before the group is looked up, so that a refused seek creates no group.
  const int given = int(target.offset.has_value()) + int(target.timestamp_ms.has_value()) +
                    int(target.position.has_value());
  if (given != 1) return Status::invalid_argument("give exactly one of offset, timestamp and position");
  auto g = state_->group(topic, partition, group, StartPosition::kEarliest);
  if (!g.ok()) return g.status();
  return (*g)->seek(target);
}

std::vector<TopicInfo> Broker::topics() const {
  std::shared_lock lock(state_->topics_mutex);
  std::vector<TopicInfo> infos;
  for (const auto& [name, entry] : state_->topics) {
    infos.push_back({name, entry->topic->partition_count(), state_->served_partitions(*entry->topic)});
  }
  return infos;
}

Result<std::vector<TopicStats>> Broker::stats(std::optional<std::string_view> topic) const {
  std::vector<std::pair<std::string, const State::TopicEntry*>> selected;
  {
    std::shared_lock lock(state_->topics_mutex);
    for (const auto& [name, entry] : state_->topics) {
      if (!topic || *topic == name) selected.emplace_back(name, entry.get());
    }
  }
  if (topic && selected.empty()) return Status::not_found("unknown topic '" + std::string(*topic) + "'");
  if (state_->leadership) {
    // Replicated, a broker opens a partition's groups when it first needs them after it became its
    // leader: stats show them all, as the former leader did (a failure is reported on stderr, and
    // the stats show the groups that did open).
    for (const auto& [name, entry] : selected) {
      for (std::uint32_t p : state_->served_partitions(*entry->topic))
        (void)state_->open_groups_on_disk(name, p);
    }
  }
  std::vector<TopicStats> result;
  std::lock_guard lock(state_->groups_mutex);
  for (const auto& [name, entry] : selected) {
    TopicStats ts{name, {}};
    const Topic* t = entry->topic.get();
    for (std::uint32_t p : state_->served_partitions(*t)) {
      const Partition* partition = t->partition(p);
      PartitionStats ps;
      ps.partition = p;
      ps.next_offset = partition->next_offset();
      ps.log_start_offset = partition->log_start_offset();
      ps.segments = partition->segment_count();
      ps.log_bytes = partition->log_bytes();
      ps.retention_deleted = entry->retention_deleted[p];
      for (auto it = state_->groups.lower_bound({name, p, ""});
           it != state_->groups.end() && std::get<0>(it->first) == name && std::get<1>(it->first) == p;
           ++it) {
        ps.groups.push_back(it->second->stats());
      }
      ts.partitions.push_back(std::move(ps));
    }
    result.push_back(std::move(ts));
  }
  return result;
}

const Config& Broker::config() const { return state_->config; }

void Broker::shutdown() {
  state_->stopping = true;
  std::lock_guard lock(state_->groups_mutex);
  for (auto& [key, g] : state_->groups) g->state_->shutdown();
  if (state_->store) state_->store->interrupt_waiters();
}

void Broker::fire_due_timers() { state_->timer->fire_due(); }

}  // namespace mq

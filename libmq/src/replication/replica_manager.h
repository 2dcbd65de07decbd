// One broker's part in replicated partitions (libmq/docs/replication.md): its etcd lease, the
// partitions it is a replica of, and for each whether it leads it (taking writes, tracking its
// followers, raising the high watermark) or follows its leader (fetching, truncating by epoch).
//
// Threads: the lease keeper's; the etcd watch's, which only wakes the control thread; the control
// thread, which alone elects, changes roles and keeps the ISR (every change of a partition's role
// is made there, under that partition's role lock); one fetch thread per followed partition.
// Writes as leader (append_as_leader) hold the partition's role lock shared, so that no role
// change happens between the leadership check and the append.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "groups/leadership.h"
#include "mq/clock.h"
#include "mq/partition.h"
#include "mq/status.h"
#include "replication/coordination.h"
#include "replication/epoch_cache.h"
#include "replication/etcd_client.h"
#include "replication/fetch.h"
#include "replication/in_sync_tracker.h"
#include "replication/lease_keeper.h"
#include "replication/state_feed.h"

namespace mq::replication {

struct ReplicaManagerOptions {
  std::uint32_t self = 0;
  std::uint32_t broker_count = 1;
  std::uint32_t replication_factor = 1;
  std::uint32_t min_insync = 1;
  std::chrono::seconds lease_ttl{5};
  std::chrono::milliseconds replica_lag{5000};
  std::string prefix = "/mq";
  std::string self_url;  // how the other brokers reach this one (its BROKER_ADDRS entry)
  std::string disk_id;   // this data directory's (libmq/docs/replication.md "Terms")
  std::string data_dir;  // epoch caches at <data_dir>/<topic>/partition-<N>.epochs
  std::chrono::milliseconds fetch_wait{500};
  std::size_t fetch_max_bytes = std::size_t{1} << 20;
  std::chrono::milliseconds tick{100};  // how often the control thread looks again without a watch event
  // Called (on the manager's threads, with none of its locks held) after a partition's role, ISR or
  // log changed here: something to await instead of polling role(). Must not call back into it
  // but for role().
  std::function<void()> on_change;
  // The groups' state of the partitions (section 7), kept by the Broker; nullptr: no group state is
  // replicated (the replication layer's own tests). Must outlive the manager's threads.
  mq::detail::GroupStateHost* groups = nullptr;
  std::chrono::milliseconds state_timeout{10000};  // how long confirm_state waits at most
};

// How a follower reaches its leader: one fetch (mqd's: GET /replica/fetch).
class FetchTransport {
 public:
  virtual ~FetchTransport() = default;
  virtual Result<FetchAnswer> fetch(std::uint32_t leader, const std::string& topic, std::uint32_t partition,
                                    const FetchRequest& request, const ReplicaId& me,
                                    std::chrono::milliseconds wait) = 0;
};

// A topic and its partition count (the Broker's kept copies are found among them).
using TopicPartitions = mq::detail::ReplicatedTopic;

// Thread-safe.
class ReplicaManager {
 public:
  using PartitionLookup =
      std::function<Result<Partition*>(const std::string& topic, std::uint32_t partition)>;

  // Registers this broker in etcd under a new lease (revoking the one it held before, if `previous
  // lease` names it) and starts taking part. Every partition of `topics` this broker is a replica
  // of must be found by `lookup`.
  static Result<std::unique_ptr<ReplicaManager>> start(ReplicaManagerOptions options,
                                                       std::vector<TopicPartitions> topics,
                                                       PartitionLookup lookup,
                                                       std::shared_ptr<EtcdClient> etcd,
                                                       std::shared_ptr<FetchTransport> transport,
                                                       std::shared_ptr<Clock> clock = make_steady_clock());
  // stop(false).
  ~ReplicaManager();
  ReplicaManager(const ReplicaManager&) = delete;
  ReplicaManager& operator=(const ReplicaManager&) = delete;

  // Ends every thread. With `hand_over`, first gives up every leadership in etcd and revokes the
  // lease, so that other replicas take over at once (a clean shutdown); without, the lease lapses
  // by itself (as after a crash).
  void stop(bool hand_over);

  // What this broker is for a partition. `leader`: the leader etcd names, if any.
  struct Role {
    bool leading = false;
    std::uint64_t epoch = 0;
    std::optional<std::uint32_t> leader;
    std::uint64_t high_watermark = 0;
    std::vector<ReplicaId> isr;
    bool lease_valid = false;  // this broker's lease, by its own conservative clock
  };
  Result<Role> role(const std::string& topic, std::uint32_t partition) const;

  // Appends as leader: checks (under the partition's role lock) that this broker leads it with a
  // valid lease and enough in-sync replicas, then runs `append` (which stores the write locally and
  // returns the offset after it). kNotOwned (owner: the leader, when known) when it does not lead;
  // kUnavailable when too few replicas are in sync or the lease lapsed.
  Result<std::uint64_t> append_as_leader(const std::string& topic, std::uint32_t partition,
                                         const std::function<Result<std::uint64_t>()>& append);
  // Waits until the write ending at `end` is acknowledged (R2), then checks the lease once more.
  Status await_replicated(const std::string& topic, std::uint32_t partition, std::uint64_t end,
                          std::chrono::milliseconds timeout);

  // Group state (section 7): publishes a record as the partition's leader, and waits until the
  // in-sync replicas hold it (mq::detail::Leadership's publish_state / confirm_state).
  Result<mq::detail::StateTicket> publish_state(const std::string& topic, std::uint32_t partition,
                                                mq::detail::GroupStateRecord record);
  Status confirm_state(const std::string& topic, std::uint32_t partition, mq::detail::StateTicket ticket);
  // Whether a change of group state could be confirmed now (leading, lease valid, enough in sync).
  Status state_writable(const std::string& topic, std::uint32_t partition) const;

  // The leader's side of a fetch: waits up to `wait` for lines beyond request.offset, records the
  // follower's progress, answers from the log. kNotOwned when this broker does not lead it.
  Result<FetchAnswer> serve_fetch(const std::string& topic, std::uint32_t partition,
                                  const FetchRequest& request, const ReplicaId& follower,
                                  std::chrono::milliseconds wait);

  std::int64_t lease_id() const;

 private:
  struct Replica;
  explicit ReplicaManager(ReplicaManagerOptions options, std::shared_ptr<EtcdClient> etcd,
                          std::shared_ptr<FetchTransport> transport, std::shared_ptr<Clock> clock);
  Result<Replica*> find(const std::string& topic, std::uint32_t partition) const;
  Status register_broker();
  void control_loop();
  void evaluate(Replica& r, const std::optional<std::vector<ReplicaId>>& alive);
  void become_leader(Replica& r, const PartitionCoordinator::View& view);
  void become_follower(Replica& r, std::uint32_t leader, std::uint64_t epoch);
  void stop_leading(Replica& r);
  void stop_fetching(Replica& r);
  // `alive`: the brokers with a key in etcd now, when it could be read.
  void keep_isr(Replica& r, const std::optional<std::vector<ReplicaId>>& alive);
  void fetch_loop(Replica& r, std::uint32_t leader, std::uint64_t epoch);
  void report_fetch_failure(Replica& r, std::uint32_t leader, const Status& why);
  void publish_high_watermark(Replica& r);
  void notify_changed() const {
    if (options_.on_change) options_.on_change();
  }
  bool lease_valid() const;
  void wake_control();

  const ReplicaManagerOptions options_;
  const ClusterKeys keys_;
  const ReplicaId me_;
  const std::shared_ptr<EtcdClient> etcd_;
  const std::shared_ptr<FetchTransport> transport_;
  const std::shared_ptr<Clock> clock_;
  const std::shared_ptr<FileSystem> fs_;                                                // the epoch caches'
  std::map<std::pair<std::string, std::uint32_t>, std::unique_ptr<Replica>> replicas_;  // fixed after start

  mutable std::mutex lease_mutex_;
  // GUARDED_BY(lease_mutex_) (replaced by the control thread). Shared, so that nobody holds the lock
  // during an etcd call (every partition lookup reads the lease): copy it, then use it.
  std::shared_ptr<LeaseKeeper> lease_;
  std::shared_ptr<LeaseKeeper> current_lease() const {
    std::lock_guard lock(lease_mutex_);
    return lease_;
  }
  std::atomic<bool> lease_lost_{false};

  std::mutex control_mutex_;
  std::condition_variable control_wake_;
  bool control_pending_ = false;      // GUARDED_BY(control_mutex_)
  bool stopping_ = false;             // GUARDED_BY(control_mutex_)
  std::atomic<bool> stopped_{false};  // stop() began: fetches are answered no more
  std::unique_ptr<EtcdWatch> watch_;
  std::thread control_;
};

}  // namespace mq::replication

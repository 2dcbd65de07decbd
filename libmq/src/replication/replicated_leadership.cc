#include "replication/replicated_leadership.h"

#include <algorithm>

namespace mq::replication {

ReplicatedLeadership::ReplicatedLeadership(ReplicaManagerOptions options, std::shared_ptr<EtcdClient> etcd,
                                           std::shared_ptr<FetchTransport> transport,
                                           std::chrono::milliseconds replication_timeout)
    : options_(std::move(options)),
      etcd_(std::move(etcd)),
      transport_(std::move(transport)),
      replication_timeout_(replication_timeout) {}

ReplicatedLeadership::~ReplicatedLeadership() { stop(false); }

Status ReplicatedLeadership::start(std::vector<mq::detail::ReplicatedTopic> topics,
                                   mq::detail::Leadership::PartitionLookup lookup,
                                   mq::detail::GroupStateHost* groups) {
  ReplicaManagerOptions options = options_;
  options.groups = groups;
  options.state_timeout = replication_timeout_;
  auto manager =
      ReplicaManager::start(std::move(options), std::move(topics), std::move(lookup), etcd_, transport_);
  if (!manager.ok()) return manager.status();
  std::lock_guard lock(mutex_);
  manager_ = std::move(manager.value());
  return {};
}

void ReplicatedLeadership::stop(bool hand_over) {
  std::shared_ptr<ReplicaManager> manager;
  {
    std::lock_guard lock(mutex_);
    manager = std::move(manager_);
  }
  if (manager) manager->stop(hand_over);
}

std::shared_ptr<ReplicaManager> ReplicatedLeadership::manager() const {
  std::lock_guard lock(mutex_);
  return manager_;
}

Status ReplicatedLeadership::check_leading(const std::string& topic, std::uint32_t partition) const {
  std::shared_ptr<ReplicaManager> manager;
  {
    std::lock_guard lock(mutex_);
    manager = manager_;
  }
  if (!manager) return Status::unavailable("replication is not running on this broker");
  auto role = manager->role(topic, partition);
  if (!role.ok()) return role.status();
  // A leader whose lease lapsed serves nothing (reads and acks included) from that moment, not only
  // once its control thread has stepped down.
  if (role->leading && !role->lease_valid)
    return Status::unavailable("this broker's etcd lease lapsed; it leads nothing until it has a new one");
  if (role->leading) return {};
  if (!role->leader) {
    return Status::unavailable("partition " + std::to_string(partition) + " of topic '" + topic +
                               "' has no leader yet; try again");
  }
  return Status::not_owned("partition " + std::to_string(partition) + " of topic '" + topic +
                               "' is led by broker " + std::to_string(*role->leader) + " (leader epoch " +
                               std::to_string(role->epoch) + ")",
                           *role->leader);
}

Result<AppendResult> ReplicatedLeadership::append(const std::string& topic, std::uint32_t partition,
                                                  const std::function<Result<AppendResult>()>& append) {
  std::shared_ptr<ReplicaManager> manager;
  {
    std::lock_guard lock(mutex_);
    manager = manager_;
  }
  if (!manager) return Status::unavailable("replication is not running on this broker");
  AppendResult result;
  auto end = manager->append_as_leader(topic, partition, [&]() -> Result<std::uint64_t> {
    auto appended = append();
    if (!appended.ok()) return appended.status();
    result = std::move(appended.value());
    // A duplicate's offset is its original's: the answer waits until that one is replicated too.
    std::uint64_t after = 0;
    for (std::uint64_t offset : result.offsets) after = std::max(after, offset + 1);
    return after;
  });
  if (!end.ok()) return end.status();
  if (auto s = manager->await_replicated(topic, partition, *end, replication_timeout_); !s.ok()) {
    return Status::unconfirmed("not enough in-sync replicas confirmed the write to " + topic + "/" +
                               std::to_string(partition) + " (" + s.message() +
                               "); it is not acknowledged: retry with the same dedup_id");
  }
  return result;
}

}  // namespace mq::replication

namespace mq::replication {

Result<mq::detail::StateTicket> ReplicatedLeadership::publish_state(const std::string& topic,
                                                                    std::uint32_t partition,
                                                                    mq::detail::GroupStateRecord record) {
  auto m = manager();
  if (!m) return Status::unavailable("replication is not running on this broker");
  return m->publish_state(topic, partition, std::move(record));
}

Status ReplicatedLeadership::confirm_state(const std::string& topic, std::uint32_t partition,
                                           mq::detail::StateTicket ticket) {
  auto m = manager();
  if (!m) return Status::unavailable("replication is not running on this broker");
  if (auto s = m->confirm_state(topic, partition, ticket); !s.ok()) {
    return Status::unconfirmed("not enough in-sync replicas confirmed the change of group state on " + topic +
                               "/" + std::to_string(partition) + " (" + s.message() +
                               "); it is applied here but not acknowledged");
  }
  return {};
}

Status ReplicatedLeadership::state_writable(const std::string& topic, std::uint32_t partition) const {
  auto m = manager();
  if (!m) return Status::unavailable("replication is not running on this broker");
  return m->state_writable(topic, partition);
}

}  // namespace mq::replication

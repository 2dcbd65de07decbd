#include "replication_setup.h"

#include <httplib.h>

#include <random>

#include "mq/file_system.h"
#include "protocol/http_protocol.h"
#include "storage/file_replace.h"

namespace mqd {
namespace {

constexpr const char* kDiskIdFile = ".disk-id";

// A follower's fetches, each one GET /replica/fetch to the leader's BROKER_ADDRS entry.
class HttpFetchTransport final : public mq::replication::FetchTransport {
 public:
  HttpFetchTransport(std::vector<std::string> broker_addrs, std::optional<std::string> token,
                     std::string secret)
      : broker_addrs_(std::move(broker_addrs)), token_(std::move(token)), secret_(std::move(secret)) {}

  mq::Result<mq::replication::FetchAnswer> fetch(std::uint32_t leader, const std::string& topic,
                                                 std::uint32_t partition,
                                                 const mq::replication::FetchRequest& request,
                                                 const mq::replication::ReplicaId& me,
                                                 std::chrono::milliseconds wait) override {
    if (leader >= broker_addrs_.size()) return mq::Status::invalid_argument("no address for the leader");
    namespace param = mq::http::param;
    httplib::Params query{
        {std::string(param::kTopic), topic},
        {std::string(param::kPartition), std::to_string(partition)},
        {std::string(param::kEpoch), std::to_string(request.leader_epoch)},
        {std::string(param::kOffset), std::to_string(request.offset)},
        {std::string(param::kLogStart), std::to_string(request.log_start)},
        {std::string(param::kDurable), std::to_string(request.durable)},
        {std::string(param::kStateEpoch), std::to_string(request.state_epoch)},
        {std::string(param::kStateVersion), std::to_string(request.state_version)},
        {std::string(param::kBroker), std::to_string(me.broker)},
        {std::string(param::kDiskId), me.disk_id},
        {std::string(param::kWaitMs), std::to_string(wait.count())},
        {std::string(param::kMaxBytes), std::to_string(request.max_bytes)},
    };
    if (request.last_epoch)
      query.emplace(std::string(param::kLastEpoch), std::to_string(*request.last_epoch));
    httplib::Client client(broker_addrs_[leader]);
    client.set_connection_timeout(std::chrono::seconds(2));
    client.set_tcp_nodelay(true);  // else each answer waits for a delayed ACK (~40 ms a produce)
    client.set_read_timeout(wait + std::chrono::seconds(5));
    httplib::Headers headers;
    if (token_) headers.emplace("Authorization", "Bearer " + *token_);
    headers.emplace(std::string(mq::http::path::kReplicaSecretHeader), secret_);
    auto answer = client.Get(std::string(mq::http::path::kReplicaFetch), query, headers);
    if (!answer) {
      return mq::Status::unavailable("fetch from broker " + std::to_string(leader) +
                                     " failed: " + httplib::to_string(answer.error()));
    }
    if (answer->status == 421)
      return mq::Status::not_owned("broker " + std::to_string(leader) + " does not lead it", leader);
    if (answer->status == 409) return mq::Status::conflict("leader epoch mismatch: " + answer->body);
    if (answer->status != 200) {
      return mq::Status::unavailable("fetch from broker " + std::to_string(leader) + ": status " +
                                     std::to_string(answer->status) + " " + answer->body.substr(0, 200));
    }
    return mq::replication::decode_fetch_answer(std::move(answer->body));
  }

 private:
  const std::vector<std::string> broker_addrs_;
  const std::optional<std::string> token_;
  const std::string secret_;
};

std::string random_hex(int words) {
  std::random_device random;
  std::string hex;
  for (int i = 0; i < words; ++i) {
    char part[9];
    std::snprintf(part, sizeof part, "%08x", static_cast<unsigned>(random()));
    hex += part;
  }
  return hex;
}

// The cluster's replication secret: read from etcd, or made by the first broker to ask (a
// transaction that writes it only where there is none, so that racing brokers agree).
mq::Result<std::string> cluster_secret(mq::replication::EtcdClient& etcd, const std::string& prefix) {
  const std::string key = prefix + "/replica-secret";
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto existing = etcd.get(key);
    if (!existing.ok()) return existing.status();
    if (existing->kv && existing->kv->value.size() >= 32) return existing->kv->value;
    if (existing->kv)
      return mq::Status::corruption("etcd holds a replication secret too short to trust at " + key);
    auto made = etcd.txn({mq::replication::Compare::absent(key)},
                         {mq::replication::TxnOp::put(key, random_hex(8))}, {});
    if (!made.ok()) return made.status();
  }
  return mq::Status::unavailable("the replication secret at " + key + " could not be read back");
}

}  // namespace

mq::Result<std::string> disk_id(const std::string& data_dir) {
  auto fs = mq::make_posix_file_system();
  const std::string path = data_dir + "/" + kDiskIdFile;
  if (fs->exists(path)) {
    auto file = fs->open(path);
    if (!file.ok()) return file.status();
    std::string id;
    if (auto s = (*file)->read(0, 64, id); !s.ok()) return s;
    while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
    if (id.empty() || id.size() > 63) return mq::Status::corruption(path + " holds no disk id");
    return id;
  }
  if (auto s = fs->create_directories(data_dir); !s.ok()) return s;
  const std::string id = random_hex(4);
  if (auto s = mq::detail::replace_file(*fs, data_dir, kDiskIdFile, id + "\n", /*durable=*/true); !s.ok())
    return s;
  return id;
}

mq::Result<Replication> make_replication(const DaemonConfig& config) {
  const ReplicationConfig& r = *config.replication;
  auto etcd = mq::replication::EtcdClient::create(r.etcd_endpoints);
  if (!etcd.ok()) return etcd.status();
  auto secret = cluster_secret(**etcd, r.prefix);
  if (!secret.ok()) return secret.status();
  auto id = disk_id(config.library.store.data_dir);
  if (!id.ok()) return id.status();
  mq::replication::ReplicaManagerOptions options;
  options.self = config.library.broker.index;
  options.broker_count = config.library.broker.count;
  options.replication_factor = r.factor;
  options.min_insync = r.min_insync;
  options.lease_ttl = r.lease_ttl;
  options.prefix = r.prefix;
  options.self_url = config.broker_addrs.at(config.library.broker.index);
  options.disk_id = *id;
  options.data_dir = config.library.store.data_dir;
  auto transport = std::make_shared<HttpFetchTransport>(config.broker_addrs, config.auth_token, *secret);
  // An append waits for its followers at most this long (then 503, not acknowledged): a follower
  // that stops answering leaves the ISR after its lag bound, so a produce is not held for longer.
  const auto replication_timeout =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::max<std::chrono::milliseconds>(
          options.replica_lag + std::chrono::seconds(2), config.request_timeout));
  return Replication{
      std::make_shared<mq::replication::ReplicatedLeadership>(
          std::move(options), std::shared_ptr<mq::replication::EtcdClient>(std::move(etcd.value())),
          std::move(transport), replication_timeout),
      *secret};
}

}  // namespace mqd

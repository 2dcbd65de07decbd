// mqd's part in replicated partitions (libmq/docs/replication.md): the etcd client, this data
// directory's disk id, how a follower fetches from its leader over HTTP (GET /replica/fetch), and
// the ReplicatedLeadership the Broker is opened with.
#pragma once

#include <memory>
#include <string>

#include "daemon_config.h"
#include "mq/status.h"
#include "replication/replicated_leadership.h"

namespace mqd {

// The id of the data directory `data_dir`: read from <data_dir>/.disk-id, or made (random) and
// written durably the first time. A broker that comes back on an empty disk has a new one, so that
// it is not taken for the replica it was (it is no longer in sync).
mq::Result<std::string> disk_id(const std::string& data_dir);

struct Replication {
  std::shared_ptr<mq::replication::ReplicatedLeadership> leadership;
  // The cluster's replication secret: a follower's fetches carry it, a leader answers only those
  // (mq::http::path::kReplicaSecretHeader). Made by the first broker, kept at <ETCD_PREFIX>/replica-secret.
  std::string secret;
};

// From ETCD_ENDPOINTS and the rest: `config.replication` must be set.
mq::Result<Replication> make_replication(const DaemonConfig& config);

}  // namespace mqd

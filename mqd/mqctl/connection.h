// The brokers mqctl talks to: an mq::Queue on their HTTP API, opened from the command line and the
// environment the way services open theirs (Queue::from_env), and where each partition lives.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <mq/queue.h>

#include "command_line.h"

namespace mq::detail {
class BrokerDirectory;
}

namespace mqctl {

// The broker that owns a partition.
struct PartitionOwner {
  std::uint32_t partition = 0;
  std::uint32_t broker = 0;  // its BROKER_INDEX
  std::string url;           // its base URL
};

// Thread-safe as mq::Queue is. Creating one contacts no broker; the first call does.
class Connection {
 public:
  // The HTTP queue on args.addr with args.token; the rest (MSG_QUEUE_CA_FILE, the producer's
  // MSG_QUEUE_LINGER_MS and batch limits) from the environment, as Queue::from_env reads it.
  // kInvalidArgument naming the address or variable that is bad.
  static mq::Result<std::unique_ptr<Connection>> open(const ConnectionArgs& args);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  mq::Queue& queue() { return *queue_; }
  // The owner of every partition of `topic`, in partition order. kNotFound for an unknown topic.
  mq::Result<std::vector<PartitionOwner>> owners(std::string_view topic);
  // How many partitions `topic` has. kNotFound for an unknown topic.
  mq::Result<std::uint32_t> partition_count(std::string_view topic);
  // The statistics of `topic`: those of its partitions the brokers hold (a dead-letter topic's
  // partitions appear on a broker once it dead-lettered something). kNotFound for an unknown topic.
  mq::Result<mq::TopicStats> topic_stats(std::string_view topic);
  // The base URL of every broker, in BROKER_INDEX order.
  mq::Result<std::vector<std::string>> brokers();

 private:
  Connection(mq::HttpQueueOptions options, std::unique_ptr<mq::Queue> queue);

  const mq::HttpQueueOptions options_;
  std::unique_ptr<mq::Queue> queue_;
  // The HTTP backend's map of the deployment (GET /topics of the brokers), which mq::Queue keeps to
  // itself: only `mqctl topics` needs it, to say which broker owns what. Made on first use.
  std::unique_ptr<mq::detail::BrokerDirectory> directory_;
};

}  // namespace mqctl

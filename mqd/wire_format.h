// What mqd writes that is not plain JSON: Server-Sent Events and the Prometheus exposition.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "mq/broker.h"

namespace mqd {

// The comment line sent on an idle stream every HEARTBEAT_MS.
inline constexpr std::string_view kKeepaliveEvent = ": keepalive\n\n";

// Appends one event for `delivery` of `topic`:
//   id: <id>
//   data: {"id":"<id>","topic":"T","partition":P,"delivery":D,<the stored record's fields>}
// The stored line is spliced in as it is, never re-serialised.
void append_event(std::string& out, std::string_view topic, const mq::Delivery& delivery);

// Prometheus text exposition format 0.0.4 of `stats`.
std::string prometheus_text(const std::vector<mq::TopicStats>& stats);

// Replicated partitions: each copy this broker keeps, whether it leads it and, leading, its ISR.
struct ReplicaState {
  std::string topic;
  std::uint32_t partition = 0;
  bool leading = false;
  std::size_t isr_size = 0;  // known on the leader only
};
// The families mq_partition_leader (1 on the leader, 0 on the other copies) and mq_isr_size (on the
// leader), in the same format, to follow prometheus_text.
std::string prometheus_replication_text(const std::vector<ReplicaState>& replicas);

}  // namespace mqd

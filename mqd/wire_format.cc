#include "wire_format.h"

#include <nlohmann/json.hpp>

#include "protocol/http_protocol.h"

namespace mqd {

void append_event(std::string& out, std::string_view topic, const mq::Delivery& delivery) {
  namespace field = mq::http::field;
  using mq::http::append_json_key;
  out += "id: ";
  out += delivery.id;
  out += "\ndata: {";
  append_json_key(out, field::kId);
  out += '"';
  out += delivery.id;  // ids are digits and a dash: nothing to escape
  out += "\",";
  append_json_key(out, field::kTopic);
  out += nlohmann::json(std::string(topic)).dump();
  out += ',';
  append_json_key(out, field::kPartition);
  out += std::to_string(delivery.partition);
  out += ',';
  append_json_key(out, field::kDelivery);
  out += std::to_string(delivery.delivery);
  out += ',';
  out.append(delivery.record, 1, std::string::npos);  // the record without its opening brace
  out += "\n\n";
}

namespace {

void family(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

// Topic and group names match [A-Za-z0-9._-]: label values need no escaping.
void sample(std::string& out, std::string_view name, const mq::TopicStats& topic, std::uint32_t partition,
            const std::string* group, std::uint64_t value) {
  out += name;
  out += "{topic=\"" + topic.name + "\",partition=\"" + std::to_string(partition) + "\"";
  if (group) out += ",group=\"" + *group + "\"";
  out += "} " + std::to_string(value) + "\n";
}

}  // namespace

std::string prometheus_text(const std::vector<mq::TopicStats>& stats) {
  std::string out;
  family(out, "mq_produced_total", "counter", "Messages appended to the partition.");
  for (const auto& t : stats) {
    for (const auto& p : t.partitions)
      sample(out, "mq_produced_total", t, p.partition, nullptr, p.next_offset);
  }
  struct PartitionMetric {
    std::string_view name, type, help;
    std::uint64_t mq::PartitionStats::*field;
  };
  static constexpr PartitionMetric kPartitionMetrics[] = {
      {"mq_log_bytes", "gauge", "Size of the partition's log on disk (every segment).",
       &mq::PartitionStats::log_bytes},
      {"mq_log_start_offset", "gauge", "The first offset the partition still stores.",
       &mq::PartitionStats::log_start_offset},
      {"mq_log_segments", "gauge", "Segments of the partition's log, the active one included.",
       &mq::PartitionStats::segments},
      {"mq_retention_deleted_messages_total", "counter", "Messages retention deleted.",
       &mq::PartitionStats::retention_deleted},
  };
  for (const auto& metric : kPartitionMetrics) {
    family(out, metric.name, metric.type, metric.help);
    for (const auto& t : stats) {
      for (const auto& p : t.partitions) sample(out, metric.name, t, p.partition, nullptr, p.*metric.field);
    }
  }
  struct GroupMetric {
    std::string_view name, type, help;
    std::uint64_t mq::GroupStats::*field;
  };
  static constexpr GroupMetric kGroupMetrics[] = {
      {"mq_delivered_total", "counter", "Deliveries to consumers, redeliveries included.",
       &mq::GroupStats::delivered},
      {"mq_acked_total", "counter", "Messages acknowledged.", &mq::GroupStats::acked},
      {"mq_redelivered_total", "counter", "Deliveries after the first.", &mq::GroupStats::redelivered},
      {"mq_dead_lettered_total", "counter", "Messages moved to the dead-letter topic.",
       &mq::GroupStats::dead_lettered},
      {"mq_delayed", "gauge", "Delayed messages (deliver_at) not yet due.", &mq::GroupStats::delayed},
      {"mq_inflight", "gauge", "Messages delivered and not yet acknowledged.", &mq::GroupStats::inflight},
      {"mq_lag", "gauge", "Next offset minus committed offset.", &mq::GroupStats::lag},
      {"mq_committed_offset", "gauge", "First offset not yet acknowledged.",
       &mq::GroupStats::committed_offset},
  };
  for (const auto& metric : kGroupMetrics) {
    family(out, metric.name, metric.type, metric.help);
    for (const auto& t : stats) {
      for (const auto& p : t.partitions) {
        for (const auto& g : p.groups) sample(out, metric.name, t, p.partition, &g.group, g.*metric.field);
      }
    }
  }
  return out;
}

std::string prometheus_replication_text(const std::vector<ReplicaState>& replicas) {
  std::string out;
  family(out, "mq_partition_leader", "gauge",
         "1 when this broker leads the partition, 0 on its other copies.");
  for (const auto& r : replicas) {
    sample(out, "mq_partition_leader", mq::TopicStats{r.topic, {}}, r.partition, nullptr, r.leading ? 1 : 0);
  }
  family(out, "mq_isr_size", "gauge", "In-sync replicas of the partition (reported by its leader).");
  for (const auto& r : replicas) {
    if (r.leading) sample(out, "mq_isr_size", mq::TopicStats{r.topic, {}}, r.partition, nullptr, r.isr_size);
  }
  return out;
}

}  // namespace mqd

#include "replication/coordination.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <utility>

namespace mq::replication {
namespace {

std::optional<std::uint64_t> unsigned_field(const nlohmann::json& json, const char* name) {
  const auto it = json.find(name);
  if (it == json.end() || !it->is_number_unsigned()) return std::nullopt;
  return it->get<std::uint64_t>();
}

std::optional<std::string> string_field(const nlohmann::json& json, const char* name) {
  const auto it = json.find(name);
  if (it == json.end() || !it->is_string()) return std::nullopt;
  return it->get<std::string>();
}

Status not_ours(std::string_view what, std::string_view json) {
  return Status::corruption("etcd holds a " + std::string(what) +
                            " that is not one: " + std::string(json.substr(0, 200)));
}

std::optional<std::uint32_t> parse_index(std::string_view text) {
  std::uint32_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

}  // namespace

std::vector<std::uint32_t> replicas_of(std::uint32_t partition, std::uint32_t broker_count,
                                       std::uint32_t replication_factor) {
  std::vector<std::uint32_t> replicas;
  for (std::uint32_t i = 0; i < std::min(replication_factor, broker_count); ++i)
    replicas.push_back((partition + i) % broker_count);
  return replicas;
}

std::string encode(const PartitionState& state) {
  nlohmann::json isr = nlohmann::json::array();
  for (const auto& r : state.isr) isr.push_back({{"broker", r.broker}, {"disk_id", r.disk_id}});
  return nlohmann::json{{"epoch", state.epoch}, {"leader", state.leader}, {"isr", std::move(isr)}}.dump();
}

std::string encode(const LeaderValue& leader) {
  return nlohmann::json{{"broker", leader.broker}, {"epoch", leader.epoch}}.dump();
}

std::string encode(const BrokerValue& broker) {
  return nlohmann::json{{"url", broker.url}, {"disk_id", broker.disk_id}}.dump();
}

Result<PartitionState> decode_partition_state(std::string_view text) {
  const auto json = nlohmann::json::parse(text, nullptr, false);
  if (!json.is_object()) return not_ours("partition state", text);
  PartitionState state;
  const auto epoch = unsigned_field(json, "epoch");
  const auto leader = json.find("leader");
  const auto isr = json.find("isr");
  if (!epoch || leader == json.end() || !leader->is_number_integer() || isr == json.end() || !isr->is_array())
    return not_ours("partition state", text);
  state.epoch = *epoch;
  state.leader = leader->get<std::int64_t>();
  if (state.leader < -1) return not_ours("partition state", text);
  for (const auto& member : *isr) {
    if (!member.is_object()) return not_ours("partition state", text);
    const auto broker = unsigned_field(member, "broker");
    const auto disk = string_field(member, "disk_id");
    if (!broker || !disk || *broker > UINT32_MAX) return not_ours("partition state", text);
    state.isr.push_back({static_cast<std::uint32_t>(*broker), *disk});
  }
  return state;
}

Result<LeaderValue> decode_leader(std::string_view text) {
  const auto json = nlohmann::json::parse(text, nullptr, false);
  if (!json.is_object()) return not_ours("partition leader", text);
  const auto broker = unsigned_field(json, "broker");
  const auto epoch = unsigned_field(json, "epoch");
  if (!broker || !epoch || *broker > UINT32_MAX) return not_ours("partition leader", text);
  return LeaderValue{static_cast<std::uint32_t>(*broker), *epoch};
}

Result<BrokerValue> decode_broker(std::string_view text) {
  const auto json = nlohmann::json::parse(text, nullptr, false);
  if (!json.is_object()) return not_ours("broker", text);
  const auto url = string_field(json, "url");
  const auto disk = string_field(json, "disk_id");
  if (!url || !disk) return not_ours("broker", text);
  return BrokerValue{*url, *disk};
}

ClusterKeys::ClusterKeys(std::string prefix) : prefix_(std::move(prefix)) {
  while (!prefix_.empty() && prefix_.back() == '/') prefix_.pop_back();
}

std::string ClusterKeys::state(std::string_view topic, std::uint32_t partition) const {
  return partitions() + std::string(topic) + "/" + std::to_string(partition) + "/state";
}

std::string ClusterKeys::leader(std::string_view topic, std::uint32_t partition) const {
  return partitions() + std::string(topic) + "/" + std::to_string(partition) + "/leader";
}

std::optional<ClusterKeys::PartitionKey> ClusterKeys::parse_partition_key(std::string_view key) const {
  const std::string base = partitions();
  if (!key.starts_with(base)) return std::nullopt;
  key.remove_prefix(base.size());
  // <topic>/<partition>/<state|leader>; topic names hold no '/'.
  const std::size_t first = key.find('/');
  if (first == std::string_view::npos || first == 0) return std::nullopt;
  const std::size_t second = key.find('/', first + 1);
  if (second == std::string_view::npos) return std::nullopt;
  const auto partition = parse_index(key.substr(first + 1, second - first - 1));
  const std::string_view kind = key.substr(second + 1);
  if (!partition || (kind != "state" && kind != "leader")) return std::nullopt;
  return PartitionKey{std::string(key.substr(0, first)), *partition, kind == "leader"};
}

std::optional<std::uint32_t> ClusterKeys::parse_broker_key(std::string_view key) const {
  const std::string base = brokers();
  if (!key.starts_with(base)) return std::nullopt;
  return parse_index(key.substr(base.size()));
}

PartitionCoordinator::PartitionCoordinator(EtcdClient& etcd, const ClusterKeys& keys, std::string topic,
                                           std::uint32_t partition)
    : etcd_(etcd),
      topic_(std::move(topic)),
      partition_(partition),
      state_key_(keys.state(topic_, partition)),
      leader_key_(keys.leader(topic_, partition)) {}

Result<PartitionCoordinator::View> PartitionCoordinator::view_from(const std::vector<KeyValue>& state_kvs,
                                                                   const std::vector<KeyValue>& leader_kvs) {
  View view;
  if (!state_kvs.empty()) {
    auto state = decode_partition_state(state_kvs.front().value);
    if (!state.ok()) return state.status();
    view.state = std::move(*state);
    view.state_mod_revision = state_kvs.front().mod_revision;
  }
  if (!leader_kvs.empty()) {
    auto leader = decode_leader(leader_kvs.front().value);
    if (!leader.ok()) return leader.status();
    view.leader = *leader;
    view.leader_create_revision = leader_kvs.front().create_revision;
  }
  return view;
}

Result<PartitionCoordinator::View> PartitionCoordinator::read() const {
  // One transaction with no compare: both keys at one revision.
  auto result = etcd_.txn({}, {TxnOp::range(state_key_), TxnOp::range(leader_key_)}, {});
  if (!result.ok()) return result.status();
  if (result->responses.size() != 2)
    return Status::io_error("etcd answered a read of two keys with " +
                            std::to_string(result->responses.size()));
  return view_from(result->responses[0].kvs, result->responses[1].kvs);
}

Result<PartitionCoordinator::View> PartitionCoordinator::create_state(const ReplicaId& first) const {
  const PartitionState initial{0, -1, {first}};
  auto result = etcd_.txn({Compare::absent(state_key_)}, {TxnOp::put(state_key_, encode(initial))}, {});
  if (!result.ok()) return result.status();
  return read();
}

Result<PartitionCoordinator::Election> PartitionCoordinator::try_lead(const View& seen, const ReplicaId& me,
                                                                      std::int64_t lease) const {
  Election election;
  if (!seen.state || seen.leader ||
      std::find(seen.state->isr.begin(), seen.state->isr.end(), me) == seen.state->isr.end()) {
    election.view = seen;
    return election;
  }
  PartitionState next = *seen.state;
  next.epoch += 1;
  next.leader = me.broker;
  auto result =
      etcd_.txn({Compare::absent(leader_key_),
                 Compare::mod_revision(state_key_, CompareResult::kEqual, seen.state_mod_revision)},
                {TxnOp::put(leader_key_, encode(LeaderValue{me.broker, next.epoch}), lease),
                 TxnOp::put(state_key_, encode(next)), TxnOp::range(state_key_), TxnOp::range(leader_key_)},
                {TxnOp::range(state_key_), TxnOp::range(leader_key_)});
  if (!result.ok()) return result.status();
  election.won = result->succeeded;
  const std::size_t first = election.won ? 2 : 0;
  if (result->responses.size() != first + 2) return Status::io_error("etcd answered the election oddly");
  auto view = view_from(result->responses[first].kvs, result->responses[first + 1].kvs);
  if (!view.ok()) return view.status();
  election.view = std::move(*view);
  return election;
}

Result<bool> PartitionCoordinator::change_isr(const View& seen, std::int64_t my_leader_create_revision,
                                              const std::vector<ReplicaId>& isr) const {
  if (!seen.state) return Status::invalid_argument("no partition state to change");
  PartitionState next = *seen.state;
  next.isr = isr;
  auto result =
      etcd_.txn({Compare::create_revision(leader_key_, CompareResult::kEqual, my_leader_create_revision),
                 Compare::mod_revision(state_key_, CompareResult::kEqual, seen.state_mod_revision)},
                {TxnOp::put(state_key_, encode(next))}, {});
  if (!result.ok()) return result.status();
  return result->succeeded;
}

Status PartitionCoordinator::step_down(std::int64_t my_leader_create_revision) const {
  auto result =
      etcd_.txn({Compare::create_revision(leader_key_, CompareResult::kEqual, my_leader_create_revision)},
                {TxnOp::del(leader_key_)}, {});
  return result.ok() ? Status{} : result.status();
}

}  // namespace mq::replication

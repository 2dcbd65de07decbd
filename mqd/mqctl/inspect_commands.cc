// mqctl topics, mqctl stats: the state of the deployment, from every broker's /stats (and, for the
// owners, /topics).
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "commands.h"
#include "table.h"

namespace mqctl {
namespace {

using Align = Table::Align;

// "0-3" or "0,2,4": a broker's partitions, runs shortened.
std::string partition_list(const std::vector<std::uint32_t>& partitions) {
  std::string out;
  for (std::size_t i = 0; i < partitions.size();) {
    std::size_t j = i;
    while (j + 1 < partitions.size() && partitions[j + 1] == partitions[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += std::to_string(partitions[i]);
    if (j >= i + 2) {
      out += "-" + std::to_string(partitions[j]);
    } else if (j == i + 1) {
      out += "," + std::to_string(partitions[j]);
    }
    i = j + 1;
  }
  return out;
}

std::uint64_t stored_messages(const mq::PartitionStats& p) { return p.next_offset - p.log_start_offset; }

nlohmann::json group_json(const mq::GroupStats& g) {
  return {{"group", g.group},
          {"committed_offset", g.committed_offset},
          {"inflight", g.inflight},
          {"lag", g.lag},
          {"delayed", g.delayed},
          {"ordering", std::string(mq::to_string(g.ordering))},
          {"delivered", g.delivered},
          {"acked", g.acked},
          {"redelivered", g.redelivered},
          {"dead_lettered", g.dead_lettered}};
}

nlohmann::json partition_json(const mq::PartitionStats& p) {
  nlohmann::json groups = nlohmann::json::array();
  for (const auto& g : p.groups) groups.push_back(group_json(g));
  return {{"partition", p.partition},
          {"next_offset", p.next_offset},
          {"log_start_offset", p.log_start_offset},
          {"messages", stored_messages(p)},
          {"segments", p.segments},
          {"log_bytes", p.log_bytes},
          {"retention_deleted", p.retention_deleted},
          {"groups", std::move(groups)}};
}

void print_topic_stats(const mq::TopicStats& topic, std::ostream& out) {
  out << topic.name << " (" << topic.partitions.size() << " partitions)\n";
  Table partitions({{"PARTITION", Align::kRight},
                    {"NEXT_OFFSET", Align::kRight},
                    {"LOG_START", Align::kRight},
                    {"MESSAGES", Align::kRight},
                    {"SIZE", Align::kRight},
                    {"SEGMENTS", Align::kRight}});
  Table groups({{"GROUP"},
                {"PARTITION", Align::kRight},
                {"COMMITTED", Align::kRight},
                {"IN_FLIGHT", Align::kRight},
                {"LAG", Align::kRight},
                {"DELAYED", Align::kRight},
                {"ORDERING"},
                {"DELIVERED", Align::kRight},
                {"ACKED", Align::kRight},
                {"DEAD_LETTERED", Align::kRight}});
  // Groups by name, then partition: a group's rows together.
  std::map<std::string, std::vector<std::pair<std::uint32_t, const mq::GroupStats*>>> by_group;
  for (const auto& p : topic.partitions) {
    partitions.add_row({std::to_string(p.partition), std::to_string(p.next_offset),
                        std::to_string(p.log_start_offset), std::to_string(stored_messages(p)),
                        human_bytes(p.log_bytes), std::to_string(p.segments)});
    for (const auto& g : p.groups) by_group[g.group].emplace_back(p.partition, &g);
  }
  for (const auto& [name, rows] : by_group) {
    for (const auto& [partition, g] : rows) {
      groups.add_row({name, std::to_string(partition), std::to_string(g->committed_offset),
                      std::to_string(g->inflight), std::to_string(g->lag), std::to_string(g->delayed),
                      std::string(mq::to_string(g->ordering)), std::to_string(g->delivered),
                      std::to_string(g->acked), std::to_string(g->dead_lettered)});
    }
  }
  partitions.print(out);
  out << '\n';
  if (groups.empty()) {
    out << "no consumer groups\n";
  } else {
    groups.print(out);
  }
}

}  // namespace

int run_topics(const TopicsArgs& args, Context& context) {
  auto stats = context.connection.queue().stats();
  if (!stats.ok()) return context.report.fail("reading the brokers' statistics", stats.status());
  auto brokers = context.connection.brokers();
  if (!brokers.ok()) return context.report.fail("reading the brokers' addresses", brokers.status());

  nlohmann::json json_topics = nlohmann::json::array();
  Table table({{"TOPIC"},
               {"PARTITIONS", Align::kRight},
               {"MESSAGES", Align::kRight},
               {"SIZE", Align::kRight},
               {"GROUPS", Align::kRight},
               {"OWNERS"}});
  for (const mq::TopicStats& topic : *stats) {
    auto owners = context.connection.owners(topic.name);
    if (!owners.ok()) return context.report.fail("finding the owners of " + topic.name, owners.status());
    std::uint64_t messages = 0, produced = 0, bytes = 0;
    std::set<std::string> groups;
    for (const auto& p : topic.partitions) {
      messages += stored_messages(p);
      produced += p.next_offset;
      bytes += p.log_bytes;
      for (const auto& g : p.groups) groups.insert(g.group);
    }
    std::map<std::uint32_t, std::vector<std::uint32_t>> by_broker;
    nlohmann::json json_owners = nlohmann::json::array();
    for (const PartitionOwner& owner : *owners) {
      by_broker[owner.broker].push_back(owner.partition);
      json_owners.push_back({{"partition", owner.partition}, {"broker", owner.broker}, {"url", owner.url}});
    }
    std::string owned;
    for (const auto& [broker, partitions] : by_broker) {
      if (!owned.empty()) owned += ' ';
      owned += "b" + std::to_string(broker) + ":" + partition_list(partitions);
    }
    table.add_row({topic.name, std::to_string(owners->size()), std::to_string(messages), human_bytes(bytes),
                   std::to_string(groups.size()), owned});
    json_topics.push_back({{"name", topic.name},
                           {"partitions", owners->size()},
                           {"messages", messages},
                           {"produced", produced},
                           {"log_bytes", bytes},
                           {"groups", groups},
                           {"owners", std::move(json_owners)}});
  }

  if (args.json) {
    nlohmann::json json_brokers = nlohmann::json::array();
    for (std::size_t i = 0; i < brokers->size(); ++i)
      json_brokers.push_back({{"broker", i}, {"url", (*brokers)[i]}});
    std::cout
        << nlohmann::json{{"brokers", std::move(json_brokers)}, {"topics", std::move(json_topics)}}.dump()
        << std::endl;
    return 0;
  }
  Table broker_table({{"BROKER"}, {"URL"}});
  for (std::size_t i = 0; i < brokers->size(); ++i)
    broker_table.add_row({"b" + std::to_string(i), (*brokers)[i]});
  broker_table.print(std::cout);
  std::cout << '\n';
  table.print(std::cout);
  std::cout << std::flush;
  return 0;
}

int run_stats(const StatsArgs& args, Context& context) {
  mq::Result<std::vector<mq::TopicStats>> stats = std::vector<mq::TopicStats>{};
  if (args.topic) {
    auto one = context.connection.topic_stats(*args.topic);
    if (!one.ok()) return context.report.fail("reading the statistics of " + *args.topic, one.status());
    stats->push_back(std::move(one).value());
  } else {
    stats = context.connection.queue().stats();
    if (!stats.ok()) return context.report.fail("reading the brokers' statistics", stats.status());
  }
  if (args.json) {
    nlohmann::json topics = nlohmann::json::array();
    for (const mq::TopicStats& topic : *stats) {
      nlohmann::json partitions = nlohmann::json::array();
      for (const auto& p : topic.partitions) partitions.push_back(partition_json(p));
      topics.push_back({{"name", topic.name}, {"partitions", std::move(partitions)}});
    }
    std::cout << nlohmann::json{{"topics", std::move(topics)}}.dump() << std::endl;
    return 0;
  }
  for (std::size_t i = 0; i < stats->size(); ++i) {
    if (i > 0) std::cout << '\n';
    print_topic_stats((*stats)[i], std::cout);
  }
  std::cout << std::flush;
  return 0;
}

}  // namespace mqctl

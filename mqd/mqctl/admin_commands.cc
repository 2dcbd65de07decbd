// mqctl seek, redrive, delete-group: the commands that change a group or move dead letters.
#include <iostream>
#include <nlohmann/json.hpp>
#include <vector>

#include "commands.h"
#include "table.h"

namespace mqctl {
namespace {

// `only`, or every partition of `topic`.
mq::Result<std::vector<std::uint32_t>> partitions_of(Connection& connection, const std::string& topic,
                                                     std::optional<std::uint32_t> only) {
  if (only) return std::vector<std::uint32_t>{*only};
  auto count = connection.partition_count(topic);
  if (!count.ok()) return count.status();
  std::vector<std::uint32_t> partitions;
  for (std::uint32_t p = 0; p < *count; ++p) partitions.push_back(p);
  return partitions;
}

mq::SeekTarget target_of(const SeekArgs& args) {
  mq::SeekTarget target;
  target.offset = args.offset;
  target.timestamp_ms = args.timestamp_ms;
  if (args.earliest) target.position = mq::SeekTarget::Position::kEarliest;
  if (args.latest) target.position = mq::SeekTarget::Position::kLatest;
  return target;
}

}  // namespace

int run_seek(const SeekArgs& args, Context& context) {
  auto partitions = partitions_of(context.connection, args.topic, args.partition);
  if (!partitions.ok())
    return context.report.fail("reading the partitions of " + args.topic, partitions.status());
  const mq::SeekTarget target = target_of(args);
  Table table({{"PARTITION", Table::Align::kRight}, {"POSITION", Table::Align::kRight}});
  nlohmann::json json_partitions = nlohmann::json::array();
  for (std::uint32_t partition : *partitions) {
    auto position = context.connection.queue().seek(args.topic, partition, args.group, target);
    if (!position.ok()) {
      return context.report.fail(
          "seeking group " + args.group + " in partition " + std::to_string(partition) + " of " + args.topic,
          position.status());
    }
    table.add_row({std::to_string(partition), std::to_string(*position)});
    json_partitions.push_back({{"partition", partition}, {"committed_offset", *position}});
  }
  if (args.json) {
    std::cout << nlohmann::json{{"topic", args.topic}, {"group", args.group}, {"partitions", json_partitions}}
                     .dump()
              << std::endl;
    return 0;
  }
  std::cout << "group " << args.group << " of " << args.topic << " now starts at:\n";
  table.print(std::cout);
  std::cout << std::flush;
  return 0;
}

int run_redrive(const RedriveArgs& args, Context& context) {
  constexpr std::string_view kSuffix = "-dlq";
  const std::string source =
      args.topic.ends_with(kSuffix) ? args.topic.substr(0, args.topic.size() - kSuffix.size()) : args.topic;
  auto partitions = partitions_of(context.connection, args.topic, args.partition);
  if (!partitions.ok() && partitions.status().code() == mq::ErrorCode::kNotFound && source != args.topic &&
      context.connection.partition_count(source).ok()) {
    // No broker lists the dead-letter topic of an existing topic: it has never received a dead
    // letter, so there is nothing to redrive.
    partitions = std::vector<std::uint32_t>{};
  }
  if (!partitions.ok())
    return context.report.fail("reading the partitions of " + args.topic, partitions.status());
  std::uint64_t total = 0;
  std::string per_partition;
  nlohmann::json json_partitions = nlohmann::json::array();
  for (std::uint32_t partition : *partitions) {
    std::optional<std::uint64_t> limit;
    if (args.limit) {
      if (total >= *args.limit) break;
      limit = *args.limit - total;
    }
    auto redriven = context.connection.queue().redrive(args.topic, partition, limit);
    if (!redriven.ok()) {
      return context.report.fail("redriving partition " + std::to_string(partition) + " of " + args.topic,
                                 redriven.status());
    }
    total += *redriven;
    json_partitions.push_back({{"partition", partition}, {"redriven", *redriven}});
    if (*redriven > 0) {
      per_partition += (per_partition.empty() ? "" : ", ") + std::string("partition ") +
                       std::to_string(partition) + ": " + std::to_string(*redriven);
    }
  }
  if (args.json) {
    std::cout
        << nlohmann::json{{"topic", args.topic}, {"redriven", total}, {"partitions", json_partitions}}.dump()
        << std::endl;
    return 0;
  }
  std::cout << "redriven " << total << " dead letter" << (total == 1 ? "" : "s") << " from " << args.topic
            << " back to " << source;
  if (!per_partition.empty()) std::cout << " (" << per_partition << ")";
  std::cout << std::endl;
  return 0;
}

int run_delete_group(const DeleteGroupArgs& args, Context& context) {
  auto deleted = context.connection.queue().delete_group(args.topic, args.group);
  if (!deleted.ok()) {
    return context.report.fail("deleting group " + args.group + " of " + args.topic, deleted.status());
  }
  if (args.json) {
    std::cout << nlohmann::json{{"topic", args.topic}, {"group", args.group}, {"deleted", *deleted}}.dump()
              << std::endl;
  } else if (*deleted) {
    std::cout << "deleted group " << args.group << " of " << args.topic << std::endl;
  } else {
    std::cout << "group " << args.group << " of " << args.topic << " did not exist: nothing deleted"
              << std::endl;
  }
  return 0;
}

}  // namespace mqctl

// mqctl consume (as a member of a consumer group: delivered, acknowledged) and mqctl tail (read
// without a group: nothing changes on the brokers).
#include <algorithm>
#include <chrono>
#include <iostream>
#include <map>
#include <thread>

#include "commands.h"

namespace mqctl {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// How long one wait may last before a stop request is looked at again.
constexpr milliseconds kStopCheck{250};

}  // namespace

int run_consume(const ConsumeArgs& args, Context& context) {
  mq::Queue& queue = context.connection.queue();
  mq::ConsumeOptions options;
  options.group = args.group;
  options.partitions = args.partitions;
  options.from = args.from == "latest" ? mq::StartPosition::kLatest : mq::StartPosition::kEarliest;
  if (args.visibility_timeout_ms) options.visibility_timeout = milliseconds(*args.visibility_timeout_ms);
  // With -n, have no more in flight per partition than will be printed: what the brokers push
  // beyond it (they refill the window after each ack, the last one too) goes back to the group when
  // mqctl exits, each such message having cost a delivery (MAX_DELIVERIES counts it).
  if (args.count > 0) options.max_inflight = std::min<std::size_t>(args.count, options.max_inflight);
  auto consumer = queue.consume(args.topic, options);
  if (!consumer.ok()) return context.report.fail("consuming " + args.topic, consumer.status());

  const MessageFormat format{args.payload_only, /*with_delivery=*/true};
  std::size_t printed = 0;
  auto idle_until = Clock::now() + milliseconds(args.wait_ms);
  while (!(context.stop && context.stop->requested())) {
    const auto now = Clock::now();
    if (!args.follow && now >= idle_until) break;
    const milliseconds slice =
        args.follow ? kStopCheck : std::min(kStopCheck, std::chrono::ceil<milliseconds>(idle_until - now));
    const std::size_t want = args.count > 0 ? std::min<std::size_t>(args.count - printed, 100) : 100;
    auto batch = (*consumer)->receive(want, slice);
    if (!batch.ok()) return context.report.fail("receiving from " + args.topic, batch.status());
    if (batch->empty()) continue;
    for (const mq::ReceivedMessage& message : *batch) std::cout << message_line(message, format) << '\n';
    // Printed (and flushed) before acknowledged: a crash in between means a message printed twice,
    // never one lost.
    std::cout << std::flush;
    if (!args.no_ack) {
      if (auto acked = queue.ack(*batch); !acked.ok())
        return context.report.fail("acknowledging messages of " + args.topic, acked.status());
    }
    printed += batch->size();
    idle_until = Clock::now() + milliseconds(args.wait_ms);
    if (args.count > 0 && printed >= args.count) break;
  }
  return 0;  // the consumer closes here: what it held unacknowledged goes back to the group
}

int run_tail(const TailArgs& args, Context& context) {
  mq::Queue& queue = context.connection.queue();
  // Where each partition ends now (or starts, with --from-start).
  auto stats = context.connection.topic_stats(args.topic);
  if (!stats.ok()) return context.report.fail("reading the partitions of " + args.topic, stats.status());
  std::map<std::uint32_t, std::uint64_t> position;
  for (const mq::PartitionStats& p : stats->partitions) {
    if (!args.partition || *args.partition == p.partition)
      position[p.partition] = args.from_start ? p.log_start_offset : p.next_offset;
  }
  if (position.empty()) {
    return context.report.fail(
        "reading " + args.topic,
        mq::Status::not_found("partition " + std::to_string(args.partition.value_or(0)) + " of topic \"" +
                              args.topic + "\" does not exist"));
  }

  const MessageFormat format{args.payload_only, /*with_delivery=*/false};
  std::size_t printed = 0;
  auto idle_since = Clock::now();
  while (!(context.stop && context.stop->requested())) {
    bool got_some = false;
    for (auto& [partition, offset] : position) {
      const std::size_t limit =
          args.count > 0 ? std::min(args.count - printed, mq::kMaxReadLimit) : mq::kMaxReadLimit;
      auto page = queue.read(args.topic, partition, mq::ReadFrom{offset, std::nullopt}, limit);
      if (!page.ok()) {
        return context.report.fail("reading partition " + std::to_string(partition) + " of " + args.topic,
                                   page.status());
      }
      // Retention may have deleted what we were about to read: go on from what is left.
      offset = std::max(offset, page->log_start_offset);
      if (page->messages.empty()) continue;
      for (const mq::ReceivedMessage& message : page->messages)
        std::cout << message_line(message, format) << '\n';
      std::cout << std::flush;
      offset = page->messages.back().offset + 1;
      printed += page->messages.size();
      got_some = true;
      if (args.count > 0 && printed >= args.count) return 0;
    }
    if (got_some) {  // a full page may have more behind it: ask again at once
      idle_since = Clock::now();
      continue;
    }
    if (args.wait_ms > 0 && Clock::now() - idle_since >= milliseconds(args.wait_ms)) return 0;
    // Polling: reading without a group has no stream to wait on (GET /messages answers at once).
    if (context.stop) {
      if (context.stop->wait_for(milliseconds(args.poll_ms))) return 0;
    } else {
      std::this_thread::sleep_for(milliseconds(args.poll_ms));
    }
  }
  return 0;
}

}  // namespace mqctl

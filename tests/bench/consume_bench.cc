// consume_bench: in-process produce -> deliver -> ack through the Broker, on one partition: end-to-end
// throughput and the latency from produce() to the delivery reaching a consumer.
//
//   consume_bench [--dir PATH] [--messages N] [--always-messages M] [--repeat R]
//
// One producer thread produces N messages of 100-byte JSON payloads (one per produce() call, or 100
// per call); 1 or 4 consumer threads, each with its own Subscription in group "bench", call
// next(64, 100 ms) and acknowledge every batch they get with one ack() call. Every payload carries
// the producer's steady_clock time, so each consumer computes the produce -> delivery latency of every
// message. Every number is the median over --repeat runs. Results go to stdout, progress to stderr.
#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "bench_support.h"
#include "mq/mq.h"
#include "storage/internal_access.h"  // PayloadInternal: exact stored bytes

namespace {

using Clock = std::chrono::steady_clock;
namespace stdfs = std::filesystem;
// The shared benchmark helpers (bench_support.h), as tests/unit uses mq::testing.
using namespace mq::bench;

constexpr std::size_t kPayloadBytes = 100;
constexpr std::size_t kNextMax = 64;
constexpr std::chrono::milliseconds kNextTimeout{100};
constexpr std::size_t kMaxInflight = 1000;
// A run that acknowledges nothing for this long is declared stuck (lost or never delivered messages).
constexpr std::chrono::seconds kStallLimit{30};
constexpr std::string_view kTopic = "bench";
constexpr std::string_view kGroup = "bench";

constexpr std::string_view kUsage =
    "usage: consume_bench [--dir PATH] [--messages N] [--always-messages M] [--repeat R]\n"
    "  --dir PATH            where to write; a fresh consume_bench.XXXXXX directory is made inside it\n"
    "                        and removed at the end (default: $TMPDIR or /tmp)\n"
    "  --messages N          messages per run of each case but the two below (default 100000)\n"
    "  --always-messages M   messages per run of the two FSYNC=always, one-message-per-produce cases, where\n"
    "                        every produce waits for its own fdatasync (default 20000)\n"
    "  --repeat R            runs per case; the median of each column is reported (default 3)\n";

// ---------------------------------------------------------------------------------------------
// Command line

struct BenchOptions : CommonOptions {
  std::uint64_t messages = 100000;
  std::uint64_t always_messages = 20000;
  int repeat = 3;
};

BenchOptions parse_options(int argc, char** argv) {
  BenchOptions options;
  parse_flags(
      argc, argv, options,
      {number_flag("--messages", options.messages), number_flag("--always-messages", options.always_messages),
       number_flag("--repeat", options.repeat)});
  if (options.messages < 1) throw UsageError("--messages must be at least 1");
  if (options.always_messages < 1) throw UsageError("--always-messages must be at least 1");
  if (options.repeat < 1) throw UsageError("--repeat must be at least 1");
  return options;
}

// ---------------------------------------------------------------------------------------------
// Helpers

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

// ---------------------------------------------------------------------------------------------
// Payloads: {"t":<steady_clock ns>,"pad":"xx..."}, exactly kPayloadBytes bytes, built at produce time.

std::string timestamped_json(std::int64_t t_ns) {
  std::string json = "{\"t\":" + std::to_string(t_ns) + ",\"pad\":\"";
  constexpr std::size_t kClosing = 2;  // "}
  if (json.size() + kClosing > kPayloadBytes)
    throw std::logic_error("payload size too small for its timestamp");
  json.append(kPayloadBytes - json.size() - kClosing, 'x');
  json += "\"}";
  return json;
}

// The producer's timestamp in a delivered record ({"offset":..,"timestamp":..,"payload":{"t":..,..}}).
std::int64_t timestamp_of(std::string_view record) {
  constexpr std::string_view kField = "\"t\":";
  const std::size_t at = record.find(kField);
  if (at == std::string_view::npos) throw std::runtime_error("no \"t\" in record: " + std::string(record));
  const char* begin = record.data() + at + kField.size();
  std::int64_t t = 0;
  const auto [end, ec] = std::from_chars(begin, record.data() + record.size(), t);
  if (ec != std::errc() || end == begin)
    throw std::runtime_error("bad \"t\" in record: " + std::string(record));
  return t;
}

// ---------------------------------------------------------------------------------------------
// One run

struct ConsumeCase {
  mq::FsyncMode fsync;
  std::size_t batch;  // messages per produce() call
  int consumers;
};

struct RunStats {
  double messages_per_second = 0;
  double p50_us = 0;
  double p99_us = 0;
};

struct ConsumerResult {
  std::vector<std::int64_t> latencies_ns;
  std::uint64_t acked = 0;         // sum of ack() return values
  std::uint64_t redeliveries = 0;  // deliveries with Delivery::delivery != 1
  std::exception_ptr error;
};

// What the threads of one run share.
class RunState {
 public:
  explicit RunState(std::uint64_t messages) : messages_(messages), deliveries_(messages) {}

  std::uint64_t messages() const { return messages_; }
  std::uint64_t acked() const { return acked_.load(); }
  // Counts a delivery of `offset`; false when it is out of range.
  bool count_delivery(std::uint64_t offset) {
    if (offset >= messages_) return false;
    deliveries_[offset].fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  std::uint64_t offsets_not_delivered_once() const {
    std::uint64_t bad = 0;
    for (const auto& count : deliveries_) bad += count.load() == 1 ? 0 : 1;
    return bad;
  }
  // Adds `newly` acknowledged messages; the call that reaches the total records the end time.
  void add_acked(std::uint64_t newly) {
    if (newly == 0) return;
    if (acked_.fetch_add(newly) + newly == messages_) {
      end_ = Clock::now();
      finish();
    }
  }
  // Wakes the waiting main thread: the run is complete or has failed.
  void finish() {
    std::lock_guard lock(mutex_);
    finished_ = true;
    changed_.notify_all();
  }
  bool finished() const { return finished_.load(); }
  // Waits until finish(); false when no acknowledgement arrived for kStallLimit.
  bool wait_finished() {
    std::unique_lock lock(mutex_);
    std::uint64_t last = acked_.load();
    Clock::time_point last_progress = Clock::now();
    while (!finished_) {
      changed_.wait_for(lock, std::chrono::seconds(1));
      const std::uint64_t now_acked = acked_.load();
      if (now_acked != last) {
        last = now_acked;
        last_progress = Clock::now();
      } else if (Clock::now() - last_progress > kStallLimit) {
        return false;
      }
    }
    return true;
  }
  Clock::time_point end() const { return end_; }  // valid once finished by the last ack

 private:
  const std::uint64_t messages_;
  std::vector<std::atomic<std::uint32_t>> deliveries_;  // per offset
  std::atomic<std::uint64_t> acked_{0};
  Clock::time_point end_;  // written before finish(), read after wait_finished()
  std::mutex mutex_;
  std::condition_variable changed_;
  std::atomic<bool> finished_{false};
};

void consume(mq::Broker& broker, std::unique_ptr<mq::Subscription> subscription, RunState& state,
             ConsumerResult& result) {
  try {
    result.latencies_ns.reserve(state.messages());
    std::vector<std::string> ids;
    ids.reserve(kNextMax);
    while (true) {
      auto next = subscription->next(kNextMax, kNextTimeout);
      const std::int64_t arrived_ns = now_ns();
      if (!next.ok()) {
        if (next.status().code() == mq::ErrorCode::kShuttingDown && state.finished()) break;
        throw std::runtime_error("Subscription::next: " + next.status().to_string());
      }
      if (next->empty()) {
        if (state.finished()) break;
        continue;
      }
      ids.clear();
      for (mq::Delivery& delivery : *next) {
        result.latencies_ns.push_back(arrived_ns - timestamp_of(delivery.record));
        if (delivery.delivery != 1) ++result.redeliveries;
        if (!state.count_delivery(delivery.offset)) {
          throw std::runtime_error("delivered offset " + std::to_string(delivery.offset) +
                                   " was never produced");
        }
        ids.push_back(std::move(delivery.id));
      }
      const std::size_t newly = check(broker.ack(kTopic, 0, kGroup, ids), "Broker::ack");
      result.acked += newly;
      state.add_acked(newly);
    }
  } catch (...) {
    result.error = std::current_exception();
    state.finish();
  }
  // The subscription is destroyed here, before the broker.
}

struct ProducerResult {
  Clock::time_point start;
  std::exception_ptr error;
};

void produce(mq::Broker& broker, std::size_t batch, RunState& state, ProducerResult& result) {
  try {
    std::vector<mq::Message> messages;
    messages.reserve(batch);
    result.start = Clock::now();
    for (std::uint64_t produced = 0; produced < state.messages() && !state.finished();) {
      const std::size_t count =
          static_cast<std::size_t>(std::min<std::uint64_t>(batch, state.messages() - produced));
      const std::int64_t t_ns = now_ns();
      messages.clear();
      for (std::size_t i = 0; i < count; ++i) {
        messages.push_back(
            {mq::detail::PayloadInternal::from_minified_json(timestamped_json(t_ns)), std::nullopt});
      }
      const mq::ProduceResult produced_result =
          check(broker.produce(kTopic, std::span<const mq::Message>(messages), 0), "Broker::produce");
      if (produced_result.first_offset != produced) {
        throw std::runtime_error("produce landed at offset " + std::to_string(produced_result.first_offset) +
                                 ", expected " + std::to_string(produced));
      }
      produced += count;
    }
  } catch (...) {
    result.error = std::current_exception();
    state.finish();
  }
}

// The group's own view agrees with what the consumers saw.
void check_group_stats(mq::Broker& broker, std::uint64_t messages) {
  const std::vector<mq::TopicStats> stats = check(broker.stats(kTopic), "Broker::stats");
  for (const mq::TopicStats& topic : stats) {
    for (const mq::PartitionStats& partition : topic.partitions) {
      for (const mq::GroupStats& group : partition.groups) {
        if (group.group != kGroup) continue;
        if (group.committed_offset != messages || group.acked != messages || group.delivered != messages ||
            group.redelivered != 0 || group.inflight != 0) {
          throw std::runtime_error(
              "group stats disagree: committed " + std::to_string(group.committed_offset) + ", acked " +
              std::to_string(group.acked) + ", delivered " + std::to_string(group.delivered) +
              ", redelivered " + std::to_string(group.redelivered) + ", inflight " +
              std::to_string(group.inflight) + ", expected " + std::to_string(messages));
        }
        return;
      }
    }
  }
  throw std::runtime_error("group stats: no group '" + std::string(kGroup) + "'");
}

RunStats run_case(const ConsumeCase& c, std::uint64_t messages, ScratchDirectory& scratch) {
  mq::Config config;
  config.store.data_dir = scratch.fresh_path("mq");
  config.store.fsync = c.fsync;
  config.topics = {{std::string(kTopic), 1}};
  auto broker = check(mq::Broker::open(config), "Broker::open");

  mq::SubscribeOptions subscribe_options;
  subscribe_options.max_inflight = kMaxInflight;
  subscribe_options.from = mq::StartPosition::kEarliest;
  RunState state(messages);
  std::vector<ConsumerResult> consumer_results(static_cast<std::size_t>(c.consumers));
  ProducerResult producer_result;
  bool completed = false;
  {
    std::vector<std::jthread> consumers;
    for (int i = 0; i < c.consumers; ++i) {
      // Every subscription exists before the first produce.
      auto subscription = check(broker->subscribe(kTopic, 0, kGroup, subscribe_options), "Broker::subscribe");
      consumers.emplace_back(
          [&broker, &state, &consumer_results, i, sub = std::move(subscription)]() mutable {
            consume(*broker, std::move(sub), state, consumer_results[static_cast<std::size_t>(i)]);
          });
    }
    std::jthread producer([&] { produce(*broker, c.batch, state, producer_result); });
    completed = state.wait_finished();
    broker->shutdown();  // ends the consumers' waits in next()
    producer.join();
    consumers.clear();  // joins
  }
  if (producer_result.error) std::rethrow_exception(producer_result.error);
  for (ConsumerResult& result : consumer_results) {
    if (result.error) std::rethrow_exception(result.error);
  }
  if (!completed) {
    throw std::runtime_error("stuck: " + std::to_string(state.acked()) + " of " + std::to_string(messages) +
                             " messages acknowledged, none for " + std::to_string(kStallLimit.count()) +
                             " s");
  }

  // Correctness: every offset delivered exactly once, on its first delivery, and acknowledged once.
  std::uint64_t acked = 0;
  std::uint64_t redeliveries = 0;
  std::vector<std::int64_t> latencies_ns;
  for (ConsumerResult& result : consumer_results) {
    acked += result.acked;
    redeliveries += result.redeliveries;
    latencies_ns.insert(latencies_ns.end(), result.latencies_ns.begin(), result.latencies_ns.end());
  }
  if (acked != messages) {
    throw std::runtime_error("ack() returned " + std::to_string(acked) + " in total, expected " +
                             std::to_string(messages));
  }
  if (const std::uint64_t bad = state.offsets_not_delivered_once(); bad != 0 || redeliveries != 0) {
    throw std::runtime_error(std::to_string(bad) + " offsets not delivered exactly once, " +
                             std::to_string(redeliveries) + " redeliveries");
  }
  check_group_stats(*broker, messages);

  RunStats stats;
  stats.messages_per_second =
      static_cast<double>(messages) / seconds_between(producer_result.start, state.end());
  stats.p50_us = percentile_us(latencies_ns, 0.50);
  stats.p99_us = percentile_us(latencies_ns, 0.99);
  broker.reset();  // closing syncs what kNever left unsynced: not part of the measured time
  stdfs::remove_all(config.store.data_dir);
  return stats;
}

// ---------------------------------------------------------------------------------------------
// The table

const char* mode_name(mq::FsyncMode mode) { return syncs(mode) ? "always" : "never"; }

std::uint64_t messages_for(const ConsumeCase& c, const BenchOptions& options) {
  return syncs(c.fsync) && c.batch == 1 ? options.always_messages : options.messages;
}

std::string case_name(const ConsumeCase& c, std::uint64_t messages) {
  return std::string(mode_name(c.fsync)) + " batch=" + std::to_string(c.batch) +
         " consumers=" + std::to_string(c.consumers) + " n=" + std::to_string(messages);
}

// The table row of one case: each column's median over its runs.
RunStats median_stats(const std::vector<RunStats>& runs) {
  return {median_of(runs, &RunStats::messages_per_second), median_of(runs, &RunStats::p50_us),
          median_of(runs, &RunStats::p99_us)};
}

void run_consume_benchmark(const BenchOptions& options, ScratchDirectory& scratch) {
  std::vector<ConsumeCase> cases;
  for (const mq::FsyncMode fsync : {mq::FsyncMode::kNever, mq::FsyncMode::kAlways}) {
    for (const std::size_t batch : {std::size_t{1}, std::size_t{100}}) {
      for (const int consumers : {1, 4}) cases.push_back({fsync, batch, consumers});
    }
  }
  // Repeats are the outer loop so that a slow phase of the machine (writeback, a neighbour) spreads
  // over all cases instead of skewing one.
  std::vector<std::vector<RunStats>> runs(cases.size());
  for (int r = 0; r < options.repeat; ++r) {
    for (std::size_t i = 0; i < cases.size(); ++i) {
      const std::uint64_t messages = messages_for(cases[i], options);
      std::fprintf(stderr, "running %-42s (%d/%d)\n", case_name(cases[i], messages).c_str(), r + 1,
                   options.repeat);
      runs[i].push_back(run_case(cases[i], messages, scratch));
    }
  }

  std::printf(
      "\nproduce -> deliver -> ack on one partition: %zu-byte JSON payloads, one producer thread, consumers "
      "in one group calling next(%zu, %lld ms) with max_inflight=%zu and one ack() per batch; median of %d "
      "runs\n",
      kPayloadBytes, kNextMax, static_cast<long long>(kNextTimeout.count()), kMaxInflight, options.repeat);
  std::printf(
      "msgs/s = n / (first produce -> last ack); latency = produce() call start -> next() return, per "
      "message\n");
  std::printf("%-42s %12s %10s %10s\n", "case", "msgs/s", "p50_us", "p99_us");
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const RunStats stats = median_stats(runs[i]);
    std::printf("%-42s %12.0f %10.1f %10.1f\n", case_name(cases[i], messages_for(cases[i], options)).c_str(),
                stats.messages_per_second, stats.p50_us, stats.p99_us);
  }
}

}  // namespace

int main(int argc, char** argv) {
  return mq::bench::run_main("consume_bench", kUsage, argc, argv, parse_options, run_consume_benchmark);
}

// options_bench: what the message options of issue 14 cost, in-process through the Broker, each beside
// the same work without them. Produce and end to end run with FSYNC=always (mqd's default, what
// users get) and FSYNC=never (where fdatasync hides nothing: the options' CPU cost alone); the
// other cases with FSYNC=never.
//
//   options_bench [--dir PATH] [--messages N] [--delayed N] [--dedup-ids N] [--payload-bytes N] [--repeat R]
//
//   produce      4 threads, each producing N/4 messages (payloads of --payload-bytes, default 100;
//                the other cases use 100) to its own partition in batches of 100:
//                plain, then with 3 headers and a unique 36-byte dedup_id on every message, then
//                each of the two alone. Each run opens a new broker, so the dedup windows grow
//                from empty as they would in the first minutes after a start.
//   end to end   1 producer (batches of 100) to one partition, 4 consumers in one group taking up to
//                64 at a time and acknowledging each batch: plain, then with headers and dedup ids.
//   ordering     the same end to end with a key on every message (1,000 keys): ordering=none, then
//                ordering=key.
//   delayed      --delayed messages produced with delay_ms of one hour, which a group passes over
//                (it holds each on the timer); then as many plain messages produced one per call,
//                timed, while a consumer of that group takes and acknowledges them; beside the
//                same without the pending ones: produce latency p50/p99, and the heap memory the
//                pending ones add.
//   dedup window --dedup-ids ids of 36 bytes remembered by a DedupWindow: its estimate and the
//                heap memory they add.
// Every number is the median over --repeat runs (cases interleaved). Results go to stdout.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench_support.h"
#include "mq/mq.h"
#include "storage/dedup_window.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace mq::bench;

constexpr std::size_t kBatch = 100;
constexpr int kProducers = 4;
constexpr int kConsumers = 4;
constexpr std::size_t kKeys = 1000;

constexpr std::string_view kUsage =
    "usage: options_bench [--dir PATH] [--messages N] [--delayed N] [--dedup-ids N] [--repeat R]\n"
    "  --messages N    messages per run of the produce, end-to-end and ordering cases (default 200000)\n"
    "  --delayed N     delayed messages pending in the delayed case (default 100000)\n"
    "  --dedup-ids N   ids in the dedup window case (default 1000000)\n"
    "  --payload-bytes N  payload size of the produce and end-to-end cases (default 100)\n"
    "  --repeat R      runs per case; medians reported (default 3)\n"
    "  --only CASE     only the produce case CASE (plain, headers, dedup or both), the end-to-end\n"
    "                  case e2e-plain or e2e-both, or the ordering case ordering-none or ordering-key\n"
    "                  (FSYNC=never), the delayed case, or disk (the disk alone: see below), R times,\n"
    "                  printing each run: for a profiler\n"
    "  --fsync MODE    FSYNC mode of --only: always (default) or never\n";

struct Options : CommonOptions {
  std::uint64_t messages = 200000;
  std::uint64_t delayed = 100000;
  std::uint64_t dedup_ids = 1000000;
  std::uint64_t payload_bytes = 100;
  int repeat = 3;
  std::string only;  // empty: every case
  mq::FsyncMode only_fsync = mq::FsyncMode::kAlways;
};

Options parse_options(int argc, char** argv) {
  Options options;
  parse_flags(argc, argv, options,
              {number_flag("--messages", options.messages), number_flag("--delayed", options.delayed),
               number_flag("--dedup-ids", options.dedup_ids),
               number_flag("--payload-bytes", options.payload_bytes), number_flag("--repeat", options.repeat),
               Flag{"--only",
                    [&options](std::string_view value) {
                      if (value != "plain" && value != "headers" && value != "dedup" && value != "both" &&
                          value != "e2e-plain" && value != "e2e-both" && value != "ordering-none" &&
                          value != "ordering-key" && value != "delayed" && value != "disk")
                        throw UsageError(
                            "--only takes plain, headers, dedup, both, e2e-plain, e2e-both, ordering-none, "
                            "ordering-key, delayed or disk");
                      options.only = value;
                    }},
               Flag{"--fsync", [&options](std::string_view value) {
                      if (value != "always" && value != "never")
                        throw UsageError("--fsync takes always or never");
                      options.only_fsync = value == "always" ? mq::FsyncMode::kAlways : mq::FsyncMode::kNever;
                    }}});
  if (options.messages < kBatch * kProducers) throw UsageError("--messages must be at least 400");
  if (options.repeat < 1) throw UsageError("--repeat must be at least 1");
  return options;
}

// Heap bytes in use (glibc's count, which freed memory kept for reuse does not blur as RSS does).
std::size_t heap_bytes() { return ::mallinfo2().uordblks; }

// The process's resident memory (/proc/self/statm), which includes what was mapped outside the heap.
std::size_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t size_pages = 0, resident_pages = 0;
  statm >> size_pages >> resident_pages;
  return resident_pages * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

std::unique_ptr<mq::Broker> open_broker(const std::string& dir, mq::FsyncMode fsync = mq::FsyncMode::kNever) {
  mq::Config config;
  config.store.data_dir = dir;
  config.store.fsync = fsync;
  config.topics = {{"bench", static_cast<std::uint32_t>(kProducers)}};
  return check(mq::Broker::open(config), "open the broker");
}

// Which options a message carries.
struct Extras {
  bool headers = false;
  bool dedup_id = false;
  std::size_t payload_bytes = 100;
};
constexpr Extras kPlain{}, kBoth{true, true};

// One message: a payload of extras.payload_bytes, with 3 headers and a unique dedup id as `extras` asks.
mq::Message make_message(std::uint64_t n, Extras extras, std::optional<std::string> key = std::nullopt) {
  std::string json = R"({"n":)" + std::to_string(n) + R"(,"pad":")";
  json.resize(std::max<std::size_t>(extras.payload_bytes, json.size() + 3) - 3, 'x');
  json += "\"}";
  mq::Message m{check(mq::Payload::parse(json), "payload"), std::move(key)};
  if (extras.dedup_id) {
    char id[40];
    std::snprintf(id, sizeof id, "%08llx-0000-4000-8000-%012llx", static_cast<unsigned long long>(n >> 32),
                  static_cast<unsigned long long>(n));
    m.dedup_id = std::string(id);
  }
  if (extras.headers) {
    m.headers = {{"trace-id", "4bf92f3577b34da6a3ce929d0e0e4736"},
                 {"content-type", "application/json"},
                 {"source", "checkout-service"}};
  }
  return m;
}

// CPU seconds (user + system) the whole process used so far.
double process_cpu_seconds() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

// Messages/s; with `cpu_us_per_message`, also the process's CPU time per message while measured.
double produce_case(const std::string& dir, std::uint64_t messages, Extras extras, mq::FsyncMode fsync,
                    double* cpu_us_per_message = nullptr) {
  const RunDirectory run(dir);
  auto broker = open_broker(dir, fsync);
  const std::uint64_t per_thread = messages / kProducers / kBatch * kBatch;
  // Built before the clock starts: what is measured is the library's work, not the benchmark's.
  std::vector<std::vector<mq::Message>> prepared(kProducers);
  for (int t = 0; t < kProducers; ++t) {
    for (std::uint64_t i = 0; i < per_thread; ++i)
      prepared[t].push_back(make_message(t * per_thread + i, extras));
  }
  const auto start = Clock::now();
  const double cpu_before = process_cpu_seconds();
  std::vector<std::thread> threads;
  for (int t = 0; t < kProducers; ++t) {
    threads.emplace_back([&, t] {
      ::pthread_setname_np(::pthread_self(), "producer");  // for a profiler: perf report --comms producer
      for (std::uint64_t i = 0; i < per_thread; i += kBatch) {
        check(broker->produce("bench", std::span(prepared[t]).subspan(i, kBatch),
                              static_cast<std::uint32_t>(t)),
              "produce");
      }
    });
  }
  for (auto& t : threads) t.join();
  const double elapsed = seconds_between(start, Clock::now());
  const auto produced = static_cast<double>(per_thread * kProducers);
  if (cpu_us_per_message != nullptr)
    *cpu_us_per_message = (process_cpu_seconds() - cpu_before) * 1e6 / produced;
  return produced / elapsed;
}

// The bytes one batch of kBatch messages takes in the log.
std::size_t batch_log_bytes(const std::string& dir, Extras extras) {
  const RunDirectory run(dir);
  auto broker = open_broker(dir);
  std::vector<mq::Message> batch;
  for (std::uint64_t n = 0; n < kBatch; ++n) batch.push_back(make_message(n, extras));
  check(broker->produce("bench", std::span(batch), 0u), "produce");
  const auto read = check(broker->read("bench", 0, mq::ReadFrom{}, kBatch), "read");
  std::size_t bytes = 0;
  for (const auto& m : read.messages) bytes += m.line.size() + 1;
  return bytes;
}

// The disk alone, as the produce case uses it with FSYNC=always: kProducers threads, each writing
// `bytes` at a time into a file of its own (preallocated, as the log is) and syncing after each
// write, messages/(kProducers * kBatch) times. In messages/s, as if each write held kBatch messages:
// what the produce case would reach if formatting, validating and deduplicating took no time. The
// ratio of two sizes is the most the options' ratio can be on this disk.
double disk_case(const std::string& dir, std::uint64_t messages, std::size_t bytes) {
  const RunDirectory run(dir);
  std::filesystem::create_directories(dir);
  const std::uint64_t writes = messages / kProducers / kBatch;
  const auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < kProducers; ++t) {
    threads.emplace_back([&, t] {
      const std::string path = dir + "/probe-" + std::to_string(t);
      const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
      if (fd < 0) throw std::runtime_error("open " + path);
      if (::posix_fallocate(fd, 0, static_cast<off_t>(bytes * writes)) != 0)
        throw std::runtime_error("fallocate");
      const std::string data(bytes, 'x');
      for (std::uint64_t w = 0; w < writes; ++w) {
        if (::pwrite(fd, data.data(), data.size(), static_cast<off_t>(w * bytes)) !=
                static_cast<ssize_t>(bytes) ||
            ::fdatasync(fd) != 0)
          throw std::runtime_error("pwrite or fdatasync of " + path);
      }
      ::close(fd);
    });
  }
  for (auto& t : threads) t.join();
  return static_cast<double>(writes * kProducers * kBatch) / seconds_between(start, Clock::now());
}

// One producer to partition 0, kConsumers consumers acknowledging what they take.
double end_to_end_case(const std::string& dir, std::uint64_t messages, Extras extras, bool keyed,
                       mq::Ordering ordering, mq::FsyncMode fsync = mq::FsyncMode::kNever) {
  const RunDirectory run(dir);
  auto broker = open_broker(dir, fsync);
  mq::SubscribeOptions subscribe;
  subscribe.max_inflight = 1000;
  subscribe.ordering = ordering;
  std::vector<std::unique_ptr<mq::Subscription>> subs;
  for (int c = 0; c < kConsumers; ++c)
    subs.push_back(check(broker->subscribe("bench", 0, "g", subscribe), "subscribe"));
  std::vector<mq::Message> prepared;
  for (std::uint64_t n = 0; n < messages; ++n) {
    prepared.push_back(
        make_message(n, extras, keyed ? std::optional("key-" + std::to_string(n % kKeys)) : std::nullopt));
  }
  std::atomic<std::uint64_t> acked{0};
  // Named for a profiler, which then tells the measured work from the preparation above.
  ::pthread_setname_np(::pthread_self(), "producer");
  const auto start = Clock::now();
  std::vector<std::thread> consumers;
  for (auto& sub : subs) {
    consumers.emplace_back([&, s = sub.get()] {
      ::pthread_setname_np(::pthread_self(), "consumer");
      std::vector<std::string> ids;
      while (acked.load() < messages) {
        auto got = check(s->next(64, std::chrono::milliseconds(50)), "next");
        if (got.empty()) continue;
        ids.clear();
        for (const auto& d : got) ids.push_back(d.id);
        acked += check(broker->ack("bench", 0, "g", ids), "ack");
      }
    });
  }
  for (std::uint64_t i = 0; i < messages; i += kBatch) {
    check(broker->produce("bench",
                          std::span(prepared).subspan(i, std::min<std::uint64_t>(kBatch, messages - i)), 0u),
          "produce");
  }
  for (auto& t : consumers) t.join();
  const double elapsed = seconds_between(start, Clock::now());
  ::pthread_setname_np(::pthread_self(), "options_bench");
  return static_cast<double>(messages) / elapsed;
}

struct DelayedRun {
  double p50_us, p99_us;
  double added_mib;  // heap memory the pending messages added once a group passed over them
};

// Single plain produces, each timed, while a consumer in group "g" takes and acknowledges them; with
// `pending` > 0, first that many messages delayed by an hour, which the group has passed over (each
// waits on the timer) before the timing starts. What is compared: whether messages pending on the
// timer slow producers down (they must not: nothing on the produce path walks them).
DelayedRun delayed_case(const std::string& dir, std::uint64_t timed, std::uint64_t pending) {
  const RunDirectory run(dir);
  auto broker = open_broker(dir);
  for (std::uint64_t n = 0; n < pending; ++n) {
    mq::Message m = make_message(n, kPlain);
    m.delay = std::chrono::hours(1);
    check(broker->produce("bench", std::span(&m, 1), 0u), "produce");
  }
  // The group reads past every one: each is then held for the timer. What that adds to the heap is
  // what they cost while pending (in this group; each group holds its own).
  const std::size_t heap_before = heap_bytes();
  auto sub = check(broker->subscribe("bench", 0, "g", mq::SubscribeOptions{}), "subscribe");
  while (check(broker->stats("bench"), "stats")[0].partitions[0].groups[0].delayed < pending) {
    if (!check(sub->next(1000, std::chrono::milliseconds(10)), "next").empty())
      throw std::runtime_error("a message delayed by an hour was delivered");
  }
  const double added = static_cast<double>(heap_bytes()) - static_cast<double>(heap_before);

  std::thread consumer([&] {
    std::uint64_t acked = 0;
    std::vector<std::string> ids;
    while (acked < timed) {
      auto got = check(sub->next(1000, std::chrono::milliseconds(50)), "next");
      ids.clear();
      for (const auto& d : got) ids.push_back(d.id);
      if (!ids.empty()) acked += check(broker->ack("bench", 0, "g", ids), "ack");
    }
  });
  std::vector<mq::Message> prepared;
  for (std::uint64_t n = 0; n < timed; ++n) prepared.push_back(make_message(pending + n, kPlain));
  std::vector<std::int64_t> latencies;
  latencies.reserve(timed);
  for (auto& m : prepared) {
    const auto before = Clock::now();
    check(broker->produce("bench", std::span(&m, 1), 0u), "produce");
    latencies.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - before).count());
  }
  consumer.join();
  if (check(broker->stats("bench"), "stats")[0].partitions[0].groups[0].delayed != pending)
    throw std::runtime_error("not every delayed message is still pending");
  return {percentile_us(latencies, 0.50), percentile_us(latencies, 0.99), added / (1 << 20)};
}

// The produce and end-to-end series of one FSYNC mode.
struct Throughputs {
  std::vector<double> plain, both, headers_only, dedup_only, e2e_plain, e2e_both;
  std::vector<double> disk_plain, disk_both;  // FSYNC=always only
  std::size_t plain_batch_bytes = 0, both_batch_bytes = 0;
};

void measure_throughputs(const Options& options, ScratchDirectory& scratch, mq::FsyncMode fsync,
                         Throughputs& out) {
  const std::size_t bytes = options.payload_bytes;
  const Extras plain{false, false, bytes}, both{true, true, bytes};
  out.plain.push_back(produce_case(scratch.fresh_path("p"), options.messages, plain, fsync));
  out.both.push_back(produce_case(scratch.fresh_path("p"), options.messages, both, fsync));
  out.headers_only.push_back(
      produce_case(scratch.fresh_path("p"), options.messages, Extras{true, false, bytes}, fsync));
  out.dedup_only.push_back(
      produce_case(scratch.fresh_path("p"), options.messages, Extras{false, true, bytes}, fsync));
  out.e2e_plain.push_back(
      end_to_end_case(scratch.fresh_path("e"), options.messages, plain, false, mq::Ordering::kNone, fsync));
  out.e2e_both.push_back(
      end_to_end_case(scratch.fresh_path("e"), options.messages, both, false, mq::Ordering::kNone, fsync));
  if (fsync == mq::FsyncMode::kAlways) {
    out.plain_batch_bytes = batch_log_bytes(scratch.fresh_path("b"), plain);
    out.both_batch_bytes = batch_log_bytes(scratch.fresh_path("b"), both);
    out.disk_plain.push_back(disk_case(scratch.fresh_path("s"), options.messages, out.plain_batch_bytes));
    out.disk_both.push_back(disk_case(scratch.fresh_path("s"), options.messages, out.both_batch_bytes));
  }
}

double ratio(double with, double without) { return 100.0 * with / without; }

// The medians of both series and their ratio; then, since the two cases of one run met the same
// moment of a noisy machine, the ratio within each run: its median and its range over the runs.
void print_row(const std::string& name, const std::vector<double>& without, const std::vector<double>& with) {
  std::vector<double> per_run;
  for (std::size_t r = 0; r < std::min(without.size(), with.size()); ++r)
    per_run.push_back(ratio(with[r], without[r]));
  std::printf("%-58s %12.0f %12.0f %7.1f%% %7.1f%% %5.1f-%.1f%%\n", name.c_str(), median(without),
              median(with), ratio(median(with), median(without)), median(per_run),
              *std::min_element(per_run.begin(), per_run.end()),
              *std::max_element(per_run.begin(), per_run.end()));
}

void print_throughputs(const char* mode, const Throughputs& t) {
  print_row(std::string("produce msgs/s, ") + mode + ": +3 headers +dedup_id", t.plain, t.both);
  print_row("  +3 headers only", t.plain, t.headers_only);
  print_row("  +dedup_id only", t.plain, t.dedup_only);
  if (!t.disk_plain.empty()) {
    print_row("  the disk alone: pwrite+fdatasync of " + std::to_string(t.plain_batch_bytes) + " vs " +
                  std::to_string(t.both_batch_bytes) + " B",
              t.disk_plain, t.disk_both);
  }
  print_row(std::string("end to end msgs/s, ") + mode + ": +3 headers +dedup_id", t.e2e_plain, t.e2e_both);
}

// --only: one produce case, each run printed, so that a profiler sees nothing else.
void run_only(const Options& options, ScratchDirectory& scratch) {
  const bool end_to_end = options.only.starts_with("e2e-");
  const bool both = options.only == "both" || options.only == "e2e-both";
  const Extras extras{options.only == "headers" || both, options.only == "dedup" || both,
                      options.payload_bytes};
  for (int r = 0; r < options.repeat; ++r) {
    if (options.only == "delayed") {
      const DelayedRun none = delayed_case(scratch.fresh_path("d"), options.delayed, 0);
      const DelayedRun pending = delayed_case(scratch.fresh_path("d"), options.delayed, options.delayed);
      std::printf("single produce us, none vs %llu delayed pending: p50 %.1f / %.1f, p99 %.1f / %.1f\n",
                  static_cast<unsigned long long>(options.delayed), none.p50_us, pending.p50_us, none.p99_us,
                  pending.p99_us);
      continue;
    }
    if (options.only == "disk") {
      const std::size_t plain_bytes =
          batch_log_bytes(scratch.fresh_path("b"), Extras{false, false, options.payload_bytes});
      const std::size_t both_bytes =
          batch_log_bytes(scratch.fresh_path("b"), Extras{true, true, options.payload_bytes});
      const double plain = disk_case(scratch.fresh_path("s"), options.messages, plain_bytes);
      const double with_options = disk_case(scratch.fresh_path("s"), options.messages, both_bytes);
      std::printf("the disk alone, msgs/s as batches of %zu: %zu B %.0f, %zu B %.0f (%.1f%%)\n", kBatch,
                  plain_bytes, plain, both_bytes, with_options, ratio(with_options, plain));
      continue;
    }
    if (options.only.starts_with("ordering-")) {
      const auto ordering = options.only == "ordering-key" ? mq::Ordering::kKey : mq::Ordering::kNone;
      std::printf("end to end msgs/s, FSYNC=never, 1000 keys, %s: %.0f\n", options.only.c_str(),
                  end_to_end_case(scratch.fresh_path("o"), options.messages, kPlain, true, ordering));
      continue;
    }
    if (end_to_end) {
      std::printf("end to end msgs/s, FSYNC=%s, %s: %.0f\n",
                  options.only_fsync == mq::FsyncMode::kAlways ? "always" : "never", options.only.c_str(),
                  end_to_end_case(scratch.fresh_path("e"), options.messages, extras, false,
                                  mq::Ordering::kNone, options.only_fsync));
      continue;
    }
    double cpu_us = 0;
    const double rate =
        produce_case(scratch.fresh_path("p"), options.messages, extras, options.only_fsync, &cpu_us);
    std::printf("produce msgs/s, FSYNC=%s, %s: %.0f (CPU %.2f us/msg)\n",
                options.only_fsync == mq::FsyncMode::kAlways ? "always" : "never", options.only.c_str(), rate,
                cpu_us);
  }
}

void run(const Options& options, ScratchDirectory& scratch) {
  if (!options.only.empty()) return run_only(options, scratch);
  print_machine(scratch.path());
  Throughputs always, never;
  std::vector<double> none, key;
  std::vector<DelayedRun> plain_single, delayed;
  for (int r = 0; r < options.repeat; ++r) {
    std::fprintf(stderr, "run %d/%d\n", r + 1, options.repeat);
    measure_throughputs(options, scratch, mq::FsyncMode::kAlways, always);
    measure_throughputs(options, scratch, mq::FsyncMode::kNever, never);
    none.push_back(
        end_to_end_case(scratch.fresh_path("o"), options.messages, kPlain, true, mq::Ordering::kNone));
    key.push_back(
        end_to_end_case(scratch.fresh_path("o"), options.messages, kPlain, true, mq::Ordering::kKey));
    plain_single.push_back(delayed_case(scratch.fresh_path("d"), options.delayed, 0));
    delayed.push_back(delayed_case(scratch.fresh_path("d"), options.delayed, options.delayed));
  }
  std::printf(
      "\nmessage options, in-process Broker, %llu-byte payloads, produce: 4 threads to 4 partitions in\n"
      "batches of 100, end to end: 1 producer and 4 consumers on one partition; median of %d runs\n"
      "(with/without: of the medians; in a run: the median of each run's own ratio, and their range)\n",
      static_cast<unsigned long long>(options.payload_bytes), options.repeat);
  std::printf("%-58s %12s %12s %8s %8s %11s\n", "case", "without", "with", "with/without", "in a run",
              "range");
  print_throughputs("FSYNC=always (the default)", always);
  print_throughputs("FSYNC=never (CPU cost alone)", never);
  print_row("end to end msgs/s, FSYNC=never, 1000 keys: ordering=key", none, key);
  auto med = [](const std::vector<DelayedRun>& runs, double DelayedRun::*field) {
    std::vector<double> values;
    for (const auto& r : runs) values.push_back(r.*field);
    return median(values);
  };
  const std::string pending = std::to_string(options.delayed) + " delayed pending";
  std::printf("%-52s %12.1f %12.1f\n", ("single produce p50 us, none vs " + pending).c_str(),
              med(plain_single, &DelayedRun::p50_us), med(delayed, &DelayedRun::p50_us));
  std::printf("%-52s %12.1f %12.1f\n", ("single produce p99 us, none vs " + pending).c_str(),
              med(plain_single, &DelayedRun::p99_us), med(delayed, &DelayedRun::p99_us));
  std::printf("%-52s %12s %12.1f\n",
              ("heap MiB added by " + std::to_string(options.delayed) + " pending delayed").c_str(), "",
              med(delayed, &DelayedRun::added_mib));

  // The window's memory is mapped from the kernel, not taken from the heap: what it adds to the
  // process's resident memory is what it costs.
  const std::size_t before = resident_bytes();
  mq::detail::DedupWindow window(std::chrono::hours(1));
  for (std::uint64_t n = 0; n < options.dedup_ids; ++n) {
    window.remember(make_message(n, kBoth).dedup_id.value(), n, 1);
  }
  const double added = (static_cast<double>(resident_bytes()) - static_cast<double>(before)) / (1 << 20);
  std::printf("%-52s %12.1f %12.1f\n",
              (std::to_string(options.dedup_ids) + " dedup ids (36 B): MiB mapped, resident").c_str(),
              static_cast<double>(window.memory_bytes()) / (1 << 20), added);
}

}  // namespace

int main(int argc, char** argv) {
  return mq::bench::run_main("options_bench", kUsage, argc, argv, parse_options, run);
}

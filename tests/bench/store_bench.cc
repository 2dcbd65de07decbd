// store_bench: append throughput, append latency and open time of libmq's storage core, each beside
// the physical limit of the same disk measured with plain write(2)/fdatasync(2) in the same run.
//
//   store_bench [--dir PATH] [--seconds N] [--repeat R] [--open-gb G] [--open-segments S]
//
// Besides appends: the open time of a G GB log and of a partition of S segments (goal < 0.5 s and
// < 50 ms), and lookups by time (the time index, libmq/docs/log_format.md) on the G GB log.
// Every number is the median over --repeat runs. Results go to stdout, progress to stderr.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <latch>
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

constexpr std::size_t kAppendPayloadBytes = 100;
constexpr std::size_t kMessagesPerThread = 100;  // distinct payloads a thread cycles through
constexpr std::size_t kOpenTestPayloadBytes = 1000;
constexpr std::size_t kOpenTestBatch = 1000;
constexpr double kBytesPerMB = 1e6;
constexpr std::string_view kTopic = "bench";

constexpr std::string_view kUsage =
    "usage: store_bench [--dir PATH] [--seconds N] [--repeat R] [--open-gb G]\n"
    "  --dir PATH    where to write; a fresh store_bench.XXXXXX directory is made inside it and removed\n"
    "                at the end (default: $TMPDIR or /tmp)\n"
    "  --seconds N   duration of each append case (default 2)\n"
    "  --repeat R    runs per case; the median is reported (default 3)\n"
    "  --open-gb G   size of the log for the open-time and time-lookup tests in GB (default 2; 0 skips "
    "them)\n"
    "  --open-segments S  segments of the partition for the many-segments open test (default 10000; 0 skips "
    "it)\n";

// ---------------------------------------------------------------------------------------------
// Command line

struct BenchOptions : CommonOptions {
  double seconds = 2;
  int repeat = 3;
  double open_gb = 2;
  int open_segments = 10000;
};

BenchOptions parse_options(int argc, char** argv) {
  BenchOptions options;
  parse_flags(
      argc, argv, options,
      {number_flag("--seconds", options.seconds), number_flag("--repeat", options.repeat),
       number_flag("--open-gb", options.open_gb), number_flag("--open-segments", options.open_segments)});
  if (!(options.seconds > 0)) throw UsageError("--seconds must be positive");
  if (options.repeat < 1) throw UsageError("--repeat must be at least 1");
  if (!(options.open_gb >= 0)) throw UsageError("--open-gb must be 0 or more");
  if (options.open_segments < 0) throw UsageError("--open-segments must be 0 or more");
  return options;
}

// ---------------------------------------------------------------------------------------------
// Payloads, built once up front so that formatting JSON is not part of what is measured.

// {"n":<n>,"pad":"xx..."} padded to exactly `bytes` bytes (minified): every message costs the same.
std::string padded_json(std::uint64_t n, std::size_t bytes) {
  std::string json = "{\"n\":" + std::to_string(n) + ",\"pad\":\"";
  constexpr std::size_t kClosing = 2;  // "}
  if (json.size() + kClosing > bytes) throw std::logic_error("payload size too small for its counter");
  json.append(bytes - json.size() - kClosing, 'x');
  json += "\"}";
  return json;
}

std::vector<mq::Message> make_messages(std::uint64_t first_n, std::size_t count, std::size_t bytes) {
  std::vector<mq::Message> messages;
  messages.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    messages.push_back(
        {mq::detail::PayloadInternal::from_minified_json(padded_json(first_n + i, bytes)), std::nullopt});
  }
  return messages;
}

// ---------------------------------------------------------------------------------------------
// Timed runs

// What one run of one case measured.
struct RunResult {
  double seconds = 0;
  std::uint64_t messages = 0;
  std::uint64_t bytes = 0;                 // bytes that reached the file
  std::vector<std::int64_t> latencies_ns;  // one per call
};

struct RunStats {
  double messages_per_second = 0;
  double mb_per_second = 0;
  double p50_us = 0;
  double p99_us = 0;
};

RunStats summarize(RunResult& run) {
  return {static_cast<double>(run.messages) / run.seconds,
          static_cast<double>(run.bytes) / kBytesPerMB / run.seconds, percentile_us(run.latencies_ns, 0.50),
          percentile_us(run.latencies_ns, 0.99)};
}

// The table row of one case: each column's median over its runs.
RunStats median_stats(const std::vector<RunStats>& runs) {
  return {median_of(runs, &RunStats::messages_per_second), median_of(runs, &RunStats::mb_per_second),
          median_of(runs, &RunStats::p50_us), median_of(runs, &RunStats::p99_us)};
}

struct ThreadResult {
  std::uint64_t messages = 0;
  Clock::time_point finished;
  std::vector<std::int64_t> latencies_ns;
  std::exception_ptr error;
};

// Calls `operation(thread, iteration)` in a loop on `threads` threads for `duration`, timing every
// call. All threads start together; the run lasts until the last thread's last call returns.
// `operation` returns how many messages the call carried.
template <typename Operation>
RunResult run_timed(int threads, Clock::duration duration, const Operation& operation) {
  std::vector<ThreadResult> results(static_cast<std::size_t>(threads));
  std::latch ready(threads);
  std::latch go(1);
  Clock::time_point start;  // written before `go` opens, which orders it before every read
  std::vector<std::jthread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      ThreadResult& mine = results[static_cast<std::size_t>(t)];
      mine.latencies_ns.reserve(1 << 16);
      ready.count_down();
      go.wait();
      try {
        const Clock::time_point deadline = start + duration;
        for (std::uint64_t i = 0;; ++i) {
          const Clock::time_point before = Clock::now();
          if (before >= deadline) break;
          mine.messages += operation(t, i);
          const Clock::time_point after = Clock::now();
          mine.latencies_ns.push_back(
              std::chrono::duration_cast<std::chrono::nanoseconds>(after - before).count());
        }
      } catch (...) {
        mine.error = std::current_exception();
      }
      mine.finished = Clock::now();
    });
  }
  ready.wait();
  start = Clock::now();
  go.count_down();
  workers.clear();  // joins

  RunResult run;
  Clock::time_point last_finished = start;
  for (ThreadResult& result : results) {
    if (result.error) std::rethrow_exception(result.error);
    run.messages += result.messages;
    last_finished = std::max(last_finished, result.finished);
    run.latencies_ns.insert(run.latencies_ns.end(), result.latencies_ns.begin(), result.latencies_ns.end());
  }
  run.seconds = seconds_between(start, last_finished);
  return run;
}

// ---------------------------------------------------------------------------------------------
// The raw limit: plain POSIX appends on the same disk, as the log itself does them.

// An O_APPEND file written with write(2) and synced with fdatasync(2).
class RawFile {
 public:
  explicit RawFile(const std::string& path)
      : fd_(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)) {
    if (fd_ < 0) throw errno_error("open " + path);
  }
  ~RawFile() { ::close(fd_); }
  RawFile(const RawFile&) = delete;
  RawFile& operator=(const RawFile&) = delete;

  void append(std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = ::write(fd_, data.data(), data.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw errno_error("write");
      data.remove_prefix(static_cast<std::size_t>(n));
    }
  }
  void sync() {
    if (::fdatasync(fd_) != 0) throw errno_error("fdatasync");
  }

 private:
  int fd_;
};

struct RawCase {
  bool sync;
  std::size_t batch;
};

struct AppendCase {
  mq::FsyncMode fsync;
  std::size_t batch;
  int threads;
};

RunResult run_raw_case(const RawCase& c, ScratchDirectory& scratch, Clock::duration duration,
                       const std::vector<mq::Message>& messages) {
  // The bytes of `batch` payloads back to back: one write(2) per batch, as the log writes a batch.
  std::string batch_bytes;
  for (std::size_t i = 0; i < c.batch; ++i) batch_bytes += messages[i % messages.size()].payload.json();
  const std::string path = scratch.fresh_path("raw");
  RunResult run;
  {
    RawFile file(path);
    run = run_timed(1, duration, [&](int, std::uint64_t) {
      file.append(batch_bytes);
      if (c.sync) file.sync();
      return c.batch;
    });
  }
  run.bytes = run.messages * kAppendPayloadBytes;
  stdfs::remove(path);
  return run;
}

RunResult run_append_case(const AppendCase& c, ScratchDirectory& scratch, Clock::duration duration,
                          const std::vector<std::vector<mq::Message>>& messages_per_thread) {
  mq::StoreOptions options;
  options.data_dir = scratch.fresh_path("mq");
  options.fsync = c.fsync;
  auto store = check(mq::LogStore::open(options), "LogStore::open");
  mq::Partition* partition = check(store->partition(kTopic, 0), "LogStore::partition");
  RunResult run = run_timed(c.threads, duration, [&](int thread, std::uint64_t iteration) {
    const std::vector<mq::Message>& messages = messages_per_thread[static_cast<std::size_t>(thread)];
    const std::span<const mq::Message> batch =
        c.batch == 1 ? std::span<const mq::Message>(&messages[iteration % messages.size()], 1)
                     : std::span<const mq::Message>(messages).first(c.batch);
    check(partition->append(batch), "Partition::append");
    return batch.size();
  });
  run.bytes = partition->positions().written;
  store.reset();  // closing syncs what kNever left unsynced: not part of the measured time
  stdfs::remove_all(options.data_dir);
  return run;
}

// ---------------------------------------------------------------------------------------------
// The append table

const char* mode_name(bool sync) { return sync ? "always" : "never"; }

std::string raw_case_name(const RawCase& c) {
  return std::string("raw  ") + mode_name(c.sync) + " batch=" + std::to_string(c.batch);
}

std::string append_case_name(const AppendCase& c) {
  return std::string("mq   ") + mode_name(syncs(c.fsync)) + " batch=" + std::to_string(c.batch) +
         " threads=" + std::to_string(c.threads);
}

void print_progress(const std::string& name, int repeat, int repeats) {
  std::fprintf(stderr, "running %-36s (%d/%d)\n", name.c_str(), repeat + 1, repeats);
}

void print_table_header() {
  std::printf("%-36s %12s %9s %10s %10s  %s\n", "case", "msgs/s", "MB/s", "p50_us", "p99_us", "vs_raw");
}

void print_row(const std::string& name, const RunStats& stats, const std::string& versus_raw) {
  std::printf("%-36s %12.0f %9.1f %10.1f %10.1f  %s\n", name.c_str(), stats.messages_per_second,
              stats.mb_per_second, stats.p50_us, stats.p99_us, versus_raw.c_str());
}

std::string ratio_text(const RunStats& mq_stats, const RunStats& raw_stats, int threads) {
  char text[64];
  std::snprintf(text, sizeof text, "%.2f", mq_stats.messages_per_second / raw_stats.messages_per_second);
  // The raw loop is single-threaded: 8 appending threads are compared to that one writer.
  return threads == 1 ? std::string(text) : std::string(text) + " (vs the 1-thread raw limit)";
}

void run_append_benchmark(const BenchOptions& options, ScratchDirectory& scratch) {
  const auto duration =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(options.seconds));
  std::vector<RawCase> raw_cases;
  std::vector<AppendCase> append_cases;
  for (const bool sync : {true, false}) {
    for (const std::size_t batch : {std::size_t{1}, std::size_t{100}}) {
      raw_cases.push_back({sync, batch});
      for (const int threads : {1, 8}) {
        append_cases.push_back({sync ? mq::FsyncMode::kAlways : mq::FsyncMode::kNever, batch, threads});
      }
    }
  }
  constexpr int kMaxThreads = 8;
  std::vector<std::vector<mq::Message>> messages_per_thread;
  for (int t = 0; t < kMaxThreads; ++t) {
    messages_per_thread.push_back(make_messages(static_cast<std::uint64_t>(t) * kMessagesPerThread,
                                                kMessagesPerThread, kAppendPayloadBytes));
  }

  // Repeats are the outer loop so that a slow phase of the machine (writeback, a neighbour) spreads
  // over all cases instead of skewing one.
  std::vector<std::vector<RunStats>> raw_runs(raw_cases.size());
  std::vector<std::vector<RunStats>> append_runs(append_cases.size());
  for (int r = 0; r < options.repeat; ++r) {
    for (std::size_t i = 0; i < raw_cases.size(); ++i) {
      print_progress(raw_case_name(raw_cases[i]), r, options.repeat);
      RunResult run = run_raw_case(raw_cases[i], scratch, duration, messages_per_thread[0]);
      raw_runs[i].push_back(summarize(run));
    }
    for (std::size_t i = 0; i < append_cases.size(); ++i) {
      print_progress(append_case_name(append_cases[i]), r, options.repeat);
      RunResult run = run_append_case(append_cases[i], scratch, duration, messages_per_thread);
      append_runs[i].push_back(summarize(run));
    }
  }

  std::printf(
      "\nappend: %zu-byte JSON payloads, %.1f s per case, median of %d runs; latency = one append() "
      "call (a whole batch)\n",
      kAppendPayloadBytes, options.seconds, options.repeat);
  std::printf(
      "MB/s = 10^6 bytes written per second: raw counts the payloads, mq the whole records "
      "(payload + offset/timestamp framing)\n");
  print_table_header();
  for (std::size_t i = 0; i < raw_cases.size(); ++i) {
    const RunStats raw = median_stats(raw_runs[i]);
    print_row(raw_case_name(raw_cases[i]), raw, "-");
    for (std::size_t j = 0; j < append_cases.size(); ++j) {
      const AppendCase& c = append_cases[j];
      if (syncs(c.fsync) != raw_cases[i].sync || c.batch != raw_cases[i].batch) continue;
      const RunStats stats = median_stats(append_runs[j]);
      print_row(append_case_name(c), stats, ratio_text(stats, raw, c.threads));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Open time

struct OpenMeasurement {
  double seconds = 0;
  mq::RecoveryReport report;
  std::uint64_t next_offset = 0;
};

struct CreatedLog {
  std::uint64_t bytes = 0;
  std::uint64_t messages = 0;
  double append_seconds = 0;
  double close_seconds = 0;  // the final fdatasync of everything kNever left unsynced
};

CreatedLog create_log(const std::string& data_dir, std::uint64_t target_bytes) {
  const std::uint64_t margin = 1ULL << 30;
  if (free_bytes(stdfs::path(data_dir).parent_path().string()) < target_bytes + margin) {
    throw std::runtime_error("not enough free space for the open-time test's log of " +
                             std::to_string(target_bytes) + " bytes (use a smaller --open-gb)");
  }
  const std::vector<mq::Message> batch = make_messages(0, kOpenTestBatch, kOpenTestPayloadBytes);
  mq::StoreOptions options;
  options.data_dir = data_dir;
  options.fsync = mq::FsyncMode::kNever;  // only the size of the result matters here
  CreatedLog created;
  const Clock::time_point start = Clock::now();
  auto store = check(mq::LogStore::open(options), "LogStore::open");
  mq::Partition* partition = check(store->partition(kTopic, 0), "LogStore::partition");
  while (partition->positions().written < target_bytes) {
    check(partition->append(batch), "Partition::append");
    created.messages += batch.size();
  }
  created.bytes = partition->positions().written;
  const Clock::time_point appended = Clock::now();
  store.reset();
  created.append_seconds = seconds_between(start, appended);
  created.close_seconds = seconds_between(appended, Clock::now());
  return created;
}

// Lookups by time on the log of the open-time test (below).
void run_time_lookup_benchmark(const std::string& data_dir);

// The time from nothing to a partition ready to append: opening the store and recovering the log.
OpenMeasurement measure_open(const std::string& data_dir) {
  mq::StoreOptions options;
  options.data_dir = data_dir;
  options.fsync = mq::FsyncMode::kNever;  // recovery is the same in every mode; kNever skips directory syncs
  const Clock::time_point start = Clock::now();
  auto store = check(mq::LogStore::open(options), "LogStore::open");
  mq::Partition* partition = check(store->partition(kTopic, 0), "LogStore::partition");
  const Clock::time_point opened = Clock::now();
  return {seconds_between(start, opened), partition->recovery_report(), partition->next_offset()};
}

void check_recovered_everything(const OpenMeasurement& open, const CreatedLog& created) {
  if (open.next_offset != created.messages || open.report.truncated_bytes != 0) {
    throw std::runtime_error("recovery lost data: next offset " + std::to_string(open.next_offset) +
                             ", expected " + std::to_string(created.messages) + ", truncated " +
                             std::to_string(open.report.truncated_bytes) + " bytes");
  }
}

void print_open_row(const std::string& name, double seconds, const mq::RecoveryReport& report) {
  std::printf("%-48s %10.4f %15llu %14s  %s\n", name.c_str(), seconds,
              static_cast<unsigned long long>(report.scanned_bytes), report.index_rebuilt ? "yes" : "no",
              "goal < 0.5 s");
}

void run_open_benchmark(const BenchOptions& options, ScratchDirectory& scratch) {
  const std::string data_dir = scratch.fresh_path("open");
  const auto target_bytes = static_cast<std::uint64_t>(options.open_gb * kBytesPerGB);
  std::fprintf(stderr, "creating a %.2f GB log for the open-time test\n", options.open_gb);
  const CreatedLog created = create_log(data_dir, target_bytes);

  std::vector<double> open_seconds;
  mq::RecoveryReport indexed_report;
  for (int r = 0; r < options.repeat; ++r) {
    std::fprintf(stderr, "opening with the sparse index (%d/%d)\n", r + 1, options.repeat);
    const OpenMeasurement open = measure_open(data_dir);
    check_recovered_everything(open, created);
    open_seconds.push_back(open.seconds);
    indexed_report = open.report;
  }

  std::fprintf(stderr, "opening without the index (rebuild)\n");
  stdfs::remove(stdfs::path(data_dir) / kTopic / "partition-0.index");
  const OpenMeasurement rebuild = measure_open(data_dir);
  check_recovered_everything(rebuild, created);

  std::printf(
      "\nopen: LogStore::open + partition(\"%s\", 0) of a %.3f GB log (%llu messages of %zu-byte payloads,"
      " %llu per batch)\n",
      std::string(kTopic).c_str(), static_cast<double>(created.bytes) / kBytesPerGB,
      static_cast<unsigned long long>(created.messages), kOpenTestPayloadBytes,
      static_cast<unsigned long long>(kOpenTestBatch));
  std::printf(
      "creating it took %.1f s of appends (kNever) + %.1f s to close (final fdatasync); the log was just "
      "written, so it is likely in the page cache\n",
      created.append_seconds, created.close_seconds);
  std::printf("%-48s %10s %15s %14s  %s\n", "case", "seconds", "scanned_bytes", "index_rebuilt", "goal");
  print_open_row("open with sparse index (median of " + std::to_string(options.repeat) + ")",
                 median(open_seconds), indexed_report);
  print_open_row("REBUILD path: partition-0.index deleted (once)", rebuild.seconds, rebuild.report);
  run_time_lookup_benchmark(data_dir);
  stdfs::remove_all(data_dir);
}

// The timestamp of a stored line ({"offset":N,"timestamp":T,...}).
std::int64_t timestamp_of(std::string_view line) {
  const auto at = line.find("\"timestamp\":");
  if (at == std::string_view::npos) throw std::runtime_error("a stored line without a timestamp");
  return parse_number<std::int64_t>("timestamp", line.substr(at + 12, line.find(',', at) - at - 12));
}

std::int64_t timestamp_at(const mq::Partition& partition, std::uint64_t offset) {
  auto batch = check(partition.read(offset, 1, 1 << 20), "Partition::read");
  if (batch.empty()) throw std::runtime_error("nothing at offset " + std::to_string(offset));
  return timestamp_of(batch[0].line);
}

// Partition::offset_for_time on the log just measured (GET /messages?timestamp=, a seek to a time):
// the first lookup after opening (sealed segments opened on the way) and then random ones, each
// checked (the message found is at or after the time, the one before it is earlier).
void run_time_lookup_benchmark(const std::string& data_dir) {
  mq::StoreOptions options;
  options.data_dir = data_dir;
  options.fsync = mq::FsyncMode::kNever;
  auto store = check(mq::LogStore::open(options), "LogStore::open");
  mq::Partition* partition = check(store->partition(kTopic, 0), "LogStore::partition");
  const std::int64_t first = timestamp_at(*partition, partition->log_start_offset());
  const std::int64_t last = timestamp_at(*partition, partition->next_offset() - 1);
  std::uint64_t seed = 20261203;
  auto random_time = [&] {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return first + static_cast<std::int64_t>((seed >> 33) % static_cast<std::uint64_t>(last - first + 1));
  };
  auto lookup_ns = [&](std::int64_t t) {
    const Clock::time_point start = Clock::now();
    const std::uint64_t found = check(partition->offset_for_time(t), "Partition::offset_for_time");
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count();
    if (found < partition->next_offset() && timestamp_at(*partition, found) < t) {
      throw std::runtime_error("offset_for_time found an earlier message");
    }
    if (found > partition->log_start_offset() && timestamp_at(*partition, found - 1) >= t) {
      throw std::runtime_error("offset_for_time missed an earlier match");
    }
    return ns;
  };
  const double cold_ms = static_cast<double>(lookup_ns(random_time())) / 1e6;
  std::vector<std::int64_t> warm;
  for (int i = 0; i < 500; ++i) warm.push_back(lookup_ns(random_time()));
  std::printf(
      "\ntime lookup: Partition::offset_for_time on that log (%zu segments, timestamps over %.1f s)\n",
      partition->segment_count(), static_cast<double>(last - first) / 1000.0);
  std::printf("%-48s %10s %10s %10s  %s\n", "case", "ms", "p50_ms", "p99_ms", "goal");
  std::printf("%-48s %10.3f %10s %10s  %s\n", "first lookup after open", cold_ms, "-", "-", "< 5 ms");
  std::printf("%-48s %10s %10.3f %10.3f  %s\n", "500 random lookups", "-", percentile_us(warm, 0.5) / 1000.0,
              percentile_us(warm, 0.99) / 1000.0, "< 5 ms");
}

// A partition of `segments` segments (each one batch of about 4 KB): the open time, which must not
// grow with the segments' contents (log_format.md: only the last segments' tails are read).
void run_segments_open_benchmark(const BenchOptions& options, ScratchDirectory& scratch) {
  const std::string data_dir = scratch.fresh_path("segments");
  mq::StoreOptions store_options;
  store_options.data_dir = data_dir;
  store_options.fsync = mq::FsyncMode::kNever;
  store_options.segment_bytes = 4096;
  const std::vector<mq::Message> batch = make_messages(0, 4, kOpenTestPayloadBytes);
  std::fprintf(stderr, "creating a partition of %d segments\n", options.open_segments);
  {
    auto store = check(mq::LogStore::open(store_options), "LogStore::open");
    mq::Partition* partition = check(store->partition(kTopic, 0), "LogStore::partition");
    while (partition->segment_count() < static_cast<std::size_t>(options.open_segments)) {
      check(partition->append(batch), "Partition::append");
    }
  }
  std::vector<double> open_seconds;
  std::size_t segments = 0;
  for (int r = 0; r < options.repeat; ++r) {
    const Clock::time_point start = Clock::now();
    auto store = check(mq::LogStore::open(store_options), "LogStore::open");
    mq::Partition* partition = check(store->partition(kTopic, 0), "LogStore::partition");
    open_seconds.push_back(seconds_between(start, Clock::now()));
    segments = partition->segment_count();
  }
  std::printf("\nopen: a partition of %zu segments of about 4 KB\n", segments);
  std::printf("%-48s %10s  %s\n", "case", "ms", "goal");
  std::printf("%-48s %10.2f  %s\n", ("open (median of " + std::to_string(options.repeat) + ")").c_str(),
              median(open_seconds) * 1000.0, "< 50 ms");
  stdfs::remove_all(data_dir);
}

// Appends while retention deletes segments (goal: p99 within 10 % of the same appends without it):
// 8 threads, one message per call, FSYNC=never (fast enough to roll tens of 1 MiB segments a
// second; with always this disk rolls one every few seconds). As in the Broker, an append that
// rolls the log wakes one retention thread, which applies max_bytes = 4 MiB, so that a segment
// goes about as soon as one rolls. Both cases run the same threads and wake-ups: "without" only
// skips apply_retention, so the difference is the deleting itself.
RunResult run_retention_case(bool with_retention, ScratchDirectory& scratch, Clock::duration duration,
                             const std::vector<std::vector<mq::Message>>& messages_per_thread,
                             std::uint64_t& deleted) {
  mq::StoreOptions options;
  options.data_dir = scratch.fresh_path("retention");
  options.fsync = mq::FsyncMode::kNever;
  options.segment_bytes = 1 << 20;
  auto store = check(mq::LogStore::open(options), "LogStore::open");
  mq::Partition* partition = check(store->partition(kTopic, 0), "LogStore::partition");
  std::mutex mutex;
  std::condition_variable rolled;
  bool pending = false;  // GUARDED_BY(mutex)
  bool done = false;     // GUARDED_BY(mutex)
  std::jthread retention([&] {
    mq::RetentionRule rule;
    rule.max_bytes = 4 << 20;
    std::unique_lock lock(mutex);
    while (true) {
      rolled.wait(lock, [&] { return pending || done; });
      if (done) return;
      pending = false;
      lock.unlock();
      if (with_retention) deleted += check(partition->apply_retention(rule), "Partition::apply_retention");
      lock.lock();
    }
  });
  RunResult run = run_timed(8, duration, [&](int thread, std::uint64_t iteration) {
    const std::vector<mq::Message>& messages = messages_per_thread[static_cast<std::size_t>(thread)];
    const std::size_t segments = partition->segment_count();
    check(partition->append(std::span<const mq::Message>(&messages[iteration % messages.size()], 1)),
          "Partition::append");
    if (partition->segment_count() > segments) {
      {
        std::lock_guard lock(mutex);
        pending = true;
      }
      rolled.notify_one();
    }
    return std::uint64_t{1};
  });
  {
    std::lock_guard lock(mutex);
    done = true;
  }
  rolled.notify_one();
  retention.join();
  run.bytes = run.messages * kAppendPayloadBytes;
  store.reset();
  stdfs::remove_all(options.data_dir);
  return run;
}

void run_retention_benchmark(const BenchOptions& options, ScratchDirectory& scratch) {
  const auto duration =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(options.seconds));
  std::vector<std::vector<mq::Message>> messages_per_thread;
  for (int t = 0; t < 8; ++t) {
    messages_per_thread.push_back(make_messages(static_cast<std::uint64_t>(t) * kMessagesPerThread,
                                                kMessagesPerThread, kAppendPayloadBytes));
  }
  std::vector<RunStats> without;
  std::vector<RunStats> with;
  std::uint64_t deleted = 0;
  for (int r = 0; r < options.repeat; ++r) {  // alternating, so that a slow phase hits both
    print_progress("append without retention", r, options.repeat);
    RunResult a = run_retention_case(false, scratch, duration, messages_per_thread, deleted);
    without.push_back(summarize(a));
    print_progress("append with retention deleting", r, options.repeat);
    RunResult b = run_retention_case(true, scratch, duration, messages_per_thread, deleted);
    with.push_back(summarize(b));
  }
  const RunStats a = median_stats(without);
  const RunStats b = median_stats(with);
  std::printf(
      "\nretention: 8 threads, 1 message per append, FSYNC=never, 1 MiB segments; median of %d runs\n",
      options.repeat);
  print_table_header();
  print_row("mq   without retention", a, "-");
  char ratio[96];
  std::snprintf(ratio, sizeof ratio, "p99 %.2fx, msgs/s %.2fx (goal p99 <= 1.10x)", b.p99_us / a.p99_us,
                b.messages_per_second / a.messages_per_second);
  print_row("mq   retention deleting (max 4 MiB)", b, ratio);
  std::printf("messages deleted by retention over all runs: %llu\n",
              static_cast<unsigned long long>(deleted));
}

// Both tables, in the order they are printed; the open-time test only when --open-gb asks for a log.
void run_benchmarks(const BenchOptions& options, ScratchDirectory& scratch) {
  run_append_benchmark(options, scratch);
  run_retention_benchmark(options, scratch);
  if (options.open_gb > 0) run_open_benchmark(options, scratch);
  if (options.open_segments > 0) run_segments_open_benchmark(options, scratch);
}

}  // namespace

int main(int argc, char** argv) {
  return mq::bench::run_main("store_bench", kUsage, argc, argv, parse_options, run_benchmarks);
}

// What the benchmark programs in tests/bench share: the command-line frame, error checks, the
// statistics they report, the scratch directory they write in and the machine line they start with.
// Each program keeps what it measures and how it prints it.
#pragma once

#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "mq/mq.h"

namespace mq::bench {

inline constexpr double kBytesPerGB = 1e9;

// ---------------------------------------------------------------------------------------------
// Command line

// A bad command line. Kept apart from other failures so that it is answered with the usage text and
// exit status 2, where a failed run exits 1.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The flags every benchmark takes; each program's options derive from this so that the shared
// parser and run_main() can fill and read them.
struct CommonOptions {
  std::optional<std::string> dir;  // --dir: where the scratch directory is made
  bool help = false;
};

// The whole of `text` as a Number: "12x", "" or an out-of-range value is a UsageError, never a
// silently truncated number that would make a run measure something other than what was asked.
template <typename Number>
Number parse_number(std::string_view flag, std::string_view text) {
  Number value{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) {
    throw UsageError(std::string(flag) + " needs a number, got '" + std::string(text) + "'");
  }
  return value;
}

// One of a program's own "--flag value" options: its name and what its value does.
struct Flag {
  std::string_view name;
  std::function<void(std::string_view value)> set;  // throws UsageError for a bad value
};

// A flag whose value is one number stored in `target`, which must outlive the parse.
template <typename Number>
Flag number_flag(std::string_view name, Number& target) {
  return {name, [name, &target](std::string_view value) { target = parse_number<Number>(name, value); }};
}

// Reads argv as "--flag value" pairs, in order: --help/-h (no value) and --dir land in `common`,
// the others go to the matching entry of `flags`. Throws UsageError at the first unknown flag or
// missing value; checking the values together (ranges) is left to the caller.
void parse_flags(int argc, char** argv, CommonOptions& common, const std::vector<Flag>& flags);

// ---------------------------------------------------------------------------------------------
// Errors: a benchmark has nothing to recover from, so every failure becomes an exception that ends it.

// The current errno as an exception, for a failed POSIX call named by `what`.
std::system_error errno_error(const std::string& what);

// The value of `result`, or an exception naming the call (`what`) that failed.
template <typename T>
T check(mq::Result<T> result, std::string_view what) {
  if (!result.ok()) throw std::runtime_error(std::string(what) + ": " + result.status().to_string());
  return std::move(result).value();
}

// ---------------------------------------------------------------------------------------------
// Statistics

// The median of `values` (not empty); taken by value because it sorts them.
double median(std::vector<double> values);

// In seconds as a double, the unit the tables and their throughput divisions use.
double seconds_between(std::chrono::steady_clock::time_point from, std::chrono::steady_clock::time_point to);

// The median over `runs` of one metric. Each metric gets its own median: with an odd --repeat it is
// then a value some run really measured.
template <typename Run>
double median_of(const std::vector<Run>& runs, double Run::*metric) {
  std::vector<double> values;
  for (const Run& run : runs) values.push_back(run.*metric);
  return median(std::move(values));
}

// The nearest-rank `quantile` (0..1] of `latencies_ns`, in microseconds; 0 when there are none.
// Reorders the vector: nth_element instead of a full sort keeps millions of samples cheap.
double percentile_us(std::vector<std::int64_t>& latencies_ns, double quantile);

// ---------------------------------------------------------------------------------------------
// Files and the machine

// The directory everything is written in: made with mkdtemp so that a run never touches existing
// files, and removed with its contents when the benchmark ends (also when it fails).
class ScratchDirectory {
 public:
  // Makes `parent`/`program`.XXXXXX, creating `parent` if needed.
  ScratchDirectory(const std::string& parent, std::string_view program);
  ~ScratchDirectory();
  ScratchDirectory(const ScratchDirectory&) = delete;
  ScratchDirectory& operator=(const ScratchDirectory&) = delete;

  const std::string& path() const { return path_; }
  // A path inside the directory that no earlier call returned, so each run starts from nothing.
  std::string fresh_path(std::string_view label);

 private:
  std::string path_;
  int next_id_ = 0;
};

// One run's directory (a fresh_path), removed with everything in it when the run ends, so that runs
// do not pile up: the page cache of earlier runs' files then stays in use, and on the virtual
// machines measured here every later run writes into memory the kernel has to find afresh. Seen
// with options_bench --only both --fsync never --repeat 6: 0.50 us of CPU a message in the first
// runs, 0.90 and 1.16 in the fifth and sixth (0.49-0.52 in all six with each run removed).
// Declare it before whatever writes there, so that it goes after them.
class RunDirectory {
 public:
  explicit RunDirectory(std::string path) : path_(std::move(path)) {}
  ~RunDirectory();
  RunDirectory(const RunDirectory&) = delete;
  RunDirectory& operator=(const RunDirectory&) = delete;

 private:
  std::string path_;
};

// Where the scratch directory goes without --dir: $TMPDIR, else /tmp.
std::string default_parent_directory();

// mqd in the build tree of the running benchmark: build/x/tests/bench/<program> -> build/x/mqd/mqd.
std::string mqd_beside_this_program();

// Bytes an unprivileged writer may still use on the file system holding `path`.
std::uint64_t free_bytes(const std::string& path);

// Whether `mode` makes every append wait for its own fdatasync (the cases the tables call "always").
bool syncs(mq::FsyncMode mode);

// The "machine:" line that heads every result, so that numbers are never read without their context
// (CPU, kernel, file system, free space, whether asserts were compiled in).
void print_machine(const std::string& dir);

// ---------------------------------------------------------------------------------------------
// main()

// The frame of every benchmark's main(). `parse` reads the command line into the program's options
// and returns them; a UsageError from it prints "<program>: <error>" and the usage to stderr and
// returns 2, and --help prints the usage to stdout and returns 0. Otherwise the machine line is
// printed and `run` gets a fresh scratch directory; any exception from it is printed as
// "<program>: <error>" and returns 1, after unwinding has removed the directory.
int run_main(std::string_view program, std::string_view usage,
             const std::function<const CommonOptions&()>& parse,
             const std::function<void(ScratchDirectory&)>& run);

// The same for a program whose Options derive from CommonOptions, so that its main() is one line:
// `parse` builds the options from argv and `run` measures with them.
template <typename Options>
int run_main(std::string_view program, std::string_view usage, int argc, char** argv,
             Options (*parse)(int, char**), void (*run)(const Options&, ScratchDirectory&)) {
  Options options;
  return run_main(
      program, usage, [&]() -> const CommonOptions& { return options = parse(argc, argv); },
      [&](ScratchDirectory& scratch) { run(options, scratch); });
}

// Failures: every one is counted and printed, never dropped.
class FailureLog {
 public:
  void add(const std::string& where, const std::string& what, std::uint64_t count = 1) {
    if (count == 0) return;
    std::lock_guard lock(mutex_);
    std::fprintf(stderr, "  FAIL %s: %s (x%llu)\n", where.c_str(), what.c_str(),
                 static_cast<unsigned long long>(count));
    counts_[where + ": " + what] += count;
  }
  std::uint64_t total() const {
    std::lock_guard lock(mutex_);
    std::uint64_t sum = 0;
    for (const auto& [line, count] : counts_) sum += count;
    return sum;
  }
  void print() const {
    std::lock_guard lock(mutex_);
    for (const auto& [line, count] : counts_) {
      std::printf("FAIL %s  (x%llu over all runs)\n", line.c_str(), static_cast<unsigned long long>(count));
    }
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::uint64_t> counts_;  // GUARDED_BY(mutex_)
};

// Checks that passed, so that the output says what was verified.
struct CheckTally {
  std::atomic<int> passed{0};
  std::atomic<int> failed{0};
};

}  // namespace mq::bench

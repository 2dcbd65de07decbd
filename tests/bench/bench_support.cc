#include "bench_support.h"

#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <thread>

namespace mq::bench {

namespace stdfs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// Command line

void parse_flags(int argc, char** argv, CommonOptions& common, const std::vector<Flag>& flags) {
  const std::vector<std::string_view> args(argv + 1, argv + argc);
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string_view flag = args[i];
    if (flag == "--help" || flag == "-h") {
      common.help = true;
      continue;
    }
    if (i + 1 >= args.size()) throw UsageError("unknown option or missing value: " + std::string(flag));
    const std::string_view value = args[++i];
    if (flag == "--dir") {
      common.dir = std::string(value);
      continue;
    }
    const auto known =
        std::find_if(flags.begin(), flags.end(), [&](const Flag& f) { return f.name == flag; });
    if (known == flags.end()) throw UsageError("unknown option: " + std::string(flag));
    known->set(value);
  }
}

// ---------------------------------------------------------------------------------------------
// Errors

std::system_error errno_error(const std::string& what) {
  return std::system_error(errno, std::generic_category(), what);
}

// ---------------------------------------------------------------------------------------------
// Statistics

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t mid = values.size() / 2;
  return values.size() % 2 == 1 ? values[mid] : (values[mid - 1] + values[mid]) / 2;
}

double seconds_between(std::chrono::steady_clock::time_point from, std::chrono::steady_clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

double percentile_us(std::vector<std::int64_t>& latencies_ns, double quantile) {
  if (latencies_ns.empty()) return 0;
  const auto rank = static_cast<std::size_t>(std::ceil(quantile * static_cast<double>(latencies_ns.size())));
  const std::size_t index = std::clamp<std::size_t>(rank, 1, latencies_ns.size()) - 1;
  std::nth_element(latencies_ns.begin(), latencies_ns.begin() + static_cast<std::ptrdiff_t>(index),
                   latencies_ns.end());
  return static_cast<double>(latencies_ns[index]) / 1000.0;
}

// ---------------------------------------------------------------------------------------------
// Files and the machine

ScratchDirectory::ScratchDirectory(const std::string& parent, std::string_view program) {
  stdfs::create_directories(parent);
  std::string pattern = parent + "/" + std::string(program) + ".XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) throw errno_error("mkdtemp " + pattern);
  path_ = stdfs::absolute(pattern).string();
}

ScratchDirectory::~ScratchDirectory() {
  // A destructor must not throw, and a leftover directory is no reason to hide the real outcome.
  std::error_code ignored;
  stdfs::remove_all(path_, ignored);
}

RunDirectory::~RunDirectory() {
  std::error_code ignored;
  stdfs::remove_all(path_, ignored);
}

std::string ScratchDirectory::fresh_path(std::string_view label) {
  return path_ + "/" + std::string(label) + "-" + std::to_string(next_id_++);
}

std::string default_parent_directory() {
  const char* tmpdir = std::getenv("TMPDIR");
  return tmpdir != nullptr && *tmpdir != '\0' ? tmpdir : "/tmp";
}

std::uint64_t free_bytes(const std::string& path) {
  struct statvfs info {};
  if (::statvfs(path.c_str(), &info) != 0) throw errno_error("statvfs " + path);
  return static_cast<std::uint64_t>(info.f_bavail) * info.f_frsize;
}

bool syncs(mq::FsyncMode mode) { return mode == mq::FsyncMode::kAlways; }

namespace {

// The file system's name from its statfs magic number: fsync costs differ by orders of magnitude
// between, say, tmpfs and ext4, so a result without it cannot be compared.
std::string filesystem_type(const std::string& path) {
  struct statfs info {};
  if (::statfs(path.c_str(), &info) != 0) return "unknown";
  struct Known {
    unsigned long long magic;
    const char* name;
  };
  static constexpr Known kKnown[] = {{0xEF53, "ext2/3/4"},  {0x58465342, "xfs"},     {0x9123683E, "btrfs"},
                                     {0x01021994, "tmpfs"}, {0x794C7630, "overlay"}, {0x2FC12FC1, "zfs"},
                                     {0xF2F52010, "f2fs"},  {0x6969, "nfs"}};
  const auto magic = static_cast<unsigned long long>(info.f_type);
  for (const Known& known : kKnown) {
    if (known.magic == magic) return known.name;
  }
  char hex[32];
  std::snprintf(hex, sizeof hex, "statfs type 0x%llx", magic);
  return hex;
}

// The first "model name" of /proc/cpuinfo (Linux only, like the rest of these benchmarks).
std::string cpu_model() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.starts_with("model name")) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
  return "unknown cpu";
}

}  // namespace

void print_machine(const std::string& dir) {
  struct utsname uts {};
  const std::string kernel = ::uname(&uts) == 0 ? std::string(uts.sysname) + " " + uts.release : "unknown";
  // This file is built with the same flags as the programs (one build tree, one build type), so
  // NDEBUG here says what it says for them.
#ifdef NDEBUG
  const char* asserts = "off";
#else
  const char* asserts = "on";
#endif
  std::printf("machine: nproc=%u, cpu=%s, %s, dir=%s, fs=%s, free=%.1f GB, asserts %s\n",
              std::thread::hardware_concurrency(), cpu_model().c_str(), kernel.c_str(), dir.c_str(),
              filesystem_type(dir).c_str(), static_cast<double>(free_bytes(dir)) / kBytesPerGB, asserts);
  // Progress goes to stderr from here on: flushing keeps this line first when both go to one file.
  std::fflush(stdout);
}

// ---------------------------------------------------------------------------------------------
// main()

namespace {

int print_usage_error(std::string_view program, const UsageError& error, std::string_view usage) {
  std::fprintf(stderr, "%.*s: %s\n%.*s", static_cast<int>(program.size()), program.data(), error.what(),
               static_cast<int>(usage.size()), usage.data());
  return 2;
}

}  // namespace

int run_main(std::string_view program, std::string_view usage,
             const std::function<const CommonOptions&()>& parse,
             const std::function<void(ScratchDirectory&)>& run) {
  CommonOptions common;
  try {
    common = parse();
  } catch (const UsageError& e) {
    return print_usage_error(program, e, usage);
  }
  if (common.help) {
    std::printf("%.*s", static_cast<int>(usage.size()), usage.data());
    return 0;
  }
  // Any failure ends the benchmark; unwinding removes the scratch directory on the way out.
  try {
    ScratchDirectory scratch(common.dir.value_or(default_parent_directory()), program);
    print_machine(scratch.path());
    run(scratch);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%.*s: %s\n", static_cast<int>(program.size()), program.data(), e.what());
    return 1;
  }
  return 0;
}

std::string mqd_beside_this_program() {
  std::error_code error;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", error);
  if (error) throw std::runtime_error("cannot read /proc/self/exe to find mqd; pass --mqd PATH");
  return (self.parent_path() / ".." / ".." / "mqd" / "mqd").lexically_normal().string();
}

}  // namespace mq::bench

// Starts a real server program (mqd, path in $MQD_PATH; redis-server) on 127.0.0.1 with the given
// arguments and environment, waits for its port to accept connections (bounded), and stops it with
// a signal.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace mq::testing {

namespace detail {

// The ports a server under test may take: up to 20,000 in the wider of the two gaps around the
// kernel's ephemeral range (/proc/sys/net/ipv4/ip_local_port_range), above 1023. A port from the
// ephemeral range, free a moment ago, can be taken by any test's outgoing connection before the
// server binds it (CI saw "mqd: cannot listen on 0.0.0.0:34389: Address already in use").
// Nothing when both gaps are under 2,000 ports (e.g. the range tuned to 1024-65535).
inline std::optional<std::pair<int, int>> server_port_range() {
  constexpr int kWanted = 20000, kEnough = 2000;
  int ephemeral_low = 32768, ephemeral_high = 60999;
  std::ifstream("/proc/sys/net/ipv4/ip_local_port_range") >> ephemeral_low >> ephemeral_high;
  const int below = ephemeral_low - 1024, above = 65535 - ephemeral_high;
  if (std::max(below, above) < kEnough) return std::nullopt;
  if (below >= above) return std::pair{std::max(1024, ephemeral_low - kWanted), ephemeral_low - 1};
  return std::pair{ephemeral_high + 1, std::min(65535, ephemeral_high + kWanted)};
}

// `port` on every IPv4 interface.
inline sockaddr_in any_address(int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  return addr;
}

// Binds UDP `port` and returns the socket, so that while it is held no other test process (C++,
// Python or JavaScript: tests/support/free_port.*) hands out the same TCP port: ctest runs tests in
// parallel, and a port that is merely free now stays open to others until its server binds it, and
// again while a test stops and restarts a server on it. UDP ports are apart from TCP ones, so the
// server's own bind is not hindered (but the port cannot serve UDP). -1 if it is held already.
inline int reserve_among_test_processes(int port) {
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("free_port: no socket");
  sockaddr_in addr = any_address(port);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Binds TCP `port` (0: one the kernel picks) on every interface without SO_REUSEADDR, closes it
// again, and returns the port, or 0 if it could not be bound. Strict, because a port that still has
// connections in TIME_WAIT is refused by a server that does not set SO_REUSEADDR (cpp-httplib's
// default sets SO_REUSEPORT only): such a port is not handed out.
inline int bind_and_close(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("free_port: no socket");
  sockaddr_in addr = any_address(port);
  socklen_t length = sizeof addr;
  const bool bound = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                     ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) == 0;
  ::close(fd);
  return bound ? ntohs(addr.sin_port) : 0;
}

}  // namespace detail

// A TCP port for a server under test: outside the ephemeral range (server_port_range), reserved
// against every other test process for the rest of this one (reserve_among_test_processes: the
// reservation is never closed), never handed out twice by this process, and bindable now. The
// first candidate is random so that tests running in parallel rarely try the same ones. Where the
// ephemeral range leaves too few ports outside it, the kernel picks one (reserved as well), with a
// warning: an outgoing connection may then take it before its server binds it.
inline int free_port() {
  static std::mutex mutex;
  static std::set<int> tried;                          // GUARDED_BY(mutex)
  static std::mt19937 random{std::random_device{}()};  // GUARDED_BY(mutex)
  std::lock_guard lock(mutex);
  const auto range = detail::server_port_range();
  if (!range) {
    if (tried.empty()) {  // the first call: warn once, as free_port.py and free_port.mjs do
      std::fprintf(stderr,
                   "free_port: net.ipv4.ip_local_port_range leaves fewer than 2,000 ports above 1023 "
                   "outside it: test servers take ports the kernel picks, which outgoing connections "
                   "may take first\n");
    }
    for (int attempt = 0; attempt < 1000; ++attempt) {
      const int port = detail::bind_and_close(0);
      if (port == 0) throw std::runtime_error("free_port: cannot bind a TCP port");
      if (!tried.insert(port).second) continue;
      if (detail::reserve_among_test_processes(port) >= 0) return port;
    }
    throw std::runtime_error("free_port: the kernel keeps picking ports held already");
  }
  const auto [low, high] = *range;
  const int count = high - low + 1;
  const int first = std::uniform_int_distribution<int>(0, count - 1)(random);
  for (int i = 0; i < count; ++i) {
    const int port = low + (first + i) % count;
    if (!tried.insert(port).second) continue;
    const int reservation = detail::reserve_among_test_processes(port);
    if (reservation < 0) continue;
    if (detail::bind_and_close(port) == port) return port;
    ::close(reservation);
  }
  throw std::runtime_error("free_port: no free port between " + std::to_string(low) + " and " +
                           std::to_string(high));
}

inline bool port_accepts(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

namespace detail {

// The inodes of the sockets listening on `port` in the network namespace of process `pid`
// (/proc/<pid>/net/tcp and tcp6: "sl local rem st tx:rx tr:when retrnsmt uid timeout inode").
inline std::set<std::string> listening_socket_inodes(pid_t pid, int port) {
  std::set<std::string> inodes;
  for (const char* table : {"tcp", "tcp6"}) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/net/" + table);
    std::string line;
    std::getline(in, line);  // the header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout, inode;
      fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >> timeout >> inode;
      const auto colon = local.rfind(':');
      if (state != "0A" || colon == std::string::npos) continue;  // 0A: LISTEN
      const std::string_view hex = std::string_view(local).substr(colon + 1);
      int listening = 0;
      const auto parsed = std::from_chars(hex.data(), hex.data() + hex.size(), listening, 16);
      if (parsed.ec == std::errc() && listening == port) inodes.insert(inode);
    }
  }
  return inodes;
}

// Whether `pid` or a process it started holds one of the sockets `inodes`.
inline bool holds_socket(pid_t pid, const std::set<std::string>& inodes, int depth = 0) {
  const std::string proc = "/proc/" + std::to_string(pid);
  // Without exceptions: the process may exit while its descriptors are listed (it lost the port).
  std::error_code error;
  for (std::filesystem::directory_iterator fd(proc + "/fd", error), end; !error && fd != end;
       fd.increment(error)) {
    std::error_code unreadable;
    const auto target = std::filesystem::read_symlink(fd->path(), unreadable).string();
    if (!unreadable && target.starts_with("socket:[") &&
        inodes.contains(target.substr(8, target.size() - 9))) {
      return true;
    }
  }
  if (depth > 4) return false;
  std::ifstream children(proc + "/task/" + std::to_string(pid) + "/children");
  for (pid_t child = 0; children >> child;) {
    if (holds_socket(child, inodes, depth + 1)) return true;
  }
  return false;
}

}  // namespace detail

class ServerProcess {
 public:
  // Starts `program` with `args` and exactly `env`; its stderr goes to `stderr_path` and its stdout
  // to `stdout_path` (each /dev/null when empty). The child dies with the test process (PR_SET_PDEATHSIG), so
  // a test that fails hard leaves no server behind holding ports or ctest's output pipe.
  ServerProcess(std::string program_path, std::vector<std::string> args,
                std::map<std::string, std::string> env, std::string stderr_path = "",
                std::string stdout_path = "") {
    const char* program = program_path.c_str();
    std::vector<std::string> strings;
    for (const auto& [k, v] : env) strings.push_back(k + "=" + v);
    std::vector<char*> envp;
    for (auto& s : strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    const std::string err = stderr_path.empty() ? "/dev/null" : stderr_path;
    const std::string out_path = stdout_path.empty() ? "/dev/null" : stdout_path;
    std::vector<char*> argv{const_cast<char*>(program)};
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("cannot fork");
    if (pid == 0) {  // only async-signal-safe calls until execve
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);  // the parent died before prctl took effect
      const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int error = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (out >= 0) ::dup2(out, STDOUT_FILENO);
      if (error >= 0) ::dup2(error, STDERR_FILENO);
      ::execve(program, argv.data(), envp.data());
      ::_exit(127);
    }
    pid_ = pid;
  }
  ~ServerProcess() {
    if (pid_ > 0 && !exit_status_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  pid_t pid() const { return pid_; }

  // Waits until this process (or one it started) listens on `port` and the port accepts
  // connections, or the process exits, or `timeout` passes. A port that accepts for another
  // process (ctest runs several test programs at once, each handing out ports of its own) does not
  // count: ours then fails to bind it and exits, and the test must not talk to the other server.
  bool wait_until_listening(int port, std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (port_accepts(port) && detail::holds_socket(pid_, detail::listening_socket_inodes(pid_, port))) {
        return true;
      }
      if (exited()) return false;
      std::this_thread::sleep_for(
          std::chrono::milliseconds(10));  // polling a port: there is no event to await
    }
    return false;
  }

  // Sends `signal` and waits (bounded) for the exit; returns the wait status, nullopt on timeout.
  std::optional<int> stop(int signal = SIGTERM,
                          std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    ::kill(pid_, signal);
    return wait_exit(timeout);
  }

  // Waits (bounded) for the exit: a pidfd becomes readable when the process ends, so this is an
  // event, not a polling loop.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    if (exited()) return exit_status_;
    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
    if (pidfd >= 0) {
      pollfd ready{pidfd, POLLIN, 0};
      ::poll(&ready, 1, static_cast<int>(timeout.count()));
      ::close(pidfd);
    }
    exited();
    return exit_status_;
  }

 private:
  bool exited() {
    if (exit_status_) return true;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) exit_status_ = status;
    return exit_status_.has_value();
  }

  pid_t pid_ = 0;
  std::optional<int> exit_status_;
};

// mqd (the program $MQD_PATH names) with exactly `env`.
class MqdProcess : public ServerProcess {
 public:
  explicit MqdProcess(std::map<std::string, std::string> env, std::string stderr_path = "")
      : ServerProcess(mqd_path(), {}, std::move(env), std::move(stderr_path)) {}
  // With command-line arguments and stdout captured too.
  MqdProcess(std::vector<std::string> args, std::map<std::string, std::string> env, std::string stderr_path,
             std::string stdout_path)
      : ServerProcess(mqd_path(), std::move(args), std::move(env), std::move(stderr_path),
                      std::move(stdout_path)) {}

 private:
  static std::string mqd_path() {
    const char* program = std::getenv("MQD_PATH");
    if (program == nullptr) throw std::runtime_error("MQD_PATH must name the mqd program");
    return program;
  }
};

}  // namespace mq::testing

// A real etcd (one member) on 127.0.0.1 with free client and peer ports and its own data directory,
// serving (/health answers true) before the constructor returns, and stopped (SIGTERM, then SIGKILL by
// the process guard) by the destructor. stop() and start() keep the data directory: a restart.
// Without the etcd program (Debian's etcd-server) the test fails, saying what to install.
#pragma once

#include <doctest/doctest.h>

#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "mqd_process.h"
#include "temp_dir.h"

namespace mq::testing {

// Whether etcd's client port `port` answers GET /health with {"health":"true"} (it accepts connections
// before it has a leader, and holds requests until then).
inline bool etcd_healthy(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  timeval timeout{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string answer;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    const std::string request = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size())) {
      char buffer[4096];
      ssize_t n = 0;
      while (answer.size() < 65536 && (n = ::recv(fd, buffer, sizeof buffer, 0)) > 0)
        answer.append(buffer, n);
    }
  }
  ::close(fd);
  return answer.find("\"health\":\"true\"") != std::string::npos;
}

class RunningEtcd {
 public:
  RunningEtcd() : client_port_(free_port()), peer_port_(free_port()) {
    REQUIRE_MESSAGE(std::filesystem::exists(program()),
                    "etcd is not installed at "
                        << program()
                        << ": install Debian's etcd-server (apt-get install etcd-server; "
                           "cmake/test.sh installs it), or name the program in $ETCD_SERVER");
    const std::string client_url = url();
    const std::string peer_url = "http://127.0.0.1:" + std::to_string(peer_port_);
    args_ = {"--name",
             "e0",
             "--data-dir",
             dir_ / "data",
             "--listen-client-urls",
             client_url,
             "--advertise-client-urls",
             client_url,
             "--listen-peer-urls",
             peer_url,
             "--initial-advertise-peer-urls",
             peer_url,
             "--initial-cluster",
             "e0=" + peer_url};
    start();
  }
  ~RunningEtcd() {
    resume();
    if (process_) process_->stop();
  }
  RunningEtcd(const RunningEtcd&) = delete;
  RunningEtcd& operator=(const RunningEtcd&) = delete;

  // Starts etcd (again, on the same ports and data directory) and waits until it serves.
  void start() {
    process_ = std::make_unique<ServerProcess>(program(), args_, std::map<std::string, std::string>{},
                                               dir_ / "stderr.txt");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    bool healthy = false;
    while (!healthy && std::chrono::steady_clock::now() < deadline) {
      if (process_->wait_exit(std::chrono::milliseconds(0))) break;  // it exited
      healthy = etcd_healthy(client_port_);
      if (!healthy)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polling a port: no event to await
    }
    REQUIRE_MESSAGE(healthy, "etcd did not start serving: " << stderr_text());
  }
  // Stops etcd with `signal` and waits for its exit.
  std::optional<int> stop(int signal = SIGTERM) { return process_->stop(signal); }
  // Freezes etcd (SIGSTOP): the kernel still accepts connections and takes in requests, and nothing is
  // answered until resume().
  void pause() {
    ::kill(process_->pid(), SIGSTOP);
    paused_ = true;
  }
  void resume() {
    if (paused_ && process_) ::kill(process_->pid(), SIGCONT);
    paused_ = false;
  }

  int port() const { return client_port_; }
  // The client URL ("http://127.0.0.1:<port>"), an endpoint for EtcdClient.
  std::string url() const { return "http://127.0.0.1:" + std::to_string(client_port_); }
  std::string stderr_text() const {
    std::ifstream in(dir_ / "stderr.txt");
    std::string text(std::istreambuf_iterator<char>(in), {});
    return text.size() > 4000 ? text.substr(text.size() - 4000) : text;  // etcd logs a lot: the end
  }

  // $ETCD_SERVER, else Debian's /usr/bin/etcd.
  static std::string program() {
    const char* path = std::getenv("ETCD_SERVER");
    return path != nullptr && *path != '\0' ? path : "/usr/bin/etcd";
  }

 private:
  TempDir dir_;
  int client_port_;
  int peer_port_;
  std::vector<std::string> args_;
  std::unique_ptr<ServerProcess> process_;
  bool paused_ = false;
};

}  // namespace mq::testing

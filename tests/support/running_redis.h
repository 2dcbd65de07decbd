// A real redis-server on 127.0.0.1 and a free port, with its own directory, listening before the
// constructor returns and stopped (SIGTERM, then SIGKILL by the process guard) by the destructor.
// Durable like mqd's FSYNC=always: appendonly yes, appendfsync always.
#pragma once

#include <doctest/doctest.h>

#include <signal.h>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "mqd_process.h"
#include "temp_dir.h"

namespace mq::testing {

class RunningRedis {
 public:
  // `extra_args` are more redis-server options ("--appendfsync", "no").
  explicit RunningRedis(std::vector<std::string> extra_args = {}) : port_(free_port()) {
    args_ = {"--port",
             std::to_string(port_),
             "--bind",
             "127.0.0.1",
             "--dir",
             dir_.path(),
             "--save",
             "",
             "--appendonly",
             "yes",
             "--appendfsync",
             "always",
             "--protected-mode",
             "no",
             "--daemonize",
             "no",
             "--logfile",
             ""};
    for (auto& a : extra_args) args_.push_back(a);
    start();
  }
  ~RunningRedis() {
    resume();
    if (process_) process_->stop();
  }
  void start() {
    process_ = std::make_unique<ServerProcess>(program(), args_, std::map<std::string, std::string>{},
                                               dir_ / "stderr.txt");
    REQUIRE_MESSAGE(process_->wait_until_listening(port_), "redis-server did not start: " << stderr_text());
  }
  std::optional<int> stop(int signal = SIGTERM) { return process_->stop(signal); }
  // Freezes the server (SIGSTOP): the kernel still accepts connections and takes in commands, and
  // nothing is answered until resume() — a stalled Redis.
  void pause() {
    ::kill(process_->pid(), SIGSTOP);
    paused_ = true;
  }
  void resume() {
    if (paused_ && process_) ::kill(process_->pid(), SIGCONT);
    paused_ = false;
  }
  int port() const { return port_; }
  std::string addr() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string stderr_text() const {
    std::ifstream in(dir_ / "stderr.txt");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  // $REDIS_SERVER, else Debian's /usr/bin/redis-server.
  static std::string program() {
    const char* path = std::getenv("REDIS_SERVER");
    return path != nullptr ? path : "/usr/bin/redis-server";
  }

 private:
  TempDir dir_;
  int port_;
  std::vector<std::string> args_;
  std::unique_ptr<ServerProcess> process_;
  bool paused_ = false;
};

}  // namespace mq::testing

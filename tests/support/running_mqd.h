// A real mqd on 127.0.0.1 with a fresh data directory, listening before the constructor returns.
#pragma once

#include <doctest/doctest.h>

#include <fstream>
#include <map>
#include <memory>
#include <string>

#include "mqd_process.h"
#include "temp_dir.h"

namespace mq::testing {

class RunningMqd {
 public:
  // `env` adds to or overrides the defaults (PORT, DATA_DIR, FSYNC=never, small topics).
  using Env = std::map<std::string, std::string>;
  explicit RunningMqd(Env env = {}, std::string data_dir = "")
      : port_(env.contains("PORT") ? std::stoi(env.at("PORT")) : free_port()),
        data_dir_(data_dir.empty() ? dir_ / "data" : data_dir) {
    env_ = {
        {"PORT", std::to_string(port_)}, {"DATA_DIR", data_dir_}, {"FSYNC", "never"}, {"TOPICS", "events:4"}};
    for (auto& [k, v] : env) env_[k] = v;
    start();
  }
  void start() {
    process_ = std::make_unique<MqdProcess>(env_, dir_ / "stderr.txt");
    REQUIRE_MESSAGE(process_->wait_until_listening(port_), "mqd did not start; stderr: " << stderr_text());
  }
  // SIGTERM (or `signal`) and the wait status.
  std::optional<int> stop(int signal = SIGTERM) { return process_->stop(signal); }
  void restart(int signal = SIGTERM) {
    REQUIRE(stop(signal));
    start();
  }
  int port() const { return port_; }
  pid_t pid() const { return process_->pid(); }
  const std::string& data_dir() const { return data_dir_; }
  std::string stderr_text() const {
    std::ifstream in(dir_ / "stderr.txt");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

 private:
  TempDir dir_;
  int port_;
  std::string data_dir_;
  std::map<std::string, std::string> env_;
  std::unique_ptr<MqdProcess> process_;
};

}  // namespace mq::testing

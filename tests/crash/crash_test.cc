// kill -9 at a random moment: every append the child reported as acknowledged is in the log after
// recovery, with its payload. The path of the child program comes from MQ_CRASH_APPENDER.
#include <doctest/doctest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "mq/mq.h"
#include "store_helpers.h"
#include "temp_dir.h"

extern char** environ;

using namespace mq;
using namespace mq::testing;
using nlohmann::json;

namespace {

struct Acked {
  std::uint64_t offset;
  int thread;
  long seq;
};

// Starts the appender with FSYNC=always on `data_dir`, lets it acknowledge `wanted` messages,
// kills it with SIGKILL and returns everything it reported.
std::vector<Acked> run_and_kill(const std::string& data_dir, std::size_t wanted) {
  const char* program = std::getenv("MQ_CRASH_APPENDER");
  REQUIRE_MESSAGE(program != nullptr, "MQ_CRASH_APPENDER must name the crash_appender program");
  int pipe_fds[2];
  REQUIRE(::pipe(pipe_fds) == 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
  const std::string dir_var = "DATA_DIR=" + data_dir;
  std::vector<std::string> env_strings = {dir_var, "FSYNC=always"};
  std::vector<char*> env;
  for (auto& s : env_strings) env.push_back(s.data());
  env.push_back(nullptr);
  char* argv[] = {const_cast<char*>(program), nullptr};
  pid_t child = 0;
  REQUIRE(posix_spawn(&child, program, &actions, nullptr, argv, env.data()) == 0);
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipe_fds[1]);

  std::vector<Acked> acked;
  std::string pending;
  bool killed = false;
  char buffer[4096];
  while (true) {
    const ssize_t n = ::read(pipe_fds[0], buffer, sizeof buffer);  // blocks until the child reports
    if (n <= 0) break;                                             // the child is gone and the pipe drained
    pending.append(buffer, static_cast<std::size_t>(n));
    for (std::size_t nl; (nl = pending.find('\n')) != std::string::npos; pending.erase(0, nl + 1)) {
      std::istringstream line(pending.substr(0, nl));
      Acked a{};
      line >> a.offset >> a.thread >> a.seq;
      acked.push_back(a);
    }
    if (!killed && acked.size() >= wanted) {
      ::kill(child, SIGKILL);
      killed = true;
    }
  }
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  CHECK(killed);
  CHECK(WIFSIGNALED(status));
  return acked;
}

}  // namespace

TEST_CASE("KilledAppenderLosesNoAcknowledgedMessage") {
  const unsigned seed = std::random_device{}();
  INFO("seed " << seed);
  std::mt19937 random(seed);
  TempDir dir;
  std::size_t total = 0;
  for (int round = 0; round < 3; ++round) {  // each restart recovers and appends on from there
    const std::size_t wanted = 200 + random() % 2000;
    const auto acked = run_and_kill(dir.path(), wanted);
    REQUIRE(acked.size() >= wanted);
    auto store = open_store(dir.path(), FsyncMode::kAlways);
    Partition& p = open_partition(*store, "crash", 0);
    const auto lines = read_all(p);
    for (const Acked& a : acked) {
      REQUIRE(a.offset < lines.size());
      const json payload = json::parse(lines[a.offset])["payload"];
      CHECK(payload["thread"] == a.thread);
      CHECK(payload["seq"] == a.seq);
    }
    total += acked.size();
    MESSAGE("round " << round << ": " << acked.size() << " acknowledged, " << lines.size() << " recovered");
  }
  CHECK(total > 0);
}

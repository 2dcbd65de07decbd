// kill -9 at a random moment. Appends: every append the child reported as acknowledged is in the
// log after recovery, with its payload. Acks: no message the child reported as acknowledged is
// delivered again after the restart, and every message it left in flight is. The child programs
// (crash_appender, crash_consumer) are in the directory MQ_CRASH_CHILDREN names.
#include <doctest/doctest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
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

// Starts the child program `name` with FSYNC=always on `data_dir`, reads its report lines until
// `wanted` have come, kills it with SIGKILL and returns every line it reported.
std::vector<std::string> run_and_kill(const std::string& name, const std::string& data_dir,
                                      std::size_t wanted) {
  const char* children = std::getenv("MQ_CRASH_CHILDREN");
  REQUIRE_MESSAGE(children != nullptr,
                  "MQ_CRASH_CHILDREN must name the directory of the crash test's children");
  const std::string path = std::string(children) + "/" + name;
  const char* program = path.c_str();
  int pipe_fds[2];
  REQUIRE(::pipe(pipe_fds) == 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
  const std::string dir_var = "DATA_DIR=" + data_dir;
  std::vector<std::string> env_strings = {dir_var, "FSYNC=always", "TOPICS=crash:1"};
  std::vector<char*> env;
  for (auto& s : env_strings) env.push_back(s.data());
  env.push_back(nullptr);
  char* argv[] = {const_cast<char*>(program), nullptr};
  pid_t child = 0;
  REQUIRE(posix_spawn(&child, program, &actions, nullptr, argv, env.data()) == 0);
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipe_fds[1]);

  std::vector<std::string> reported;
  std::string pending;
  bool killed = false;
  char buffer[4096];
  while (true) {
    const ssize_t n = ::read(pipe_fds[0], buffer, sizeof buffer);  // blocks until the child reports
    if (n <= 0) break;                                             // the child is gone and the pipe drained
    pending.append(buffer, static_cast<std::size_t>(n));
    for (std::size_t nl; (nl = pending.find('\n')) != std::string::npos; pending.erase(0, nl + 1)) {
      reported.push_back(pending.substr(0, nl));
    }
    if (!killed && reported.size() >= wanted) {
      ::kill(child, SIGKILL);
      killed = true;
    }
  }
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  CHECK(killed);
  CHECK(WIFSIGNALED(status));
  return reported;
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
    std::vector<Acked> acked;
    for (const auto& line : run_and_kill("crash_appender", dir.path(), wanted)) {
      std::istringstream fields(line);
      Acked a{};
      fields >> a.offset >> a.thread >> a.seq;
      acked.push_back(a);
    }
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

TEST_CASE("KilledConsumerLosesNoAcknowledgementAndKeepsNoMessageInFlight") {
  const unsigned seed = std::random_device{}();
  INFO("seed " << seed);
  std::mt19937 random(seed);
  TempDir dir;
  Config config;
  config.store.data_dir = dir.path();
  config.store.fsync = FsyncMode::kAlways;
  config.topics = {{"crash", 1}};
  constexpr int kMessages = 20000;
  {
    auto broker = Broker::open(config);
    REQUIRE(broker.ok());
    std::vector<Message> batch(100, message("{\"work\":1}"));
    for (int i = 0; i < kMessages / 100; ++i) REQUIRE((*broker)->produce("crash", batch, 0).ok());
  }
  std::set<std::uint64_t> acked;
  std::set<std::uint64_t> skipped;
  for (int round = 0; round < 3; ++round) {
    const std::size_t wanted = 100 + random() % 1500;
    for (const auto& line : run_and_kill("crash_consumer", dir.path(), wanted)) {
      std::istringstream fields(line);
      char kind = 0;
      std::uint64_t offset = 0;
      fields >> kind >> offset;
      (kind == 'A' ? acked : skipped).insert(offset);
    }
  }
  auto broker = Broker::open(config);
  REQUIRE(broker.ok());
  SubscribeOptions options;
  options.max_inflight = kMessages;
  auto sub = (*broker)->subscribe("crash", 0, "g", options);
  REQUIRE(sub.ok());
  std::set<std::uint64_t> delivered;
  while (true) {
    auto got = (*sub)->next(kMessages, std::chrono::milliseconds(0));
    REQUIRE(got.ok());
    if (got->empty()) break;
    for (const auto& d : *got) delivered.insert(d.offset);
  }
  for (std::uint64_t offset : acked) CHECK_FALSE(delivered.contains(offset));  // acks survived kill -9
  for (std::uint64_t offset : skipped) CHECK(delivered.contains(offset));      // in-flight came back
  CHECK(acked.size() + delivered.size() <= kMessages);
  MESSAGE(acked.size() << " acknowledged before the kills, " << skipped.size() << " left in flight, "
                       << delivered.size() << " delivered after the restart");
}

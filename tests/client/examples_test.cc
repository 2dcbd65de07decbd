// The integration templates in examples/, run as their users would run them: the in-process example
// alone, the producer and consumer services against real mqd brokers and a real redis-server,
// configured only by the environment.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "queue_backends.h"

using namespace mq;
using namespace mq::testing;
using namespace std::chrono_literals;

namespace {

struct ProgramRun {
  int exit_code = -1;
  std::vector<std::string> lines;  // stdout
  std::string errors;              // stderr
};

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

ProgramRun run_program(const std::string& program, std::vector<std::string> args,
                       std::map<std::string, std::string> env) {
  TempDir dir;
  ServerProcess process(program, std::move(args), std::move(env), dir / "stderr", dir / "stdout");
  auto status = process.wait_exit(60s);
  REQUIRE_MESSAGE(status.has_value(), program << " did not finish in 60 s");
  ProgramRun run;
  run.exit_code = WIFEXITED(*status) ? WEXITSTATUS(*status) : 128 + WTERMSIG(*status);
  std::istringstream out(read_file(dir / "stdout"));
  for (std::string line; std::getline(out, line);) run.lines.push_back(line);
  run.errors = read_file(dir / "stderr");
  return run;
}

// The environment of the services for one backend.
struct HttpDeployment {
  HttpDeployment()
      : port0(free_port()),
        port1(free_port()),
        addrs("http://127.0.0.1:" + std::to_string(port0) + ",http://127.0.0.1:" + std::to_string(port1)),
        b0({{"PORT", std::to_string(port0)},
            {"BROKER_INDEX", "0"},
            {"BROKER_COUNT", "2"},
            {"BROKER_ADDRS", addrs}}),
        b1({{"PORT", std::to_string(port1)},
            {"BROKER_INDEX", "1"},
            {"BROKER_COUNT", "2"},
            {"BROKER_ADDRS", addrs}}) {}
  std::map<std::string, std::string> env() const {
    return {{"USE_HTTP_QUEUE", "true"}, {"MSG_QUEUE_ADDR", "http://127.0.0.1:" + std::to_string(port0)}};
  }
  int port0, port1;
  std::string addrs;
  RunningMqd b0, b1;
};

struct RedisDeployment {
  std::map<std::string, std::string> env() const {
    return {{"REDIS_ADDR", redis.addr()}, {"MSG_QUEUE_PARTITIONS", "4"}};  // USE_HTTP_QUEUE unset: Redis
  }
  RunningRedis redis;
};

}  // namespace

TEST_CASE("TheInProcessExampleHandlesEveryOrder") {
  TempDir dir;
  auto run = run_program(MQ_IN_PROCESS_EXAMPLE, {dir / "data", "12"}, {});
  CHECK_MESSAGE(run.exit_code == 0, run.errors);
  REQUIRE_FALSE(run.lines.empty());
  CHECK(run.lines.back() == "handled 12 orders");
  CHECK(run.lines.size() == 13);
}

TEST_CASE_TEMPLATE("TheServiceTemplatesTalkThroughTheQueue", D, HttpDeployment, RedisDeployment) {
  D deployment;
  auto env = deployment.env();
  env["MSG_QUEUE_TOPIC"] = "events";
  for (const char* producer : {"producer-a", "producer-b"}) {
    auto producer_env = env;
    producer_env["MSG_QUEUE_PRODUCER_NAME"] = producer;
    auto run = run_program(MQ_PRODUCER_SERVICE, {"15"}, producer_env);
    CHECK_MESSAGE(run.exit_code == 0, run.errors);
    CHECK(run.lines.size() == 15);
  }
  // Two groups: each gets all 30 events, and each producer's events in the order they were sent.
  for (const char* group : {"workers", "audit"}) {
    CAPTURE(group);
    auto consumer_env = env;
    consumer_env["MSG_QUEUE_GROUP"] = group;
    consumer_env["MSG_QUEUE_PRODUCER_NAME"] = std::string(group) + "-1";
    auto run = run_program(MQ_CONSUMER_SERVICE, {"30"}, consumer_env);
    CHECK_MESSAGE(run.exit_code == 0, run.errors);
    REQUIRE(run.lines.size() == 30);
    std::map<std::string, std::vector<int>> seqs;
    for (const auto& line : run.lines) {
      const nlohmann::json json = nlohmann::json::parse(line.substr(line.find('{')));
      seqs[json["producer"].get<std::string>()].push_back(json["seq"].get<int>());
      CHECK(line.find(" delivery 1 ") != std::string::npos);
    }
    for (const auto& entry : seqs) {
      const auto& producer = entry.first;  // not a structured binding: CAPTURE captures it
      const auto& list = entry.second;
      CAPTURE(producer);
      std::vector<int> expected(15);
      for (int i = 0; i < 15; ++i) expected[i] = i;
      CHECK(list == expected);
    }
    CHECK(seqs.size() == 2);
  }
}

TEST_CASE("AServiceWithATypoInUseHttpQueueStopsAndNamesTheVariable") {
  auto run = run_program(MQ_CONSUMER_SERVICE, {"1"}, {{"USE_HTTP_QUEUE", "ture"}});
  CHECK(run.exit_code == 2);
  CHECK(run.errors.find("USE_HTTP_QUEUE") != std::string::npos);
  auto producer = run_program(MQ_PRODUCER_SERVICE, {"1"}, {{"REDIS_ADDR", "nohost:0"}});
  CHECK(producer.exit_code == 2);
  CHECK(producer.errors.find("REDIS_ADDR") != std::string::npos);
}

TEST_CASE("TheConsumerServiceWaitsForMqdToComeUpAndSaysWhy") {
  TempDir dir;
  const int port = free_port();
  // Its stderr is a pipe, so that the test can await the first "retrying" line as an event.
  const std::string errors_path = dir / "stderr";
  REQUIRE(::mkfifo(errors_path.c_str(), 0600) == 0);
  ServerProcess service(
      MQ_CONSUMER_SERVICE, {"1"},
      {{"USE_HTTP_QUEUE", "true"}, {"MSG_QUEUE_ADDR", url_of(port)}, {"MSG_QUEUE_TOPIC", "events"}},
      errors_path, dir / "stdout");
  const int errors_fd = ::open(errors_path.c_str(), O_RDONLY);  // returns once the service opened it
  REQUIRE(errors_fd >= 0);
  std::string errors;
  char buffer[4096];
  while (errors.find("retrying") == std::string::npos) {
    const ssize_t n = ::read(errors_fd, buffer, sizeof buffer);
    if (n <= 0) break;  // it exited instead of waiting
    errors.append(buffer, static_cast<std::size_t>(n));
  }
  REQUIRE_MESSAGE(errors.find("retrying") != std::string::npos, errors);
  CHECK(errors.find("unavailable") != std::string::npos);  // the full error: code, broker, reason
  CHECK(errors.find(url_of(port)) != std::string::npos);
  std::thread drain([&] {  // keeps its later lines from filling the pipe
    while (::read(errors_fd, buffer, sizeof buffer) > 0) {
    }
  });

  RunningMqd mqd(RunningMqd::Env{{"PORT", std::to_string(port)}});
  HttpQueueOptions options;
  options.addrs = {url_of(port)};
  auto queue = Queue::http(options);
  REQUIRE(queue.ok());
  produce_ok(**queue, "{\"hello\":1}");
  auto status = service.wait_exit(30s);
  if (!status) service.stop(SIGKILL);  // so that the pipe ends and `drain` with it
  drain.join();
  ::close(errors_fd);
  REQUIRE(status.has_value());
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
  CHECK(read_file(dir / "stdout").find("{\"hello\":1}") != std::string::npos);
}

// mqctl, the command-line tool (mqd/mqctl), run as a program (this tree's, or $MQCTL_PATH) against two
// real mqd brokers that split the topics' partitions: what it prints (text and --json), what it
// changes on the brokers, and how it fails (exit status 1 with a message, 2 for usage errors).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "mq/topic.h"  // partition_for_key
#include "running_mqd.h"
#include "temp_dir.h"

using namespace mq::testing;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

std::string url_of(int port) { return "http://127.0.0.1:" + std::to_string(port); }

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// What a finished mqctl run left behind.
struct Outcome {
  int exit_code = -1;  // -1: killed by a signal or did not finish in time
  std::string out;
  std::string err;
};

// One mqctl process: `args`, `input` on its stdin, exactly `env` as environment; stdout and
// stderr go to files read when it has exited.
class Mqctl {
 public:
  Mqctl(const std::vector<std::string>& args, const std::string& input,
        const std::map<std::string, std::string>& env) {
    // $MQCTL_PATH, when set, runs another tree's mqctl (as MQD_PATH does for mqd).
    const char* program = std::getenv("MQCTL_PATH");
    if (program == nullptr) program = MQCTL_PROGRAM;
    std::ofstream(dir_ / "stdin") << input;
    std::vector<std::string> argv_strings{program};
    argv_strings.insert(argv_strings.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_strings) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env_strings;
    for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
    std::vector<char*> envp;
    for (auto& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);
    const std::string in_path = dir_ / "stdin", out_path = dir_ / "stdout", err_path = dir_ / "stderr";
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {  // only async-signal-safe calls until execve
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      const int in = ::open(in_path.c_str(), O_RDONLY);
      const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (in < 0 || out < 0 || err < 0) ::_exit(127);
      ::dup2(in, STDIN_FILENO);
      ::dup2(out, STDOUT_FILENO);
      ::dup2(err, STDERR_FILENO);
      ::execve(argv[0], argv.data(), envp.data());
      ::_exit(127);
    }
  }
  ~Mqctl() {
    if (!reaped_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  Mqctl(const Mqctl&) = delete;
  Mqctl& operator=(const Mqctl&) = delete;

  pid_t pid() const { return pid_; }

  // Waits up to `timeout` for the exit (a pidfd turns readable: an event, not a polling loop);
  // nullopt when it is still running.
  std::optional<Outcome> wait(std::chrono::milliseconds timeout) {
    if (!reaped_) {
      const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
      REQUIRE(pidfd >= 0);
      pollfd ready{pidfd, POLLIN, 0};
      ::poll(&ready, 1, static_cast<int>(timeout.count()));
      ::close(pidfd);
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) != pid_) return std::nullopt;
      reaped_ = true;
      status_ = status;
    }
    Outcome outcome;
    outcome.exit_code = WIFEXITED(status_) ? WEXITSTATUS(status_) : -1;
    outcome.out = read_file(dir_ / "stdout");
    outcome.err = read_file(dir_ / "stderr");
    return outcome;
  }

 private:
  TempDir dir_;
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
};

// Two brokers on free ports, each owning half of every topic's partitions (p % 2), both knowing
// both addresses; mqctl is given only broker 1's (MSG_QUEUE_ADDR), like a service would be.
struct TwoBrokers {
  explicit TwoBrokers(RunningMqd::Env extra = {}) {
    const int ports[2] = {free_port(), free_port()};
    const std::string addrs = url_of(ports[0]) + "," + url_of(ports[1]);
    for (int i = 0; i < 2; ++i) {
      RunningMqd::Env env{{"PORT", std::to_string(ports[i])},
                          {"BROKER_INDEX", std::to_string(i)},
                          {"BROKER_COUNT", "2"},
                          {"BROKER_ADDRS", addrs},
                          {"TOPICS", "events:4,orders:2"}};
      for (const auto& [k, v] : extra) env[k] = v;
      brokers.push_back(std::make_unique<RunningMqd>(env));
    }
  }

  std::string url(int broker) const { return url_of(brokers[broker]->port()); }

  // Runs mqctl to the end (bounded); `env` adds to MSG_QUEUE_ADDR.
  Outcome run(const std::vector<std::string>& args, const std::string& input = "",
              std::map<std::string, std::string> env = {}) const {
    Mqctl mqctl(args, input, with_addr(std::move(env)));
    auto outcome = mqctl.wait(30s);
    REQUIRE_MESSAGE(outcome.has_value(), "mqctl did not finish within 30 s");
    return *outcome;
  }
  // The same, expecting success; the standard output.
  std::string ok(const std::vector<std::string>& args, const std::string& input = "") const {
    const Outcome outcome = run(args, input);
    INFO("stderr: " << outcome.err);
    REQUIRE(outcome.exit_code == 0);
    return outcome.out;
  }
  json ok_json(const std::vector<std::string>& args) const {
    const std::string out = ok(args);
    INFO("stdout: " << out);
    REQUIRE(json::accept(out));
    return json::parse(out);
  }
  std::unique_ptr<Mqctl> start(const std::vector<std::string>& args) const {
    return std::make_unique<Mqctl>(args, "", with_addr({}));
  }

  // Group `group`'s stats on each partition of `topic` (absent where it has none).
  std::map<std::uint32_t, json> group_stats(const std::string& topic, const std::string& group) const {
    std::map<std::uint32_t, json> out;
    const json stats = ok_json({"stats", topic, "--json"});
    for (const auto& p : stats["topics"][0]["partitions"]) {
      for (const auto& g : p["groups"]) {
        if (g["group"] == group) out[p["partition"].get<std::uint32_t>()] = g;
      }
    }
    return out;
  }

  std::vector<std::unique_ptr<RunningMqd>> brokers;

 private:
  std::map<std::string, std::string> with_addr(std::map<std::string, std::string> env) const {
    env.emplace("MSG_QUEUE_ADDR", url(1));
    return env;
  }
};

std::vector<json> json_lines(const std::string& text) {
  std::vector<json> out;
  for (const std::string& line : lines_of(text)) {
    INFO("line: " << line);
    REQUIRE(json::accept(line));
    out.push_back(json::parse(line));
  }
  return out;
}

}  // namespace

TEST_CASE("MqctlTopicsShowsPartitionsMessagesAndWhichBrokerOwnsWhat") {
  TwoBrokers cluster;
  cluster.ok({"produce", "events", "-p", "1"}, "1\n2\n3\n");
  cluster.ok({"produce", "events", "-p", "2"}, "4\n");

  const std::vector<std::string> text = lines_of(cluster.ok({"topics"}));
  REQUIRE(text.size() == 7);  // brokers: header + 2, blank, topics: header + 2
  CHECK(text[0].starts_with("BROKER  URL"));
  CHECK(text[1] == "b0      " + cluster.url(0));
  CHECK(text[2] == "b1      " + cluster.url(1));
  CHECK(text[4].starts_with("TOPIC   PARTITIONS  MESSAGES  SIZE"));
  CHECK(text[5].starts_with("events           4         4"));
  CHECK(text[5].ends_with("b0:0,2 b1:1,3"));
  CHECK(text[6].ends_with("b0:0 b1:1"));

  const json topics = cluster.ok_json({"topics", "--json"});
  CHECK(topics["brokers"] == json::parse("[{\"broker\":0,\"url\":\"" + cluster.url(0) +
                                         "\"},{\"broker\":1,\"url\":\"" + cluster.url(1) + "\"}]"));
  REQUIRE(topics["topics"].size() == 2);
  const json& events = topics["topics"][0];
  CHECK(events["name"] == "events");
  CHECK(events["partitions"] == 4);
  CHECK(events["messages"] == 4);
  CHECK(events["log_bytes"].get<std::uint64_t>() > 0);
  for (std::uint32_t p = 0; p < 4; ++p) {
    CHECK(events["owners"][p]["partition"] == p);
    CHECK(events["owners"][p]["broker"] == p % 2);
    CHECK(events["owners"][p]["url"] == cluster.url(static_cast<int>(p % 2)));
  }
}

TEST_CASE("MqctlProduceSendsEachLineWithKeyAndHeadersAndConsumePrintsAndAcksThem") {
  TwoBrokers cluster;
  const std::string summary =
      cluster.ok({"produce", "events", "--key", "user-7", "--header", "source=cli", "-H", "trace=t1"},
                 "{\"n\":1}\n\n{\"n\": 2, \"big\": 123456789012345678901234567890}\n\"three\"\n");
  const std::uint32_t partition = mq::partition_for_key("user-7", 4);
  CHECK(
      summary.starts_with("produced 3 messages to events (partition " + std::to_string(partition) + ") in "));

  const auto messages = json_lines(cluster.ok({"consume", "events", "--group", "billing", "-n", "3"}));
  REQUIRE(messages.size() == 3);
  const char* payloads[] = {R"({"n":1})", R"({"n":2,"big":123456789012345678901234567890})", R"("three")"};
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(messages[i]["topic"] == "events");
    CHECK(messages[i]["partition"] == partition);
    CHECK(messages[i]["offset"] == i);
    CHECK(messages[i]["key"] == "user-7");
    CHECK(messages[i]["delivery"] == 1);
    CHECK(messages[i]["headers"] == json::parse(R"({"source":"cli","trace":"t1"})"));
    CHECK(messages[i]["payload"].dump() == json::parse(payloads[i]).dump());
  }
  // The payload is printed as it was stored, digits and all (a double would round the big one).
  CHECK(lines_of(cluster.ok({"tail", "events", "--from-start", "-n", "2", "--payload-only"}))[1] ==
        payloads[1]);

  // Acknowledged: the group is at the end of the partition, and nothing comes again.
  const auto billing = cluster.group_stats("events", "billing");
  REQUIRE(billing.contains(partition));
  CHECK(billing.at(partition)["committed_offset"] == 3);
  CHECK(billing.at(partition)["lag"] == 0);
  CHECK(billing.at(partition)["inflight"] == 0);
  CHECK(cluster.ok({"consume", "events", "-g", "billing", "--wait-ms", "300"}).empty());

  // Without a key, batches go to partitions on both brokers; --raw sends lines as strings.
  std::string input;
  for (int i = 0; i < 40; ++i) input += "line " + std::to_string(i) + "\n";
  const json produced = cluster.ok_json({"produce", "orders", "--raw", "--batch", "2", "--json"});
  CHECK(produced["messages"] == 0);  // empty stdin
  const json spread =
      json::parse(cluster.ok({"produce", "orders", "--raw", "--batch", "2", "--json"}, input));
  CHECK(spread["messages"] == 40);
  CHECK(spread["partitions"] == json::parse("[0,1]"));
  const auto strings =
      json_lines(cluster.ok({"consume", "orders", "-g", "g", "-n", "40", "--payload-only", "--no-ack"}));
  REQUIRE(strings.size() == 40);
  CHECK(strings[0].get<std::string>().starts_with("line "));
  // --no-ack: nothing of it was acknowledged.
  for (const auto& [p, g] : cluster.group_stats("orders", "g")) CHECK(g["acked"] == 0);
}

TEST_CASE("MqctlProduceStopsAtABadLineNamingItAndSayingHowManyWereSent") {
  TwoBrokers cluster;
  const Outcome bad = cluster.run({"produce", "events", "-p", "0", "--batch", "10"}, "1\n2\n{oops\n4\n");
  CHECK(bad.exit_code == 1);
  CHECK(bad.out.empty());
  CHECK(bad.err.find("line 3 is not valid JSON") != std::string::npos);
  CHECK(bad.err.find("2 messages sent before line 3, none after") != std::string::npos);
  const json stats = cluster.ok_json({"stats", "events", "--json"});
  CHECK(stats["topics"][0]["partitions"][0]["next_offset"] == 2);
}

TEST_CASE("MqctlStatsPrintsAlignedTablesAndJson") {
  TwoBrokers cluster;
  cluster.ok({"produce", "events", "-p", "3"}, "1\n2\n3\n4\n5\n");
  // The group on every partition first: the consume below may stop at its 5th message before it has
  // opened some other partition's stream, which would leave that partition without the group (its
  // row missing from the table, seen once in CI).
  cluster.ok({"seek", "events", "-g", "audit", "--earliest"});
  cluster.ok({"consume", "events", "-g", "audit", "-n", "5"});

  const std::vector<std::string> text = lines_of(cluster.ok({"stats", "events"}));
  REQUIRE(text.size() == 12);  // title, partitions (header + 4 rows), blank, groups (header + 4 rows)
  CHECK(text[0] == "events (4 partitions)");
  CHECK(text[1] == "PARTITION  NEXT_OFFSET  LOG_START  MESSAGES  SIZE  SEGMENTS");
  // Right-aligned numbers: every line of the partitions table is as long as its header.
  for (int i = 2; i <= 5; ++i) CHECK(text[i].size() == text[1].size());
  CHECK(text[5].starts_with("        3            5          0         5"));
  CHECK(text[7].starts_with("GROUP  PARTITION  COMMITTED  IN_FLIGHT  LAG  DELAYED  ORDERING"));
  CHECK(text[11].starts_with("audit          3          5          0    0        0  none"));

  const json stats = cluster.ok_json({"stats", "--json"});
  REQUIRE(stats["topics"].size() == 2);  // events and orders, every partition from both brokers
  const json& partitions = stats["topics"][0]["partitions"];
  REQUIRE(partitions.size() == 4);
  CHECK(partitions[3]["next_offset"] == 5);
  CHECK(partitions[3]["log_start_offset"] == 0);
  CHECK(partitions[3]["segments"] == 1);
  CHECK(partitions[3]["groups"][0]["group"] == "audit");
  CHECK(partitions[3]["groups"][0]["committed_offset"] == 5);
  CHECK(partitions[3]["groups"][0]["ordering"] == "none");
}

TEST_CASE("MqctlTailPrintsOnlyNewMessagesAndCreatesNoGroup") {
  TwoBrokers cluster;
  cluster.ok({"produce", "events", "-p", "0"}, "\"old-0\"\n");
  cluster.ok({"produce", "events", "-p", "1"}, "\"old-1\"\n");

  // tail takes each partition's end when it starts; messages produced until it prints one show
  // that it waits for new ones only (it exits after -n 1).
  auto tail = cluster.start({"tail", "events", "-n", "1", "--payload-only", "--poll-ms", "20"});
  std::optional<Outcome> done;
  for (int i = 0; i < 100 && !done; ++i) {
    cluster.ok({"produce", "events", "-p", std::to_string(i % 4)}, "\"new-" + std::to_string(i) + "\"\n");
    done = tail->wait(100ms);
  }
  REQUIRE(done.has_value());
  CHECK(done->exit_code == 0);
  CHECK(done->out.starts_with("\"new-"));

  // --from-start reads what is stored; --partition limits it to one partition.
  const auto all = json_lines(cluster.ok({"tail", "events", "-p", "1", "--from-start", "-n", "1"}));
  REQUIRE(all.size() == 1);
  CHECK(all[0]["payload"] == "old-1");
  CHECK(all[0]["partition"] == 1);
  CHECK_FALSE(all[0].contains("delivery"));  // read, not delivered
  // --wait-ms ends it when nothing more comes.
  CHECK(lines_of(cluster.ok({"tail", "events", "-p", "0", "--from-start", "--wait-ms", "200"}))[0].find(
            "old-0") != std::string::npos);
  const json stats = cluster.ok_json({"stats", "events", "--json"});
  for (const auto& p : stats["topics"][0]["partitions"]) CHECK(p["groups"].empty());
}

TEST_CASE("MqctlConsumeFollowWaitsForNewMessagesAndCtrlCEndsItAfterAcking") {
  TwoBrokers cluster;
  // --follow outlives --wait-ms: still running well after it, until its one message (-n 1) comes.
  auto follower = cluster.start({"consume", "orders", "-g", "f", "--follow", "-n", "1", "--wait-ms", "50"});
  CHECK_FALSE(follower->wait(500ms).has_value());
  cluster.ok({"produce", "orders", "-p", "1"}, "\"late\"\n");
  auto done = follower->wait(10s);
  REQUIRE(done.has_value());
  CHECK(done->exit_code == 0);
  CHECK(json_lines(done->out)[0]["payload"] == "late");

  // Ctrl-C (SIGINT) ends consume --follow and tail with status 0, and what was printed is acknowledged.
  auto consumer = cluster.start({"consume", "orders", "-g", "g", "--follow"});
  auto tail = cluster.start({"tail", "orders"});
  cluster.ok({"produce", "orders", "-p", "0"}, "\"one\"\n\"two\"\n");
  // The consumer prints the two messages (and acknowledges them) on its own time: wait for the acks.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (cluster.group_stats("orders", "g")[0]["committed_offset"] != 2 &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(20ms);  // polling the broker's state: no event reaches the test
  for (Mqctl* process : {consumer.get(), tail.get()}) {
    ::kill(process->pid(), SIGINT);
    auto stopped = process->wait(10s);
    REQUIRE(stopped.has_value());
    CHECK(stopped->exit_code == 0);
    if (process == consumer.get()) CHECK(json_lines(stopped->out).size() == 3);  // "late" too: a new group
  }
  const auto g = cluster.group_stats("orders", "g");
  CHECK(g.at(0)["committed_offset"] == 2);
  CHECK(g.at(0)["inflight"] == 0);
}

TEST_CASE("MqctlSeekMovesAGroupAndStatsAndConsumeShowIt") {
  TwoBrokers cluster;
  cluster.ok({"produce", "events", "-p", "1"}, "0\n1\n2\n3\n");
  CHECK(json_lines(cluster.ok({"consume", "events", "-g", "s", "-p", "1", "-n", "4"})).size() == 4);
  CHECK(cluster.group_stats("events", "s").at(1)["committed_offset"] == 4);

  const std::vector<std::string> text =
      lines_of(cluster.ok({"seek", "events", "-g", "s", "--partition", "1", "--offset", "1"}));
  REQUIRE(text.size() == 3);
  CHECK(text[0] == "group s of events now starts at:");
  CHECK(text[2] == "        1         1");
  const json moved = cluster.group_stats("events", "s").at(1);
  CHECK(moved["committed_offset"] == 1);
  CHECK(moved["lag"] == 3);

  const auto again = json_lines(cluster.ok({"consume", "events", "-g", "s", "-n", "3"}));
  REQUIRE(again.size() == 3);
  CHECK(again[0]["offset"] == 1);
  CHECK(again[2]["offset"] == 3);

  // Every partition at once, by position; and by time (the future: the partition's end).
  const json earliest = cluster.ok_json({"seek", "events", "-g", "s", "--earliest", "--json"});
  REQUIRE(earliest["partitions"].size() == 4);
  CHECK(earliest["partitions"][1] == json::parse(R"({"partition":1,"committed_offset":0})"));
  CHECK(cluster.group_stats("events", "s").at(1)["lag"] == 4);
  const json later =
      cluster.ok_json({"seek", "events", "-g", "s", "-p", "1", "--timestamp", "99999999999999", "--json"});
  CHECK(later["partitions"][0]["committed_offset"] == 4);
  CHECK(cluster.ok_json({"seek", "events", "-g", "s", "-p", "1", "--latest",
                         "--json"})["partitions"][0]["committed_offset"] == 4);
}

TEST_CASE("MqctlRedriveSendsADeadLetterBackToItsTopicOnce") {
  TwoBrokers cluster(RunningMqd::Env{{"MAX_DELIVERIES", "1"}});
  cluster.ok({"produce", "events", "-p", "1", "--key", "k"}, "{\"job\":\"dead\"}\n");
  // Printed but not acknowledged: when mqctl exits the message goes back to the group, and with
  // MAX_DELIVERIES=1 to the dead-letter topic.
  const auto consumed =
      json_lines(cluster.ok({"consume", "events", "-g", "workers", "-p", "1", "-n", "1", "--no-ack"}));
  REQUIRE(consumed.size() == 1);
  // Dead-lettering follows the stream's end on the broker: wait for it (bounded).
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  std::uint64_t dead = 0;
  while (dead == 0 && std::chrono::steady_clock::now() < deadline) {
    const Outcome stats = cluster.run({"stats", "events-dlq", "--json"});
    if (stats.exit_code == 0) {
      const json parsed = json::parse(stats.out);
      for (const auto& p : parsed["topics"][0]["partitions"]) dead += p["messages"].get<std::uint64_t>();
    }
    if (dead == 0)
      std::this_thread::sleep_for(50ms);  // polling the broker's state: no event reaches the test
  }
  REQUIRE(dead == 1);
  const auto letters = json_lines(cluster.ok({"tail", "events-dlq", "--from-start", "-n", "1"}));
  REQUIRE(letters.size() == 1);
  CHECK(letters[0]["partition"] == 1);
  CHECK(letters[0]["payload"] == json::parse(R"({"job":"dead"})"));

  CHECK(cluster.ok({"redrive", "events-dlq"}) ==
        "redriven 1 dead letter from events-dlq back to events (partition 1: 1)\n");
  // Back in its source partition, at a new offset, with its key.
  const auto back = json_lines(cluster.ok({"tail", "events", "-p", "1", "--from-start", "-n", "2"}));
  REQUIRE(back.size() == 2);
  CHECK(back[1]["offset"] == 1);
  CHECK(back[1]["key"] == "k");
  CHECK(back[1]["payload"] == json::parse(R"({"job":"dead"})"));
  // At most once.
  const json again = cluster.ok_json({"redrive", "events-dlq", "--json"});
  CHECK(again["redriven"] == 0);
  CHECK(again["partitions"].size() == 4);
  // A topic that never dead-lettered anything has nothing to redrive.
  CHECK(cluster.ok({"redrive", "orders-dlq", "--limit", "5"}) ==
        "redriven 0 dead letters from orders-dlq back to orders\n");
}

TEST_CASE("MqctlDeleteGroupRemovesItFromEveryBroker") {
  TwoBrokers cluster;
  for (int p = 0; p < 4; ++p) cluster.ok({"produce", "events", "-p", std::to_string(p)}, "{}\n");
  CHECK(json_lines(cluster.ok({"consume", "events", "-g", "doomed", "-n", "4"})).size() == 4);
  CHECK(cluster.group_stats("events", "doomed").size() == 4);  // on both brokers' partitions

  CHECK(cluster.ok({"delete-group", "events", "--group", "doomed"}) == "deleted group doomed of events\n");
  CHECK(cluster.group_stats("events", "doomed").empty());
  CHECK(cluster.ok({"delete-group", "events", "-g", "doomed"}) ==
        "group doomed of events did not exist: nothing deleted\n");
  CHECK(cluster.ok_json({"delete-group", "events", "-g", "doomed", "--json"})["deleted"] == false);
  // A new group of that name starts over.
  CHECK(json_lines(cluster.ok({"consume", "events", "-g", "doomed", "-n", "4"})).size() == 4);
}

TEST_CASE("MqctlFailsWithStatus1AndAMessageAndUsageErrorsWith2") {
  TwoBrokers cluster;
  auto check_failure = [&](const std::vector<std::string>& args, int code, const std::string& words,
                           const std::string& input = "") {
    const Outcome outcome = cluster.run(args, input);
    std::string command_line;
    for (const std::string& a : args) command_line += " " + a;
    INFO("mqctl" << command_line << "\nstderr: " << outcome.err);
    CHECK(outcome.exit_code == code);
    CHECK(outcome.err.find(words) != std::string::npos);
  };
  check_failure({"stats", "nope"}, 1, "mqctl stats: reading the statistics of nope: not_found");
  check_failure({"produce", "nope"}, 1, "mqctl produce: producing to nope: not_found", "1\n");
  check_failure({"consume", "nope", "-g", "g"}, 1, "mqctl consume: consuming nope: not_found");
  check_failure({"tail", "events", "-p", "9"}, 1, "partition 9");
  check_failure({"seek", "events", "-g", "g", "-p", "9", "--earliest"}, 1, "does not exist");
  check_failure({"redrive", "events"}, 2, "not a dead-letter topic");
  check_failure({"topics", "--addr", "http://127.0.0.1:1"}, 1, "cannot be reached");
  check_failure({"topics", "--addr", "ftp://x"}, 2, "ftp://x");
  check_failure({}, 2, "A subcommand is required");
  check_failure({"topics", "--bogus"}, 2, "--bogus");
  check_failure({"consume", "events"}, 2, "--group is required");
  check_failure({"seek", "events", "-g", "g"}, 2, "Exactly 1 option");
  check_failure({"seek", "events", "-g", "g", "--earliest", "--offset", "3"}, 2, "Exactly 1 option");
  check_failure({"consume", "events", "-g", "g", "--from", "middle"}, 2, "--from");
  check_failure({"produce", "events", "-H", "novalue"}, 2, "name=value");
  check_failure({"produce", "events", "-H", "bad name=1"}, 2, "headers", "1\n");
  CHECK(cluster.run({"--help"}).exit_code == 0);
  CHECK(cluster.run({"stats", "--help"}).out.find("--json") != std::string::npos);
}

TEST_CASE("MqctlSendsTheTokenFromTheEnvironmentOrItsFlag") {
  RunningMqd broker(RunningMqd::Env{{"AUTH_TOKEN", "s3cret"}});
  auto run = [&](const std::vector<std::string>& args, std::map<std::string, std::string> env) {
    env["MSG_QUEUE_ADDR"] = url_of(broker.port());
    Mqctl mqctl(args, "", env);
    auto outcome = mqctl.wait(30s);
    REQUIRE(outcome.has_value());
    return *outcome;
  };
  const Outcome refused = run({"topics"}, {});
  CHECK(refused.exit_code == 1);
  CHECK(refused.err.find("unauthenticated") != std::string::npos);
  CHECK(run({"topics"}, {{"MSG_QUEUE_TOKEN", "s3cret"}}).exit_code == 0);
  CHECK(run({"topics", "--token", "s3cret"}, {{"MSG_QUEUE_TOKEN", "wrong"}}).exit_code == 0);
}

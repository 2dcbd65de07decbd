// replication_bench: what replication costs, in one run on this machine: a single mqd (FSYNC=always, no
// etcd) beside a replicated cluster (a real etcd and three real mqd, REPLICATION_FACTOR=3,
// MIN_INSYNC_REPLICAS=2, FSYNC=always), both serving topic `bench` with one partition.
//
//   replication_bench [--seconds S] [--repeat R] [--events N] [--mqd PATH] [--etcd PATH] [--dir PATH]
//
// Every run starts both systems afresh (the cluster: etcd, three brokers, then waits until a broker leads
// partition 0 with all three replicas in sync) and sends everything to the single mqd or to the leader:
//   1. single-message POST /produce (100-byte payload) from 16 keep-alive connections;
//   2. batch POST /produce ({"messages":[100 x 100 bytes]}) from 4 connections;
//   3. end to end: N messages pre-produced (batches of 1000), then one consumer streams them with
//      GET /consume (group "bench") and acknowledges what it received in batches with POST /ack.
// The load generator is this program: one thread per connection, each with its own httplib::Client
// (TCP_NODELAY). Every answer is checked (200 and its body), the leader's /stats must count exactly the
// messages answered 200, and after the stream the group must have acknowledged all of them. A failure is
// a FAIL line and exit status 1. Every number is the median over --repeat runs; the ratio is replicated
// divided by single. The servers are stopped at the end of each run, also when the run fails (and
// they die with this program: PR_SET_PDEATHSIG in ServerProcess).
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "bench_support.h"
#include "mqd_process.h"

namespace {

using Clock = std::chrono::steady_clock;
using mq::testing::free_port;  // the tests' own helpers (tests/support/mqd_process.h)
using mq::testing::ServerProcess;
using nlohmann::json;
using namespace mq::bench;

constexpr int kProduceConnections = 16;
constexpr int kBatchConnections = 4;
constexpr std::size_t kBatchMessages = 100;
constexpr std::size_t kPayloadBytes = 100;
constexpr std::chrono::milliseconds kWarmup{500};
constexpr std::size_t kPreproduceBatch = 1000;
constexpr int kPreproduceThreads = 2;
constexpr int kMaxInflight = 10000;
constexpr int kBrokers = 3;
constexpr int kLeaseTtlSeconds = 2;
// How long a system may take to serve: mqd to listen, etcd to answer /health, the cluster to elect a
// leader with every replica in sync. Bounded, so that a broken start is a failure and not a hang.
constexpr std::chrono::seconds kStartLimit{30};
// A stream run in which nothing is delivered or acknowledged for this long is declared stuck.
constexpr std::chrono::seconds kStallLimit{30};
constexpr std::string_view kTopic = "bench";
constexpr std::string_view kGroup = "bench";

constexpr std::string_view kUsage =
    "usage: replication_bench [--seconds S] [--repeat R] [--events N] [--mqd PATH] [--etcd PATH] [--dir "
    "PATH]\n"
    "  --seconds S   measured seconds of each produce case, after a 0.5 s warm-up (default 3)\n"
    "  --repeat R    runs of every case; the median of each column is reported (default 3)\n"
    "  --events N    messages pre-produced, then consumed, in the end-to-end case (default 100000)\n"
    "  --mqd PATH    the mqd program (default: ../../mqd/mqd relative to this program)\n"
    "  --etcd PATH   the etcd program (default: $ETCD_SERVER, else /usr/bin/etcd; Debian's etcd-server)\n"
    "  --dir PATH    where the servers' data goes; a fresh replication_bench.XXXXXX directory is made\n"
    "                inside it and removed at the end (default: $TMPDIR or /tmp)\n"
    "All traffic goes to 127.0.0.1; the client threads share the machine's cores with every server.\n";

// ---------------------------------------------------------------------------------------------
// Command line

struct BenchOptions : CommonOptions {
  double seconds = 3;
  int repeat = 3;
  std::uint64_t events = 100000;
  std::string mqd;
  std::string etcd;
};

std::string default_etcd() {
  const char* path = std::getenv("ETCD_SERVER");  // the variable tests/support/running_etcd.h reads
  return path != nullptr && *path != '\0' ? path : "/usr/bin/etcd";
}

BenchOptions parse_options(int argc, char** argv) {
  BenchOptions options;
  parse_flags(argc, argv, options,
              {number_flag("--seconds", options.seconds), number_flag("--repeat", options.repeat),
               number_flag("--events", options.events),
               Flag{"--mqd", [&options](std::string_view value) { options.mqd = std::string(value); }},
               Flag{"--etcd", [&options](std::string_view value) { options.etcd = std::string(value); }}});
  if (!(options.seconds > 0)) throw UsageError("--seconds must be more than 0");
  if (options.repeat < 1) throw UsageError("--repeat must be at least 1");
  if (options.events < 1) throw UsageError("--events must be at least 1");
  if (options.mqd.empty()) options.mqd = mqd_beside_this_program();
  if (options.etcd.empty()) options.etcd = default_etcd();
  return options;
}

// ---------------------------------------------------------------------------------------------
// Requests and answers

// A JSON object of exactly kPayloadBytes bytes.
std::string payload_json() {
  std::string text = "{\"pad\":\"";
  text.append(kPayloadBytes - text.size() - 2, 'x');
  text += "\"}";
  return text;
}

std::string single_body() { return "{\"payload\":" + payload_json() + "}"; }

// docs/http-api.md "POST /produce": {"messages": [{"payload": ...}, ...]}, stored atomically.
std::string batch_body(std::size_t messages) {
  const std::string one = "{\"payload\":" + payload_json() + "}";
  std::string body = "{\"messages\":[";
  for (std::size_t i = 0; i < messages; ++i) body += (i == 0 ? "" : ",") + one;
  body += "]}";
  return body;
}

std::string partition_query() { return "topic=" + std::string(kTopic) + "&partition=0"; }
std::string group_query() { return partition_query() + "&group=" + std::string(kGroup); }
std::string produce_target() { return "/produce?" + partition_query(); }

// The number after `"field":` in `text`, or nullopt.
std::optional<std::uint64_t> number_field(std::string_view text, std::string_view field) {
  const std::string key = "\"" + std::string(field) + "\":";
  const std::size_t at = text.find(key);
  if (at == std::string_view::npos) return std::nullopt;
  std::uint64_t value = 0;
  const char* begin = text.data() + at + key.size();
  const auto [end, ec] = std::from_chars(begin, text.data() + text.size(), value);
  if (ec != std::errc() || end == begin) return std::nullopt;
  return value;
}

std::unique_ptr<httplib::Client> make_client(int port) {
  auto client = std::make_unique<httplib::Client>("127.0.0.1", port);
  client->set_keep_alive(true);
  client->set_tcp_nodelay(true);  // without it every answer waits ~40 ms for a delayed ACK (STYLE.md)
  client->set_connection_timeout(std::chrono::seconds(5));
  client->set_read_timeout(std::chrono::seconds(60));
  client->set_write_timeout(std::chrono::seconds(60));
  return client;
}

// What was wrong with an answer, or nullopt for a 200 whose body contains `expect`.
std::optional<std::string> answer_problem(const httplib::Result& result, std::string_view expect) {
  if (!result) return "transport error: " + httplib::to_string(result.error());
  if (result->status != 200) {
    return "HTTP " + std::to_string(result->status) + " " + result->body.substr(0, 160);
  }
  if (result->body.find(expect) == std::string::npos) {
    return "200 without " + std::string(expect) + " in its body: " + result->body.substr(0, 160);
  }
  return std::nullopt;
}

// The answer of a short control request (not timed) as JSON: `post_body` to `target`, or a GET without
// it. Throws naming the request when it is not a 200 whose body contains `expect`.
json control_request(int port, const std::string& target, std::string_view expect,
                     const std::optional<std::string>& post_body = std::nullopt) {
  auto client = make_client(port);
  client->set_read_timeout(std::chrono::seconds(5));
  auto result = post_body ? client->Post(target, *post_body, "application/json") : client->Get(target);
  if (auto problem = answer_problem(result, expect)) {
    throw std::runtime_error((post_body ? "POST " : "GET ") + target + ": " + *problem);
  }
  return json::parse(result->body);
}

// ---------------------------------------------------------------------------------------------
// CPU time: the client threads share the two cores with every server, so server CPU per message is
// what separates "replication does more work" from "replication waits longer".

// User plus system CPU time of another process, from /proc/<pid>/stat (clock-tick resolution).
double pid_cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::size_t paren = stat.rfind(')');  // the command name may hold spaces
  if (paren == std::string::npos) return 0;
  std::istringstream fields(stat.substr(paren + 2));
  std::string field;
  unsigned long long utime = 0;
  unsigned long long stime = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {  // fields 14 and 15 are utime and stime
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// ---------------------------------------------------------------------------------------------
// The systems measured

// The last `limit` bytes of a server's stderr, for a failure message.
std::string file_tail(const std::string& path, std::size_t limit = 2000) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  const std::string all = text.str();
  return all.size() > limit ? all.substr(all.size() - limit) : all;
}

// `count` ports free a moment ago and different from each other (free_port alone may hand out the
// same port twice, since each is closed before the next is asked for).
std::vector<int> distinct_free_ports(int count) {
  std::set<int> ports;
  while (static_cast<int>(ports.size()) < count) ports.insert(free_port());
  return {ports.begin(), ports.end()};
}

// One spawned server: the process, its port and where its stderr goes.
struct Server {
  std::string label;
  int port = 0;
  std::string stderr_path;
  std::unique_ptr<ServerProcess> process;  // SIGKILLed by its destructor if still running
};

// SIGTERM, then a bounded wait; a server that does not exit, or (mqd) exits other than 0, is a failure.
void stop_server(Server& server, bool expect_zero_exit, FailureLog& failures) {
  if (!server.process) return;
  const std::optional<int> status = server.process->stop(SIGTERM, std::chrono::seconds(20));
  if (!status) {
    failures.add(server.label, "did not exit within 20 s of SIGTERM");
  } else if (expect_zero_exit && (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0)) {
    failures.add(server.label, "exit status " + std::to_string(*status) + " after SIGTERM; stderr:\n" +
                                   file_tail(server.stderr_path));
  }
  server.process.reset();
}

// Whether etcd answers GET /health with {"health":"true"} (it accepts connections before it has a
// leader, and holds requests until then).
bool etcd_healthy(int port) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(std::chrono::seconds(1));
  client.set_read_timeout(std::chrono::seconds(1));
  auto result = client.Get("/health");
  return result && result->status == 200 && result->body.find("\"health\":\"true\"") != std::string::npos;
}

enum class Kind { kSingle, kReplicated };

std::string_view kind_name(Kind kind) { return kind == Kind::kSingle ? "single" : "replicated"; }

struct Programs {
  std::string mqd;
  std::string etcd;
};

// One system under test, started by the constructor and serving when it returns: a single mqd, or etcd
// plus three brokers with partition 0 led by one of them and all three replicas in sync. port() is
// where every request goes (the single mqd, or the leader).
class Deployment {
 public:
  Deployment(Kind kind, const Programs& programs, ScratchDirectory& scratch) : kind_(kind) {
    const std::vector<int> ports = distinct_free_ports(kind == Kind::kSingle ? 1 : kBrokers + 2);
    if (kind == Kind::kSingle) {
      start_broker(programs.mqd, scratch, ports[0], base_env(scratch));
      return;
    }
    start_etcd(programs.etcd, scratch, ports[kBrokers], ports[kBrokers + 1]);
    std::string addrs;
    for (int i = 0; i < kBrokers; ++i) addrs += (i == 0 ? "" : ",") + url(ports[static_cast<std::size_t>(i)]);
    for (int i = 0; i < kBrokers; ++i) {
      std::map<std::string, std::string> env = base_env(scratch);
      env["BROKER_COUNT"] = std::to_string(kBrokers);
      env["BROKER_INDEX"] = std::to_string(i);
      env["BROKER_ADDRS"] = addrs;
      env["ETCD_ENDPOINTS"] = url(etcd_.port);
      env["REPLICATION_FACTOR"] = std::to_string(kBrokers);
      env["MIN_INSYNC_REPLICAS"] = "2";
      env["LEASE_TTL_S"] = std::to_string(kLeaseTtlSeconds);
      start_broker(programs.mqd, scratch, ports[static_cast<std::size_t>(i)], std::move(env));
    }
    leader_ = await_leader();
  }
  // Members are destroyed in reverse order: the brokers (SIGKILL if still running) before etcd.
  ~Deployment() = default;
  Deployment(const Deployment&) = delete;
  Deployment& operator=(const Deployment&) = delete;

  Kind kind() const { return kind_; }
  int port() const { return brokers_[leader_].port; }
  int leader() const { return static_cast<int>(leader_); }

  // CPU time of every server process of this system together (brokers and etcd).
  double server_cpu_seconds() const {
    double sum = 0;
    for (const Server& broker : brokers_) sum += pid_cpu_seconds(broker.process->pid());
    if (etcd_.process) sum += pid_cpu_seconds(etcd_.process->pid());
    return sum;
  }

  // Stops the brokers, then etcd (so that no broker loses its coordinator while it shuts down).
  void stop(FailureLog& failures) {
    for (Server& broker : brokers_) stop_server(broker, true, failures);
    stop_server(etcd_, false, failures);  // etcd's own exit status on SIGTERM is not ours to judge
  }

 private:
  static std::string url(int port) { return "http://127.0.0.1:" + std::to_string(port); }

  static std::map<std::string, std::string> base_env(ScratchDirectory& scratch) {
    return {{"HOST", "127.0.0.1"},
            {"DATA_DIR", scratch.fresh_path("data")},
            {"TOPICS", std::string(kTopic) + ":1"},
            {"FSYNC", "always"}};
  }

  void start_broker(const std::string& program, ScratchDirectory& scratch, int port,
                    std::map<std::string, std::string> env) {
    Server& broker = brokers_.emplace_back();
    broker.label = std::string(kind_name(kind_)) + " mqd " + std::to_string(brokers_.size() - 1);
    broker.port = port;
    broker.stderr_path = scratch.fresh_path("mqd-stderr");
    env["PORT"] = std::to_string(port);
    broker.process = std::make_unique<ServerProcess>(program, std::vector<std::string>{}, std::move(env),
                                                     broker.stderr_path);
    if (!broker.process->wait_until_listening(port, kStartLimit)) {
      throw std::runtime_error(broker.label + " did not start listening on 127.0.0.1:" +
                               std::to_string(port) + "; its stderr:\n" + file_tail(broker.stderr_path));
    }
  }

  // One etcd member on 127.0.0.1 as tests/support/running_etcd.h starts it, with a fresh data directory.
  void start_etcd(const std::string& program, ScratchDirectory& scratch, int client_port, int peer_port) {
    if (::access(program.c_str(), X_OK) != 0) {
      throw std::runtime_error("no executable etcd at " + program +
                               " (apt-get install etcd-server, or pass --etcd PATH)");
    }
    etcd_.label = "etcd";
    etcd_.port = client_port;
    etcd_.stderr_path = scratch.fresh_path("etcd-stderr");
    const std::string client_url = url(client_port);
    const std::string peer_url = url(peer_port);
    std::vector<std::string> args = {
        "--name", "e0", "--data-dir", scratch.fresh_path("etcd-data"), "--listen-client-urls", client_url,
        "--advertise-client-urls", client_url, "--listen-peer-urls", peer_url,
        "--initial-advertise-peer-urls", peer_url, "--initial-cluster", "e0=" + peer_url,
        // Its info log is a line per lease renewal: CPU and disk taken from what is measured.
        "--logger", "zap", "--log-level", "warn"};
    etcd_.process = std::make_unique<ServerProcess>(program, std::move(args),
                                                    std::map<std::string, std::string>{}, etcd_.stderr_path);
    const auto deadline = Clock::now() + kStartLimit;
    while (!etcd_healthy(client_port)) {
      if (etcd_.process->wait_exit(std::chrono::milliseconds(0)) || Clock::now() > deadline) {
        throw std::runtime_error("etcd did not become healthy on " + client_url + "; its stderr:\n" +
                                 file_tail(etcd_.stderr_path));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polling a port: no event to await
    }
  }

  // Partition 0 of kTopic as broker `i` sees it in /topics' placement; null when it does not answer.
  json placement(std::size_t i) const {
    try {
      const json topics = control_request(brokers_[i].port, "/topics", "\"topics\"");
      for (const auto& topic : topics.at("topics")) {
        if (topic.at("name").get<std::string>() == kTopic && topic.contains("placement"))
          return topic["placement"][0];
      }
    } catch (const std::exception&) {
      // Not answering yet (or answering without placement): asked again until the deadline.
    }
    return nullptr;
  }

  // Polls /topics (there is no event to await from outside) until a broker leads partition 0 with every
  // replica in sync; throws with what each broker said when that does not happen within kStartLimit.
  std::size_t await_leader() const {
    const auto deadline = Clock::now() + kStartLimit;
    while (Clock::now() < deadline) {
      for (std::size_t i = 0; i < brokers_.size(); ++i) {
        const json p = placement(i);
        if (p.is_object() && p.contains("isr") && p["leader"] == i && p["isr"].size() == brokers_.size()) {
          return i;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    std::string seen;
    for (std::size_t i = 0; i < brokers_.size(); ++i) {
      seen += "\nbroker " + std::to_string(i) + " placement: " + placement(i).dump() + "; stderr:\n" +
              file_tail(brokers_[i].stderr_path, 600);
    }
    throw std::runtime_error("no broker led partition " + std::string(kTopic) + "/0 with " +
                             std::to_string(brokers_.size()) + " in-sync replicas within " +
                             std::to_string(kStartLimit.count()) + " s" + seen);
  }

  Kind kind_;
  Server etcd_;                  // unused (no process) for a single mqd
  std::vector<Server> brokers_;  // after etcd_: destroyed first
  std::size_t leader_ = 0;
};

// ---------------------------------------------------------------------------------------------
// What the leader stores

// Partition 0 of kTopic in the leader's /stats.
json partition_stats(int port) {
  const json stats = control_request(port, "/stats?topic=" + std::string(kTopic), "\"topics\"");
  return stats.at("topics").at(0).at("partitions").at(0);
}

// Whether the leader stores exactly `expected` messages and (replicated) has them all on enough replicas
// (high_watermark); a failure line when not.
bool check_stored(const Deployment& system, std::uint64_t expected, const std::string& where,
                  FailureLog& failures, CheckTally& checks) {
  std::string problem;
  try {
    const json partition = partition_stats(system.port());
    const auto next_offset = partition.at("next_offset").get<std::uint64_t>();
    if (next_offset != expected) {
      problem = "/stats next_offset " + std::to_string(next_offset) + ", the 200 answers promised " +
                std::to_string(expected);
    } else if (system.kind() == Kind::kReplicated &&
               (!partition.contains("high_watermark") || partition["high_watermark"] != expected)) {
      problem =
          "/stats high_watermark is not next_offset " + std::to_string(expected) + ": " + partition.dump();
    }
  } catch (const std::exception& e) {
    problem = e.what();
  }
  if (problem.empty()) {
    ++checks.passed;
    return true;
  }
  ++checks.failed;
  failures.add(where, problem);
  return false;
}

// ---------------------------------------------------------------------------------------------
// Produce load: one thread per keep-alive connection, as fast as answers come back.

struct LoadRun {
  double messages_per_second = 0;
  double p50_us = 0;  // request latency
  double p99_us = 0;
  double server_cpu_us = 0;    // CPU of every server process per message answered in the window
  std::uint64_t messages = 0;  // answered 200, warm-up included: what /stats must count
};

struct ConnectionResult {
  std::vector<std::int64_t> latencies_ns;  // requests answered 200 inside the window
  std::uint64_t ok = 0;
  std::map<std::string, std::uint64_t> problems;
};

// The loop of one connection: `body` to the produce route until `window_end`.
void produce_until(int port, const std::string& body, std::string_view expect, Clock::time_point window_begin,
                   Clock::time_point window_end, ConnectionResult& mine) {
  mine.latencies_ns.reserve(1 << 16);
  const std::string target = produce_target();
  auto client = make_client(port);
  while (true) {
    const auto begin = Clock::now();
    if (begin >= window_end) break;
    auto result = client->Post(target, body, "application/json");
    const auto end = Clock::now();
    if (auto problem = answer_problem(result, expect)) {
      ++mine.problems[*problem];
      if (!result) std::this_thread::sleep_for(std::chrono::milliseconds(1));  // no busy loop on a dead port
      continue;
    }
    ++mine.ok;
    if (end >= window_begin && end < window_end) mine.latencies_ns.push_back((end - begin).count());
  }
}

// `connections` threads send `body` (`per_request` messages) for the warm-up plus `seconds`; only
// requests that complete inside the window count towards rate and latency.
LoadRun run_load(const Deployment& system, int connections, const std::string& body, std::size_t per_request,
                 std::string_view expect, double seconds, const std::string& where, FailureLog& failures) {
  std::vector<ConnectionResult> results(static_cast<std::size_t>(connections));
  const auto window_begin = Clock::now() + kWarmup;
  const auto window_end =
      window_begin + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  double cpu_begin = 0;
  double cpu_end = 0;
  {
    std::vector<std::jthread> threads;
    for (auto& result : results) {
      threads.emplace_back(
          [&] { produce_until(system.port(), body, expect, window_begin, window_end, result); });
    }
    std::this_thread::sleep_until(window_begin);
    cpu_begin = system.server_cpu_seconds();
    std::this_thread::sleep_until(window_end);
    cpu_end = system.server_cpu_seconds();
  }
  std::vector<std::int64_t> latencies;
  bool idle_connection = false;
  LoadRun run;
  for (ConnectionResult& r : results) {
    run.messages += r.ok * per_request;
    idle_connection = idle_connection || r.latencies_ns.empty();
    latencies.insert(latencies.end(), r.latencies_ns.begin(), r.latencies_ns.end());
    for (const auto& [problem, count] : r.problems) failures.add(where, problem, count);
  }
  if (idle_connection) failures.add(where, "a connection had no request answered 200 inside the window");
  const double in_window = static_cast<double>(latencies.size() * per_request);
  run.messages_per_second = in_window / seconds_between(window_begin, window_end);
  run.p50_us = percentile_us(latencies, 0.50);
  run.p99_us = percentile_us(latencies, 0.99);
  if (in_window > 0) run.server_cpu_us = (cpu_end - cpu_begin) * 1e6 / in_window;
  return run;
}

// ---------------------------------------------------------------------------------------------
// End to end: pre-produce, then one consumer streams and acknowledges everything.

// Creates group kGroup at the end of the partition (POST /seek position latest), so that it is
// delivered exactly what is pre-produced next and none of what the produce cases stored; returns
// its committed offset.
std::uint64_t create_group_at_end(int port) {
  const json answer = control_request(port, "/seek?" + group_query(), "\"committed_offset\"",
                                      std::string(R"({"position":"latest"})"));
  return answer.at("committed_offset").get<std::uint64_t>();
}

// Produces `events` messages in kPreproduceBatch batches from kPreproduceThreads connections.
void preproduce(int port, std::uint64_t events, const std::string& where, FailureLog& failures) {
  std::vector<std::size_t> work;  // messages per request
  for (std::uint64_t done = 0; done < events; done += kPreproduceBatch) {
    work.push_back(static_cast<std::size_t>(std::min<std::uint64_t>(kPreproduceBatch, events - done)));
  }
  std::atomic<std::size_t> next{0};
  const std::string full_batch = batch_body(kPreproduceBatch);
  std::vector<std::jthread> threads;
  for (int t = 0; t < kPreproduceThreads; ++t) {
    threads.emplace_back([&] {
      auto client = make_client(port);
      for (std::size_t i; (i = next++) < work.size();) {
        const std::string body = work[i] == kPreproduceBatch ? full_batch : batch_body(work[i]);
        auto result = client->Post(produce_target(), body, "application/json");
        if (auto problem = answer_problem(result, "\"offsets\""))
          failures.add(where + " pre-produce", *problem);
      }
    });
  }
}

// What the stream reader and the acknowledger of the run share.
class StreamState {
 public:
  explicit StreamState(std::uint64_t expected) : expected_(expected) {}

  void add_delivered(std::uint64_t n) { delivered_ += n; }
  void add_acked(std::uint64_t n) {
    const std::uint64_t before = acked_.fetch_add(n);
    if (before < expected_ && before + n >= expected_) {
      std::lock_guard lock(mutex_);
      acked_at_ = Clock::now();
      changed_.notify_all();
    }
  }
  // Waits until all are acknowledged; false when nothing moved for kStallLimit.
  bool wait_all_acked() {
    std::unique_lock lock(mutex_);
    std::uint64_t last = 0;
    auto last_progress = Clock::now();
    while (acked_.load() < expected_) {
      changed_.wait_for(lock, std::chrono::milliseconds(200));
      const std::uint64_t progress = acked_.load() + delivered_.load();
      if (progress != last) {
        last = progress;
        last_progress = Clock::now();
      } else if (Clock::now() - last_progress > kStallLimit) {
        return false;
      }
    }
    return true;
  }
  std::uint64_t delivered() const { return delivered_.load(); }
  std::uint64_t acked() const { return acked_.load(); }
  Clock::time_point acked_at() {
    std::lock_guard lock(mutex_);
    return acked_at_;
  }

 private:
  const std::uint64_t expected_;
  std::atomic<std::uint64_t> delivered_{0};
  std::atomic<std::uint64_t> acked_{0};
  std::mutex mutex_;
  std::condition_variable changed_;
  Clock::time_point acked_at_;  // GUARDED_BY(mutex_)
};

// One consumer, as http_bench's: an event stream read on one thread, its ids acknowledged in batches
// (whatever arrived while the previous ack was answered) on a second connection by a second thread.
class Consumer {
 public:
  Consumer(int port, StreamState& state, FailureLog& failures, std::string where)
      : state_(state),
        failures_(failures),
        where_(std::move(where)),
        stream_client_(make_client(port)),
        ack_client_(make_client(port)) {
    reader_ = std::thread([this] { read(); });
    acker_ = std::thread([this] { acknowledge(); });
  }
  ~Consumer() { close(); }
  Consumer(const Consumer&) = delete;
  Consumer& operator=(const Consumer&) = delete;

  void close() {
    {
      std::lock_guard lock(mutex_);
      if (closing_) return;
      closing_ = true;
    }
    ready_.notify_all();
    stream_client_->stop();
    reader_.join();
    acker_.join();
  }
  // After close(): the round trip of every POST /ack.
  std::vector<std::int64_t>& ack_latencies_ns() { return ack_latencies_ns_; }

 private:
  bool closing() {
    std::lock_guard lock(mutex_);
    return closing_;
  }

  // Takes the ids of the complete events in `buffer` out of it; counts events not on their first delivery.
  void take_ids(std::string& buffer, std::vector<std::string>& ids) {
    std::size_t position = 0;
    std::uint64_t redelivered = 0;
    for (std::size_t end; (end = buffer.find("\n\n", position)) != std::string::npos; position = end + 2) {
      const std::string_view block(buffer.data() + position, end - position);
      if (!block.starts_with("id: ")) continue;  // a ": keepalive" comment
      const std::size_t line_end = block.find('\n');
      ids.emplace_back(
          block.substr(4, line_end == std::string_view::npos ? std::string_view::npos : line_end - 4));
      if (number_field(block, "delivery").value_or(0) != 1) ++redelivered;
    }
    buffer.erase(0, position);
    if (redelivered != 0) failures_.add(where_, "event with delivery != 1 (a redelivery)", redelivered);
  }

  void read() {
    const std::string target = "/consume?" + group_query() + "&max_inflight=" + std::to_string(kMaxInflight);
    std::string buffer;
    std::vector<std::string> ids;
    auto result = stream_client_->Get(
        target, httplib::Headers{},
        [this](const httplib::Response& response) {
          if (response.status == 200) return true;
          failures_.add(where_, "GET /consume answered HTTP " + std::to_string(response.status));
          return false;
        },
        [&](const char* data, std::size_t length) {
          buffer.append(data, length);
          take_ids(buffer, ids);
          if (!ids.empty()) {
            const std::uint64_t n = ids.size();
            {
              std::lock_guard lock(mutex_);
              for (auto& id : ids) pending_.push_back(std::move(id));
            }
            ids.clear();
            ready_.notify_one();
            state_.add_delivered(n);
          }
          return !closing();
        });
    if (!closing()) {
      failures_.add(where_, "event stream ended before the run did: " +
                                (result ? "HTTP " + std::to_string(result->status)
                                        : httplib::to_string(result.error())));
    }
  }

  void acknowledge() {
    const std::string target = "/ack?" + group_query();
    std::vector<std::string> ids;
    while (true) {
      {
        std::unique_lock lock(mutex_);
        ready_.wait(lock, [&] { return closing_ || !pending_.empty(); });
        if (closing_) return;
        ids.swap(pending_);
      }
      std::string body = "{\"ids\":[";
      for (std::size_t i = 0; i < ids.size(); ++i) (body += i == 0 ? "\"" : ",\"") += ids[i] + "\"";
      body += "]}";
      const auto begin = Clock::now();
      auto result = ack_client_->Post(target, body, "application/json");
      ack_latencies_ns_.push_back((Clock::now() - begin).count());
      if (auto problem = answer_problem(result, "\"acked\"")) {
        failures_.add(where_, "POST /ack: " + *problem);
      } else {
        const std::uint64_t acked = number_field(result->body, "acked").value_or(0);
        if (acked != ids.size()) {
          failures_.add(where_, "POST /ack of " + std::to_string(ids.size()) + " ids acknowledged " +
                                    std::to_string(acked));
        }
        state_.add_acked(acked);
      }
      ids.clear();
    }
  }

  StreamState& state_;
  FailureLog& failures_;
  const std::string where_;
  std::unique_ptr<httplib::Client> stream_client_;
  std::unique_ptr<httplib::Client> ack_client_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::vector<std::string> pending_;            // GUARDED_BY(mutex_)
  bool closing_ = false;                        // GUARDED_BY(mutex_)
  std::vector<std::int64_t> ack_latencies_ns_;  // written by the acker thread only, read after close()
  std::thread reader_;
  std::thread acker_;
};

// After the stream: the group has acknowledged everything up to `next_offset`, nothing in flight.
void check_group_done(int port, std::uint64_t next_offset, const std::string& where, FailureLog& failures,
                      CheckTally& checks) {
  std::string problem = "no group " + std::string(kGroup) + " in /stats";
  try {
    const json partition = partition_stats(port);  // not a temporary in the loop's head: it would end first
    for (const auto& group : partition.at("groups")) {
      if (group.at("group").get<std::string>() != kGroup) continue;
      const auto committed = group.at("committed_offset").get<std::uint64_t>();
      const auto inflight = group.at("inflight").get<std::uint64_t>();
      problem = committed == next_offset && inflight == 0
                    ? ""
                    : "committed_offset " + std::to_string(committed) + " of " + std::to_string(next_offset) +
                          ", inflight " + std::to_string(inflight);
    }
  } catch (const std::exception& e) {
    problem = e.what();
  }
  if (problem.empty()) {
    ++checks.passed;
    return;
  }
  ++checks.failed;
  failures.add(where, problem);
}

struct EndToEndRun {
  double messages_per_second = 0;  // events / (stream opened -> last ack answered)
  double p50_us = 0;               // POST /ack round trip
  double p99_us = 0;
  double server_cpu_us = 0;          // every server process, per message, over the stream phase
  double preproduce_per_second = 0;  // the batch pre-produce, for context
};

// The end-to-end case on `system`, whose partition already holds `stored` messages.
EndToEndRun run_end_to_end(const Deployment& system, std::uint64_t stored, std::uint64_t events,
                           const std::string& where, FailureLog& failures, CheckTally& checks) {
  EndToEndRun run;
  const int port = system.port();
  const std::uint64_t start_offset = create_group_at_end(port);
  if (start_offset != stored) {
    failures.add(where, "the group was created at offset " + std::to_string(start_offset) +
                            ", not at the end " + std::to_string(stored));
  }
  const auto produce_begin = Clock::now();
  preproduce(port, events, where, failures);
  run.preproduce_per_second = static_cast<double>(events) / seconds_between(produce_begin, Clock::now());
  if (!check_stored(system, stored + events, where + " pre-produce", failures, checks)) {
    failures.add(where, "not measured: the pre-produced messages are not all there");
    return run;
  }
  StreamState state(events);
  const auto start = Clock::now();
  const double cpu_begin = system.server_cpu_seconds();
  Consumer consumer(port, state, failures, where);
  const bool completed = state.wait_all_acked();
  const double cpu_end = system.server_cpu_seconds();
  consumer.close();
  if (!completed) {
    failures.add(where, "stuck: " + std::to_string(state.delivered()) + " delivered, " +
                            std::to_string(state.acked()) + " acked of " + std::to_string(events) +
                            ", nothing for " + std::to_string(kStallLimit.count()) + " s");
    return run;
  }
  if (state.delivered() != events) {
    failures.add(where, std::to_string(state.delivered()) + " events delivered for " +
                            std::to_string(events) + " messages");
  }
  check_group_done(port, stored + events, where, failures, checks);
  run.messages_per_second = static_cast<double>(events) / seconds_between(start, state.acked_at());
  run.p50_us = percentile_us(consumer.ack_latencies_ns(), 0.50);
  run.p99_us = percentile_us(consumer.ack_latencies_ns(), 0.99);
  run.server_cpu_us = (cpu_end - cpu_begin) * 1e6 / static_cast<double>(events);
  return run;
}

// ---------------------------------------------------------------------------------------------
// The run

// Everything one run measured on one system.
struct SystemRun {
  LoadRun single;
  LoadRun batch;
  EndToEndRun end_to_end;
  double start_seconds = 0;  // from spawning to serving (for the cluster: a leader with 3 in sync)
};

SystemRun measure(Kind kind, const BenchOptions& options, ScratchDirectory& scratch, FailureLog& failures,
                  CheckTally& checks) {
  const std::string name(kind_name(kind));
  SystemRun run;
  const auto spawned = Clock::now();
  Deployment system(kind, Programs{options.mqd, options.etcd}, scratch);
  run.start_seconds = seconds_between(spawned, Clock::now());
  try {
    run.single = run_load(system, kProduceConnections, single_body(), 1, "\"offset\"", options.seconds,
                          name + " single produce", failures);
    run.batch = run_load(system, kBatchConnections, batch_body(kBatchMessages), kBatchMessages, "\"offsets\"",
                         options.seconds, name + " batch produce", failures);
    const std::uint64_t stored = run.single.messages + run.batch.messages;
    check_stored(system, stored, name + " produce", failures, checks);
    run.end_to_end = run_end_to_end(system, stored, options.events, name + " end to end", failures, checks);
  } catch (...) {
    system.stop(failures);  // a clean stop where possible; the destructor SIGKILLs what is left
    throw;
  }
  system.stop(failures);
  return run;
}

void print_run(Kind kind, int r, int repeat, const SystemRun& run) {
  std::printf(
      "run %d/%d %-10s start %5.1f s | single %8.0f msg/s p50 %7.0f p99 %7.0f us | batch %9.0f msg/s p50 "
      "%7.0f "
      "p99 %7.0f us | e2e %8.0f msg/s ack p50 %6.0f p99 %6.0f us (pre-produce %8.0f msg/s)\n",
      r + 1, repeat, std::string(kind_name(kind)).c_str(), run.start_seconds, run.single.messages_per_second,
      run.single.p50_us, run.single.p99_us, run.batch.messages_per_second, run.batch.p50_us, run.batch.p99_us,
      run.end_to_end.messages_per_second, run.end_to_end.p50_us, run.end_to_end.p99_us,
      run.end_to_end.preproduce_per_second);
  std::fflush(stdout);
}

// The median of `metric` of part `part` over `runs`.
template <typename Part>
double median_over(const std::vector<SystemRun>& runs, Part SystemRun::*part, double Part::*metric) {
  std::vector<double> values;
  for (const SystemRun& run : runs) values.push_back(run.*part.*metric);
  return median(std::move(values));
}

double ratio(double replicated, double single) { return single > 0 ? replicated / single : 0; }

template <typename Part>
void print_row(const char* label, const std::vector<SystemRun>& single,
               const std::vector<SystemRun>& replicated, Part SystemRun::*part) {
  double values[2][4];
  for (int s = 0; s < 2; ++s) {
    const auto& runs = s == 0 ? single : replicated;
    values[s][0] = median_over(runs, part, &Part::messages_per_second);
    values[s][1] = median_over(runs, part, &Part::p50_us);
    values[s][2] = median_over(runs, part, &Part::p99_us);
    values[s][3] = median_over(runs, part, &Part::server_cpu_us);
  }
  std::printf("%-34s %10.0f %8.0f %8.0f %7.1f | %10.0f %8.0f %8.0f %7.1f | %7.2f %7.2f %7.2f %7.2f\n", label,
              values[0][0], values[0][1], values[0][2], values[0][3], values[1][0], values[1][1],
              values[1][2], values[1][3], ratio(values[1][0], values[0][0]),
              ratio(values[1][1], values[0][1]), ratio(values[1][2], values[0][2]),
              ratio(values[1][3], values[0][3]));
}

void print_table(const BenchOptions& options, const std::vector<SystemRun>& single,
                 const std::vector<SystemRun>& replicated) {
  std::printf(
      "\nsingle: one mqd, FSYNC=always. replicated: etcd + %d mqd, REPLICATION_FACTOR=%d, "
      "MIN_INSYNC_REPLICAS=2, "
      "LEASE_TTL_S=%d, FSYNC=always;\nrequests to the leader of %s/0. %zu-byte payloads; produce cases %.1f "
      "s "
      "warm-up + %g s measured; end to end %llu messages;\nmedian of %d runs; ratio = replicated / "
      "single.\n\n",
      kBrokers, kBrokers, kLeaseTtlSeconds, std::string(kTopic).c_str(), kPayloadBytes,
      std::chrono::duration<double>(kWarmup).count(), options.seconds,
      static_cast<unsigned long long>(options.events), options.repeat);
  std::printf("%-34s %-36s | %-36s | %s\n", "", "single", "replicated", "ratio replicated / single");
  std::printf("%-34s %10s %8s %8s %7s | %10s %8s %8s %7s | %7s %7s %7s %7s\n", "case", "msgs/s", "p50_us",
              "p99_us", "cpu_us", "msgs/s", "p50_us", "p99_us", "cpu_us", "msgs/s", "p50", "p99", "cpu");
  print_row("single produce, 16 connections", single, replicated, &SystemRun::single);
  print_row("batch produce (100), 4 connections", single, replicated, &SystemRun::batch);
  print_row("end to end, 1 consumer, batch acks", single, replicated, &SystemRun::end_to_end);
  std::printf(
      "p50/p99: request round trip (produce cases: POST /produce; end to end: POST /ack); cpu_us: CPU of "
      "every\n"
      "server process (mqd, and for replicated all three mqd and etcd) per message; end-to-end msgs/s = N /\n"
      "(stream opened -> last ack answered). Pre-produce (batches of %zu, %d connections), median msgs/s: "
      "single "
      "%.0f, replicated %.0f (ratio %.2f).\nStart to serving, median: single %.1f s, replicated %.1f s (a "
      "leader "
      "with %d in sync).\n",
      kPreproduceBatch, kPreproduceThreads,
      median_over(single, &SystemRun::end_to_end, &EndToEndRun::preproduce_per_second),
      median_over(replicated, &SystemRun::end_to_end, &EndToEndRun::preproduce_per_second),
      ratio(median_over(replicated, &SystemRun::end_to_end, &EndToEndRun::preproduce_per_second),
            median_over(single, &SystemRun::end_to_end, &EndToEndRun::preproduce_per_second)),
      median_of(single, &SystemRun::start_seconds), median_of(replicated, &SystemRun::start_seconds),
      kBrokers);
}

void run_replication_benchmark(const BenchOptions& options, ScratchDirectory& scratch) {
  if (::access(options.mqd.c_str(), X_OK) != 0) {
    throw std::runtime_error("no executable mqd at " + options.mqd + " (build mqd or pass --mqd PATH)");
  }
  std::printf("mqd: %s\netcd: %s\n", options.mqd.c_str(), options.etcd.c_str());
  std::fflush(stdout);
  FailureLog failures;
  CheckTally checks;
  std::vector<SystemRun> single;
  std::vector<SystemRun> replicated;
  // Repeats are the outer loop and the order of the two systems alternates, so that a slow phase of
  // the shared machine falls on both.
  for (int r = 0; r < options.repeat; ++r) {
    for (const Kind kind : r % 2 == 0 ? std::vector{Kind::kSingle, Kind::kReplicated}
                                      : std::vector{Kind::kReplicated, Kind::kSingle}) {
      std::fprintf(stderr, "run %d/%d: %s\n", r + 1, options.repeat, std::string(kind_name(kind)).c_str());
      auto& runs = kind == Kind::kSingle ? single : replicated;
      try {
        runs.push_back(measure(kind, options, scratch, failures, checks));
        print_run(kind, r, options.repeat, runs.back());
      } catch (const std::exception& e) {
        // A system that did not start or answer: a FAIL line, and the other runs still measure.
        failures.add(std::string(kind_name(kind)) + " run " + std::to_string(r + 1), e.what());
      }
    }
  }
  if (!single.empty() && !replicated.empty()) {
    print_table(options, single, replicated);
  } else {
    std::printf("\nno table: a system completed no run\n");
  }
  std::printf(
      "\nchecks: %d passed, %d failed (the leader's /stats next_offset == messages answered 200, and for "
      "replicated high_watermark == next_offset; after the stream the group's committed_offset == "
      "next_offset with nothing in flight)\n",
      checks.passed.load(), checks.failed.load());
  failures.print();
  const std::uint64_t failed = failures.total();
  std::printf("failures: %llu\n", static_cast<unsigned long long>(failed));
  std::fflush(stdout);
  if (failed != 0) throw std::runtime_error(std::to_string(failed) + " failure(s), see the FAIL lines");
}

}  // namespace

int main(int argc, char** argv) {
  // A write to a connection the peer closed must be an error return, not the end of the program.
  ::signal(SIGPIPE, SIG_IGN);
  return mq::bench::run_main("replication_bench", kUsage, argc, argv, parse_options,
                             run_replication_benchmark);
}

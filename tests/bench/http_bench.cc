// http_bench: mqd's HTTP throughput beside the ceiling of the HTTP framework it is built on, in one run.
//
//   http_bench [--seconds S] [--repeat R] [--events N] [--mqd PATH] [--dir PATH]
//
// The load generator is in this program: one thread per keep-alive connection, each with its own
// httplib::Client (TCP_NODELAY), timing every request with steady_clock. Cases:
//   1. single-message POST /produce (100-byte payload) from 64 connections against
//      - a trivial cpp-httplib server in this process that answers a fixed JSON body, tuned exactly as
//        mqd tunes its server (TCP_NODELAY, keep-alive count 1e6, mqd::ConnectionPool, backlog 4096):
//        the framework's ceiling;
//      - a real mqd (spawned) with FSYNC=never, then FSYNC=always;
//   2. batch POST /produce (100 messages of 100 bytes) from 4 connections against mqd, FSYNC never/always;
//      then the same with 3 headers and a unique dedup_id on every message (issue 14's goal through HTTP);
//   3. SSE delivery: N messages pre-produced, then 1 consumer (one partition) and 16 consumers (8
//      partitions, 2 per partition) stream GET /consume and acknowledge in batches with POST /ack.
//   4. GET /messages?timestamp= on a partition of G GB (written with libmq, then opened by mqd): the
//      first lookup after mqd starts and 500 random ones, each answer checked.
// Every answer is checked (status and body); mqd's own /stats must agree with the count of 200 answers.
// Any failure is printed as a FAIL line and makes the exit status 1. Results go to stdout, progress to
// stderr. Every number is the median over --repeat runs.
#include <arpa/inet.h>
#include <fcntl.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "bench_support.h"
#include "mq/mq.h"
#include "mqd_process.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace stdfs = std::filesystem;
using namespace mq::bench;

constexpr int kConnections = 64;
constexpr int kBatchConnections = 4;
constexpr std::size_t kBatchMessages = 100;
constexpr std::size_t kPayloadBytes = 100;
constexpr std::chrono::milliseconds kWarmup{500};
constexpr int kPartitions = 8;
constexpr int kStreamConsumers = 16;
constexpr std::size_t kPreproduceBatch = 1000;
constexpr int kPreproduceThreads = 2;
constexpr int kMaxInflight = 10000;
constexpr double kTargetNever = 0.85;
constexpr double kTargetAlways = 0.50;
// A stream run in which nothing is acknowledged for this long is declared stuck.
constexpr std::chrono::seconds kStallLimit{30};
// mqd::ConnectionPool's limit in the trivial server: mqd's default MAX_CONNECTIONS plus its spare threads.
constexpr std::size_t kTrivialMaxThreads = 1024 + 16;
constexpr std::string_view kTopic = "events";
constexpr std::string_view kGroup = "bench";
// What the trivial handler answers: the shape of mqd's single-message answer.
constexpr std::string_view kTrivialAnswer = R"({"id":"0-0","topic":"events","partition":0,"offset":0})";

constexpr std::string_view kUsage =
    "usage: http_bench [--seconds S] [--repeat R] [--events N] [--messages-gb G] [--mqd PATH] [--dir PATH]\n"
    "  --seconds S   measured seconds of every produce case, after a 0.5 s warm-up (default 3)\n"
    "  --repeat R    runs of every case; the median of each column is reported (default 3)\n"
    "  --events N    messages pre-produced for each SSE delivery case (default 200000)\n"
    "  --messages-gb G  size of the partition GET /messages?timestamp= searches (default 2; 0 skips)\n"
    "  --mqd PATH    the mqd program (default: ../../mqd/mqd relative to this program, i.e.\n"
    "                build/main/mqd/mqd beside build/main/tests/bench/http_bench)\n"
    "  --dir PATH    where mqd's data goes; a fresh http_bench.XXXXXX directory is made inside it\n"
    "                and removed at the end (default: $TMPDIR or /tmp)\n"
    "All traffic goes to 127.0.0.1. The client threads share the machine's cores with the server.\n";

// ---------------------------------------------------------------------------------------------
// Command line

struct BenchOptions : CommonOptions {
  double seconds = 3;
  int repeat = 3;
  std::uint64_t events = 200000;
  double messages_gb = 2;
  std::string mqd;
};

BenchOptions parse_options(int argc, char** argv) {
  BenchOptions options;
  parse_flags(argc, argv, options,
              {number_flag("--seconds", options.seconds), number_flag("--repeat", options.repeat),
               number_flag("--events", options.events), number_flag("--messages-gb", options.messages_gb),
               Flag{"--mqd", [&options](std::string_view value) { options.mqd = std::string(value); }}});
  if (!(options.seconds > 0)) throw UsageError("--seconds must be more than 0");
  if (!(options.messages_gb >= 0)) throw UsageError("--messages-gb must be 0 or more");
  if (options.repeat < 1) throw UsageError("--repeat must be at least 1");
  if (options.events < static_cast<std::uint64_t>(kStreamConsumers)) {
    throw UsageError("--events must be at least " + std::to_string(kStreamConsumers));
  }
  return options;
}

// ---------------------------------------------------------------------------------------------
// Bodies

// A JSON object of exactly kPayloadBytes bytes.
std::string payload_json() {
  std::string json = "{\"pad\":\"";
  json.append(kPayloadBytes - json.size() - 2, 'x');
  json += "\"}";
  return json;
}

std::string single_body() { return "{\"payload\":" + payload_json() + "}"; }

std::string batch_body(std::size_t messages) {
  const std::string one = "{\"payload\":" + payload_json() + "}";
  std::string body = "{\"messages\":[";
  for (std::size_t i = 0; i < messages; ++i) body += (i == 0 ? "" : ",") + one;
  body += "]}";
  return body;
}

// A batch like batch_body's whose messages carry the options of options_bench: 3 headers and a
// dedup_id each. The ids are "c<connection>-<request>-<message>", with fixed-width numbers that
// stamp_dedup_ids() writes before every request, so that no request repeats another's ids.
constexpr std::string_view kIdPlaceholder = "c00-000000000000-000";
std::string options_batch_body(std::size_t messages) {
  std::string body = "{\"messages\":[";
  for (std::size_t i = 0; i < messages; ++i) {
    body += i == 0 ? "{" : ",{";
    body += "\"payload\":" + payload_json() +
            ",\"headers\":{\"trace-id\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"content-type\":\"application/"
            "json\",\"source\":\"checkout-service\"},\"dedup_id\":\"" +
            std::string(kIdPlaceholder) + "\"}";
  }
  body += "]}";
  return body;
}

// Writes connection `connection`, request `request` and each message's index into the ids of an
// options_batch_body.
void stamp_dedup_ids(std::string& body, int connection, std::uint64_t request) {
  auto write_digits = [](char* at, std::size_t width, std::uint64_t value) {
    for (std::size_t i = width; i-- > 0; value /= 10) at[i] = static_cast<char>('0' + value % 10);
  };
  std::size_t message = 0;
  for (std::size_t at = body.find("\"dedup_id\":\"c"); at != std::string::npos;
       at = body.find("\"dedup_id\":\"c", at + 1), ++message) {
    char* id = body.data() + at + std::string_view("\"dedup_id\":\"c").size();
    write_digits(id, 2, static_cast<std::uint64_t>(connection));
    write_digits(id + 3, 12, request);
    write_digits(id + 16, 3, message);
  }
}

std::string produce_target(int partition) {
  return "/produce?topic=" + std::string(kTopic) + "&partition=" + std::to_string(partition);
}

std::string group_query(int partition) {
  return "topic=" + std::string(kTopic) + "&partition=" + std::to_string(partition) +
         "&group=" + std::string(kGroup);
}

// The number after `"field":` in `json`, or nullopt.
std::optional<std::uint64_t> number_field(std::string_view json, std::string_view field) {
  const std::string key = "\"" + std::string(field) + "\":";
  const std::size_t at = json.find(key);
  if (at == std::string_view::npos) return std::nullopt;
  std::uint64_t value = 0;
  const char* begin = json.data() + at + key.size();
  const auto [end, ec] = std::from_chars(begin, json.data() + json.size(), value);
  if (ec != std::errc() || end == begin) return std::nullopt;
  return value;
}

std::unique_ptr<httplib::Client> make_client(int port) {
  auto client = std::make_unique<httplib::Client>("127.0.0.1", port);
  client->set_keep_alive(true);
  client->set_tcp_nodelay(true);
  client->set_connection_timeout(std::chrono::seconds(5));
  client->set_read_timeout(std::chrono::seconds(60));
  client->set_write_timeout(std::chrono::seconds(60));
  return client;
}

// What was wrong with an answer, or nullopt for a 200 whose body contains `expect`.
std::optional<std::string> answer_problem(const httplib::Result& result, std::string_view expect) {
  if (!result) return "transport error: " + httplib::to_string(result.error());
  if (result->status != 200) {
    return "HTTP " + std::to_string(result->status) + " " + result->body.substr(0, 120);
  }
  if (result->body.find(expect) == std::string::npos) {
    return "200 without " + std::string(expect) + " in its body: " + result->body.substr(0, 120);
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// CPU time: where the machine's cores go (the load generator shares them with the server).

double clock_seconds(clockid_t clock) {
  timespec now{};
  ::clock_gettime(clock, &now);
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) / 1e9;
}

double thread_cpu_seconds() { return clock_seconds(CLOCK_THREAD_CPUTIME_ID); }
double process_cpu_seconds() { return clock_seconds(CLOCK_PROCESS_CPUTIME_ID); }

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
// Servers

using mq::testing::free_port;  // the tests' own helpers (tests/support/mqd_process.h)
using mq::testing::port_accepts;

// The framework's ceiling: cpp-httplib tuned as mqd/http_server.cc tunes it (tune() and run()), with a
// handler that does nothing but answer.
class TrivialServer {
 public:
  TrivialServer() {
    server_.set_tcp_nodelay(true);
    server_.set_keep_alive_max_count(1'000'000);
    server_.set_socket_options([this](socket_t socket) {
      int yes = 1;
      ::setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
      listen_socket_ = socket;  // only the listening socket passes through here
    });
    // A plain thread per connection (mqd's own connection layer is what is measured against it).
    server_.new_task_queue = [] { return new httplib::ThreadPool(kTrivialMaxThreads); };
    server_.Post("/produce", [](const httplib::Request&, httplib::Response& res) {
      res.status = 200;
      res.set_content(std::string(kTrivialAnswer), "application/json");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    if (port_ < 0 || listen_socket_ < 0) throw std::runtime_error("trivial server: cannot bind 127.0.0.1");
    if (::listen(listen_socket_, 4096) != 0) throw errno_error("listen (backlog 4096)");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~TrivialServer() {
    server_.stop();
    thread_.join();
  }
  TrivialServer(const TrivialServer&) = delete;
  TrivialServer& operator=(const TrivialServer&) = delete;

  int port() const { return port_; }

 private:
  socket_t listen_socket_ = -1;
  httplib::Server server_;
  int port_ = -1;
  std::thread thread_;
};

// A real mqd, spawned with its configuration in the environment, stopped with SIGTERM.
class MqdProcess {
 public:
  MqdProcess(const std::string& program, std::string data_dir, const std::string& log_path,
             std::string_view fsync, FailureLog& failures)
      : port_(free_port()),
        data_dir_(std::move(data_dir)),
        log_path_(log_path),
        label_("mqd FSYNC=" + std::string(fsync)),
        failures_(failures) {
    std::vector<std::string> strings = {"PORT=" + std::to_string(port_), "DATA_DIR=" + data_dir_,
                                        "TOPICS=" + std::string(kTopic) + ":" + std::to_string(kPartitions),
                                        "FSYNC=" + std::string(fsync)};
    std::vector<char*> envp;
    for (auto& s : strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0644);
    std::string argv0 = program;
    char* argv[] = {argv0.data(), nullptr};
    const int spawned = ::posix_spawn(&pid_, program.c_str(), &actions, nullptr, argv, envp.data());
    posix_spawn_file_actions_destroy(&actions);
    if (spawned != 0) {
      throw std::system_error(spawned, std::generic_category(), "posix_spawn " + program);
    }
    const auto deadline = Clock::now() + std::chrono::seconds(20);
    while (!port_accepts(port_)) {
      if (exited() || Clock::now() > deadline) {
        throw std::runtime_error(label_ + " did not start listening on 127.0.0.1:" + std::to_string(port_) +
                                 "; its stderr:\n" + log_tail());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));  // polling a port: no event to await
    }
  }
  ~MqdProcess() {
    if (!status_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    std::error_code ignored;
    stdfs::remove_all(data_dir_, ignored);
  }
  MqdProcess(const MqdProcess&) = delete;
  MqdProcess& operator=(const MqdProcess&) = delete;

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  const std::string& label() const { return label_; }

  // SIGTERM, then waits (bounded) for a clean exit; anything else is a failure.
  void stop() {
    ::kill(pid_, SIGTERM);
    const auto deadline = Clock::now() + std::chrono::seconds(20);
    while (!exited() && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (!status_) {
      failures_.add(label_, "did not exit within 20 s of SIGTERM");
    } else if (!WIFEXITED(*status_) || WEXITSTATUS(*status_) != 0) {
      failures_.add(label_,
                    "exit status " + std::to_string(*status_) + " after SIGTERM; stderr:\n" + log_tail());
    }
  }

 private:
  bool exited() {
    if (status_) return true;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) status_ = status;
    return status_.has_value();
  }
  std::string log_tail() const {
    std::ifstream in(log_path_);
    std::stringstream text;
    text << in.rdbuf();
    const std::string all = text.str();
    return all.size() > 2000 ? all.substr(all.size() - 2000) : all;
  }

  int port_;
  std::string data_dir_;
  std::string log_path_;
  std::string label_;
  FailureLog& failures_;
  pid_t pid_ = 0;
  std::optional<int> status_;
};

// mqd's /stats for the topic, parsed.
nlohmann::json mqd_stats(int port) {
  httplib::Client client("127.0.0.1", port);
  auto result = client.Get("/stats?topic=" + std::string(kTopic));
  if (auto problem = answer_problem(result, "\"topics\""))
    throw std::runtime_error("GET /stats: " + *problem);
  return nlohmann::json::parse(result->body);
}

std::uint64_t produced_messages(int port) {
  std::uint64_t sum = 0;
  const nlohmann::json stats = mqd_stats(port);  // kept alive: the loop reads inside it
  for (const auto& partition : stats.at("topics").at(0).at("partitions")) {
    sum += partition.at("next_offset").get<std::uint64_t>();
  }
  return sum;
}

// Whether mqd's /stats counts `expected` messages in the topic; a failure line when not.
bool check_produced(int port, std::uint64_t expected, const std::string& where, FailureLog& failures,
                    CheckTally& checks) {
  std::string problem;
  try {
    const std::uint64_t produced = produced_messages(port);
    if (produced == expected) {
      ++checks.passed;
      return true;
    }
    problem = "/stats counts " + std::to_string(produced) + " messages, the 200 answers promised " +
              std::to_string(expected);
  } catch (const std::exception& e) {
    problem = e.what();
  }
  ++checks.failed;
  failures.add(where, problem);
  return false;
}

// ---------------------------------------------------------------------------------------------
// Produce load: one thread per keep-alive connection, as fast as answers come back.

struct LoadRun {
  double requests_per_second = 0;
  double p50_us = 0;
  double p99_us = 0;
  double min_per_connection = 0;  // requests answered 200 inside the window, by the slowest connection
  double max_per_connection = 0;
  double client_cpu_us = 0;  // CPU time of the client threads per request answered in the window
  double server_cpu_us = 0;  // CPU time of the server per request answered in the window
  std::uint64_t sent = 0;    // every request, warm-up and window, whatever its answer
  std::uint64_t ok = 0;      // answered 200 with the expected body
};

// How the server's CPU time is read: mqd's from /proc; the in-process trivial server's as this
// process's minus the client threads'.
struct ServerCpu {
  std::function<double()> seconds;
  bool in_process = false;
};

struct ConnectionResult {
  std::vector<std::int64_t> latencies_ns;  // requests answered 200 inside the window
  std::uint64_t sent = 0;
  std::uint64_t ok = 0;
  std::map<std::string, std::uint64_t> problems;
  double cpu_seconds = 0;  // this client thread's CPU time from the window's start to its last request
};

// `connections` threads send `body` to target_of(connection) for the warm-up plus `seconds`; only
// requests that complete inside the window count towards rate and latency.
LoadRun run_load(int port, int connections, const std::function<std::string(int)>& target_of,
                 const std::string& body, std::string_view expect, double seconds,
                 const ServerCpu& server_cpu, const std::string& where, FailureLog& failures,
                 const std::function<void(std::string&, int, std::uint64_t)>& stamp = {}) {
  std::vector<ConnectionResult> results(static_cast<std::size_t>(connections));
  const auto start = Clock::now();
  const auto window_begin = start + kWarmup;
  const auto window_end =
      window_begin + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  double server_cpu_begin = 0;
  double server_cpu_end = 0;
  {
    std::vector<std::jthread> threads;
    for (int c = 0; c < connections; ++c) {
      threads.emplace_back([&, c] {
        ConnectionResult& mine = results[static_cast<std::size_t>(c)];
        mine.latencies_ns.reserve(1 << 16);
        const std::string target = target_of(c);
        std::string my_body = body;  // what `stamp` writes into before each request
        auto client = make_client(port);
        std::optional<double> cpu_begin;
        while (true) {
          if (stamp) stamp(my_body, c, mine.sent);  // before the clock: the request is what is timed
          const auto begin = Clock::now();
          if (!cpu_begin && begin >= window_begin) cpu_begin = thread_cpu_seconds();
          if (begin >= window_end) break;
          auto result = client->Post(target, my_body, "application/json");
          const auto end = Clock::now();
          ++mine.sent;
          if (auto problem = answer_problem(result, expect)) {
            ++mine.problems[*problem];
            if (!result) std::this_thread::sleep_for(std::chrono::milliseconds(1));
            continue;
          }
          ++mine.ok;
          if (end >= window_begin && end < window_end) mine.latencies_ns.push_back((end - begin).count());
        }
        if (cpu_begin) mine.cpu_seconds = thread_cpu_seconds() - *cpu_begin;
      });
    }
    std::this_thread::sleep_until(window_begin);
    server_cpu_begin = server_cpu.seconds();
    std::this_thread::sleep_until(window_end);
    server_cpu_end = server_cpu.seconds();
  }
  LoadRun run;
  double client_cpu = 0;
  std::vector<std::int64_t> latencies;
  std::uint64_t min_count = UINT64_MAX;
  std::uint64_t max_count = 0;
  for (ConnectionResult& r : results) {
    run.sent += r.sent;
    run.ok += r.ok;
    client_cpu += r.cpu_seconds;
    min_count = std::min<std::uint64_t>(min_count, r.latencies_ns.size());
    max_count = std::max<std::uint64_t>(max_count, r.latencies_ns.size());
    latencies.insert(latencies.end(), r.latencies_ns.begin(), r.latencies_ns.end());
    for (const auto& [problem, count] : r.problems) failures.add(where, problem, count);
  }
  if (min_count == 0) failures.add(where, "a connection had no request answered 200 inside the window");
  run.requests_per_second = static_cast<double>(latencies.size()) / seconds_between(window_begin, window_end);
  run.min_per_connection = static_cast<double>(min_count);
  run.max_per_connection = static_cast<double>(max_count);
  run.p50_us = percentile_us(latencies, 0.50);
  run.p99_us = percentile_us(latencies, 0.99);
  if (!latencies.empty()) {
    const double answered = static_cast<double>(latencies.size());
    const double server = server_cpu_end - server_cpu_begin - (server_cpu.in_process ? client_cpu : 0);
    run.client_cpu_us = client_cpu * 1e6 / answered;
    run.server_cpu_us = server * 1e6 / answered;
  }
  return run;
}

// ---------------------------------------------------------------------------------------------
// SSE delivery

// Pre-produces `per_partition` messages into each of `partitions` (0..partitions-1) with batch
// requests from kPreproduceThreads connections.
void preproduce(int port, int partitions, std::uint64_t per_partition, const std::string& where,
                FailureLog& failures) {
  std::vector<std::pair<int, std::size_t>> work;  // (partition, messages) per request
  for (int p = 0; p < partitions; ++p) {
    for (std::uint64_t done = 0; done < per_partition; done += kPreproduceBatch) {
      work.emplace_back(
          p, static_cast<std::size_t>(std::min<std::uint64_t>(kPreproduceBatch, per_partition - done)));
    }
  }
  std::atomic<std::size_t> next{0};
  const std::string full_batch = batch_body(kPreproduceBatch);
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < kPreproduceThreads; ++t) {
      threads.emplace_back([&] {
        auto client = make_client(port);
        for (std::size_t i; (i = next++) < work.size();) {
          const auto [partition, count] = work[i];
          auto result =
              client->Post(produce_target(partition),
                           count == kPreproduceBatch ? full_batch : batch_body(count), "application/json");
          if (auto problem = answer_problem(result, "\"offsets\""))
            failures.add(where + " pre-produce", *problem);
        }
      });
    }
  }
}

struct StreamRun {
  double events_per_second = 0;            // N / (streams opened -> last ack answered)
  double delivered_events_per_second = 0;  // N / (streams opened -> last event received)
  double min_per_consumer = 0;
  double max_per_consumer = 0;
  double ack_requests = 0;   // POST /ack requests of the run
  double server_cpu_us = 0;  // mqd's CPU time per event, streams opened -> last ack answered
};

// What the consumers of one run share.
class StreamState {
 public:
  explicit StreamState(std::uint64_t expected) : expected_(expected) {}

  void add_delivered(std::uint64_t n) {
    const std::uint64_t before = delivered_.fetch_add(n);
    if (before < expected_ && before + n >= expected_) {
      std::lock_guard lock(mutex_);
      delivered_at_ = Clock::now();
    }
  }
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
  Clock::time_point delivered_at() {
    std::lock_guard lock(mutex_);
    return delivered_at_;
  }
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
  Clock::time_point delivered_at_;  // GUARDED_BY(mutex_)
  Clock::time_point acked_at_;      // GUARDED_BY(mutex_)
};

// One consumer: an event stream read on one thread, its ids acknowledged in batches (whatever arrived
// while the previous ack was answered) on a second connection by a second thread.
class Consumer {
 public:
  Consumer(int port, int partition, StreamState& state, FailureLog& failures, std::string where)
      : partition_(partition),
        state_(state),
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
  std::uint64_t events() const { return events_.load(); }
  std::uint64_t ack_requests() const { return ack_requests_.load(); }

 private:
  bool closing() {
    std::lock_guard lock(mutex_);
    return closing_;
  }

  void read() {
    const std::string target =
        "/consume?" + group_query(partition_) + "&max_inflight=" + std::to_string(kMaxInflight);
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
          std::size_t position = 0;
          std::uint64_t redelivered = 0;
          for (std::size_t end; (end = buffer.find("\n\n", position)) != std::string::npos;
               position = end + 2) {
            const std::string_view block(buffer.data() + position, end - position);
            if (!block.starts_with("id: ")) continue;  // a ": keepalive" comment
            const std::size_t line_end = block.find('\n');
            ids.emplace_back(
                block.substr(4, line_end == std::string_view::npos ? std::string_view::npos : line_end - 4));
            if (number_field(block, "delivery").value_or(0) != 1) ++redelivered;
          }
          buffer.erase(0, position);
          if (redelivered != 0) failures_.add(where_, "event with delivery != 1 (a redelivery)", redelivered);
          if (!ids.empty()) {
            const std::uint64_t n = ids.size();
            {
              std::lock_guard lock(mutex_);
              for (auto& id : ids) pending_.push_back(std::move(id));
            }
            ids.clear();
            ready_.notify_one();
            events_ += n;
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
    const std::string target = "/ack?" + group_query(partition_);
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
      auto result = ack_client_->Post(target, body, "application/json");
      ++ack_requests_;
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

  const int partition_;
  StreamState& state_;
  FailureLog& failures_;
  const std::string where_;
  std::unique_ptr<httplib::Client> stream_client_;
  std::unique_ptr<httplib::Client> ack_client_;
  std::atomic<std::uint64_t> events_{0};
  std::atomic<std::uint64_t> ack_requests_{0};
  std::mutex mutex_;
  std::condition_variable ready_;
  std::vector<std::string> pending_;  // GUARDED_BY(mutex_)
  bool closing_ = false;              // GUARDED_BY(mutex_)
  std::thread reader_;
  std::thread acker_;
};

// After a stream run: every partition's group has acknowledged everything, nothing is in flight.
void check_group_done(int port, int partitions, const std::string& where, FailureLog& failures,
                      CheckTally& checks) {
  bool ok = true;
  nlohmann::json stats;
  try {
    stats = mqd_stats(port);
  } catch (const std::exception& e) {
    ++checks.failed;
    failures.add(where, e.what());
    return;
  }
  for (const auto& partition : stats.at("topics").at(0).at("partitions")) {
    const int p = partition.at("partition").get<int>();
    if (p >= partitions) continue;
    const auto next_offset = partition.at("next_offset").get<std::uint64_t>();
    bool found = false;
    for (const auto& group : partition.at("groups")) {
      if (group.at("group").get<std::string>() != kGroup) continue;
      found = true;
      const auto committed = group.at("committed_offset").get<std::uint64_t>();
      const auto inflight = group.at("inflight").get<std::uint64_t>();
      if (committed != next_offset || inflight != 0) {
        ok = false;
        failures.add(where, "partition " + std::to_string(p) + ": committed_offset " +
                                std::to_string(committed) + " of next_offset " + std::to_string(next_offset) +
                                ", inflight " + std::to_string(inflight));
      }
    }
    if (!found) {
      ok = false;
      failures.add(where,
                   "partition " + std::to_string(p) + ": no group " + std::string(kGroup) + " in /stats");
    }
  }
  ++(ok ? checks.passed : checks.failed);
}

// `consumers` consumers over `partitions` partitions (consumer c on partition c % partitions), after
// `events` messages were spread evenly over those partitions.
StreamRun run_streams(const std::string& mqd_program, ScratchDirectory& scratch, int partitions,
                      int consumers, std::uint64_t events, const std::string& where, FailureLog& failures,
                      CheckTally& checks) {
  MqdProcess mqd(mqd_program, scratch.fresh_path("data"), scratch.fresh_path("mqd-stderr"), "never",
                 failures);
  const std::uint64_t per_partition = events / static_cast<std::uint64_t>(partitions);
  const std::uint64_t expected = per_partition * static_cast<std::uint64_t>(partitions);
  preproduce(mqd.port(), partitions, per_partition, where, failures);
  if (!check_produced(mqd.port(), expected, where + " pre-produce", failures, checks)) {
    failures.add(where, "not measured: the pre-produced messages are not all there");
    mqd.stop();
    return {};
  }

  StreamState state(expected);
  StreamRun run;
  const auto start = Clock::now();
  const double cpu_begin = pid_cpu_seconds(mqd.pid());
  std::vector<std::unique_ptr<Consumer>> running;
  for (int c = 0; c < consumers; ++c) {
    running.push_back(std::make_unique<Consumer>(mqd.port(), c % partitions, state, failures, where));
  }
  const bool completed = state.wait_all_acked();
  run.server_cpu_us = (pid_cpu_seconds(mqd.pid()) - cpu_begin) * 1e6 / static_cast<double>(expected);
  std::uint64_t min_events = UINT64_MAX;
  std::uint64_t max_events = 0;
  for (auto& consumer : running) {
    consumer->close();
    min_events = std::min(min_events, consumer->events());
    max_events = std::max(max_events, consumer->events());
    run.ack_requests += static_cast<double>(consumer->ack_requests());
  }
  if (!completed) {
    failures.add(where, "stuck: " + std::to_string(state.delivered()) + " delivered, " +
                            std::to_string(state.acked()) + " acked of " + std::to_string(expected) +
                            ", nothing for " + std::to_string(kStallLimit.count()) + " s");
    mqd.stop();
    return run;
  }
  if (state.delivered() != expected) {
    failures.add(where, std::to_string(state.delivered()) + " events delivered for " +
                            std::to_string(expected) + " messages");
  }
  check_group_done(mqd.port(), partitions, where, failures, checks);
  mqd.stop();
  run.events_per_second = static_cast<double>(expected) / seconds_between(start, state.acked_at());
  run.delivered_events_per_second =
      static_cast<double>(expected) / seconds_between(start, state.delivered_at());
  run.min_per_consumer = static_cast<double>(min_events);
  run.max_per_consumer = static_cast<double>(max_events);
  return run;
}

// ---------------------------------------------------------------------------------------------
// The run

struct LoadCase {
  std::string label;
  std::vector<LoadRun> runs;
};

double min_of(const std::vector<LoadRun>& runs, double LoadRun::*metric) {
  double lowest = runs.front().*metric;
  for (const LoadRun& run : runs) lowest = std::min(lowest, run.*metric);
  return lowest;
}

std::uint64_t sum_of(const std::vector<LoadRun>& runs, std::uint64_t LoadRun::*metric) {
  std::uint64_t sum = 0;
  for (const LoadRun& run : runs) sum += run.*metric;
  return sum;
}

void print_progress(const std::string& label, int r, int repeat, const LoadRun& run, double per_request) {
  std::fprintf(stderr,
               "  %-34s run %d/%d: %9.0f req/s (%9.0f msgs/s), p50 %7.0f us, p99 %7.0f us, min/conn %.0f\n",
               label.c_str(), r + 1, repeat, run.requests_per_second, run.requests_per_second * per_request,
               run.p50_us, run.p99_us, run.min_per_connection);
}

// ---------------------------------------------------------------------------------------------
// 4. GET /messages?timestamp= (libmq/docs/log_format.md "The time index")

constexpr std::size_t kBrowsePayloadBytes = 1000;
constexpr std::size_t kBrowseBatch = 1000;
constexpr int kBrowseLookups = 500;

// Partition 0 of kTopic in `data_dir`, written with libmq up to `bytes` (FSYNC never: only its
// size matters); returns times every message is at or after (first) and some message is at or after
// (last).
std::pair<std::int64_t, std::int64_t> write_partition(const std::string& data_dir, std::uint64_t bytes) {
  if (free_bytes(stdfs::path(data_dir).parent_path().string()) < bytes + (1ULL << 30)) {
    throw std::runtime_error("not enough free space for a partition of " + std::to_string(bytes) +
                             " bytes (use a smaller --messages-gb)");
  }
  std::string json = "{\"pad\":\"" + std::string(kBrowsePayloadBytes - 10, 'x') + "\"}";
  auto payload = mq::Payload::parse(json);
  if (!payload.ok()) throw std::runtime_error(payload.status().to_string());
  const std::vector<mq::Message> batch(kBrowseBatch, mq::Message{*payload, std::nullopt});
  mq::StoreOptions options;
  options.data_dir = data_dir;
  options.fsync = mq::FsyncMode::kNever;
  auto store = mq::LogStore::open(options);
  if (!store.ok()) throw std::runtime_error(store.status().to_string());
  auto partition = (*store)->partition(kTopic, 0);
  if (!partition.ok()) throw std::runtime_error(partition.status().to_string());
  const auto now_ms = [] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  const std::int64_t first = now_ms();
  std::int64_t last = first;  // before the last append: its messages' timestamps are at least this
  while ((*partition)->log_bytes() < bytes) {
    last = now_ms();
    if (auto appended = (*partition)->append(batch); !appended.ok()) {
      throw std::runtime_error(appended.status().to_string());
    }
  }
  return {first, last};
}

// The timestamp of the first message in a /messages answer, or nullopt when it has none.
std::optional<std::int64_t> first_timestamp(const std::string& body) {
  auto at = body.find("\"timestamp\":");
  if (at == std::string::npos) return std::nullopt;
  return static_cast<std::int64_t>(number_field(body.substr(at), "timestamp").value_or(0));
}

void run_messages_by_time(const BenchOptions& options, const std::string& mqd_program,
                          ScratchDirectory& scratch, FailureLog& failures) {
  const std::string data_dir = scratch.fresh_path("browse");
  const auto bytes = static_cast<std::uint64_t>(options.messages_gb * kBytesPerGB);
  std::fprintf(stderr, "writing a partition of %.2f GB for GET /messages?timestamp=\n", options.messages_gb);
  // Not a structured binding: lambdas capture these (clang 14 cannot capture bindings).
  const auto written = write_partition(data_dir, bytes);
  const auto first = written.first;
  const auto last = written.second;
  MqdProcess mqd(mqd_program, data_dir, scratch.fresh_path("mqd-stderr"), "never", failures);
  auto client = make_client(mqd.port());
  std::uint64_t seed = 20261203;
  const std::string where = "GET /messages?timestamp=";
  auto lookup_ns = [&](std::int64_t t) -> std::int64_t {
    const std::string target =
        "/messages?topic=" + std::string(kTopic) + "&partition=0&limit=1&timestamp=" + std::to_string(t);
    const Clock::time_point start = Clock::now();
    auto result = client->Get(target);
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count();
    if (auto problem = answer_problem(result, "\"messages\":[")) {
      failures.add(where, *problem);
    } else if (auto found = first_timestamp(result->body); !found || *found < t) {
      failures.add(where, "the first message is not at or after " + std::to_string(t) + ": " +
                              result->body.substr(0, 200));
    }
    return ns;
  };
  auto random_time = [&] {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return first + static_cast<std::int64_t>((seed >> 33) % static_cast<std::uint64_t>(last - first + 1));
  };
  // The connection is opened (and mqd's first request served) before the first lookup is timed.
  if (auto problem = answer_problem(client->Get("/healthz"), "ok")) failures.add("GET /healthz", *problem);
  const double first_ms = static_cast<double>(lookup_ns(random_time())) / 1e6;
  std::vector<std::int64_t> latencies;
  for (int i = 0; i < kBrowseLookups; ++i) latencies.push_back(lookup_ns(random_time()));
  mqd.stop();
  std::printf(
      "\nGET /messages?timestamp=T&limit=1 on a partition of %.2f GB (%.1f s of timestamps), one "
      "keep-alive connection\n",
      options.messages_gb, static_cast<double>(last - first) / 1000.0);
  std::printf("%-52s %10s %10s %10s  %s\n", "case", "ms", "p50_ms", "p99_ms", "goal");
  std::printf("%-52s %10.3f %10s %10s  %s\n", "first lookup after mqd started (and a /healthz)", first_ms,
              "-", "-", "< 5 ms");
  std::printf("%-52s %10s %10.3f %10.3f  %s\n", (std::to_string(kBrowseLookups) + " random times").c_str(),
              "-", percentile_us(latencies, 0.5) / 1000.0, percentile_us(latencies, 0.99) / 1000.0, "< 5 ms");
}

void run_http_benchmark(const BenchOptions& options, ScratchDirectory& scratch) {
  const std::string mqd_program = options.mqd.empty() ? mqd_beside_this_program() : options.mqd;
  if (::access(mqd_program.c_str(), X_OK) != 0) {
    throw std::runtime_error("no executable mqd at " + mqd_program +
                             " (build it with `ninja -C build/main mqd` or pass --mqd PATH)");
  }
  std::printf("mqd: %s\n", mqd_program.c_str());
  std::fflush(stdout);

  FailureLog failures;
  CheckTally checks;
  const std::string single = single_body();
  const std::string batch = batch_body(kBatchMessages);
  const std::string options_batch = options_batch_body(kBatchMessages);
  const auto spread = [](int c) { return produce_target(c % kPartitions); };

  LoadCase trivial{"trivial handler (in-process)", {}};
  LoadCase never{"mqd FSYNC=never", {}};
  LoadCase always{"mqd FSYNC=always", {}};
  LoadCase batch_never{"mqd FSYNC=never", {}};
  LoadCase batch_always{"mqd FSYNC=always", {}};
  LoadCase options_never{"mqd FSYNC=never", {}};
  LoadCase options_always{"mqd FSYNC=always", {}};
  std::vector<StreamRun> stream_one;
  std::vector<StreamRun> stream_many;

  TrivialServer trivial_server;
  // Repeats are the outer loop, so that a slow phase of the shared machine spreads over every case.
  for (int r = 0; r < options.repeat; ++r) {
    trivial.runs.push_back(run_load(trivial_server.port(), kConnections, spread, single, "\"offset\"",
                                    options.seconds, ServerCpu{process_cpu_seconds, true},
                                    "single " + trivial.label, failures));
    print_progress("single " + trivial.label, r, options.repeat, trivial.runs.back(), 1);

    for (const std::string_view fsync : {"never", "always"}) {
      LoadCase& one = fsync == "never" ? never : always;
      LoadCase& many = fsync == "never" ? batch_never : batch_always;
      LoadCase& with_options = fsync == "never" ? options_never : options_always;
      MqdProcess mqd(mqd_program, scratch.fresh_path("data"), scratch.fresh_path("mqd-stderr"), fsync,
                     failures);
      const ServerCpu mqd_cpu{[pid = mqd.pid()] { return pid_cpu_seconds(pid); }, false};
      one.runs.push_back(run_load(mqd.port(), kConnections, spread, single, "\"offset\"", options.seconds,
                                  mqd_cpu, "single " + one.label, failures));
      print_progress("single " + one.label, r, options.repeat, one.runs.back(), 1);
      many.runs.push_back(run_load(
          mqd.port(), kBatchConnections, [](int c) { return produce_target(c % kPartitions); }, batch,
          "\"offsets\"", options.seconds, mqd_cpu, "batch " + many.label, failures));
      print_progress("batch " + many.label, r, options.repeat, many.runs.back(), kBatchMessages);
      with_options.runs.push_back(run_load(
          mqd.port(), kBatchConnections, [](int c) { return produce_target(c % kPartitions); }, options_batch,
          "\"offsets\"", options.seconds, mqd_cpu, "batch with options " + with_options.label, failures,
          stamp_dedup_ids));
      print_progress("options " + with_options.label, r, options.repeat, with_options.runs.back(),
                     kBatchMessages);
      // Every id is new: a message answered as a duplicate would be missing from this count.
      check_produced(
          mqd.port(),
          one.runs.back().ok + (many.runs.back().ok + with_options.runs.back().ok) * kBatchMessages,
          one.label + " produce", failures, checks);
      mqd.stop();
    }

    stream_one.push_back(
        run_streams(mqd_program, scratch, 1, 1, options.events, "SSE 1 consumer", failures, checks));
    std::fprintf(stderr, "  SSE 1 consumer   run %d/%d: %9.0f events/s\n", r + 1, options.repeat,
                 stream_one.back().events_per_second);
    stream_many.push_back(run_streams(mqd_program, scratch, kPartitions, kStreamConsumers, options.events,
                                      "SSE 16 consumers", failures, checks));
    std::fprintf(stderr, "  SSE 16 consumers run %d/%d: %9.0f events/s\n", r + 1, options.repeat,
                 stream_many.back().events_per_second);
  }

  // --- single-message produce
  const double ceiling = median_of(trivial.runs, &LoadRun::requests_per_second);
  std::printf(
      "\nsingle-message POST /produce: %d keep-alive connections (one client thread each, TCP_NODELAY), "
      "%zu-byte payload,\nconnection i -> partition i %% %d; %.1f s warm-up + %g s measured; median of %d "
      "runs\n",
      kConnections, kPayloadBytes, kPartitions, std::chrono::duration<double>(kWarmup).count(),
      options.seconds, options.repeat);
  std::printf("%-28s %8s %7s %7s %8s %8s %8s %8s %9s %7s %10s %14s\n", "case", "req/s", "p50_us", "p99_us",
              "min/conn", "max/conn", "cli_cpu", "srv_cpu", "sent", "non-200", "vs trivial", "target");
  for (const LoadCase* c : {&trivial, &never, &always}) {
    const double rps = median_of(c->runs, &LoadRun::requests_per_second);
    const std::uint64_t sent = sum_of(c->runs, &LoadRun::sent);
    const std::uint64_t ok = sum_of(c->runs, &LoadRun::ok);
    std::string target = "-";
    if (c != &trivial) {
      const double goal = c == &never ? kTargetNever : kTargetAlways;
      char text[64];
      std::snprintf(text, sizeof text, ">= %.0f%%: %s", goal * 100, rps >= goal * ceiling ? "met" : "MISSED");
      target = text;
    }
    std::printf("%-28s %8.0f %7.0f %7.0f %8.0f %8.0f %8.1f %8.1f %9llu %7llu %9.1f%% %14s\n",
                c->label.c_str(), rps, median_of(c->runs, &LoadRun::p50_us),
                median_of(c->runs, &LoadRun::p99_us), min_of(c->runs, &LoadRun::min_per_connection),
                median_of(c->runs, &LoadRun::max_per_connection), median_of(c->runs, &LoadRun::client_cpu_us),
                median_of(c->runs, &LoadRun::server_cpu_us), static_cast<unsigned long long>(sent),
                static_cast<unsigned long long>(sent - ok), 100 * rps / ceiling, target.c_str());
  }
  std::printf(
      "min/conn: fewest requests answered 200 inside the window on one connection (lowest over runs), "
      "max/conn: "
      "the most (median);\ncli_cpu/srv_cpu: CPU us per request of the 64 client threads / of the server (mqd "
      "from "
      "/proc, the in-process\ntrivial server as process minus client threads); sent, non-200: all runs, "
      "warm-up "
      "included\n");

  // --- batch produce
  std::printf(
      "\nbatch POST /produce: %d keep-alive connections, {\"messages\":[%zu x %zu-byte payload]}, connection "
      "i "
      "-> partition i; median of %d runs\n",
      kBatchConnections, kBatchMessages, kPayloadBytes, options.repeat);
  std::printf("%-28s %10s %8s %7s %7s %8s %9s %9s %9s %7s\n", "case", "msgs/s", "req/s", "p50_us", "p99_us",
              "min/conn", "cli_cpu", "srv_cpu", "sent", "non-200");
  for (const LoadCase* c : {&batch_never, &batch_always}) {
    const double rps = median_of(c->runs, &LoadRun::requests_per_second);
    const std::uint64_t sent = sum_of(c->runs, &LoadRun::sent);
    std::printf("%-28s %10.0f %8.0f %7.0f %7.0f %8.0f %9.1f %9.1f %9llu %7llu\n", c->label.c_str(),
                rps * static_cast<double>(kBatchMessages), rps, median_of(c->runs, &LoadRun::p50_us),
                median_of(c->runs, &LoadRun::p99_us), min_of(c->runs, &LoadRun::min_per_connection),
                median_of(c->runs, &LoadRun::client_cpu_us), median_of(c->runs, &LoadRun::server_cpu_us),
                static_cast<unsigned long long>(sent),
                static_cast<unsigned long long>(sent - sum_of(c->runs, &LoadRun::ok)));
  }
  std::printf("(cpu columns per request of 100 messages)\n");
  // Issue 14's goal for the options, measured through mqd as a user of the HTTP API sees it (options_bench
  // measures the library alone).
  std::printf(
      "\nthe same batches with 3 headers and a unique dedup_id on every message (as options_bench's): "
      "%zu B a request instead of %zu\n",
      options_batch.size(), batch.size());
  std::printf("%-28s %10s %10s %8s %8s %9s %12s\n", "case", "msgs/s", "without", "p99_us", "srv_cpu",
              "with/without", "goal");
  for (const auto& [with, without] :
       {std::pair{&options_never, &batch_never}, std::pair{&options_always, &batch_always}}) {
    const double rate = median_of(with->runs, &LoadRun::requests_per_second);
    const double base = median_of(without->runs, &LoadRun::requests_per_second);
    std::printf("%-28s %10.0f %10.0f %8.0f %8.1f %8.1f%% %12s\n", with->label.c_str(),
                rate * static_cast<double>(kBatchMessages), base * static_cast<double>(kBatchMessages),
                median_of(with->runs, &LoadRun::p99_us), median_of(with->runs, &LoadRun::server_cpu_us),
                100 * rate / base,
                with == &options_always ? (rate >= 0.85 * base ? ">= 85%: met" : ">= 85%: MISSED") : "-");
  }

  // --- SSE delivery
  std::printf(
      "\nSSE delivery (mqd FSYNC=never, a fresh mqd per run): %llu messages pre-produced in %zu-message "
      "batches, then GET /consume\ngroup=%s max_inflight=%d; each consumer acks what it has received with "
      "one "
      "POST /ack {\"ids\":[...]} at a time\non a second connection; events/s = N / (streams opened -> last "
      "ack "
      "answered); median of %d runs\n",
      static_cast<unsigned long long>(options.events), kPreproduceBatch, std::string(kGroup).c_str(),
      kMaxInflight, options.repeat);
  std::printf("%-52s %10s %12s %9s %9s %9s %8s\n", "case", "events/s", "delivered/s", "min/cons", "max/cons",
              "ack reqs", "srv_cpu");
  const auto stream_row = [](const char* label, const std::vector<StreamRun>& runs) {
    std::printf("%-52s %10.0f %12.0f %9.0f %9.0f %9.0f %8.2f\n", label,
                median_of(runs, &StreamRun::events_per_second),
                median_of(runs, &StreamRun::delivered_events_per_second),
                median_of(runs, &StreamRun::min_per_consumer), median_of(runs, &StreamRun::max_per_consumer),
                median_of(runs, &StreamRun::ack_requests), median_of(runs, &StreamRun::server_cpu_us));
  };
  stream_row("1 consumer, all N in partition 0", stream_one);
  stream_row("16 consumers, N/8 in each of 8 partitions, 2 each", stream_many);
  std::printf(
      "delivered/s: N / (streams opened -> last event received); min/max/cons: events one consumer received; "
      "ack reqs: POST /ack\nrequests per run; srv_cpu: mqd CPU us per event\n");

  if (options.messages_gb > 0) run_messages_by_time(options, mqd_program, scratch, failures);

  // --- verdict
  std::printf(
      "\nchecks: %d passed, %d failed (mqd /stats next_offset == messages answered 200; after each SSE "
      "run every partition's group committed_offset == next_offset with nothing in flight)\n",
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
  return mq::bench::run_main("http_bench", kUsage, argc, argv, parse_options, run_http_benchmark);
}

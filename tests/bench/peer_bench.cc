// peer_bench: mqd beside Redis Streams and NATS JetStream in one run, the same shapes for each at equal
// durability, with a small report (Markdown tables, SVG charts drawn by gnuplot).
//
//   peer_bench [--seconds S] [--repeat R] [--messages N] [--rate R] [--levels always,never]
//              [--systems mqd,redis,nats] [--shapes single,batch,e2e,latency] [--mqd PATH] [--redis-server
//              PATH] [--nats-server PATH]
//              [--dir PATH] [--report DIR]
//
// Every server is spawned here on 127.0.0.1, fresh for each repetition of a level:
//   always  mqd FSYNC=always | redis-server --appendonly yes --appendfsync always --save "".
//           NATS is not at this level: nats-server 2.9.10 cannot fsync before its PubAck.
//   never   mqd FSYNC=never | redis-server --appendonly yes --appendfsync no --save "" | nats-server -js with
//           stream BENCH (subjects bench.>, file storage, 1 replica), which writes a message to its file
//           before the PubAck and fsyncs on a 2-minute timer.
// So at both levels an acknowledged message has been written (it survives kill -9 of the server), and at
// "always" it has also been fsync'ed (it survives a power cut).
//
// Shapes. Payloads are 100-byte JSON {"t":<steady_clock ns at send>,"seq":<n>,"pad":"x..."}; "partition" p is
// mqd's partition p of topic <shape>, Redis's stream key bench:<shape>:<p>, NATS's subject bench.<shape>.<p>.
//   single   one message per call, each client waiting for its acknowledgement: mqd 64 HTTP keep-alive
//            connections (POST /produce), Redis 50 connections (XADD), NATS 64 js_Publish callers sharing 8
//            connections. 0.5 s warm-up, then --seconds measured: messages/s, latency of one call.
//   batch    4 producers: mqd 100 messages per POST /produce; Redis 16 XADDs pipelined per round trip (as
//            redis-benchmark -P 16); NATS js_PublishAsync with at most 256 PubAcks outstanding per producer.
//   e2e      --messages from 4 batch producers while 4 consumers receive and acknowledge in batches. mqd: an
//            SSE stream per partition (consumer c holds partitions c and c+4), one POST /ack per received
//            batch; Redis: XREADGROUP COUNT 100, one XACK per key; NATS: one durable pull consumer with
//            explicit acks, Fetch(100), natsMsg_Ack of each, one flush. Messages/s from start to the last
//            acknowledgement; produce -> delivery latency.
//   latency  --rate messages/s from 64 paced single-message callers into one partition, one consumer:
//            produce -> delivery p50/p99/p99.9, from each message's scheduled send time (a producer that
//            falls behind shows as latency, not as fewer samples).
// Checked in every run: every call answered without error; the server's own count of stored messages equals
// the acknowledged ones; for e2e and latency every message delivered and acknowledged, nothing left pending.
// A failure is a FAIL line and exit status 1. Results go to stdout, progress to stderr; every number is a
// median over --repeat runs, the systems interleaved within each repetition.
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <httplib.h>
#include <nats/nats.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <latch>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "bench_support.h"
#include "mqd_process.h"

extern char** environ;  // handed to gnuplot

namespace {

using Clock = std::chrono::steady_clock;
namespace stdfs = std::filesystem;
using namespace mq::bench;

constexpr std::size_t kPayloadBytes = 100;
constexpr int kPartitions = 8;
constexpr std::chrono::milliseconds kWarmup{500};
constexpr int kMqdSingleConnections = 64;
constexpr int kRedisSingleClients = 50;
constexpr int kNatsSinglePublishers = 64;
// The NATS callers of single and latency share this many connections (8 callers each): NATS multiplexes
// requests on a connection, and 64 connections (two libnats threads each) cost this 2-core machine's client
// so much CPU that NATS did ~40 % fewer msgs/s.
constexpr std::size_t kNatsSharedConnections = 8;
constexpr int kBatchProducers = 4;
constexpr std::size_t kMqdBatchMessages = 100;
constexpr std::size_t kRedisPipeline = 16;
constexpr std::size_t kNatsAsyncChunk = 100;  // messages handed to js_PublishAsync per producer loop
constexpr int kNatsMaxPending = 256;
constexpr int kE2eConsumers = 4;
constexpr int kConsumerBatch = 100;    // XREADGROUP COUNT, Fetch batch
constexpr int kMqdMaxInflight = 1000;  // per SSE stream
constexpr int kPacedCallers = 64;      // latency shape: the concurrency of the single shape
constexpr int kPollWaitMs = 100;       // XREADGROUP BLOCK, Fetch timeout: how soon a consumer sees a stop
constexpr std::chrono::seconds kAckWait{60};  // visibility timeout / AckWait: far longer than a run
constexpr std::chrono::seconds kStallLimit{30};
constexpr double kKeptUp = 0.95;  // latency shape: below this share of --rate the system did not keep up
constexpr const char* kGroup = "bench";
constexpr const char* kNatsStream = "BENCH";
const std::vector<std::string> kAllSystems = {"mqd", "redis", "nats"};
const std::vector<std::string> kAllLevels = {"always", "never"};

enum class Shape { kSingle, kBatch, kE2e, kLatency };
constexpr Shape kShapes[] = {Shape::kSingle, Shape::kBatch, Shape::kE2e, Shape::kLatency};

const char* shape_name(Shape shape) {
  switch (shape) {
    case Shape::kSingle:
      return "single";
    case Shape::kBatch:
      return "batch";
    case Shape::kE2e:
      return "e2e";
    case Shape::kLatency:
      return "latency";
  }
  return "?";
}

constexpr std::string_view kUsage =
    "usage: peer_bench [--seconds S] [--repeat R] [--messages N] [--rate R] [--levels always,never]\n"
    "                  [--systems mqd,redis,nats] [--shapes single,batch,e2e,latency] [--mqd PATH]\n"
    "                  [--redis-server PATH] [--nats-server PATH]\n"
    "                  [--dir PATH] [--report DIR]\n"
    "  --seconds S          measured seconds of single and batch (after a 0.5 s warm-up) and of latency\n"
    "                       (default 3)\n"
    "  --repeat R           repetitions; medians reported, systems interleaved in each (default 3)\n"
    "  --messages N         messages of each e2e run (default 200000)\n"
    "  --rate R             messages/s of the latency shape (default 12000)\n"
    "  --levels LIST        durability levels: always (fsync per acknowledged write), never (default both)\n"
    "  --systems LIST       subset of mqd,redis,nats (default all; nats runs at level never only)\n"
    "  --shapes LIST        subset of single,batch,e2e,latency (default all)\n"
    "  --mqd PATH           default: ../../mqd/mqd relative to this program\n"
    "  --redis-server PATH  default: $REDIS_SERVER, else /usr/bin/redis-server\n"
    "  --nats-server PATH   default: nats-server in $PATH, else /usr/sbin/nats-server (Debian's place)\n"
    "  --dir PATH           where server data goes; a fresh peer_bench.XXXXXX directory is made in it and\n"
    "                       removed at the end (default: $TMPDIR or /tmp)\n"
    "  --report DIR         also write DIR/peer_bench.md and, with gnuplot, DIR/throughput.svg and\n"
    "                       DIR/latency.svg\n"
    "Everything runs on 127.0.0.1; the client threads share the machine's cores with the servers.\n";

// ---------------------------------------------------------------------------------------------
// Command line

struct BenchOptions : CommonOptions {
  double seconds = 3;
  int repeat = 3;
  std::uint64_t messages = 200000;
  double rate = 12000;
  std::vector<std::string> levels = kAllLevels;
  std::vector<std::string> systems = kAllSystems;
  std::vector<Shape> shapes{std::begin(kShapes), std::end(kShapes)};
  std::string mqd;
  std::string redis_server;
  std::string nats_server;
  std::optional<std::string> report;
  std::string command_line;  // as given, for the report
};

bool contains(const std::vector<std::string>& names, std::string_view name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

// The names in comma-separated `text`, each one of `allowed`, in the order of `allowed`.
std::vector<std::string> parse_list(std::string_view flag, std::string_view text,
                                    const std::vector<std::string>& allowed) {
  std::vector<std::string> given;
  for (std::size_t start = 0; start <= text.size();) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    given.emplace_back(text.substr(start, comma - start));
    if (!contains(allowed, given.back())) {
      throw UsageError(std::string(flag) + ": unknown name '" + given.back() + "'");
    }
    start = comma + 1;
  }
  std::vector<std::string> chosen;
  std::copy_if(allowed.begin(), allowed.end(), std::back_inserter(chosen),
               [&](const std::string& name) { return contains(given, name); });
  return chosen;
}

// The systems measured at `level`: NATS cannot fsync before its PubAck, so it is not at "always".
std::vector<std::string> systems_at(const BenchOptions& options, const std::string& level) {
  std::vector<std::string> systems;
  for (const auto& name : options.systems) {
    if (name != "nats" || level != "always") systems.push_back(name);
  }
  return systems;
}

std::optional<std::string> find_in_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    const std::string candidate = (dir.empty() ? "." : dir) + "/" + program;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return std::nullopt;
}

BenchOptions parse_options(int argc, char** argv) {
  BenchOptions options;
  const auto text = [](std::string& target) {
    return [&target](std::string_view value) { target = std::string(value); };
  };
  parse_flags(
      argc, argv, options,
      {number_flag("--seconds", options.seconds), number_flag("--repeat", options.repeat),
       number_flag("--messages", options.messages), number_flag("--rate", options.rate),
       Flag{"--levels", [&](std::string_view v) { options.levels = parse_list("--levels", v, kAllLevels); }},
       Flag{"--systems",
            [&](std::string_view v) { options.systems = parse_list("--systems", v, kAllSystems); }},
       Flag{"--shapes",
            [&](std::string_view v) {
              std::vector<std::string> names;
              for (const Shape shape : kShapes) names.push_back(shape_name(shape));
              options.shapes.clear();
              for (const auto& name : parse_list("--shapes", v, names)) {
                for (const Shape shape : kShapes) {
                  if (shape_name(shape) == name) options.shapes.push_back(shape);
                }
              }
            }},
       Flag{"--mqd", text(options.mqd)}, Flag{"--redis-server", text(options.redis_server)},
       Flag{"--nats-server", text(options.nats_server)},
       Flag{"--report", [&](std::string_view v) { options.report = std::string(v); }}});
  if (!(options.seconds > 0)) throw UsageError("--seconds must be more than 0");
  if (options.repeat < 1) throw UsageError("--repeat must be at least 1");
  if (options.messages < static_cast<std::uint64_t>(kBatchProducers))
    throw UsageError("--messages must be >= 4");
  if (!(options.rate >= 1)) throw UsageError("--rate must be at least 1");
  bool anything = false;
  for (const auto& level : options.levels) anything = anything || !systems_at(options, level).empty();
  if (!anything) throw UsageError("nothing to run: NATS is measured at level never only");
  if (options.redis_server.empty()) {
    const char* env = std::getenv("REDIS_SERVER");
    options.redis_server = env != nullptr && *env != '\0' ? env : "/usr/bin/redis-server";
  }
  if (options.nats_server.empty()) {
    options.nats_server = find_in_path("nats-server").value_or("/usr/sbin/nats-server");
  }
  for (int i = 0; i < argc; ++i) {
    const std::string arg = argv[i];
    options.command_line += (i == 0 ? "" : " ");
    options.command_line += arg.find_first_of(" \"'") == std::string::npos ? arg : "'" + arg + "'";
  }
  return options;
}

// ---------------------------------------------------------------------------------------------
// Payloads, failures, small helpers

std::int64_t to_ns(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}
std::int64_t now_ns() { return to_ns(Clock::now()); }

// {"t":<send_ns>,"seq":<seq>,"pad":"xxx..."}, exactly kPayloadBytes bytes.
std::string make_payload(std::int64_t send_ns, std::uint64_t seq) {
  std::string json = "{\"t\":" + std::to_string(send_ns) + ",\"seq\":" + std::to_string(seq) + ",\"pad\":\"";
  json.append(kPayloadBytes - json.size() - 2, 'x');
  return json + "\"}";
}

// The number after `key` (such as `"t":`) in `text`.
template <typename Number>
std::optional<Number> number_field(std::string_view text, std::string_view key) {
  const std::size_t at = text.find(key);
  if (at == std::string_view::npos) return std::nullopt;
  Number value{};
  const char* begin = text.data() + at + key.size();
  const auto [end, ec] = std::from_chars(begin, text.data() + text.size(), value);
  if (ec != std::errc() || end == begin) return std::nullopt;
  return value;
}

// Every failure is counted under the run it happened in ("never/e2e/nats") and printed, never dropped.
class FailureLog {
 public:
  void add(const std::string& where, const std::string& what) {
    std::lock_guard lock(mutex_);
    if (counts_[where + ": " + what]++ == 0)
      std::fprintf(stderr, "  FAIL %s: %s\n", where.c_str(), what.c_str());
  }
  // The failures of run `where`, or of all runs.
  std::uint64_t count(const std::string& where = "") const {
    std::lock_guard lock(mutex_);
    std::uint64_t sum = 0;
    for (const auto& [line, n] : counts_) sum += where.empty() || line.starts_with(where + ": ") ? n : 0;
    return sum;
  }
  void print() const {
    std::lock_guard lock(mutex_);
    for (const auto& [line, n] : counts_) {
      std::printf("FAIL %s (x%llu)\n", line.c_str(), static_cast<unsigned long long>(n));
    }
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::uint64_t> counts_;  // GUARDED_BY(mutex_)
};

std::string file_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The first line `program --version` prints, for the header.
std::string version_of(const std::string& program) {
  std::string quoted = "'";
  for (const char c : program) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  FILE* output = ::popen((quoted + "' --version 2>&1").c_str(), "r");
  if (output == nullptr) return "unknown";
  char line[512] = "unknown";
  if (std::fgets(line, sizeof line, output) == nullptr) std::snprintf(line, sizeof line, "unknown");
  ::pclose(output);
  std::string text = line;
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text;
}

// User plus system CPU seconds of process `pid`, from /proc (clock-tick resolution): which side of the
// loopback the cores went to.
double cpu_seconds(pid_t pid) {
  const std::string stat = file_text("/proc/" + std::to_string(pid) + "/stat");
  const std::size_t paren = stat.rfind(')');  // the command name may hold spaces
  if (paren == std::string::npos) return 0;
  std::istringstream fields(stat.substr(paren + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) ticks += i >= 14 ? std::stod(field) : 0;  // utime, stime
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// ---------------------------------------------------------------------------------------------
// Servers: the tests' ServerProcess spawns them and kills them if this program dies.

class SpawnedServer {
 public:
  SpawnedServer(std::string label, const std::string& program, std::vector<std::string> args,
                std::map<std::string, std::string> env, int port, std::string data_dir,
                int stop_signal = SIGTERM)
      : label_(std::move(label)), data_dir_(std::move(data_dir)), stop_signal_(stop_signal) {
    if (::access(program.c_str(), X_OK) != 0) throw std::runtime_error(label_ + ": no program at " + program);
    stdfs::create_directories(data_dir_);
    const std::string log = data_dir_ + ".log";
    process_ = std::make_unique<mq::testing::ServerProcess>(program, std::move(args), std::move(env), log,
                                                            log + ".out");
    if (!process_->wait_until_listening(port)) {
      throw std::runtime_error(label_ + " did not start listening on 127.0.0.1:" + std::to_string(port) +
                               "; its stderr:\n" + file_text(log));
    }
  }
  ~SpawnedServer() {
    process_.reset();  // kills it if stop() did not run
    std::error_code ignored;
    stdfs::remove_all(data_dir_, ignored);
  }
  SpawnedServer(const SpawnedServer&) = delete;
  SpawnedServer& operator=(const SpawnedServer&) = delete;

  pid_t pid() const { return process_->pid(); }
  // The stop signal and a bounded wait; an unclean exit is reported, not fatal: the runs are measured
  // already.
  void stop() {
    const auto status = process_->stop(stop_signal_, std::chrono::seconds(20));
    if (!status || !WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
      std::fprintf(stderr, "  warning: %s: %s after signal %d\n", label_.c_str(),
                   status ? ("wait status " + std::to_string(*status)).c_str() : "no exit within 20 s of",
                   stop_signal_);
    }
  }

 private:
  std::string label_;
  std::string data_dir_;
  int stop_signal_;
  std::unique_ptr<mq::testing::ServerProcess> process_;
};

// ---------------------------------------------------------------------------------------------
// One run: what its clients report to, and what every system offers them

// Messages the producers had acknowledged, and how many of them inside the measured window.
class ProduceTally {
 public:
  // Set before any producer starts (thread creation orders it before their reads).
  void set_window(Clock::time_point begin, Clock::time_point end) {
    begin_ = begin;
    end_ = end;
  }
  void acked(std::uint64_t n, Clock::time_point at) {
    total_ += n;
    if (at >= begin_ && at < end_) in_window_ += n;
  }
  std::uint64_t total() const { return total_.load(); }
  std::uint64_t in_window() const { return in_window_.load(); }

 private:
  Clock::time_point begin_ = Clock::time_point::min();
  Clock::time_point end_ = Clock::time_point::max();
  std::atomic<std::uint64_t> total_{0};
  std::atomic<std::uint64_t> in_window_{0};
};

// What the consumers of one run saw: each seq's first delivery and its latency, and acknowledgements.
class DeliveryLog {
 public:
  // What one consuming thread records, apart from the others so that threads share no vector.
  struct Reader {
    std::vector<std::int64_t> latencies_ns;
    std::uint64_t duplicates = 0;
  };

  explicit DeliveryLog(std::uint64_t expected) : expected_(expected), seen_(expected) {}

  Reader& add_reader() {
    std::lock_guard lock(mutex_);
    return *readers_.emplace_back(std::make_unique<Reader>());
  }
  // A message delivered at `at_ns`: true for the first delivery of its seq, false for a redelivery, nullopt
  // for a payload that is not one of this run's.
  std::optional<bool> received(Reader& reader, std::string_view message, std::int64_t at_ns) {
    const auto sent = number_field<std::int64_t>(message, "\"t\":");
    const auto seq = number_field<std::uint64_t>(message, "\"seq\":");
    if (!sent || !seq || *seq >= expected_) return std::nullopt;
    last_progress_ns_ = at_ns;
    if (seen_[*seq].exchange(true)) {
      ++reader.duplicates;
      return false;
    }
    reader.latencies_ns.push_back(at_ns - *sent);
    return true;
  }
  // The acknowledgement of `fresh` first deliveries has been answered.
  void acked(std::uint64_t fresh) {
    if (fresh == 0) return;
    last_progress_ns_ = now_ns();
    if (done_.fetch_add(fresh) + fresh >= expected_) {
      std::lock_guard lock(mutex_);
      if (!finished_) finished_ = Clock::now();
      changed_.notify_all();
    }
  }
  // Waits until every message is acknowledged; false on `failed` or when nothing moved for kStallLimit.
  bool wait(const std::atomic<bool>& failed) {
    std::unique_lock lock(mutex_);
    while (!finished_) {
      changed_.wait_for(lock, std::chrono::milliseconds(200));
      if (!finished_ &&
          (failed || now_ns() - last_progress_ns_ > std::chrono::nanoseconds(kStallLimit).count())) {
        return false;
      }
    }
    return true;
  }
  Clock::time_point finished() {
    std::lock_guard lock(mutex_);
    return finished_.value_or(Clock::now());
  }
  std::uint64_t done() const { return done_.load(); }
  std::uint64_t never_delivered() const {
    return static_cast<std::uint64_t>(
        std::count_if(seen_.begin(), seen_.end(), [](const auto& s) { return !s; }));
  }
  // After the consumers have stopped: every first delivery's latency, and the number of redeliveries.
  std::pair<std::vector<std::int64_t>, std::uint64_t> results() {
    std::lock_guard lock(mutex_);
    std::pair<std::vector<std::int64_t>, std::uint64_t> all;
    for (const auto& r : readers_) {
      all.first.insert(all.first.end(), r->latencies_ns.begin(), r->latencies_ns.end());
      all.second += r->duplicates;
    }
    return all;
  }

 private:
  const std::uint64_t expected_;
  std::vector<std::atomic<bool>> seen_;
  std::atomic<std::uint64_t> done_{0};
  std::atomic<std::int64_t> last_progress_ns_{now_ns()};
  std::mutex mutex_;
  std::condition_variable changed_;
  std::optional<Clock::time_point> finished_;     // GUARDED_BY(mutex_)
  std::vector<std::unique_ptr<Reader>> readers_;  // GUARDED_BY(mutex_)
};

// One run of one shape on one system: where its failures are counted and what its clients report to.
struct RunContext {
  RunContext(std::string label, FailureLog& log) : where(std::move(label)), failures(log) {}
  void fail(const std::string& what) {
    failed = true;
    failures.add(where, what);
  }

  const std::string where;
  FailureLog& failures;
  std::atomic<bool> failed{false};
  ProduceTally produced;
  DeliveryLog* delivered = nullptr;  // the shapes with consumers
};

// What one run writes to and reads from: the shape names the topic, stream keys, subjects and consumer.
struct Target {
  Shape shape;
  int partitions;
  std::string name() const { return shape_name(shape); }
};

// One producer, used by one thread. send(partition, payloads): a synchronous producer returns once the system
// has acknowledged them and they are counted in the run's ProduceTally, an asynchronous one once they are
// handed over (each counted as its acknowledgement comes); false after a failure, which it reported to the
// run. finish() waits for every acknowledgement still outstanding.
struct Producer {
  std::function<bool(int partition, const std::vector<std::string>& payloads)> send;
  std::function<void()> finish = [] {};
};

// The consumer threads of one run; each is asked to stop and joined when the vector is destroyed.
using Consumers = std::vector<std::jthread>;

class System {
 public:
  virtual ~System() = default;
  virtual std::string name() const = 0;
  virtual pid_t pid() const = 0;  // the server's
  virtual int single_clients() const = 0;
  virtual std::size_t batch_messages() const = 0;  // per send() of a batch producer
  virtual Producer producer(const Target& target, bool single, RunContext& run) = 0;
  // Makes the consumer group, positioned at the start, before anything is produced.
  virtual void create_group(const Target&) {}
  virtual Consumers consumers(const Target& target, int count, RunContext& run) = 0;
  // What is wrong with the server's own account of the run: `expected` messages stored and, with `consumed`,
  // all acknowledged by the group; nullopt when it agrees.
  virtual std::optional<std::string> verify(const Target& target, std::uint64_t expected, bool consumed) = 0;
  virtual void clean(const Target&) {}  // drops what the run stored
  virtual void stop() = 0;
};

// ---------------------------------------------------------------------------------------------
// mqd: POST /produce, GET /consume (SSE), POST /ack over cpp-httplib keep-alive connections.

std::shared_ptr<httplib::Client> make_client(int port) {
  auto client = std::make_shared<httplib::Client>("127.0.0.1", port);
  client->set_keep_alive(true);
  client->set_tcp_nodelay(true);  // else every answer waits ~40 ms for a delayed ACK
  client->set_connection_timeout(std::chrono::seconds(5));
  client->set_read_timeout(std::chrono::seconds(60));  // beyond the SSE heartbeat
  client->set_write_timeout(std::chrono::seconds(60));
  return client;
}

// What was wrong with an answer, or nullopt for a 200 whose body contains `expect`.
std::optional<std::string> answer_problem(const httplib::Result& result, std::string_view expect) {
  if (!result) return "transport error: " + httplib::to_string(result.error());
  if (result->status != 200)
    return "HTTP " + std::to_string(result->status) + " " + result->body.substr(0, 120);
  if (result->body.find(expect) == std::string::npos) return "200 without " + std::string(expect);
  return std::nullopt;
}

class MqdSystem final : public System {
 public:
  MqdSystem(const std::string& program, const std::string& level, const std::string& data_dir)
      : port_(mq::testing::free_port()),
        server_("mqd FSYNC=" + level, program, {},
                {{"PORT", std::to_string(port_)},
                 {"DATA_DIR", data_dir},
                 {"FSYNC", level},
                 {"TOPICS", "single:8,batch:8,e2e:8,latency:1"}},
                port_, data_dir) {}

  std::string name() const override { return "mqd"; }
  pid_t pid() const override { return server_.pid(); }
  int single_clients() const override { return kMqdSingleConnections; }
  std::size_t batch_messages() const override { return kMqdBatchMessages; }

  Producer producer(const Target& target, bool, RunContext& run) override {
    auto client = make_client(port_);
    client->Get("/healthz");  // connects now, as the other systems' clients do, not inside the measurement
    return {[client, topic = target.name(), &run](int partition, const std::vector<std::string>& payloads) {
      std::string body = "{\"payload\":" + payloads.front() + "}";
      if (payloads.size() > 1) {
        body = "{\"messages\":[";
        for (const auto& payload : payloads)
          body += (body.back() == '[' ? "{\"payload\":" : ",{\"payload\":") + payload + "}";
        body += "]}";
      }
      const auto result = client->Post("/produce?topic=" + topic + "&partition=" + std::to_string(partition),
                                       body, "application/json");
      if (auto problem = answer_problem(result, payloads.size() == 1 ? "\"offset\"" : "\"offsets\"")) {
        run.fail("POST /produce: " + *problem);
        return false;
      }
      run.produced.acked(payloads.size(), Clock::now());
      return true;
    }};
  }

  // mqd is consumed per partition: a stream each, read on one thread, while a second thread acknowledges on a
  // second connection, one POST /ack for everything that arrived while the previous one was being answered.
  // (Consumer c of `count` holds the partitions p with p % count == c, which changes nothing on the wire.)
  Consumers consumers(const Target& target, int, RunContext& run) override {
    Consumers threads;
    for (int p = 0; p < target.partitions; ++p) {
      auto pending = std::make_shared<PendingAcks>();
      const std::string query =
          "topic=" + target.name() + "&partition=" + std::to_string(p) + "&group=" + std::string(kGroup);
      threads.emplace_back(
          [this, pending, query, &run](std::stop_token stop) { read(stop, query, *pending, run); });
      threads.emplace_back(
          [this, pending, query, &run](std::stop_token stop) { ack(stop, query, *pending, run); });
    }
    return threads;
  }

  std::optional<std::string> verify(const Target& target, std::uint64_t expected, bool consumed) override {
    const auto result = make_client(port_)->Get("/stats?topic=" + target.name());
    if (auto problem = answer_problem(result, "\"topics\"")) return "GET /stats: " + *problem;
    const nlohmann::json stats = nlohmann::json::parse(result->body);
    std::uint64_t stored = 0;
    for (const auto& partition : stats.at("topics").at(0).at("partitions")) {
      const auto next_offset = partition.at("next_offset").get<std::uint64_t>();
      stored += next_offset;
      if (!consumed || next_offset == 0) continue;
      const auto& groups = partition.at("groups");
      const auto group =
          std::find_if(groups.begin(), groups.end(), [](const auto& g) { return g.at("group") == kGroup; });
      if (group == groups.end() || group->at("committed_offset") != next_offset ||
          group->at("inflight") != 0) {
        return "partition " + partition.dump() + ": not all acknowledged";
      }
    }
    if (stored == expected) return std::nullopt;
    return "/stats counts " + std::to_string(stored) + " messages, the producers had " +
           std::to_string(expected) + " acknowledged";
  }
  void stop() override { server_.stop(); }

 private:
  // What a stream's reader hands its acknowledger.
  struct PendingAcks {
    std::mutex mutex;
    std::condition_variable_any ready;
    std::vector<std::string> ids;  // GUARDED_BY(mutex)
    std::uint64_t fresh = 0;       // GUARDED_BY(mutex): first deliveries among `ids`
  };

  void read(std::stop_token stop, const std::string& query, PendingAcks& pending, RunContext& run) {
    const auto client = make_client(port_);
    const std::stop_callback interrupt(stop, [&client] { client->stop(); });
    DeliveryLog::Reader& reader = run.delivered->add_reader();
    std::string buffer;
    const auto on_events = [&](const char* data, std::size_t length) {
      const std::int64_t at = now_ns();
      buffer.append(data, length);
      std::vector<std::string> ids;
      std::uint64_t fresh = 0;
      std::size_t position = 0;
      for (std::size_t end; (end = buffer.find("\n\n", position)) != std::string::npos; position = end + 2) {
        const std::string_view event(buffer.data() + position, end - position);
        if (!event.starts_with("id: ")) continue;  // a ": keepalive" comment
        const auto first = run.delivered->received(reader, event, at);
        if (!first) run.fail("an event that is not one of this run's: " + std::string(event.substr(0, 160)));
        fresh += first.value_or(false) ? 1 : 0;
        ids.emplace_back(event.substr(4, event.find('\n') - 4));
      }
      buffer.erase(0, position);
      if (!ids.empty()) {
        std::lock_guard lock(pending.mutex);
        pending.ids.insert(pending.ids.end(), std::make_move_iterator(ids.begin()),
                           std::make_move_iterator(ids.end()));
        pending.fresh += fresh;
        pending.ready.notify_one();
      }
      return !stop.stop_requested();
    };
    const auto on_response = [&](const httplib::Response& response) {
      if (response.status != 200) run.fail("GET /consume answered HTTP " + std::to_string(response.status));
      return response.status == 200;
    };
    if (stop.stop_requested()) return;  // else the stream would wait for its first heartbeat to see it
    const auto result = client->Get("/consume?" + query + "&max_inflight=" + std::to_string(kMqdMaxInflight) +
                                        "&visibility_timeout_ms=" + std::to_string(kAckWait.count() * 1000),
                                    httplib::Headers{}, on_response, on_events);
    if (!stop.stop_requested()) {
      run.fail("event stream ended early: " +
               (result ? "HTTP " + std::to_string(result->status) : httplib::to_string(result.error())));
    }
  }

  void ack(std::stop_token stop, const std::string& query, PendingAcks& pending, RunContext& run) {
    const auto client = make_client(port_);
    std::vector<std::string> ids;
    while (true) {
      std::uint64_t fresh = 0;
      {
        std::unique_lock lock(pending.mutex);
        if (!pending.ready.wait(lock, stop, [&] { return !pending.ids.empty(); })) return;
        ids.swap(pending.ids);
        fresh = std::exchange(pending.fresh, 0);
      }
      std::string body = "{\"ids\":[";
      for (const auto& id : ids) body += (body.back() == '[' ? "\"" : ",\"") + id + "\"";
      const auto result = client->Post("/ack?" + query, body + "]}", "application/json");
      if (auto problem = answer_problem(result, "\"acked\"")) {
        run.fail("POST /ack: " + *problem);
      } else if (number_field<std::uint64_t>(result->body, "\"acked\":") != ids.size()) {
        run.fail("POST /ack of " + std::to_string(ids.size()) + " ids answered " + result->body);
      } else {
        run.delivered->acked(fresh);
      }
      ids.clear();
    }
  }

  int port_;
  SpawnedServer server_;
};

// ---------------------------------------------------------------------------------------------
// Redis: hiredis (which sets TCP_NODELAY itself), XADD, XREADGROUP, XACK.

struct ReplyDeleter {
  void operator()(redisReply* reply) const { freeReplyObject(reply); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

class RedisConnection {
 public:
  explicit RedisConnection(int port) : context_(redisConnect("127.0.0.1", port)) {
    if (context_ == nullptr || context_->err != 0) {
      const std::string why = context_ != nullptr ? context_->errstr : "out of memory";
      if (context_ != nullptr) redisFree(context_);
      throw std::runtime_error("cannot connect to redis: " + why);
    }
  }
  ~RedisConnection() { redisFree(context_); }
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  // Queues one command, each word passed as it is (binary-safe); next_reply() reads the answers in order.
  void append(const std::vector<std::string_view>& words) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lengths;
    for (const auto word : words) {
      argv.push_back(word.data());
      lengths.push_back(word.size());
    }
    redisAppendCommandArgv(context_, static_cast<int>(argv.size()), argv.data(), lengths.data());
  }
  // The next answer; an I/O error is an exception (the connection is unusable after one).
  Reply next_reply() {
    void* reply = nullptr;
    if (redisGetReply(context_, &reply) != REDIS_OK || reply == nullptr) {
      throw std::runtime_error(std::string("redis: ") + context_->errstr);
    }
    return Reply(static_cast<redisReply*>(reply));
  }
  Reply command(const std::vector<std::string_view>& words) {
    append(words);
    return next_reply();
  }

 private:
  redisContext* context_;
};

std::string redis_key(const Target& target, int partition) {
  return "bench:" + target.name() + ":" + std::to_string(partition);
}

std::string describe(const redisReply& reply) {
  if (reply.type == REDIS_REPLY_ERROR || reply.type == REDIS_REPLY_STRING ||
      reply.type == REDIS_REPLY_STATUS) {
    return std::string(reply.str, reply.len);
  }
  return "a reply of type " + std::to_string(reply.type);
}

class RedisSystem final : public System {
 public:
  RedisSystem(const std::string& program, const std::string& level, const std::string& data_dir)
      : port_(mq::testing::free_port()),
        server_("redis-server", program,
                {"--port", std::to_string(port_), "--bind", "127.0.0.1", "--dir", data_dir, "--save", "",
                 "--appendonly", "yes", "--appendfsync", level == "always" ? "always" : "no",
                 "--protected-mode", "no", "--daemonize", "no", "--logfile", ""},
                {}, port_, data_dir),
        admin_(port_) {}

  std::string name() const override { return "redis"; }
  pid_t pid() const override { return server_.pid(); }
  int single_clients() const override { return kRedisSingleClients; }
  std::size_t batch_messages() const override { return kRedisPipeline; }

  // One round trip per send(): all of `payloads` pipelined (one XADD in the single shape).
  Producer producer(const Target& target, bool, RunContext& run) override {
    return {[connection = std::make_shared<RedisConnection>(port_), target, &run](
                int partition, const std::vector<std::string>& payloads) {
      const std::string key = redis_key(target, partition);
      try {
        for (const auto& payload : payloads) connection->append({"XADD", key, "*", "d", payload});
        for (std::size_t i = 0; i < payloads.size(); ++i) {
          if (const Reply reply = connection->next_reply(); reply->type != REDIS_REPLY_STRING) {
            run.fail("XADD answered " + describe(*reply));
            return false;
          }
        }
      } catch (const std::exception& e) {
        run.fail(std::string("XADD: ") + e.what());
        return false;
      }
      run.produced.acked(payloads.size(), Clock::now());
      return true;
    }};
  }

  void create_group(const Target& target) override {
    for (int p = 0; p < target.partitions; ++p) {
      const Reply reply = admin_.command({"XGROUP", "CREATE", redis_key(target, p), kGroup, "0", "MKSTREAM"});
      if (reply->type == REDIS_REPLY_ERROR) throw std::runtime_error("XGROUP CREATE: " + describe(*reply));
    }
  }

  // Consumer c of `count` (own connection and thread) reads the keys of the partitions p with p % count == c.
  Consumers consumers(const Target& target, int count, RunContext& run) override {
    Consumers threads;
    for (int c = 0; c < count && c < target.partitions; ++c) {
      std::vector<std::string> keys;
      for (int p = c; p < target.partitions; p += count) keys.push_back(redis_key(target, p));
      threads.emplace_back(
          [connection = std::make_shared<RedisConnection>(port_), keys, c, &run](std::stop_token stop) {
            consume(stop, *connection, keys, "c" + std::to_string(c), run);
          });
    }
    return threads;
  }

  std::optional<std::string> verify(const Target& target, std::uint64_t expected, bool consumed) override {
    std::uint64_t stored = 0;
    for (int p = 0; p < target.partitions; ++p) {
      const std::string key = redis_key(target, p);
      stored += static_cast<std::uint64_t>(admin_.command({"XLEN", key})->integer);
      if (!consumed) continue;
      const Reply pending = admin_.command({"XPENDING", key, kGroup});
      if (pending->type != REDIS_REPLY_ARRAY || pending->elements == 0)
        return "XPENDING answered " + describe(*pending);
      if (pending->element[0]->integer != 0) return key + ": entries still pending in the group";
    }
    if (stored == expected) return std::nullopt;
    return "XLEN counts " + std::to_string(stored) + " entries, the producers had " +
           std::to_string(expected) + " acknowledged";
  }
  void clean(const Target& target) override {
    for (int p = 0; p < target.partitions; ++p) admin_.command({"DEL", redis_key(target, p)});
  }
  void stop() override { server_.stop(); }

 private:
  static void consume(std::stop_token stop, RedisConnection& connection, const std::vector<std::string>& keys,
                      const std::string& consumer, RunContext& run) {
    DeliveryLog::Reader& reader = run.delivered->add_reader();
    const std::string count = std::to_string(kConsumerBatch);
    const std::string block = std::to_string(kPollWaitMs);
    std::vector<std::string_view> read_command = {"XREADGROUP", "GROUP", kGroup, consumer, "COUNT",
                                                  count,        "BLOCK", block,  "STREAMS"};
    read_command.insert(read_command.end(), keys.begin(), keys.end());
    read_command.insert(read_command.end(), keys.size(), ">");
    try {
      while (!stop.stop_requested() && !run.failed) {
        const Reply reply = connection.command(read_command);
        if (reply->type == REDIS_REPLY_NIL) continue;  // BLOCK ran out
        if (reply->type != REDIS_REPLY_ARRAY) return run.fail("XREADGROUP answered " + describe(*reply));
        const std::int64_t at = now_ns();
        std::uint64_t fresh = 0;
        std::uint64_t entries = 0;
        std::size_t xacks = 0;
        for (std::size_t s = 0; s < reply->elements; ++s) {  // [key, [[id, [field, value]], ...]] per stream
          const redisReply& stream = *reply->element[s];
          const redisReply& list = *stream.element[1];
          std::vector<std::string_view> xack = {
              "XACK", {stream.element[0]->str, stream.element[0]->len}, kGroup};
          for (std::size_t e = 0; e < list.elements; ++e) {
            const redisReply& value = *list.element[e]->element[1]->element[1];
            const auto first = run.delivered->received(reader, {value.str, value.len}, at);
            if (!first)
              return run.fail("an entry that is not one of this run's: " + std::string(value.str, value.len));
            fresh += *first ? 1 : 0;
            xack.emplace_back(list.element[e]->element[0]->str, list.element[e]->element[0]->len);
          }
          entries += list.elements;
          if (list.elements > 0) {
            connection.append(xack);
            ++xacks;
          }
        }
        std::uint64_t acked = 0;
        for (std::size_t i = 0; i < xacks; ++i) {
          const Reply answer = connection.next_reply();
          if (answer->type != REDIS_REPLY_INTEGER) return run.fail("XACK answered " + describe(*answer));
          acked += static_cast<std::uint64_t>(answer->integer);
        }
        if (acked != entries)
          return run.fail("XACK of " + std::to_string(entries) + " acknowledged " + std::to_string(acked));
        run.delivered->acked(fresh);
      }
    } catch (const std::exception& e) {
      run.fail(e.what());
    }
  }

  int port_;
  SpawnedServer server_;
  RedisConnection admin_;
};

// ---------------------------------------------------------------------------------------------
// NATS JetStream: libnats, the C client.

std::string nats_error(natsStatus status) {
  const char* detail = nats_GetLastError(nullptr);
  return std::string(natsStatus_GetText(status)) +
         (detail != nullptr && *detail != '\0' ? std::string(": ") + detail : "");
}

void check_nats(natsStatus status, const std::string& what) {
  if (status != NATS_OK) throw std::runtime_error(what + ": " + nats_error(status));
}

class NatsConnection {
 public:
  // `send_asap`: write each publish to the socket at once, as a caller waiting for the answer wants, instead
  // of leaving it to the library's flusher thread, which gathers writes.
  NatsConnection(int port, bool send_asap, jsOptions* js_options = nullptr) {
    const std::string url = "nats://127.0.0.1:" + std::to_string(port);
    natsOptions* options = nullptr;
    natsStatus status = natsOptions_Create(&options);
    if (status == NATS_OK) status = natsOptions_SetURL(options, url.c_str());
    if (status == NATS_OK) status = natsOptions_SetSendAsap(options, send_asap);
    if (status == NATS_OK) status = natsOptions_SetAllowReconnect(options, false);  // a failure shows
    if (status == NATS_OK) status = natsConnection_Connect(&connection_, options);
    natsOptions_Destroy(options);
    if (status == NATS_OK) status = natsConnection_JetStream(&js_, connection_, js_options);
    if (status != NATS_OK) {
      const std::string why = nats_error(status);
      close();
      throw std::runtime_error("NATS connect to " + url + ": " + why);
    }
  }
  ~NatsConnection() { close(); }
  NatsConnection(const NatsConnection&) = delete;
  NatsConnection& operator=(const NatsConnection&) = delete;

  natsConnection* connection() { return connection_; }
  jsCtx* js() { return js_; }

 private:
  void close() {
    if (connection_ != nullptr) natsConnection_Close(connection_);  // no callbacks after this
    if (js_ != nullptr) jsCtx_Destroy(js_);
    if (connection_ != nullptr) natsConnection_Destroy(connection_);
    js_ = nullptr;
    connection_ = nullptr;
  }

  natsConnection* connection_ = nullptr;
  jsCtx* js_ = nullptr;
};

// js_PublishAsync on its own connection, at most kNatsMaxPending PubAcks outstanding; each is counted in the
// callback.
struct AsyncPublisher {
  explicit AsyncPublisher(RunContext& run_context) : run(run_context) {
    jsOptions_Init(&options);
    options.PublishAsync.MaxPending = kNatsMaxPending;
    options.PublishAsync.AckHandler = &AsyncPublisher::on_ack;
    options.PublishAsync.AckHandlerClosure = this;
    // A publish that finds kNatsMaxPending outstanding waits this long (ms) before failing; the default 200
    // ms would turn a slow moment of the shared machine into a failure.
    options.PublishAsync.StallWait = 10000;
  }
  static void on_ack(jsCtx*, natsMsg* message, jsPubAck* ack, jsPubAckErr* error, void* closure) {
    RunContext& run = static_cast<AsyncPublisher*>(closure)->run;
    if (ack != nullptr) {
      run.produced.acked(1, Clock::now());
    } else {
      run.fail(std::string("PubAck: ") +
               (error != nullptr && error->ErrText != nullptr ? error->ErrText : "error"));
    }
    natsMsg_Destroy(message);
  }

  RunContext& run;
  jsOptions options{};
  std::optional<NatsConnection> connection;  // made once `options` is complete
};

// A subscriber of a durable pull consumer, on its own connection.
struct PullSubscriber {
  explicit PullSubscriber(int port) : connection(port, /*send_asap=*/false) {}
  ~PullSubscriber() {
    natsSubscription_Destroy(subscription);
  }  // not Unsubscribe: verify() reads the consumer
  PullSubscriber(const PullSubscriber&) = delete;
  PullSubscriber& operator=(const PullSubscriber&) = delete;

  NatsConnection connection;
  natsSubscription* subscription = nullptr;
};

class NatsSystem final : public System {
 public:
  NatsSystem(const std::string& program, const std::string& data_dir)
      : port_(mq::testing::free_port()),
        server_("nats-server", program,
                {"-js", "-sd", data_dir, "-a", "127.0.0.1", "-p", std::to_string(port_)}, {}, port_, data_dir,
                SIGINT),  // its clean exit (status 0); on SIGTERM it exits 1
        admin_(port_, true) {
    const char* subjects[] = {"bench.>"};
    jsStreamConfig config;
    jsStreamConfig_Init(&config);
    config.Name = kNatsStream;
    config.Subjects = subjects;
    config.SubjectsLen = 1;
    config.Storage = js_FileStorage;
    config.Replicas = 1;
    for (const auto deadline = Clock::now() + std::chrono::seconds(10);;) {  // JetStream may lag the port
      jsStreamInfo* info = nullptr;
      jsErrCode code{};
      const natsStatus status = js_AddStream(&info, admin_.js(), &config, nullptr, &code);
      jsStreamInfo_Destroy(info);
      if (status == NATS_OK) break;
      if (Clock::now() > deadline) check_nats(status, "js_AddStream");
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  std::string name() const override { return "nats"; }
  pid_t pid() const override { return server_.pid(); }
  int single_clients() const override { return kNatsSinglePublishers; }
  std::size_t batch_messages() const override { return kNatsAsyncChunk; }

  // single: js_Publish, which waits for the PubAck, on a connection shared with other callers;
  // batch: an AsyncPublisher.
  Producer producer(const Target& target, bool single, RunContext& run) override {
    if (single) {
      auto& shared = shared_[next_shared_++ % shared_.size()];
      if (!shared) shared = std::make_shared<NatsConnection>(port_, /*send_asap=*/true);
      return {[connection = shared, target, &run](int partition, const std::vector<std::string>& payloads) {
        const std::string subject = "bench." + target.name() + "." + std::to_string(partition);
        for (const auto& payload : payloads) {
          jsPubAck* ack = nullptr;
          jsErrCode code{};
          const natsStatus status = js_Publish(&ack, connection->js(), subject.c_str(), payload.data(),
                                               static_cast<int>(payload.size()), nullptr, &code);
          jsPubAck_Destroy(ack);
          if (status != NATS_OK) {
            run.fail("js_Publish: " + nats_error(status) + " (JetStream error " + std::to_string(code) + ")");
            return false;
          }
        }
        run.produced.acked(payloads.size(), Clock::now());
        return true;
      }};
    }
    auto publisher = std::make_shared<AsyncPublisher>(run);
    publisher->connection.emplace(port_, /*send_asap=*/false, &publisher->options);
    return {[publisher, target](int partition, const std::vector<std::string>& payloads) {
              const std::string subject = "bench." + target.name() + "." + std::to_string(partition);
              for (const auto& payload : payloads) {
                const natsStatus status =
                    js_PublishAsync(publisher->connection->js(), subject.c_str(), payload.data(),
                                    static_cast<int>(payload.size()), nullptr);
                if (status != NATS_OK) {
                  publisher->run.fail("js_PublishAsync: " + nats_error(status));
                  return false;
                }
              }
              return true;
            },
            [publisher] {
              jsPubOptions options;
              jsPubOptions_Init(&options);
              options.MaxWait = 60000;
              const natsStatus status = js_PublishAsyncComplete(publisher->connection->js(), &options);
              if (status != NATS_OK) publisher->run.fail("js_PublishAsyncComplete: " + nats_error(status));
            }};
  }

  void create_group(const Target& target) override {
    const std::string durable = target.name();
    const std::string filter = "bench." + durable + ".>";
    jsConsumerConfig config;
    jsConsumerConfig_Init(&config);
    config.Durable = durable.c_str();
    config.AckPolicy = js_AckExplicit;
    config.DeliverPolicy = js_DeliverAll;
    config.AckWait = std::chrono::nanoseconds(kAckWait).count();
    config.FilterSubject = filter.c_str();
    config.MaxAckPending = kMqdMaxInflight * kPartitions;  // as many as mqd's streams may hold
    jsConsumerInfo* info = nullptr;
    jsErrCode code{};
    check_nats(js_AddConsumer(&info, admin_.js(), kNatsStream, &config, nullptr, &code), "js_AddConsumer");
    jsConsumerInfo_Destroy(info);
    durables_.push_back(durable);
  }

  // `count` subscribers (own connection and thread each) share the run's durable consumer.
  Consumers consumers(const Target& target, int count, RunContext& run) override {
    const std::string durable = target.name();
    const std::string filter = "bench." + durable + ".>";
    Consumers threads;
    for (int c = 0; c < count; ++c) {
      auto subscriber = std::make_shared<PullSubscriber>(port_);
      jsSubOptions options;
      jsSubOptions_Init(&options);
      options.Stream = kNatsStream;
      options.Consumer = durable.c_str();  // bind to the consumer create_group made
      jsErrCode code{};
      check_nats(js_PullSubscribe(&subscriber->subscription, subscriber->connection.js(), filter.c_str(),
                                  durable.c_str(), nullptr, &options, &code),
                 "js_PullSubscribe");
      threads.emplace_back([subscriber, &run](std::stop_token stop) { consume(stop, *subscriber, run); });
    }
    return threads;
  }

  std::optional<std::string> verify(const Target& target, std::uint64_t expected, bool consumed) override {
    jsStreamInfo* info = nullptr;
    jsErrCode code{};
    check_nats(js_GetStreamInfo(&info, admin_.js(), kNatsStream, nullptr, &code), "js_GetStreamInfo");
    const std::uint64_t stored = info->State.Msgs;  // the stream is purged after every run
    jsStreamInfo_Destroy(info);
    if (stored != expected) {
      return "the stream holds " + std::to_string(stored) + " messages, the producers had " +
             std::to_string(expected) + " acknowledged";
    }
    // natsMsg_Ack does not wait for the server to apply the ack: allow it a moment.
    for (const auto deadline = Clock::now() + std::chrono::seconds(10); consumed;) {
      jsConsumerInfo* consumer = nullptr;
      check_nats(
          js_GetConsumerInfo(&consumer, admin_.js(), kNatsStream, target.name().c_str(), nullptr, &code),
          "js_GetConsumerInfo");
      const std::string state = std::to_string(consumer->NumAckPending) + " awaiting ack, " +
                                std::to_string(consumer->NumPending) + " undelivered";
      const bool done = consumer->NumAckPending == 0 && consumer->NumPending == 0;
      jsConsumerInfo_Destroy(consumer);
      if (done) break;
      if (Clock::now() > deadline) return "consumer " + target.name() + ": " + state;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return std::nullopt;
  }
  void clean(const Target& target) override {
    jsErrCode code{};
    if (const auto made = std::find(durables_.begin(), durables_.end(), target.name());
        made != durables_.end()) {
      js_DeleteConsumer(admin_.js(), kNatsStream, made->c_str(), nullptr, &code);
      durables_.erase(made);
    }
    check_nats(js_PurgeStream(admin_.js(), kNatsStream, nullptr, &code), "js_PurgeStream");
  }
  void stop() override {
    for (auto& connection : shared_) connection.reset();
    server_.stop();
  }

 private:
  // Fetch(kConsumerBatch), natsMsg_Ack of each, then a flush (PING/PONG): the acks are fire-and-forget, so
  // the flush makes the server have them before they count, one round trip per batch as POST /ack and XACK
  // take.
  static void consume(std::stop_token stop, PullSubscriber& subscriber, RunContext& run) {
    DeliveryLog::Reader& reader = run.delivered->add_reader();
    while (!stop.stop_requested() && !run.failed) {
      natsMsgList list{};
      jsErrCode code{};
      natsStatus status =
          natsSubscription_Fetch(&list, subscriber.subscription, kConsumerBatch, kPollWaitMs, &code);
      if (status == NATS_TIMEOUT) continue;  // nothing within kPollWaitMs
      if (status != NATS_OK) return run.fail("natsSubscription_Fetch: " + nats_error(status));
      const std::int64_t at = now_ns();
      std::uint64_t fresh = 0;
      for (int i = 0; i < list.Count && status == NATS_OK; ++i) {
        const std::string_view data(natsMsg_GetData(list.Msgs[i]),
                                    static_cast<std::size_t>(natsMsg_GetDataLength(list.Msgs[i])));
        const auto first = run.delivered->received(reader, data, at);
        if (!first) run.fail("a message that is not one of this run's: " + std::string(data));
        fresh += first.value_or(false) ? 1 : 0;
        status = natsMsg_Ack(list.Msgs[i], nullptr);
      }
      natsMsgList_Destroy(&list);
      if (status == NATS_OK) status = natsConnection_Flush(subscriber.connection.connection());
      if (status != NATS_OK) return run.fail("natsMsg_Ack / flush: " + nats_error(status));
      run.delivered->acked(fresh);
    }
  }

  int port_;
  SpawnedServer server_;
  NatsConnection admin_;
  std::vector<std::shared_ptr<NatsConnection>> shared_ =
      std::vector<std::shared_ptr<NatsConnection>>(kNatsSharedConnections);  // each made on first use
  std::size_t next_shared_ = 0;
  std::vector<std::string> durables_;  // consumers made by create_group, deleted by clean
};

// ---------------------------------------------------------------------------------------------
// The shapes

struct Measurement {
  double msgs_per_second = 0;
  double p50_us = 0;  // single: one call; e2e, latency: produce -> delivery; batch: not measured
  double p99_us = 0;
  double p999_us = 0;
  double duplicates = 0;    // redeliveries of a message already received
  double server_cores = 0;  // the server's CPU seconds per second of the run
  double client_cores = 0;  // this program's
};

bool has_latency(Shape shape) { return shape != Shape::kBatch; }

std::vector<Producer> make_producers(System& system, const Target& target, bool single, int count,
                                     RunContext& run) {
  std::vector<Producer> producers;
  for (int i = 0; i < count; ++i) producers.push_back(system.producer(target, single, run));
  return producers;
}

void take_percentiles(std::vector<std::int64_t>& latencies, Measurement& m) {
  m.p50_us = percentile_us(latencies, 0.50);
  m.p99_us = percentile_us(latencies, 0.99);
  m.p999_us = percentile_us(latencies, 0.999);
}

// single and batch: every producer as fast as its acknowledgements come back; what is acknowledged inside the
// window counts.
Measurement run_window(System& system, const Target& target, bool single, double seconds, RunContext& run) {
  const int clients = single ? system.single_clients() : kBatchProducers;
  const std::size_t per_call = single ? 1 : system.batch_messages();
  auto producers = make_producers(system, target, single, clients, run);  // connected before the clock runs
  const auto begin = Clock::now() + kWarmup;
  const auto end =
      begin + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  run.produced.set_window(begin, end);
  std::vector<std::vector<std::int64_t>> call_ns(static_cast<std::size_t>(clients));
  std::atomic<std::uint64_t> next_seq{0};
  {
    std::vector<std::jthread> threads;
    for (std::size_t c = 0; c < producers.size(); ++c) {
      threads.emplace_back([&, c] {
        std::vector<std::string> payloads(per_call);
        for (std::size_t call = c; !run.failed; ++call) {
          const std::uint64_t seq = next_seq.fetch_add(per_call);
          const std::int64_t sent = now_ns();
          for (std::size_t i = 0; i < per_call; ++i) payloads[i] = make_payload(sent, seq + i);
          const auto before = Clock::now();
          if (before >= end || !producers[c].send(static_cast<int>(call % kPartitions), payloads)) break;
          const auto after = Clock::now();
          if (after >= begin && after < end) call_ns[c].push_back((after - before).count());
        }
        producers[c].finish();
      });
    }
  }
  producers.clear();
  Measurement m;
  m.msgs_per_second = static_cast<double>(run.produced.in_window()) / seconds;
  if (single) {
    std::vector<std::int64_t> all;
    for (const auto& v : call_ns) all.insert(all.end(), v.begin(), v.end());
    take_percentiles(all, m);
  }
  if (auto problem = system.verify(target, run.produced.total(), false)) run.fail(*problem);
  return m;
}

// e2e and latency: a thread per producer runs `send(i, producer)`, sending producer i's share of messages
// 0..n-1 from `start` on, while the consumers take them; then the checks. `finished`: when the last
// acknowledgement was answered.
Measurement run_flow(System& system, const Target& target, std::uint64_t n, bool single, int producer_count,
                     int consumer_count, RunContext& run, Clock::time_point& start,
                     Clock::time_point& finished, const std::function<void(std::size_t, Producer&)>& send) {
  system.create_group(target);
  DeliveryLog log(n);
  run.delivered = &log;
  auto producers = make_producers(system, target, single, producer_count, run);
  Consumers consumers = system.consumers(target, consumer_count, run);
  bool completed = false;
  // Every producer thread is waiting before any sends; `start` is the moment they are let go.
  std::latch spawned(static_cast<std::ptrdiff_t>(producers.size()));
  std::latch go(1);
  {
    std::vector<std::jthread> threads;
    try {
      for (std::size_t i = 0; i < producers.size(); ++i) {
        threads.emplace_back([&, i] {
          spawned.count_down();
          go.wait();
          send(i, producers[i]);
          producers[i].finish();
        });
      }
    } catch (...) {  // no thread left waiting for a go that never comes (the jthreads join)
      start = Clock::now();
      go.count_down();
      throw;
    }
    spawned.wait();
    start = Clock::now();
    go.count_down();
    completed = log.wait(run.failed);
  }
  finished = log.finished();
  producers.clear();
  for (auto& consumer : consumers) consumer.request_stop();  // all at once: each may be in a 100 ms poll
  consumers.clear();  // joins them: the log's readers are theirs until then
  Measurement m;
  if (!completed) {
    run.fail("stuck or failed: " + std::to_string(log.done()) + " of " + std::to_string(n) + " acknowledged");
  } else if (const std::uint64_t lost = log.never_delivered(); lost != 0) {
    run.fail(std::to_string(lost) + " messages never delivered");
  } else if (auto problem = system.verify(target, n, true)) {
    run.fail(*problem);
  }
  auto [latencies, duplicates] = log.results();
  take_percentiles(latencies, m);
  m.duplicates = static_cast<double>(duplicates);
  run.delivered = nullptr;
  return m;
}

Measurement run_e2e(System& system, const Target& target, std::uint64_t n, RunContext& run) {
  const std::size_t per_call = system.batch_messages();
  Clock::time_point start;
  Clock::time_point finished;
  Measurement m = run_flow(system, target, n, false, kBatchProducers, kE2eConsumers, run, start, finished,
                           [&](std::size_t p, Producer& producer) {
                             const std::uint64_t last = n * (p + 1) / kBatchProducers;
                             std::vector<std::string> payloads;
                             for (std::uint64_t seq = n * p / kBatchProducers, call = p;
                                  seq < last && !run.failed; ++call) {
                               payloads.resize(std::min<std::uint64_t>(per_call, last - seq));
                               const std::int64_t sent = now_ns();
                               for (std::size_t i = 0; i < payloads.size(); ++i)
                                 payloads[i] = make_payload(sent, seq + i);
                               if (!producer.send(static_cast<int>(call % kPartitions), payloads)) break;
                               seq += payloads.size();
                             }
                           });
  m.msgs_per_second = static_cast<double>(n) / seconds_between(start, finished);
  return m;
}

// Message `seq` is due at start + seq / rate; caller c sends seq = c, c + kPacedCallers, ...
Measurement run_latency(System& system, const Target& target, double rate, double seconds, RunContext& run) {
  const auto n = static_cast<std::uint64_t>(std::max(1.0, std::round(rate * seconds)));
  Clock::time_point start;
  Clock::time_point finished;
  std::atomic<std::int64_t> last_sent_ns{0};
  Measurement m = run_flow(
      system, target, n, true, kPacedCallers, 1, run, start, finished,
      [&](std::size_t c, Producer& producer) {
        std::vector<std::string> payload(1);
        for (std::uint64_t seq = c; seq < n && !run.failed; seq += kPacedCallers) {
          const auto slot = start + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(static_cast<double>(seq) / rate));
          std::this_thread::sleep_until(slot);
          payload[0] = make_payload(to_ns(slot), seq);  // latency counts from the slot, not from a late send
          if (!producer.send(0, payload)) break;
        }
        const std::int64_t done = now_ns();
        for (std::int64_t seen = last_sent_ns;
             seen < done && !last_sent_ns.compare_exchange_weak(seen, done);) {
        }
      });
  const auto sending_ns = std::max<std::int64_t>(1, last_sent_ns - to_ns(start));
  m.msgs_per_second = static_cast<double>(n) * 1e9 / static_cast<double>(sending_ns);
  return m;
}

Measurement run_shape(System& system, Shape shape, const BenchOptions& options, RunContext& run) {
  const Target target{shape, shape == Shape::kLatency ? 1 : kPartitions};
  const auto start = Clock::now();
  const double server_cpu = cpu_seconds(system.pid());
  const double client_cpu = cpu_seconds(::getpid());
  Measurement m;
  switch (shape) {
    case Shape::kSingle:
      m = run_window(system, target, true, options.seconds, run);
      break;
    case Shape::kBatch:
      m = run_window(system, target, false, options.seconds, run);
      break;
    case Shape::kE2e:
      m = run_e2e(system, target, options.messages, run);
      break;
    case Shape::kLatency:
      m = run_latency(system, target, options.rate, options.seconds, run);
      break;
  }
  const double wall = seconds_between(start, Clock::now());
  m.server_cores = (cpu_seconds(system.pid()) - server_cpu) / wall;
  m.client_cores = (cpu_seconds(::getpid()) - client_cpu) / wall;
  system.clean(target);
  return m;
}

// ---------------------------------------------------------------------------------------------
// Results: tables for stdout and Markdown, charts by gnuplot

struct Row {
  Shape shape;
  std::string system;
  Measurement median;
  std::optional<double> vs_redis;  // above 1: better than Redis (see kLegend)
  std::optional<double> vs_nats;
  bool kept_up = true;  // latency shape: reached kKeptUp of --rate
  bool failed = false;
};

struct LevelTable {
  std::string level;
  std::vector<Row> rows;
};

std::string durability(const std::string& level, const std::string& system) {
  if (system == "mqd") {
    return level == "always" ? "mqd FSYNC=always (fdatasync by group commit before the 200)"
                             : "mqd FSYNC=never (written before the 200, no fsync)";
  }
  if (system == "redis") {
    return "redis-server --appendonly yes --appendfsync " + std::string(level == "always" ? "always" : "no") +
           " --save \"\"" + (level == "always" ? "" : " (AOF written before the reply, no fsync)");
  }
  return level == "always"
             ? "nats: not at this level (nats-server 2.9.10 cannot fsync before its PubAck)"
             : "nats-server -js -sd DIR, stream BENCH (bench.>, file storage, 1 replica): writes "
               "before its PubAck, fsyncs on a 2-minute timer";
}

// Above 1 means `mine` is better: msgs/s over the other's, or for the latency shape the other's p99 over
// mine.
std::optional<double> ratio(Shape shape, const Measurement& mine, const Measurement& other) {
  if (shape == Shape::kLatency)
    return mine.p99_us > 0 ? std::optional(other.p99_us / mine.p99_us) : std::nullopt;
  return other.msgs_per_second > 0 ? std::optional(mine.msgs_per_second / other.msgs_per_second)
                                   : std::nullopt;
}

std::string decimal(double value, int decimals = 0) {
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", decimals, value);
  return text;
}

const std::vector<std::string> kColumns = {"shape",     "system",    "msgs/s",   "p50 us",
                                           "p99 us",    "p99.9 us",  "vs redis", "vs nats",
                                           "srv cores", "cli cores", "check"};

std::vector<std::string> cells(const Row& row) {
  const auto latency = [&](double us) { return has_latency(row.shape) ? decimal(us) : std::string("-"); };
  const auto times = [](std::optional<double> r) { return r ? decimal(*r, 2) + "x" : std::string("-"); };
  const Measurement& m = row.median;
  return {shape_name(row.shape),
          row.system,
          decimal(m.msgs_per_second) + (row.kept_up ? "" : "*"),
          latency(m.p50_us),
          latency(m.p99_us),
          latency(m.p999_us),
          times(row.vs_redis),
          times(row.vs_nats),
          decimal(m.server_cores, 2),
          decimal(m.client_cores, 2),
          row.failed ? "FAIL" : "ok"};
}

constexpr const char* kLegend =
    "msgs/s: single, batch: acknowledged inside the measured window / its length; e2e: N / (start ->\n"
    "  last ack answered); latency: N / (start -> last produce answered), the rate achieved; * = below\n"
    "  95 % of --rate: the system did not keep up, so its latency is mostly queueing.\n"
    "p50/p99/p99.9 us: single: one produce call; e2e, latency: produce -> delivery to the consumer (send\n"
    "  time in the payload; latency counts from each message's scheduled send time); batch: not measured.\n"
    "vs redis / vs nats: above 1 is better: msgs/s over theirs (single, batch, e2e), their p99 over ours\n"
    "  (latency). srv / cli cores: CPU seconds per second of the run used by the server / by this program\n"
    "  (the clients); both share the machine's nproc cores. check: every call answered, the server's own\n"
    "  counts agree, all delivered and acknowledged.\n";

void print_table(const LevelTable& table) {
  std::printf("\nlevel %s\n", table.level.c_str());
  const int widths[] = {-8, -6, 9, 8, 8, 9, 9, 8, 10, 10, 6};
  const auto line = [&](const std::vector<std::string>& values) {
    for (std::size_t i = 0; i < values.size(); ++i) std::printf("%*s ", widths[i], values[i].c_str());
    std::printf("\n");
  };
  line(kColumns);
  for (const Row& row : table.rows) line(cells(row));
}

std::string markdown(const std::vector<LevelTable>& tables, const BenchOptions& options,
                     const std::string& machine, const std::string& header) {
  char date[64];
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S UTC", ::gmtime_r(&now, &utc));
  std::string md = "# peer_bench: mqd, Redis Streams, NATS JetStream\n\n- date: " + std::string(date) +
                   "\n- command: `" + options.command_line + "`\n- " + machine + "\n\n```\n" + header +
                   "```\n";
  for (const LevelTable& table : tables) {
    md += "\n## level " + table.level + "\n\n|";
    for (const auto& column : kColumns) md += " " + column + " |";
    md += "\n|";
    for (std::size_t i = 0; i < kColumns.size(); ++i) md += i < 2 ? "---|" : "---:|";
    for (const Row& row : table.rows) {
      md += "\n|";
      for (const auto& cell : cells(row)) md += " " + cell + " |";
    }
    md += "\n";
  }
  return md + "\n```\n" + kLegend + "```\n\n![messages/s](throughput.svg)\n\n![latency](latency.svg)\n";
}

// bench_support prints the machine line to stdout only; the report wants its text, so it is printed once more
// with the stdout descriptor pointing at a file, and read back.
std::string machine_line(const std::string& dir, const std::string& scratch_file) {
  std::fflush(stdout);
  const int saved = ::dup(STDOUT_FILENO);
  const int file = ::open(scratch_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (saved < 0 || file < 0) throw errno_error("redirecting stdout to " + scratch_file);
  ::dup2(file, STDOUT_FILENO);
  ::close(file);
  print_machine(dir);  // flushes stdout
  ::dup2(saved, STDOUT_FILENO);
  ::close(saved);
  std::string line = file_text(scratch_file);
  while (!line.empty() && line.back() == '\n') line.pop_back();
  return line;
}

std::string gnuplot_quote(const std::string& text) {
  std::string quoted = "'";
  for (const char c : text) quoted += c == '\'' ? std::string("''") : std::string(1, c);
  return quoted + "'";
}

std::string short_number(double value) {
  if (value >= 1e6) return decimal(value / 1e6, 2) + "M";
  if (value >= 1e3) return decimal(value / 1e3, value >= 1e5 ? 0 : 1) + "k";
  return decimal(value);
}

// A gnuplot script for one chart, writing its data to `data_path`: a group of bars per (level, shape of
// `shapes`), a bar per system (mqd, redis, nats in that order and colour). With `latency` each bar is p99
// (light) with p50 (dark, narrower) in front, in ms; otherwise msgs/s. Both on a log scale.
std::string chart_script(const std::vector<LevelTable>& tables, const std::vector<Shape>& shapes,
                         bool latency, const std::string& data_path, const std::string& svg_path,
                         const std::string& title) {
  const std::map<std::string, std::pair<const char*, const char*>> colours = {
      {"mqd", {"#1f77b4", "#a6c8e6"}}, {"redis", {"#d62728", "#f2a9a9"}}, {"nats", {"#2ca02c", "#a9dca9"}}};
  const int slots = static_cast<int>(kAllSystems.size()) + 1;  // bars per group plus a gap
  std::map<std::string, std::string> points;                   // per system: "x low high label" lines
  std::string xtics;
  double low = 1e300;
  double high = 0;
  int group = 0;
  for (const LevelTable& table : tables) {
    for (const Shape shape : shapes) {
      bool any = false;
      for (const Row& row : table.rows) {
        const double bottom = latency ? row.median.p50_us / 1000 : row.median.msgs_per_second;
        const double top = latency ? row.median.p99_us / 1000 : bottom;
        if (row.shape != shape || bottom <= 0) continue;
        const auto slot = std::find(kAllSystems.begin(), kAllSystems.end(), row.system) - kAllSystems.begin();
        points[row.system] +=
            std::to_string(group * slots + slot) + " " + std::to_string(bottom) + " " + std::to_string(top) +
            " \"" + (latency ? decimal(bottom, 2) + "/" + decimal(top, 2) : short_number(bottom)) + "\"\n";
        low = std::min(low, bottom);
        high = std::max(high, top);
        any = true;
      }
      if (!any) continue;
      xtics += std::string(xtics.empty() ? "" : ", ") + "\"" + shape_name(shape) + "\\n" + table.level +
               "\" " + decimal(group * slots + (slots - 2) / 2.0, 1);
      ++group;
    }
  }
  if (points.empty()) return "";
  std::string data;
  std::string plots;
  int block = 0;
  for (const auto& system : kAllSystems) {
    if (!points.contains(system)) continue;
    data += "# " + system + "\n" + points[system] + "\n\n";
    const auto [dark, light] = colours.at(system);
    const std::string source = gnuplot_quote(data_path) + " index " + std::to_string(block++);
    if (latency) {
      plots += source + " using 1:3:(0.8) with boxes lc rgb '" + light + "' title '" + system + " p99', " +
               source + " using 1:2:(0.45) with boxes lc rgb '" + dark + "' title '" + system + " p50', " +
               source + " using 1:3:4 with labels offset 0,0.8 font ',8' notitle, ";
    } else {
      plots += source + " using 1:2:(0.85) with boxes lc rgb '" + dark + "' title '" + system + "', " +
               source + " using 1:2:4 with labels offset 0,0.8 font ',9' notitle, ";
    }
  }
  std::ofstream(data_path) << data;
  return "set terminal svg size 1100,560 dynamic enhanced font 'Helvetica,12' background rgb 'white'\n"
         "set output " +
         gnuplot_quote(svg_path) + "\nset title " + gnuplot_quote(title) + "\n" +
         (latency ? "set ylabel 'ms (labels: p50/p99)'\n" : "set ylabel 'messages/s'\n") +
         "set logscale y\nset format y '%.0s%c'\nset yrange [" + std::to_string(low / 3) + ":" +
         std::to_string(high * 5) + "]\nset xrange [-1:" + std::to_string(group * slots - 1) +
         "]\nset xtics (" + xtics +
         ") nomirror scale 0\nset bmargin 4\nset grid ytics\nset key top center horizontal\n"
         "set style fill solid 1.0 border -1\nplot " +
         plots.substr(0, plots.size() - 2) + "\n";
}

void write_report(const std::vector<LevelTable>& tables, const BenchOptions& options,
                  const std::string& machine, const std::string& header) {
  const std::string dir = stdfs::absolute(*options.report).string();
  stdfs::create_directories(dir);
  std::ofstream(dir + "/peer_bench.md") << markdown(tables, options, machine, header);
  const auto gnuplot = find_in_path("gnuplot");
  if (!gnuplot) {
    std::printf("report: %s/peer_bench.md; gnuplot is not in PATH, so no charts\n", dir.c_str());
    return;
  }
  const std::string script =
      chart_script(tables, {Shape::kSingle, Shape::kBatch, Shape::kE2e}, false, dir + "/throughput.dat",
                   dir + "/throughput.svg",
                   "messages/s by shape (always: fsync per acknowledged write; never: none)") +
      chart_script(tables, {Shape::kE2e, Shape::kLatency}, true, dir + "/latency.dat", dir + "/latency.svg",
                   "produce -> delivery latency: p50 (dark) and p99 (light)");
  const std::string script_path = dir + "/peer_bench.gp";
  std::ofstream(script_path) << script;
  std::string program = *gnuplot;
  std::string argument = script_path;
  char* argv[] = {program.data(), argument.data(), nullptr};
  pid_t pid = 0;
  if (const int error = ::posix_spawn(&pid, program.c_str(), nullptr, nullptr, argv, environ); error != 0) {
    throw std::system_error(error, std::generic_category(), "posix_spawn " + program);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error("gnuplot " + script_path + " failed");
  std::printf("report: %s/peer_bench.md, throughput.svg, latency.svg (gnuplot script peer_bench.gp)\n",
              dir.c_str());
}

// ---------------------------------------------------------------------------------------------
// main

std::unique_ptr<System> start_system(const std::string& name, const std::string& level,
                                     const BenchOptions& options, ScratchDirectory& scratch) {
  const std::string dir = scratch.fresh_path(name + "-" + level);
  if (name == "mqd") return std::make_unique<MqdSystem>(options.mqd, level, dir);
  if (name == "redis") return std::make_unique<RedisSystem>(options.redis_server, level, dir);
  return std::make_unique<NatsSystem>(options.nats_server, dir);
}

std::string header_text(const BenchOptions& options) {
  std::string text =
      "peer_bench: mqd beside Redis Streams and NATS JetStream, same shapes, equal durability, on "
      "127.0.0.1\n  mqd: " +
      options.mqd + "\n";
  if (contains(options.systems, "redis")) text += "  redis: " + version_of(options.redis_server) + "\n";
  if (contains(options.systems, "nats")) {
    text += "  nats: " + version_of(options.nats_server) + ", client libnats " + nats_GetVersion() + "\n";
  }
  for (const auto& level : options.levels) {
    text += "  level " + level + ":\n";
    for (const auto& system : options.systems) text += "    " + durability(level, system) + "\n";
  }
  char shapes[2048];
  std::snprintf(shapes, sizeof shapes,
                "  %zu-byte JSON payloads; 8 partitions = mqd partitions / redis keys bench:<shape>:<p> / "
                "nats subjects\n"
                "  single: 1 msg per call, waiting for it: mqd %d HTTP keep-alive connections, redis %d "
                "connections (XADD),\n"
                "    nats %d callers sharing %zu connections (js_Publish); %.1f s warm-up + %g s measured\n"
                "  batch: %d producers: mqd %zu msgs per POST /produce, redis %zu XADDs pipelined per round "
                "trip, nats\n"
                "    js_PublishAsync (max %d PubAcks pending each); %.1f s warm-up + %g s measured\n"
                "  e2e: %llu msgs from %d batch producers while %d consumers ack in batches: mqd SSE stream "
                "per partition\n"
                "    (max_inflight %d) + POST /ack per received batch; redis XREADGROUP COUNT %d + XACK; "
                "nats durable pull\n"
                "    consumer, Fetch(%d) + natsMsg_Ack each (explicit acks) + a flush per batch\n"
                "  latency: %g msgs/s paced over %d single-message callers (as single) into 1 partition, 1 "
                "consumer (as\n"
                "    e2e), %g s\n"
                "  median of %d repetitions; systems interleaved in each; fresh servers for each repetition "
                "of a level\n",
                kPayloadBytes, kMqdSingleConnections, kRedisSingleClients, kNatsSinglePublishers,
                kNatsSharedConnections, std::chrono::duration<double>(kWarmup).count(), options.seconds,
                kBatchProducers, kMqdBatchMessages, kRedisPipeline, kNatsMaxPending,
                std::chrono::duration<double>(kWarmup).count(), options.seconds,
                static_cast<unsigned long long>(options.messages), kBatchProducers, kE2eConsumers,
                kMqdMaxInflight, kConsumerBatch, kConsumerBatch, options.rate, kPacedCallers, options.seconds,
                options.repeat);
  return text + shapes;
}

void run_peer_benchmark(const BenchOptions& given, ScratchDirectory& scratch) {
  BenchOptions options = given;
  if (options.mqd.empty()) options.mqd = mqd_beside_this_program();
  const std::string header = header_text(options);
  std::printf("%s", header.c_str());
  std::fflush(stdout);

  FailureLog failures;
  std::map<std::string, std::vector<Measurement>> runs;  // by "level/shape/system"
  const auto key = [](const std::string& level, Shape shape, const std::string& system) {
    return level + "/" + shape_name(shape) + "/" + system;
  };
  for (int r = 0; r < options.repeat; ++r) {
    for (const auto& level : options.levels) {
      std::vector<std::unique_ptr<System>> systems;
      for (const auto& name : systems_at(options, level))
        systems.push_back(start_system(name, level, options, scratch));
      for (const Shape shape : options.shapes) {
        for (auto& system : systems) {
          RunContext run(key(level, shape, system->name()), failures);
          Measurement m;
          try {
            m = run_shape(*system, shape, options, run);
          } catch (const std::exception& e) {  // this run failed; the others can still say something
            run.fail(e.what());
          }
          runs[run.where].push_back(m);
          std::fprintf(
              stderr,
              "  run %d/%d %-22s %9.0f msgs/s  p50 %8.0f us  p99 %8.0f us  p99.9 %8.0f us  cores srv "
              "%.2f cli %.2f%s\n",
              r + 1, options.repeat, run.where.c_str(), m.msgs_per_second, m.p50_us, m.p99_us, m.p999_us,
              m.server_cores, m.client_cores, m.duplicates > 0 ? "  (redeliveries)" : "");
        }
      }
      for (auto& system : systems) system->stop();
    }
  }
  nats_Close();  // every NATS object is gone: lets the library's threads end

  std::vector<LevelTable> tables;
  for (const auto& level : options.levels) {
    LevelTable table{level, {}};
    for (const Shape shape : options.shapes) {
      const auto median_at = [&](const std::string& system) -> std::optional<Measurement> {
        const auto found = runs.find(key(level, shape, system));
        if (found == runs.end()) return std::nullopt;
        const auto& ms = found->second;
        return Measurement{
            median_of(ms, &Measurement::msgs_per_second), median_of(ms, &Measurement::p50_us),
            median_of(ms, &Measurement::p99_us),          median_of(ms, &Measurement::p999_us),
            median_of(ms, &Measurement::duplicates),      median_of(ms, &Measurement::server_cores),
            median_of(ms, &Measurement::client_cores)};
      };
      const auto redis = median_at("redis");
      const auto nats = median_at("nats");
      for (const auto& system : systems_at(options, level)) {
        Row row{shape, system, *median_at(system), std::nullopt, std::nullopt};
        if (redis && system != "redis") row.vs_redis = ratio(shape, row.median, *redis);
        if (nats && system != "nats") row.vs_nats = ratio(shape, row.median, *nats);
        row.kept_up = shape != Shape::kLatency || row.median.msgs_per_second >= kKeptUp * options.rate;
        row.failed = failures.count(key(level, shape, system)) != 0;
        table.rows.push_back(row);
      }
    }
    if (!table.rows.empty()) tables.push_back(std::move(table));
  }
  for (const auto& table : tables) print_table(table);
  std::printf("\n%s", kLegend);
  failures.print();
  std::printf("failures: %llu\n", static_cast<unsigned long long>(failures.count()));
  std::fflush(stdout);
  if (options.report)
    write_report(tables, options, machine_line(scratch.path(), scratch.fresh_path("machine")), header);
  if (failures.count() != 0)
    throw std::runtime_error(std::to_string(failures.count()) + " failure(s), see FAIL lines");
}

}  // namespace

int main(int argc, char** argv) {
  // A write to a connection the peer closed must be an error return, not the end of the program.
  ::signal(SIGPIPE, SIG_IGN);
  return mq::bench::run_main("peer_bench", kUsage, argc, argv, parse_options, run_peer_benchmark);
}

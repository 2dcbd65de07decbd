// The kill -9 checker: concurrent produce (single, keyed, batches) and consume/ack against a real
// mqd (FSYNC=always) that is killed with SIGKILL at random moments and restarted on the same port and
// data directory; every operation the clients saw is recorded, and after the run the history is
// checked against the logs mqd left behind (check.cc). The kill schedule comes from a seed, printed
// so that a run can be replayed. `--plant-bug drop-last-line` drops a synced line between a kill and
// the restart, and then the run passes only if the checker reports it.
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <unordered_set>

#include "history.h"
#include "http_helpers.h"
#include "mqd_process.h"
#include "temp_dir.h"

#ifndef MQ_DEFAULT_MQD_PATH
#define MQ_DEFAULT_MQD_PATH ""
#endif

namespace mq::chaos {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

constexpr const char* kTopic = "chaos";
constexpr const char* kGroup = "chaos-checker";
constexpr std::size_t kMaxBacklog = 4000;  // messages answered 200 and not yet acknowledged

struct Options {
  std::uint64_t seed = 0;
  bool seed_given = false;
  int kills = 20;
  double duration_s = 0;  // 0: two seconds per kill
  std::uint32_t partitions = 4;
  int producers = 3;
  int consumers_per_partition = 2;
  double drain_timeout_s = 30;  // the drain fails after this long without progress
  std::string mqd_path;
  std::string plant_bug;  // "", "drop-last-line" or "forget-acks"
  bool keep_data = false;
  std::vector<std::pair<std::string, std::string>> extra_env;
};

const char* kUsage = R"(usage: kill9_checker [options]
Drives produce (single, keyed, keyless, batches of 2-6 and now and then of 20-200) and consume/ack
(short visibility timeouts, acks of one and of several ids) against a real mqd with FSYNC=always,
kills it with SIGKILL at random moments (sometimes while it starts; sometimes a torn tail is appended
before the restart), restarts it on the same port and data directory, then drains the group and
checks the history against the logs: every produce answered 200 is in the log at its offset with its
payload, offsets are contiguous, no payload is stored twice, batches are all or nothing, every
delivery is a message of the final log, no message is delivered again after an ack of it was answered
200, and every message never acknowledged is delivered again until it is. Exit status 0: no violation (with --plant-bug: the bug was caught).
  --seed N                   seed of the kill schedule and the workload (default: random, printed)
  --kills N                  SIGKILLs (default 20)
  --duration S               seconds over which the kills are spread (default 2 per kill)
  --partitions N             partitions of the topic (default 4)
  --producers N              producer threads (default 3)
  --consumers-per-partition N  competing consumers of the group per partition (default 2)
  --drain-timeout S          the final drain fails after S seconds without a new acknowledgement
                             (default 30; at most 15 minutes in all)
  --plant-bug drop-last-line between a kill and the restart, cut the last line of one partition log
                             that was answered 200; the run passes only if the checker reports it lost
  --plant-bug forget-acks    between a kill and the restart, delete every file of DATA_DIR but the
                             partition logs and their indexes (the group's acknowledgements); the run
                             passes only if the checker reports an acknowledged message delivered again
  --mqd PATH                 the mqd program (default $MQD_PATH, else the one built beside this program)
  --mqd-env NAME=VALUE       extra environment for mqd (repeatable)
  --keep-data                keep the data directory and mqd's stderr files (printed)
)";

[[noreturn]] void usage_error(const std::string& message) {
  std::cerr << "kill9_checker: " << message << "\n" << kUsage;
  std::exit(2);
}

Options parse_options(int argc, char** argv) {
  Options options;
  auto value = [&](int& i) -> std::string {
    if (i + 1 >= argc) usage_error(std::string(argv[i]) + " needs a value");
    return argv[++i];
  };
  auto number = [&](int& i, double low, double high) {
    const std::string name = argv[i];
    const std::string text = value(i);
    char* end = nullptr;
    const double n = std::strtod(text.c_str(), &end);
    if (text.empty() || *end != '\0' || !(n >= low && n <= high)) {
      std::ostringstream range;
      range << name << " wants a number from " << low << " to " << high;
      usage_error(range.str());
    }
    return n;
  };
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      std::exit(0);
    } else if (arg == "--seed") {
      const std::string text = value(i);
      char* end = nullptr;
      options.seed = std::strtoull(text.c_str(), &end, 10);
      if (text.empty() || *end != '\0') usage_error("--seed wants a whole number");
      options.seed_given = true;
    } else if (arg == "--kills") {
      options.kills = static_cast<int>(number(i, 0, 100000));
    } else if (arg == "--duration") {
      options.duration_s = number(i, 0.1, 86400);
    } else if (arg == "--partitions") {
      options.partitions = static_cast<std::uint32_t>(number(i, 1, 64));
    } else if (arg == "--producers") {
      options.producers = static_cast<int>(number(i, 1, 64));
    } else if (arg == "--consumers-per-partition") {
      options.consumers_per_partition = static_cast<int>(number(i, 1, 16));
    } else if (arg == "--drain-timeout") {
      options.drain_timeout_s = number(i, 1, 3600);
    } else if (arg == "--plant-bug") {
      options.plant_bug = value(i);
      if (options.plant_bug != "drop-last-line" && options.plant_bug != "forget-acks") {
        usage_error("--plant-bug knows drop-last-line and forget-acks");
      }
    } else if (arg == "--mqd") {
      options.mqd_path = value(i);
    } else if (arg == "--mqd-env") {
      const std::string text = value(i);
      const auto eq = text.find('=');
      if (eq == std::string::npos || eq == 0) usage_error("--mqd-env wants NAME=VALUE");
      options.extra_env.emplace_back(text.substr(0, eq), text.substr(eq + 1));
    } else if (arg == "--keep-data") {
      options.keep_data = true;
    } else {
      usage_error("unknown option " + arg);
    }
  }
  if (options.duration_s == 0) options.duration_s = std::max(2.0 * options.kills, 5.0);
  if (!options.seed_given) options.seed = std::random_device{}() * 1000003ull + std::random_device{}();
  if (options.mqd_path.empty()) {
    const char* env = std::getenv("MQD_PATH");
    options.mqd_path = env != nullptr && *env ? env : MQ_DEFAULT_MQD_PATH;
  }
  if (options.mqd_path.empty() || ::access(options.mqd_path.c_str(), X_OK) != 0) {
    usage_error("no mqd program at '" + options.mqd_path + "' (give --mqd or MQD_PATH)");
  }
  return options;
}

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::string fixed(double value, int digits = 2) {
  std::ostringstream out;
  out.setf(std::ios::fixed);
  out.precision(digits);
  out << value;
  return out.str();
}

// mqd, incarnation after incarnation, on one port and one data directory. The incarnation counter
// goes up right before a process is spawned, and only after the previous one has exited; `up` is
// true from the moment it accepts connections until the moment before it is killed.
class Mqd {
 public:
  Mqd(std::string program, std::map<std::string, std::string> env, int port, std::string log_dir)
      : program_(std::move(program)), env_(std::move(env)), port_(port), log_dir_(std::move(log_dir)) {}

  // Spawns the next incarnation and waits (bounded) until it listens.
  bool start(Clock::duration* took = nullptr) {
    const int n = incarnation_.load() + 1;
    const auto began = Clock::now();
    incarnation_.store(n);
    process_ =
        std::make_unique<testing::ServerProcess>(program_, std::vector<std::string>{}, env_, stderr_path(n));
    if (!process_->wait_until_listening(port_, 30s)) return false;
    if (took != nullptr) *took = Clock::now() - began;
    std::lock_guard lock(mutex_);
    up_ = true;
    changed_.notify_all();
    return true;
  }

  // Whether the current incarnation exited, and how: a crash at start-up looks like no listening.
  std::string how_it_ended() {
    const auto ended = process_ ? process_->wait_exit(std::chrono::milliseconds(0)) : std::nullopt;
    if (!ended) return "still running";
    const int status = *ended;
    if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
    return "exited with status " + std::to_string(WEXITSTATUS(status));
  }

  // Spawns the next incarnation and kills it with SIGKILL `after` the spawn, while it recovers or
  // has just begun to listen (it is never marked up); true once it has exited.
  bool start_and_kill(Clock::duration after) {
    const int n = incarnation_.load() + 1;
    incarnation_.store(n);
    process_ =
        std::make_unique<testing::ServerProcess>(program_, std::vector<std::string>{}, env_, stderr_path(n));
    std::this_thread::sleep_for(after);  // the random moment of the fault
    return process_->stop(SIGKILL, 10s).has_value();
  }

  // SIGKILL, and the exit awaited on a pidfd (bounded).
  bool kill9() {
    mark_down();
    return process_->stop(SIGKILL, 10s).has_value();
  }

  // SIGTERM; the wait status, or nullopt if it did not exit within 20 s.
  std::optional<int> stop() {
    mark_down();
    return process_->stop(SIGTERM, 20s);
  }

  int incarnation() const { return incarnation_.load(); }

  // Waits until an incarnation accepts connections, at most `timeout`; true if one does.
  bool await_up(Clock::duration timeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return up_; });
  }

  std::string stderr_path(int n) const { return log_dir_ + "/mqd-" + std::to_string(n) + ".stderr"; }
  std::string stderr_text(int n) const {
    std::ifstream in(stderr_path(n));
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

 private:
  void mark_down() {
    std::lock_guard lock(mutex_);
    up_ = false;
  }

  std::string program_;
  std::map<std::string, std::string> env_;
  int port_;
  std::string log_dir_;
  std::unique_ptr<testing::ServerProcess> process_;  // used by the orchestrating thread only
  std::atomic<int> incarnation_{0};
  std::mutex mutex_;
  std::condition_variable changed_;
  bool up_ = false;  // GUARDED_BY(mutex_)
};

// What the group has acknowledged, by (partition, offset): answered 200 or answer lost. The drain
// awaits it covering every offset of the log.
class AckTracker {
 public:
  void add(std::uint32_t partition, const std::vector<std::uint64_t>& offsets) {
    std::lock_guard lock(mutex_);
    for (auto offset : offsets) total_ += covered_[partition].insert(offset).second ? 1 : 0;
    changed_.notify_all();
  }
  // Waits until every offset below next_offset[p] is covered; false once `idle` passes without a
  // new offset covered, or at `deadline`.
  bool await_covered(const std::map<std::uint32_t, std::uint64_t>& next_offset, Clock::duration idle,
                     Clock::time_point deadline) {
    std::unique_lock lock(mutex_);
    std::size_t seen = total_;
    auto idle_deadline = Clock::now() + idle;
    for (;;) {
      if (std::all_of(next_offset.begin(), next_offset.end(),
                      [&](const auto& entry) { return covered_[entry.first].size() >= entry.second; })) {
        return true;
      }
      if (total_ != seen) {
        seen = total_;
        idle_deadline = Clock::now() + idle;
      }
      const auto until = std::min(idle_deadline, deadline);
      if (Clock::now() >= until) return false;
      changed_.wait_until(lock, until);
    }
  }
  // Waits until at least `n` offsets are covered, at most `timeout`.
  void await_total(std::size_t n, Clock::duration timeout) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, timeout, [&] { return total_ >= n; });
  }
  // Waits for the next acknowledgement, at most until `deadline`.
  void await_change(Clock::time_point deadline) {
    std::unique_lock lock(mutex_);
    changed_.wait_until(lock, deadline);
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::uint32_t, std::set<std::uint64_t>> covered_;  // GUARDED_BY(mutex_)
  std::size_t total_ = 0;                                     // GUARDED_BY(mutex_): offsets covered
};

class Run {
 public:
  explicit Run(Options options) : options_(std::move(options)) {}

  int execute();

 private:
  void producer(int index);
  void consumer(int index, std::uint32_t partition);
  void record(ProduceOp op);
  std::optional<std::map<std::uint32_t, GroupPosition>> group_positions();
  bool drain();
  void tear_tail(std::mt19937_64& rng);
  void plant_drop_last_line();
  void plant_forget_acks();
  int conclude(const Verdict& verdict);

  Options options_;
  std::unique_ptr<testing::TempDir> temp_;  // removed at the end, unless --keep-data
  std::string dir_;
  std::string data_dir_;
  int port_ = 0;
  std::unique_ptr<Mqd> mqd_;
  AckTracker acks_;
  std::atomic<bool> stop_producing_{false};
  std::atomic<std::size_t> messages_ok_{0};  // messages of produces answered 200
  std::atomic<bool> draining_{false};
  std::atomic<bool> stop_consuming_{false};

  std::mutex history_mutex_;
  History history_;                          // GUARDED_BY(history_mutex_) while workers run
  std::unordered_set<std::string> ok_uids_;  // GUARDED_BY(history_mutex_): produces answered 200

  struct Planted {
    std::uint32_t partition;  // drop-last-line: where, and the message lost
    std::uint64_t offset;
    std::string uid;
    std::size_t lines_dropped;
    std::size_t files_deleted;  // forget-acks
  };
  std::optional<Planted> planted_;
  int kills_done_ = 0;
  int startup_kills_ = 0;  // restarts killed again while starting
  int torn_tails_ = 0;     // torn writes simulated between a kill and the restart
  std::vector<double> restart_ms_;
  double drain_s_ = 0;
};

void Run::record(ProduceOp op) {
  std::lock_guard lock(history_mutex_);
  if (op.outcome == Outcome::kOk) {
    for (const auto& uid : op.uids) ok_uids_.insert(uid);
    messages_ok_ += op.uids.size();
  }
  history_.produces.push_back(std::move(op));
}

// One producer: requests one after the other on a keep-alive connection, never retried.
void Run::producer(int index) {
  std::mt19937_64 rng(options_.seed * 7919 + static_cast<std::uint64_t>(index) + 1);
  auto chance = [&](double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; };
  auto pick = [&](int low, int high) { return std::uniform_int_distribution<int>(low, high)(rng); };
  httplib::Client client("127.0.0.1", port_);
  client.set_keep_alive(true);
  client.set_tcp_nodelay(true);
  client.set_connection_timeout(5s);
  client.set_read_timeout(30s);
  std::uint64_t n = 0;
  static constexpr ProduceOp::Style kStyles[] = {ProduceOp::Style::kSingle, ProduceOp::Style::kSingleKeyed,
                                                 ProduceOp::Style::kSingleUnrouted, ProduceOp::Style::kBatch,
                                                 ProduceOp::Style::kBatchKeyed};
  while (!stop_producing_) {
    // Flow control: producers wait (bounded) while the group is more than kMaxBacklog messages
    // behind, so that the final drain stays short however long the run.
    if (const std::size_t ok = messages_ok_.load(); ok > kMaxBacklog) acks_.await_total(ok - kMaxBacklog, 1s);
    ProduceOp op;
    op.style = kStyles[pick(0, 4)];
    const bool batch = op.style == ProduceOp::Style::kBatch || op.style == ProduceOp::Style::kBatchKeyed;
    const bool keyed =
        op.style == ProduceOp::Style::kSingleKeyed || op.style == ProduceOp::Style::kBatchKeyed;
    // One batch in forty is big (tens to hundreds of KiB in one write), so that a kill can land in
    // the middle of its write and leave a torn batch for recovery.
    const bool big = batch && chance(0.025);
    const int count = big ? pick(20, 200) : batch ? pick(2, 6) : 1;
    const int pad = big ? 1500 : 160;
    const std::string key = keyed ? "key-" + std::to_string(pick(0, 15)) : "";
    json messages = json::array();
    for (int m = 0; m < count; ++m) {
      const std::string uid = "p" + std::to_string(index) + "-" + std::to_string(n++);
      const char letter = static_cast<char>('a' + pick(0, 25));
      json payload = {{"uid", uid}, {"pad", std::string(static_cast<std::size_t>(pick(0, pad)), letter)}};
      if (chance(0.2)) payload["nested"] = {{"list", {1, 2.5, true, nullptr, "\u00e9\u2713"}}, {"n", n}};
      json message = {{"payload", payload}};
      if (keyed) message["key"] = key;
      op.uids.push_back(uid);
      op.payloads.push_back(payload.dump());
      op.keys.push_back(key);
      messages.push_back(std::move(message));
    }
    std::string target = std::string("/produce?topic=") + kTopic;
    if (op.style == ProduceOp::Style::kSingle || op.style == ProduceOp::Style::kBatch) {
      op.partition_asked = static_cast<std::uint32_t>(pick(0, static_cast<int>(options_.partitions) - 1));
      target += "&partition=" + std::to_string(*op.partition_asked);
    }
    const std::string body = batch ? json{{"messages", messages}}.dump() : messages[0].dump();

    op.epochs.lo = mqd_->incarnation();
    op.sent = Clock::now();
    auto result = client.Post(target, body, "application/json");
    op.answered = Clock::now();
    op.epochs.hi = mqd_->incarnation();
    if (!result) {
      op.outcome = result.error() == httplib::Error::Connection ? Outcome::kRefused : Outcome::kIndeterminate;
      op.error = httplib::to_string(result.error());
    } else if (result->status != 200) {
      op.outcome = Outcome::kRejected;
      op.status = result->status;
      op.error = result->body;
    } else {
      op.status = 200;
      op.outcome = Outcome::kOk;
      try {
        const auto answer = json::parse(result->body);
        op.partition = answer.at("partition").get<std::uint32_t>();
        if (batch) {
          for (const auto& o : answer.at("offsets")) op.offsets.push_back(o.get<std::uint64_t>());
        } else {
          op.offsets.push_back(answer.at("offset").get<std::uint64_t>());
        }
      } catch (const json::exception&) {
        op.outcome = Outcome::kRejected;  // reported by the check as an unexpected status
        op.status = 299;
        op.error = "unreadable 200 answer: " + result->body;
      }
    }
    const bool failed = !result;
    record(std::move(op));
    // A lost connection means mqd is being killed (it is marked down before the signal): wait for
    // the next incarnation rather than spin against a closed port.
    if (failed) mqd_->await_up(5s);
  }
}

// One consumer of the checker's group on one partition: an event stream, reopened after every
// kill; about three messages in four are acknowledged (alone or several at once), the others are
// left to time out and come again. In the drain every message is acknowledged.
void Run::consumer(int index, std::uint32_t partition) {
  std::mt19937_64 rng(options_.seed * 104729 + static_cast<std::uint64_t>(index) + 1);
  auto chance = [&](double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; };
  auto pick = [&](int low, int high) { return std::uniform_int_distribution<int>(low, high)(rng); };
  const int visibility_ms = pick(300, 1000);
  const int max_inflight = pick(8, 32);
  const std::string target = std::string("/consume?topic=") + kTopic +
                             "&partition=" + std::to_string(partition) + "&group=" + kGroup +
                             "&visibility_timeout_ms=" + std::to_string(visibility_ms) +
                             "&max_inflight=" + std::to_string(max_inflight);
  httplib::Client ack_client("127.0.0.1", port_);
  ack_client.set_keep_alive(true);
  ack_client.set_tcp_nodelay(true);
  ack_client.set_connection_timeout(5s);
  ack_client.set_read_timeout(30s);
  std::vector<Delivery> deliveries;
  std::vector<AckOp> acks;
  std::vector<std::size_t> pending_index;  // deliveries to acknowledge at the next flush

  // Acknowledges the deliveries of `ack` (one request).
  auto send_ack = [&](AckOp ack) {
    ack.as_list = ack.ids.size() > 1 || chance(0.3);
    const std::string body = ack.as_list ? json{{"ids", ack.ids}}.dump() : json{{"id", ack.ids[0]}}.dump();
    const std::string ack_target =
        std::string("/ack?topic=") + kTopic + "&partition=" + std::to_string(partition) + "&group=" + kGroup;
    ack.epochs.lo = mqd_->incarnation();
    ack.sent = Clock::now();
    auto result = ack_client.Post(ack_target, body, "application/json");
    ack.answered = Clock::now();
    ack.epochs.hi = mqd_->incarnation();
    if (!result) {
      ack.outcome =
          result.error() == httplib::Error::Connection ? Outcome::kRefused : Outcome::kIndeterminate;
      ack.error = httplib::to_string(result.error());
    } else {
      ack.status = result->status;
      ack.outcome = result->status == 200 ? Outcome::kOk : Outcome::kRejected;
      if (result->status != 200) ack.error = result->body;
    }
    if (ack.outcome == Outcome::kOk || ack.outcome == Outcome::kIndeterminate)
      acks_.add(partition, ack.offsets);
    acks.push_back(std::move(ack));
  };
  // Acknowledges what waits, in requests of 1 to 5 ids (up to 16 in the drain).
  auto flush = [&] {
    for (std::size_t next = 0; next < pending_index.size();) {
      const auto size = static_cast<std::size_t>(draining_ ? pick(1, 16) : pick(1, 5));
      AckOp ack;
      ack.partition = partition;
      for (; next < pending_index.size() && ack.ids.size() < size; ++next) {
        const Delivery& d = deliveries[pending_index[next]];
        ack.ids.push_back(d.id);
        ack.offsets.push_back(d.offset);
        ack.uids.push_back(d.uid);
      }
      send_ack(std::move(ack));
    }
    pending_index.clear();
  };

  while (!stop_consuming_) {
    if (!mqd_->await_up(1s)) continue;
    StreamRecord stream{index, partition, Clock::time_point{}, mqd_->incarnation()};
    stream.opened = Clock::now();
    std::size_t stream_index = 0;
    {
      std::lock_guard lock(history_mutex_);
      stream_index = history_.streams.size();
      history_.streams.push_back(stream);
    }
    std::size_t seq = 0;
    std::string buffer;
    httplib::Client client("127.0.0.1", port_);
    client.set_tcp_nodelay(true);
    client.set_connection_timeout(5s);
    client.set_read_timeout(10s);  // mqd runs with HEARTBEAT_MS=200: silence this long is a stall
    auto on_event = [&](const std::string& block) {
      std::string data;
      std::size_t start = 0;
      while (start < block.size()) {
        const auto nl = block.find('\n', start);
        const std::string line =
            block.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
        if (line.starts_with("data: ")) data = line.substr(6);
        if (nl == std::string::npos) break;
        start = nl + 1;
      }
      Delivery d;
      d.stream = stream_index;
      d.seq = seq++;
      d.partition = partition;
      d.received = Clock::now();
      try {
        const auto event = json::parse(data);
        d.offset = event.at("offset").get<std::uint64_t>();
        d.id = event.at("id").get<std::string>();
        d.delivery = event.at("delivery").get<int>();
        const auto& payload = event.at("payload");
        d.payload_hash = payload_hash(payload.dump());
        if (payload.is_object() && payload.contains("uid")) d.uid = payload["uid"].get<std::string>();
        if (event.at("partition").get<std::uint32_t>() != partition) d.uid = "(event of another partition)";
      } catch (const json::exception&) {
        d.id.clear();  // not acknowledged; the check reports it as a delivery that is not in the log
        d.uid = "(malformed event: " + data.substr(0, 200) + ")";
      }
      deliveries.push_back(std::move(d));
      if (!deliveries.back().id.empty() && (draining_ || chance(0.75))) {
        pending_index.push_back(deliveries.size() - 1);
      }
    };
    client.Get(
        target, [&](const httplib::Response& response) { return response.status == 200; },
        [&](const char* data, std::size_t length) {
          buffer.append(data, length);
          std::size_t begin = 0;
          for (std::size_t end; (end = buffer.find("\n\n", begin)) != std::string::npos; begin = end + 2) {
            const std::string block = buffer.substr(begin, end - begin);
            if (!block.starts_with(":")) on_event(block);  // ": keepalive" comments are skipped
          }
          buffer.erase(0, begin);
          flush();  // what this read brought: mqd writes every ready event at once
          return !stop_consuming_.load();
        });
    flush();  // the ids stay valid across connections and restarts
    if (!stop_consuming_) mqd_->await_up(5s);
  }
  std::lock_guard lock(history_mutex_);
  for (auto& d : deliveries) history_.deliveries.push_back(std::move(d));
  for (auto& a : acks) history_.acks.push_back(std::move(a));
}

std::optional<std::map<std::uint32_t, GroupPosition>> Run::group_positions() {
  auto answer = testing::http_get(port_, std::string("/stats?topic=") + kTopic);
  if (answer.status != 200) return std::nullopt;
  std::map<std::uint32_t, GroupPosition> positions;
  try {
    const auto stats = json::parse(answer.body);
    for (const auto& topic : stats.at("topics")) {
      if (topic.at("name") != kTopic) continue;
      for (const auto& partition : topic.at("partitions")) {
        GroupPosition position;
        position.next_offset = partition.at("next_offset").get<std::uint64_t>();
        for (const auto& group : partition.value("groups", json::array())) {
          if (group.at("group") != kGroup) continue;
          position.committed_offset = group.at("committed_offset").get<std::uint64_t>();
          position.inflight = group.at("inflight").get<std::uint64_t>();
        }
        positions[partition.at("partition").get<std::uint32_t>()] = position;
      }
    }
  } catch (const json::exception&) {
    return std::nullopt;
  }
  return positions;
}

// After the last restart, with the producers stopped: every consumer acknowledges whatever comes,
// until every offset of every partition has been acknowledged and mqd's group position agrees, or
// the drain timeout passes.
bool Run::drain() {
  draining_ = true;
  const auto began = Clock::now();
  const auto idle =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(options_.drain_timeout_s));
  const auto deadline = began + 15min;
  auto positions = group_positions();
  if (!positions) return false;
  std::map<std::uint32_t, std::uint64_t> next_offset;
  for (const auto& [p, position] : *positions) next_offset[p] = position.next_offset;
  bool drained = false;
  if (acks_.await_covered(next_offset, idle, deadline)) {
    // Acks whose answers were lost count above only if they were stored: mqd's position decides.
    const auto settled = std::min(deadline, Clock::now() + idle);
    while (Clock::now() < settled) {
      positions = group_positions();
      drained =
          positions.has_value() && std::all_of(positions->begin(), positions->end(), [](const auto& entry) {
            return entry.second.committed_offset == entry.second.next_offset && entry.second.inflight == 0;
          });
      if (drained) break;
      acks_.await_change(std::min(settled, Clock::now() + 500ms));
    }
  }
  drain_s_ = seconds(Clock::now() - began);
  return drained;
}

// Between a kill and the restart: cut one partition's active log at the start of its last line whose
// produce was answered 200 (and so drop everything after it too), as if a synced line were lost.
void Run::plant_drop_last_line() {
  std::vector<std::uint32_t> order(options_.partitions);
  for (std::uint32_t p = 0; p < options_.partitions; ++p) order[p] = p;
  std::mt19937_64 rng(options_.seed + static_cast<std::uint64_t>(kills_done_));
  std::shuffle(order.begin(), order.end(), rng);
  for (std::uint32_t p : order) {
    const std::string path = data_dir_ + "/" + kTopic + "/partition-" + std::to_string(p) + ".log";
    std::ifstream in(path, std::ios::binary);
    const std::string text(std::istreambuf_iterator<char>(in), {});
    std::size_t end = text.rfind('\n');  // complete lines end before here
    std::size_t lines = 0;
    while (end != std::string::npos && end > 0) {
      const std::size_t begin =
          text.rfind('\n', end - 1) == std::string::npos ? 0 : text.rfind('\n', end - 1) + 1;
      ++lines;
      auto record = json::parse(text.substr(begin, end - begin), nullptr, false);
      std::string uid;
      if (record.is_object() && record.contains("payload") && record["payload"].is_object() &&
          record["payload"].contains("uid")) {
        uid = record["payload"]["uid"].get<std::string>();
      }
      bool answered = false;
      {
        std::lock_guard lock(history_mutex_);
        answered = ok_uids_.contains(uid);
      }
      if (answered) {
        std::filesystem::resize_file(path, begin);
        planted_ = Planted{p, record["offset"].get<std::uint64_t>(), uid, lines, 0};
        std::cout << "  planted bug: cut partition " << p << " at offset " << planted_->offset << " (uid "
                  << uid << ", answered 200), " << lines << " line(s) dropped" << std::endl;
        return;
      }
      if (begin == 0 || lines >= 1000) break;
      end = begin - 1;
    }
  }
  std::cout << "  planted bug: no partition ends in a line answered 200 yet; trying at the next kill"
            << std::endl;
}

// Between a kill and the restart, the damage a kill in the middle of a write leaves (which real kills
// seldom hit, a write being short): one partition's log gets the start of one more record, or two
// complete lines of a three-line batch (libmq/docs/log_format.md), maybe with half of the third.
// Recovery must cut it all; the check reports any of it that survives (uids "torn-...", never sent).
void Run::tear_tail(std::mt19937_64& rng) {
  // Every draw first, so that the schedule after this stays the same whatever the files hold.
  const auto p = std::uniform_int_distribution<std::uint32_t>(0, options_.partitions - 1)(rng);
  const bool half_batch = std::uniform_int_distribution<int>(0, 1)(rng) == 1;
  const double cut = std::uniform_real_distribution<double>(0, 1)(rng);
  const std::string path = data_dir_ + "/" + kTopic + "/partition-" + std::to_string(p) + ".log";
  std::ifstream in(path, std::ios::binary);
  std::string text(std::istreambuf_iterator<char>(in), {});
  in.close();
  // With FSYNC=always the log is preallocated: zeros follow its records (log_format.md
  // "Preallocated space"). The tear goes where the next write would: over the first of them.
  const auto records_end = text.find_last_not_of('\0');
  text.resize(records_end == std::string::npos ? 0 : records_end + 1);
  if (text.empty() || text.back() != '\n') {  // empty, or already torn by the kill itself
    std::cout << "  torn tail: not on partition " << p << " (" << text.size() << " bytes, torn already)"
              << std::endl;
    return;
  }
  const std::size_t begin =
      text.rfind('\n', text.size() - 2) == std::string::npos ? 0 : text.rfind('\n', text.size() - 2) + 1;
  auto last = json::parse(text.substr(begin), nullptr, false);
  if (!last.is_object() || !last.contains("offset")) {
    std::cout << "  torn tail: the last line of partition " << p << " is not a record" << std::endl;
    return;
  }
  const std::uint64_t next = last["offset"].get<std::uint64_t>() + 1;
  const auto timestamp = std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                            std::chrono::system_clock::now().time_since_epoch())
                                            .count());
  auto line = [&](std::uint64_t offset, std::optional<std::uint64_t> batch_last) {
    std::string out = "{\"offset\":" + std::to_string(offset) + ",\"timestamp\":" + timestamp;
    if (batch_last) out += ",\"batch_last\":" + std::to_string(*batch_last);
    return out + ",\"payload\":{\"uid\":\"torn-" + std::to_string(torn_tails_) + "-" +
           std::to_string(offset) + "\",\"pad\":\"" + std::string(40, 't') + "\"}}\n";
  };
  std::string tail;
  if (half_batch) {  // two complete lines and 0 to all but one byte of the third
    tail = line(next, next + 2) + line(next + 1, next + 2);
    const std::string third = line(next + 2, next + 2);
    tail += third.substr(0, static_cast<std::size_t>(cut * static_cast<double>(third.size())));
  } else {  // 1 to all but one byte of a record
    const std::string one = line(next, std::nullopt);
    tail = one.substr(0, 1 + static_cast<std::size_t>(cut * static_cast<double>(one.size() - 1)));
  }
  {
    std::fstream out(path, std::ios::binary | std::ios::in | std::ios::out);
    out.seekp(static_cast<std::streamoff>(text.size()));
    out << tail;
  }
  ++torn_tails_;
  std::cout << "  torn tail: " << tail.size() << " bytes ("
            << (half_batch ? "two thirds of a batch" : "part of a record") << ") appended to partition " << p
            << " at offset " << next << std::endl;
}

// Between a kill and the restart: delete everything of the data directory but the lock file and the
// partitions' logs and indexes, wherever the groups keep their state: acknowledgements are lost.
void Run::plant_forget_acks() {
  namespace fs = std::filesystem;
  const std::string prefix = "partition-";
  std::size_t deleted = 0;
  for (const auto& entry : fs::directory_iterator(data_dir_)) {
    const std::string name = entry.path().filename().string();
    if (name == ".lock" || name == kTopic) continue;
    deleted += static_cast<std::size_t>(fs::remove_all(entry.path()));
  }
  for (const auto& entry : fs::directory_iterator(fs::path(data_dir_) / kTopic)) {
    const std::string name = entry.path().filename().string();
    const bool partition_file = entry.is_regular_file() && name.starts_with(prefix) &&
                                (name.ends_with(".log") || name.ends_with(".index"));
    if (!partition_file) deleted += static_cast<std::size_t>(fs::remove_all(entry.path()));
  }
  planted_ = Planted{0, 0, "", 0, deleted};
  std::cout << "  planted bug: deleted " << deleted << " files and directories of the groups' state"
            << std::endl;
}

int Run::execute() {
  const auto wall_start = Clock::now();
  history_.start = wall_start;
  if (options_.keep_data) {
    std::string pattern = std::filesystem::temp_directory_path().string() + "/mq-chaos-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) {
      std::cerr << "cannot create a directory under " << pattern << std::endl;
      return 2;
    }
    dir_ = pattern;
  } else {
    temp_ = std::make_unique<testing::TempDir>();
    dir_ = temp_->path();
  }
  data_dir_ = dir_ + "/data";
  port_ = testing::free_port();
  std::map<std::string, std::string> env = {
      {"PORT", std::to_string(port_)},
      {"DATA_DIR", data_dir_},
      {"FSYNC", "always"},
      {"TOPICS", std::string(kTopic) + ":" + std::to_string(options_.partitions)},
      {"HEARTBEAT_MS", "200"}};
  for (const auto& [name, value] : options_.extra_env) env[name] = value;
  mqd_ = std::make_unique<Mqd>(options_.mqd_path, env, port_, dir_);

  std::cout << "kill9_checker: seed " << options_.seed << "; replay: kill9_checker --seed " << options_.seed
            << " --kills " << options_.kills << " --duration " << options_.duration_s << " --partitions "
            << options_.partitions << " --producers " << options_.producers << " --consumers-per-partition "
            << options_.consumers_per_partition
            << (options_.plant_bug.empty() ? "" : " --plant-bug " + options_.plant_bug) << "\n"
            << "  mqd " << options_.mqd_path << " on port " << port_ << ", FSYNC=always, topic " << kTopic
            << " with " << options_.partitions << " partitions, " << options_.producers << " producers, "
            << options_.consumers_per_partition * static_cast<int>(options_.partitions)
            << " consumers of group " << kGroup << std::endl;
  if (!mqd_->start()) {
    std::cerr << "mqd did not start: " << mqd_->stderr_text(1) << std::endl;
    return 2;
  }

  std::vector<std::thread> producers, consumers;
  for (int i = 0; i < options_.producers; ++i) producers.emplace_back([this, i] { producer(i); });
  int consumer_index = 0;
  for (std::uint32_t p = 0; p < options_.partitions; ++p) {
    for (int c = 0; c < options_.consumers_per_partition; ++c) {
      consumers.emplace_back([this, i = consumer_index++, p] { consumer(i, p); });
    }
  }

  // The fault schedule: kill k comes a random time after the previous restart (mean: the duration
  // divided by the number of kills), drawn from the seed alone.
  std::mt19937_64 schedule(options_.seed);
  const double gap_s = options_.duration_s / std::max(options_.kills, 1);
  // With a planted bug every detail is kept, so that the planted one can be looked for.
  Verdict verdict(options_.plant_bug.empty() ? 12 : static_cast<std::size_t>(-1));
  const int plant_from = std::max(1, options_.kills / 2);
  for (int k = 1; k <= options_.kills; ++k) {
    // One kill in ten comes within 50 ms of the restart: recovery's aftermath, consumers reconnecting.
    const bool early = std::uniform_real_distribution<double>(0, 1)(schedule) < 0.1;
    const double delay_s = early ? std::uniform_real_distribution<double>(0, 0.05)(schedule)
                                 : gap_s * std::uniform_real_distribution<double>(0.25, 1.75)(schedule);
    std::this_thread::sleep_for(std::chrono::duration<double>(delay_s));  // the random moment of the fault
    std::size_t answered = 0;
    {
      std::lock_guard lock(history_mutex_);
      answered = ok_uids_.size();
    }
    if (!mqd_->kill9()) {
      std::cerr << "mqd did not die of SIGKILL within 10 s" << std::endl;
      return 2;
    }
    ++kills_done_;
    std::cout << "kill " << k << "/" << options_.kills << " at +" << fixed(seconds(Clock::now() - wall_start))
              << "s, " << fixed(delay_s) << "s after the last start (" << answered
              << " messages answered 200 so far)" << std::endl;
    if (std::uniform_real_distribution<double>(0, 1)(schedule) < 0.15) tear_tail(schedule);
    if (options_.plant_bug == "drop-last-line" && !planted_ && k >= plant_from) plant_drop_last_line();
    if (options_.plant_bug == "forget-acks" && !planted_ && k >= plant_from) plant_forget_acks();
    // One restart in twenty is killed again 0-250 ms after its spawn (a start takes about that long
    // here to listen): a crash during recovery, or just after.
    std::string startup_kill;
    if (std::uniform_real_distribution<double>(0, 1)(schedule) < 0.05) {
      const auto after = std::chrono::microseconds(std::uniform_int_distribution<int>(0, 250000)(schedule));
      if (!mqd_->start_and_kill(after)) {
        std::cerr << "mqd did not die of SIGKILL within 10 s" << std::endl;
        return 2;
      }
      ++startup_kills_;
      startup_kill = " (after one more start killed " + fixed(static_cast<double>(after.count()) / 1000, 1) +
                     " ms after its spawn)";
    }
    Clock::duration took{};
    if (!mqd_->start(&took)) {
      const int n = mqd_->incarnation();
      verdict.add("no-restart", "mqd incarnation " + std::to_string(n) +
                                    " did not listen within 30 s after kill " + std::to_string(k) + " (" +
                                    mqd_->how_it_ended() + "); stderr: " + mqd_->stderr_text(n));
      std::cout << "  mqd did not come back; stopping the run" << std::endl;
      break;
    }
    restart_ms_.push_back(seconds(took) * 1000);
    std::cout << "  listening again in " << fixed(seconds(took) * 1000, 0) << " ms" << startup_kill
              << std::endl;
  }
  if (verdict.passed()) {
    std::this_thread::sleep_for(std::chrono::duration<double>(gap_s));  // load on the last incarnation too
  }
  stop_producing_ = true;
  for (auto& t : producers) t.join();
  if (verdict.passed()) {
    history_.drained = drain();
    if (auto positions = group_positions()) history_.final_positions = *positions;
  }
  stop_consuming_ = true;
  for (auto& t : consumers) t.join();
  const auto stopped = mqd_->stop();
  if (verdict.passed() && (!stopped || !WIFEXITED(*stopped) || WEXITSTATUS(*stopped) != 0)) {
    verdict.add("unclean-stop", "the last mqd did not exit with status 0 within 20 s of SIGTERM");
  }

  const auto logs = read_logs(data_dir_, kTopic, options_.partitions);
  if (verdict.passed()) check(history_, logs, verdict);
  const Figures f = figures(history_, logs);
  std::cout << "\n== figures (seed " << options_.seed << ") ==\n";
  double restart_sum = 0, restart_max = 0;
  for (double ms : restart_ms_) {
    restart_sum += ms;
    restart_max = std::max(restart_max, ms);
  }
  std::cout << "kills: " << kills_done_ << " under load and " << startup_kills_
            << " during start-up (listening again after "
            << fixed(restart_ms_.empty() ? 0 : restart_sum / static_cast<double>(restart_ms_.size()), 0)
            << " ms on average, " << fixed(restart_max, 0) << " ms at most)\n";
  std::cout << "produce requests: " << f.produce_requests << " (";
  bool first = true;
  for (const auto& [style, count] : f.requests_by_style) {
    std::cout << (first ? "" : ", ") << style << " " << count;
    first = false;
  }
  std::cout << ")\nmessages sent: " << f.messages_sent << ": answered 200 " << f.messages_ok
            << ", indeterminate " << f.messages_indeterminate << " (" << f.indeterminate_in_log
            << " of them in the log), refused " << f.messages_refused << ", rejected " << f.messages_rejected
            << "\n";
  std::cout << "log: " << f.log_messages << " messages in " << options_.partitions << " partitions\n";
  std::cout << "deliveries: " << f.deliveries << " on " << f.streams
            << " streams; redeliveries (delivery > 1) " << f.redeliveries
            << "; on streams opened after a restart " << f.deliveries_after_a_restart << "\n";
  std::cout << "acks: " << f.ack_requests << " requests (200 " << f.ack_requests_ok << ", indeterminate "
            << f.ack_requests_indeterminate << ", refused " << f.ack_requests_refused << ", rejected "
            << f.ack_requests_rejected << "), " << f.ids_acked_ok << " ids acknowledged by a 200\n";
  std::cout << "drain: " << (history_.drained ? "every message acknowledged" : "NOT complete") << " after "
            << fixed(drain_s_) << " s\n";
  // What recovery said at each start (a torn tail cut, an index rebuilt): evidence that kills hit writes.
  std::size_t reports = 0, reporting = 0;
  std::vector<std::string> report_examples;
  for (int n = 1; n <= mqd_->incarnation(); ++n) {
    std::istringstream text(mqd_->stderr_text(n));
    bool any = false;
    for (std::string line; std::getline(text, line);) {
      if (!line.starts_with("libmq:")) continue;
      ++reports;
      any = true;
      if (report_examples.size() < 3) report_examples.push_back("mqd-" + std::to_string(n) + ": " + line);
    }
    reporting += any ? 1 : 0;
  }
  std::cout << "torn tails simulated between a kill and the restart: " << torn_tails_ << "\n";
  std::cout << "recovery reports on stderr: " << reports << " lines from " << reporting << " of "
            << mqd_->incarnation() << " starts\n";
  for (const auto& line : report_examples) std::cout << "  " << line.substr(0, 300) << "\n";
  std::cout << "wall time: " << fixed(seconds(Clock::now() - wall_start), 1) << " s\n";
  if (options_.keep_data) std::cout << "data directory and mqd stderr files kept in " << dir_ << "\n";
  return conclude(verdict);
}

int Run::conclude(const Verdict& verdict) {
  std::cout << "violations: " << verdict.total();
  for (const auto& [kind, count] : verdict.counts()) std::cout << " " << kind << "=" << count;
  std::cout << "\n";
  std::map<std::string, std::size_t> shown;
  for (const auto& v : verdict.examples()) {
    if (shown[v.kind]++ < 12) std::cout << "  VIOLATION " << v.kind << ": " << v.detail << "\n";
  }
  for (const auto& [kind, count] : verdict.counts()) {
    if (count > 12) std::cout << "  ... and " << count - 12 << " more " << kind << "\n";
  }
  const auto& violations = verdict.examples();
  if (!options_.plant_bug.empty()) {
    if (!planted_) {
      std::cout << "FAIL: the bug was never planted (no partition ended in a line answered 200 at a kill)\n";
      return 1;
    }
    if (options_.plant_bug == "forget-acks") {
      const bool caught = std::any_of(violations.begin(), violations.end(),
                                      [&](const Violation& v) { return v.kind == "redelivered-after-ack"; });
      std::cout
          << (caught ? "PASS: the planted bug was caught (acknowledged messages reported delivered again)\n"
                     : "FAIL: the planted bug (acknowledgements deleted) was not reported\n");
      return caught ? 0 : 1;
    }
    const bool caught = std::any_of(violations.begin(), violations.end(), [&](const Violation& v) {
      return v.kind == "lost-produce" && v.detail.find("uid " + planted_->uid + " ") != std::string::npos;
    });
    std::cout << (caught ? "PASS: the planted bug was caught (uid " + planted_->uid + " reported lost)\n"
                         : "FAIL: the planted bug (uid " + planted_->uid +
                               ") was not reported as a lost produce\n");
    return caught ? 0 : 1;
  }
  std::cout << (verdict.passed() ? "PASS" : "FAIL") << " (seed " << options_.seed << ")\n";
  return verdict.passed() ? 0 : 1;
}

}  // namespace
}  // namespace mq::chaos

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  mq::chaos::Run run(mq::chaos::parse_options(argc, argv));
  return run.execute();
}

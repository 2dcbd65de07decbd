// queue_bench: produce -> deliver -> ack through mq::Queue on all three backends side by side, at equal
// durability, in one run.
//
//   queue_bench [--messages N] [--single-messages N] [--single-producers C] [--batch-producers C]
//               [--async-producers C] [--consumers K] [--repeat R] [--backends in-process,http,redis] [--mqd
//               PATH]
//               [--redis-server PATH] [--dir PATH]
//
// Backends, each started here and stopped at the end:
//   in-process  a mq::Broker in this program, FsyncMode::kAlways;
//   http        a spawned mqd, FSYNC=always;
//   redis       a spawned redis-server, --appendonly yes --appendfsync always --save "".
// Every run uses a fresh topic of 8 partitions ("bench<i>", the same name on every backend) and a fresh
// group ("g<i>"). mqd only serves topics configured at start, so it (and the in-process Broker) is given
// all of them up front (bench0:8,...,bench<2R-1>:8): one server for the whole benchmark keeps server
// start-up out of the runs and lets the backends be interleaved per repetition.
//
// One run: K consumers (each its own mq::Consumer in the group, one thread each) are opened, then C
// producer threads and the consumers start together. Producers send N messages with 100-byte JSON
// payloads {"t":<steady_clock ns at send>,"seq":<n>,"pad":"x..."}, one per produce call ("single": the
// single-message Queue::produce, which shares batches with the other threads), one per produce_async
// call ("async": a callback per message, the producer done when the last has run) or 100 per call
// ("batch=100"); keyless, so the queue picks the partitions. Consumers receive(max 500, 100 ms), take the
// produce->delivery latency of each message (steady_clock is system-wide on Linux, so this holds across
// processes), and acknowledge each received batch with one Queue::ack call. The run ends when every seq
// has been received and its ack has returned; a seq received again is counted as a duplicate.
// Results go to stdout, progress to stderr; every number is a median over --repeat runs.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "bench_support.h"
#include "mq/queue.h"
#include "mqd_process.h"
#include "storage/internal_access.h"  // PayloadInternal: exact stored bytes

namespace {

using Clock = std::chrono::steady_clock;
namespace stdfs = std::filesystem;
using namespace mq::bench;

constexpr std::uint32_t kPartitions = 8;
constexpr std::size_t kBatchMessages = 100;
constexpr std::size_t kPayloadBytes = 100;
constexpr std::size_t kReceiveMax = 500;
constexpr std::chrono::milliseconds kReceiveWait{100};
constexpr std::chrono::seconds kVisibilityTimeout{60};
constexpr std::size_t kMaxInflight = 1000;  // per partition and consumer: far above what a run holds
// A run in which no message is received for this long is declared stuck.
constexpr std::chrono::seconds kStallLimit{60};

constexpr std::string_view kUsage =
    "usage: queue_bench [--messages N] [--single-messages N] [--single-producers C]\n"
    "                   [--batch-producers C] [--async-producers C] [--consumers K] [--repeat R]\n"
    "                   [--backends in-process,http,redis] [--mqd PATH] [--redis-server PATH] [--dir PATH]\n"
    "  --messages N          messages per run of the batch=100 case (default 100000)\n"
    "  --single-messages N   messages per run of the single case (default 20000)\n"
    "  --single-producers C  producer threads of the single case (default 8)\n"
    "  --batch-producers C   producer threads of the batch=100 case (default 4)\n"
    "  --async-producers C   producer threads of the async case, one produce_async per message, --messages\n"
    "                        in all (default 2)\n"
    "  --max-in-flight N     ProducerOptions::max_in_flight of every backend (default: the library's)\n"
    "  --linger-us N         ProducerOptions::linger of every backend, in microseconds (default: the "
    "library's)\n"
    "  --consumers K         consumer threads, each its own mq::Consumer in one group (default 4)\n"
    "  --repeat R            runs of every backend and case, interleaved; medians reported (default 3)\n"
    "  --backends LIST       comma-separated subset of in-process,http,redis (default all three)\n"
    "  --mqd PATH            the mqd program (default: ../../mqd/mqd relative to this program)\n"
    "  --redis-server PATH   default: $REDIS_SERVER, else /usr/bin/redis-server\n"
    "  --dir PATH            where server data goes; a fresh queue_bench.XXXXXX directory is made in it\n"
    "                        and removed at the end (default: $TMPDIR or /tmp)\n"
    "Everything runs on 127.0.0.1; the client threads share the machine's cores with the servers.\n";

// ---------------------------------------------------------------------------------------------
// Command line

const std::vector<std::string> kAllBackends = {"in-process", "http", "redis"};

struct BenchOptions : CommonOptions {
  std::uint64_t messages = 100000;
  std::uint64_t single_messages = 20000;
  int single_producers = 8;
  int batch_producers = 4;
  int async_producers = 2;
  int consumers = 4;
  mq::ProducerOptions producer;  // every backend's
  int repeat = 3;
  std::vector<std::string> backends = kAllBackends;
  std::string mqd;
  std::string redis_server;
};

std::vector<std::string> parse_backends(std::string_view list) {
  std::vector<std::string> chosen;
  while (!list.empty()) {
    const std::size_t comma = list.find(',');
    const std::string name(list.substr(0, comma));
    list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
    if (std::find(kAllBackends.begin(), kAllBackends.end(), name) == kAllBackends.end()) {
      throw UsageError("--backends: unknown backend '" + name + "' (in-process, http, redis)");
    }
    if (std::find(chosen.begin(), chosen.end(), name) == chosen.end()) chosen.push_back(name);
  }
  if (chosen.empty()) throw UsageError("--backends needs at least one backend");
  // Always in the table's order, whatever order was given.
  std::vector<std::string> ordered;
  for (const auto& name : kAllBackends) {
    if (std::find(chosen.begin(), chosen.end(), name) != chosen.end()) ordered.push_back(name);
  }
  return ordered;
}

BenchOptions parse_options(int argc, char** argv) {
  BenchOptions options;
  parse_flags(
      argc, argv, options,
      {number_flag("--messages", options.messages), number_flag("--single-messages", options.single_messages),
       number_flag("--single-producers", options.single_producers),
       number_flag("--batch-producers", options.batch_producers),
       number_flag("--async-producers", options.async_producers),
       number_flag("--max-in-flight", options.producer.max_in_flight),
       Flag{"--linger-us",
            [&options](std::string_view v) {
              std::uint64_t us = 0;
              const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), us);
              if (ec != std::errc() || end != v.data() + v.size()) throw UsageError("--linger-us: a number");
              options.producer.linger = std::chrono::microseconds(us);
            }},
       number_flag("--consumers", options.consumers), number_flag("--repeat", options.repeat),
       Flag{"--backends", [&options](std::string_view v) { options.backends = parse_backends(v); }},
       Flag{"--mqd", [&options](std::string_view v) { options.mqd = std::string(v); }},
       Flag{"--redis-server", [&options](std::string_view v) { options.redis_server = std::string(v); }}});
  if (options.messages < 1 || options.single_messages < 1) throw UsageError("message counts must be >= 1");
  if (options.single_producers < 1 || options.batch_producers < 1 || options.async_producers < 1 ||
      options.consumers < 1) {
    throw UsageError("producer and consumer counts must be >= 1");
  }
  if (options.repeat < 1) throw UsageError("--repeat must be at least 1");
  return options;
}

std::string default_redis_path() {
  const char* path = std::getenv("REDIS_SERVER");
  return path != nullptr && *path != '\0' ? path : "/usr/bin/redis-server";
}

// ---------------------------------------------------------------------------------------------
// Servers: the tests' ServerProcess (tests/support/mqd_process.h) spawns them; it kills the child
// if this program dies, so a failed run leaves no server behind.

std::string file_tail(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  const std::string all = text.str();
  return all.size() > 2000 ? all.substr(all.size() - 2000) : all;
}

class SpawnedServer {
 public:
  SpawnedServer(std::string label, const std::string& program, std::vector<std::string> args,
                std::map<std::string, std::string> env, int port, std::string log_path)
      : label_(std::move(label)), port_(port), log_path_(std::move(log_path)) {
    if (!stdfs::exists(program)) throw std::runtime_error(label_ + ": no program at " + program);
    process_ = std::make_unique<mq::testing::ServerProcess>(program, std::move(args), std::move(env),
                                                            log_path_, log_path_ + ".out");
    if (!process_->wait_until_listening(port_)) {
      throw std::runtime_error(label_ + " did not start listening on 127.0.0.1:" + std::to_string(port_) +
                               "; its stderr:\n" + file_tail(log_path_));
    }
  }
  // SIGTERM and a bounded wait; a server that does not exit cleanly is reported, not fatal.
  void stop() {
    const auto status = process_->stop(SIGTERM, std::chrono::seconds(20));
    if (!status) {
      std::fprintf(stderr, "warning: %s did not exit within 20 s of SIGTERM\n", label_.c_str());
    } else if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
      std::fprintf(stderr, "warning: %s exit status %d after SIGTERM\n", label_.c_str(), *status);
    }
  }
  int port() const { return port_; }

 private:
  std::string label_;
  int port_;
  std::string log_path_;
  std::unique_ptr<mq::testing::ServerProcess> process_;
};

std::string topic_name(int index) { return "bench" + std::to_string(index); }

std::string topics_setting(int topics) {
  std::string value;
  for (int i = 0; i < topics; ++i) {
    if (i > 0) value += ',';
    value += topic_name(i);
    value += ':';
    value += std::to_string(kPartitions);
  }
  return value;
}

// One backend: its queue and what serves it.
struct Backend {
  std::string name;
  std::shared_ptr<mq::Broker> broker;     // in-process only
  std::unique_ptr<SpawnedServer> server;  // http and redis
  std::unique_ptr<mq::Queue> queue;
};

std::unique_ptr<Backend> start_backend(const std::string& name, const BenchOptions& options,
                                       ScratchDirectory& scratch, int topics) {
  auto backend = std::make_unique<Backend>();
  backend->name = name;
  if (name == "in-process") {
    mq::Config config;
    config.store.data_dir = scratch.fresh_path("in-process");
    config.store.fsync = mq::FsyncMode::kAlways;
    config.topics = check(mq::parse_topics(topics_setting(topics)), "parse_topics");
    backend->broker = check(mq::Broker::open(config), "Broker::open");
    backend->queue = mq::Queue::in_process(backend->broker, options.producer);
  } else if (name == "http") {
    const int port = mq::testing::free_port();
    const std::string dir = scratch.fresh_path("mqd");
    backend->server = std::make_unique<SpawnedServer>(
        "mqd", options.mqd.empty() ? mqd_beside_this_program() : options.mqd, std::vector<std::string>{},
        std::map<std::string, std::string>{{"PORT", std::to_string(port)},
                                           {"DATA_DIR", dir},
                                           {"TOPICS", topics_setting(topics)},
                                           {"FSYNC", "always"}},
        port, dir + ".stderr");
    mq::HttpQueueOptions http;
    http.addrs = {"http://127.0.0.1:" + std::to_string(port)};
    http.producer = options.producer;
    backend->queue = check(mq::Queue::http(http), "Queue::http");
  } else {
    const int port = mq::testing::free_port();
    const std::string dir = scratch.fresh_path("redis");
    stdfs::create_directories(dir);
    backend->server = std::make_unique<SpawnedServer>(
        "redis-server", options.redis_server.empty() ? default_redis_path() : options.redis_server,
        std::vector<std::string>{"--port", std::to_string(port), "--bind", "127.0.0.1", "--dir", dir,
                                 "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                                 "--protected-mode", "no", "--daemonize", "no", "--logfile", ""},
        std::map<std::string, std::string>{}, port, dir + "/stderr.txt");
    mq::RedisQueueOptions redis;
    redis.port = static_cast<std::uint16_t>(port);
    redis.partitions = kPartitions;
    redis.producer = options.producer;
    backend->queue = check(mq::Queue::redis(redis), "Queue::redis");
  }
  return backend;
}

void stop_backend(Backend& backend) {
  backend.queue.reset();
  if (backend.broker) backend.broker->shutdown();
  backend.broker.reset();
  if (backend.server) backend.server->stop();
}

// ---------------------------------------------------------------------------------------------
// Payloads: {"t":<steady ns>,"seq":<n>,"pad":"xxx..."}, exactly kPayloadBytes bytes.

std::int64_t now_ns() { return Clock::now().time_since_epoch().count(); }

std::string make_payload(std::int64_t send_ns, std::uint64_t seq) {
  std::string json = "{\"t\":" + std::to_string(send_ns) + ",\"seq\":" + std::to_string(seq) + ",\"pad\":\"";
  const std::size_t tail = 2;  // "}
  if (json.size() + tail < kPayloadBytes) json.append(kPayloadBytes - json.size() - tail, 'x');
  json += "\"}";
  return json;
}

// The number after `key` (such as `"t":`) in `json`.
template <typename Number>
std::optional<Number> number_field(std::string_view json, std::string_view key) {
  const std::size_t at = json.find(key);
  if (at == std::string_view::npos) return std::nullopt;
  Number value{};
  const char* begin = json.data() + at + key.size();
  const auto [end, ec] = std::from_chars(begin, json.data() + json.size(), value);
  if (ec != std::errc() || end == begin) return std::nullopt;
  return value;
}

// ---------------------------------------------------------------------------------------------
// One run

struct Case {
  std::string label;
  std::size_t batch;  // messages per produce call
  std::uint64_t messages;
  int producers;
  // Queue::produce_async, one call per message, instead of Queue::produce (batch must be 1).
  bool async = false;
};

struct RunResult {
  double produce_per_second = 0;  // N / (start -> last produce returned)
  double e2e_per_second = 0;      // N / (start -> last ack returned)
  double deliver_p50_us = 0;      // produce (payload's t) -> receive
  double deliver_p99_us = 0;
  double call_p50_us = 0;  // one produce call
  double call_p99_us = 0;
  double ack_p50_us = 0;  // one Queue::ack call (one received batch)
  double ack_p99_us = 0;
  double ack_partitions = 0;  // distinct partitions in one received batch (mean)
  double ack_share = 0;       // share of the consumer threads' time spent inside Queue::ack, in %
  double duplicates = 0;      // deliveries of a seq already received
  double receives = 0;        // receive() calls that returned messages (= ack calls)
};

// Set by the first failing thread; the others see it and stop.
class RunFailure {
 public:
  void set(const std::string& what) {
    std::lock_guard lock(mutex_);
    if (!failed_) what_ = what;
    failed_ = true;
  }
  bool failed() const { return failed_; }
  std::string what() const {
    std::lock_guard lock(mutex_);
    return what_;
  }

 private:
  mutable std::mutex mutex_;
  std::atomic<bool> failed_{false};
  std::string what_;  // GUARDED_BY(mutex_)
};

struct ConsumerTally {
  std::vector<std::int64_t> latencies_ns;
  std::vector<std::int64_t> ack_ns;                             // each Queue::ack call
  std::int64_t active_ns = 0;                                   // from the start line to leaving the loop
  std::vector<std::pair<std::uint32_t, std::uint64_t>> places;  // (partition, offset) of first deliveries
  std::uint64_t duplicates = 0;
  std::uint64_t receives = 0;
  std::uint64_t acked_reported = 0;  // what Queue::ack said was newly acknowledged
  std::uint64_t bad_size = 0;
  std::uint64_t ack_partitions = 0;  // summed over the ack calls: distinct partitions in each
};

RunResult run_once(Backend& backend, const Case& c, const BenchOptions& options, int index) {
  mq::Queue& queue = *backend.queue;
  const std::string topic = topic_name(index);
  const std::string group = "g" + std::to_string(index);
  const std::uint64_t n = c.messages;

  std::vector<std::unique_ptr<mq::Consumer>> consumers;
  for (int k = 0; k < options.consumers; ++k) {
    mq::ConsumeOptions consume;
    consume.group = group;
    consume.consumer_name = "c";
    consume.consumer_name += std::to_string(k);
    consume.visibility_timeout = kVisibilityTimeout;
    consume.max_inflight = kMaxInflight;
    consume.from = mq::StartPosition::kEarliest;
    consumers.push_back(check(queue.consume(topic, consume), "consume " + topic));
  }

  std::vector<std::atomic<std::uint8_t>> seen(n);
  std::atomic<std::uint64_t> done{0};  // distinct seqs received whose ack has returned
  std::atomic<std::int64_t> last_progress_ns{now_ns()};
  std::atomic<std::int64_t> end_ns{0};
  RunFailure failure;
  std::vector<ConsumerTally> tallies(consumers.size());
  std::vector<std::vector<std::int64_t>> call_latencies(static_cast<std::size_t>(c.producers));
  std::vector<std::int64_t> producer_end_ns(static_cast<std::size_t>(c.producers), 0);

  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  const int threads = c.producers + options.consumers;
  std::int64_t start_ns = 0;
  {
    std::vector<std::jthread> workers;
    for (std::size_t k = 0; k < consumers.size(); ++k) {
      workers.emplace_back([&, k] {
        ConsumerTally& mine = tallies[k];
        mine.latencies_ns.reserve(n / consumers.size() + 1024);
        ++ready;
        while (!go) std::this_thread::yield();  // a start line, held for microseconds
        struct Active {  // the time this thread spends in the run, however it leaves the loop
          ConsumerTally& tally;
          std::int64_t began = now_ns();
          ~Active() { tally.active_ns = now_ns() - began; }
        } active{mine};
        while (done.load() < n && !failure.failed()) {
          auto got = consumers[k]->receive(kReceiveMax, kReceiveWait);
          if (!got.ok()) return failure.set("receive: " + got.status().to_string());
          const std::int64_t at = now_ns();
          if (got->empty()) {
            if (at - last_progress_ns.load() > std::chrono::nanoseconds(kStallLimit).count()) {
              return failure.set("stalled: nothing received for " + std::to_string(kStallLimit.count()) +
                                 " s with " + std::to_string(done.load()) + " of " + std::to_string(n) +
                                 " done");
            }
            continue;
          }
          last_progress_ns = at;
          ++mine.receives;
          std::uint64_t fresh = 0;
          for (const mq::ReceivedMessage& m : *got) {
            const auto sent = number_field<std::int64_t>(m.payload, "\"t\":");
            const auto seq = number_field<std::uint64_t>(m.payload, "\"seq\":");
            if (!sent || !seq || *seq >= n)
              return failure.set("foreign payload: " + m.payload.substr(0, 120));
            if (m.payload.size() < kPayloadBytes - 5 || m.payload.size() > kPayloadBytes + 5) ++mine.bad_size;
            if (seen[*seq].exchange(1) != 0) {
              ++mine.duplicates;
              continue;
            }
            ++fresh;
            mine.latencies_ns.push_back(at - *sent);
            mine.places.emplace_back(m.partition, m.offset);
          }
          std::uint32_t partitions_in_batch = 0;  // a bit per partition
          for (const mq::ReceivedMessage& m : *got) partitions_in_batch |= 1u << (m.partition % 32);
          mine.ack_partitions += static_cast<std::uint64_t>(std::popcount(partitions_in_batch));
          const std::int64_t ack_begin = now_ns();
          auto acked = queue.ack(*got);
          mine.ack_ns.push_back(now_ns() - ack_begin);
          if (!acked.ok()) return failure.set("ack: " + acked.status().to_string());
          mine.acked_reported += *acked;
          if (done.fetch_add(fresh) + fresh == n) end_ns = now_ns();
        }
      });
    }
    for (int p = 0; p < c.producers; ++p) {
      workers.emplace_back([&, p] {
        const auto share = [&](int i) { return n * static_cast<std::uint64_t>(i) / c.producers; };
        const std::uint64_t first = share(p);
        const std::uint64_t last = share(p + 1);
        std::vector<std::int64_t>& calls = call_latencies[static_cast<std::size_t>(p)];
        calls.reserve((last - first) / c.batch + 1);
        std::vector<mq::Message> batch;
        ++ready;
        while (!go) std::this_thread::yield();
        if (c.async) {
          // One produce_async per message; a callback per message records its latency. The producer
          // is done when the last callback has run.
          std::mutex calls_mutex;
          std::atomic<std::uint64_t> unanswered{0};
          for (std::uint64_t seq = first; seq < last && !failure.failed(); ++seq) {
            const auto before = Clock::now();
            mq::Message message{mq::detail::PayloadInternal::from_minified_json(make_payload(now_ns(), seq)),
                                std::nullopt};
            ++unanswered;
            queue.produce_async(topic, std::move(message), [&, before](mq::Result<mq::ProduceResult> result) {
              const auto after = Clock::now();
              if (!result.ok()) {
                failure.set("produce_async: " + result.status().to_string());
              } else {
                std::lock_guard lock(calls_mutex);
                calls.push_back((after - before).count());
              }
              if (unanswered.fetch_sub(1) == 1) unanswered.notify_all();
            });
          }
          // The callbacks use this frame: wait for every one handed in.
          for (auto left = unanswered.load(); left != 0; left = unanswered.load()) unanswered.wait(left);
          producer_end_ns[static_cast<std::size_t>(p)] = now_ns();
          return;
        }
        for (std::uint64_t seq = first; seq < last && !failure.failed();) {
          const std::uint64_t count = std::min<std::uint64_t>(c.batch, last - seq);
          batch.clear();
          const std::int64_t sent = now_ns();
          for (std::uint64_t i = 0; i < count; ++i) {
            batch.push_back(mq::Message{
                mq::detail::PayloadInternal::from_minified_json(make_payload(sent, seq + i)), std::nullopt});
          }
          const auto before = Clock::now();
          // One message goes through the single-message produce, which batches with other threads.
          auto result = count == 1 ? queue.produce(topic, batch.front()) : queue.produce(topic, batch);
          const auto after = Clock::now();
          if (!result.ok()) return failure.set("produce: " + result.status().to_string());
          if (result->ids.size() != count) return failure.set("produce: wrong number of ids");
          calls.push_back((after - before).count());
          seq += count;
        }
        producer_end_ns[static_cast<std::size_t>(p)] = now_ns();
      });
    }
    while (ready.load() < threads) std::this_thread::yield();
    start_ns = now_ns();
    go = true;
  }
  consumers.clear();  // hands back nothing: every message was acknowledged
  if (failure.failed()) throw std::runtime_error(backend.name + " " + c.label + ": " + failure.what());

  // Sanity: every seq received (done == n implies it), first deliveries at distinct places, sizes right.
  std::vector<std::int64_t> latencies;
  std::vector<std::pair<std::uint32_t, std::uint64_t>> places;
  RunResult run;
  std::uint64_t acked_reported = 0;
  std::uint64_t bad_size = 0;
  std::vector<std::int64_t> acks;
  double ack_total_ns = 0;
  double active_total_ns = 0;
  for (ConsumerTally& t : tallies) {
    acks.insert(acks.end(), t.ack_ns.begin(), t.ack_ns.end());
    for (const std::int64_t a : t.ack_ns) ack_total_ns += static_cast<double>(a);
    active_total_ns += static_cast<double>(t.active_ns);
    run.ack_partitions += static_cast<double>(t.ack_partitions);
    latencies.insert(latencies.end(), t.latencies_ns.begin(), t.latencies_ns.end());
    places.insert(places.end(), t.places.begin(), t.places.end());
    run.duplicates += static_cast<double>(t.duplicates);
    run.receives += static_cast<double>(t.receives);
    acked_reported += t.acked_reported;
    bad_size += t.bad_size;
  }
  for (std::uint64_t seq = 0; seq < n; ++seq) {
    if (seen[seq].load() == 0)
      throw std::runtime_error(backend.name + ": seq " + std::to_string(seq) + " lost");
  }
  std::sort(places.begin(), places.end());
  if (std::adjacent_find(places.begin(), places.end()) != places.end()) {
    throw std::runtime_error(backend.name + " " + c.label +
                             ": two messages delivered at one (partition, offset)");
  }
  if (bad_size != 0) {
    throw std::runtime_error(backend.name + " " + c.label + ": " + std::to_string(bad_size) +
                             " payloads not ~" + std::to_string(kPayloadBytes) + " bytes");
  }
  if (acked_reported != n) {
    std::fprintf(stderr, "  warning: %s %s: Queue::ack reported %llu newly acknowledged, expected %llu\n",
                 backend.name.c_str(), c.label.c_str(), static_cast<unsigned long long>(acked_reported),
                 static_cast<unsigned long long>(n));
  }

  std::vector<std::int64_t> calls;
  for (auto& v : call_latencies) calls.insert(calls.end(), v.begin(), v.end());
  const std::int64_t produce_end = *std::max_element(producer_end_ns.begin(), producer_end_ns.end());
  run.produce_per_second = static_cast<double>(n) / (static_cast<double>(produce_end - start_ns) / 1e9);
  run.e2e_per_second = static_cast<double>(n) / (static_cast<double>(end_ns.load() - start_ns) / 1e9);
  run.deliver_p50_us = percentile_us(latencies, 0.50);
  run.deliver_p99_us = percentile_us(latencies, 0.99);
  run.call_p50_us = percentile_us(calls, 0.50);
  run.call_p99_us = percentile_us(calls, 0.99);
  run.ack_p50_us = percentile_us(acks, 0.50);
  run.ack_p99_us = percentile_us(acks, 0.99);
  run.ack_partitions = acks.empty() ? 0 : run.ack_partitions / static_cast<double>(acks.size());
  run.ack_share = active_total_ns > 0 ? 100 * ack_total_ns / active_total_ns : 0;
  return run;
}

// ---------------------------------------------------------------------------------------------
// main

void run_queue_benchmark(const BenchOptions& options, ScratchDirectory& scratch) {
  const std::vector<Case> cases = {
      {"single", 1, options.single_messages, options.single_producers},
      {"async", 1, options.messages, options.async_producers, /*async=*/true},
      {"batch=" + std::to_string(kBatchMessages), kBatchMessages, options.messages, options.batch_producers}};
  const int topics = options.repeat * static_cast<int>(cases.size());

  std::string backend_list;
  for (const auto& b : options.backends) backend_list += (backend_list.empty() ? "" : ",") + b;
  std::printf(
      "queue_bench: produce -> receive -> ack through mq::Queue, backends %s, every append and ack durable\n"
      "  in-process: mq::Broker FsyncMode::kAlways | http: mqd FSYNC=always | redis: redis-server "
      "--appendonly "
      "yes --appendfsync always --save \"\"\n"
      "  per run: fresh topic of %u partitions and fresh group; %zu-byte JSON payloads; producers "
      "round-robin "
      "over partitions;\n"
      "  single: %llu msgs, %d producer threads, 1 msg/produce | async: %llu msgs, %d producer threads, 1 "
      "msg/produce_async | batch=%zu: %llu msgs, %d producer threads, "
      "%zu msgs/produce;\n"
      "  %d consumer threads (one Consumer each, one group), concurrent with producers from the start, "
      "receive(max %zu, %lld ms),\n"
      "  one Queue::ack per received batch; visibility_timeout %lld s, max_inflight %zu/partition; median of "
      "%d "
      "runs, backends interleaved\n",
      backend_list.c_str(), kPartitions, kPayloadBytes,
      static_cast<unsigned long long>(options.single_messages), options.single_producers,
      static_cast<unsigned long long>(options.messages), options.async_producers, kBatchMessages,
      static_cast<unsigned long long>(options.messages), options.batch_producers, kBatchMessages,
      options.consumers, kReceiveMax, static_cast<long long>(kReceiveWait.count()),
      static_cast<long long>(kVisibilityTimeout.count()), kMaxInflight, options.repeat);
  std::fflush(stdout);

  std::vector<std::unique_ptr<Backend>> backends;
  for (const auto& name : options.backends) {
    backends.push_back(start_backend(name, options, scratch, topics));
  }

  // results[case][backend]: one RunResult per repetition.
  std::vector<std::vector<std::vector<RunResult>>> results(
      cases.size(), std::vector<std::vector<RunResult>>(backends.size()));
  for (int r = 0; r < options.repeat; ++r) {
    for (std::size_t ci = 0; ci < cases.size(); ++ci) {
      const int index = r * static_cast<int>(cases.size()) + static_cast<int>(ci);
      for (std::size_t bi = 0; bi < backends.size(); ++bi) {
        const RunResult run = run_once(*backends[bi], cases[ci], options, index);
        results[ci][bi].push_back(run);
        std::fprintf(
            stderr,
            "  run %d/%d %-10s %-11s produce %8.0f/s  e2e %8.0f/s  deliver p50 %8.0f us  p99 %8.0f us  "
            "ack p50 %6.0f us  in ack %3.0f%%  dups %.0f\n",
            r + 1, options.repeat, cases[ci].label.c_str(), backends[bi]->name.c_str(),
            run.produce_per_second, run.e2e_per_second, run.deliver_p50_us, run.deliver_p99_us,
            run.ack_p50_us, run.ack_share, run.duplicates);
      }
    }
  }
  for (auto& backend : backends) stop_backend(*backend);

  const auto redis = std::find(options.backends.begin(), options.backends.end(), "redis");
  std::printf("\n%-10s %-11s %10s %10s %11s %11s %10s %10s %9s %9s %9s %6s %5s %8s %8s\n", "case", "backend",
              "produce/s", "e2e/s", "deliv_p50us", "deliv_p99us", "call_p50us", "call_p99us", "ack_p50us",
              "ack_p99us", "parts/ack", "in_ack", "dups", "recv/run", "vs redis");
  for (std::size_t ci = 0; ci < cases.size(); ++ci) {
    std::optional<double> redis_e2e;
    if (redis != options.backends.end()) {
      redis_e2e = median_of(results[ci][static_cast<std::size_t>(redis - options.backends.begin())],
                            &RunResult::e2e_per_second);
    }
    for (std::size_t bi = 0; bi < backends.size(); ++bi) {
      const auto& runs = results[ci][bi];
      const double e2e = median_of(runs, &RunResult::e2e_per_second);
      char ratio[32] = "-";
      if (redis_e2e) std::snprintf(ratio, sizeof ratio, "%.2fx", e2e / *redis_e2e);
      double dups = 0;
      for (const auto& run : runs) dups += run.duplicates;
      std::printf(
          "%-10s %-11s %10.0f %10.0f %11.0f %11.0f %10.0f %10.0f %9.0f %9.0f %9.1f %5.0f%% %5.0f %8.0f %8s\n",
          cases[ci].label.c_str(), backends[bi]->name.c_str(),
          median_of(runs, &RunResult::produce_per_second), e2e, median_of(runs, &RunResult::deliver_p50_us),
          median_of(runs, &RunResult::deliver_p99_us), median_of(runs, &RunResult::call_p50_us),
          median_of(runs, &RunResult::call_p99_us), median_of(runs, &RunResult::ack_p50_us),
          median_of(runs, &RunResult::ack_p99_us), median_of(runs, &RunResult::ack_partitions),
          median_of(runs, &RunResult::ack_share), dups, median_of(runs, &RunResult::receives), ratio);
    }
  }
  std::printf(
      "produce/s: N / (start -> last produce call returned); e2e/s: N / (start -> last ack returned);\n"
      "deliv_p*: produce -> receive latency per message (send time in the payload); call_p*: latency of one "
      "produce call;\n"
      "ack_p*: latency of one Queue::ack call (one received batch); parts/ack: distinct partitions in one "
      "received batch (mean);\n"
      "in_ack: share of the consumer threads' "
      "time "
      "spent inside Queue::ack;\n"
      "dups: redeliveries of an already received message, summed over all runs; recv/run: non-empty "
      "receive() "
      "calls (= ack calls) per run;\n"
      "vs redis: median e2e/s over redis's median e2e/s in the same case. Checked every run: every message "
      "received, distinct\n"
      "(partition, offset) per message, payloads ~%zu bytes.\n",
      kPayloadBytes);
}

}  // namespace

int main(int argc, char** argv) {
  // A write to a connection the peer closed must be an error return, not the end of the program.
  ::signal(SIGPIPE, SIG_IGN);
  return mq::bench::run_main("queue_bench", kUsage, argc, argv, parse_options, run_queue_benchmark);
}

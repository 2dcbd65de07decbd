// mqd: environment -> configuration, open the broker, serve HTTP until SIGTERM/SIGINT, then end
// the event streams, make what is pending durable and exit 0.
#include <malloc.h>
#include <netdb.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string_view>
#include <thread>

#include "daemon_config.h"
#include "http_server.h"
#include "mq/mq.h"
#include "open_file_limit.h"
#include "replication_setup.h"

namespace {

int fail(const std::string& line) {
  std::fprintf(stderr, "mqd: %s\n", line.c_str());
  return 1;
}

const char* fsync_name(mq::FsyncMode mode) {
  switch (mode) {
    case mq::FsyncMode::kAlways:
      return "always";
    case mq::FsyncMode::kInterval:
      return "interval";
    case mq::FsyncMode::kNever:
      return "never";
  }
  return "?";
}

constexpr const char* kUsage = R"(usage: mqd [--help | --version]

mqd serves libmq's durable topics, partitions and consumer groups over HTTP. It is configured by
the environment only:
  PORT                   listen port (8080)
  HOST                   listen address (0.0.0.0: all interfaces; 127.0.0.1: this machine only)
  DATA_DIR               where the logs live (./data); one mqd owns a directory at a time
  TOPICS                 topics and partition counts (events:8,orders:4,default:8)
  BROKER_INDEX, BROKER_COUNT, BROKER_ADDRS   split partitions across brokers (0, 1, unset)
  FSYNC, FSYNC_INTERVAL_MS                   always | interval | never (always), 100
  VISIBILITY_TIMEOUT_MS  redelivery after this long without an ack (30000)
  MAX_DELIVERIES         dead-letter to <topic>-dlq after this many deliveries (0: never)
  MAX_PAYLOAD_BYTES, MAX_BODY_BYTES          413 above these (1048576, 16777216)
  MAX_CONNECTIONS        open connections before 503 (1024)
  REQUEST_TIMEOUT_MS     a request's headers and body must arrive within this (10000)
  HEARTBEAT_MS           SSE keepalive interval (15000)
  AUTH_TOKEN             require "Authorization: Bearer <token>" (unset: no auth)
  TLS_CERT_FILE, TLS_KEY_FILE                PEM files: serve HTTPS only
  ETCD_ENDPOINTS         etcd URLs: replicated partitions (needs BROKER_ADDRS; unset: one copy)
  REPLICATION_FACTOR, MIN_INSYNC_REPLICAS    copies of a partition, copies before a 200 (1, min(2, R))
  LEASE_TTL_S, ETCD_PREFIX                   a broker's etcd lease (5), its keys' prefix (/mq)
The HTTP API, every route and variable: docs/http-api.md in the source tree.
)";

// Why binding host:port fails (cpp-httplib only says that it did): tried again to read errno.
std::string bind_failure_reason(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  if (const int e = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found); e != 0) {
    return gai_strerror(e);
  }
  std::string reason = "unknown reason";
  const int fd = ::socket(found->ai_family, found->ai_socktype, found->ai_protocol);
  if (fd < 0) {
    reason = std::strerror(errno);
  } else {
    int yes = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    if (::bind(fd, found->ai_addr, found->ai_addrlen) != 0) reason = std::strerror(errno);
    ::close(fd);
  }
  ::freeaddrinfo(found);
  return reason;
}

// The line that says mqd is up, printed once the address is bound, with the settings that matter
// most; and a warning when anyone who can reach the port may use the queue.
void print_listening(const mqd::DaemonConfig& config) {
  const mq::Config& library = config.library;
  std::string topics;
  for (const auto& t : library.topics)
    topics += (topics.empty() ? "" : ",") + t.name + ":" + std::to_string(t.partitions);
  std::fprintf(stderr,
               "mqd: listening on %s://%s:%d, broker %u of %u, DATA_DIR=%s, TOPICS=%s, FSYNC=%s, "
               "VISIBILITY_TIMEOUT_MS=%lld, MAX_DELIVERIES=%u, MAX_CONNECTIONS=%zu, auth %s\n",
               config.tls ? "https" : "http", config.host.c_str(), config.port, library.broker.index,
               library.broker.count, library.store.data_dir.c_str(), topics.c_str(),
               fsync_name(library.store.fsync),
               static_cast<long long>(library.groups.visibility_timeout.count()),
               library.groups.max_deliveries, config.max_connections, config.auth_token ? "on" : "off");
  if (!config.auth_token && (config.host == "0.0.0.0" || config.host == "::")) {
    std::fprintf(stderr,
                 "mqd: warning: listening on all interfaces with auth off: anyone who can reach port %d can "
                 "produce, consume and acknowledge (set AUTH_TOKEN to require a token, or HOST=127.0.0.1)\n",
                 config.port);
  }
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (arg == "--version") {
      std::printf("mqd %s\n", MQD_VERSION);
      return 0;
    }
    std::fprintf(stderr, "mqd: unknown argument '%s'\n%s", argv[i], kUsage);
    return 2;
  }
  // Block the stop signals in every thread; one thread waits for them with sigwait. This also holds
  // as PID 1 of a container: the kernel drops signals with the default action sent to a namespace's
  // init, but never a blocked one, so docker stop's SIGTERM reaches the sigwait.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  mqd::raise_open_file_limit();  // a descriptor per connection, log and journal
  // Many request threads each free their buffers: without a fixed trim threshold glibc hands memory
  // back to the kernel (madvise) over and over, measured at ~15% of mqd's CPU on small produces.
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  mallopt(M_MMAP_THRESHOLD, 4 << 20);

  auto config = mqd::daemon_config_from_env(mq::process_environment);
  if (!config.ok()) return fail("invalid configuration: " + config.status().message());
  std::shared_ptr<mq::replication::ReplicatedLeadership> leadership;
  std::string replica_secret;
  if (config->replication) {
    auto made = mqd::make_replication(*config);
    if (!made.ok()) return fail("cannot start replication: " + made.status().message());
    leadership = std::move(made->leadership);
    replica_secret = std::move(made->secret);
  }
  auto broker = mq::Broker::open(config->library, nullptr, leadership);
  if (!broker.ok()) {
    // A TOPICS entry that would orphan data is a configuration error; so is an unusable DATA_DIR,
    // whose message names it.
    const bool config_error = broker.status().code() == mq::ErrorCode::kInvalidArgument;
    return fail((config_error ? "invalid configuration: TOPICS: " : "cannot start: ") +
                broker.status().message());
  }

  mqd::HttpServer server(*config, **broker, leadership.get(), replica_secret);
  // The signal thread keeps asking the server to stop until serve() has returned: a signal that
  // arrives before the server has started listening must not be lost.
  std::mutex run_mutex;
  std::condition_variable run_cv;
  bool run_returned = false;    // GUARDED_BY(run_mutex)
  bool stop_requested = false;  // GUARDED_BY(run_mutex)
  std::thread signal_waiter([&] {
    int signal = 0;
    sigwait(&stop_signals, &signal);
    std::unique_lock lock(run_mutex);
    stop_requested = true;  // with "stopping" said under the same lock: main's check sees both or neither
    if (!run_returned) std::fprintf(stderr, "mqd: signal %d, stopping\n", signal);
    // Replicated: its leaderships go to other replicas at once rather than when its lease lapses.
    if (leadership) leadership->stop(/*hand_over=*/true);
    (*broker)->shutdown();  // open event streams end now
    while (!run_returned) {
      server.stop();
      run_cv.wait_for(lock, std::chrono::milliseconds(50), [&] { return run_returned; });
    }
  });
  // "listening" only once it is: tests and scripts take that line as the sign to connect. A stop
  // signal during the start (recovery can take a while; it is not cut short) stops mqd once the
  // broker is open, before it binds, a clean stop. The waiter may have taken it already; if it is
  // still pending, this thread takes it (one sent to this thread alone, by tgkill, only it can).
  // Under run_mutex, under which the waiter says "stopping": a signal the waiter takes meanwhile is
  // reported after "listening", never before.
  bool stopped_before_bind = false;
  bool bound = false;
  {
    std::lock_guard lock(run_mutex);
    stopped_before_bind = stop_requested;
    if (!stopped_before_bind) {
      const timespec now{};
      if (const int signal = sigtimedwait(&stop_signals, nullptr, &now); signal > 0) {
        std::fprintf(stderr, "mqd: signal %d, stopping\n", signal);
        stopped_before_bind = true;
      }
    }
    bound = !stopped_before_bind && server.bind();
    if (bound) print_listening(*config);
  }
  if (!bound && !stopped_before_bind) {
    std::fprintf(stderr, "mqd: cannot listen on %s:%d: %s\n", config->host.c_str(), config->port,
                 bind_failure_reason(config->host, config->port).c_str());
  }
  const bool served = bound && server.serve();
  {
    std::lock_guard lock(run_mutex);
    run_returned = true;
  }
  run_cv.notify_all();
  if (!served) pthread_kill(signal_waiter.native_handle(), SIGTERM);  // end its sigwait, if it still waits
  signal_waiter.join();
  broker->reset();  // syncs every partition and acknowledgement log
  std::fprintf(stderr, "mqd: stopped\n");
  return served || stopped_before_bind ? 0 : 1;
}

// mqd: environment -> configuration, open the store and the topics, serve HTTP until SIGTERM/SIGINT.
#include <pthread.h>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "http_server.h"
#include "mq/mq.h"

namespace {

std::optional<std::string> getenv_lookup(std::string_view name) {
  const char* value = std::getenv(std::string(name).c_str());
  return value ? std::optional<std::string>(value) : std::nullopt;
}

int fail(const std::string& line) {
  std::fprintf(stderr, "mqd: %s\n", line.c_str());
  return 1;
}

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (true) {
    const auto comma = text.find(',', start);
    parts.push_back(text.substr(start, comma - start));
    if (comma == std::string::npos) return parts;
    start = comma + 1;
  }
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

}  // namespace

int main() {
  // Block the stop signals in every thread; one thread waits for them with sigwait.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  auto config = mq::config_from_env(getenv_lookup);
  if (!config.ok()) return fail("invalid configuration: " + config.status().message());
  mqd::ServerOptions server_options;
  if (auto port = getenv_lookup("PORT")) {
    char* end = nullptr;
    const long value = std::strtol(port->c_str(), &end, 10);
    if (port->empty() || *end != '\0' || value < 1 || value > 65535) {
      return fail("invalid configuration: PORT='" + *port + "': expected a port number from 1 to 65535");
    }
    server_options.port = static_cast<int>(value);
  }
  if (auto addrs = getenv_lookup("BROKER_ADDRS"); addrs && !addrs->empty()) {
    server_options.broker_addrs = split_commas(*addrs);
    if (server_options.broker_addrs.size() != config->broker.count) {
      return fail("invalid configuration: BROKER_ADDRS='" + *addrs + "': expected " +
                  std::to_string(config->broker.count) + " addresses (BROKER_COUNT)");
    }
  }

  const std::string data_dir = config->store.data_dir;
  const mq::FsyncMode fsync = config->store.fsync;
  const mq::BrokerIdentity identity = config->broker;
  const std::size_t topic_count = config->topics.size();
  auto broker = mq::Broker::open(std::move(config.value()));
  if (!broker.ok()) {
    // Every configuration-shaped refusal (a TOPICS entry that would orphan data, an unusable
    // DATA_DIR) names its variable in the message.
    const bool config_error = broker.status().code() == mq::ErrorCode::kInvalidArgument;
    return fail((config_error ? "invalid configuration: TOPICS: " : "cannot start: ") +
                broker.status().message());
  }

  mqd::HttpServer server(server_options, **broker);
  // The signal thread keeps asking the server to stop until run() has returned: a signal that
  // arrives before the server has started listening must not be lost.
  std::mutex run_mutex;
  std::condition_variable run_cv;
  bool run_returned = false;  // GUARDED_BY(run_mutex)
  std::thread signal_waiter([&] {
    int signal = 0;
    sigwait(&stop_signals, &signal);
    std::unique_lock lock(run_mutex);
    if (!run_returned) std::fprintf(stderr, "mqd: signal %d, stopping\n", signal);
    while (!run_returned) {
      server.stop();
      run_cv.wait_for(lock, std::chrono::milliseconds(50), [&] { return run_returned; });
    }
  });
  std::fprintf(stderr, "mqd: listening on %s:%d, broker %u of %u, DATA_DIR=%s, FSYNC=%s, %zu topics\n",
               server_options.host.c_str(), server_options.port, identity.index, identity.count,
               data_dir.c_str(), fsync_name(fsync), topic_count);
  const bool served = server.run();
  if (!served) std::fprintf(stderr, "mqd: cannot listen on port %d\n", server_options.port);
  {
    std::lock_guard lock(run_mutex);
    run_returned = true;
  }
  run_cv.notify_all();
  if (!served) pthread_kill(signal_waiter.native_handle(), SIGTERM);  // end the waiter's sigwait
  signal_waiter.join();
  (*broker)->shutdown();
  broker->reset();  // syncs every partition
  std::fprintf(stderr, "mqd: stopped\n");
  return served ? 0 : 1;
}

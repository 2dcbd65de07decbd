// mqd: environment -> configuration, open the broker, serve HTTP until SIGTERM/SIGINT, then end
// the event streams, make what is pending durable and exit 0.
#include <malloc.h>
#include <pthread.h>

#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "daemon_config.h"
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
  // Block the stop signals in every thread; one thread waits for them with sigwait. This also holds
  // as PID 1 of a container: the kernel drops signals with the default action sent to a namespace's
  // init, but never a blocked one, so docker stop's SIGTERM reaches the sigwait.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  // Many request threads each free their buffers: without a fixed trim threshold glibc hands memory
  // back to the kernel (madvise) over and over, measured at ~15% of mqd's CPU on small produces.
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  mallopt(M_MMAP_THRESHOLD, 4 << 20);

  auto config = mqd::daemon_config_from_env(getenv_lookup);
  if (!config.ok()) return fail("invalid configuration: " + config.status().message());
  auto broker = mq::Broker::open(config->library);
  if (!broker.ok()) {
    // A TOPICS entry that would orphan data is a configuration error; so is an unusable DATA_DIR,
    // whose message names it.
    const bool config_error = broker.status().code() == mq::ErrorCode::kInvalidArgument;
    return fail((config_error ? "invalid configuration: TOPICS: " : "cannot start: ") +
                broker.status().message());
  }

  mqd::HttpServer server(*config, **broker);
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
    (*broker)->shutdown();  // open event streams end now
    while (!run_returned) {
      server.stop();
      run_cv.wait_for(lock, std::chrono::milliseconds(50), [&] { return run_returned; });
    }
  });
  const mq::Config& library = config->library;
  std::string topics;
  for (const auto& t : library.topics)
    topics += (topics.empty() ? "" : ",") + t.name + ":" + std::to_string(t.partitions);
  std::fprintf(stderr,
               "mqd: listening on %s:%d, broker %u of %u, DATA_DIR=%s, TOPICS=%s, FSYNC=%s, "
               "VISIBILITY_TIMEOUT_MS=%lld, MAX_DELIVERIES=%u, MAX_CONNECTIONS=%zu, auth %s\n",
               config->host.c_str(), config->port, library.broker.index, library.broker.count,
               library.store.data_dir.c_str(), topics.c_str(), fsync_name(library.store.fsync),
               static_cast<long long>(library.groups.visibility_timeout.count()),
               library.groups.max_deliveries, config->max_connections, config->auth_token ? "on" : "off");
  const bool served = server.run();
  if (!served) std::fprintf(stderr, "mqd: cannot listen on %s:%d\n", config->host.c_str(), config->port);
  {
    std::lock_guard lock(run_mutex);
    run_returned = true;
  }
  run_cv.notify_all();
  if (!served) pthread_kill(signal_waiter.native_handle(), SIGTERM);  // end the waiter's sigwait
  signal_waiter.join();
  broker->reset();  // syncs every partition and acknowledgement log
  std::fprintf(stderr, "mqd: stopped\n");
  return served ? 0 : 1;
}

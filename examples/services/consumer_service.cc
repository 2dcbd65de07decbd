// A consumer service: handles the events of MSG_QUEUE_TOPIC as one consumer (named
// MSG_QUEUE_PRODUCER_NAME) of group MSG_QUEUE_GROUP, through mqd (USE_HTTP_QUEUE=true) or Redis
// Streams. Run several copies with the same group to share the work; give another group to get
// every event again. An event is acknowledged after it is handled, so a crash means redelivery,
// never loss (at-least-once: make handling idempotent). A server that cannot be reached at start
// is waited for (retried with backoff, each failure on stderr); later outages are retried inside
// receive().
//
//   consumer_service [count]      stops after `count` events; without it, on SIGTERM or SIGINT
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

#include <mq/queue.h>

int main(int argc, char** argv) {
  const long count = argc > 1 ? std::atol(argv[1]) : 0;

  // SIGTERM/SIGINT end the loop between two batches, so that nothing handled goes unacknowledged.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::atomic<bool> stop{false};
  std::mutex stop_mutex;
  std::condition_variable stopped;  // wakes a wait for the server
  std::thread signal_waiter([&] {
    int signal = 0;
    sigwait(&stop_signals, &signal);
    std::lock_guard lock(stop_mutex);
    stop = true;
    stopped.notify_all();
  });

  int exit_code = 0;
  {
    auto opened = mq::Queue::from_env();
    if (!opened.ok()) {
      std::fprintf(stderr, "consumer_service: %s\n", opened.status().message().c_str());
      exit_code = 2;
    } else {
      const mq::QueueSettings& settings = opened->settings;
      mq::Queue& queue = *opened->queue;
      mq::ConsumeOptions options;
      options.group = settings.group;
      options.consumer_name = settings.producer_name;
      auto consumer = queue.consume(settings.topic, options);
      // Services often start before their server is up (compose, Kubernetes): wait for it, saying
      // why, until it answers or the service is told to stop.
      for (auto backoff = std::chrono::milliseconds(100);
           !consumer.ok() && consumer.status().code() == mq::ErrorCode::kUnavailable;
           backoff = std::min(backoff * 2, std::chrono::milliseconds(5000))) {
        std::fprintf(stderr, "consumer_service: %s; retrying in %lld ms\n",
                     consumer.status().to_string().c_str(), static_cast<long long>(backoff.count()));
        std::unique_lock lock(stop_mutex);
        if (stopped.wait_for(lock, backoff, [&] { return stop.load(); })) break;
        lock.unlock();
        consumer = queue.consume(settings.topic, options);
      }
      if (!consumer.ok() && stop) {
        // Stopped while waiting for the server: a normal end.
      } else if (!consumer.ok()) {
        std::fprintf(stderr, "consumer_service: %s\n", consumer.status().to_string().c_str());
        exit_code = 1;
      }
      long handled = 0;
      while (consumer.ok() && !stop && (count == 0 || handled < count)) {
        auto events = (*consumer)->receive(100, std::chrono::seconds(1));
        if (!events.ok()) {  // what retrying cannot fix: unknown topic, refused credentials
          std::fprintf(stderr, "consumer_service: %s\n", events.status().to_string().c_str());
          exit_code = 1;
          break;
        }
        for (const auto& e : *events) {  // handle each event; here: print it
          std::printf("%s partition %u offset %llu delivery %u %s\n", e.id.c_str(), e.partition,
                      static_cast<unsigned long long>(e.offset), e.delivery, e.payload.c_str());
        }
        std::fflush(stdout);
        if (auto acked = queue.ack(*events); !acked.ok()) {  // they will come again
          std::fprintf(stderr, "consumer_service: ack failed: %s\n", acked.status().to_string().c_str());
        }
        handled += static_cast<long>(events->size());
      }
    }  // the consumer closes here: what it still held goes back to the group
  }
  pthread_kill(signal_waiter.native_handle(), SIGTERM);  // ends the sigwait if no signal came
  signal_waiter.join();
  return exit_code;
}

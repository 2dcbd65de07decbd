// cpp-httplib's task queue for mqd: every connection (keep-alive or SSE) holds a worker thread for
// its whole life, so the pool grows with open connections instead of staying at a fixed 8 (where
// the 9th open stream would starve every other request). It counts open connections, which the
// server reads to answer 503 beyond MAX_CONNECTIONS.
#pragma once

#include <httplib.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace mqd {

class ConnectionPool : public httplib::TaskQueue {
 public:
  // At most `max_threads` workers; `open_connections` counts tasks queued or running.
  ConnectionPool(std::size_t max_threads, std::shared_ptr<std::atomic<std::size_t>> open_connections);
  ~ConnectionPool() override;

  void enqueue(std::function<void()> task) override;
  void shutdown() override;

 private:
  void work();

  const std::size_t max_threads_;
  const std::shared_ptr<std::atomic<std::size_t>> open_connections_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> tasks_;  // GUARDED_BY(mutex_)
  std::vector<std::thread> threads_;         // GUARDED_BY(mutex_)
  std::size_t idle_ = 0;                     // GUARDED_BY(mutex_)
  bool stopping_ = false;                    // GUARDED_BY(mutex_)
};

}  // namespace mqd

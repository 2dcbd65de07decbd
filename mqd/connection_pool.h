// The workers that serve mqd's requests: a pool that grows with the connections being served at
// once (an event stream holds its worker while it lasts; a connection waiting for a request holds
// none), up to a cap, instead of cpp-httplib's fixed 8 threads.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace mqd {

class ConnectionPool {
 public:
  // At most `max_threads` workers.
  explicit ConnectionPool(std::size_t max_threads);
  ~ConnectionPool();  // shutdown()
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  // Runs `task` on a worker; a new worker starts when none is idle and the cap allows.
  void enqueue(std::function<void()> task);
  // Runs what is queued, then ends and joins every worker.
  void shutdown();

 private:
  void work();

  const std::size_t max_threads_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> tasks_;  // GUARDED_BY(mutex_)
  std::vector<std::thread> threads_;         // GUARDED_BY(mutex_)
  std::size_t idle_ = 0;                     // GUARDED_BY(mutex_)
  bool stopping_ = false;                    // GUARDED_BY(mutex_)
};

}  // namespace mqd

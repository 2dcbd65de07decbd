#include "connection_pool.h"

namespace mqd {

ConnectionPool::ConnectionPool(std::size_t max_threads,
                               std::shared_ptr<std::atomic<std::size_t>> open_connections)
    : max_threads_(max_threads), open_connections_(std::move(open_connections)) {}

ConnectionPool::~ConnectionPool() { shutdown(); }

void ConnectionPool::enqueue(std::function<void()> task) {
  ++*open_connections_;
  std::lock_guard lock(mutex_);
  tasks_.push_back(std::move(task));
  if (idle_ < tasks_.size() && threads_.size() < max_threads_) {
    threads_.emplace_back([this] { work(); });  // a new connection gets a thread of its own now
  }
  ready_.notify_one();
}

void ConnectionPool::shutdown() {
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    threads.swap(threads_);
  }
  ready_.notify_all();
  for (auto& t : threads) t.join();
}

void ConnectionPool::work() {
  std::unique_lock lock(mutex_);
  while (true) {
    ++idle_;
    ready_.wait(lock, [&] { return stopping_ || !tasks_.empty(); });
    --idle_;
    if (tasks_.empty()) return;  // stopping, and nothing left to serve
    auto task = std::move(tasks_.front());
    tasks_.pop_front();
    lock.unlock();
    task();  // serves one connection until it closes
    --*open_connections_;
    lock.lock();
  }
}

}  // namespace mqd

// Where a consumer's background readers (one per partition) leave messages for receive().
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <vector>

#include "mq/queue.h"

namespace mq::detail {

// Thread-safe. Unbounded: what it holds is bounded by the readers, which take at most
// max_inflight unacknowledged messages per partition.
class DeliveryBuffer {
 public:
  void push(std::vector<ReceivedMessage> messages) {
    if (messages.empty()) return;
    {
      std::lock_guard lock(mutex_);
      for (auto& m : messages) messages_.push_back(std::move(m));
    }
    ready_.notify_one();
  }

  // A reader met an error retrying cannot fix: receive() reports it once the buffer is empty.
  void fail(Status status) {
    {
      std::lock_guard lock(mutex_);
      if (error_.ok()) error_ = std::move(status);
    }
    ready_.notify_all();
  }

  // Up to `max_messages`, waiting up to `timeout` for the first.
  Result<std::vector<ReceivedMessage>> pop(std::size_t max_messages, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    ready_.wait_for(lock, timeout, [&] { return !messages_.empty() || !error_.ok(); });
    if (messages_.empty() && !error_.ok()) return error_;
    std::vector<ReceivedMessage> out;
    while (!messages_.empty() && out.size() < max_messages) {
      out.push_back(std::move(messages_.front()));
      messages_.pop_front();
    }
    return out;
  }

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<ReceivedMessage> messages_;  // GUARDED_BY(mutex_)
  Status error_;                          // GUARDED_BY(mutex_)
};

}  // namespace mq::detail

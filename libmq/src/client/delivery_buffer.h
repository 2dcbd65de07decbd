// Where a consumer's background readers (one per partition) leave messages for receive().
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <vector>

#include "mq/queue.h"

namespace mq::detail {

// Thread-safe. A message waiting here is still in flight on the server, and its visibility timeout
// runs: so readers wait for room (at most `max_per_partition` unread messages of a partition) before
// taking more, and pop() drops messages older than the visibility timeout, which the server has
// given to the group again by then (they come back as redeliveries).
class DeliveryBuffer {
 public:
  DeliveryBuffer(std::size_t max_per_partition, std::chrono::milliseconds visibility_timeout)
      : max_per_partition_(max_per_partition), visibility_timeout_(visibility_timeout) {}

  void push(std::vector<ReceivedMessage> messages) {
    if (messages.empty()) return;
    const auto now = std::chrono::steady_clock::now();
    {
      std::lock_guard lock(mutex_);
      for (auto& m : messages) {
        ++unread_[m.partition];
        messages_.push_back({std::move(m), now});
      }
    }
    ready_.notify_one();
  }

  // Waits until `partition` has room for more, or close(); false after close().
  bool wait_for_room(std::uint32_t partition) {
    std::unique_lock lock(mutex_);
    room_.wait(lock, [&] { return closed_ || unread_[partition] < max_per_partition_; });
    return !closed_;
  }

  // Ends every wait_for_room (the readers are stopping).
  void close() {
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
    }
    room_.notify_all();
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
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::vector<ReceivedMessage> out;
    while (out.empty()) {
      if (!ready_.wait_until(lock, deadline, [&] { return !messages_.empty() || !error_.ok(); })) break;
      if (messages_.empty()) return error_;
      const auto stale_before = std::chrono::steady_clock::now() - visibility_timeout_;
      while (!messages_.empty() && out.size() < max_messages) {
        Entry entry = std::move(messages_.front());
        messages_.pop_front();
        --unread_[entry.message.partition];
        if (entry.arrived >= stale_before) out.push_back(std::move(entry.message));
      }
      // All stale: the readers of their partitions have room again now, not only when this
      // pop returns, so the redeliveries they fetch can still reach this pop.
      if (out.empty()) room_.notify_all();
    }
    lock.unlock();
    room_.notify_all();
    return out;
  }

 private:
  struct Entry {
    ReceivedMessage message;
    std::chrono::steady_clock::time_point arrived;
  };

  const std::size_t max_per_partition_;
  const std::chrono::milliseconds visibility_timeout_;
  std::mutex mutex_;
  std::condition_variable ready_;                // messages or an error arrived
  std::condition_variable room_;                 // a partition's unread count fell, or close()
  std::deque<Entry> messages_;                   // GUARDED_BY(mutex_)
  std::map<std::uint32_t, std::size_t> unread_;  // GUARDED_BY(mutex_)
  Status error_;                                 // GUARDED_BY(mutex_)
  bool closed_ = false;                          // GUARDED_BY(mutex_)
};

}  // namespace mq::detail

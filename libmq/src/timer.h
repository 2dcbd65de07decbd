// The broker's one timer: a min-heap of deadlines for every visibility timeout and nack delay.
// Entries are never cancelled: a callback checks whether it still applies (lazy deletion), which
// keeps schedule() O(log n) and the heap free of back-pointers.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <queue>
#include <thread>
#include <vector>

#include "mq/clock.h"

namespace mq {

// Thread-safe.
class Timer {
 public:
  using Callback = std::function<void()>;

  // With `run_thread`, a thread runs callbacks as they fall due (the clock must then be the steady
  // clock); otherwise only fire_due() runs them.
  Timer(std::shared_ptr<Clock> clock, bool run_thread);
  // Stops the thread; callbacks not yet due never run.
  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  // Runs `callback` once the clock reaches `when`, on the timer thread or in fire_due(), without
  // the timer's lock held.
  void schedule(Clock::TimePoint when, Callback callback);
  // Runs every callback that is due now, in deadline order.
  void fire_due();
  const Clock& clock() const { return *clock_; }

 private:
  struct Entry {
    Clock::TimePoint when;
    std::uint64_t sequence;  // keeps equal deadlines in scheduling order
    Callback callback;
    bool operator>(const Entry& other) const {
      return when != other.when ? when > other.when : sequence > other.sequence;
    }
  };
  void run();
  // Pops the due entries; the caller holds mutex_.
  std::vector<Callback> take_due_locked(Clock::TimePoint now);

  const std::shared_ptr<Clock> clock_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> heap_;  // GUARDED_BY(mutex_)
  std::uint64_t next_sequence_ = 0;                                      // GUARDED_BY(mutex_)
  bool stopping_ = false;                                                // GUARDED_BY(mutex_)
  std::thread thread_;
};

}  // namespace mq

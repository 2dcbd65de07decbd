// The broker's one timer: every visibility timeout and nack delay of every group, ordered by
// deadline. Entries can be cancelled, so the timer holds only what can still fire (an acknowledged
// message leaves at once, rather than sitting in a heap for the rest of its 30 s timeout), and an
// entry is a plain struct: no allocation per delivery beyond its tree node.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "mq/clock.h"

namespace mq {

// Thread-safe.
class Timer {
 public:
  // Receives the timer's calls. A call that was already taken off the timer when cancel() ran
  // still happens, so a target checks that `token` still applies.
  class Target {
   public:
    virtual ~Target() = default;
    virtual void on_timer(std::uint64_t key, std::uint64_t token) = 0;
  };
  // Names a scheduled entry for cancel(); a default Handle names none.
  struct Handle {
    Clock::TimePoint when{};
    std::uint64_t sequence = 0;
    bool scheduled() const { return sequence != 0; }
  };

  // With `run_thread`, a thread runs callbacks as they fall due (the clock must then be the steady
  // clock); otherwise only fire_due() runs them.
  Timer(std::shared_ptr<Clock> clock, bool run_thread);
  // Stops the thread; entries not yet due never fire.
  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  // Calls target->on_timer(key, token) once the clock reaches `when`, on the timer thread or in
  // fire_due(), without the timer's lock held.
  Handle schedule(Clock::TimePoint when, Target* target, std::uint64_t key, std::uint64_t token);
  // Removes the entry if it has not fired yet; harmless for a default or already-fired handle.
  void cancel(Handle handle);
  // Runs every entry that is due now, in deadline order.
  void fire_due();
  // Entries waiting to fire.
  std::size_t pending() const;
  const Clock& clock() const { return *clock_; }

 private:
  struct Call {
    Target* target;
    std::uint64_t key;
    std::uint64_t token;
  };
  using Key = std::pair<Clock::TimePoint, std::uint64_t>;  // deadline, then scheduling order
  void run();
  std::vector<Call> take_due_locked(Clock::TimePoint now);

  const std::shared_ptr<Clock> clock_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::map<Key, Call> entries_;      // GUARDED_BY(mutex_)
  std::uint64_t next_sequence_ = 1;  // GUARDED_BY(mutex_)
  bool stopping_ = false;            // GUARDED_BY(mutex_)
  std::thread thread_;
};

}  // namespace mq

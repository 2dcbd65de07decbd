// Ctrl-C (SIGINT) and SIGTERM as a request to stop, for the commands that run until interrupted
// (consume --follow, tail): they finish the batch at hand — printed messages are acknowledged —
// instead of dying between printing and acknowledging. A second signal ends the process at once.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace mqctl {

// Blocks SIGINT and SIGTERM in the calling thread and those it starts afterwards, and takes them on
// a thread of its own with sigwait(): no signal handler, no global flag. Construct it before any
// other thread (the Queue's) starts, so that none of them inherits an unblocked mask. Thread-safe.
class StopSignal {
 public:
  StopSignal();
  // Ends the waiting thread; the signals stay blocked (the process is about to exit).
  ~StopSignal();
  StopSignal(const StopSignal&) = delete;
  StopSignal& operator=(const StopSignal&) = delete;

  bool requested() const;
  // Waits up to `timeout`; true when a stop was requested (at once when one was before).
  bool wait_for(std::chrono::milliseconds timeout) const;

 private:
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  bool requested_ = false;  // GUARDED_BY(mutex_)
  bool closing_ = false;    // GUARDED_BY(mutex_): the destructor woke the thread, not a user
  std::thread waiter_;
};

}  // namespace mqctl

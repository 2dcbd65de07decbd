#include "stop_signal.h"

#include <pthread.h>
#include <signal.h>

#include <cstdlib>

namespace mqctl {
namespace {

sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

}  // namespace

StopSignal::StopSignal() {
  const sigset_t set = stop_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  waiter_ = std::thread([this, set] {
    while (true) {
      int signal = 0;
      sigwait(&set, &signal);
      std::lock_guard lock(mutex_);
      if (closing_) return;
      // A second Ctrl-C means "now": the user would rather lose the batch at hand than wait.
      if (requested_) std::_Exit(128 + signal);
      requested_ = true;
      changed_.notify_all();
    }
  });
}

StopSignal::~StopSignal() {
  {
    std::lock_guard lock(mutex_);
    closing_ = true;
  }
  // Wakes the sigwait, which sees closing_ and ends the thread.
  pthread_kill(waiter_.native_handle(), SIGTERM);
  waiter_.join();
}

bool StopSignal::requested() const {
  std::lock_guard lock(mutex_);
  return requested_;
}

bool StopSignal::wait_for(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [this] { return requested_; });
}

}  // namespace mqctl

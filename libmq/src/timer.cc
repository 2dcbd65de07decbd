#include "timer.h"

namespace mq {
namespace {
class SteadyClock final : public Clock {
 public:
  TimePoint now() const override { return std::chrono::steady_clock::now(); }
};
}  // namespace

std::shared_ptr<Clock> make_steady_clock() { return std::make_shared<SteadyClock>(); }

Timer::Timer(std::shared_ptr<Clock> clock, bool run_thread) : clock_(std::move(clock)) {
  if (run_thread) thread_ = std::thread([this] { run(); });
}

Timer::~Timer() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Timer::schedule(Clock::TimePoint when, Callback callback) {
  bool earliest = false;
  {
    std::lock_guard lock(mutex_);
    earliest = heap_.empty() || when < heap_.top().when;
    heap_.push({when, next_sequence_++, std::move(callback)});
  }
  if (earliest) changed_.notify_all();  // the thread sleeps until the old earliest deadline
}

std::vector<Timer::Callback> Timer::take_due_locked(Clock::TimePoint now) {
  std::vector<Callback> due;
  while (!heap_.empty() && heap_.top().when <= now) {
    // priority_queue::top() is const; the entry is popped right after, so moving from it is safe.
    due.push_back(std::move(const_cast<Entry&>(heap_.top()).callback));
    heap_.pop();
  }
  return due;
}

void Timer::fire_due() {
  std::vector<Callback> due;
  {
    std::lock_guard lock(mutex_);
    due = take_due_locked(clock_->now());
  }
  for (auto& callback : due) callback();
}

void Timer::run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    if (heap_.empty()) {
      changed_.wait(lock);
      continue;
    }
    const auto next = heap_.top().when;
    if (clock_->now() < next) {
      changed_.wait_until(lock, next);
      continue;
    }
    auto due = take_due_locked(clock_->now());
    lock.unlock();
    for (auto& callback : due) callback();
    lock.lock();
  }
}

}  // namespace mq

#include "groups/timer.h"

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

Timer::Handle Timer::schedule(Clock::TimePoint when, Target* target, std::uint64_t key, std::uint64_t token) {
  Handle handle{when, 0};
  bool earliest = false;
  {
    std::lock_guard lock(mutex_);
    handle.sequence = next_sequence_++;
    earliest = entries_.empty() || when < entries_.begin()->first.first;
    entries_.emplace(Key{when, handle.sequence}, Call{target, key, token});
  }
  if (earliest) changed_.notify_all();  // the thread sleeps until the old earliest deadline
  return handle;
}

void Timer::cancel(Handle handle) {
  if (!handle.scheduled()) return;
  std::lock_guard lock(mutex_);
  entries_.erase(Key{handle.when, handle.sequence});
}

std::size_t Timer::pending() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

std::vector<Timer::Call> Timer::take_due_locked(Clock::TimePoint now) {
  std::vector<Call> due;
  auto end = entries_.upper_bound(Key{now, UINT64_MAX});
  for (auto it = entries_.begin(); it != end; ++it) due.push_back(it->second);
  entries_.erase(entries_.begin(), end);
  return due;
}

void Timer::fire_due() {
  std::vector<Call> due;
  {
    std::lock_guard lock(mutex_);
    due = take_due_locked(clock_->now());
  }
  for (const Call& call : due) call.target->on_timer(call.key, call.token);
}

void Timer::run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    if (entries_.empty()) {
      changed_.wait(lock);
      continue;
    }
    const auto next = entries_.begin()->first.first;
    if (clock_->now() < next) {
      changed_.wait_until(lock, next);
      continue;
    }
    auto due = take_due_locked(clock_->now());
    lock.unlock();
    for (const Call& call : due) call.target->on_timer(call.key, call.token);
    lock.lock();
  }
}

}  // namespace mq

// A clock that moves only when the test says so, for visibility timeouts without waiting.
#pragma once

#include <atomic>
#include <chrono>

#include "mq/clock.h"

namespace mq::testing {

class ManualClock : public Clock {
 public:
  TimePoint now() const override { return TimePoint(std::chrono::milliseconds(now_ms_.load())); }
  // Starts at the real wall-clock time, so that deliver_at values near the real time make sense.
  std::int64_t system_ms() const override { return wall_start_ms_ + (now_ms_.load() - kStartMs); }
  void advance(std::chrono::milliseconds by) { now_ms_ += by.count(); }

 private:
  static constexpr std::int64_t kStartMs = 1'000'000;
  std::atomic<std::int64_t> now_ms_{kStartMs};
  const std::int64_t wall_start_ms_ = Clock::system_ms();
};

}  // namespace mq::testing

// A clock that moves only when the test says so, for visibility timeouts without waiting.
#pragma once

#include <atomic>
#include <chrono>

#include "mq/clock.h"

namespace mq::testing {

class ManualClock : public Clock {
 public:
  TimePoint now() const override { return TimePoint(std::chrono::milliseconds(now_ms_.load())); }
  void advance(std::chrono::milliseconds by) { now_ms_ += by.count(); }

 private:
  std::atomic<std::int64_t> now_ms_{1'000'000};
};

}  // namespace mq::testing

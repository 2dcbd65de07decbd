// The time source of visibility timeouts and nack delays. The real one is std::chrono::steady_clock;
// tests substitute a clock they advance by hand.
#pragma once

#include <chrono>
#include <memory>

#include "mq/export.h"

namespace mq {

// Thread-safe.
class MQ_EXPORT Clock {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;
};

// std::chrono::steady_clock.
MQ_EXPORT std::shared_ptr<Clock> make_steady_clock();

}  // namespace mq

// The time source of visibility timeouts, nack delays and delayed messages. The real one is
// std::chrono::steady_clock; tests substitute a clock they advance by hand.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>

#include "mq/export.h"

namespace mq {

// Thread-safe.
class MQ_EXPORT Clock {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;
  // Wall-clock time in ms since the Unix epoch, for delayed messages' deliver_at (a record's
  // time); the real clock reads std::chrono::system_clock, a test's moves with now().
  virtual std::int64_t system_ms() const {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
  }
};

// std::chrono::steady_clock.
MQ_EXPORT std::shared_ptr<Clock> make_steady_clock();

}  // namespace mq

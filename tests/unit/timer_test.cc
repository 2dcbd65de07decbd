// The broker's timer (an internal class): deadline order, cancellation, and firing only when due.
#include <doctest/doctest.h>

#include <vector>

#include "groups/timer.h"
#include "manual_clock.h"

using namespace mq;
using mq::testing::ManualClock;
using std::chrono::milliseconds;

namespace {
struct Recorder : Timer::Target {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> calls;
  void on_timer(std::uint64_t key, std::uint64_t token) override { calls.emplace_back(key, token); }
};
}  // namespace

TEST_CASE("TimerFiresDueEntriesInDeadlineOrderAndForgetsCancelledOnes") {
  auto clock = std::make_shared<ManualClock>();
  Timer timer(clock, /*run_thread=*/false);
  Recorder recorder;
  const auto now = clock->now();
  timer.schedule(now + milliseconds(30), &recorder, 3, 30);
  auto cancelled = timer.schedule(now + milliseconds(10), &recorder, 1, 10);
  timer.schedule(now + milliseconds(20), &recorder, 2, 20);
  timer.schedule(now + milliseconds(20), &recorder, 22, 21);  // same deadline: scheduling order
  CHECK(timer.pending() == 4);
  timer.cancel(cancelled);
  timer.cancel(cancelled);  // twice is harmless
  timer.cancel({});         // so is a handle of nothing
  CHECK(timer.pending() == 3);
  clock->advance(milliseconds(19));
  timer.fire_due();
  CHECK(recorder.calls.empty());
  clock->advance(milliseconds(1));
  timer.fire_due();
  CHECK(recorder.calls == std::vector<std::pair<std::uint64_t, std::uint64_t>>{{2, 20}, {22, 21}});
  clock->advance(milliseconds(100));
  timer.fire_due();
  CHECK(recorder.calls.size() == 3);
  CHECK(recorder.calls.back() == std::pair<std::uint64_t, std::uint64_t>{3, 30});
  CHECK(timer.pending() == 0);
}

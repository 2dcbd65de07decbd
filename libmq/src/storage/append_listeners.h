// Callbacks run after appends (consumer groups wake their waiting consumers with them), shared by a
// segment's log and the partition's chain of segments.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <utility>
#include <vector>

namespace mq::detail {

// Thread-safe. notify() holds the lock while calling, so that a listener is never called after
// remove() returned (remove waits for a call under way); a listener must not add or remove one.
class AppendListeners {
 public:
  std::uint64_t add(std::function<void()> on_append) {
    std::lock_guard lock(mutex_);
    listeners_.emplace_back(++last_id_, std::move(on_append));
    return last_id_;
  }
  void remove(std::uint64_t id) {
    std::lock_guard lock(mutex_);
    std::erase_if(listeners_, [id](const auto& l) { return l.first == id; });
  }
  void notify() {
    std::lock_guard lock(mutex_);
    for (const auto& [id, on_append] : listeners_) on_append();
  }

 private:
  std::mutex mutex_;
  std::vector<std::pair<std::uint64_t, std::function<void()>>> listeners_;  // GUARDED_BY(mutex_)
  std::uint64_t last_id_ = 0;                                               // GUARDED_BY(mutex_)
};

}  // namespace mq::detail

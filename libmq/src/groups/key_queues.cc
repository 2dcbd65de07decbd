#include "groups/key_queues.h"

#include <algorithm>
#include <utility>

namespace mq::detail {

bool KeyQueues::push(const std::string& key, std::uint64_t offset) {
  auto it = queues_.find(key);
  if (it == queues_.end()) {
    if (spare_.empty()) {
      it = queues_.try_emplace(key).first;
    } else {
      Map::node_type node = std::move(spare_.back());
      spare_.pop_back();
      node.key() = key;  // into the room the old key left
      it = queues_.insert(std::move(node)).position;
    }
  }
  Queue& queue = it->second;
  queue.offsets.push_back(offset);
  return queue.front() == offset;
}

std::optional<std::uint64_t> KeyQueues::remove(const std::string& key, std::uint64_t offset) {
  auto it = queues_.find(key);
  if (it == queues_.end() || it->second.empty()) return std::nullopt;
  Queue& queue = it->second;
  const bool was_first = queue.front() == offset;
  if (was_first) {
    ++queue.head;
  } else if (auto at = std::find(queue.offsets.begin() + static_cast<std::ptrdiff_t>(queue.head),
                                 queue.offsets.end(), offset);
             at != queue.offsets.end()) {
    queue.offsets.erase(at);  // not the first: dead-lettered or acknowledged while it waited
  }
  if (queue.empty()) {
    queue.offsets.clear();
    queue.head = 0;
    Map::node_type node = queues_.extract(it);
    if (spare_.size() < kSpareNodes && node.key().capacity() <= kLongestSpareKey &&
        node.mapped().offsets.capacity() <= kLargestSpareQueue) {
      spare_.push_back(std::move(node));
    }
    return std::nullopt;
  }
  // What was taken off the front is given back once it is half of the vector: each offset is
  // moved at most once on average.
  if (queue.head * 2 >= queue.offsets.size()) {
    queue.offsets.erase(queue.offsets.begin(),
                        queue.offsets.begin() + static_cast<std::ptrdiff_t>(queue.head));
    queue.head = 0;
    // A backlog that drained gives its room back, as the deque this replaced did.
    if (queue.offsets.capacity() > kLargestSpareQueue && queue.offsets.capacity() > 4 * queue.offsets.size())
      queue.offsets.shrink_to_fit();
  }
  if (!was_first) return std::nullopt;
  return queue.front();
}

std::size_t KeyQueues::queued(const std::string& key) const {
  auto it = queues_.find(key);
  return it == queues_.end() ? 0 : it->second.offsets.size() - it->second.head;
}

void KeyQueues::clear() {
  queues_.clear();
  spare_.clear();
}

}  // namespace mq::detail

#include "groups/key_queues.h"

#include <algorithm>
#include <utility>

namespace mq::detail {

KeyQueues::Pushed KeyQueues::push(std::string_view key, std::uint64_t offset) {
  auto it = queues_.find(key);
  if (it == queues_.end()) {
    it = queues_.try_emplace(std::string(key)).first;
    it->second.key = &it->first;
    ++empty_queues_;  // until the offset is in it (push_back may throw)
  }
  Queue& queue = it->second;
  const bool was_empty = queue.empty();
  queue.offsets.push_back(offset);
  if (was_empty) --empty_queues_;
  return {Ref(&queue), queue.front() == offset};
}

std::optional<std::uint64_t> KeyQueues::remove(Ref& ref, std::uint64_t offset) {
  Queue* const found = std::exchange(ref.queue_, nullptr);
  if (found == nullptr || found->empty()) return std::nullopt;
  Queue& queue = *found;
  const bool was_first = queue.front() == offset;
  if (was_first) {
    ++queue.head;
  } else if (auto at = std::find(queue.offsets.begin() + static_cast<std::ptrdiff_t>(queue.head),
                                 queue.offsets.end(), offset);
             at != queue.offsets.end()) {
    queue.offsets.erase(at);  // not the first: dead-lettered or acknowledged while it waited
  }
  if (queue.empty()) {
    emptied(queue);
    return std::nullopt;
  }
  // What was taken off the front is given back once it is half of the vector: each offset is
  // moved at most once on average.
  if (queue.head * 2 >= queue.offsets.size()) {
    queue.offsets.erase(queue.offsets.begin(),
                        queue.offsets.begin() + static_cast<std::ptrdiff_t>(queue.head));
    queue.head = 0;
    // A backlog that drained gives its room back, as the deque this replaced did.
    if (queue.offsets.capacity() > kLargestKeptQueue && queue.offsets.capacity() > 4 * queue.offsets.size())
      queue.offsets.shrink_to_fit();
  }
  if (!was_first) return std::nullopt;
  return queue.front();
}

void KeyQueues::emptied(Queue& queue) {
  if (queue.key->size() > kLongestKeptKey) {
    // Found through a view of the node's own key, then erased by iterator: the key is not read
    // after erase() frees it.
    queues_.erase(queues_.find(std::string_view(*queue.key)));
  } else {
    queue.offsets.clear();
    queue.head = 0;
    if (queue.offsets.capacity() > kLargestKeptQueue) std::vector<std::uint64_t>().swap(queue.offsets);
    ++empty_queues_;
  }
  // (Also after an erase: the keys in flight went down by one, which may let the kept ones go.)
  if (empty_queues_ > kKeptEmptyQueues && empty_queues_ > keys()) {
    std::erase_if(queues_, [](const auto& entry) { return entry.second.empty(); });
    empty_queues_ = 0;
  }
}

std::size_t KeyQueues::queued(std::string_view key) const {
  auto it = queues_.find(key);
  return it == queues_.end() ? 0 : it->second.offsets.size() - it->second.head;
}

void KeyQueues::clear() {
  queues_.clear();
  empty_queues_ = 0;
}

}  // namespace mq::detail

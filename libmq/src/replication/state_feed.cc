#include "replication/state_feed.h"

namespace mq::replication {
namespace {
std::size_t size_of(const GroupStateRecord& r) { return r.group.size() + r.record.size() + 32; }
}  // namespace

std::uint64_t StateFeed::publish(GroupStateRecord record) {
  std::lock_guard lock(mutex_);
  bytes_ += size_of(record);
  records_.push_back(std::move(record));
  ++head_;
  while (records_.size() > 1 && bytes_ > capacity_bytes_) {
    bytes_ -= size_of(records_.front());
    records_.pop_front();
    ++first_;
  }
  return head_;
}

std::uint64_t StateFeed::head() const {
  std::lock_guard lock(mutex_);
  return head_;
}

std::optional<std::vector<GroupStateRecord>> StateFeed::read_after(std::uint64_t version,
                                                                   std::size_t max_bytes) const {
  std::lock_guard lock(mutex_);
  if (version > head_ || version + 1 < first_) return std::nullopt;
  std::vector<GroupStateRecord> out;
  std::size_t bytes = 0;
  for (std::uint64_t v = version + 1; v <= head_; ++v) {
    const GroupStateRecord& r = records_[v - first_];
    if (!out.empty() && bytes + size_of(r) > max_bytes) break;
    bytes += size_of(r);
    out.push_back(r);
  }
  return out;
}

}  // namespace mq::replication

// The public face of a consumer group (mq/consumer_group.h) and of its subscriptions: ids in and
// out, argument checks; the state itself is GroupState's.
#include "mq/consumer_group.h"

#include <vector>

#include "groups/group_state.h"
#include "groups/message_ids.h"

namespace mq {

std::string_view to_string(Ordering ordering) { return ordering == Ordering::kKey ? "key" : "none"; }

ConsumerGroup::ConsumerGroup(std::unique_ptr<detail::GroupState> state) : state_(std::move(state)) {}

ConsumerGroup::~ConsumerGroup() = default;

const std::string& ConsumerGroup::topic() const { return state_->context().topic; }
std::uint32_t ConsumerGroup::partition() const { return state_->context().partition_index; }
const std::string& ConsumerGroup::name() const { return state_->context().group; }

Result<std::unique_ptr<Subscription>> ConsumerGroup::subscribe(const SubscribeOptions& options) {
  if (auto s = detail::check_subscribe_options(options); !s.ok()) return s;
  if (const Ordering mine = ordering(); options.ordering && *options.ordering != mine) {
    return Status::conflict("group " + name() + " has ordering=" + std::string(to_string(mine)) + " on " +
                            topic() + "/" + std::to_string(partition()) + ", not " +
                            std::string(to_string(*options.ordering)) +
                            " (a group's ordering is fixed when it comes into being)");
  }
  const auto timeout = options.visibility_timeout.value_or(state_->context().options.visibility_timeout);
  auto id = state_->subscribe(timeout, options.max_inflight);
  if (!id.ok()) return id.status();
  return std::unique_ptr<Subscription>(new Subscription(*this, *id));
}

Result<std::size_t> ConsumerGroup::ack(std::span<const std::string> ids) {
  if (ids.empty()) return Status::invalid_argument("no ids to acknowledge");
  std::vector<std::uint64_t> offsets;
  offsets.reserve(ids.size());
  for (const std::string& id : ids) {
    auto offset = detail::offset_named_by(id, partition());
    if (!offset.ok()) return offset.status();
    offsets.push_back(*offset);
  }
  return state_->ack(offsets);
}

Status ConsumerGroup::nack(std::string_view id, std::chrono::milliseconds delay) {
  if (delay.count() < 0) return Status::invalid_argument("delay_ms must not be negative");
  auto offset = detail::offset_named_by(id, partition());
  if (!offset.ok()) return offset.status();
  return state_->nack(*offset, delay);
}

Status ConsumerGroup::touch(std::string_view id) {
  auto offset = detail::offset_named_by(id, partition());
  if (!offset.ok()) return offset.status();
  return state_->touch(*offset);
}

GroupStats ConsumerGroup::stats() const { return state_->stats(); }

Ordering ConsumerGroup::ordering() const { return state_->ordering(); }

Result<std::uint64_t> ConsumerGroup::seek(const SeekTarget& target) {
  const int given = int(target.offset.has_value()) + int(target.timestamp_ms.has_value()) +
                    int(target.position.has_value());
  if (given != 1) return Status::invalid_argument("give exactly one of offset, timestamp and position");
  const Partition& log = *state_->context().partition;
  std::uint64_t offset = 0;
  if (target.offset) {
    offset = *target.offset;
  } else if (target.timestamp_ms) {
    auto found = log.offset_for_time(*target.timestamp_ms);
    if (!found.ok()) return found.status();
    offset = *found;
  } else {
    offset = *target.position == SeekTarget::Position::kEarliest ? log.log_start_offset() : log.next_offset();
  }
  return state_->seek(offset);
}

Subscription::~Subscription() { group_.state_->unsubscribe(id_); }

Result<std::vector<Delivery>> Subscription::next(std::size_t max_messages,
                                                 std::chrono::milliseconds timeout) {
  return group_.state_->take(id_, max_messages, timeout);
}

std::size_t Subscription::inflight() const { return group_.state_->inflight_of(id_); }

void Subscription::cancel_waits() { group_.state_->cancel_waits(id_); }

}  // namespace mq

#include "client/produce_batcher.h"

#include <algorithm>

namespace mq::detail {

Status ProduceBatcher::check(const ProducerOptions& options) {
  auto at_least_one = [](std::size_t value, std::string_view name) {
    return value >= 1
               ? Status()
               : Status::invalid_argument("ProducerOptions::" + std::string(name) + " must be at least 1");
  };
  for (const auto& [value, name] :
       {std::pair{options.batch_max_messages, "batch_max_messages"},
        std::pair{options.batch_max_bytes, "batch_max_bytes"},
        std::pair{options.max_in_flight, "max_in_flight"}, std::pair{options.max_requests, "max_requests"},
        std::pair{options.max_buffered_messages, "max_buffered_messages"}}) {
    if (auto s = at_least_one(value, name); !s.ok()) return s;
  }
  if (options.linger < std::chrono::microseconds::zero() || options.linger > std::chrono::seconds(60)) {
    return Status::invalid_argument("ProducerOptions::linger must be from 0 to 60 s");
  }
  return {};
}

ProduceBatcher::ProduceBatcher(ProducerOptions options, Send send, KeyPartition key_partition)
    : options_(options),
      invalid_options_(check(options)),
      send_(std::move(send)),
      key_partition_(std::move(key_partition)) {}

ProduceBatcher::ProduceBatcher(ProducerOptions options, Queue& queue)
    : ProduceBatcher(
          options,
          [&queue](std::string_view topic, std::span<const Message> messages,
                   std::optional<std::uint32_t> partition) {
            return queue.produce(topic, messages, partition);
          },
          [&queue](std::string_view topic, std::string_view key) {
            return queue.key_partition(topic, key);
          }) {}

ProduceBatcher::~ProduceBatcher() {
  std::vector<std::thread> senders;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    senders.swap(senders_);
  }
  work_.notify_all();
  for (auto& sender : senders) sender.join();
}

std::size_t ProduceBatcher::size_of(const Message& message) {
  // What the message adds to a request body, near enough: its payload, its key and the framing.
  return message.payload.json().size() + (message.key ? message.key->size() : 0) + 32;
}

std::size_t ProduceBatcher::max_in_flight(const LaneKey& key) const {
  return key.second ? 1 : options_.max_in_flight;
}

void ProduceBatcher::enqueue(std::string_view topic, Message message, std::optional<std::uint32_t> partition,
                             Done done) {
  if (!invalid_options_.ok()) return done(invalid_options_);
  if (!partition && message.key) {
    // The key's partition now, so that a batch holds messages of one partition only.
    auto p = key_partition_(topic, *message.key);
    if (!p.ok()) return done(p.status());
    partition = *p;
  }
  const std::size_t bytes = size_of(message);
  std::unique_lock lock(mutex_);
  room_.wait(lock, [&] { return buffered_ < options_.max_buffered_messages; });
  if (senders_.empty()) {
    for (std::size_t i = 0; i < options_.max_requests; ++i) senders_.emplace_back([this] { run_sender(); });
  }
  ++buffered_;
  Lane& lane = lanes_[LaneKey(std::string(topic), partition)];
  if (lane.waiting.empty()) lane.oldest_since = Clock::now();
  lane.waiting.push_back({std::move(message), std::move(done)});
  lane.waiting_bytes += bytes;
  const bool may_send = lane.in_flight < max_in_flight(LaneKey(std::string(topic), partition));
  lock.unlock();
  if (may_send) work_.notify_one();
}

ProduceBatcher::Lane* ProduceBatcher::ready_lane(Clock::time_point now,
                                                 std::optional<Clock::time_point>& wake_at,
                                                 const LaneKey*& key) {
  for (auto& [lane_key, lane] : lanes_) {
    if (lane.waiting.empty() || lane.in_flight >= max_in_flight(lane_key)) continue;
    const bool full =
        lane.waiting.size() >= options_.batch_max_messages || lane.waiting_bytes >= options_.batch_max_bytes;
    const auto due = lane.oldest_since + options_.linger;
    if (full || stopping_ || now >= due) {
      key = &lane_key;
      return &lane;
    }
    if (!wake_at || due < *wake_at) wake_at = due;
  }
  return nullptr;
}

ProduceBatcher::Batch ProduceBatcher::take_batch(const LaneKey& key, Lane& lane) {
  Batch batch;
  batch.lane = key;
  std::size_t bytes = 0;
  while (!lane.waiting.empty() && batch.messages.size() < options_.batch_max_messages) {
    const std::size_t next = size_of(lane.waiting.front().message);
    // A message bigger than batch_max_bytes goes alone.
    if (!batch.messages.empty() && bytes + next > options_.batch_max_bytes) break;
    bytes += next;
    batch.messages.push_back(std::move(lane.waiting.front().message));
    batch.done.push_back(std::move(lane.waiting.front().done));
    lane.waiting.pop_front();
  }
  lane.waiting_bytes -= std::min(lane.waiting_bytes, bytes);
  // The rest waited no longer than the batch's last message: they go with the next batch as due.
  if (!lane.waiting.empty()) lane.oldest_since = Clock::now();
  ++lane.in_flight;
  return batch;
}

void ProduceBatcher::send(Batch& batch) {
  const auto& [topic, partition] = batch.lane;
  auto answer = [&](std::size_t i, const Result<ProduceResult>& result) {
    if (!result.ok()) return batch.done[i](result.status());
    ProduceResult one;
    one.partition = result->partition;
    one.first_offset = result->first_offset + i;
    if (i < result->ids.size()) one.ids.push_back(result->ids[i]);
    batch.done[i](std::move(one));
  };
  auto result = send_(topic, batch.messages, partition);
  const bool refused_whole = !result.ok() && (result.status().code() == ErrorCode::kInvalidArgument ||
                                              result.status().code() == ErrorCode::kPayloadTooLarge);
  if (refused_whole && batch.messages.size() > 1) {
    // Nothing of the batch was stored: each message gets its own verdict.
    for (std::size_t i = 0; i < batch.messages.size(); ++i) {
      auto alone = send_(topic, std::span(&batch.messages[i], 1), partition);
      if (alone.ok()) {
        ProduceResult one = std::move(alone).value();
        batch.done[i](std::move(one));
      } else {
        batch.done[i](alone.status());
      }
    }
    return;
  }
  for (std::size_t i = 0; i < batch.messages.size(); ++i) answer(i, result);
}

void ProduceBatcher::run_sender() {
  std::unique_lock lock(mutex_);
  while (true) {
    std::optional<Clock::time_point> wake_at;
    const LaneKey* key = nullptr;
    if (Lane* lane = ready_lane(Clock::now(), wake_at, key)) {
      Batch batch = take_batch(*key, *lane);
      lock.unlock();
      send(batch);
      lock.lock();
      // Lanes are never erased while the batcher lives, so `lane` still stands.
      --lane->in_flight;
      buffered_ -= batch.messages.size();
      room_.notify_all();
      continue;
    }
    if (stopping_ && buffered_ == 0) {
      work_.notify_all();  // the other senders are done too
      return;
    }
    if (wake_at) {
      work_.wait_until(lock, *wake_at);
    } else {
      work_.wait(lock);
    }
  }
}

}  // namespace mq::detail

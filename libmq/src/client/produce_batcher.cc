#include "client/produce_batcher.h"

#include <algorithm>

#include "mq/topic.h"

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

namespace {
// Set on the producer's own threads: a callback that hands in another message must not wait for
// room that only its own thread could make (it would wait forever once every sender did).
thread_local bool on_sender_thread = false;
}  // namespace

ProduceBatcher::~ProduceBatcher() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_.notify_all();
  // In place: a callback handing in a message meanwhile must see the senders, which go on until
  // everything handed in is answered, and must not start new ones.
  for (auto& sender : senders_) sender.join();
}

std::size_t ProduceBatcher::size_of(const Message& message) {
  // What the message adds to a request body, at most: its payload, its key (escaped, up to six
  // bytes per byte) and the framing.
  std::size_t bytes = message.payload.json().size() + (message.key ? 6 * message.key->size() : 0) + 64;
  for (const auto& [name, value] : message.headers) bytes += name.size() + 6 * value.size() + 6;
  if (message.dedup_id) bytes += 6 * message.dedup_id->size() + 16;
  if (message.delay || message.deliver_at_ms) bytes += 40;
  return bytes;
}

void ProduceBatcher::answer(Done& done, Result<ProduceResult> result) {
  if (!done) return;  // nobody asked
  try {
    done(std::move(result));
  } catch (...) {
    // A callback must not throw (queue.h); one that does must not end the process or keep the
    // rest of its batch unanswered.
  }
}

std::size_t ProduceBatcher::max_in_flight(const LaneKey& key) const {
  return key.second ? 1 : options_.max_in_flight;
}

void ProduceBatcher::enqueue(std::string_view topic, Message message, std::optional<std::uint32_t> partition,
                             Done done) {
  if (!invalid_options_.ok()) return answer(done, invalid_options_);
  if (auto partition_by = partition_key(message); !partition && partition_by) {
    // The key's (or dedup id's) partition now, so that a batch holds messages of one partition only.
    auto p = key_partition_(topic, *partition_by);
    if (!p.ok()) return answer(done, p.status());
    partition = *p;
  }
  const std::size_t bytes = size_of(message);
  std::unique_lock lock(mutex_);
  if (!on_sender_thread) room_.wait(lock, [&] { return buffered_ < options_.max_buffered_messages; });
  if (senders_.empty()) {
    if (stopping_) {  // destroyed before anything was handed in: nothing will send it
      lock.unlock();
      return answer(done, Status::unavailable("the queue is being destroyed"));
    }
    for (std::size_t i = 0; i < options_.max_requests; ++i) senders_.emplace_back([this] { run_sender(); });
  }
  ++buffered_;
  LaneKey key(std::string(topic), partition);
  const std::size_t limit = max_in_flight(key);
  Lane& lane = lanes_[std::move(key)];
  if (lane.waiting.empty()) lane.oldest_since = Clock::now();
  lane.waiting.push_back({std::move(message), std::move(done)});
  lane.waiting_bytes += bytes;
  const bool may_send = lane.in_flight < limit;
  lock.unlock();
  if (may_send) work_.notify_one();
}

ProduceBatcher::Lane* ProduceBatcher::ready_lane(Clock::time_point now,
                                                 std::optional<Clock::time_point>& wake_at,
                                                 const LaneKey*& key) {
  // Round robin: the scan starts after the lane served last, so that every lane gets its turn
  // however many more are busy than there are senders.
  const auto start = last_served_ ? lanes_.upper_bound(*last_served_) : lanes_.begin();
  auto consider = [&](std::map<LaneKey, Lane>::iterator it) -> Lane* {
    auto& [lane_key, lane] = *it;
    if (lane.waiting.empty() || lane.in_flight >= max_in_flight(lane_key)) return nullptr;
    const bool full =
        lane.waiting.size() >= options_.batch_max_messages || lane.waiting_bytes >= options_.batch_max_bytes;
    const auto due = lane.oldest_since + options_.linger;
    if (full || stopping_ || now >= due) {
      key = &lane_key;
      last_served_ = lane_key;
      return &lane;
    }
    if (!wake_at || due < *wake_at) wake_at = due;
    return nullptr;
  };
  for (auto it = start; it != lanes_.end(); ++it) {
    if (Lane* lane = consider(it)) return lane;
  }
  for (auto it = lanes_.begin(); it != start; ++it) {
    if (Lane* lane = consider(it)) return lane;
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

std::vector<Result<ProduceResult>> ProduceBatcher::send(const Batch& batch) {
  std::vector<Result<ProduceResult>> results;
  results.reserve(batch.messages.size());
  send_part(batch, 0, batch.messages.size(), results);
  return results;
}

void ProduceBatcher::send_part(const Batch& batch, std::size_t begin, std::size_t end,
                               std::vector<Result<ProduceResult>>& results) {
  const auto& [topic, partition] = batch.lane;
  auto result = send_(topic, std::span(batch.messages).subspan(begin, end - begin), partition);
  const bool refused_whole = !result.ok() && (result.status().code() == ErrorCode::kInvalidArgument ||
                                              result.status().code() == ErrorCode::kPayloadTooLarge);
  if (refused_whole && end - begin > 1) {
    // Nothing of it was stored: its halves are sent again, down to the message the server refuses
    // alone (a few requests for one bad message, not one per message).
    const std::size_t middle = begin + (end - begin) / 2;
    send_part(batch, begin, middle, results);
    send_part(batch, middle, end, results);
    return;
  }
  for (std::size_t i = 0; i < end - begin; ++i) {
    if (!result.ok()) {
      results.push_back(result.status());
      continue;
    }
    ProduceResult one;
    one.partition = result->partition;
    one.first_offset = i < result->offsets.size() ? result->offsets[i] : result->first_offset + i;
    one.offsets.push_back(one.first_offset);
    if (i < result->ids.size()) one.ids.push_back(result->ids[i]);
    if (std::find(result->duplicates.begin(), result->duplicates.end(), i) != result->duplicates.end())
      one.duplicates.push_back(0);
    results.push_back(std::move(one));
  }
}

void ProduceBatcher::run_sender() {
  on_sender_thread = true;
  std::unique_lock lock(mutex_);
  while (true) {
    std::optional<Clock::time_point> wake_at;
    const LaneKey* key = nullptr;
    if (Lane* lane = ready_lane(Clock::now(), wake_at, key)) {
      Batch batch = take_batch(*key, *lane);
      lock.unlock();
      auto results = send(batch);
      lock.lock();
      // A lane is erased only with nothing waiting and nothing in flight, so `lane` still stands.
      --lane->in_flight;
      if (lane->in_flight == 0 && lane->waiting.empty()) lanes_.erase(batch.lane);
      // Room before the callbacks run: one that hands in another message must find it.
      buffered_ -= batch.messages.size();
      lock.unlock();
      room_.notify_all();
      for (std::size_t i = 0; i < results.size(); ++i) answer(batch.done[i], std::move(results[i]));
      lock.lock();
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

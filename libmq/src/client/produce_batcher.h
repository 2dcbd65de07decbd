// The producer behind Queue::produce_async and the single-message Queue::produce: messages handed
// in one at a time, from any number of threads, are sent in batches (one request, one durable
// write on the server for many messages), like Kafka's producer.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "mq/message.h"
#include "mq/queue.h"

namespace mq::detail {

// Thread-safe. Messages wait in lanes, one per (topic, partition) and one per topic for messages
// that name neither a partition nor a key (the backend picks their partition per batch, sticky).
// A lane's waiting messages go out as one batch when
//   - the lane has no batch in flight (a partition's lane allows one at a time, so that its
//     messages are stored in the order they were handed in; the keyless lane allows
//     ProducerOptions::max_in_flight), and
//   - the oldest has waited ProducerOptions::linger, or the batch is full (batch_max_messages,
//     batch_max_bytes), or the batcher is being destroyed.
// So with linger 0 a message goes out at once when its lane is idle, and messages that arrive
// while a batch is in flight are sent together as the next one: the busier the producers, the
// bigger the batches, with no added latency when they are idle.
//
// Each message's `done` is called once (if not empty), on a sender thread, with the message's own
// result (its partition, offset and id) when its batch is durable, or with the batch's error; an
// error found before anything is sent (invalid options, the key's partition unknown) is answered
// at once on the calling thread. A batch the server refused as a whole before storing anything
// (kInvalidArgument, kPayloadTooLarge: one bad message, or a body over the server's limit) is sent
// again in halves, down to the message refused alone, so that only the bad message fails. A
// callback may hand in more messages (it never waits for room); what it throws is swallowed.
class ProduceBatcher {
 public:
  using Send = std::function<Result<ProduceResult>(std::string_view topic, std::span<const Message> messages,
                                                   std::optional<std::uint32_t> partition)>;
  using KeyPartition = std::function<Result<std::uint32_t>(std::string_view topic, std::string_view key)>;
  using Done = std::function<void(Result<ProduceResult>)>;

  // `send` stores a batch in one partition (Queue::produce of a backend); `key_partition` maps a
  // key to its partition. Both are called from sender threads and must outlive the batcher.
  // Invalid `options` (check()) fail every message handed in with check()'s error.
  ProduceBatcher(ProducerOptions options, Send send, KeyPartition key_partition);
  // The batcher of a Queue backend: it sends through queue.produce() and maps keys with
  // queue.key_partition(). The backend owns it as its last member.
  ProduceBatcher(ProducerOptions options, Queue& queue);
  // Sends every message handed in, waits for their answers, then stops the sender threads.
  ~ProduceBatcher();
  ProduceBatcher(const ProduceBatcher&) = delete;
  ProduceBatcher& operator=(const ProduceBatcher&) = delete;

  // Hands `message` in for `topic` (and `partition`, if given). Blocks while
  // ProducerOptions::max_buffered_messages are waiting or in flight. `done` is called exactly once.
  void enqueue(std::string_view topic, Message message, std::optional<std::uint32_t> partition, Done done);

  // Checks `options` (kInvalidArgument naming the field).
  static Status check(const ProducerOptions& options);

 private:
  using Clock = std::chrono::steady_clock;
  struct Waiting {
    Message message;
    Done done;
  };
  struct Lane {
    std::deque<Waiting> waiting;
    std::size_t waiting_bytes = 0;
    Clock::time_point oldest_since{};  // when the first of `waiting` arrived
    std::size_t in_flight = 0;         // batches being sent
  };
  // (topic, partition): nullopt is the topic's keyless lane.
  using LaneKey = std::pair<std::string, std::optional<std::uint32_t>>;
  struct Batch {
    LaneKey lane;
    std::vector<Message> messages;
    std::vector<Done> done;
  };

  void run_sender();
  // A lane ready to send, or nullptr; sets `wake_at` to when the next lingering lane is due.
  Lane* ready_lane(Clock::time_point now, std::optional<Clock::time_point>& wake_at, const LaneKey*& key);
  Batch take_batch(const LaneKey& key, Lane& lane);
  // Sends `batch`; one result per message.
  std::vector<Result<ProduceResult>> send(const Batch& batch);
  void send_part(const Batch& batch, std::size_t begin, std::size_t end,
                 std::vector<Result<ProduceResult>>& results);
  // Calls `done` (if any) with `result`, swallowing what it throws.
  static void answer(Done& done, Result<ProduceResult> result);
  std::size_t max_in_flight(const LaneKey& key) const;
  static std::size_t size_of(const Message& message);

  const ProducerOptions options_;
  const Status invalid_options_;  // check(options_)
  const Send send_;
  const KeyPartition key_partition_;

  std::mutex mutex_;
  std::condition_variable work_;  // a lane may have become ready, or stopping_
  std::condition_variable room_;  // buffered_ fell
  // GUARDED_BY(mutex_). A lane with nothing waiting and nothing in flight is erased, so that a
  // topic produced to once costs nothing afterwards.
  std::map<LaneKey, Lane> lanes_;
  std::optional<LaneKey> last_served_;  // GUARDED_BY(mutex_): the next scan for a ready lane starts after it
  std::size_t buffered_ = 0;            // GUARDED_BY(mutex_): handed in and not yet answered
  bool stopping_ = false;               // GUARDED_BY(mutex_)
  // Started with the first message (under mutex_); never changed once stopping_ is set.
  std::vector<std::thread> senders_;
};

}  // namespace mq::detail

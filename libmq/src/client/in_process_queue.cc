// The in-process backend: Queue calls go straight to a Broker in this program.
#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>

#include "client/delivery_buffer.h"
#include "client/delivery_json.h"
#include "client/queue_backends.h"
#include "mq/broker.h"
#include "mq/topic.h"

namespace mq::detail {
namespace {

// The messages of `deliveries` as a consumer of `topic` in `group` receives them.
Result<std::vector<ReceivedMessage>> to_received(std::vector<Delivery>& deliveries, const std::string& topic,
                                                 const std::string& group, DeliveryParser& parser) {
  std::vector<ReceivedMessage> out;
  out.reserve(deliveries.size());
  for (auto& d : deliveries) {
    ReceivedMessage& m = out.emplace_back();
    m.topic = topic;
    m.group = group;
    m.partition = d.partition;
    m.offset = d.offset;
    m.id = std::move(d.id);
    m.delivery = d.delivery;
    if (auto s = parser.parse(d.record, m); !s.ok()) return s;
  }
  return out;
}

// One Subscription per partition. With one partition receive() waits on it directly; with more, a
// thread per partition waits on its subscription and leaves what it takes in a DeliveryBuffer.
class InProcessConsumer final : public Consumer {
 public:
  InProcessConsumer(std::string topic, std::string group, std::size_t max_inflight,
                    std::chrono::milliseconds visibility_timeout, std::vector<std::uint32_t> partitions,
                    std::vector<std::unique_ptr<Subscription>> subscriptions)
      : topic_(std::move(topic)),
        group_(std::move(group)),
        subscriptions_(std::move(subscriptions)),
        buffer_(max_inflight, visibility_timeout) {
    if (subscriptions_.size() == 1) return;
    for (std::size_t i = 0; i < subscriptions_.size(); ++i) {
      readers_.emplace_back([this, s = subscriptions_[i].get(), p = partitions[i], max_inflight] {
        read_into_buffer(*s, p, max_inflight);
      });
    }
  }

  ~InProcessConsumer() override {
    stopping_ = true;
    buffer_.close();
    for (auto& subscription : subscriptions_) subscription->cancel_waits();
    for (auto& reader : readers_) reader.join();
    // The subscriptions' destructors hand back what they hold, the buffer's unread messages included.
  }

  Result<std::vector<ReceivedMessage>> receive(std::size_t max_messages,
                                               std::chrono::milliseconds timeout) override {
    if (max_messages == 0) return Status::invalid_argument("receive needs max_messages >= 1");
    if (subscriptions_.size() > 1) return buffer_.pop(max_messages, timeout);
    auto deliveries = subscriptions_.front()->next(max_messages, timeout);
    if (!deliveries.ok()) return deliveries.status();
    return to_received(*deliveries, topic_, group_, parser_);
  }

 private:
  void read_into_buffer(Subscription& subscription, std::uint32_t partition, std::size_t batch) {
    DeliveryParser parser;
    while (!stopping_ && buffer_.wait_for_room(partition)) {
      auto deliveries = subscription.next(batch, std::chrono::hours(1));
      if (!deliveries.ok()) return buffer_.fail(deliveries.status());
      auto messages = to_received(*deliveries, topic_, group_, parser);
      if (!messages.ok()) return buffer_.fail(messages.status());
      buffer_.push(std::move(messages).value());
    }
  }

  const std::string topic_;
  const std::string group_;
  std::vector<std::unique_ptr<Subscription>> subscriptions_;
  DeliveryParser parser_;  // receive()'s, with one partition
  DeliveryBuffer buffer_;
  std::atomic<bool> stopping_{false};
  std::vector<std::thread> readers_;
};

class InProcessQueue final : public Queue {
 public:
  InProcessQueue(std::shared_ptr<Broker> broker, ProducerOptions producer)
      : broker_(std::move(broker)), batcher_(producer, *this) {}

  Result<ProduceResult> produce(std::string_view topic, std::span<const Message> messages,
                                std::optional<std::uint32_t> partition) override {
    if (!partition && !messages.empty() && !partition_key(messages)) {
      // The sticky partitioner over the partitions this broker owns (see PartitionTurns).
      partition = sticky_partition(topic);
    }
    return broker_->produce(topic, messages, partition);
  }

  Result<std::unique_ptr<Consumer>> consume(std::string_view topic, const ConsumeOptions& options) override {
    std::vector<std::uint32_t> partitions = options.partitions;
    if (partitions.empty()) {
      for (const auto& info : broker_->topics()) {
        if (info.name == topic) partitions = info.owned;
      }
    }
    if (options.max_inflight == 0) return Status::invalid_argument("max_inflight must be at least 1");
    if (partitions.empty())
      return Status::not_found("no partition of topic \"" + std::string(topic) + "\" to consume here");
    const SubscribeOptions& subscribe_options = options;
    std::vector<std::unique_ptr<Subscription>> subscriptions;
    for (std::uint32_t p : partitions) {
      auto subscription = broker_->subscribe(topic, p, options.group, subscribe_options);
      if (!subscription.ok()) return subscription.status();
      subscriptions.push_back(std::move(subscription).value());
    }
    const auto visibility_timeout =
        options.visibility_timeout.value_or(broker_->config().groups.visibility_timeout);
    return std::unique_ptr<Consumer>(
        std::make_unique<InProcessConsumer>(std::string(topic), options.group, options.max_inflight,
                                            visibility_timeout, partitions, std::move(subscriptions)));
  }

  Result<std::size_t> ack(std::span<const ReceivedMessage> messages) override {
    return ack_per_partition(messages, [this](std::string_view topic, std::uint32_t partition,
                                              std::string_view group, std::span<const std::string> ids) {
      return broker_->ack(topic, partition, group, ids);
    });
  }

  Status nack(const ReceivedMessage& message, std::chrono::milliseconds delay) override {
    return broker_->nack(message.topic, message.partition, message.group, message.id, delay);
  }

  Status touch(const ReceivedMessage& message) override {
    return broker_->touch(message.topic, message.partition, message.group, message.id);
  }

  Result<ReadPage> read(std::string_view topic, std::uint32_t partition, const ReadFrom& from,
                        std::size_t limit) override {
    if (auto s = check_read_arguments(from, limit); !s.ok()) return s;
    auto read = broker_->read(topic, partition, from, limit);
    if (!read.ok()) return read.status();
    ReadPage page{read->log_start_offset, read->next_offset, {}};
    page.messages.reserve(read->messages.size());
    DeliveryParser parser;
    for (auto& record : read->messages) {
      ReceivedMessage& m = page.messages.emplace_back();
      m.topic = std::string(topic);
      m.partition = partition;
      m.offset = record.offset;
      m.id = std::move(record.id);
      m.delivery = 0;  // read, not delivered
      if (auto s = parser.parse(record.line, m); !s.ok()) return s;
    }
    return page;
  }

  Result<std::uint64_t> redrive(std::string_view topic, std::uint32_t partition,
                                std::optional<std::uint64_t> limit) override {
    return broker_->redrive(topic, partition, limit);
  }

  Result<bool> delete_group(std::string_view topic, std::string_view group) override {
    return broker_->delete_group(topic, group);
  }

  Result<std::vector<TopicStats>> stats(std::optional<std::string_view> topic) override {
    return broker_->stats(topic);
  }

  Result<std::uint64_t> seek(std::string_view topic, std::uint32_t partition, std::string_view group,
                             const SeekTarget& target) override {
    if (auto s = check_seek_target(target); !s.ok()) return s;
    return broker_->seek(topic, partition, group, target);
  }

  std::string_view backend_name() const override { return "in-process"; }

 private:
  // The sticky partitioner's pick among the partitions of `topic` this broker owns; nullopt for an
  // unknown topic (the broker then says so).
  std::optional<std::uint32_t> sticky_partition(std::string_view topic) {
    std::lock_guard lock(mutex_);
    auto it = owned_.find(topic);
    if (it == owned_.end()) {
      for (auto& info : broker_->topics()) owned_[info.name] = std::move(info.owned);
      it = owned_.find(topic);
    }
    // A broker may own none of a topic's partitions (BROKER_COUNT above its partition count).
    if (it == owned_.end() || it->second.empty()) return std::nullopt;
    return it->second[sticky_.next(topic, static_cast<std::uint32_t>(it->second.size()))];
  }

  ProduceBatcher& batcher() override { return batcher_; }

  Result<std::uint32_t> key_partition(std::string_view topic, std::string_view key) override {
    for (const auto& info : broker_->topics()) {
      if (info.name == topic) return partition_for_key(key, info.partitions);
    }
    return Status::not_found("no topic \"" + std::string(topic) + "\"");
  }

  std::shared_ptr<Broker> broker_;
  PartitionTurns sticky_{kStickyRun};
  std::mutex mutex_;
  std::map<std::string, std::vector<std::uint32_t>, std::less<>> owned_;  // GUARDED_BY(mutex_)
  ProduceBatcher batcher_;  // last: destroyed first, while what it sends through still stands
};

}  // namespace

std::unique_ptr<Queue> make_in_process_queue(std::shared_ptr<Broker> broker, ProducerOptions producer) {
  return std::make_unique<InProcessQueue>(std::move(broker), producer);
}

}  // namespace mq::detail

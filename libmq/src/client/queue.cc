#include "mq/queue.h"

#include "client/produce_batcher.h"
#include "client/queue_backends.h"

namespace mq {

std::unique_ptr<Queue> Queue::in_process(std::shared_ptr<Broker> broker, ProducerOptions producer) {
  return detail::make_in_process_queue(std::move(broker), producer);
}

Result<std::unique_ptr<Queue>> Queue::http(HttpQueueOptions options) {
  return detail::make_http_queue(std::move(options));
}

Result<std::unique_ptr<Queue>> Queue::redis(RedisQueueOptions options) {
  return detail::make_redis_queue(std::move(options));
}

Result<std::unique_ptr<Queue>> Queue::open(const QueueSettings& settings) {
  return settings.backend == QueueSettings::Backend::kHttp ? http(settings.http) : redis(settings.redis);
}

Result<QueueFromEnv> Queue::from_env(const EnvLookup& lookup) {
  auto settings = queue_settings_from_env(lookup);
  if (!settings.ok()) return settings.status();
  auto queue = open(*settings);
  if (!queue.ok()) return queue.status();
  return QueueFromEnv{std::move(settings).value(), std::move(queue).value()};
}

Result<ProduceResult> Queue::produce(std::string_view topic, const Message& message,
                                     std::optional<std::uint32_t> partition) {
  return produce_async(topic, message, partition).get();
}

void Queue::produce_async(std::string_view topic, Message message, ProduceCallback done,
                          std::optional<std::uint32_t> partition) {
  batcher().enqueue(topic, std::move(message), partition, std::move(done));
}

std::future<Result<ProduceResult>> Queue::produce_async(std::string_view topic, Message message,
                                                        std::optional<std::uint32_t> partition) {
  // std::function needs a copyable callable: the promise is shared.
  auto promise = std::make_shared<std::promise<Result<ProduceResult>>>();
  auto future = promise->get_future();
  produce_async(
      topic, std::move(message),
      [promise](Result<ProduceResult> result) { promise->set_value(std::move(result)); }, partition);
  return future;
}

Result<ProduceResult> Queue::produce_json(std::string_view topic, std::string_view payload_json,
                                          std::optional<std::string> key) {
  auto payload = Payload::parse(payload_json);
  if (!payload.ok()) return payload.status();
  const Message message{std::move(payload).value(), std::move(key)};
  return produce(topic, message);
}

namespace detail {

namespace {
Status check_timestamp(const std::optional<std::int64_t>& timestamp_ms) {
  if (timestamp_ms && *timestamp_ms < 0) {
    return Status::invalid_argument("the timestamp must be milliseconds since the epoch, not negative (" +
                                    std::to_string(*timestamp_ms) + ")");
  }
  return {};
}
}  // namespace

Status check_read_arguments(const ReadFrom& from, std::size_t limit) {
  if (limit == 0 || limit > kMaxReadLimit) {
    return Status::invalid_argument("the read limit must be from 1 to " + std::to_string(kMaxReadLimit) +
                                    ", not " + std::to_string(limit));
  }
  if (from.offset && from.timestamp_ms)
    return Status::invalid_argument("give an offset or a timestamp, not both");
  return check_timestamp(from.timestamp_ms);
}

Status check_seek_target(const SeekTarget& target) {
  const int given = int(target.offset.has_value()) + int(target.timestamp_ms.has_value()) +
                    int(target.position.has_value());
  if (given != 1) return Status::invalid_argument("give exactly one of offset, timestamp and position");
  return check_timestamp(target.timestamp_ms);
}

}  // namespace detail

}  // namespace mq

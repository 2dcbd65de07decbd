#include "mq/queue.h"

#include "client/queue_backends.h"

namespace mq {

std::unique_ptr<Queue> Queue::in_process(std::shared_ptr<Broker> broker) {
  return detail::make_in_process_queue(std::move(broker));
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
  return produce(topic, std::span(&message, 1), partition);
}

Result<ProduceResult> Queue::produce_json(std::string_view topic, std::string_view payload_json,
                                          std::optional<std::string> key) {
  auto payload = Payload::parse(payload_json);
  if (!payload.ok()) return payload.status();
  const Message message{std::move(payload).value(), std::move(key)};
  return produce(topic, message);
}

}  // namespace mq

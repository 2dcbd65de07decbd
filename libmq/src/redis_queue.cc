#include "queue_backends.h"

namespace mq::detail {

Result<std::unique_ptr<Queue>> make_redis_queue(RedisQueueOptions) {
  return Status::unavailable("the Redis backend is not written yet");
}

}  // namespace mq::detail

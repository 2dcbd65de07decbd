#include "queue_backends.h"

namespace mq::detail {

Result<std::unique_ptr<Queue>> make_http_queue(HttpQueueOptions) {
  return Status::unavailable("the HTTP backend is not written yet");
}

}  // namespace mq::detail

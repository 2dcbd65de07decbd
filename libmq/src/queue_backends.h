// The Queue backends' factories (Queue::in_process, http, redis and open call them) and what the
// backends share.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "mq/queue.h"

namespace mq::detail {

std::unique_ptr<Queue> make_in_process_queue(std::shared_ptr<Broker> broker);
Result<std::unique_ptr<Queue>> make_http_queue(HttpQueueOptions options);
Result<std::unique_ptr<Queue>> make_redis_queue(RedisQueueOptions options);

// "<host name>-<process id>": the default consumer and producer name.
std::string default_client_name();

struct HostPort {
  std::string host;
  std::uint16_t port = 0;
};
// "http://host:port" (a trailing "/" allowed; "host:port" alone is taken as http). kInvalidArgument
// for https, a path, a missing or bad port.
Result<HostPort> parse_http_base_url(std::string_view url);

}  // namespace mq::detail

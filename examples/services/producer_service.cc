// A producer service: sends events to MSG_QUEUE_TOPIC, through mqd (USE_HTTP_QUEUE=true,
// MSG_QUEUE_ADDR) or Redis Streams (otherwise; REDIS_URL or REDIS_ADDR). Nothing in the code
// depends on the backend: copy it and replace the loop with your service's work.
//
//   producer_service [count]      sends `count` events (default 10), then exits
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include <mq/queue.h>

namespace {

std::int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

}  // namespace

int main(int argc, char** argv) {
  const int count = argc > 1 ? std::atoi(argv[1]) : 10;
  auto opened = mq::Queue::from_env();
  if (!opened.ok()) {  // a bad variable: the message names it
    std::fprintf(stderr, "producer_service: %s\n", opened.status().message().c_str());
    return 2;
  }
  const mq::QueueSettings& settings = opened->settings;
  mq::Queue& queue = *opened->queue;
  std::fprintf(stderr, "producer_service: %s backend, topic %s, producer %s\n",
               std::string(queue.backend_name()).c_str(), settings.topic.c_str(),
               settings.producer_name.c_str());

  for (int seq = 0; seq < count; ++seq) {
    const std::string event = R"({"producer":")" + settings.producer_name + R"(","seq":)" +
                              std::to_string(seq) + R"(,"sent_at_ms":)" + std::to_string(now_ms()) + "}";
    // The producer's name as key: its events stay in order on one partition.
    auto sent = queue.produce_json(settings.topic, event, settings.producer_name);
    // A server that is restarting or not up yet: try again a few times before giving up.
    for (int attempt = 1; !sent.ok() && sent.status().code() == mq::ErrorCode::kUnavailable && attempt <= 5;
         ++attempt) {
      std::fprintf(stderr, "producer_service: %s; retrying\n", sent.status().to_string().c_str());
      std::this_thread::sleep_for(std::chrono::milliseconds(100) * (1 << attempt));
      sent = queue.produce_json(settings.topic, event, settings.producer_name);
    }
    if (!sent.ok()) {
      std::fprintf(stderr, "producer_service: %s\n", sent.status().to_string().c_str());
      return 1;
    }
    std::printf("sent %s partition %u offset %llu\n", sent->ids.front().c_str(), sent->partition,
                static_cast<unsigned long long>(sent->first_offset));
  }
  return 0;
}

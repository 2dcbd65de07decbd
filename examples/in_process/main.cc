// The queue inside one program: a Broker owns the logs in a data directory; a producer thread
// sends orders with the customer as key (one customer's orders stay in order on one partition);
// the main thread consumes them in a consumer group and acknowledges each after handling it.
//
//   in_process_example [data directory] [orders]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include <mq/mq.h>
#include <mq/queue.h>

int main(int argc, char** argv) {
  mq::Config config;
  // Not ./data, mqd's default: one process owns a data directory at a time.
  config.store.data_dir = argc > 1 ? argv[1] : "./in-process-data";
  config.topics = {{"orders", 4}};
  const int orders = argc > 2 ? std::atoi(argv[2]) : 10;

  auto broker = mq::Broker::open(config);
  if (!broker.ok()) {
    std::fprintf(stderr, "cannot open the broker: %s\n", broker.status().to_string().c_str());
    return 1;
  }
  // The Queue interface is the same one services use over HTTP or Redis.
  auto queue = mq::Queue::in_process(std::move(broker).value());

  std::thread producer([&] {
    for (int i = 0; i < orders; ++i) {
      const std::string customer = "customer-" + std::to_string(i % 3);
      const std::string order = R"({"order":)" + std::to_string(i) + R"(,"customer":")" + customer + "\"}";
      auto sent = queue->produce_json("orders", order, customer);
      if (!sent.ok()) std::fprintf(stderr, "produce failed: %s\n", sent.status().to_string().c_str());
    }
  });

  mq::ConsumeOptions options;
  options.group = "billing";
  auto consumer = queue->consume("orders", options);
  if (!consumer.ok()) {
    std::fprintf(stderr, "cannot consume: %s\n", consumer.status().to_string().c_str());
    return 1;
  }
  int handled = 0;
  while (handled < orders) {
    auto messages = (*consumer)->receive(100, std::chrono::seconds(5));
    if (!messages.ok() || messages->empty()) {
      std::fprintf(stderr, "no more orders arrived\n");
      break;
    }
    for (const auto& m : *messages) {
      std::printf("partition %u offset %llu: %s\n", m.partition, static_cast<unsigned long long>(m.offset),
                  m.payload.c_str());
    }
    // Acknowledge after handling: a crash before this line means the orders are delivered again.
    auto acked = queue->ack(*messages);
    if (!acked.ok()) std::fprintf(stderr, "ack failed: %s\n", acked.status().to_string().c_str());
    handled += static_cast<int>(messages->size());
  }
  producer.join();
  std::printf("handled %d orders\n", handled);
  return handled == orders ? 0 : 1;
}

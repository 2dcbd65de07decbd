// Appends one message to a topic in the data directory given as the first argument and reads it
// back: the smallest program that links an installed libmq. It needs only the storage layer
// (mq::storage), so it links neither cpp-httplib nor hiredis.
#include <cstdio>

#include <mq/mq.h>

int main(int argc, char** argv) {
  mq::StoreOptions options;
  options.data_dir = argc > 1 ? argv[1] : "./data";
  auto store = mq::LogStore::open(options);
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", store.status().to_string().c_str());
    return 1;
  }
  auto topic = mq::Topic::open(**store, {"greetings", 2}, {});
  if (!topic.ok()) {
    std::fprintf(stderr, "%s\n", topic.status().to_string().c_str());
    return 1;
  }
  mq::Partition* partition = (*topic)->partition((*topic)->partition_for("user-1"));
  auto payload = mq::Payload::parse(R"({"text": "hello from libmq"})");
  auto offset = partition->append(mq::Message{*payload, "user-1"});
  if (!offset.ok()) {
    std::fprintf(stderr, "%s\n", offset.status().to_string().c_str());
    return 1;
  }
  auto batch = partition->read(*offset, 1, 1 << 20);
  if (!batch.ok() || batch->empty()) return 1;
  std::printf("offset %llu: %.*s\n", static_cast<unsigned long long>(*offset),
              static_cast<int>((*batch)[0].line.size()), (*batch)[0].line.data());
  return 0;
}

// The Redis Streams backend's specifics, against a real redis-server per test: the stream layout
// and dense offsets, redelivery through the pending-entries list, nack/touch, handing messages
// back, restarts, and connection failures. The behaviour shared by every backend is in
// queue_conformance_test.cc.
#include <doctest/doctest.h>
#include <hiredis/hiredis.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "mq/queue.h"
#include "mq/topic.h"
#include "running_redis.h"

namespace {

using namespace std::chrono_literals;
using mq::ConsumeOptions;
using mq::Consumer;
using mq::ErrorCode;
using mq::Message;
using mq::Payload;
using mq::Queue;
using mq::ReceivedMessage;
using mq::RedisQueueOptions;
using mq::testing::RunningRedis;

RedisQueueOptions options_for(const RunningRedis& redis, std::uint32_t partitions = 1) {
  RedisQueueOptions options;
  options.port = static_cast<std::uint16_t>(redis.port());
  options.partitions = partitions;
  return options;
}

std::unique_ptr<Queue> open_queue(const RedisQueueOptions& options) {
  auto queue = Queue::redis(options);
  REQUIRE_MESSAGE(queue.ok(), queue.status().to_string());
  return std::move(queue).value();
}

Message message(std::string_view json, std::optional<std::string> key = std::nullopt) {
  auto payload = Payload::parse(json);
  REQUIRE(payload.ok());
  return Message{std::move(payload).value(), std::move(key)};
}

std::unique_ptr<Consumer> consumer_of(Queue& queue, std::string_view topic, ConsumeOptions options) {
  auto consumer = queue.consume(topic, options);
  REQUIRE_MESSAGE(consumer.ok(), consumer.status().to_string());
  return std::move(consumer).value();
}

ConsumeOptions group_options(std::string group, std::string name,
                             std::optional<std::chrono::milliseconds> visibility_timeout = std::nullopt) {
  ConsumeOptions options;
  options.group = std::move(group);
  options.consumer_name = std::move(name);
  options.visibility_timeout = visibility_timeout;
  return options;
}

// Receives until `n` messages came or `timeout` passed.
std::vector<ReceivedMessage> receive_n(Consumer& consumer, std::size_t n,
                                       std::chrono::milliseconds timeout = 10s) {
  std::vector<ReceivedMessage> all;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (all.size() < n) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left <= 0ms) break;
    auto got = consumer.receive(n - all.size(), left);
    REQUIRE_MESSAGE(got.ok(), got.status().to_string());
    for (auto& m : *got) all.push_back(std::move(m));
  }
  return all;
}

ReceivedMessage receive_one(Consumer& consumer, std::chrono::milliseconds timeout = 10s) {
  auto got = receive_n(consumer, 1, timeout);
  REQUIRE(got.size() == 1);
  return got[0];
}

bool receives_nothing(Consumer& consumer, std::chrono::milliseconds timeout) {
  auto got = consumer.receive(10, timeout);
  REQUIRE_MESSAGE(got.ok(), got.status().to_string());
  return got->empty();
}

// A plain hiredis connection, to look at what the backend wrote and to write foreign entries.
class RawRedis {
 public:
  explicit RawRedis(int port, const char* password = nullptr) : context_(redisConnect("127.0.0.1", port)) {
    REQUIRE(context_ != nullptr);
    REQUIRE(context_->err == 0);
    if (password != nullptr) command({"AUTH", password});
  }
  ~RawRedis() { redisFree(context_); }
  RawRedis(const RawRedis&) = delete;
  RawRedis& operator=(const RawRedis&) = delete;

  struct Reply {
    std::unique_ptr<redisReply, void (*)(void*)> reply{nullptr, freeReplyObject};
    const redisReply* operator->() const { return reply.get(); }
  };
  Reply command(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<size_t> lengths;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lengths.push_back(a.size());
    }
    Reply r;
    r.reply.reset(static_cast<redisReply*>(
        redisCommandArgv(context_, static_cast<int>(argv.size()), argv.data(), lengths.data())));
    REQUIRE(r.reply != nullptr);
    return r;
  }
  // XRANGE <key> - +: each entry's id and fields.
  std::vector<std::pair<std::string, std::map<std::string, std::string>>> entries(const std::string& key) {
    auto r = command({"XRANGE", key, "-", "+"});
    REQUIRE(r->type == REDIS_REPLY_ARRAY);
    std::vector<std::pair<std::string, std::map<std::string, std::string>>> out;
    for (std::size_t i = 0; i < r->elements; ++i) {
      const redisReply* e = r->element[i];
      std::map<std::string, std::string> fields;
      for (std::size_t f = 0; f + 1 < e->element[1]->elements; f += 2) {
        fields[e->element[1]->element[f]->str] = e->element[1]->element[f + 1]->str;
      }
      out.emplace_back(e->element[0]->str, std::move(fields));
    }
    return out;
  }

 private:
  redisContext* context_;
};

}  // namespace

TEST_CASE("Redis: produce appends to stream T:p with dense offsets and offset, payload and key fields") {
  RunningRedis redis;
  auto queue = open_queue(options_for(redis, 4));
  CHECK(queue->backend_name() == "redis");

  auto single = queue->produce("orders", message(R"({"n":0})"), 2);
  REQUIRE_MESSAGE(single.ok(), single.status().to_string());
  CHECK(single->partition == 2);
  CHECK(single->first_offset == 0);
  REQUIRE(single->ids.size() == 1);

  const std::vector<Message> batch{message(R"({"n":1})"), message(R"({"n":2})"), message(R"({"n":3})")};
  auto three = queue->produce("orders", batch, 2);
  REQUIRE(three.ok());
  CHECK(three->first_offset == 1);
  REQUIRE(three->ids.size() == 3);

  RawRedis raw(redis.port());
  auto entries = raw.entries("orders:2");
  REQUIRE(entries.size() == 4);
  for (std::size_t i = 0; i < 4; ++i) {
    CHECK(entries[i].second["offset"] == std::to_string(i));
    CHECK(entries[i].second["payload"] == R"({"n":)" + std::to_string(i) + "}");
    CHECK(entries[i].second.count("key") == 0);
  }
  CHECK(entries[0].first == single->ids[0]);
  CHECK(entries[3].first == three->ids[2]);
  CHECK(std::string(raw.command({"GET", "orders:2:next-offset"})->str) == "4");

  // A key picks Kafka's partition and is stored; the payload is stored minified.
  auto keyed = queue->produce_json("orders", R"({ "k" : [1, 2] })", "user-42");
  REQUIRE(keyed.ok());
  const auto p = mq::partition_for_key("user-42", 4);
  CHECK(keyed->partition == p);
  auto keyed_entries = raw.entries("orders:" + std::to_string(p));
  REQUIRE(!keyed_entries.empty());
  CHECK(keyed_entries.back().first == keyed->ids[0]);
  CHECK(keyed_entries.back().second["key"] == "user-42");
  CHECK(keyed_entries.back().second["payload"] == R"({"k":[1,2]})");
  CHECK(keyed_entries.back().second["offset"] == std::to_string(keyed->first_offset));

  // Without partition or key, the partitions in turn.
  std::set<std::uint32_t> partitions;
  for (int i = 0; i < 4; ++i) {
    auto r = queue->produce("rr", message("null"));
    REQUIRE(r.ok());
    partitions.insert(r->partition);
  }
  CHECK(partitions.size() == 4);
}

TEST_CASE("Redis: a received message carries the entry id, its time, offset, key and payload") {
  RunningRedis redis;
  auto queue = open_queue(options_for(redis));
  auto consumer = consumer_of(*queue, "t", group_options("g", "c1"));
  const auto before = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  REQUIRE(queue->produce("t", message("1")).ok());
  auto produced = queue->produce("t", message(R"({"x":"y"})", "k"));
  REQUIRE(produced.ok());

  auto got = receive_n(*consumer, 2);
  REQUIRE(got.size() == 2);
  const ReceivedMessage& m = got[1];
  CHECK(m.topic == "t");
  CHECK(m.group == "g");
  CHECK(m.partition == 0);
  CHECK(m.offset == 1);
  CHECK(m.id == produced->ids[0]);
  CHECK(m.key == std::optional<std::string>("k"));
  CHECK(m.payload == R"({"x":"y"})");
  CHECK(m.delivery == 1);
  CHECK(std::to_string(m.timestamp_ms) == m.id.substr(0, m.id.find('-')));
  CHECK(m.timestamp_ms >= before - 1000);
  CHECK(got[0].offset == 0);
  CHECK(!got[0].key);

  auto acked = queue->ack(got);
  REQUIRE(acked.ok());
  CHECK(*acked == 2);
  CHECK(*queue->ack(got) == 0);  // already acknowledged
}

TEST_CASE("Redis: bad names are invalid, a partition beyond the count and a malformed id are not found") {
  RunningRedis redis;
  auto queue = open_queue(options_for(redis, 2));
  CHECK(queue->produce("bad:name", message("1")).status().code() == ErrorCode::kInvalidArgument);
  CHECK(queue->produce("t", message("1"), 2).status().code() == ErrorCode::kNotFound);
  CHECK(queue->consume("t", group_options("bad group", "c")).status().code() == ErrorCode::kInvalidArgument);
  ConsumeOptions beyond = group_options("g", "c");
  beyond.partitions = {5};
  CHECK(queue->consume("t", beyond).status().code() == ErrorCode::kNotFound);
  RedisQueueOptions no_partitions;
  no_partitions.partitions = 0;
  CHECK(Queue::redis(no_partitions).status().code() == ErrorCode::kInvalidArgument);

  auto consumer = consumer_of(*queue, "t", group_options("g", "c"));
  REQUIRE(queue->produce("t", message("1"), 0).ok());
  auto m = receive_one(*consumer);
  ReceivedMessage bad = m;
  bad.id = "not-an-id";
  const std::vector<ReceivedMessage> both{m, bad};
  CHECK(queue->ack(both).status().code() == ErrorCode::kNotFound);
  CHECK(queue->nack(bad).code() == ErrorCode::kNotFound);
  CHECK(queue->touch(bad).code() == ErrorCode::kNotFound);
  auto acked = queue->ack(m);  // the failed batch acknowledged nothing
  REQUIRE(acked.ok());
  CHECK(*acked == 1);
}

TEST_CASE("Redis: the delivery count counts up on each redelivery after the visibility timeout") {
  RunningRedis redis;
  auto queue = open_queue(options_for(redis));
  auto consumer = consumer_of(*queue, "t", group_options("g", "c1", 200ms));
  REQUIRE(queue->produce("t", message(R"("work")")).ok());

  auto first = receive_one(*consumer);
  CHECK(first.delivery == 1);
  auto second = receive_one(*consumer);
  CHECK(second.id == first.id);
  CHECK(second.delivery == 2);
  auto third = receive_one(*consumer);
  CHECK(third.delivery == 3);
  CHECK(third.payload == R"("work")");

  REQUIRE(*queue->ack(third) == 1);
  CHECK(receives_nothing(*consumer, 600ms));
}

TEST_CASE("Redis: nack without delay redelivers at once, even with a long visibility timeout") {
  RunningRedis redis;
  auto queue = open_queue(options_for(redis));
  auto consumer = consumer_of(*queue, "t", group_options("g", "c1", 60s));
  auto other = consumer_of(*queue, "t", group_options("g", "c2", 60s));
  REQUIRE(queue->produce("t", message("1")).ok());

  auto m = receive_one(*consumer);
  REQUIRE(queue->nack(m).ok());
  auto again = receive_one(*other, 5s);
  CHECK(again.id == m.id);
  CHECK(again.delivery == 2);

  REQUIRE(*queue->ack(again) == 1);
  CHECK(queue->nack(again).code() == ErrorCode::kConflict);
  CHECK(queue->touch(again).code() == ErrorCode::kConflict);
  ReceivedMessage unknown_group = again;
  unknown_group.group = "nobody";
  CHECK(queue->nack(unknown_group).code() == ErrorCode::kConflict);
}

TEST_CASE("Redis: nack with a delay redelivers no earlier than the delay") {
  RunningRedis redis;
  auto queue = open_queue(options_for(redis));
  auto consumer = consumer_of(*queue, "t", group_options("g", "c1", 2s));
  REQUIRE(queue->produce("t", message("1")).ok());
  auto m = receive_one(*consumer);
  const auto nacked = std::chrono::steady_clock::now();
  REQUIRE(queue->nack(m, 400ms).ok());
  auto again = receive_one(*consumer, 10s);
  CHECK(again.id == m.id);
  CHECK(again.delivery == 2);
  CHECK(std::chrono::steady_clock::now() - nacked >= 350ms);
}

TEST_CASE("Redis: touch keeps a message from being redelivered") {
  RunningRedis redis;
  auto queue = open_queue(options_for(redis));
  auto consumer = consumer_of(*queue, "t", group_options("g", "c1", 400ms));
  auto other = consumer_of(*queue, "t", group_options("g", "c2", 400ms));
  REQUIRE(queue->produce("t", message("1")).ok());
  auto m = receive_one(*consumer);

  // Six times 100 ms is past the visibility timeout, but each touch restarts it.
  for (int i = 0; i < 6; ++i) {
    CHECK(receives_nothing(*other, 100ms));
    REQUIRE(queue->touch(m).ok());
  }
  auto again = receive_one(*other, 5s);  // no more touches: redelivered
  CHECK(again.id == m.id);
  CHECK(again.delivery == 2);
}

TEST_CASE("Redis: destroying a consumer hands its messages back at once") {
  RunningRedis redis;
  auto queue = open_queue(options_for(redis, 2));
  auto consumer = consumer_of(*queue, "t", group_options("g", "leaving", 60s));
  REQUIRE(queue->produce("t", message("1"), 0).ok());
  REQUIRE(queue->produce("t", message("2"), 1).ok());
  REQUIRE(receive_n(*consumer, 2).size() == 2);
  consumer.reset();

  auto other = consumer_of(*queue, "t", group_options("g", "staying", 60s));
  auto got = receive_n(*other, 2, 5s);
  REQUIRE(got.size() == 2);
  for (const auto& m : got) CHECK(m.delivery == 2);
  CHECK(*queue->ack(got) == 2);
}

TEST_CASE("Redis: two groups each get every message") {
  RunningRedis redis;
  auto queue = open_queue(options_for(redis, 3));
  auto a = consumer_of(*queue, "t", group_options("a", "c"));
  auto b = consumer_of(*queue, "t", group_options("b", "c"));
  for (int i = 0; i < 6; ++i) REQUIRE(queue->produce("t", message(std::to_string(i))).ok());
  for (auto* consumer : {a.get(), b.get()}) {
    auto got = receive_n(*consumer, 6);
    std::set<std::string> payloads;
    for (auto& m : got) payloads.insert(m.payload);
    CHECK(payloads == std::set<std::string>{"0", "1", "2", "3", "4", "5"});
    CHECK(*queue->ack(got) == 6);
  }
}

TEST_CASE("Redis: receive returns at most max_messages and keeps the rest for the next call") {
  RunningRedis redis;
  auto queue = open_queue(options_for(redis, 3));
  auto consumer = consumer_of(*queue, "t", group_options("g", "c"));
  for (std::uint32_t p = 0; p < 3; ++p) REQUIRE(queue->produce("t", message("1"), p).ok());
  std::set<std::uint32_t> partitions;
  for (int i = 0; i < 3; ++i) {
    auto got = consumer->receive(1, 5s);
    REQUIRE(got.ok());
    REQUIRE(got->size() == 1);
    partitions.insert(got->front().partition);
  }
  CHECK(partitions.size() == 3);
  CHECK(receives_nothing(*consumer, 100ms));
}

TEST_CASE("Redis: a consumer of chosen partitions reads only those") {
  RunningRedis redis;
  auto queue = open_queue(options_for(redis, 3));
  ConsumeOptions options = group_options("g", "c");
  options.partitions = {1};
  auto consumer = consumer_of(*queue, "t", options);
  REQUIRE(queue->produce("t", message("0"), 0).ok());
  REQUIRE(queue->produce("t", message("1"), 1).ok());
  auto m = receive_one(*consumer);
  CHECK(m.partition == 1);
  CHECK(receives_nothing(*consumer, 200ms));
}

TEST_CASE("Redis: max_inflight pauses a partition until messages are acknowledged") {
  RunningRedis redis;
  auto queue = open_queue(options_for(redis));
  ConsumeOptions options = group_options("g", "c");
  options.max_inflight = 2;
  auto consumer = consumer_of(*queue, "t", options);
  for (int i = 0; i < 4; ++i) REQUIRE(queue->produce("t", message(std::to_string(i))).ok());
  auto got = consumer->receive(10, 5s);
  REQUIRE(got.ok());
  REQUIRE(got->size() == 2);
  CHECK(receives_nothing(*consumer, 300ms));
  REQUIRE(*queue->ack(got->front()) == 1);
  auto more = receive_n(*consumer, 1, 5s);
  REQUIRE(more.size() == 1);
  CHECK(more[0].offset == 2);
  CHECK(receives_nothing(*consumer, 300ms));
}

TEST_CASE("Redis: foreign entries keep their fields: as a JSON object without payload, without offset") {
  RunningRedis redis;
  auto queue = open_queue(options_for(redis));
  auto consumer = consumer_of(*queue, "t", group_options("g", "c"));
  RawRedis raw(redis.port());
  raw.command({"XADD", "t:0", "*", "user", "ann", "n", "7"});
  raw.command({"XADD", "t:0", "*", "payload", "not json", "key", "k1"});
  raw.command({"XADD", "t:0", "*", "payload", R"({ "a" : 1 })"});

  auto got = receive_n(*consumer, 3);
  REQUIRE(got.size() == 3);
  CHECK(got[0].payload == R"({"n":"7","user":"ann"})");
  CHECK(got[0].offset == UINT64_MAX);
  CHECK(got[1].payload == R"("not json")");
  CHECK(got[1].key == std::optional<std::string>("k1"));
  CHECK(got[2].payload == R"({"a":1})");
  CHECK(*queue->ack(got) == 3);
}

TEST_CASE("Redis: a restart of redis-server loses no acknowledged produce and consumers reconnect") {
  RunningRedis redis;
  auto queue = open_queue(options_for(redis));
  auto consumer = consumer_of(*queue, "t", group_options("g", "c"));
  for (int i = 0; i < 3; ++i) REQUIRE(queue->produce("t", message(std::to_string(i))).ok());
  auto first = receive_one(*consumer);
  CHECK(first.offset == 0);
  REQUIRE(*queue->ack(first) == 1);

  REQUIRE(redis.stop().has_value());
  redis.start();

  auto rest = receive_n(*consumer, 2);  // the consumer reconnects inside receive
  REQUIRE(rest.size() == 2);
  CHECK(rest[0].offset == 1);
  CHECK(rest[1].offset == 2);
  auto produced = queue->produce("t", message("3"));  // the pooled connection is replaced
  REQUIRE_MESSAGE(produced.ok(), produced.status().to_string());
  CHECK(produced->first_offset == 3);
  auto last = receive_one(*consumer);
  CHECK(last.offset == 3);
  CHECK(*queue->ack(rest) == 2);
  CHECK(*queue->ack(last) == 1);
}

TEST_CASE("Redis: a consumer waits through an outage without failing") {
  RunningRedis redis;
  auto queue = open_queue(options_for(redis));
  auto consumer = consumer_of(*queue, "t", group_options("g", "c"));
  REQUIRE(queue->produce("t", message("1")).ok());
  REQUIRE(redis.stop().has_value());
  auto during = consumer->receive(10, 300ms);
  REQUIRE_MESSAGE(during.ok(), during.status().to_string());
  CHECK(during->empty());
  // Right after the restart Redis may still answer LOADING: receive keeps retrying meanwhile.
  redis.start();
  CHECK(receive_one(*consumer).payload == "1");
}

TEST_CASE("Redis: an unreachable Redis gives kUnavailable naming host and port") {
  RedisQueueOptions options;
  options.port = static_cast<std::uint16_t>(mq::testing::free_port());
  auto queue = open_queue(options);
  auto produced = queue->produce("t", message("1"));
  REQUIRE(!produced.ok());
  CHECK(produced.status().code() == ErrorCode::kUnavailable);
  CHECK(produced.status().message().find("127.0.0.1:" + std::to_string(options.port)) != std::string::npos);
  CHECK(queue->consume("t", group_options("g", "c")).status().code() == ErrorCode::kUnavailable);
}

TEST_CASE("Redis: AUTH with the password works and a missing or wrong one is unauthenticated") {
  RunningRedis redis({"--requirepass", "pw"});
  RedisQueueOptions options = options_for(redis);
  options.password = "pw";
  auto queue = open_queue(options);
  auto consumer = consumer_of(*queue, "t", group_options("g", "c"));
  REQUIRE(queue->produce("t", message("1")).ok());
  CHECK(receive_one(*consumer).payload == "1");

  options.password = "";
  CHECK(open_queue(options)->produce("t", message("1")).status().code() == ErrorCode::kUnauthenticated);
  options.password = "wrong";
  CHECK(open_queue(options)->produce("t", message("1")).status().code() == ErrorCode::kUnauthenticated);
  CHECK(open_queue(options)->consume("t", group_options("g", "c")).status().code() ==
        ErrorCode::kUnauthenticated);
}

TEST_CASE("Redis: a topic whose stream key holds another type fails with the Redis error") {
  RunningRedis redis;
  RawRedis raw(redis.port());
  raw.command({"SET", "t:0", "x"});
  auto queue = open_queue(options_for(redis));
  auto produced = queue->produce("t", message("1"));
  REQUIRE(!produced.ok());
  CHECK(produced.status().message().find("WRONGTYPE") != std::string::npos);
  CHECK(raw.command({"EXISTS", "t:0:next-offset"})->integer == 0);  // nothing written
  CHECK(!queue->consume("t", group_options("g", "c")).ok());
}

TEST_CASE("Redis: acking an id that names no entry is not found, acking one twice is ok with 0") {
  RunningRedis redis;
  auto queue = open_queue(options_for(redis));
  REQUIRE(queue->produce("t", message("1")).ok());
  auto consumer = consumer_of(*queue, "t", group_options("g", "c"));
  const ReceivedMessage m = receive_one(*consumer);
  CHECK(*queue->ack(m) == 1);
  auto again = queue->ack(m);  // exists, acknowledged before: nothing to do, as mqd answers
  REQUIRE_MESSAGE(again.ok(), again.status().to_string());
  CHECK(*again == 0);

  ReceivedMessage ghost = m;
  ghost.id = "1-1";  // well formed, but no such entry in t:0
  auto unknown = queue->ack(ghost);
  CHECK(unknown.status().code() == ErrorCode::kNotFound);
  CHECK(unknown.status().message().find("1-1") != std::string::npos);
  CHECK(queue->ack(std::vector<ReceivedMessage>{m, ghost}).status().code() == ErrorCode::kNotFound);
  ReceivedMessage elsewhere = m;
  elsewhere.group = "never-consumed";  // the entry exists: the group has nothing to acknowledge
  CHECK(*queue->ack(elsewhere) == 0);
}

TEST_CASE("Redis: with Redis stalled, receive keeps to its timeout and destroying a consumer is prompt") {
  RunningRedis redis;
  auto queue = open_queue(options_for(redis));
  REQUIRE(queue->produce("t", message("1")).ok());
  auto consumer = consumer_of(*queue, "t", group_options("g", "c"));
  receive_one(*consumer);  // in flight: destroying the consumer has something to hand back
  redis.pause();
  auto start = std::chrono::steady_clock::now();
  auto got = consumer->receive(10, 200ms);
  const auto receive_took = std::chrono::steady_clock::now() - start;
  REQUIRE_MESSAGE(got.ok(), got.status().to_string());  // a stall shows as no messages
  CHECK(got->empty());
  CHECK(receive_took < 1500ms);  // 200 ms + the grace for a busy Redis, not a 30 s command timeout
  start = std::chrono::steady_clock::now();
  consumer.reset();
  CHECK(std::chrono::steady_clock::now() - start < 2500ms);
  redis.resume();
  // The stall is over: a new consumer gets the message (after its visibility timeout at the latest).
  auto after = consumer_of(*queue, "t", group_options("g", "c2", 300ms));
  CHECK(receive_one(*after).payload == "1");
}

TEST_CASE("Redis: a produce whose reply is lost is an I/O error, since it may have been stored") {
  RunningRedis redis;
  RedisQueueOptions options = options_for(redis);
  options.request_timeout = 300ms;
  auto queue = open_queue(options);
  auto first = queue->produce("t", message("1"));  // loads the script and pools a connection
  REQUIRE(first.ok());
  redis.pause();
  auto lost = queue->produce("t", message("2"));
  CHECK(lost.status().code() == ErrorCode::kIOError);  // not kUnavailable: a retry could store it twice
  CHECK(lost.status().message().find("may or may not") != std::string::npos);
  redis.resume();
  // Redis read the command before the client gave up: it is stored once it runs again.
  RawRedis raw(redis.port());
  auto next = raw.command({"XREAD", "BLOCK", "10000", "STREAMS", "t:0", first->ids[0]});
  REQUIRE(next->type == REDIS_REPLY_ARRAY);
  CHECK(raw.entries("t:0").size() == 2);
  REQUIRE(redis.stop().has_value());
  CHECK(queue->produce("t", message("3")).status().code() == ErrorCode::kUnavailable);  // never sent
}

// --- read and seek ---------------------------------------------------------------------------------

namespace {

mq::ReadFrom at_offset(std::uint64_t offset) { return mq::ReadFrom{offset, std::nullopt}; }

mq::SeekTarget to_offset(std::uint64_t offset) { return mq::SeekTarget{offset, std::nullopt, std::nullopt}; }

// The id just before entry id `id` ("<ms>-<seq>"), as XGROUP SETID should be given it.
std::string id_before(const std::string& id) {
  const auto dash = id.find('-');
  const std::uint64_t ms = std::stoull(id.substr(0, dash));
  const std::uint64_t seq = std::stoull(id.substr(dash + 1));
  if (seq > 0) return std::to_string(ms) + "-" + std::to_string(seq - 1);
  return std::to_string(ms - 1) + "-" + std::to_string(UINT64_MAX);
}

// The group's last-delivered id, from XINFO GROUPS.
std::string last_delivered_id(RawRedis& raw, const std::string& key, const std::string& group) {
  auto groups = raw.command({"XINFO", "GROUPS", key});
  REQUIRE(groups->type == REDIS_REPLY_ARRAY);
  for (std::size_t g = 0; g < groups->elements; ++g) {
    const redisReply* fields = groups->element[g];
    std::map<std::string, std::string> by_name;
    for (std::size_t f = 0; f + 1 < fields->elements; f += 2) {
      const redisReply* value = fields->element[f + 1];
      by_name[fields->element[f]->str] = value->type == REDIS_REPLY_STRING ? value->str : "";
    }
    if (by_name["name"] == group) return by_name["last-delivered-id"];
  }
  FAIL("no group " << group << " on " << key);
  return "";
}

}  // namespace

TEST_CASE(
    "Redis: read and seek find every offset: batches in one millisecond, other clients' entries, deletions") {
  RunningRedis redis;
  auto queue = open_queue(options_for(redis));
  RawRedis raw(redis.port());
  std::vector<std::string> ids;  // by offset
  auto produce = [&](std::size_t count) {
    std::vector<Message> batch;
    for (std::size_t i = 0; i < count; ++i) batch.push_back(message(std::to_string(ids.size() + i)));
    auto produced = queue->produce("t", batch, 0);
    REQUIRE_MESSAGE(produced.ok(), produced.status().to_string());
    for (auto& id : produced->ids) ids.push_back(id);
  };
  produce(40);  // one script: most of it shares a millisecond, by sequence number
  for (int i = 0; i < 5; ++i) {
    raw.command({"XADD", "t:0", "*", "user", "ann"});  // another client's entries have no offset
    produce(1);
  }
  produce(30);
  raw.command({"XADD", "t:0", "*", "user", "bob"});
  const std::set<std::uint64_t> deleted{0, 20, 41, 74};
  for (auto offset : deleted) raw.command({"XDEL", "t:0", ids[offset]});
  const std::uint64_t count = ids.size();
  std::map<std::string, int> per_ms;
  for (const auto& id : ids) per_ms[id.substr(0, id.find('-'))]++;
  int most = 0;
  for (const auto& [ms, n] : per_ms) most = std::max(most, n);
  CHECK(most >= 10);  // the search within one millisecond was needed

  // The offset each position stands for: itself, or the next one still stored.
  auto stored_from = [&](std::uint64_t offset) {
    while (offset < count && deleted.contains(offset)) ++offset;
    return offset;
  };
  for (std::uint64_t k = 0; k <= count; ++k) {
    CAPTURE(k);
    auto page = queue->read("t", 0, at_offset(k), 2);
    REQUIRE_MESSAGE(page.ok(), page.status().to_string());
    CHECK(page->log_start_offset == 1);
    CHECK(page->next_offset == count);
    const std::uint64_t first = stored_from(k);
    if (first == count) {
      CHECK(page->messages.empty());
    } else {
      REQUIRE(!page->messages.empty());
      CHECK(page->messages[0].offset == first);
      CHECK(page->messages[0].id == ids[first]);
      CHECK(page->messages[0].payload == std::to_string(first));
    }
    auto position = queue->seek("t", 0, "g", to_offset(k));
    REQUIRE_MESSAGE(position.ok(), position.status().to_string());
    CHECK(*position == std::max<std::uint64_t>(first, 1));
    const std::string expected_id =
        first == count ? raw.entries("t:0").back().first : id_before(ids[std::max<std::uint64_t>(first, 1)]);
    CHECK(last_delivered_id(raw, "t:0", "g") == expected_id);
  }
  // The whole partition: the stored offsets in order, without the other clients' entries.
  auto all = queue->read("t", 0, {}, mq::kMaxReadLimit);
  REQUIRE(all.ok());
  std::vector<std::uint64_t> offsets;
  for (const auto& m : all->messages) offsets.push_back(m.offset);
  std::vector<std::uint64_t> expected;
  for (std::uint64_t o = 0; o < count; ++o) {
    if (!deleted.contains(o)) expected.push_back(o);
  }
  CHECK(offsets == expected);

  // earliest: 0 (other clients' entries included); latest: the last entry.
  auto earliest = queue->seek(
      "t", 0, "g", mq::SeekTarget{std::nullopt, std::nullopt, mq::SeekTarget::Position::kEarliest});
  REQUIRE(earliest.ok());
  CHECK(*earliest == 1);
  CHECK(last_delivered_id(raw, "t:0", "g") == "0-0");
  auto latest =
      queue->seek("t", 0, "g", mq::SeekTarget{std::nullopt, std::nullopt, mq::SeekTarget::Position::kLatest});
  REQUIRE(latest.ok());
  CHECK(*latest == count);
  CHECK(last_delivered_id(raw, "t:0", "g") == raw.entries("t:0").back().first);
}

TEST_CASE("Redis: a read whose offsets would not grow is refused, naming the backend") {
  RunningRedis redis;
  auto queue = open_queue(options_for(redis));
  for (int i = 0; i < 5; ++i) REQUIRE(queue->produce("t", message("1"), 0).ok());
  RawRedis raw(redis.port());
  raw.command({"DEL", "t:0:next-offset"});  // the counter starts again at 0
  for (int i = 0; i < 3; ++i) REQUIRE(queue->produce("t", message("2"), 0).ok());
  for (const mq::ReadFrom& from : {mq::ReadFrom{}, mq::ReadFrom{std::nullopt, 0}}) {
    auto page = queue->read("t", 0, from, 100);
    CHECK(page.status().code() == ErrorCode::kCorruption);
    CHECK(page.status().message().find("the redis backend cannot find offsets in stream t:0") !=
          std::string::npos);
  }
}

TEST_CASE(
    "Redis: entry ids beyond 2^53 cannot be searched by offset, which says so, from the start and by time "
    "they can") {
  RunningRedis redis;
  auto queue = open_queue(options_for(redis));
  RawRedis raw(redis.port());
  raw.command({"XADD", "t:0", "9007199254740993-0", "user", "ann"});  // the ids after it follow it
  for (int i = 0; i < 3; ++i) REQUIRE(queue->produce("t", message(std::to_string(i)), 0).ok());
  auto by_offset = queue->read("t", 0, at_offset(1), 10);
  CHECK(by_offset.status().code() == ErrorCode::kInvalidArgument);
  CHECK(by_offset.status().message().find("the redis backend cannot search stream t:0") != std::string::npos);
  CHECK(queue->seek("t", 0, "g", to_offset(2)).status().code() == ErrorCode::kInvalidArgument);
  auto from_start = queue->read("t", 0, {}, 10);
  REQUIRE(from_start.ok());
  CHECK(from_start->messages.size() == 3);
  auto by_time = queue->read("t", 0, mq::ReadFrom{std::nullopt, 0}, 10);
  REQUIRE(by_time.ok());
  CHECK(by_time->messages.size() == 3);
}

TEST_CASE(
    "Redis: a read or seek that would step over more than 10,000 entries of other clients is refused, naming "
    "the backend, fewer are stepped over") {
  // Redis runs one script at a time: stepping over 300,000 such entries kept it from every other
  // client for 6.5 s before the budget.
  RunningRedis redis;
  auto queue = open_queue(options_for(redis));
  RawRedis raw(redis.port());
  auto add_foreign = [&](int count) {
    raw.command({"EVAL",
                 "for i = 1, tonumber(ARGV[1]) do redis.call('XADD', KEYS[1], '*', 'user', 'ann') end", "1",
                 "t:0", std::to_string(count)});
  };
  auto refused = [](const mq::Status& status, const std::string& stream) {
    CHECK(status.code() == ErrorCode::kConflict);
    CHECK(status.message().find("the redis backend cannot read or seek stream " + stream +
                                " past more than 10000 entries without an offset field") !=
          std::string::npos);
    CHECK(status.message().find("script:") == std::string::npos);  // Redis's "where" is cut off
  };
  REQUIRE(queue->produce("t", message("0"), 0).ok());
  add_foreign(8000);
  REQUIRE(queue->produce("t", message("1"), 0).ok());
  auto page = queue->read("t", 0, {}, 10);
  REQUIRE_MESSAGE(page.ok(), page.status().to_string());
  REQUIRE(page->messages.size() == 2);
  CHECK(page->messages[1].offset == 1);
  auto second = queue->read("t", 0, at_offset(1), 10);
  REQUIRE_MESSAGE(second.ok(), second.status().to_string());
  CHECK(second->messages.size() == 1);
  const std::int64_t after_first_run = second->messages[0].timestamp_ms;

  add_foreign(3000);
  REQUIRE(queue->produce("t", message("2"), 0).ok());
  refused(queue->read("t", 0, {}, 10).status(), "t:0");  // 11,000 between offsets 0 and 2
  // From a time after the first run of them there are 3,000 to step over: served.
  auto by_time = queue->read("t", 0, mq::ReadFrom{std::nullopt, after_first_run + 1}, 10);
  REQUIRE_MESSAGE(by_time.ok(), by_time.status().to_string());
  REQUIRE(by_time->messages.size() == 1);
  CHECK(by_time->messages[0].offset == 2);

  // A stream that starts with more than the budget of them: its log start cannot be found.
  raw.command(
      {"EVAL", "for i = 1, 10001 do redis.call('XADD', KEYS[1], '*', 'user', 'bob') end", "1", "u:0"});
  REQUIRE(queue->produce("u", message("0"), 0).ok());
  refused(queue->read("u", 0, {}, 10).status(), "u:0");
  refused(queue->seek("u", 0, "g", to_offset(0)).status(), "u:0");
  const mq::SeekTarget earliest{std::nullopt, std::nullopt, mq::SeekTarget::Position::kEarliest};
  refused(queue->seek("u", 0, "g", earliest).status(), "u:0");
  // Redis itself is fine and so is everything that does not search: latest needs no search.
  const mq::SeekTarget latest{std::nullopt, std::nullopt, mq::SeekTarget::Position::kLatest};
  auto at_latest = queue->seek("u", 0, "g", latest);
  REQUIRE_MESSAGE(at_latest.ok(), at_latest.status().to_string());
  CHECK(*at_latest == 1);
  REQUIRE(queue->produce("u", message("1"), 0).ok());
  CHECK(std::string(raw.command({"PING"})->str) == "PONG");
}

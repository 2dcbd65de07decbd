// The client's producer (an internal part behind Queue::produce_async and the single-message
// produce): lanes, batches that grow while a partition's batch is in flight, limits, linger, order,
// per-message answers and errors, and what the destructor sends. A fake `send` stands for the
// backend; a Gate holds its calls where a test needs a batch in flight.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "client/produce_batcher.h"

using mq::ErrorCode;
using mq::Message;
using mq::ProduceResult;
using mq::ProducerOptions;
using mq::Result;
using mq::Status;
using mq::detail::ProduceBatcher;
using std::chrono::milliseconds;

namespace {

using Clock = std::chrono::steady_clock;
constexpr milliseconds kLong{5000};
constexpr milliseconds kBlocked{30};

Message message(const std::string& payload_json, std::optional<std::string> key = std::nullopt) {
  return Message{mq::Payload::parse(payload_json).value(), std::move(key)};
}

// A fake backend: records each batch and answers with consecutive offsets per partition. While
// closed, calls wait at the gate (after being recorded as started).
class FakeBackend {
 public:
  struct Call {
    std::string topic;
    std::optional<std::uint32_t> partition;
    std::vector<std::string> payloads;
    Clock::time_point at;
  };

  ProduceBatcher::Send send() {
    return [this](std::string_view topic, std::span<const Message> messages,
                  std::optional<std::uint32_t> partition) -> Result<ProduceResult> {
      std::unique_lock lock(mutex_);
      Call call{std::string(topic), partition, {}, Clock::now()};
      for (const auto& m : messages) call.payloads.push_back(m.payload.json());
      calls_.push_back(call);
      ++in_flight_;
      max_in_flight_ = std::max(max_in_flight_, in_flight_);
      changed_.notify_all();
      changed_.wait(lock, [&] { return open_ || passes_ > 0; });
      if (!open_) --passes_;
      --in_flight_;
      for (const auto& p : call.payloads) {
        if (p == "\"bad\"") return Status::invalid_argument("bad payload");
        if (p == "\"broken\"") return Status::io_error("connection broke");
      }
      const std::uint32_t where = partition.value_or(7);
      ProduceResult result{where, next_offset_[where], {}};
      for (std::size_t i = 0; i < messages.size(); ++i) {
        result.ids.push_back(std::to_string(where) + "-" + std::to_string(next_offset_[where]++));
      }
      return result;
    };
  }
  static ProduceBatcher::KeyPartition key_partition() {
    return [](std::string_view topic, std::string_view key) -> Result<std::uint32_t> {
      if (topic == "unknown") return Status::not_found("no topic");
      return static_cast<std::uint32_t>(key.size() % 4);
    };
  }

  void close_gate() {
    std::lock_guard lock(mutex_);
    open_ = false;
  }
  void open_gate() {
    {
      std::lock_guard lock(mutex_);
      open_ = true;
    }
    changed_.notify_all();
  }
  // While closed: lets `n` of the calls waiting at the gate (or coming to it) through.
  void let_through(std::size_t n) {
    {
      std::lock_guard lock(mutex_);
      passes_ += n;
    }
    changed_.notify_all();
  }
  // Waits until `n` calls have started.
  bool wait_for_calls(std::size_t n) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, kLong, [&] { return calls_.size() >= n; });
  }
  std::vector<Call> calls() {
    std::lock_guard lock(mutex_);
    return calls_;
  }
  std::size_t max_in_flight() {
    std::lock_guard lock(mutex_);
    return max_in_flight_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  bool open_ = true;
  std::size_t passes_ = 0;  // calls let_through() lets past the closed gate
  std::vector<Call> calls_;
  std::size_t in_flight_ = 0;
  std::size_t max_in_flight_ = 0;
  std::map<std::uint32_t, std::uint64_t> next_offset_;
};

using Answer = std::future<Result<ProduceResult>>;

Answer enqueue(ProduceBatcher& batcher, const std::string& topic, Message m,
               std::optional<std::uint32_t> partition = std::nullopt) {
  auto promise = std::make_shared<std::promise<Result<ProduceResult>>>();
  auto future = promise->get_future();
  batcher.enqueue(topic, std::move(m), partition,
                  [promise](Result<ProduceResult> r) { promise->set_value(std::move(r)); });
  return future;
}

Result<ProduceResult> get(Answer& answer) {
  REQUIRE(answer.wait_for(kLong) == std::future_status::ready);
  return answer.get();
}

}  // namespace

TEST_CASE("A message is answered with its own partition, offset and id") {
  FakeBackend backend;
  ProduceBatcher batcher({}, backend.send(), FakeBackend::key_partition());
  auto a = enqueue(batcher, "t", message("1"), 3);
  auto result = get(a);
  REQUIRE(result.ok());
  CHECK(result->partition == 3);
  CHECK(result->first_offset == 0);
  CHECK(result->ids == std::vector<std::string>{"3-0"});
}

TEST_CASE("Messages that arrive while a partition's batch is in flight go together as its next batch") {
  FakeBackend backend;
  ProduceBatcher batcher({}, backend.send(), FakeBackend::key_partition());
  backend.close_gate();
  std::vector<Answer> answers;
  answers.push_back(enqueue(batcher, "t", message("0"), 1));
  REQUIRE(backend.wait_for_calls(1));
  for (int i = 1; i <= 50; ++i) answers.push_back(enqueue(batcher, "t", message(std::to_string(i)), 1));
  // Nothing more goes out for partition 1 while its batch is in flight.
  std::this_thread::sleep_for(kBlocked);
  CHECK(backend.calls().size() == 1);
  backend.open_gate();
  for (std::size_t i = 0; i < answers.size(); ++i) {
    auto r = get(answers[i]);
    REQUIRE(r.ok());
    CHECK(r->first_offset == i);  // stored in the order handed in
  }
  const auto calls = backend.calls();
  REQUIRE(calls.size() == 2);
  CHECK(calls[1].payloads.size() == 50);
  CHECK(backend.max_in_flight() == 1);
}

TEST_CASE("Batches hold at most batch_max_messages and about batch_max_bytes") {
  FakeBackend backend;
  ProducerOptions options;
  options.batch_max_messages = 10;
  options.batch_max_bytes = 1000;
  ProduceBatcher batcher(options, backend.send(), FakeBackend::key_partition());
  backend.close_gate();
  std::vector<Answer> answers;
  answers.push_back(enqueue(batcher, "t", message("0"), 0));
  REQUIRE(backend.wait_for_calls(1));
  for (int i = 0; i < 25; ++i) answers.push_back(enqueue(batcher, "t", message("1"), 0));
  // Each of these is more than half of batch_max_bytes: one per batch. A bigger one goes alone.
  const std::string big = "\"" + std::string(600, 'x') + "\"";
  const std::string huge = "\"" + std::string(5000, 'x') + "\"";
  for (const auto& payload : {big, big, huge}) answers.push_back(enqueue(batcher, "t", message(payload), 0));
  backend.open_gate();
  for (auto& a : answers) CHECK(get(a).ok());
  std::vector<std::size_t> sizes;
  for (const auto& call : backend.calls()) sizes.push_back(call.payloads.size());
  // 1 in flight; then 25 small ones in batches of 10; the last 5 fill up with the first big one.
  CHECK(sizes == std::vector<std::size_t>{1, 10, 10, 6, 1, 1});
}

TEST_CASE("With linger a message waits for more, and a full batch does not wait") {
  FakeBackend backend;
  ProducerOptions options;
  options.linger = milliseconds(300);
  options.batch_max_messages = 3;
  ProduceBatcher batcher(options, backend.send(), FakeBackend::key_partition());
  const auto start = Clock::now();
  auto a = enqueue(batcher, "t", message("1"), 0);
  auto b = enqueue(batcher, "t", message("2"), 0);
  CHECK(get(a).ok());
  CHECK(get(b).ok());
  auto calls = backend.calls();
  REQUIRE(calls.size() == 1);
  CHECK(calls[0].payloads.size() == 2);
  CHECK(calls[0].at - start >= milliseconds(300));

  const auto full_start = Clock::now();
  std::vector<Answer> full;
  for (int i = 0; i < 3; ++i) full.push_back(enqueue(batcher, "t", message("3"), 0));
  for (auto& f : full) CHECK(get(f).ok());
  calls = backend.calls();
  REQUIRE(calls.size() == 2);
  CHECK(calls[1].payloads.size() == 3);
  CHECK(calls[1].at - full_start < milliseconds(300));  // not held for the linger
}

TEST_CASE("Keyless messages go out up to max_in_flight batches at once, each partition's one at a time") {
  FakeBackend backend;
  ProducerOptions options;
  options.max_in_flight = 3;
  ProduceBatcher batcher(options, backend.send(), FakeBackend::key_partition());
  backend.close_gate();
  std::vector<Answer> answers;
  for (int i = 0; i < 3; ++i) {
    answers.push_back(enqueue(batcher, "t", message("1")));
    REQUIRE(backend.wait_for_calls(i + 1));
  }
  for (int i = 0; i < 10; ++i) answers.push_back(enqueue(batcher, "t", message("2")));
  std::this_thread::sleep_for(kBlocked);
  CHECK(backend.calls().size() == 3);
  backend.open_gate();
  for (auto& a : answers) CHECK(get(a).ok());
  const auto calls = backend.calls();
  CHECK(backend.max_in_flight() == 3);
  for (const auto& call : calls) CHECK_FALSE(call.partition.has_value());  // the backend picks
}

TEST_CASE("A keyed message goes to its key's partition lane, and a key that maps nowhere fails alone") {
  FakeBackend backend;
  ProduceBatcher batcher({}, backend.send(), FakeBackend::key_partition());
  auto a = enqueue(batcher, "t", message("1", "abc"));
  auto r = get(a);
  REQUIRE(r.ok());
  CHECK(r->partition == 3);
  auto b = enqueue(batcher, "unknown", message("1", "abc"));
  CHECK(get(b).status().code() == ErrorCode::kNotFound);
  CHECK(backend.calls().size() == 1);
}

TEST_CASE("A batch refused as a whole is sent again in halves, so only the bad message fails") {
  FakeBackend backend;
  ProduceBatcher batcher({}, backend.send(), FakeBackend::key_partition());
  backend.close_gate();
  auto first = enqueue(batcher, "t", message("0"), 2);
  REQUIRE(backend.wait_for_calls(1));
  auto good1 = enqueue(batcher, "t", message("1"), 2);
  auto bad = enqueue(batcher, "t", message("\"bad\""), 2);
  auto good2 = enqueue(batcher, "t", message("2"), 2);
  backend.open_gate();
  CHECK(get(first).ok());
  auto r1 = get(good1);
  auto r2 = get(good2);
  REQUIRE(r1.ok());
  REQUIRE(r2.ok());
  CHECK(r1->first_offset == 1);
  CHECK(r2->first_offset == 2);
  CHECK(get(bad).status().code() == ErrorCode::kInvalidArgument);
}

TEST_CASE("Any other error of a batch is every one of its messages' answer") {
  FakeBackend backend;
  ProduceBatcher batcher({}, backend.send(), FakeBackend::key_partition());
  backend.close_gate();
  auto first = enqueue(batcher, "t", message("0"), 2);
  REQUIRE(backend.wait_for_calls(1));
  auto a = enqueue(batcher, "t", message("1"), 2);
  auto broken = enqueue(batcher, "t", message("\"broken\""), 2);
  backend.open_gate();
  CHECK(get(first).ok());
  CHECK(get(a).status().code() == ErrorCode::kIOError);
  CHECK(get(broken).status().code() == ErrorCode::kIOError);
  CHECK(backend.calls().size() == 2);  // not sent again: its outcome is unknown
}

TEST_CASE("Destroying the batcher sends what lingers and answers everything") {
  FakeBackend backend;
  std::vector<Answer> answers;
  const auto start = Clock::now();
  {
    ProducerOptions options;
    options.linger = std::chrono::seconds(30);
    ProduceBatcher batcher(options, backend.send(), FakeBackend::key_partition());
    for (int i = 0; i < 5; ++i) answers.push_back(enqueue(batcher, "t", message("1"), i % 2));
  }
  for (auto& a : answers) CHECK(get(a).ok());
  CHECK(Clock::now() - start < std::chrono::seconds(10));
}

TEST_CASE("Handing in waits while max_buffered_messages are unanswered") {
  FakeBackend backend;
  ProducerOptions options;
  options.max_buffered_messages = 2;
  ProduceBatcher batcher(options, backend.send(), FakeBackend::key_partition());
  backend.close_gate();
  auto a = enqueue(batcher, "t", message("1"), 0);
  auto b = enqueue(batcher, "t", message("2"), 0);
  REQUIRE(backend.wait_for_calls(1));
  auto third = std::async(std::launch::async, [&] { return enqueue(batcher, "t", message("3"), 0); });
  CHECK(third.wait_for(kBlocked) == std::future_status::timeout);
  backend.open_gate();
  REQUIRE(third.wait_for(kLong) == std::future_status::ready);
  auto c = third.get();
  CHECK(get(a).ok());
  CHECK(get(b).ok());
  CHECK(get(c).ok());
}

TEST_CASE("Invalid producer options fail every message with a reason naming the field") {
  CHECK(ProduceBatcher::check({}).ok());
  ProducerOptions options;
  options.max_requests = 0;
  CHECK(ProduceBatcher::check(options).message().find("max_requests") != std::string::npos);
  FakeBackend backend;
  ProduceBatcher batcher(options, backend.send(), FakeBackend::key_partition());
  auto a = enqueue(batcher, "t", message("1"), 0);
  CHECK(get(a).status().code() == ErrorCode::kInvalidArgument);
  options = {};
  options.linger = milliseconds(-1);
  CHECK(ProduceBatcher::check(options).code() == ErrorCode::kInvalidArgument);
}

TEST_CASE("Many threads producing one message each get every message stored once, in order per thread") {
  FakeBackend backend;
  ProduceBatcher batcher({}, backend.send(), FakeBackend::key_partition());
  constexpr int kThreads = 8;
  constexpr int kPerThread = 200;
  std::vector<std::thread> threads;
  std::vector<std::vector<std::uint64_t>> offsets(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto a = enqueue(batcher, "t", message(std::to_string(t * kPerThread + i)), t % 2);
        auto r = a.get();
        CHECK(r.ok());
        if (!r.ok()) return;
        offsets[t].push_back(r->first_offset);
      }
    });
  }
  for (auto& th : threads) th.join();
  std::size_t messages = 0;
  for (const auto& call : backend.calls()) messages += call.payloads.size();
  CHECK(messages == kThreads * kPerThread);
  for (const auto& o : offsets) CHECK(std::is_sorted(o.begin(), o.end()));
  CHECK(backend.calls().size() < kThreads * kPerThread);  // some batches held several
}

TEST_CASE("A callback may hand in more messages, also with the buffer full, without deadlocking") {
  FakeBackend backend;
  ProducerOptions options;
  options.max_buffered_messages = 2;
  options.max_requests = 1;
  ProduceBatcher batcher(options, backend.send(), FakeBackend::key_partition());
  std::promise<void> all_done;
  std::atomic<int> answered{0};
  constexpr int kChain = 50;
  // Each answer hands in the next message from the sender thread: with one sender and room for
  // two, waiting for room there would wait for itself.
  std::function<void(Result<ProduceResult>)> next = [&](Result<ProduceResult> r) {
    CHECK(r.ok());
    const int n = ++answered;
    if (n == kChain) return all_done.set_value();
    batcher.enqueue("t", message(std::to_string(n)), 0, next);
    batcher.enqueue("t", message("\"extra\""), 1, nullptr);  // beyond max_buffered_messages
  };
  batcher.enqueue("t", message("0"), 0, next);
  CHECK(all_done.get_future().wait_for(kLong) == std::future_status::ready);
}

TEST_CASE("An empty callback is allowed and a throwing one does not keep the rest of its batch unanswered") {
  FakeBackend backend;
  ProduceBatcher batcher({}, backend.send(), FakeBackend::key_partition());
  backend.close_gate();
  auto first = enqueue(batcher, "t", message("0"), 0);
  REQUIRE(backend.wait_for_calls(1));
  batcher.enqueue("t", message("1"), 0, nullptr);
  batcher.enqueue("t", message("2"), 0,
                  [](Result<ProduceResult>) { throw std::runtime_error("callback bug"); });
  auto last = enqueue(batcher, "t", message("3"), 0);
  backend.open_gate();
  CHECK(get(first).ok());
  auto r = get(last);
  REQUIRE(r.ok());
  CHECK(r->first_offset == 3);
}

TEST_CASE("A callback handing in a message while the batcher is destroyed gets it sent, not a crash") {
  FakeBackend backend;
  std::atomic<int> answered{0};
  std::atomic<bool> destroying{false};
  std::thread opener;
  {
    // A long linger, which a message as big as a batch does not wait for: the first message goes
    // at once, and the lone small one below only once the destructor has begun (it sends at once
    // what lingers): its call is the sign that the destructor is waiting.
    ProducerOptions options;
    options.linger = std::chrono::seconds(30);
    options.batch_max_bytes = 100;
    ProduceBatcher batcher(options, backend.send(), FakeBackend::key_partition());
    backend.close_gate();
    batcher.enqueue("t", message("\"" + std::string(100, 'x') + "\""), 0, [&](Result<ProduceResult> r) {
      CHECK(r.ok());
      ++answered;
      batcher.enqueue("t", message("1"), 0, [&](Result<ProduceResult> again) {
        CHECK(again.ok());
        ++answered;
      });
    });
    REQUIRE(backend.wait_for_calls(1));
    batcher.enqueue("t", message("\"lingers\""), 1, nullptr);
    opener = std::thread([&] {
      destroying = backend.wait_for_calls(2);  // the lingering message sent: the destructor is waiting
      backend.open_gate();
    });
  }
  opener.join();
  CHECK(destroying);
  CHECK(answered == 2);
  CHECK(backend.calls().size() == 3);
}

TEST_CASE("Busy lanes take turns: with more busy partitions than senders none is starved") {
  FakeBackend backend;
  ProducerOptions options;
  options.max_requests = 2;
  ProduceBatcher batcher(options, backend.send(), FakeBackend::key_partition());
  // Partitions 0 and 1 are refilled by each of their answers, 200 times; partition 7 has one
  // message. Served from the start of the lanes every time, partition 7 would wait for the end.
  constexpr int kChain = 200;
  std::atomic<int> chain_answers{0};
  std::promise<void> chains_done;
  std::function<void(std::uint32_t, Result<ProduceResult>)> refill = [&](std::uint32_t p,
                                                                         Result<ProduceResult>) {
    const int n = ++chain_answers;
    if (n == 2 * kChain) chains_done.set_value();
    if (n <= 2 * kChain - 2)
      batcher.enqueue("t", message("1"), p, [&, p](Result<ProduceResult> r) { refill(p, r); });
  };
  backend.close_gate();
  for (std::uint32_t p : {0u, 1u})
    batcher.enqueue("t", message("1"), p, [&, p](Result<ProduceResult> r) { refill(p, r); });
  REQUIRE(backend.wait_for_calls(2));  // both senders wait at the gate, one per chain
  batcher.enqueue("t", message("7"), 7, [](Result<ProduceResult>) {});
  // One call through: its sender answers it (its chain refills) and takes the next lane in turn,
  // which is partition 7's. Stepped so, the order is the batcher's, whatever the OS does with
  // the threads (counting answers instead failed now and then on a loaded machine).
  backend.let_through(1);
  REQUIRE(backend.wait_for_calls(3));
  CHECK(backend.calls()[2].partition == std::optional<std::uint32_t>(7));
  backend.open_gate();
  CHECK(chains_done.get_future().wait_for(kLong) == std::future_status::ready);
  CHECK(backend.calls().size() == 2 * kChain + 1);
}

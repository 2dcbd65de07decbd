// The client's delivery buffer (an internal part): where a consumer's background readers leave
// messages for receive(). Order, batches of at most max_messages, room per partition (max_inflight),
// dropping what outlived its visibility timeout, close() and fail().
#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <future>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "client/delivery_buffer.h"

using mq::ReceivedMessage;
using mq::detail::DeliveryBuffer;
using std::chrono::milliseconds;

namespace {

using Clock = std::chrono::steady_clock;

// Long enough that a test never sees it pass; short enough that a broken test does not hang long.
constexpr milliseconds kLong{5000};
// Long enough to show that something that must stay blocked does.
constexpr milliseconds kBlocked{30};
constexpr milliseconds kHour{3600 * 1000};

ReceivedMessage message(std::uint32_t partition, std::uint64_t offset) {
  ReceivedMessage m;
  m.topic = "events";
  m.group = "g";
  m.partition = partition;
  m.offset = offset;
  m.id = std::to_string(partition) + "-" + std::to_string(offset);
  m.payload = "{\"n\":" + std::to_string(offset) + "}";
  return m;
}

std::vector<std::string> ids_of(const std::vector<ReceivedMessage>& messages) {
  std::vector<std::string> ids;
  for (const auto& m : messages) ids.push_back(m.id);
  return ids;
}

// The ids pop() returns; fails the test when pop() fails.
std::vector<std::string> pop_ids(DeliveryBuffer& buffer, std::size_t max_messages, milliseconds timeout) {
  auto popped = buffer.pop(max_messages, timeout);
  REQUIRE_MESSAGE(popped.ok(), popped.status().to_string());
  return ids_of(*popped);
}

bool ready_within(const std::future<bool>& f, milliseconds timeout) {
  return f.wait_for(timeout) == std::future_status::ready;
}

// A reader waiting for room in `partition` on a thread of its own. Its destructor closes the buffer
// and empties it first (either wakes the reader), so that a failed test ends instead of hanging.
class RoomWaiter {
 public:
  RoomWaiter(DeliveryBuffer& buffer, std::uint32_t partition)
      : buffer_(buffer), room_(std::async(std::launch::async, [&buffer, partition] {
          return buffer.wait_for_room(partition);
        })) {}
  ~RoomWaiter() {
    buffer_.close();
    static_cast<void>(buffer_.pop(std::numeric_limits<std::size_t>::max(), milliseconds(0)));
  }
  RoomWaiter(const RoomWaiter&) = delete;
  RoomWaiter& operator=(const RoomWaiter&) = delete;

  // Whether wait_for_room returned within `timeout`.
  bool returned_within(milliseconds timeout) const { return ready_within(room_, timeout); }
  bool result() { return room_.get(); }

 private:
  DeliveryBuffer& buffer_;
  std::future<bool> room_;
};

}  // namespace

TEST_CASE("Buffered messages come out in the order they went in, at most max_messages at a time") {
  DeliveryBuffer buffer(100, kHour);
  buffer.push({message(0, 1), message(1, 7), message(0, 2)});
  buffer.push({message(2, 3)});
  buffer.push({message(1, 8), message(0, 3)});
  CHECK(pop_ids(buffer, 2, milliseconds(0)) == std::vector<std::string>{"0-1", "1-7"});
  CHECK(pop_ids(buffer, 1, milliseconds(0)) == std::vector<std::string>{"0-2"});
  CHECK(pop_ids(buffer, 100, milliseconds(0)) == std::vector<std::string>{"2-3", "1-8", "0-3"});
  CHECK(pop_ids(buffer, 100, milliseconds(0)).empty());

  // A message comes out whole.
  ReceivedMessage m = message(3, 9);
  m.key = "k";
  m.delivery = 4;
  m.timestamp_ms = 1234;
  buffer.push({m});
  auto popped = buffer.pop(1, milliseconds(0));
  REQUIRE(popped.ok());
  REQUIRE(popped->size() == 1);
  const ReceivedMessage& out = popped->front();
  CHECK(out.topic == "events");
  CHECK(out.group == "g");
  CHECK(out.partition == 3);
  CHECK(out.offset == 9);
  CHECK(out.id == "3-9");
  CHECK(out.delivery == 4);
  CHECK(out.timestamp_ms == 1234);
  CHECK(out.key == "k");
  CHECK(out.payload == "{\"n\":9}");
}

TEST_CASE("pop waits up to its timeout for a first message and then returns none") {
  DeliveryBuffer buffer(10, kHour);
  buffer.push({});  // nothing
  CHECK(pop_ids(buffer, 5, milliseconds(0)).empty());
  const auto start = Clock::now();
  CHECK(pop_ids(buffer, 5, milliseconds(20)).empty());
  CHECK(Clock::now() - start >= milliseconds(20));
}

TEST_CASE("A message pushed while pop waits is returned at once") {
  DeliveryBuffer buffer(10, kHour);
  auto popped = std::async(std::launch::async, [&] { return buffer.pop(10, kLong); });
  buffer.push({message(0, 1), message(0, 2)});
  REQUIRE(popped.wait_for(kLong) == std::future_status::ready);
  auto result = popped.get();
  REQUIRE(result.ok());
  // Whether pop woke before the push or after, it returns what is there (one push, so both).
  CHECK(ids_of(*result) == std::vector<std::string>{"0-1", "0-2"});
}

TEST_CASE(
    "A partition has room until max_per_partition of its messages are unread, other partitions regardless") {
  DeliveryBuffer buffer(2, kHour);
  CHECK(buffer.wait_for_room(0));  // never pushed to: room
  buffer.push({message(0, 1)});
  CHECK(buffer.wait_for_room(0));  // one of two
  buffer.push({message(0, 2), message(1, 1)});
  CHECK(buffer.wait_for_room(1));  // partition 0 is full, 1 is not
  CHECK(buffer.wait_for_room(2));

  // Partition 0 is full: its reader waits until receive takes one of its messages.
  RoomWaiter reader(buffer, 0);
  CHECK_FALSE(reader.returned_within(kBlocked));
  CHECK(pop_ids(buffer, 1, milliseconds(0)) == std::vector<std::string>{"0-1"});
  REQUIRE(reader.returned_within(kLong));
  CHECK(reader.result());
}

TEST_CASE("Taking another partition's messages leaves a full partition waiting") {
  DeliveryBuffer buffer(1, kHour);
  buffer.push({message(1, 1), message(0, 1)});
  RoomWaiter reader(buffer, 0);
  CHECK(pop_ids(buffer, 1, milliseconds(0)) == std::vector<std::string>{"1-1"});
  CHECK_FALSE(reader.returned_within(kBlocked));
  CHECK(pop_ids(buffer, 1, milliseconds(0)) == std::vector<std::string>{"0-1"});
  REQUIRE(reader.returned_within(kLong));
  CHECK(reader.result());
}

TEST_CASE("close ends every wait for room, and later ones at once") {
  DeliveryBuffer buffer(1, kHour);
  buffer.push({message(0, 1), message(1, 1)});
  RoomWaiter reader0(buffer, 0);
  RoomWaiter reader1(buffer, 1);
  CHECK_FALSE(reader0.returned_within(kBlocked));
  CHECK_FALSE(reader1.returned_within(milliseconds(0)));
  buffer.close();
  REQUIRE(reader0.returned_within(kLong));
  REQUIRE(reader1.returned_within(kLong));
  CHECK_FALSE(reader0.result());
  CHECK_FALSE(reader1.result());
  // After close there is never room, even for a partition with none unread.
  CHECK_FALSE(buffer.wait_for_room(0));
  CHECK_FALSE(buffer.wait_for_room(7));
  // What was buffered can still be received.
  CHECK(pop_ids(buffer, 10, milliseconds(0)) == std::vector<std::string>{"0-1", "1-1"});
}

TEST_CASE("A reader's failure is reported once every buffered message has been received, and from then on") {
  DeliveryBuffer buffer(10, kHour);
  buffer.push({message(0, 1), message(0, 2)});
  buffer.fail(mq::Status::not_found("no such topic"));
  buffer.fail(mq::Status::unauthenticated("a later error"));  // the first one counts
  CHECK(pop_ids(buffer, 1, milliseconds(0)) == std::vector<std::string>{"0-1"});
  CHECK(pop_ids(buffer, 1, kLong) == std::vector<std::string>{"0-2"});
  for (int i = 0; i < 2; ++i) {
    const auto start = Clock::now();
    auto popped = buffer.pop(10, kLong);
    CHECK(Clock::now() - start < kLong);  // at once, not after the timeout
    REQUIRE_FALSE(popped.ok());
    CHECK(popped.status().code() == mq::ErrorCode::kNotFound);
    CHECK(popped.status().message() == "no such topic");
  }
  // Messages pushed after the failure (another partition's reader) still come first.
  buffer.push({message(1, 1)});
  CHECK(pop_ids(buffer, 10, milliseconds(0)) == std::vector<std::string>{"1-1"});
  CHECK(buffer.pop(10, milliseconds(0)).status().code() == mq::ErrorCode::kNotFound);
}

TEST_CASE("A failure wakes a pop that waits") {
  DeliveryBuffer buffer(10, kHour);
  auto popped = std::async(std::launch::async, [&] { return buffer.pop(10, kLong); });
  buffer.fail(mq::Status::invalid_argument("bad group"));
  REQUIRE(popped.wait_for(kLong) == std::future_status::ready);
  auto result = popped.get();
  REQUIRE_FALSE(result.ok());
  CHECK(result.status().code() == mq::ErrorCode::kInvalidArgument);
}

TEST_CASE("A message older than the visibility timeout is dropped, and its partition has room again") {
  DeliveryBuffer buffer(1, milliseconds(1));
  buffer.push({message(0, 1)});
  std::this_thread::sleep_for(milliseconds(5));  // steady: 0-1 is now older than 1 ms
  CHECK(pop_ids(buffer, 10, milliseconds(0)).empty());
  // The dropped message is no longer unread: its partition has room.
  RoomWaiter reader(buffer, 0);
  REQUIRE(reader.returned_within(kLong));
  CHECK(reader.result());
}

TEST_CASE("pop drops the stale messages ahead of fresh ones and returns the fresh ones") {
  constexpr milliseconds kVisibility{40};
  DeliveryBuffer buffer(10, kVisibility);
  buffer.push({message(0, 1), message(1, 1)});
  std::this_thread::sleep_for(kVisibility + milliseconds(10));
  const auto before_push = Clock::now();
  buffer.push({message(0, 2)});
  const auto ids = pop_ids(buffer, 10, milliseconds(0));
  const auto after_pop = Clock::now();
  // The stale ones never come out; the fresh one does, unless this thread was held up so long
  // that it went stale too.
  if (after_pop - before_push < kVisibility) {
    CHECK(ids == std::vector<std::string>{"0-2"});
  } else {
    CHECK((ids.empty() || ids == std::vector<std::string>{"0-2"}));
  }
  CHECK(pop_ids(buffer, 10, milliseconds(0)).empty());
}

TEST_CASE("Messages held less than the visibility timeout are kept") {
  DeliveryBuffer buffer(10, kHour);
  buffer.push({message(0, 1)});
  std::this_thread::sleep_for(milliseconds(5));
  CHECK(pop_ids(buffer, 10, milliseconds(0)) == std::vector<std::string>{"0-1"});
}

TEST_CASE("When only stale messages are buffered, pop keeps waiting for a fresh one until its timeout") {
  DeliveryBuffer buffer(10, milliseconds(1));
  buffer.push({message(0, 1)});
  std::this_thread::sleep_for(milliseconds(5));
  const auto start = Clock::now();
  CHECK(pop_ids(buffer, 10, milliseconds(20)).empty());
  CHECK(Clock::now() - start >= milliseconds(20));
  // With a failure behind the stale messages, pop reports it.
  buffer.push({message(0, 2)});
  std::this_thread::sleep_for(milliseconds(5));
  buffer.fail(mq::Status::not_found("gone"));
  CHECK(buffer.pop(10, kLong).status().code() == mq::ErrorCode::kNotFound);
}

// pop() used to notify the readers waiting for room only when it returned, not when it dropped
// stale messages: a reader whose partition was full of stale messages stayed blocked for the whole
// pop, and the redelivery it would fetch waited for the next receive().
TEST_CASE("Dropping stale messages lets the partition's reader fetch more during the same pop") {
  // Only the first message must go stale: the second must still be fresh when pop wakes for it, after
  // a thread's wake-up on a busy machine (50 ms was too short for that now and then under ASan).
  constexpr milliseconds kVisibility{300};
  DeliveryBuffer buffer(1, kVisibility);
  buffer.push({message(0, 1)});
  std::this_thread::sleep_for(kVisibility + milliseconds(10));
  auto reader = std::async(std::launch::async, [&] {
    if (!buffer.wait_for_room(0)) return false;
    buffer.push({message(0, 2)});
    return true;
  });
  CHECK_FALSE(ready_within(reader, kBlocked));  // the reader waits: partition 0 is full
  const auto start = Clock::now();
  const auto ids = pop_ids(buffer, 10, milliseconds(1000));
  CHECK(Clock::now() - start < milliseconds(500));
  CHECK(ids == std::vector<std::string>{"0-2"});
  buffer.close();
}

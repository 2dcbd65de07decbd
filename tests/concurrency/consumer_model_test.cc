// A randomized model test of one consumer group on one partition: thousands of random operations
// (produce, with keys and delays, subscribe, take, ack, nack, touch, time passing, ending
// subscriptions, restarts, seeks, retention deleting segments by size or once acknowledged) run
// against the real Broker with a hand-driven clock, and every answer is checked against a small
// reference model written here from the contract. Fixed seeds; the seed and the step are printed
// on a failure.
#include <doctest/doctest.h>

#include <map>
#include <random>

#include "broker_helpers.h"
#include "groups/message_ids.h"  // ids of messages not delivered
#include "temp_dir.h"

using namespace mq;
using mq::detail::message_id;
using namespace mq::testing;
using std::chrono::milliseconds;

namespace {

constexpr std::uint32_t kMaxDeliveries = 3;

struct ModelMessage {
  // kWaiting: passed over by the group's new messages, never delivered: not due yet (deliver_at),
  // or (ordering=key) behind an earlier message of its key.
  enum class State { kNew, kInFlight, kReady, kDelayed, kWaiting, kDone } state = State::kNew;
  std::uint32_t deliveries = 0;
  int holder = -1;
  std::int64_t due = 0;  // in-flight deadline or end of a nack delay, in model ms
  // What the producer gave it, kept across restarts and seeks.
  int key = -1;                 // -1: none
  std::int64_t deliver_at = 0;  // in model ms; 0: due at once

  // Back to never delivered, as a restart or a seek leaves it.
  void reset() {
    state = State::kNew;
    deliveries = 0;
    holder = -1;
    due = 0;
  }
};

struct ModelSubscriber {
  std::int64_t timeout;
  std::size_t max_inflight;
  std::size_t inflight = 0;
};

// The contract of /consume and /ack (docs/http-api.md) for one group on one partition.
class Model {
 public:
  explicit Model(bool ordering_key) : ordering_key_(ordering_key) {}
  void produce(int key, std::int64_t deliver_at) {
    ModelMessage& m = messages_.emplace_back();
    m.key = key;
    m.deliver_at = deliver_at;
  }
  std::int64_t now() const { return now_; }
  std::size_t size() const { return messages_.size(); }

  void subscribe(int id, std::int64_t timeout, std::size_t max_inflight) {
    subscribers_[id] = {timeout, max_inflight};
  }

  std::vector<std::pair<std::uint64_t, std::uint32_t>> take(int id, std::size_t max) {
    ModelSubscriber& sub = subscribers_.at(id);
    std::size_t count = std::min(max, sub.max_inflight - sub.inflight);
    std::vector<std::pair<std::uint64_t, std::uint32_t>> taken;
    // Redeliveries first, and the messages passed over that may go now, in offset order.
    for (std::uint64_t o = 0; o < messages_.size() && count > 0; ++o) {
      const auto state = messages_[o].state;
      if (state == ModelMessage::State::kReady || (state == ModelMessage::State::kWaiting && may_go(o))) {
        deliver(o, id, sub, taken);
        --count;
      }
    }
    for (; next_new_ < messages_.size() && count > 0; ++next_new_) {
      ModelMessage& m = messages_[next_new_];
      if (m.state != ModelMessage::State::kNew) continue;  // acknowledged early
      if (!may_go(next_new_)) {
        m.state = ModelMessage::State::kWaiting;  // the group goes on past it
        continue;
      }
      deliver(next_new_, id, sub, taken);
      --count;
    }
    return taken;
  }

  // Delayed messages not yet due that the group passed over (GroupStats::delayed counts those not
  // also behind their key).
  std::uint64_t delayed() const {
    std::uint64_t n = 0;
    for (std::uint64_t o = 0; o < messages_.size(); ++o) {
      n += messages_[o].state == ModelMessage::State::kWaiting && messages_[o].deliver_at > now_ &&
           first_of_key(o);
    }
    return n;
  }

  // Returns how many were newly acknowledged.
  std::size_t ack(std::uint64_t o) {
    ModelMessage& m = messages_[o];
    if (m.state == ModelMessage::State::kDone) return 0;
    if (m.state == ModelMessage::State::kInFlight) --subscribers_.at(m.holder).inflight;
    m.state = ModelMessage::State::kDone;
    return 1;
  }

  // False when the message is not in flight (a conflict).
  bool nack(std::uint64_t o, std::int64_t delay) {
    if (messages_[o].state != ModelMessage::State::kInFlight) return false;
    end_delivery(o, delay);
    return true;
  }

  bool touch(std::uint64_t o) {
    ModelMessage& m = messages_[o];
    if (m.state != ModelMessage::State::kInFlight) return false;
    m.due = now_ + subscribers_.at(m.holder).timeout;
    return true;
  }

  void advance(std::int64_t ms) {
    now_ += ms;
    for (std::uint64_t o = 0; o < messages_.size(); ++o) {
      ModelMessage& m = messages_[o];
      if (m.due > now_) continue;
      if (m.state == ModelMessage::State::kInFlight) {
        end_delivery(o, 0);
      } else if (m.state == ModelMessage::State::kDelayed) {
        m.state = ModelMessage::State::kReady;
      }
    }
  }

  void unsubscribe(int id) {
    for (std::uint64_t o = 0; o < messages_.size(); ++o) {
      if (messages_[o].state == ModelMessage::State::kInFlight && messages_[o].holder == id)
        end_delivery(o, 0);
    }
    subscribers_.erase(id);
  }

  // POST /seek to `target` (already clamped to [log start, next offset]): everything below counts as
  // acknowledged, everything from it on is delivered again, from delivery 1; nothing is in flight.
  void seek(std::uint64_t target) {
    for (std::uint64_t o = 0; o < messages_.size(); ++o) {
      if (o < target) {
        messages_[o].state = ModelMessage::State::kDone;
      } else {
        messages_[o].reset();
      }
    }
    for (auto& [id, sub] : subscribers_) sub.inflight = 0;
    next_new_ = target;
  }

  // Retention deleted everything below `log_start`: the group moves up; what was in flight or waiting
  // there is dropped, neither acknowledged by anyone nor dead-lettered.
  void forget_below(std::uint64_t log_start) {
    for (std::uint64_t o = 0; o < std::min<std::uint64_t>(log_start, messages_.size()); ++o) {
      ModelMessage& m = messages_[o];
      if (m.state == ModelMessage::State::kInFlight) --subscribers_.at(m.holder).inflight;
      m.state = ModelMessage::State::kDone;
    }
    next_new_ = std::max(next_new_, log_start);
  }

  // In-flight state is not durable: after a restart every unacknowledged message is new again.
  void restart() {
    for (auto& m : messages_) {
      if (m.state != ModelMessage::State::kDone) m.reset();
    }
    next_new_ = committed();
  }

  std::uint64_t committed() const {
    std::uint64_t c = 0;
    while (c < messages_.size() && messages_[c].state == ModelMessage::State::kDone) ++c;
    return c;
  }
  std::uint64_t inflight() const {
    std::uint64_t n = 0;
    for (const auto& m : messages_) n += m.state == ModelMessage::State::kInFlight;
    return n;
  }
  std::uint64_t dead_lettered() const { return dead_lettered_; }
  std::vector<int> subscriber_ids() const {
    std::vector<int> ids;
    for (const auto& [id, s] : subscribers_) ids.push_back(id);
    return ids;
  }

 private:
  // The contract: due (deliver_at passed), and with ordering=key no earlier message of its key
  // that is not done (in flight, waiting for redelivery, delayed, or itself waiting).
  bool may_go(std::uint64_t o) const { return messages_[o].deliver_at <= now_ && first_of_key(o); }
  bool first_of_key(std::uint64_t o) const {
    if (!ordering_key_ || messages_[o].key < 0) return true;
    for (std::uint64_t earlier = 0; earlier < o; ++earlier) {
      if (messages_[earlier].key == messages_[o].key &&
          messages_[earlier].state != ModelMessage::State::kDone)
        return false;
    }
    return true;
  }

  void deliver(std::uint64_t o, int id, ModelSubscriber& sub,
               std::vector<std::pair<std::uint64_t, std::uint32_t>>& out) {
    ModelMessage& m = messages_[o];
    m.state = ModelMessage::State::kInFlight;
    ++m.deliveries;
    m.holder = id;
    m.due = now_ + sub.timeout;
    ++sub.inflight;
    out.emplace_back(o, m.deliveries);
  }

  void end_delivery(std::uint64_t o, std::int64_t delay) {
    ModelMessage& m = messages_[o];
    --subscribers_.at(m.holder).inflight;
    if (m.deliveries >= kMaxDeliveries) {
      m.state = ModelMessage::State::kDone;  // dead-lettered, and acknowledged in the group
      ++dead_lettered_;
    } else if (delay > 0) {
      m.state = ModelMessage::State::kDelayed;
      m.due = now_ + delay;
    } else {
      m.state = ModelMessage::State::kReady;
    }
  }

  const bool ordering_key_;
  std::vector<ModelMessage> messages_;
  std::map<int, ModelSubscriber> subscribers_;
  std::uint64_t next_new_ = 0;
  std::int64_t now_ = 0;
  std::uint64_t dead_lettered_ = 0;
};

enum class Retention { kNone, kBySize, kAcknowledged };

// What the producer gives messages: nothing, or keys (4 of them, or none) and delays.
struct Producing {
  bool keys_and_delays = false;
  Ordering ordering = Ordering::kNone;
};

void run_model(unsigned seed, int steps, Retention retention, Producing producing = {}) {
  TempDir dir;
  Config config = broker_config(dir.path(), "events:1");
  config.groups.max_deliveries = kMaxDeliveries;
  if (retention != Retention::kNone) {
    config.store.segment_bytes = 400;  // about 8 of the messages below
    config.retention.check_interval = milliseconds(300);
    config.retention.bytes = retention == Retention::kBySize ? 1600 : 0;
    config.retention.acked = retention == Retention::kAcknowledged;
  }
  auto clock = std::make_shared<ManualClock>();
  auto broker = open_broker(config, clock);
  std::mt19937 random(seed);
  auto chance = [&](int percent) { return static_cast<int>(random() % 100) < percent; };
  Model model(producing.ordering == Ordering::kKey);
  {
    // The group comes into being with its ordering (an ack or a seek would create it with none).
    SubscribeOptions options;
    options.ordering = producing.ordering;
    subscribe(*broker, "g", options);
  }
  std::map<int, std::unique_ptr<Subscription>> subs;
  int next_sub = 0;
  std::uint64_t log_start = 0;

  for (int step = 0; step < steps; ++step) {
    CAPTURE(seed);
    CAPTURE(step);
    const int op = static_cast<int>(random() % 100);
    const std::uint64_t any_offset =
        model.size() == 0 ? 0 : random() % (model.size() + 1);  // sometimes one too far
    if (op < 15) {                                              // produce a batch of 1..3
      const std::size_t count = 1 + random() % 3;
      std::vector<Message> batch(count, message("{\"x\":1}"));
      for (auto& m : batch) {
        int key = -1;
        std::int64_t delay = 0;
        if (producing.keys_and_delays) {
          key = static_cast<int>(random() % 5) - 1;
          if (chance(20)) delay = 1 + static_cast<std::int64_t>(random() % 300);
        }
        if (key >= 0) m.key = std::string(1, static_cast<char>('a' + key));
        if (delay > 0) m.deliver_at_ms = clock->system_ms() + delay;
        model.produce(key, delay > 0 ? model.now() + delay : 0);
      }
      REQUIRE(broker->produce("events", batch, 0).ok());
      // A roll scheduled a retention run for now: let it run before time passes, as a timer thread
      // would (nothing else is due now), so that the model sees it before any visibility timeout.
      broker->fire_due_timers();
    } else if (op < 22 && subs.size() < 4) {  // subscribe
      const std::int64_t timeout = 50 * (1 + random() % 4);
      const std::size_t max_inflight = 1 + random() % 4;
      SubscribeOptions options;
      options.visibility_timeout = milliseconds(timeout);
      options.max_inflight = max_inflight;
      options.ordering = producing.ordering;
      subs[next_sub] = subscribe(*broker, "g", options);
      model.subscribe(next_sub++, timeout, max_inflight);
    } else if (op < 50 && !subs.empty()) {  // take
      auto it = std::next(subs.begin(), static_cast<long>(random() % subs.size()));
      const std::size_t max = 1 + random() % 5;
      std::vector<std::pair<std::uint64_t, std::uint32_t>> got;
      for (const auto& d : take_now(*it->second, max)) got.emplace_back(d.offset, d.delivery);
      CHECK(got == model.take(it->first, max));
    } else if (op < 65 && model.size() > 0) {  // ack
      const std::vector<std::string> ids{message_id(0, any_offset)};
      auto acked = broker->ack("events", 0, "g", ids);
      if (any_offset >= model.size()) {
        CHECK(acked.status().code() == ErrorCode::kNotFound);
      } else {
        REQUIRE(acked.ok());
        CHECK(*acked == model.ack(any_offset));
      }
    } else if (op < 72 && model.size() > 0) {  // nack, now or after a delay
      const std::int64_t delay = chance(50) ? 0 : 10 * (1 + random() % 10);
      auto status = broker->nack("events", 0, "g", message_id(0, any_offset), milliseconds(delay));
      if (any_offset >= model.size()) {
        CHECK(status.code() == ErrorCode::kNotFound);
      } else {
        CHECK(status.ok() == model.nack(any_offset, delay));
        if (!status.ok()) CHECK(status.code() == ErrorCode::kConflict);
      }
    } else if (op < 77 && model.size() > 0) {  // touch
      auto status = broker->touch("events", 0, "g", message_id(0, any_offset));
      if (any_offset >= model.size()) {
        CHECK(status.code() == ErrorCode::kNotFound);
      } else {
        CHECK(status.ok() == model.touch(any_offset));
      }
    } else if (op < 90) {  // time passes; timers fire
      const std::int64_t ms = random() % 120;
      clock->advance(milliseconds(ms));
      broker->fire_due_timers();
      model.advance(ms);
    } else if (op < 95) {  // a consumer goes away
      if (subs.empty()) continue;
      auto it = std::next(subs.begin(), static_cast<long>(random() % subs.size()));
      model.unsubscribe(it->first);
      subs.erase(it);
    } else if (op < 97) {  // seek: an offset (perhaps out of range), a time, a position
      SeekTarget target;
      std::uint64_t expected = 0;
      const int kind = static_cast<int>(random() % 6);
      if (kind < 3) {
        target.offset = random() % (model.size() + 3);
        expected = std::clamp(*target.offset, log_start, model.size());
      } else if (kind == 3) {
        target.timestamp_ms = 0;  // before every message: the log start
        expected = log_start;
      } else {
        target.position = kind == 4 ? SeekTarget::Position::kEarliest : SeekTarget::Position::kLatest;
        expected = kind == 4 ? log_start : model.size();
      }
      auto sought = broker->seek("events", 0, "g", target);
      REQUIRE_MESSAGE(sought.ok(), sought.status().to_string());
      CHECK(*sought == expected);
      model.seek(expected);
    } else {  // restart
      for (const int id : model.subscriber_ids()) model.unsubscribe(id);
      subs.clear();
      broker.reset();
      broker = open_broker(config, clock);
      model.restart();
    }
    auto stats = broker->stats("events");
    REQUIRE(stats.ok());
    // Retention ran (after a roll or on the timer, both driven by fire_due_timers): the model follows.
    const std::uint64_t start = (*stats)[0].partitions[0].log_start_offset;
    CHECK(start >= log_start);  // never back
    if (start > log_start) {
      if (retention == Retention::kAcknowledged)
        CHECK(start <= model.committed());  // nothing the group needs
      CHECK(retention != Retention::kNone);
      model.forget_below(start);
      log_start = start;
    }
    const auto& groups = (*stats)[0].partitions[0].groups;
    if (!groups.empty()) {
      CHECK(groups[0].committed_offset == model.committed());
      CHECK(groups[0].inflight == model.inflight());
      CHECK(groups[0].delayed == model.delayed());
      CHECK(groups[0].ordering == producing.ordering);
    }
  }
  // Ending the subscriptions ends their deliveries: one at its last delivery is dead-lettered.
  for (const int id : model.subscriber_ids()) model.unsubscribe(id);
  subs.clear();
  // Every dead letter reached the dead-letter topic exactly once.
  auto stats = broker->stats("events-dlq");
  const std::uint64_t letters = stats.ok() ? (*stats)[0].partitions[0].next_offset : 0;
  CHECK(letters == model.dead_lettered());
  if (retention != Retention::kNone) CHECK(log_start > 0u);  // the runs did delete
  MESSAGE("seed " << seed << ": " << model.size() << " messages, log start " << log_start << ", committed "
                  << model.committed() << ", " << model.dead_lettered() << " dead letters");
}

}  // namespace

TEST_CASE("ConsumerGroupMatchesTheReferenceModelUnderRandomOperations") {
  for (unsigned seed : {1u, 2u, 3u, 4u, 5u, 6u, 7u, 8u}) run_model(seed, 2500, Retention::kNone);
}

TEST_CASE("ConsumerGroupMatchesTheReferenceModelWhileRetentionDeletesBySize") {
  for (unsigned seed : {11u, 12u, 13u, 14u}) run_model(seed, 2500, Retention::kBySize);
}

TEST_CASE("ConsumerGroupMatchesTheReferenceModelWhileRetentionDeletesWhatWasAcknowledged") {
  for (unsigned seed : {21u, 22u, 23u, 24u}) run_model(seed, 2500, Retention::kAcknowledged);
}

TEST_CASE("ConsumerGroupMatchesTheReferenceModelWithKeysAndDelayedMessages") {
  for (unsigned seed : {31u, 32u, 33u, 34u}) run_model(seed, 2500, Retention::kNone, {true, Ordering::kNone});
}

TEST_CASE("ConsumerGroupMatchesTheReferenceModelWithOrderingByKey") {
  for (unsigned seed : {41u, 42u, 43u, 44u, 45u, 46u})
    run_model(seed, 2500, Retention::kNone, {true, Ordering::kKey});
}

TEST_CASE("ConsumerGroupMatchesTheReferenceModelWithOrderingByKeyWhileRetentionDeletes") {
  for (unsigned seed : {51u, 52u}) run_model(seed, 2500, Retention::kBySize, {true, Ordering::kKey});
  for (unsigned seed : {53u, 54u}) run_model(seed, 2500, Retention::kAcknowledged, {true, Ordering::kKey});
}

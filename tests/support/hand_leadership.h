// A stand-in for the replication layer (libmq/docs/replication.md section 7) that a test drives by
// hand: it leads while `leading`, keeps what the Broker publishes, and can stall, refuse or leave
// unconfirmed the next call of each kind. Its `host` applies records as a fetch thread would.
#pragma once

#include <doctest/doctest.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "groups/leadership.h"
#include "mq/status.h"

namespace mq::testing {

// Leads while `leading`; keeps what the Broker publishes.
class HandLeadership final : public detail::Leadership {
 public:
  Status start(std::vector<detail::ReplicatedTopic>, PartitionLookup lookup,
               detail::GroupStateHost* groups) override {
    host = groups;
    partitions = std::move(lookup);
    return {};
  }
  void stop() override {}
  Status check_leading(const std::string&, std::uint32_t) const override {
    return leading ? Status() : Status::not_owned("led by broker 1", 1);
  }
  Result<AppendResult> append(const std::string& topic, std::uint32_t partition,
                              const std::function<Result<AppendResult>()>& append) override {
    if (auto s = check_leading(topic, partition); !s.ok()) return s;
    auto appended = append();
    if (appended.ok() && unconfirm_next_append.exchange(false)) {
      // Stored here, its followers did not confirm it: the high watermark stays below it.
      auto copy = partitions(topic, partition);
      REQUIRE(copy.ok());
      (*copy)->set_read_limit(appended->offsets.front());
      return Status::unconfirmed("the followers did not confirm the write (injected)");
    }
    return appended;
  }
  Result<detail::StateTicket> publish_state(const std::string& topic, std::uint32_t partition,
                                            detail::GroupStateRecord record) override {
    if (auto s = check_leading(topic, partition); !s.ok()) return s;
    std::lock_guard lock(mutex);
    if (!publish_error.ok()) return publish_error;
    published.push_back(std::move(record));
    return detail::StateTicket{epoch, ++version};
  }
  // Like the replication layer: a ticket of another leader epoch can never be confirmed.
  Status confirm_state(const std::string&, std::uint32_t, detail::StateTicket ticket) override {
    pause_if(stall_next_confirm);
    if (!leading) return Status::unconfirmed("this broker stopped leading before its followers confirmed");
    std::lock_guard lock(mutex);
    if (ticket.epoch != epoch)
      return Status::unconfirmed("published in leader epoch " + std::to_string(ticket.epoch));
    return confirm;
  }
  // This broker lost its lease and led again at once (a new leader epoch, no apply_state between).
  void new_epoch() {
    std::lock_guard lock(mutex);
    ++epoch;
    version = 0;
  }
  Status state_writable(const std::string& topic, std::uint32_t partition) const override {
    if (auto s = check_leading(topic, partition); !s.ok()) return s;
    pause_if(stall_next_writable);
    if (writable_calls_left.fetch_sub(1) == 0) return Status::unavailable("too few in sync (injected)");
    std::lock_guard lock(mutex);
    return writable;
  }
  // The first thread to pass an armed `flag` is descheduled there until release().
  void pause_if(std::atomic<bool>& flag) const {
    if (!flag.exchange(false)) return;
    std::unique_lock lock(gate_mutex);
    stalled = true;
    gate.notify_all();
    gate.wait(lock, [&] { return released; });
  }
  void wait_stalled() {
    std::unique_lock lock(gate_mutex);
    gate.wait(lock, [&] { return stalled; });
  }
  void release() {
    std::lock_guard lock(gate_mutex);
    released = true;
    gate.notify_all();
  }
  mutable std::atomic<bool> stall_next_writable{false};
  mutable std::atomic<bool> stall_next_confirm{false};
  std::atomic<bool> unconfirm_next_append{false};
  mutable std::atomic<std::int64_t> writable_calls_left{-1};  // 0: the next state_writable fails
  PartitionLookup partitions;
  mutable std::mutex gate_mutex;
  mutable std::condition_variable gate;
  mutable bool stalled = false;   // GUARDED_BY(gate_mutex)
  mutable bool released = false;  // GUARDED_BY(gate_mutex)
  void set(Status HandLeadership::*outcome, Status status) {
    std::lock_guard lock(mutex);
    this->*outcome = std::move(status);
  }
  std::vector<detail::GroupStateRecord> take_published() {
    std::lock_guard lock(mutex);
    return std::exchange(published, {});
  }

  std::atomic<bool> leading{true};
  detail::GroupStateHost* host = nullptr;
  mutable std::mutex mutex;
  std::vector<detail::GroupStateRecord> published;  // GUARDED_BY(mutex)
  Status writable;                                  // GUARDED_BY(mutex)
  Status confirm;                                   // GUARDED_BY(mutex)
  Status publish_error;                             // GUARDED_BY(mutex)
  std::uint64_t epoch = 1;                          // GUARDED_BY(mutex)
  std::uint64_t version = 0;                        // GUARDED_BY(mutex)
};

}  // namespace mq::testing

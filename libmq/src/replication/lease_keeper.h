// A broker's etcd lease and how long it may trust it (libmq/docs/replication.md "Leases and the
// leader's clock"): keeps the lease alive every TTL/3 on its own thread and holds it valid until
//   valid_until = (when the last answered keepalive was sent) + TTL - margin,  margin = max(500 ms, TTL/5)
// etcd counts the TTL from when it received that keepalive, which was later, so etcd cannot expire
// the lease (and let another broker lead) before valid_until has passed here: a leader that checks
// valid() before each answer never answers after someone else could have taken over.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "mq/clock.h"
#include "mq/status.h"
#include "replication/etcd_client.h"

namespace mq::replication {

// Thread-safe.
class LeaseKeeper {
 public:
  struct Options {
    std::chrono::seconds ttl{5};
    // Called on the keeper's thread once the lease is known gone (etcd says so) or has lapsed
    // locally; the keeper then stops keeping it alive. Must not call stop().
    std::function<void()> on_lost;
  };

  // The margin kept below etcd's TTL.
  static std::chrono::milliseconds margin(std::chrono::seconds ttl);

  // Grants a lease and starts keeping it alive. The lease is valid from the grant's send time.
  static Result<std::unique_ptr<LeaseKeeper>> start(EtcdClient& etcd, Options options,
                                                    std::shared_ptr<Clock> clock = make_steady_clock());
  // Stops keeping it alive (revoke: and revokes it, deleting every key bound to it).
  ~LeaseKeeper();
  LeaseKeeper(const LeaseKeeper&) = delete;
  LeaseKeeper& operator=(const LeaseKeeper&) = delete;

  std::int64_t id() const { return id_; }
  bool valid() const;
  Clock::TimePoint valid_until() const;
  // Ends the keepalives; with `revoke`, revokes the lease too (a clean shutdown hands over at once).
  void stop(bool revoke);
  // For tests: keepalives stop being sent (as if this process were paused), not the thread.
  void hold_keepalives_for_test();

 private:
  LeaseKeeper(EtcdClient& etcd, Options options, std::shared_ptr<Clock> clock, std::int64_t id,
              Clock::TimePoint valid_until);
  void run();

  EtcdClient& etcd_;
  const Options options_;
  const std::shared_ptr<Clock> clock_;
  const std::int64_t id_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  Clock::TimePoint valid_until_;  // GUARDED_BY(mutex_)
  bool stopping_ = false;         // GUARDED_BY(mutex_)
  bool held_ = false;             // GUARDED_BY(mutex_)
  bool lost_ = false;             // GUARDED_BY(mutex_)
  std::thread thread_;
};

}  // namespace mq::replication

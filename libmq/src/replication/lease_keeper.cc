#include "replication/lease_keeper.h"

#include <algorithm>
#include <utility>

namespace mq::replication {

std::chrono::milliseconds LeaseKeeper::margin(std::chrono::seconds ttl) {
  return std::max<std::chrono::milliseconds>(std::chrono::milliseconds(500),
                                             std::chrono::duration_cast<std::chrono::milliseconds>(ttl) / 5);
}

Result<std::unique_ptr<LeaseKeeper>> LeaseKeeper::start(EtcdClient& etcd, Options options,
                                                        std::shared_ptr<Clock> clock) {
  if (options.ttl.count() < 2) return Status::invalid_argument("a lease needs a TTL of at least 2 s");
  const auto sent = clock->now();
  auto lease = etcd.grant_lease(options.ttl.count());
  if (!lease.ok()) return lease.status();
  // etcd may raise a TTL below its minimum; never trust more than was asked for.
  const auto ttl = std::min<std::chrono::seconds>(options.ttl, std::chrono::seconds(lease->ttl_seconds));
  const auto valid_until = sent + ttl - margin(options.ttl);
  std::unique_ptr<LeaseKeeper> keeper(
      new LeaseKeeper(etcd, std::move(options), std::move(clock), lease->id, valid_until));
  keeper->thread_ = std::thread([k = keeper.get()] { k->run(); });
  return keeper;
}

LeaseKeeper::LeaseKeeper(EtcdClient& etcd, Options options, std::shared_ptr<Clock> clock, std::int64_t id,
                         Clock::TimePoint valid_until)
    : etcd_(etcd),
      options_(std::move(options)),
      clock_(std::move(clock)),
      id_(id),
      valid_until_(valid_until) {}

LeaseKeeper::~LeaseKeeper() { stop(/*revoke=*/false); }

bool LeaseKeeper::valid() const {
  std::lock_guard lock(mutex_);
  return !lost_ && clock_->now() < valid_until_;
}

Clock::TimePoint LeaseKeeper::valid_until() const {
  std::lock_guard lock(mutex_);
  return valid_until_;
}

void LeaseKeeper::hold_keepalives_for_test() {
  std::lock_guard lock(mutex_);
  held_ = true;
}

void LeaseKeeper::stop(bool revoke) {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    lost_ = true;  // nothing may lean on it any more
    wake_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
  if (revoke) (void)etcd_.revoke_lease(id_);
}

void LeaseKeeper::run() {
  const auto period = std::chrono::duration_cast<std::chrono::milliseconds>(options_.ttl) / 3;
  const auto retry = std::chrono::milliseconds(200);
  auto next_wait = period;
  while (true) {
    {
      std::unique_lock lock(mutex_);
      // Real time, not clock_: the keepalives follow the wall of time etcd lives in.
      wake_.wait_for(lock, next_wait, [&] { return stopping_; });
      if (stopping_) return;
      if (clock_->now() >= valid_until_ && !lost_) {
        lost_ = true;  // lapsed without a renewal: gone as far as this broker may trust
        lock.unlock();
        if (options_.on_lost) options_.on_lost();
        return;
      }
      if (held_) {
        next_wait = retry;
        continue;
      }
    }
    const auto sent = clock_->now();
    auto ttl = etcd_.keep_alive(id_);
    std::unique_lock lock(mutex_);
    if (stopping_) return;
    if (!ttl.ok()) {
      next_wait = retry;  // etcd unreachable: try again soon; the lease lapses by itself meanwhile
      continue;
    }
    if (*ttl <= 0) {
      lost_ = true;
      lock.unlock();
      if (options_.on_lost) options_.on_lost();
      return;
    }
    const auto granted = std::min<std::chrono::seconds>(options_.ttl, std::chrono::seconds(*ttl));
    valid_until_ = std::max(valid_until_, sent + granted - margin(options_.ttl));
    next_wait = period;
  }
}

}  // namespace mq::replication

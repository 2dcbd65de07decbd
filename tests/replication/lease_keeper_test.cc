// A broker's lease (libmq/docs/replication.md "Leases and the leader's clock"), against a real etcd:
// kept alive past its TTL; when keepalives stop, this broker stops trusting it before etcd expires
// it (fencing); a lease revoked or stopped is gone at once.
#include "replication/lease_keeper.h"

#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>

#include "running_etcd.h"

namespace {

using namespace std::chrono_literals;
using mq::replication::EtcdClient;
using mq::replication::LeaseKeeper;
using mq::replication::WatchEvent;
using SteadyClock = std::chrono::steady_clock;

std::unique_ptr<EtcdClient> client_of(const mq::testing::RunningEtcd& etcd) {
  auto client = EtcdClient::create({etcd.url()});
  REQUIRE_MESSAGE(client.ok(), client.status().to_string());
  return std::move(*client);
}

// Remembers when a key was deleted, as a watch saw it.
class DeletionSeen {
 public:
  void seen(const std::vector<WatchEvent>& events) {
    for (const auto& e : events) {
      if (e.type != WatchEvent::Type::kDelete) continue;
      std::lock_guard lock(mutex_);
      if (!at_) at_ = SteadyClock::now();
      changed_.notify_all();
    }
  }
  std::optional<SteadyClock::time_point> wait(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, timeout, [&] { return at_.has_value(); });
    return at_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::optional<SteadyClock::time_point> at_;
};

// Signalled once by on_lost.
struct LostFlag {
  std::mutex mutex;
  std::condition_variable changed;
  bool lost = false;
  std::function<void()> callback() {
    return [this] {
      std::lock_guard lock(mutex);
      lost = true;
      changed.notify_all();
    };
  }
  bool wait(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex);
    return changed.wait_for(lock, timeout, [&] { return lost; });
  }
};

}  // namespace

TEST_CASE("lease keeper: the margin below etcd's TTL") {
  CHECK(LeaseKeeper::margin(2s) == 500ms);
  CHECK(LeaseKeeper::margin(5s) == 1000ms);
  CHECK(LeaseKeeper::margin(30s) == 6000ms);
}

TEST_CASE("lease keeper: a kept lease outlives its TTL, stopped with revoke, its keys go at once") {
  mq::testing::RunningEtcd etcd;
  auto client = client_of(etcd);
  auto keeper = LeaseKeeper::start(*client, LeaseKeeper::Options{2s, {}});
  REQUIRE_MESSAGE(keeper.ok(), keeper.status().to_string());
  REQUIRE((*keeper)->valid());
  REQUIRE(client->put("/t/alive", "1", (*keeper)->id()).ok());
  DeletionSeen deleted;
  auto watch = client->watch_prefix(
      "/t/", 0, [&](const auto& events) { deleted.seen(events); }, [](const auto&) {});
  // Two and a half TTLs pass with the key still there and the lease trusted all along.
  CHECK_FALSE(deleted.wait(5s).has_value());
  CHECK((*keeper)->valid());
  auto still = client->get("/t/alive");
  REQUIRE(still.ok());
  CHECK(still->kv.has_value());
  const auto stopped_at = SteadyClock::now();
  (*keeper)->stop(/*revoke=*/true);
  CHECK_FALSE((*keeper)->valid());
  const auto gone = deleted.wait(5s);
  REQUIRE(gone.has_value());
  CHECK(*gone - stopped_at < 1s);
}

TEST_CASE("lease keeper: without keepalives, the broker stops trusting its lease before etcd expires it") {
  mq::testing::RunningEtcd etcd;
  auto client = client_of(etcd);
  LostFlag lost;
  auto keeper = LeaseKeeper::start(*client, LeaseKeeper::Options{3s, lost.callback()});
  REQUIRE_MESSAGE(keeper.ok(), keeper.status().to_string());
  REQUIRE(client->put("/t/leader", "me", (*keeper)->id()).ok());
  DeletionSeen deleted;
  auto watch = client->watch_prefix(
      "/t/", 0, [&](const auto& events) { deleted.seen(events); }, [](const auto&) {});
  (*keeper)->hold_keepalives_for_test();  // this broker is paused, as far as etcd can tell
  const auto trusted_until = (*keeper)->valid_until();
  REQUIRE(lost.wait(10s));
  CHECK_FALSE((*keeper)->valid());
  CHECK(SteadyClock::now() >= trusted_until);
  const auto expired = deleted.wait(10s);
  REQUIRE(expired.has_value());
  // The fencing margin: etcd let the key go at least the margin after this broker stopped trusting it.
  CHECK(*expired >= trusted_until + LeaseKeeper::margin(3s) - 100ms);
  MESSAGE("stopped trusting the lease "
          << std::chrono::duration_cast<std::chrono::milliseconds>(*expired - trusted_until).count()
          << " ms before etcd expired it");
}

TEST_CASE("lease keeper: a lease revoked behind its back is reported lost") {
  mq::testing::RunningEtcd etcd;
  auto client = client_of(etcd);
  LostFlag lost;
  auto keeper = LeaseKeeper::start(*client, LeaseKeeper::Options{3s, lost.callback()});
  REQUIRE_MESSAGE(keeper.ok(), keeper.status().to_string());
  REQUIRE(client->revoke_lease((*keeper)->id()).ok());
  REQUIRE(lost.wait(5s));  // at the next keepalive, a second later
  CHECK_FALSE((*keeper)->valid());
}

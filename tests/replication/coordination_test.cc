// Leadership in etcd (libmq/docs/replication.md section 3), against a real etcd: one leader per
// epoch however many replicas race, only ISR members elected, the leader key gone with its lease,
// ISR changes only by the current leader, and stepping down.
#include "replication/coordination.h"

#include <doctest/doctest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "running_etcd.h"

namespace {

using mq::replication::ClusterKeys;
using mq::replication::decode_partition_state;
using mq::replication::EtcdClient;
using mq::replication::PartitionCoordinator;
using mq::replication::PartitionState;
using mq::replication::ReplicaId;

std::unique_ptr<EtcdClient> client_of(const mq::testing::RunningEtcd& etcd) {
  auto client = EtcdClient::create({etcd.url()});
  REQUIRE_MESSAGE(client.ok(), client.status().to_string());
  return std::move(*client);
}

std::int64_t lease_of(EtcdClient& etcd, std::int64_t ttl = 30) {
  auto lease = etcd.grant_lease(ttl);
  REQUIRE_MESSAGE(lease.ok(), lease.status().to_string());
  return lease->id;
}

}  // namespace

TEST_CASE("coordination: placement, keys and values") {
  CHECK(mq::replication::replicas_of(0, 3, 3) == std::vector<std::uint32_t>{0, 1, 2});
  CHECK(mq::replication::replicas_of(4, 3, 2) == std::vector<std::uint32_t>{1, 2});
  CHECK(mq::replication::replicas_of(5, 3, 7) ==
        std::vector<std::uint32_t>{2, 0, 1});  // at most every broker
  const ClusterKeys keys("/mq/");
  CHECK(keys.state("orders", 3) == "/mq/partitions/orders/3/state");
  CHECK(keys.broker(2) == "/mq/brokers/2");
  const auto parsed = keys.parse_partition_key("/mq/partitions/orders-dlq/12/leader");
  REQUIRE(parsed.has_value());
  CHECK(parsed->topic == "orders-dlq");
  CHECK(parsed->partition == 12);
  CHECK(parsed->is_leader);
  for (const char* other :
       {"/mq/partitions/orders/x/state", "/mq/partitions/orders/3/other", "/mq/partitions//3/state",
        "/mq/partitions/orders/3", "/mqx/partitions/orders/3/state"}) {
    CAPTURE(other);
    CHECK_FALSE(keys.parse_partition_key(other).has_value());
  }
  CHECK(keys.parse_broker_key("/mq/brokers/7") == 7u);
  CHECK_FALSE(keys.parse_broker_key("/mq/brokers/7x").has_value());

  const PartitionState state{4, 2, {{2, "d2"}, {0, "d0"}}};
  auto round_trip = decode_partition_state(mq::replication::encode(state));
  REQUIRE(round_trip.ok());
  CHECK(*round_trip == state);
  for (const char* bad :
       {"", "[]", R"({"epoch":-1,"leader":0,"isr":[]})", R"({"epoch":1,"leader":-2,"isr":[]})",
        R"({"epoch":1,"leader":0,"isr":[{"broker":0}]})", R"({"epoch":1,"leader":0})"}) {
    CAPTURE(bad);
    CHECK(decode_partition_state(bad).status().code() == mq::ErrorCode::kCorruption);
  }
}

TEST_CASE("coordination: one winner per epoch however many replicas race") {
  mq::testing::RunningEtcd etcd;
  auto client = client_of(etcd);
  const ClusterKeys keys("/mq");
  const std::vector<ReplicaId> replicas = {{0, "a"}, {1, "b"}, {2, "c"}};
  PartitionCoordinator coordinator(*client, keys, "events", 5);
  auto created = coordinator.create_state(replicas[0]);
  REQUIRE(created.ok());
  REQUIRE(created->state.has_value());
  CHECK(created->state->epoch == 0);
  CHECK(created->state->isr == std::vector<ReplicaId>{replicas[0]});
  // Creating again changes nothing.
  auto again = coordinator.create_state(replicas[1]);
  REQUIRE(again.ok());
  CHECK(again->state->isr == std::vector<ReplicaId>{replicas[0]});

  // Put all three in the ISR, as the first leader would once they caught up.
  {
    const auto lease = lease_of(*client);
    auto won = coordinator.try_lead(*created, replicas[0], lease);
    REQUIRE(won.ok());
    REQUIRE(won->won);
    auto changed = coordinator.change_isr(won->view, won->view.leader_create_revision, replicas);
    REQUIRE(changed.ok());
    REQUIRE(*changed);
    REQUIRE(client->revoke_lease(lease).ok());  // the leader dies
  }
  // Rounds of elections: every replica races from the same view; exactly one wins each epoch.
  for (std::uint64_t round = 0; round < 10; ++round) {
    auto seen = coordinator.read();
    REQUIRE(seen.ok());
    REQUIRE_FALSE(seen->leader.has_value());
    std::vector<std::int64_t> leases;
    for (std::size_t i = 0; i < replicas.size(); ++i) leases.push_back(lease_of(*client));
    std::atomic<int> winners{0};
    std::vector<std::thread> racers;
    for (std::size_t i = 0; i < replicas.size(); ++i) {
      racers.emplace_back([&, i] {
        auto election = coordinator.try_lead(*seen, replicas[i], leases[i]);
        REQUIRE(election.ok());
        if (election->won) ++winners;
        // Won or lost, the view is the winner's.
        CHECK(election->view.state->epoch == seen->state->epoch + 1);
        CHECK(election->view.leader.has_value());
      });
    }
    for (auto& t : racers) t.join();
    CHECK(winners == 1);
    auto after = coordinator.read();
    REQUIRE(after.ok());
    CHECK(after->leader->epoch == after->state->epoch);
    CHECK(after->state->leader == static_cast<std::int64_t>(after->leader->broker));
    // A stale view (from before this election) can win nothing, even once the leader is gone.
    for (auto lease : leases) REQUIRE(client->revoke_lease(lease).ok());
    auto stale = coordinator.try_lead(*seen, replicas[0], lease_of(*client));
    REQUIRE(stale.ok());
    CHECK_FALSE(stale->won);
  }
}

TEST_CASE("coordination: only the ISR is electable, and only the leader changes the ISR") {
  mq::testing::RunningEtcd etcd;
  auto client = client_of(etcd);
  PartitionCoordinator coordinator(*client, ClusterKeys("/mq"), "orders", 0);
  const ReplicaId a{0, "a"}, b{1, "b"}, b_new_disk{1, "b2"};
  auto view = coordinator.create_state(a);
  REQUIRE(view.ok());
  auto outsider = coordinator.try_lead(*view, b, lease_of(*client));
  REQUIRE(outsider.ok());
  CHECK_FALSE(outsider->won);
  auto leader = coordinator.try_lead(*view, a, lease_of(*client));
  REQUIRE(leader.ok());
  REQUIRE(leader->won);
  const auto mine = leader->view.leader_create_revision;
  auto grown = coordinator.change_isr(leader->view, mine, {a, b});
  REQUIRE(grown.ok());
  CHECK(*grown);
  // The same change from the old view fails: the state moved.
  auto stale = coordinator.change_isr(leader->view, mine, {a});
  REQUIRE(stale.ok());
  CHECK_FALSE(*stale);
  // Not the leader: refused.
  auto now = coordinator.read();
  REQUIRE(now.ok());
  auto not_leader = coordinator.change_isr(*now, mine + 1000, {b});
  REQUIRE(not_leader.ok());
  CHECK_FALSE(*not_leader);
  // b with a new disk is not the b of the ISR.
  REQUIRE(coordinator.step_down(mine).ok());
  now = coordinator.read();
  REQUIRE(now.ok());
  CHECK_FALSE(now->leader.has_value());
  auto wiped = coordinator.try_lead(*now, b_new_disk, lease_of(*client));
  REQUIRE(wiped.ok());
  CHECK_FALSE(wiped->won);
  auto b_leads = coordinator.try_lead(*now, b, lease_of(*client));
  REQUIRE(b_leads.ok());
  CHECK(b_leads->won);
  CHECK(b_leads->view.state->epoch == 2);
  // a's old leader key revision no longer steps anyone down.
  REQUIRE(coordinator.step_down(mine).ok());
  now = coordinator.read();
  REQUIRE(now.ok());
  CHECK(now->leader->broker == 1u);
}

// A replicated broker's fetch threads, one per partition it follows, apply their leaders' group
// state at the same time (libmq/docs/replication.md section 7). A follower leads nothing at open,
// so the first of those writes may be the broker's first use of its files: it must not matter
// which thread comes first. Run under ThreadSanitizer, which sees any unsynchronised first use.
#include <doctest/doctest.h>

#include <barrier>
#include <thread>

#include "broker_helpers.h"
#include "hand_leadership.h"
#include "manual_clock.h"
#include "temp_dir.h"

using namespace mq;
using namespace mq::testing;

namespace {

struct ReplicatedBroker {
  Config config() const {
    Config config = broker_config(dir.path(), "events:1");
    config.groups.max_deliveries = 1;
    return config;
  }
  // (Re)opens the broker on this directory, leading every partition or none.
  void open(bool leads) {
    broker.reset();
    leadership = std::make_shared<HandLeadership>();
    leadership->leading = leads;
    auto opened = Broker::open(config(), std::make_shared<ManualClock>(), leadership);
    REQUIRE_MESSAGE(opened.ok(), opened.status().to_string());
    broker = std::move(opened.value());
  }
  TempDir dir;
  std::shared_ptr<HandLeadership> leadership;
  std::unique_ptr<Broker> broker;
};

}  // namespace

TEST_CASE(
    "A follower's first group records and redrive position, applied by two fetch threads at once, "
    "are both kept") {
  // What a leader publishes when a group is made and acknowledges its first message.
  ReplicatedBroker leader;
  leader.open(/*leads=*/true);
  produce_numbers(*leader.broker, 2);
  auto sub = subscribe(*leader.broker, "workers");
  REQUIRE(ack_all(*leader.broker, take_now(*sub, 1), "workers") == 1);
  const auto group_records = leader.leadership->take_published();
  REQUIRE_FALSE(group_records.empty());
  const std::vector<detail::GroupStateRecord> redrive_position{
      {std::string(detail::kRedrivePositionName), R"({"position":3})"}};

  for (int round = 0; round < 8; ++round) {
    CAPTURE(round);
    // The follower holds the leader's messages (as replication would have copied them), written
    // before it opens: it has touched no file of its groups yet.
    ReplicatedBroker follower;
    produce_numbers(*open_broker(follower.config()), 2);
    follower.open(/*leads=*/false);
    detail::GroupStateHost* host = follower.leadership->host;
    std::barrier start(2);
    Status group_applied, position_applied;
    std::thread events_fetcher([&] {
      start.arrive_and_wait();
      group_applied = host->apply_state("events", 0, false, group_records);
    });
    std::thread letters_fetcher([&] {
      start.arrive_and_wait();
      position_applied = host->apply_state("events-dlq", 0, false, redrive_position);
    });
    events_fetcher.join();
    letters_fetcher.join();
    REQUIRE_MESSAGE(group_applied.ok(), group_applied.to_string());
    REQUIRE_MESSAGE(position_applied.ok(), position_applied.to_string());

    // Both survive a restart. (The old defect, one thread's file system replaced and freed while the
    // other used it, showed only under ASan or TSan: a freed one kept working while its files lived.)
    follower.open(/*leads=*/true);
    auto snapshot = follower.leadership->host->state_snapshot("events-dlq", 0);
    REQUIRE_MESSAGE(snapshot.ok(), snapshot.status().to_string());
    CHECK(*snapshot == redrive_position);
    auto stats = follower.broker->stats("events");
    REQUIRE(stats.ok());
    const auto& groups = (*stats)[0].partitions.at(0).groups;
    REQUIRE(groups.size() == 1);
    CHECK(groups[0].group == "workers");
    CHECK(groups[0].committed_offset == 1);
  }
}

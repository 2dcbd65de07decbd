// The etcd client (libmq/src/replication/etcd_client.h) against a real etcd 3.4 per test case, through
// its JSON gateway: key-values, transactions (both branches, racing create-only), leases (keepalive,
// revoke, expiry), watches (order, revisions, restarts of etcd, compaction, a prompt stop), several
// endpoints, a paused etcd, and answers that are not what etcd sends.
#include "replication/etcd_client.h"

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <latch>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "running_etcd.h"

namespace {

using namespace std::chrono_literals;
using mq::ErrorCode;
using mq::replication::Compare;
using mq::replication::CompareResult;
using mq::replication::EtcdClient;
using mq::replication::EtcdOptions;
using mq::replication::EtcdWatch;
using mq::replication::TxnOp;
using mq::replication::WatchError;
using mq::replication::WatchEvent;
using mq::testing::RunningEtcd;
using Clock = std::chrono::steady_clock;

std::unique_ptr<EtcdClient> connect(std::vector<std::string> endpoints, EtcdOptions options = {}) {
  auto client = EtcdClient::create(std::move(endpoints), options);
  REQUIRE_MESSAGE(client.ok(), client.status().to_string());
  return std::move(client).value();
}

std::unique_ptr<EtcdClient> connect(const RunningEtcd& etcd, EtcdOptions options = {}) {
  return connect(std::vector<std::string>{etcd.url()}, options);
}

template <typename T>
T must(mq::Result<T> result) {
  REQUIRE_MESSAGE(result.ok(), result.status().to_string());
  return std::move(result).value();
}

void must(const mq::Status& status) { REQUIRE_MESSAGE(status.ok(), status.to_string()); }

// What a watch delivered, for a test to await.
class WatchLog {
 public:
  EtcdWatch::EventsCallback on_events() {
    return [this](const std::vector<WatchEvent>& batch) {
      std::lock_guard lock(mutex_);
      events_.insert(events_.end(), batch.begin(), batch.end());
      ++batches_;
      changed_.notify_all();
    };
  }
  EtcdWatch::ErrorCallback on_error() {
    return [this](const WatchError& error) {
      std::lock_guard lock(mutex_);
      errors_.push_back(error);
      changed_.notify_all();
    };
  }
  // Waits (up to `timeout`) until `done` holds of the events seen so far; returns them.
  std::vector<WatchEvent> await(const std::function<bool(const std::vector<WatchEvent>&)>& done,
                                std::chrono::milliseconds timeout = 20s) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, timeout, [&] { return done(events_); });
    return events_;
  }
  std::vector<WatchEvent> await_count(std::size_t count, std::chrono::milliseconds timeout = 20s) {
    return await([&](const auto& events) { return events.size() >= count; }, timeout);
  }
  std::vector<WatchError> await_error(std::chrono::milliseconds timeout = 20s) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, timeout, [&] { return !errors_.empty(); });
    return errors_;
  }
  std::vector<WatchEvent> events() {
    std::lock_guard lock(mutex_);
    return events_;
  }
  std::vector<WatchError> errors() {
    std::lock_guard lock(mutex_);
    return errors_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<WatchEvent> events_;  // GUARDED_BY(mutex_)
  std::vector<WatchError> errors_;  // GUARDED_BY(mutex_)
  int batches_ = 0;                 // GUARDED_BY(mutex_)
};

std::unique_ptr<EtcdWatch> watch(EtcdClient& client, const std::string& prefix, std::int64_t from,
                                 WatchLog& log) {
  return client.watch_prefix(prefix, from, log.on_events(), log.on_error());
}

// A URL on which nothing listens: connections to it are refused.
std::string refusing_url() { return "http://127.0.0.1:" + std::to_string(mq::testing::free_port()); }

TEST_CASE("etcd client: put, get, get_prefix and delete_key") {
  RunningEtcd etcd;
  auto client = connect(etcd);

  const auto r1 = must(client->put("/t/a", "1"));
  CHECK(r1 > 0);
  auto a = must(client->get("/t/a"));
  REQUIRE(a.kv.has_value());
  CHECK(a.kv->key == "/t/a");
  CHECK(a.kv->value == "1");
  CHECK(a.kv->create_revision == r1);
  CHECK(a.kv->mod_revision == r1);
  CHECK(a.kv->version == 1);
  CHECK(a.kv->lease == 0);
  CHECK(a.revision == r1);

  auto missing = must(client->get("/t/missing"));
  CHECK_FALSE(missing.kv.has_value());
  CHECK(missing.revision == r1);

  // Every byte value survives base64 both ways; an empty value too.
  std::string bytes;
  for (int b = 0; b < 256; ++b) bytes += static_cast<char>(b);
  const auto r2 = must(client->put("/t/b", bytes));
  const auto r3 = must(client->put("/t/c", ""));
  must(client->put("/t0", "outside"));
  must(client->put("/s", "outside"));
  auto under = must(client->get_prefix("/t/"));
  REQUIRE(under.kvs.size() == 3);
  CHECK(under.kvs[0].key == "/t/a");
  CHECK(under.kvs[1].key == "/t/b");
  CHECK(under.kvs[1].value == bytes);
  CHECK(under.kvs[1].mod_revision == r2);
  CHECK(under.kvs[2].value.empty());
  CHECK(under.kvs[2].mod_revision == r3);
  CHECK(under.revision == r3 + 2);
  CHECK(must(client->get_prefix("")).kvs.size() == 5);
  CHECK(must(client->get_prefix("/nothing/")).kvs.empty());

  // A prefix ending in 0xff bytes ends where the byte before them is raised.
  must(client->put("/x\xff", "1"));
  must(client->put("/x\xff\x01", "2"));
  must(client->put("/y", "3"));
  auto ff = must(client->get_prefix("/x\xff"));
  REQUIRE(ff.kvs.size() == 2);
  CHECK(ff.kvs[1].key == "/x\xff\x01");

  // A second put keeps create_revision and raises version.
  const auto r4 = must(client->put("/t/a", "2"));
  a = must(client->get("/t/a"));
  CHECK(a.kv->value == "2");
  CHECK(a.kv->create_revision == r1);
  CHECK(a.kv->mod_revision == r4);
  CHECK(a.kv->version == 2);

  auto deleted = must(client->delete_key("/t/a"));
  CHECK(deleted.deleted == 1);
  CHECK(deleted.revision == r4 + 1);
  CHECK(must(client->delete_key("/t/a")).deleted == 0);
  CHECK_FALSE(must(client->get("/t/a")).kv.has_value());

  CHECK(client->get("").status().code() == ErrorCode::kInvalidArgument);
  CHECK(client->put("", "v").status().code() == ErrorCode::kInvalidArgument);
}

TEST_CASE("etcd client: a create-only txn succeeds once and its failure branch reads the winner") {
  RunningEtcd etcd;
  auto client = connect(etcd);

  auto first = must(client->txn({Compare::absent("/p/leader")}, {TxnOp::put("/p/leader", "me")},
                                {TxnOp::range("/p/leader")}));
  CHECK(first.succeeded);
  CHECK(first.revision > 0);
  REQUIRE(first.responses.size() == 1);
  CHECK(first.responses[0].type == TxnOp::Type::kPut);

  auto second = must(client->txn({Compare::absent("/p/leader")}, {TxnOp::put("/p/leader", "other")},
                                 {TxnOp::range("/p/leader"), TxnOp::range("/p/nobody")}));
  CHECK_FALSE(second.succeeded);
  CHECK(second.revision == first.revision);
  REQUIRE(second.responses.size() == 2);
  CHECK(second.responses[0].type == TxnOp::Type::kRange);
  REQUIRE(second.responses[0].kvs.size() == 1);
  CHECK(second.responses[0].kvs[0].value == "me");
  CHECK(second.responses[0].kvs[0].create_revision == first.revision);
  CHECK(second.responses[0].kvs[0].version == 1);
  CHECK(second.responses[1].kvs.empty());
  CHECK(must(client->get("/p/leader")).kv->value == "me");

  // An empty failure branch answers no responses.
  auto third = must(client->txn({Compare::absent("/p/leader")}, {TxnOp::put("/p/leader", "x")}, {}));
  CHECK_FALSE(third.succeeded);
  CHECK(third.responses.empty());
}

TEST_CASE("etcd client: a txn comparing mod_revision applies only to the revision it read") {
  RunningEtcd etcd;
  auto client = connect(etcd);
  must(client->put("/p/0/state", "{\"epoch\":0}"));
  const auto state = must(client->get("/p/0/state"));
  const auto read_at = state.kv->mod_revision;

  auto elect = [&] {
    return must(client->txn(
        {Compare::absent("/p/0/leader"), Compare::mod_revision("/p/0/state", CompareResult::kEqual, read_at)},
        {TxnOp::put("/p/0/leader", "{\"broker\":1}"), TxnOp::put("/p/0/state", "{\"epoch\":1}")},
        {TxnOp::range("/p/0/leader"), TxnOp::range("/p/0/state"), TxnOp::range_prefix("/p/")}));
  };
  auto won = elect();
  CHECK(won.succeeded);
  REQUIRE(won.responses.size() == 2);
  CHECK(won.revision == read_at + 1);  // both puts in one revision

  must(client->delete_key("/p/0/leader"));  // the leader is gone, but state has moved on
  auto lost = elect();
  CHECK_FALSE(lost.succeeded);
  REQUIRE(lost.responses.size() == 3);
  CHECK(lost.responses[0].kvs.empty());
  REQUIRE(lost.responses[1].kvs.size() == 1);
  CHECK(lost.responses[1].kvs[0].value == "{\"epoch\":1}");
  CHECK(lost.responses[1].kvs[0].mod_revision == won.revision);
  CHECK(lost.responses[2].kvs.size() == 1);  // only state is left under /p/

  SUBCASE("version, value, lease and create_revision compares; a delete in a txn") {
    const auto lease = must(client->grant_lease(30));
    must(client->put("/p/1", "v", lease.id));
    const auto kv = *must(client->get("/p/1")).kv;
    auto all_hold = must(client->txn({Compare::version("/p/1", CompareResult::kEqual, 1),
                                      Compare::version("/p/1", CompareResult::kLess, 2),
                                      Compare::value_is("/p/1", CompareResult::kEqual, "v"),
                                      Compare::value_is("/p/1", CompareResult::kNotEqual, "w"),
                                      Compare::lease("/p/1", CompareResult::kEqual, lease.id),
                                      Compare::create_revision("/p/1", CompareResult::kGreater, 0),
                                      Compare::mod_revision("/p/1", CompareResult::kEqual, kv.mod_revision)},
                                     {TxnOp::del("/p/1"), TxnOp::del("/p/none")}, {}));
    CHECK(all_hold.succeeded);
    REQUIRE(all_hold.responses.size() == 2);
    CHECK(all_hold.responses[0].type == TxnOp::Type::kDelete);
    CHECK(all_hold.responses[0].deleted == 1);
    CHECK(all_hold.responses[1].deleted == 0);
    CHECK_FALSE(must(client->get("/p/1")).kv.has_value());

    auto one_fails = must(client->txn({Compare::value_is("/p/0/state", CompareResult::kEqual, "other")},
                                      {TxnOp::del("/p/0/state")}, {TxnOp::range("/p/0/state")}));
    CHECK_FALSE(one_fails.succeeded);
    CHECK(one_fails.responses.at(0).kvs.size() == 1);
  }
}

TEST_CASE("etcd client: threads racing the same create-only txn: exactly one wins each time") {
  RunningEtcd etcd;
  auto client = connect(etcd);
  constexpr int kThreads = 4;
  for (int round = 0; round < 20; ++round) {
    const std::string key = "/race/" + std::to_string(round);
    std::latch start(kThreads);
    std::vector<mq::Result<mq::replication::TxnResult>> results(kThreads, mq::Status::unavailable("not run"));
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        start.arrive_and_wait();
        results[t] = client->txn({Compare::absent(key)}, {TxnOp::put(key, "thread " + std::to_string(t))},
                                 {TxnOp::range(key)});
      });
    }
    for (auto& thread : threads) thread.join();
    int winners = 0;
    std::string winner;
    for (int t = 0; t < kThreads; ++t) {
      REQUIRE_MESSAGE(results[t].ok(), results[t].status().to_string());
      if (results[t]->succeeded) {
        ++winners;
        winner = "thread " + std::to_string(t);
      }
    }
    REQUIRE(winners == 1);
    for (int t = 0; t < kThreads; ++t) {
      if (results[t]->succeeded) continue;
      REQUIRE(results[t]->responses.size() == 1);
      REQUIRE(results[t]->responses[0].kvs.size() == 1);
      CHECK(results[t]->responses[0].kvs[0].value == winner);
    }
    CHECK(must(client->get(key)).kv->value == winner);
  }
}

TEST_CASE("etcd client: keepalives keep a leased key alive past its TTL") {
  RunningEtcd etcd;
  auto client = connect(etcd);
  const auto lease = must(client->grant_lease(2));
  CHECK(lease.id != 0);
  CHECK(lease.ttl_seconds >= 2);
  must(client->put("/lease/key", "v", lease.id));
  CHECK(must(client->get("/lease/key")).kv->lease == lease.id);

  // Renew every 500 ms (a period, not an event to await) for 2.5 TTLs.
  const auto until = Clock::now() + std::chrono::milliseconds(lease.ttl_seconds * 2500);
  while (Clock::now() < until) {
    const auto ttl = must(client->keep_alive(lease.id));
    CHECK(ttl > 0);
    CHECK(ttl <= lease.ttl_seconds);
    std::this_thread::sleep_for(500ms);
  }
  auto kv = must(client->get("/lease/key"));
  REQUIRE(kv.kv.has_value());
  CHECK(kv.kv->lease == lease.id);
}

TEST_CASE("etcd client: keepalive of a revoked lease returns 0, and its keys are gone") {
  RunningEtcd etcd;
  auto client = connect(etcd);
  const auto lease = must(client->grant_lease(30));
  CHECK(must(client->keep_alive(lease.id)) == 30);
  must(client->put("/lease/a", "1", lease.id));
  must(client->put("/lease/b", "2", lease.id));
  must(client->revoke_lease(lease.id));
  CHECK(must(client->get_prefix("/lease/")).kvs.empty());
  CHECK(must(client->keep_alive(lease.id)) == 0);
  CHECK(must(client->keep_alive(12345)) == 0);  // never granted
  CHECK(client->revoke_lease(lease.id).code() == ErrorCode::kNotFound);
  auto put = client->put("/lease/c", "3", lease.id);
  CHECK(put.status().code() == ErrorCode::kNotFound);
  CHECK(put.status().message().find("lease not found") != std::string::npos);
  CHECK(client->grant_lease(0).status().code() == ErrorCode::kInvalidArgument);
}

TEST_CASE("etcd client: a leased key disappears when its lease expires, and a watch sees the DELETE") {
  RunningEtcd etcd;
  auto client = connect(etcd);
  const auto lease = must(client->grant_lease(1));  // etcd may raise it to its minimum
  const auto put_at = must(client->put("/expire/key", "v", lease.id));
  WatchLog log;
  auto w = watch(*client, "/expire/", put_at, log);
  const auto started = Clock::now();
  auto events = log.await_count(2, std::chrono::seconds(lease.ttl_seconds + 15));
  REQUIRE(events.size() == 2);
  CHECK(events[0].type == WatchEvent::Type::kPut);
  CHECK(events[0].kv.lease == lease.id);
  CHECK(events[0].kv.mod_revision == put_at);
  CHECK(events[1].type == WatchEvent::Type::kDelete);
  CHECK(events[1].kv.key == "/expire/key");
  CHECK(events[1].kv.mod_revision > put_at);
  CHECK(Clock::now() - started >= std::chrono::seconds(lease.ttl_seconds) - 1500ms);
  CHECK_FALSE(must(client->get("/expire/key")).kv.has_value());
  CHECK(must(client->keep_alive(lease.id)) == 0);
}

TEST_CASE("etcd client: a watch sees PUTs and DELETEs in order with their revisions") {
  RunningEtcd etcd;
  auto client = connect(etcd);
  must(client->put("/w/before", "not seen"));
  const auto from = must(client->get_prefix("/w/")).revision + 1;
  WatchLog log;
  auto w = watch(*client, "/w/", from, log);

  const auto r1 = must(client->put("/w/a", "1"));
  const auto r2 = must(client->put("/w/b", "2"));
  must(client->put("/x/outside", "not seen"));
  const auto r3 = must(client->put("/w/a", "3"));
  const auto r4 = must(client->delete_key("/w/a")).revision;
  const auto r5 =
      must(client->txn({}, {TxnOp::put("/w/c", "5"), TxnOp::put("/w/d", "6"), TxnOp::del("/w/b")}, {}))
          .revision;

  auto events = log.await_count(7);
  REQUIRE(events.size() == 7);
  CHECK(events[0].type == WatchEvent::Type::kPut);
  CHECK(events[0].kv == mq::replication::KeyValue{"/w/a", "1", r1, r1, 1, 0});
  CHECK(events[1].kv == mq::replication::KeyValue{"/w/b", "2", r2, r2, 1, 0});
  CHECK(events[2].kv == mq::replication::KeyValue{"/w/a", "3", r1, r3, 2, 0});
  CHECK(events[3].type == WatchEvent::Type::kDelete);
  CHECK(events[3].kv.key == "/w/a");
  CHECK(events[3].kv.mod_revision == r4);
  for (int i = 4; i < 7; ++i) CHECK(events[i].kv.mod_revision == r5);
  CHECK(events[4].kv.key == "/w/c");
  CHECK(events[5].kv.key == "/w/d");
  CHECK(events[6].type == WatchEvent::Type::kDelete);
  CHECK(events[6].kv.key == "/w/b");
  CHECK(log.errors().empty());

  SUBCASE("a second watch from an old revision replays the same history") {
    WatchLog replay;
    auto again = watch(*client, "/w/", from, replay);
    auto replayed = replay.await_count(7);
    REQUIRE(replayed.size() == 7);
    for (int i = 0; i < 7; ++i) {
      CHECK(replayed[i].type == events[i].type);
      CHECK(replayed[i].kv == events[i].kv);
    }
  }
}

TEST_CASE("etcd client: a watch from revision 0 starts now, replaying no history") {
  RunningEtcd etcd;
  auto client = connect(etcd);
  const auto history = must(client->put("/now/k", "old"));
  WatchLog log;
  auto w = watch(*client, "/now/", 0, log);
  // Puts made before the stream opened are not seen: put until one is (each put is awaited, bounded).
  std::vector<std::int64_t> puts;
  for (int i = 0; i < 100 && log.events().empty(); ++i) {
    puts.push_back(must(client->put("/now/k", std::to_string(i))));
    log.await_count(1, 100ms);
  }
  auto events = log.await_count(1);
  REQUIRE_FALSE(events.empty());
  CHECK(events[0].kv.mod_revision > history);
  CHECK(std::find(puts.begin(), puts.end(), events[0].kv.mod_revision) != puts.end());
  for (std::size_t i = 1; i < events.size(); ++i)
    CHECK(events[i].kv.mod_revision == events[i - 1].kv.mod_revision + 1);
}

TEST_CASE("etcd client: a watch resumes after etcd restarts, losing and repeating nothing") {
  RunningEtcd etcd;
  auto client = connect(etcd);
  const auto from = must(client->get_prefix("/r/")).revision + 1;
  WatchLog log;
  auto w = watch(*client, "/r/", from, log);
  for (int i = 1; i <= 3; ++i) must(client->put("/r/" + std::to_string(i), "v"));
  REQUIRE(log.await_count(3).size() == 3);

  REQUIRE(etcd.stop().has_value());
  etcd.start();  // same data directory; the watch reconnects with its backoff
  for (int i = 4; i <= 5; ++i) must(client->put("/r/" + std::to_string(i), "v"));  // maybe before it does
  REQUIRE(log.await_count(5).size() >= 5);
  etcd.stop();
  etcd.start();
  must(client->put("/r/6", "v"));

  // Event 6 comes after any repeat of 1..5 would have, on the same stream.
  auto events = log.await_count(6);
  REQUIRE(events.size() == 6);
  for (int i = 0; i < 6; ++i) {
    CHECK(events[i].kv.key == "/r/" + std::to_string(i + 1));
    if (i > 0) CHECK(events[i].kv.mod_revision == events[i - 1].kv.mod_revision + 1);
  }
  CHECK(events[0].kv.mod_revision == from);
  CHECK(log.errors().empty());
}

TEST_CASE("etcd client: stopping a watch returns within a second, idle, paused or reconnecting") {
  RunningEtcd etcd;
  auto client = connect(etcd);
  auto stop_time = [](EtcdWatch& w) {
    const auto started = Clock::now();
    w.stop();
    return Clock::now() - started;
  };

  SUBCASE("idle on an open stream") {
    WatchLog log;
    const auto from = must(client->put("/idle/a", "1"));
    auto w = watch(*client, "/idle/", from, log);
    REQUIRE(log.await_count(1).size() == 1);  // the stream is open
    CHECK(stop_time(*w) < 1s);
    must(client->put("/idle/b", "2"));
    w.reset();
    CHECK(log.events().size() == 1);  // nothing after stop()
  }
  SUBCASE("etcd paused") {
    WatchLog log;
    const auto from = must(client->put("/idle/a", "1"));
    auto w = watch(*client, "/idle/", from, log);
    REQUIRE(log.await_count(1).size() == 1);
    etcd.pause();
    CHECK(stop_time(*w) < 1s);
    etcd.resume();
  }
  SUBCASE("no endpoint answering") {
    auto dead = connect(std::vector<std::string>{refusing_url()});
    WatchLog log;
    auto w = watch(*dead, "/idle/", 1, log);
    const auto now = Clock::now();
    log.await([](const auto&) { return false; }, 300ms);  // let it fail and back off a few times
    CHECK(Clock::now() - now >= 300ms);
    CHECK(stop_time(*w) < 1s);
    CHECK(log.errors().empty());  // an unreachable etcd is waited for, not an error
  }
  SUBCASE("stopped at once, twice") {
    WatchLog log;
    auto w = watch(*client, "/idle/", 0, log);
    CHECK(stop_time(*w) < 1s);
    CHECK(stop_time(*w) < 1s);
  }
}

TEST_CASE("etcd client: a watch from a compacted revision reports the compaction") {
  RunningEtcd etcd;
  auto client = connect(etcd);
  const auto first = must(client->put("/c/a", "1"));
  must(client->put("/c/a", "2"));
  const auto last = must(client->put("/c/a", "3"));
  must(client->compact(last));
  CHECK(client->compact(first).code() == ErrorCode::kConflict);  // compacted already

  WatchLog log;
  auto w = watch(*client, "/c/", first, log);
  auto errors = log.await_error();
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].compact_revision == last);
  CHECK(errors[0].status.code() == ErrorCode::kConflict);
  CHECK(errors[0].status.message().find("compacted") != std::string::npos);
  CHECK(log.events().empty());

  // The owner reads again and watches from there.
  const auto now = must(client->get_prefix("/c/"));
  CHECK(now.kvs.at(0).value == "3");
  WatchLog after;
  auto w2 = watch(*client, "/c/", now.revision + 1, after);
  const auto r = must(client->put("/c/a", "4"));
  auto events = after.await_count(1);
  REQUIRE(events.size() == 1);
  CHECK(events[0].kv.mod_revision == r);
  CHECK(after.errors().empty());
}

TEST_CASE("etcd client: the next endpoint is used when one refuses connections") {
  RunningEtcd etcd;
  auto client = connect({refusing_url(), etcd.url(), refusing_url()});
  const auto r = must(client->put("/e/a", "1"));
  CHECK(must(client->get("/e/a")).kv->mod_revision == r);
  auto txn = must(client->txn({Compare::absent("/e/b")}, {TxnOp::put("/e/b", "2")}, {}));
  CHECK(txn.succeeded);
  CHECK(must(client->keep_alive(must(client->grant_lease(10)).id)) == 10);

  WatchLog log;
  auto w = watch(*client, "/e/", r, log);
  CHECK(log.await_count(2).size() == 2);

  // With no endpoint answering: kUnavailable, naming each, without waiting for a timeout.
  auto dead = connect({refusing_url(), refusing_url()});
  const auto started = Clock::now();
  auto put = dead->put("/e/a", "1");
  CHECK(Clock::now() - started < 1s);
  CHECK(put.status().code() == ErrorCode::kUnavailable);
  CHECK(put.status().message().find(dead->endpoints()[1]) != std::string::npos);
}

TEST_CASE("etcd client: calls to a paused etcd fail within the request timeout") {
  RunningEtcd etcd;
  EtcdOptions options;
  options.request_timeout = 500ms;
  options.connect_timeout = 500ms;
  auto client = connect(etcd, options);
  const auto lease = must(client->grant_lease(30));
  must(client->put("/pause/a", "1"));  // a pooled keep-alive connection is open now

  etcd.pause();
  auto timed = [](auto call) {
    const auto started = Clock::now();
    auto status = call();
    const auto took = Clock::now() - started;
    CHECK_MESSAGE(took < 1500ms,
                  "took " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms");
    return status;
  };
  // A write whose answer never came may have been applied: kIOError. A read: kUnavailable.
  CHECK(timed([&] { return client->put("/pause/a", "2").status(); }).code() == ErrorCode::kIOError);
  CHECK(timed([&] { return client->get("/pause/a").status(); }).code() == ErrorCode::kUnavailable);
  CHECK(timed([&] { return client->keep_alive(lease.id).status(); }).code() == ErrorCode::kUnavailable);
  CHECK_FALSE(timed([&] { return client->txn({}, {TxnOp::put("/pause/b", "1")}, {}).status(); }).ok());
  etcd.resume();

  CHECK(must(client->keep_alive(lease.id)) > 0);
  CHECK(must(client->get("/pause/a")).kv.has_value());
}

// A server on 127.0.0.1 that answers every request with `answer` (a whole HTTP response) and closes.
class FakeServer {
 public:
  explicit FakeServer(std::string answer) : answer_(std::move(answer)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(fd_, 64) == 0);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~FakeServer() {
    stopping_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  // Waits (bounded) until `count` requests have been answered.
  bool await_requests(int count, std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mutex_);
    return answered_.wait_for(lock, timeout, [&] { return requests_ >= count; });
  }

 private:
  void serve() {
    while (!stopping_) {
      const int connection = ::accept(fd_, nullptr, nullptr);
      if (connection < 0) return;
      // Read the request (headers and a small body) as it comes, then answer.
      std::string request;
      char buffer[4096];
      pollfd ready{connection, POLLIN, 0};
      while (::poll(&ready, 1, 200) > 0) {
        const auto n = ::recv(connection, buffer, sizeof buffer, 0);
        if (n <= 0) break;
        request.append(buffer, static_cast<std::size_t>(n));
        const auto end = request.find("\r\n\r\n");
        if (end != std::string::npos) {
          const auto length_at = request.find("Content-Length: ");
          const std::size_t length =
              length_at == std::string::npos ? 0 : std::stoul(request.substr(length_at + 16));
          if (request.size() >= end + 4 + length) break;
        }
      }
      ::send(connection, answer_.data(), answer_.size(), MSG_NOSIGNAL);
      ::shutdown(connection, SHUT_WR);
      ::close(connection);
      std::lock_guard lock(mutex_);
      ++requests_;
      answered_.notify_all();
    }
  }

  const std::string answer_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::condition_variable answered_;
  int requests_ = 0;  // GUARDED_BY(mutex_)
  std::thread thread_;
};

std::string http_200(const std::string& body) {
  return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

TEST_CASE("etcd client: answers that are not what etcd sends are refused with a clear status") {
  // A read that got an invalid answer is kIOError; one that got none at all (cut short, too large) is
  // tried on the other endpoints and ends kUnavailable. A write without a valid answer is always kIOError:
  // it may have been applied. (A put reads only the header of its answer.)
  struct Case {
    std::string name;
    std::string answer;
    ErrorCode read_code;
    ErrorCode put_code = ErrorCode::kIOError;
  };
  const std::vector<Case> cases = {
      {"not JSON", http_200("<html>hello</html>"), ErrorCode::kIOError},
      {"a JSON array", http_200("[1,2]"), ErrorCode::kIOError},
      {"no header", http_200("{\"kvs\":[]}"), ErrorCode::kIOError},
      {"a revision that is not a number", http_200("{\"header\":{\"revision\":\"12x\"}}"),
       ErrorCode::kIOError},
      {"a key that is not base64", http_200("{\"header\":{\"revision\":\"2\"},\"kvs\":[{\"key\":\"!!\"}]}"),
       ErrorCode::kIOError, ErrorCode::kOk},
      {"kvs that is not an array", http_200("{\"header\":{\"revision\":\"2\"},\"kvs\":{}}"),
       ErrorCode::kIOError, ErrorCode::kOk},
      {"an answer cut short",
       "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"header\":", ErrorCode::kUnavailable},
      {"an answer larger than the limit",
       http_200("{\"header\":{},\"pad\":\"" + std::string(5000, 'x') + "\"}"), ErrorCode::kUnavailable},
      {"not HTTP", "SSH-2.0-OpenSSH_9.2\r\n", ErrorCode::kUnavailable},
  };
  EtcdOptions options;
  options.max_answer_bytes = 4096;
  for (const auto& c : cases) {
    CAPTURE(c.name);
    FakeServer server(c.answer);
    auto client = connect(std::vector<std::string>{server.url()}, options);
    auto got = client->get("/k");
    CHECK(got.status().code() == c.read_code);
    CHECK_MESSAGE(got.status().message().find(server.url()) != std::string::npos, got.status().to_string());
    auto put = client->put("/k", "v");
    CHECK(put.status().code() == c.put_code);
    if (!put.ok())
      CHECK_MESSAGE(put.status().message().find(server.url()) != std::string::npos, put.status().to_string());
  }

  SUBCASE("a txn answered with fewer responses than operations") {
    FakeServer server(http_200("{\"header\":{\"revision\":\"3\"},\"succeeded\":true}"));
    auto client = connect(std::vector<std::string>{server.url()});
    auto txn = client->txn({}, {TxnOp::put("/k", "v")}, {});
    CHECK(txn.status().code() == ErrorCode::kIOError);
    CHECK(txn.status().message().find("0 responses to 1 operations") != std::string::npos);
  }
  SUBCASE("an etcd error answer becomes its status") {
    const std::string body =
        "{\"error\":\"etcdserver: no leader\",\"message\":\"etcdserver: no leader\",\"code\":14}";
    FakeServer server("HTTP/1.1 503 Service Unavailable\r\nContent-Length: " + std::to_string(body.size()) +
                      "\r\n\r\n" + body);
    auto client = connect(std::vector<std::string>{server.url()});
    auto put = client->put("/k", "v");
    CHECK(put.status().code() == ErrorCode::kUnavailable);
    CHECK(put.status().message().find("no leader") != std::string::npos);
  }
  SUBCASE("a watch stream of garbage is opened again, delivering nothing, and stops at once") {
    FakeServer server(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n"
        "{\"result\":{\"header\":{\"revision\":\"1\"},\"created\":true}}\n"
        "{\"result\":{\"header\":{\"revision\":\"2\"},\"events\":[{\"kv\":{\"key\":\"%%%\"}}]}}\n"
        "not json\n\xff\xfe\n");
    auto client = connect(std::vector<std::string>{server.url()});
    WatchLog log;
    auto w = watch(*client, "/", 1, log);
    CHECK(server.await_requests(3));  // it opened the stream again twice
    const auto started = Clock::now();
    w->stop();
    CHECK(Clock::now() - started < 1s);
    CHECK(log.events().empty());
    CHECK(log.errors().empty());
  }
}

TEST_CASE("etcd client: create() refuses endpoints that are not http URLs of a host and port") {
  CHECK(EtcdClient::create({}).status().code() == ErrorCode::kInvalidArgument);
  for (const char* bad :
       {"127.0.0.1:2379", "ftp://127.0.0.1:2379", "http://", "http://127.0.0.1:0", "http://127.0.0.1:99999",
        "http://127.0.0.1:2379/v3", "http://127.0.0.1:", "http://[::1"}) {
    CAPTURE(bad);
    auto client = EtcdClient::create({bad});
    CHECK(client.status().code() == ErrorCode::kInvalidArgument);
    CHECK(client.status().message().find(bad) != std::string::npos);
  }
  for (const char* good : {"http://127.0.0.1:2379", "http://127.0.0.1:2379/", "https://etcd.example:2379",
                           "http://[::1]:2379", "http://localhost"}) {
    CAPTURE(good);
    CHECK(EtcdClient::create({good}).ok());
  }
}

}  // namespace

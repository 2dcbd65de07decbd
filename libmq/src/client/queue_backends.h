// The Queue backends' factories (Queue::in_process, http, redis and open call them) and what the
// backends share.
#pragma once

#include <atomic>
#include <cstdint>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "client/produce_batcher.h"
#include "common/partition_turns.h"
#include "mq/queue.h"

namespace mq::detail {

std::unique_ptr<Queue> make_in_process_queue(std::shared_ptr<Broker> broker, ProducerOptions producer);
Result<std::unique_ptr<Queue>> make_http_queue(HttpQueueOptions options);
Result<std::unique_ptr<Queue>> make_redis_queue(RedisQueueOptions options);

// "<host name>-<process id>": the default consumer and producer name.
std::string default_client_name();

// The checks every backend makes on the arguments of Queue::read and Queue::seek before anything
// is sent, so that a call is refused the same way on each (mqd and the Broker would refuse most of
// them too, but the Broker takes any limit and Redis would take anything). kInvalidArgument.
Status check_read_arguments(const ReadFrom& from, std::size_t limit);
Status check_seek_target(const SeekTarget& target);

// The clients' runs of keyless produces (see PartitionTurns): long enough that concurrent producers
// share a partition's group commit, short enough that every partition soon gets its turn.
inline constexpr std::uint64_t kStickyRun = 16;

// Runs `work(item)` for every item, concurrently when there are several (one thread each but the
// first, which runs on the caller's), and returns the results in order. For requests that each
// wait on a different server or file: their waits overlap.
template <typename Item, typename Work>
auto run_concurrently(const std::vector<Item>& items, Work work) {
  using Out = decltype(work(items.front()));
  std::vector<std::future<Out>> others;
  for (std::size_t i = 1; i < items.size(); ++i) {
    others.push_back(std::async(std::launch::async, [&work, &item = items[i]] { return work(item); }));
  }
  std::vector<Out> results;
  results.reserve(items.size());
  if (!items.empty()) results.push_back(work(items.front()));
  for (auto& f : others) results.push_back(f.get());
  return results;
}

// Acknowledges `messages` with one call of `ack_one(topic, partition, group, ids)` per partition and
// group (one durable write each on the server), run concurrently so that their syncs overlap, and
// returns the sum of their counts; the first error in (topic, partition, group) order wins.
template <typename AckOne>
Result<std::size_t> ack_per_partition(std::span<const ReceivedMessage> messages, AckOne ack_one) {
  using Where = std::tuple<std::string_view, std::uint32_t, std::string_view>;
  std::map<Where, std::vector<std::string>> ids;
  for (const auto& m : messages) ids[{m.topic, m.partition, m.group}].push_back(m.id);
  const std::vector<std::pair<Where, std::vector<std::string>>> calls(ids.begin(), ids.end());
  auto counts = run_concurrently(calls, [&ack_one](const std::pair<Where, std::vector<std::string>>& call) {
    const auto& [topic, partition, group] = call.first;
    return ack_one(topic, partition, group, std::span<const std::string>(call.second));
  });
  std::size_t acked = 0;
  for (auto& count : counts) {
    if (!count.ok()) return count.status();
    acked += *count;
  }
  return acked;
}

struct HostPort {
  std::string host;
  std::uint16_t port = 0;
  bool tls = false;  // https
};
// "http://host:port" or "https://host:port" (a trailing "/" allowed; "host:port" alone is taken as
// http). kInvalidArgument for another scheme, a path, a missing or bad port.
Result<HostPort> parse_http_base_url(std::string_view url);
// The base URL of `where`: "http[s]://host:port", an IPv6 host in brackets.
std::string base_url(const HostPort& where);
// "host:port" or "[v6]:port" or a bare host ("::1" is an IPv6 host, not host ":" port 1); the
// port is optional when `default_port` is given.
Result<HostPort> parse_host_port(std::string_view text, std::optional<std::uint16_t> default_port);
// Whether `path` holds a PEM certificate: kInvalidArgument naming it when it cannot be read or
// holds none.
Status check_ca_file(const std::string& path);

}  // namespace mq::detail

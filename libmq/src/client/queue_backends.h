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
#include <string>
#include <string_view>
#include <vector>

#include "mq/queue.h"

namespace mq::detail {

std::unique_ptr<Queue> make_in_process_queue(std::shared_ptr<Broker> broker);
Result<std::unique_ptr<Queue>> make_http_queue(HttpQueueOptions options);
Result<std::unique_ptr<Queue>> make_redis_queue(RedisQueueOptions options);

// "<host name>-<process id>": the default consumer and producer name.
std::string default_client_name();

// Picks the partition of a produce that names neither a partition nor a key, like Kafka's sticky
// partitioner: a run of consecutive calls goes to the same partition before the next one takes over.
// Concurrent producers then append to one partition at a time and share its group commit (one
// fdatasync for all of them) instead of each paying for a sync of its own partition; over many
// calls every partition gets its turn. Thread-safe.
class StickyPartitioner {
 public:
  static constexpr std::uint64_t kCallsPerPartition = 16;
  // An index in [0, count) for the next call producing to `topic` (each topic has its own runs).
  std::uint32_t next(std::string_view topic, std::uint32_t count) {
    std::lock_guard lock(mutex_);
    auto it = calls_.find(topic);
    if (it == calls_.end()) it = calls_.emplace(std::string(topic), 0).first;
    const std::uint64_t call = it->second++;
    return static_cast<std::uint32_t>((call / kCallsPerPartition) % count);
  }

 private:
  std::mutex mutex_;
  std::map<std::string, std::uint64_t, std::less<>> calls_;  // GUARDED_BY(mutex_)
};

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

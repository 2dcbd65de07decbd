// The HTTP backend's view of a deployment of mqd brokers: which broker owns which partition, how
// many partitions each topic has, and a pool of keep-alive connections per broker.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mq/queue.h"
#include "protocol/http_protocol.h"

namespace httplib {
class Client;
}

namespace mq::detail {

// An HTTP answer: status and body.
struct HttpReply {
  int status = 0;
  std::string body;
};

// The Status an mqd error answer stands for (the body is {"error": ..., ["owner", "owner_url"],
// ["outcome"]}). A 503 is kUnavailable (nothing was stored: retry) unless its body says
// "outcome": "unknown" (a failed fdatasync after the write: kIOError); 507 (disk full, nothing
// stored) is kNoSpace, with mqd's reason.
Status status_of_reply(const HttpReply& reply, std::string_view broker_url);
// The "owner_url" of a 421 answer, when it has one.
std::optional<std::string> owner_url_of(const HttpReply& reply);

// Thread-safe.
class BrokerDirectory {
 public:
  using Clock = std::chrono::steady_clock;

  // `options.addrs` must already be valid base URLs.
  explicit BrokerDirectory(HttpQueueOptions options);
  ~BrokerDirectory();
  BrokerDirectory(const BrokerDirectory&) = delete;
  BrokerDirectory& operator=(const BrokerDirectory&) = delete;

  struct Route {
    std::string url;               // the owner's base URL
    std::uint32_t owner = 0;       // the owner's broker index
    std::uint32_t partitions = 0;  // the topic's partition count
  };
  // Where `partition` of `topic` lives (nullopt partition: just the topic's partition count, url
  // empty). Asks the brokers' /topics when the answer is not known yet, when the map is older than
  // options.metadata_max_age or was marked stale (a failed periodic read keeps the old map).
  // kNotFound for an unknown topic or a partition beyond its count (after asking again);
  // kUnavailable when no broker answers.
  Result<Route> route(std::string_view topic, std::optional<std::uint32_t> partition);
  // The base URL of every broker of the deployment, in index order (reading the map first when it
  // is stale). kUnavailable when no broker answers, or some broker's address is unknown.
  Result<std::vector<std::string>> brokers();
  // A 421 named the owner of a partition: remember its URL (or ask the brokers again when none was
  // given or it is not a valid base URL), and, replicated, that it leads `partition` of `topic`
  // now. The rest of the map is read again soon too.
  void learn_owner(std::uint32_t owner, std::optional<std::string> url, std::string_view topic = {},
                   std::optional<std::uint32_t> partition = std::nullopt);
  // Whether the brokers replicate partitions (their /topics has placement): then a partition's
  // owner is its current leader, which changes, and a broker that cannot be reached is replaced.
  bool replicated() const;
  // Something (a 404) suggests the map is out of date: the next route() reads it again, at most
  // once per kMinRefreshGap.
  void mark_stale();
  // mqd's VISIBILITY_TIMEOUT_MS, from /topics (30 s when the brokers do not say).
  std::chrono::milliseconds visibility_timeout() const;
  // The smallest DEDUP_WINDOW_MS of the brokers (from /topics, each broker's last answer): how long
  // a produce may be sent again without storing a message twice. None while a broker has not said.
  std::optional<std::chrono::milliseconds> dedup_window() const;
  // dedup_window() when the brokers replicate (replicated()), none otherwise: the two read under
  // one lock, so that a refresh in between cannot pair one map's answer with another's.
  std::optional<std::chrono::milliseconds> replicated_dedup_window() const;
  // Broker `owner` could not be reached at `failed_url`, the address BROKER_ADDRS gave for it: when
  // it answered /topics at another address (one the client was given), use that one instead and
  // return true. (BROKER_ADDRS may hold names that resolve only inside the brokers' network, e.g.
  // compose service names seen from the host.)
  bool try_other_address(std::uint32_t owner, const std::string& failed_url);

  // Sends a request to `url` over a pooled keep-alive connection: `method` `path` with `body` (a
  // GET sends none). kUnavailable when it cannot connect (nothing was sent); kIOError when the
  // connection broke after the request went out (it may or may not have been applied).
  Result<HttpReply> send(http::Method method, const std::string& url, const std::string& path,
                         const std::string& body);
  Result<HttpReply> post(const std::string& url, const std::string& path, const std::string& body) {
    return send(http::Method::kPost, url, path, body);
  }

  // A new client for a long-lived event stream (not pooled).
  std::unique_ptr<httplib::Client> stream_client(const std::string& url) const;
  const HttpQueueOptions& options() const { return options_; }

 private:
  std::unique_ptr<httplib::Client> make_client(const std::string& url,
                                               std::chrono::milliseconds read_timeout) const;
  std::unique_ptr<httplib::Client> acquire(const std::string& url);
  void release(const std::string& url, std::unique_ptr<httplib::Client> client);
  // GET /topics from `url` with a short timeout (a stopping consumer may be waiting on it).
  Result<HttpReply> get_topics(const std::string& url) const;
  // Asks the brokers' /topics and fills the map, unless another thread did since `asked_at`.
  Status refresh(Clock::time_point asked_at);
  // Whether route() must read the map first.
  bool stale() const;
  // The answer the map gives, or kNotFound / kUnavailable.
  Result<Route> lookup(std::string_view topic, std::optional<std::uint32_t> partition) const;
  // The owner's URL when known; the lock must be held.
  std::optional<std::string> url_of_locked(std::uint32_t index) const;
  std::optional<std::chrono::milliseconds> dedup_window_locked() const;

  static constexpr std::chrono::milliseconds kMinRefreshGap{1000};

  const HttpQueueOptions options_;
  std::mutex refresh_mutex_;  // one refresh at a time: the others wait for its map
  mutable std::mutex mutex_;
  static constexpr std::size_t kMaxIdleClientsPerBroker = 16;
  Clock::time_point refreshed_at_{};  // GUARDED_BY(mutex_): the last successful refresh
  Clock::time_point next_refresh_{};  // GUARDED_BY(mutex_)
  std::chrono::milliseconds visibility_timeout_ = http::kDefaultVisibilityTimeout;  // GUARDED_BY(mutex_)
  std::map<std::uint32_t, std::optional<std::chrono::milliseconds>>
      dedup_window_by_index_;                                // GUARDED_BY(mutex_)
  std::uint32_t windows_broker_count_ = 0;                   // GUARDED_BY(mutex_): the broker count of those
  std::uint32_t broker_count_ = 0;                           // GUARDED_BY(mutex_): 0 until known
  std::map<std::uint32_t, std::string> url_by_index_;        // GUARDED_BY(mutex_)
  std::map<std::uint32_t, std::string> asked_url_by_index_;  // GUARDED_BY(mutex_): where /topics answered
  std::map<std::string, std::uint32_t, std::less<>> partitions_;  // GUARDED_BY(mutex_)
  // Replicated: the leader of each partition as the last /topics or 421 said (absent: not known).
  std::map<std::pair<std::string, std::uint32_t>, std::uint32_t> leaders_;             // GUARDED_BY(mutex_)
  bool replicated_ = false;                                                            // GUARDED_BY(mutex_)
  std::map<std::string, std::vector<std::unique_ptr<httplib::Client>>> idle_clients_;  // GUARDED_BY(mutex_)
};

}  // namespace mq::detail

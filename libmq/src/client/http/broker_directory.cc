#include "client/http/broker_directory.h"

#include <httplib.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "client/queue_backends.h"
#include "protocol/http_protocol.h"

namespace mq::detail {

namespace field = http::field;

Status status_of_reply(const HttpReply& reply, std::string_view broker_url) {
  std::string reason;
  std::optional<std::uint32_t> owner;
  bool outcome_unknown = false;
  const auto body = nlohmann::json::parse(reply.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_object()) {
    if (auto it = body.find(field::kError); it != body.end() && it->is_string())
      reason = it->get<std::string>();
    if (auto it = body.find(field::kOwner); it != body.end() && it->is_number_unsigned())
      owner = it->get<std::uint32_t>();
    if (auto it = body.find(field::kOutcome); it != body.end() && it->is_string())
      outcome_unknown = it->get<std::string>() == field::kOutcomeUnknown;
  }
  if (reason.empty()) reason = "HTTP " + std::to_string(reply.status);
  reason = "mqd at " + std::string(broker_url) + ": " + reason;
  switch (http::error_code_of(reply.status)) {
    case ErrorCode::kInvalidArgument:
      return Status::invalid_argument(reason);
    case ErrorCode::kUnauthenticated:
      return Status::unauthenticated(reason);
    case ErrorCode::kNotFound:
      return Status::not_found(reason);
    case ErrorCode::kConflict:
      return Status::conflict(reason);
    case ErrorCode::kPayloadTooLarge:
      return Status::payload_too_large(reason);
    case ErrorCode::kNotOwned:
      return Status::not_owned(reason, owner.value_or(0));
    case ErrorCode::kUnavailable:
      // A failed fdatasync: the request was written and may survive (or not) — retrying a produce
      // could store it twice.
      if (outcome_unknown) return Status::io_error(reason + " (it may or may not have been stored)");
      // Shutting down, at MAX_CONNECTIONS, a partition refusing writes: nothing was done, try again.
      return Status::unavailable(reason);
    case ErrorCode::kNoSpace:  // the disk is full: nothing was stored; retrying helps once there is space
      return Status::no_space(reason);
    default:  // 500 and any status mqd does not answer with: the outcome is unknown
      return Status::io_error(reason);
  }
}

std::optional<std::string> owner_url_of(const HttpReply& reply) {
  const auto body = nlohmann::json::parse(reply.body, nullptr, /*allow_exceptions=*/false);
  if (!body.is_object()) return std::nullopt;
  auto it = body.find(field::kOwnerUrl);
  if (it == body.end() || !it->is_string()) return std::nullopt;
  return it->get<std::string>();
}

BrokerDirectory::BrokerDirectory(HttpQueueOptions options) : options_(std::move(options)) {}
BrokerDirectory::~BrokerDirectory() = default;

std::unique_ptr<httplib::Client> BrokerDirectory::make_client(const std::string& url,
                                                              std::chrono::milliseconds read_timeout) const {
  auto client = std::make_unique<httplib::Client>(url);
  if (url.starts_with("https://")) {
    client->enable_server_certificate_verification(true);  // the host too, not just the chain
    if (!options_.ca_file.empty()) client->set_ca_cert_path(options_.ca_file.c_str());
  }
  client->set_connection_timeout(options_.connect_timeout);
  client->set_read_timeout(read_timeout);
  client->set_write_timeout(options_.request_timeout);
  client->set_tcp_nodelay(true);  // without it every small request waits for a delayed ACK
  if (!options_.auth_token.empty()) client->set_bearer_token_auth(options_.auth_token.c_str());
  return client;
}

std::unique_ptr<httplib::Client> BrokerDirectory::stream_client(const std::string& url) const {
  return make_client(url, options_.stream_read_timeout);
}

std::unique_ptr<httplib::Client> BrokerDirectory::acquire(const std::string& url) {
  {
    std::lock_guard lock(mutex_);
    auto it = idle_clients_.find(url);
    if (it != idle_clients_.end() && !it->second.empty()) {
      auto client = std::move(it->second.back());
      it->second.pop_back();
      return client;
    }
  }
  auto client = make_client(url, options_.request_timeout);
  client->set_keep_alive(true);
  return client;
}

void BrokerDirectory::release(const std::string& url, std::unique_ptr<httplib::Client> client) {
  std::lock_guard lock(mutex_);
  auto& idle = idle_clients_[url];
  if (idle.size() < kMaxIdleClientsPerBroker) idle.push_back(std::move(client));
}

namespace {

// Whether a failed request never reached the server (so sending it again cannot duplicate it).
// A TLS handshake or certificate check that failed happens before the request is written.
bool never_sent(httplib::Error error) {
  return error == httplib::Error::Connection || error == httplib::Error::ConnectionTimeout ||
         error == httplib::Error::BindIPAddress || error == httplib::Error::SSLConnection ||
         error == httplib::Error::SSLLoadingCerts || error == httplib::Error::SSLServerVerification;
}

// Why a request failed, in words: httplib's name for it, and for TLS what to check.
std::string describe(httplib::Error error) {
  const std::string name = httplib::to_string(error);
  if (error == httplib::Error::SSLServerVerification) {
    return "its TLS certificate could not be verified (" + name +
           "): it is not signed by a trusted CA or does not name the host; set MSG_QUEUE_CA_FILE "
           "(HttpQueueOptions::ca_file) to the CA that signed it";
  }
  if (error == httplib::Error::SSLConnection)
    return "the TLS handshake failed (" + name + "): is it serving https?";
  return name;
}

}  // namespace

Result<HttpReply> BrokerDirectory::send(http::Method method, const std::string& url, const std::string& path,
                                        const std::string& body) {
  auto client = acquire(url);
  auto result = method == http::Method::kGet      ? client->Get(path.c_str())
                : method == http::Method::kDelete ? client->Delete(path.c_str(), body, "application/json")
                                                  : client->Post(path.c_str(), body, "application/json");
  if (!result) {
    const std::string error = describe(result.error());
    if (never_sent(result.error()))
      return Status::unavailable("mqd at " + url + " cannot be reached: " + error);
    return Status::io_error("the connection to mqd at " + url + " broke during the request (" + error +
                            "): it may or may not have been carried out");
  }
  HttpReply reply{result->status, std::move(result->body)};
  release(url, std::move(client));
  return reply;
}

Result<HttpReply> BrokerDirectory::get_topics(const std::string& url) const {
  auto client = make_client(url, options_.connect_timeout);
  auto result = client->Get(std::string(http::path::kTopics));
  if (!result)
    return Status::unavailable("mqd at " + url + " cannot be reached: " + describe(result.error()));
  return HttpReply{result->status, std::move(result->body)};
}

namespace {

// One broker's /topics answer.
struct TopicsAnswer {
  std::uint32_t index = 0;
  std::uint32_t count = 0;
  std::vector<std::string> brokers;  // BROKER_ADDRS, valid base URLs only ("" for others)
  std::map<std::string, std::uint32_t, std::less<>> partitions;
  std::optional<std::chrono::milliseconds> visibility_timeout;  // mqd's VISIBILITY_TIMEOUT_MS
  std::optional<std::chrono::milliseconds> dedup_window;        // mqd's DEDUP_WINDOW_MS
  bool replicated = false;                                      // placement listed
  // Replicated: each partition's leader as this broker knows it (absent while none is elected).
  std::map<std::pair<std::string, std::uint32_t>, std::uint32_t> leaders;
};

Result<TopicsAnswer> parse_topics_answer(const HttpReply& reply, const std::string& url) {
  const auto body = nlohmann::json::parse(reply.body, nullptr, /*allow_exceptions=*/false);
  TopicsAnswer answer;
  try {
    answer.index = body.at(field::kBroker).at(field::kIndex).get<std::uint32_t>();
    answer.count = body.at(field::kBroker).at(field::kCount).get<std::uint32_t>();
    for (const auto& b : body.at(field::kBrokers)) {
      const auto address = b.get<std::string>();
      auto parsed = parse_http_base_url(address);
      answer.brokers.push_back(parsed.ok() ? base_url(*parsed) : "");
    }
    for (const auto& topic : body.at(field::kTopics)) {
      const auto name = topic.at(field::kName).get<std::string>();
      answer.partitions[name] = topic.at(field::kPartitions).get<std::uint32_t>();
      if (auto placement = topic.find(field::kPlacement); placement != topic.end() && placement->is_array()) {
        answer.replicated = true;
        for (const auto& p : *placement) {
          auto leader = p.find(field::kLeader);
          if (leader != p.end() && leader->is_number_unsigned()) {
            answer.leaders[{name, p.at(field::kPartition).get<std::uint32_t>()}] =
                leader->get<std::uint32_t>();
          }
        }
      }
    }
    // Older brokers do not say; then the client assumes mqd's default.
    if (auto it = body.find(field::kVisibilityTimeoutMs); it != body.end() && it->is_number_unsigned()) {
      if (const auto ms = it->get<std::uint64_t>(); ms > 0)
        answer.visibility_timeout = std::chrono::milliseconds(static_cast<std::int64_t>(ms));
    }
    // Older brokers do not say: then their window is unknown (and no produce is retried).
    if (auto it = body.find(field::kDedupWindowMs); it != body.end() && it->is_number_unsigned()) {
      answer.dedup_window = std::chrono::milliseconds(
          static_cast<std::int64_t>(std::min<std::uint64_t>(it->get<std::uint64_t>(), 86'400'000ull * 365)));
    }
  } catch (const nlohmann::json::exception& e) {
    return Status::io_error("mqd at " + url + ": unexpected /topics answer: " + e.what());
  }
  if (answer.count == 0 || answer.index >= answer.count) {
    return Status::io_error("mqd at " + url + ": /topics names broker " + std::to_string(answer.index) +
                            " of " + std::to_string(answer.count));
  }
  return answer;
}

}  // namespace

Status BrokerDirectory::refresh(Clock::time_point asked_at) {
  const std::lock_guard one_at_a_time(refresh_mutex_);
  {
    std::lock_guard lock(mutex_);
    if (broker_count_ > 0 && refreshed_at_ > asked_at) return {};  // read while this thread waited
  }
  // Ask the addresses we were given and every broker we know of, so that topics only some brokers
  // have (dead-letter topics are made where they are needed) are found too.
  std::vector<std::string> to_ask = options_.addrs;
  auto add = [&to_ask](const std::string& url) {
    if (!url.empty() && std::find(to_ask.begin(), to_ask.end(), url) == to_ask.end()) to_ask.push_back(url);
  };
  {
    std::lock_guard lock(mutex_);
    for (const auto& [index, url] : url_by_index_) add(url);
  }
  Status last = Status::unavailable("no mqd address is configured");
  std::uint32_t count = 0;
  std::map<std::uint32_t, std::string> asked_urls;   // where each broker answered
  std::map<std::uint32_t, std::string> listed_urls;  // what the brokers' BROKER_ADDRS say
  std::map<std::string, std::uint32_t, std::less<>> partitions;
  std::optional<std::chrono::milliseconds> visibility_timeout;
  // Each answering broker's DEDUP_WINDOW_MS (none: it did not say).
  std::map<std::uint32_t, std::optional<std::chrono::milliseconds>> dedup_windows;
  bool replicated = false;
  // Leaders as the brokers report them; a broker's word counts most for the partitions it says it
  // leads itself (its followers may not have heard of an election yet).
  std::map<std::pair<std::string, std::uint32_t>, std::uint32_t> leaders;
  for (std::size_t i = 0; i < to_ask.size(); ++i) {
    const std::string url = to_ask[i];
    auto reply = get_topics(url);
    if (!reply.ok()) {
      last = reply.status();
      continue;
    }
    if (reply->status != 200) {
      last = status_of_reply(*reply, url);
      if (last.code() == ErrorCode::kUnauthenticated) return last;
      continue;
    }
    auto answer = parse_topics_answer(*reply, url);
    if (!answer.ok()) {
      last = answer.status();
      continue;
    }
    if (count != 0 && answer->count != count) {
      last = Status::io_error("the brokers disagree on BROKER_COUNT (" + std::to_string(count) + " and " +
                              std::to_string(answer->count) + " at " + url + ")");
      continue;
    }
    count = answer->count;
    asked_urls.emplace(answer->index, url);
    for (std::uint32_t b = 0; b < answer->brokers.size(); ++b) {
      if (!answer->brokers[b].empty()) listed_urls.emplace(b, answer->brokers[b]);
      if (!asked_urls.contains(b)) add(answer->brokers[b]);
    }
    for (const auto& [name, n] : answer->partitions) partitions[name] = std::max(partitions[name], n);
    if (!visibility_timeout) visibility_timeout = answer->visibility_timeout;
    dedup_windows[answer->index] = answer->dedup_window;
    replicated = replicated || answer->replicated;
    for (const auto& [key, leader] : answer->leaders) {
      if (leader == answer->index || !leaders.contains(key)) leaders[key] = leader;
    }
  }
  const auto now = Clock::now();
  std::lock_guard lock(mutex_);
  // The next periodic read is one period away; after a failure (every broker down) a second at
  // most, so that brokers are not asked on every call and a restart is seen soon. A 404, a 421 or
  // a broken stream may ask sooner (mark_stale).
  if (count == 0) {
    next_refresh_ = now + std::min<std::chrono::milliseconds>(options_.metadata_max_age, kMinRefreshGap);
    return last;
  }
  next_refresh_ = now + options_.metadata_max_age;
  refreshed_at_ = now;
  visibility_timeout_ = visibility_timeout.value_or(http::kDefaultVisibilityTimeout);
  // A broker that did not answer this time keeps the window it reported last (of this deployment:
  // another broker count is another set of brokers).
  if (count != windows_broker_count_) dedup_window_by_index_.clear();
  windows_broker_count_ = count;
  for (const auto& [index, window] : dedup_windows) dedup_window_by_index_[index] = window;
  std::erase_if(dedup_window_by_index_, [count](const auto& entry) { return entry.first >= count; });
  broker_count_ = count;
  // BROKER_ADDRS first: an address the client was given may be a load balancer in front of every
  // broker (a Kubernetes Service). Where it lists none, or a broker cannot be reached at it,
  // try_other_address() falls back to where that broker answered.
  // A broker that did not answer this time keeps the address it had (its requests then say it
  // cannot be reached, rather than that its address is unknown).
  auto previous = std::move(url_by_index_);
  url_by_index_ = asked_urls;
  for (const auto& [index, url] : listed_urls) url_by_index_[index] = url;
  for (auto& [index, url] : previous) {
    if (index < count) url_by_index_.try_emplace(index, std::move(url));
  }
  for (const auto& [index, url] : asked_urls) asked_url_by_index_[index] = url;
  // Partition counts only grow (mqd refuses to start with fewer than a topic has on disk), and a
  // topic that only a broker that is down holds (a dead-letter topic) is still there.
  for (const auto& [name, n] : partitions) partitions_[name] = std::max(partitions_[name], n);
  replicated_ = replicated;
  leaders_.clear();
  for (const auto& [key, leader] : leaders) {
    if (leader < count) leaders_[key] = leader;
  }
  return {};
}

std::optional<std::chrono::milliseconds> BrokerDirectory::dedup_window() const {
  std::lock_guard lock(mutex_);
  return dedup_window_locked();
}

std::optional<std::chrono::milliseconds> BrokerDirectory::replicated_dedup_window() const {
  std::lock_guard lock(mutex_);
  if (!replicated_) return std::nullopt;
  return dedup_window_locked();
}

std::optional<std::chrono::milliseconds> BrokerDirectory::dedup_window_locked() const {
  if (broker_count_ == 0) return std::nullopt;
  std::optional<std::chrono::milliseconds> smallest;
  for (std::uint32_t index = 0; index < broker_count_; ++index) {
    auto it = dedup_window_by_index_.find(index);
    if (it == dedup_window_by_index_.end() || !it->second) return std::nullopt;  // never said
    if (!smallest || *it->second < *smallest) smallest = it->second;
  }
  return smallest;
}

bool BrokerDirectory::replicated() const {
  std::lock_guard lock(mutex_);
  return replicated_;
}

std::optional<std::string> BrokerDirectory::url_of_locked(std::uint32_t index) const {
  auto it = url_by_index_.find(index);
  if (it == url_by_index_.end()) return std::nullopt;
  return it->second;
}

bool BrokerDirectory::stale() const {
  std::lock_guard lock(mutex_);
  return broker_count_ == 0 || Clock::now() >= next_refresh_;
}

Result<BrokerDirectory::Route> BrokerDirectory::lookup(std::string_view topic,
                                                       std::optional<std::uint32_t> partition) const {
  std::lock_guard lock(mutex_);
  if (broker_count_ == 0) return Status::unavailable("the brokers' map is not known; try again");
  auto it = partitions_.find(topic);
  if (it == partitions_.end()) return Status::not_found("mqd has no topic \"" + std::string(topic) + "\"");
  Route route;
  route.partitions = it->second;
  if (!partition) return route;
  if (*partition >= it->second) {
    return Status::not_found("partition " + std::to_string(*partition) + " of topic \"" + std::string(topic) +
                             "\" does not exist (it has " + std::to_string(it->second) + ")");
  }
  route.owner = *partition % broker_count_;
  if (auto leader = leaders_.find({std::string(topic), *partition}); leader != leaders_.end()) {
    route.owner = leader->second;  // replicated: the leader, wherever it is now
  }
  auto url = url_of_locked(route.owner);
  if (!url) {
    return Status::unavailable(
        "the address of broker " + std::to_string(route.owner) +
        " is unknown: start the brokers with BROKER_ADDRS, or list every broker in the client's "
        "addresses (MSG_QUEUE_ADDR)");
  }
  route.url = std::move(*url);
  return route;
}

Result<BrokerDirectory::Route> BrokerDirectory::route(std::string_view topic,
                                                      std::optional<std::uint32_t> partition) {
  bool asked = false;
  if (stale()) {
    asked = true;
    // A periodic read that fails keeps the map we have: the request itself will tell.
    if (Status s = refresh(Clock::now()); !s.ok()) {
      std::lock_guard lock(mutex_);
      if (broker_count_ == 0) return s;
    }
  }
  auto found = lookup(topic, partition);
  if (asked || found.ok() || found.status().code() != ErrorCode::kNotFound) return found;
  // A topic or partition the map does not have: the brokers may have it by now.
  if (Status s = refresh(Clock::now()); !s.ok()) return s;
  return lookup(topic, partition);
}

Result<std::vector<std::string>> BrokerDirectory::brokers() {
  if (stale()) {
    if (Status s = refresh(Clock::now()); !s.ok()) {
      std::lock_guard lock(mutex_);
      if (broker_count_ == 0) return s;
    }
  }
  std::lock_guard lock(mutex_);
  std::vector<std::string> urls;
  for (std::uint32_t index = 0; index < broker_count_; ++index) {
    auto url = url_of_locked(index);
    if (!url) {
      return Status::unavailable(
          "the address of broker " + std::to_string(index) +
          " is unknown: set BROKER_ADDRS on the brokers or give the client every address");
    }
    urls.push_back(*url);
  }
  return urls;
}

void BrokerDirectory::mark_stale() {
  std::lock_guard lock(mutex_);
  next_refresh_ = std::min(next_refresh_, std::max(Clock::now(), refreshed_at_ + kMinRefreshGap));
}

std::chrono::milliseconds BrokerDirectory::visibility_timeout() const {
  std::lock_guard lock(mutex_);
  return visibility_timeout_;
}

void BrokerDirectory::learn_owner(std::uint32_t owner, std::optional<std::string> url, std::string_view topic,
                                  std::optional<std::uint32_t> partition) {
  std::optional<HostPort> parsed;
  if (url) {
    if (auto p = parse_http_base_url(*url); p.ok()) parsed = *p;
  }
  {
    std::lock_guard lock(mutex_);
    if (partition && replicated_ && owner < broker_count_) {
      leaders_[{std::string(topic), *partition}] = owner;
    }
    if (!parsed) {
      broker_count_ = 0;  // the next route() asks the brokers again
      return;
    }
    url_by_index_[owner] = base_url(*parsed);
  }
  mark_stale();  // ownership moved: partition counts may have changed as well
}

bool BrokerDirectory::try_other_address(std::uint32_t owner, const std::string& failed_url) {
  std::lock_guard lock(mutex_);
  auto it = asked_url_by_index_.find(owner);
  if (it == asked_url_by_index_.end() || it->second == failed_url) return false;
  url_by_index_[owner] = it->second;
  return true;
}

}  // namespace mq::detail

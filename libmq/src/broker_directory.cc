#include "broker_directory.h"

#include <httplib.h>

#include <nlohmann/json.hpp>

namespace mq::detail {

Status status_of_reply(const HttpReply& reply, std::string_view broker_url) {
  std::string reason;
  std::optional<std::uint32_t> owner;
  const auto body = nlohmann::json::parse(reply.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_object()) {
    if (auto it = body.find("error"); it != body.end() && it->is_string()) reason = it->get<std::string>();
    if (auto it = body.find("owner"); it != body.end() && it->is_number_unsigned())
      owner = it->get<std::uint32_t>();
  }
  if (reason.empty()) reason = "HTTP " + std::to_string(reply.status);
  reason = "mqd at " + std::string(broker_url) + ": " + reason;
  switch (reply.status) {
    case 400:
      return Status::invalid_argument(reason);
    case 401:
    case 403:
      return Status::unauthenticated(reason);
    case 404:
      return Status::not_found(reason);
    case 409:
      return Status::conflict(reason);
    case 413:
      return Status::payload_too_large(reason);
    case 421:
      return Status::not_owned(reason, owner.value_or(0));
    case 502:
    case 503:
    case 504:
      return Status::unavailable(reason);
    default:
      return Status::io_error(reason);
  }
}

std::optional<std::string> owner_url_of(const HttpReply& reply) {
  const auto body = nlohmann::json::parse(reply.body, nullptr, /*allow_exceptions=*/false);
  if (!body.is_object()) return std::nullopt;
  auto it = body.find("owner_url");
  if (it == body.end() || !it->is_string()) return std::nullopt;
  return it->get<std::string>();
}

BrokerDirectory::BrokerDirectory(HttpQueueOptions options) : options_(std::move(options)) {}
BrokerDirectory::~BrokerDirectory() = default;

std::unique_ptr<httplib::Client> BrokerDirectory::make_client(const std::string& url,
                                                              std::chrono::milliseconds read_timeout) const {
  auto client = std::make_unique<httplib::Client>(url);
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
  idle_clients_[url].push_back(std::move(client));
}

Result<HttpReply> BrokerDirectory::post(const std::string& url, const std::string& path,
                                        const std::string& body) {
  auto client = acquire(url);
  auto result = client->Post(path.c_str(), body, "application/json");
  if (!result) {
    return Status::unavailable("mqd at " + url + " cannot be reached: " + httplib::to_string(result.error()));
  }
  HttpReply reply{result->status, std::move(result->body)};
  release(url, std::move(client));
  return reply;
}

Result<HttpReply> BrokerDirectory::get(const std::string& url, const std::string& path) {
  auto client = acquire(url);
  auto result = client->Get(path.c_str());
  if (!result) {
    return Status::unavailable("mqd at " + url + " cannot be reached: " + httplib::to_string(result.error()));
  }
  HttpReply reply{result->status, std::move(result->body)};
  release(url, std::move(client));
  return reply;
}

Status BrokerDirectory::refresh() {
  std::vector<std::string> to_ask = options_.addrs;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [index, url] : url_by_index_) {
      if (std::find(to_ask.begin(), to_ask.end(), url) == to_ask.end()) to_ask.push_back(url);
    }
  }
  Status last = Status::unavailable("no mqd address is configured");
  std::uint32_t count = 0;
  std::map<std::uint32_t, std::string> asked_urls;   // what we reached each broker at
  std::map<std::uint32_t, std::string> listed_urls;  // what the brokers' BROKER_ADDRS say
  std::map<std::string, std::uint32_t, std::less<>> partitions;
  for (const auto& url : to_ask) {
    auto reply = get(url, "/topics");
    if (!reply.ok()) {
      last = reply.status();
      continue;
    }
    if (reply->status != 200) {
      last = status_of_reply(*reply, url);
      if (last.code() == ErrorCode::kUnauthenticated) return last;
      continue;
    }
    const auto body = nlohmann::json::parse(reply->body, nullptr, false);
    try {
      const std::uint32_t index = body.at("broker").at("index").get<std::uint32_t>();
      count = body.at("broker").at("count").get<std::uint32_t>();
      asked_urls[index] = url;
      const auto& brokers = body.at("brokers");
      for (std::uint32_t i = 0; i < brokers.size(); ++i) listed_urls[i] = brokers[i].get<std::string>();
      for (const auto& topic : body.at("topics")) {
        partitions[topic.at("name").get<std::string>()] = topic.at("partitions").get<std::uint32_t>();
      }
    } catch (const nlohmann::json::exception& e) {
      last = Status::io_error("mqd at " + url + ": unexpected /topics answer: " + e.what());
      continue;
    }
    // One answer that lists every broker is enough; otherwise each address tells its own index.
    if (listed_urls.size() >= count) break;
  }
  if (count == 0) return last;
  std::lock_guard lock(mutex_);
  broker_count_ = count;
  url_by_index_ = std::move(listed_urls);
  // An address we were given reached that broker: prefer it to BROKER_ADDRS, which may hold names
  // that only resolve inside the brokers' network.
  for (auto& [index, url] : asked_urls) url_by_index_[index] = std::move(url);
  partitions_ = std::move(partitions);
  return {};
}

std::optional<std::string> BrokerDirectory::url_of_locked(std::uint32_t index) const {
  auto it = url_by_index_.find(index);
  if (it == url_by_index_.end()) return std::nullopt;
  return it->second;
}

Result<BrokerDirectory::Route> BrokerDirectory::route(std::string_view topic,
                                                      std::optional<std::uint32_t> partition) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    {
      std::lock_guard lock(mutex_);
      if (broker_count_ > 0) {
        auto it = partitions_.find(topic);
        if (it != partitions_.end()) {
          Route route;
          route.partitions = it->second;
          if (!partition) return route;
          if (*partition >= it->second) {
            return Status::not_found("partition " + std::to_string(*partition) + " of topic \"" +
                                     std::string(topic) + "\" does not exist (it has " +
                                     std::to_string(it->second) + ")");
          }
          route.owner = *partition % broker_count_;
          if (auto url = url_of_locked(route.owner)) {
            route.url = std::move(*url);
            return route;
          }
        }
      }
    }
    if (attempt == 0) {
      if (auto s = refresh(); !s.ok()) return s;
    }
  }
  std::lock_guard lock(mutex_);
  if (!partitions_.contains(topic))
    return Status::not_found("mqd has no topic \"" + std::string(topic) + "\"");
  return Status::unavailable(
      "the address of broker " + std::to_string(*partition % broker_count_) +
      " is unknown: start the brokers with BROKER_ADDRS, or list every broker in the client's "
      "addresses (MSG_QUEUE_ADDR)");
}

void BrokerDirectory::learn_owner(std::uint32_t owner, std::optional<std::string> url) {
  std::lock_guard lock(mutex_);
  if (url) {
    url_by_index_[owner] = std::move(*url);
  } else {
    broker_count_ = 0;
  }
}

void BrokerDirectory::forget() {
  std::lock_guard lock(mutex_);
  broker_count_ = 0;
}

}  // namespace mq::detail

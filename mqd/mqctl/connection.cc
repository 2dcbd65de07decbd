#include "connection.h"

#include "client/http/broker_directory.h"
#include "client/queue_backends.h"  // parse_http_base_url, base_url

namespace mqctl {

mq::Result<std::unique_ptr<Connection>> Connection::open(const ConnectionArgs& args) {
  // The library's reading of the environment, with the backend fixed to HTTP and the address and
  // token taken from the command line (CLI11 already fell back to MSG_QUEUE_ADDR/_TOKEN for them),
  // so that an address is checked exactly as a service's would be.
  const mq::EnvLookup lookup = [&args](std::string_view name) -> std::optional<std::string> {
    if (name == "USE_HTTP_QUEUE") return "true";
    if (name == "MSG_QUEUE_ADDR") return args.addr;
    if (name == "MSG_QUEUE_TOKEN") {
      if (args.token.empty()) return std::nullopt;
      return args.token;
    }
    return mq::process_environment(name);
  };
  auto settings = mq::queue_settings_from_env(lookup);
  if (!settings.ok()) return settings.status();
  auto queue = mq::Queue::http(settings->http);
  if (!queue.ok()) return queue.status();
  // The broker directory takes the addresses in the form the queue normalised them to.
  mq::HttpQueueOptions options = settings->http;
  for (std::string& addr : options.addrs) addr = mq::detail::base_url(*mq::detail::parse_http_base_url(addr));
  return std::unique_ptr<Connection>(new Connection(std::move(options), std::move(queue).value()));
}

Connection::Connection(mq::HttpQueueOptions options, std::unique_ptr<mq::Queue> queue)
    : options_(std::move(options)), queue_(std::move(queue)) {}

Connection::~Connection() = default;

mq::Result<std::vector<PartitionOwner>> Connection::owners(std::string_view topic) {
  if (!directory_) directory_ = std::make_unique<mq::detail::BrokerDirectory>(options_);
  auto layout = directory_->route(topic, std::nullopt);
  if (!layout.ok()) return layout.status();
  std::vector<PartitionOwner> owners;
  for (std::uint32_t p = 0; p < layout->partitions; ++p) {
    auto route = directory_->route(topic, p);
    if (!route.ok()) return route.status();
    owners.push_back({p, route->owner, route->url});
  }
  return owners;
}

mq::Result<std::uint32_t> Connection::partition_count(std::string_view topic) {
  if (!directory_) directory_ = std::make_unique<mq::detail::BrokerDirectory>(options_);
  auto layout = directory_->route(topic, std::nullopt);
  if (!layout.ok()) return layout.status();
  return layout->partitions;
}

mq::Result<mq::TopicStats> Connection::topic_stats(std::string_view topic) {
  if (auto known = partition_count(topic); !known.ok()) return known.status();
  auto stats = queue_->stats(topic);
  if (stats.ok()) {
    if (stats->empty()) return mq::TopicStats{std::string(topic), {}};
    return std::move(stats->front());
  }
  if (stats.status().code() != mq::ErrorCode::kNotFound) return stats.status();
  // The topic exists, yet a broker said 404: a dead-letter topic that broker has not created yet
  // (it does so with its first dead letter), which makes GET /stats?topic= fail there. Every
  // topic's statistics, filtered, hold what the other brokers have.
  auto all = queue_->stats();
  if (!all.ok()) return all.status();
  for (mq::TopicStats& t : *all) {
    if (t.name == topic) return std::move(t);
  }
  return mq::TopicStats{std::string(topic), {}};
}

mq::Result<std::vector<std::string>> Connection::brokers() {
  if (!directory_) directory_ = std::make_unique<mq::detail::BrokerDirectory>(options_);
  return directory_->brokers();
}

}  // namespace mqctl

// The HTTP backend: the Queue over one or more mqd brokers. Each request goes to the partition's
// owner (BrokerDirectory); a consumer holds one event stream per partition, each read by its own
// thread and reconnected with backoff when it drops.
#include <httplib.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>
#include <tuple>

#include "broker_directory.h"
#include "delivery_buffer.h"
#include "delivery_json.h"
#include "mq/topic.h"
#include "queue_backends.h"
#include "record_format.h"
#include "sse_parser.h"

namespace mq::detail {
namespace {

constexpr std::size_t kMaxErrorBody = 64 * 1024;  // of a refused stream's answer, kept for the message

std::string partition_query(std::string_view topic, std::uint32_t partition) {
  return "topic=" + std::string(topic) + "&partition=" + std::to_string(partition);
}

Status check_name(std::string_view what, std::string_view name) {
  if (is_valid_name(name)) return {};
  return Status::invalid_argument("invalid " + std::string(what) + " name \"" + std::string(name) + "\"");
}

// Errors a retry cannot fix: a consumer stops on them instead of reconnecting.
bool is_permanent(const Status& status) {
  switch (status.code()) {
    case ErrorCode::kInvalidArgument:
    case ErrorCode::kNotFound:
    case ErrorCode::kUnauthenticated:
      return true;
    default:
      return false;
  }
}

class HttpConsumer final : public Consumer {
 public:
  HttpConsumer(std::shared_ptr<BrokerDirectory> directory, std::string topic, const ConsumeOptions& options,
               const std::vector<std::uint32_t>& partitions)
      : directory_(std::move(directory)),
        topic_(std::move(topic)),
        group_(options.group),
        // Without a visibility timeout of its own the stream has mqd's VISIBILITY_TIMEOUT_MS, 30 s by
        // default: buffered messages older than that are dropped (they come again).
        buffer_(options.max_inflight, options.visibility_timeout.value_or(std::chrono::seconds(30))),
        streams_(partitions.size()) {
    std::string query = "&group=" + group_ + "&max_inflight=" + std::to_string(options.max_inflight);
    if (options.visibility_timeout)
      query += "&visibility_timeout_ms=" + std::to_string(options.visibility_timeout->count());
    if (options.from == StartPosition::kLatest) query += "&from=latest";
    for (std::size_t i = 0; i < partitions.size(); ++i) {
      streams_[i].partition = partitions[i];
      streams_[i].path = "/consume?" + partition_query(topic_, partitions[i]) + query;
    }
    for (auto& stream : streams_) stream.thread = std::thread([this, &stream] { read_stream(stream); });
  }

  ~HttpConsumer() override {
    buffer_.close();
    std::unique_lock lock(mutex_);
    stopping_ = true;
    changed_.notify_all();
    // Client::stop() ends a request in progress; one that has not opened its socket yet would miss
    // it, so repeat until every reader has finished.
    for (auto& stream : streams_) {
      while (!stream.finished) {
        if (stream.client != nullptr) stream.client->stop();
        changed_.wait_for(lock, std::chrono::milliseconds(20), [&] { return stream.finished; });
      }
    }
    lock.unlock();
    for (auto& stream : streams_) stream.thread.join();
  }

  Result<std::vector<ReceivedMessage>> receive(std::size_t max_messages,
                                               std::chrono::milliseconds timeout) override {
    if (max_messages == 0) return Status::invalid_argument("receive needs max_messages >= 1");
    return buffer_.pop(max_messages, timeout);
  }

 private:
  struct Stream {
    std::uint32_t partition = 0;
    std::string path;
    std::thread thread;
    httplib::Client* client = nullptr;  // GUARDED_BY(mutex_): the request in progress
    bool finished = false;              // GUARDED_BY(mutex_)
  };

  void read_stream(Stream& stream) {
    read_until_stopped(stream);
    std::lock_guard lock(mutex_);
    stream.finished = true;
    changed_.notify_all();
  }

  void read_until_stopped(Stream& stream) {
    const auto& options = directory_->options();
    DeliveryParser parser;
    auto backoff = options.reconnect_backoff_min;
    while (!stopping_) {
      auto route = directory_->route(topic_, stream.partition);
      if (!route.ok() && is_permanent(route.status())) return buffer_.fail(route.status());
      if (stopping_) return;
      if (route.ok()) {
        auto client = directory_->stream_client(route->url);
        {
          std::lock_guard lock(mutex_);
          if (stopping_) return;
          stream.client = client.get();
        }
        HttpReply refused;  // a non-200 answer
        bool delivered = false;
        SseParser events;
        Status bad_event;
        auto result = client->Get(
            stream.path.c_str(),
            [&](const httplib::Response& response) {
              refused.status = response.status;
              return true;
            },
            [&](const char* data, std::size_t size) {
              if (refused.status != 200) {  // read it all (the connection stays usable), keep the start
                refused.body.append(
                    data, std::min(size, kMaxErrorBody - std::min(kMaxErrorBody, refused.body.size())));
                return true;
              }
              std::vector<ReceivedMessage> batch;
              events.feed(std::string_view(data, size), [&](std::string_view json) {
                ReceivedMessage& m = batch.emplace_back();
                m.topic = topic_;
                m.group = group_;
                m.partition = stream.partition;
                if (auto s = parser.parse(json, m); !s.ok()) bad_event = s;
              });
              if (!bad_event.ok()) return false;
              delivered = delivered || !batch.empty();
              buffer_.push(std::move(batch));
              // Take more only when the application has room for it: what waits here is in flight.
              return buffer_.wait_for_room(stream.partition) && !stopping_;
            });
        {
          std::lock_guard lock(mutex_);
          stream.client = nullptr;
        }
        if (stopping_) return;
        if (!bad_event.ok()) return buffer_.fail(bad_event);
        if (delivered) backoff = options.reconnect_backoff_min;
        if (result && refused.status != 200) {
          const Status status = status_of_reply(refused, route->url);
          // A 404 here is a topic this broker does not have yet (a dead-letter topic is made where
          // it is needed): wait for it like for a broker that is down.
          if (status.code() == ErrorCode::kInvalidArgument || status.code() == ErrorCode::kUnauthenticated) {
            return buffer_.fail(status);
          }
          if (status.code() == ErrorCode::kNotOwned) {
            auto owner_url = owner_url_of(refused);
            const bool hinted = owner_url.has_value();
            directory_->learn_owner(status.owner().value_or(0), std::move(owner_url));
            if (hinted) continue;  // straight to the owner it named; otherwise back off below
          }
        } else if (!result && refused.status == 0 &&
                   directory_->try_other_address(route->owner, route->url)) {
          continue;  // BROKER_ADDRS named an address we cannot reach; the one it answered at is next
        }
        // Otherwise the stream ended (mqd stopped) or broke, or mqd was busy: connect again.
      }
      std::unique_lock lock(mutex_);
      changed_.wait_for(lock, backoff, [&] { return stopping_.load(); });
      backoff = std::min(backoff * 2, options.reconnect_backoff_max);
    }
  }

  const std::shared_ptr<BrokerDirectory> directory_;
  const std::string topic_;
  const std::string group_;
  DeliveryBuffer buffer_;
  std::mutex mutex_;
  std::condition_variable changed_;  // stopping_ set, or a reader finished
  std::atomic<bool> stopping_{false};
  std::vector<Stream> streams_;
};

class HttpQueue final : public Queue {
 public:
  explicit HttpQueue(HttpQueueOptions options)
      : directory_(std::make_shared<BrokerDirectory>(std::move(options))) {}

  Result<ProduceResult> produce(std::string_view topic, std::span<const Message> messages,
                                std::optional<std::uint32_t> partition) override {
    if (auto s = check_name("topic", topic); !s.ok()) return s;
    if (messages.empty()) return Status::invalid_argument("nothing to produce");
    auto layout = directory_->route(topic, std::nullopt);
    if (!layout.ok()) return layout.status();
    const std::uint32_t partitions = layout->partitions;
    const std::string body = produce_body(messages);
    if (partition || messages.front().key) {
      const std::uint32_t p = partition ? *partition : partition_for_key(*messages.front().key, partitions);
      return produce_to(topic, p, body, messages.size());
    }
    // The sticky partitioner's choice; a partition whose broker cannot be reached is skipped for the
    // next one, so that one broker down does not stop producers that do not care where messages go.
    Status last;
    const std::uint32_t first = sticky_.next(topic, partitions);
    for (std::uint32_t i = 0; i < partitions; ++i) {
      auto result = produce_to(topic, (first + i) % partitions, body, messages.size());
      if (result.ok() || result.status().code() != ErrorCode::kUnavailable) return result;
      last = result.status();
    }
    return last;
  }

  Result<std::unique_ptr<Consumer>> consume(std::string_view topic, const ConsumeOptions& options) override {
    if (auto s = check_name("topic", topic); !s.ok()) return s;
    if (auto s = check_name("group", options.group); !s.ok()) return s;
    if (options.max_inflight == 0) return Status::invalid_argument("max_inflight must be at least 1");
    auto layout = directory_->route(topic, std::nullopt);
    if (!layout.ok()) return layout.status();
    std::vector<std::uint32_t> partitions = options.partitions;
    if (partitions.empty()) {
      for (std::uint32_t p = 0; p < layout->partitions; ++p) partitions.push_back(p);
    }
    for (std::uint32_t p : partitions) {
      if (p >= layout->partitions) {
        return Status::not_found("topic \"" + std::string(topic) + "\" has no partition " +
                                 std::to_string(p));
      }
    }
    return std::unique_ptr<Consumer>(
        std::make_unique<HttpConsumer>(directory_, std::string(topic), options, partitions));
  }

  Result<std::size_t> ack(std::span<const ReceivedMessage> messages) override {
    // One request per partition and group, sent concurrently: each waits for its own durable write.
    using Where = std::tuple<std::string_view, std::uint32_t, std::string_view>;
    std::map<Where, std::string> bodies;
    for (const auto& m : messages) {
      std::string& body = bodies[{m.topic, m.partition, m.group}];
      body += body.empty() ? "{\"ids\":[" : ",";
      append_json_string(body, m.id);
    }
    std::vector<std::pair<Where, std::string>> requests;
    for (auto& [where, body] : bodies) requests.emplace_back(where, body + "]}");
    auto answers = run_concurrently(requests, [this](const std::pair<Where, std::string>& request) {
      const auto& [topic, partition, group] = request.first;
      return ack_on_owner(topic, partition, group, request.second);
    });
    std::size_t acked = 0;
    for (auto& answer : answers) {
      if (!answer.ok()) return answer.status();
      acked += *answer;
    }
    return acked;
  }

  Status nack(const ReceivedMessage& message, std::chrono::milliseconds delay) override {
    std::string body = "{\"id\":";
    append_json_string(body, message.id);
    if (delay.count() > 0) body += ",\"delay_ms\":" + std::to_string(delay.count());
    body += "}";
    return send_to_owner(message.topic, message.partition, "/nack?", message.group, body).status();
  }

  Status touch(const ReceivedMessage& message) override {
    std::string body = "{\"id\":";
    append_json_string(body, message.id);
    body += "}";
    return send_to_owner(message.topic, message.partition, "/touch?", message.group, body).status();
  }

  std::string_view backend_name() const override { return "http"; }

 private:
  static std::string produce_body(std::span<const Message> messages) {
    std::string body;
    auto append_message = [&](const Message& m) {
      body += "{\"payload\":";
      body += m.payload.json();
      if (m.key) {
        body += ",\"key\":";
        append_json_string(body, *m.key);
      }
      body += "}";
    };
    if (messages.size() == 1) {
      append_message(messages.front());
      return body;
    }
    body = "{\"messages\":[";
    for (std::size_t i = 0; i < messages.size(); ++i) {
      if (i > 0) body += ",";
      append_message(messages[i]);
    }
    body += "]}";
    return body;
  }

  Result<std::size_t> ack_on_owner(std::string_view topic, std::uint32_t partition, std::string_view group,
                                   const std::string& body) {
    auto reply = send_to_owner(topic, partition, "/ack?", group, body);
    if (!reply.ok()) return reply.status();
    const auto answer = nlohmann::json::parse(reply->body, nullptr, false);
    if (!answer.is_object() || !answer.contains("acked") || !answer["acked"].is_number_unsigned()) {
      return Status::io_error("unexpected /ack answer: " + reply->body);
    }
    return answer["acked"].get<std::size_t>();
  }

  Result<ProduceResult> produce_to(std::string_view topic, std::uint32_t partition, const std::string& body,
                                   std::size_t count) {
    auto reply = send_to_owner(topic, partition, "/produce?", "", body);
    if (!reply.ok()) return reply.status();
    const auto answer = nlohmann::json::parse(reply->body, nullptr, false);
    ProduceResult result;
    try {
      result.partition = answer.at("partition").get<std::uint32_t>();
      if (count == 1) {
        result.first_offset = answer.at("offset").get<std::uint64_t>();
        result.ids.push_back(answer.at("id").get<std::string>());
      } else {
        result.first_offset = answer.at("offsets").at(0).get<std::uint64_t>();
        result.ids = answer.at("ids").get<std::vector<std::string>>();
      }
    } catch (const nlohmann::json::exception& e) {
      return Status::io_error("unexpected /produce answer: " + reply->body);
    }
    return result;
  }

  // POSTs to the owner of the partition, following 421s. `group` is added to the query when not empty.
  Result<HttpReply> send_to_owner(std::string_view topic, std::uint32_t partition,
                                  std::string_view route_prefix, std::string_view group,
                                  const std::string& body) {
    if (auto s = check_name("topic", topic); !s.ok()) return s;
    std::string path = std::string(route_prefix) + partition_query(topic, partition);
    if (!group.empty()) {
      if (auto s = check_name("group", group); !s.ok()) return s;
      path += "&group=" + std::string(group);
    }
    for (int attempt = 0; attempt < 4; ++attempt) {
      auto route = directory_->route(topic, partition);
      if (!route.ok()) return route.status();
      auto reply = directory_->post(route->url, path, body);
      if (!reply.ok() && reply.status().code() == ErrorCode::kUnavailable) {
        if (directory_->try_other_address(route->owner, route->url)) continue;
        return Status::unavailable("partition " + std::to_string(partition) + " of topic \"" +
                                   std::string(topic) + "\" is owned by broker " +
                                   std::to_string(route->owner) + " at " + route->url +
                                   ", which cannot be reached (" + reply.status().message() + ")");
      }
      if (!reply.ok()) return reply.status();  // sent, answer lost: the caller decides about a retry
      if (reply->status == 200) return reply;
      Status status = status_of_reply(*reply, route->url);
      if (status.code() != ErrorCode::kNotOwned) return status;
      directory_->learn_owner(status.owner().value_or(0),
                              owner_url_of(*reply));  // a stale map: follow the hint
    }
    return Status::unavailable("the owner of partition " + std::to_string(partition) + " of topic \"" +
                               std::string(topic) + "\" kept moving (421 after 421)");
  }

  std::shared_ptr<BrokerDirectory> directory_;
  StickyPartitioner sticky_;
};

}  // namespace

Result<std::unique_ptr<Queue>> make_http_queue(HttpQueueOptions options) {
  if (options.addrs.empty()) return Status::invalid_argument("no mqd address given");
  for (auto& addr : options.addrs) {
    auto url = parse_http_base_url(addr);
    if (!url.ok()) return url.status();
    addr = base_url(*url);
  }
  return std::unique_ptr<Queue>(std::make_unique<HttpQueue>(std::move(options)));
}

}  // namespace mq::detail

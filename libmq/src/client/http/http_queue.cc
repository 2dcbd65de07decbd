// The HTTP backend: the Queue over one or more mqd brokers. Each request goes to the partition's
// owner (BrokerDirectory); a consumer holds one event stream per partition, each read by its own
// thread and reconnected with backoff when it drops.
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include <simdjson.h>
#include <tuple>

#include "client/delivery_buffer.h"
#include "client/delivery_json.h"
#include "client/http/broker_directory.h"
#include "client/http/sse_parser.h"
#include "client/queue_backends.h"
#include "mq/topic.h"
#include "protocol/http_protocol.h"
#include "storage/record_format.h"

namespace mq::detail {
namespace {

constexpr std::size_t kMaxErrorBody = 64 * 1024;  // of a refused stream's answer, kept for the message

namespace param = http::param;
namespace field = http::field;
using http::append_json_key;
using http::append_query_param;

// "<path>?topic=<topic>&partition=<partition>"
std::string partition_target(std::string_view path, std::string_view topic, std::uint32_t partition) {
  std::string target(path);
  append_query_param(target, param::kTopic, topic);
  append_query_param(target, param::kPartition, std::to_string(partition));
  return target;
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

// How many 421s in a row a request or stream follows before the brokers count as misconfigured.
constexpr std::size_t kMaxMisroutes = 5;
// Replicated brokers: how long a request whose partition's leader cannot be reached waits for
// another replica to take over (the brokers promise LEASE_TTL_S + 2 s; LEASE_TTL_S is 5 by
// default), asking /topics again every kFailoverPoll.
constexpr std::chrono::seconds kFailoverWait{15};
constexpr std::chrono::milliseconds kFailoverPoll{50};
// A produce is sent again (its outcome unknown) only to brokers whose DEDUP_WINDOW_MS is at least
// this: a retry leaves within kFailoverWait of the first attempt, and the new leader compares the
// stored message's time (the old leader's clock) with its own, so twice that leaves room for request
// timeouts and the brokers' clocks differing. With a smaller window a retry could store twice.
constexpr std::chrono::milliseconds kMinDedupWindowForRetries = 2 * kFailoverWait;

// The kNotOwned error for brokers that keep sending a partition's requests elsewhere.
Status misrouted(std::string_view topic, std::uint32_t partition, const std::vector<std::string>& hops) {
  std::string path;
  for (const auto& hop : hops) path += (path.empty() ? "" : ", ") + hop;
  return Status::not_owned("partition " + std::to_string(partition) + " of topic \"" + std::string(topic) +
                               "\": the brokers keep sending its requests elsewhere (" + path +
                               "); check that BROKER_ADDRS lists every broker in BROKER_INDEX order, the "
                               "same on every broker",
                           0);
}

// "<url> says broker <owner> at <owner_url>", for misrouted().
std::string hop_of(const std::string& url, const Status& status,
                   const std::optional<std::string>& owner_url) {
  return url + " says broker " + std::to_string(status.owner().value_or(0)) + " owns it" +
         (owner_url ? " at " + *owner_url : "");
}

// Whether a 421 names the broker that sent it (the same base URL): following it cannot help.
bool points_back(const std::optional<std::string>& owner_url, const std::string& url) {
  if (!owner_url) return false;
  auto parsed = parse_http_base_url(*owner_url);
  return parsed.ok() && base_url(*parsed) == url;
}

// The page a GET /messages answer holds: {"topic", "partition", "log_start_offset", "next_offset",
// "messages": [{"id", <the stored record's fields>}, ...]}. Each message is read by the parser of
// events, which keeps its payload's text as mqd sent it (nlohmann would rewrite big numbers).
Result<ReadPage> parse_read_page(const std::string& body, std::string_view topic, std::uint32_t partition) {
  auto fail = [&](std::string_view why) {
    return Status::io_error("unexpected " + std::string(http::path::kMessages) + " answer (" +
                            std::string(why) + "): " + body.substr(0, 200));
  };
  simdjson::ondemand::parser parser;
  const simdjson::padded_string padded(body);
  simdjson::ondemand::document document;
  simdjson::ondemand::object object;
  if (parser.iterate(padded).get(document) || document.get_object().get(object)) return fail("not an object");
  ReadPage page;
  bool has_start = false;
  bool has_next = false;
  bool has_messages = false;
  DeliveryParser records;
  for (auto member : object) {
    std::string_view name;
    if (member.unescaped_key().get(name)) return fail("a bad field name");
    if (name == field::kLogStartOffset) {
      has_start = !member.value().get_uint64().get(page.log_start_offset);
    } else if (name == field::kNextOffset) {
      has_next = !member.value().get_uint64().get(page.next_offset);
    } else if (name == field::kMessages) {
      simdjson::ondemand::array messages;
      if (member.value().get_array().get(messages)) return fail("messages is not an array");
      for (auto element : messages) {
        std::string_view text;
        if (simdjson::to_json_string(element).get(text)) return fail("a message is not JSON");
        ReceivedMessage& m = page.messages.emplace_back();
        m.topic = std::string(topic);
        m.partition = partition;
        if (auto s = records.parse(text, m); !s.ok()) return fail(s.message());
        m.delivery = 0;  // read, not delivered
      }
      has_messages = true;
    }
  }
  if (!has_start || !has_next || !has_messages)
    return fail("log_start_offset, next_offset or messages missing");
  return page;
}

class HttpConsumer final : public Consumer {
 public:
  // `all_partitions`: the application asked for every partition, so partitions added to the topic
  // later (mqd restarted with more) are read too.
  HttpConsumer(std::shared_ptr<BrokerDirectory> directory, std::string topic, const ConsumeOptions& options,
               const std::vector<std::uint32_t>& partitions, bool all_partitions)
      : directory_(std::move(directory)),
        topic_(std::move(topic)),
        group_(options.group),
        // Without a visibility timeout of its own the stream has mqd's VISIBILITY_TIMEOUT_MS (as
        // /topics says): buffered messages older than that are dropped (they come again).
        buffer_(options.max_inflight, options.visibility_timeout.value_or(directory_->visibility_timeout())) {
    stream_params_ = {{param::kGroup, group_}, {param::kMaxInflight, std::to_string(options.max_inflight)}};
    if (options.visibility_timeout)
      stream_params_.emplace_back(param::kVisibilityTimeoutMs,
                                  std::to_string(options.visibility_timeout->count()));
    if (options.from == StartPosition::kLatest) stream_params_.emplace_back(param::kFrom, param::kFromLatest);
    if (options.ordering)
      stream_params_.emplace_back(param::kOrdering, std::string(to_string(*options.ordering)));
    {
      std::lock_guard lock(mutex_);
      for (std::uint32_t p : partitions) start_stream_locked(p);
    }
    if (all_partitions) watcher_ = std::thread([this] { watch_partitions(); });
  }

  ~HttpConsumer() override {
    buffer_.close();
    std::unique_lock lock(mutex_);
    stopping_ = true;
    changed_.notify_all();
    lock.unlock();
    if (watcher_.joinable()) watcher_.join();  // no stream starts after this
    lock.lock();
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

  // Starts reading `partition`; the lock must be held.
  void start_stream_locked(std::uint32_t partition) {
    Stream& stream = streams_.emplace_back();  // a deque: the other streams do not move
    stream.partition = partition;
    stream.path = partition_target(http::path::kConsume, topic_, partition);
    for (const auto& [name, value] : stream_params_) append_query_param(stream.path, name, value);
    stream.thread = std::thread([this, &stream] { read_stream(stream); });
  }

  // Every metadata_max_age: when the topic has more partitions than this consumer reads (mqd was
  // restarted with more), starts reading the new ones.
  void watch_partitions() {
    const auto period = directory_->options().metadata_max_age;
    std::unique_lock lock(mutex_);
    while (!changed_.wait_for(lock, period, [&] { return stopping_.load(); })) {
      lock.unlock();
      auto layout = directory_->route(topic_, std::nullopt);  // reads /topics when the map is old
      lock.lock();
      if (!layout.ok() || stopping_) continue;
      for (auto p = static_cast<std::uint32_t>(streams_.size()); p < layout->partitions; ++p) {
        start_stream_locked(p);
      }
    }
  }

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
    std::vector<std::string> misroutes;  // the 421s in a row, for the error
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
        if (result && refused.status == 200) misroutes.clear();
        if (result && refused.status != 200) {
          const Status status = status_of_reply(refused, route->url);
          // A 404 here is a topic this broker does not have yet (a dead-letter topic is made where
          // it is needed): wait for it like for a broker that is down.
          // A 409 is another ordering than the group's (ConsumeOptions::ordering): retrying cannot help.
          if (status.code() == ErrorCode::kInvalidArgument || status.code() == ErrorCode::kUnauthenticated ||
              status.code() == ErrorCode::kConflict) {
            return buffer_.fail(status);
          }
          if (status.code() == ErrorCode::kNotFound) directory_->mark_stale();
          if (status.code() != ErrorCode::kNotOwned) misroutes.clear();
          if (status.code() == ErrorCode::kNotOwned) {
            auto owner_url = owner_url_of(refused);
            misroutes.push_back(hop_of(route->url, status, owner_url));
            if (misroutes.size() >= kMaxMisroutes)
              return buffer_.fail(misrouted(topic_, stream.partition, misroutes));
            // The first hint is followed at once; a 421 naming its own broker, or one more 421,
            // waits first (brokers that disagree would otherwise be asked in a tight loop).
            const bool follow_now = owner_url && misroutes.size() == 1 && !points_back(owner_url, route->url);
            directory_->learn_owner(status.owner().value_or(0), std::move(owner_url), topic_,
                                    stream.partition);
            if (follow_now) continue;
          }
        } else if (!result && refused.status == 0 &&
                   directory_->try_other_address(route->owner, route->url)) {
          continue;  // BROKER_ADDRS named an address we cannot reach; the one it answered at is next
        }
        // Otherwise the stream ended (mqd stopped) or broke, or mqd was busy: connect again. A
        // restarted mqd may have more partitions: read the map again soon.
        directory_->mark_stale();
      }
      std::unique_lock lock(mutex_);
      changed_.wait_for(lock, backoff, [&] { return stopping_.load(); });
      backoff = std::min(backoff * 2, options.reconnect_backoff_max);
    }
  }

  const std::shared_ptr<BrokerDirectory> directory_;
  const std::string topic_;
  const std::string group_;
  std::vector<std::pair<std::string_view, std::string>>
      stream_params_;  // /consume's after topic and partition
  DeliveryBuffer buffer_;
  std::mutex mutex_;
  std::condition_variable changed_;  // stopping_ set, or a reader finished
  std::atomic<bool> stopping_{false};
  std::deque<Stream> streams_;  // GUARDED_BY(mutex_) for adding; each reader uses its own
  std::thread watcher_;
};

// GET /stats answered by one broker (API.md; docs/http-api.md for the fields beyond it).
Result<std::vector<TopicStats>> parse_stats(const std::string& body) {
  const auto answer = nlohmann::json::parse(body, nullptr, false);
  const Status unexpected = Status::io_error("unexpected /stats answer: " + body.substr(0, 200));
  if (!answer.is_object() || !answer.contains(field::kTopics) || !answer[field::kTopics].is_array())
    return unexpected;
  auto number = [](const nlohmann::json& object, std::string_view name) -> std::uint64_t {
    auto it = object.find(name);
    return it != object.end() && it->is_number_unsigned() ? it->get<std::uint64_t>() : 0;
  };
  std::vector<TopicStats> topics;
  for (const auto& t : answer[field::kTopics]) {
    if (!t.is_object() || !t.contains(field::kName) || !t[field::kName].is_string() ||
        !t.contains(field::kPartitions) || !t[field::kPartitions].is_array())
      return unexpected;
    TopicStats topic{t[field::kName].get<std::string>(), {}};
    for (const auto& p : t[field::kPartitions]) {
      if (!p.is_object()) return unexpected;
      PartitionStats partition;
      partition.partition = static_cast<std::uint32_t>(number(p, field::kPartition));
      partition.next_offset = number(p, field::kNextOffset);
      partition.log_start_offset = number(p, field::kLogStartOffset);
      partition.segments = number(p, "segments");
      partition.retention_deleted = number(p, "retention_deleted");
      partition.log_bytes = number(p, "log_bytes");
      if (auto groups = p.find("groups"); groups != p.end() && groups->is_array()) {
        for (const auto& g : *groups) {
          if (!g.is_object() || !g.contains("group") || !g["group"].is_string()) return unexpected;
          GroupStats group;
          group.group = g["group"].get<std::string>();
          group.committed_offset = number(g, field::kCommittedOffset);
          group.inflight = number(g, "inflight");
          group.lag = number(g, "lag");
          group.delivered = number(g, "delivered");
          group.acked = number(g, field::kAcked);
          group.redelivered = number(g, "redelivered");
          group.dead_lettered = number(g, "dead_lettered");
          group.delayed = number(g, "delayed");
          group.ordering =
              g.value(field::kOrdering, std::string("none")) == "key" ? Ordering::kKey : Ordering::kNone;
          partition.groups.push_back(std::move(group));
        }
      }
      topic.partitions.push_back(std::move(partition));
    }
    topics.push_back(std::move(topic));
  }
  return topics;
}

class HttpQueue final : public Queue {
 public:
  explicit HttpQueue(HttpQueueOptions options)
      : directory_(std::make_shared<BrokerDirectory>(options)),
        idempotent_produce_(options.idempotent_produce),
        batcher_(options.producer, *this) {}

  Result<ProduceResult> produce(std::string_view topic, std::span<const Message> messages,
                                std::optional<std::uint32_t> partition) override {
    if (auto s = check_name("topic", topic); !s.ok()) return s;
    if (messages.empty()) return Status::invalid_argument("nothing to produce");
    auto layout = directory_->route(topic, std::nullopt);
    if (!layout.ok()) return layout.status();
    const std::uint32_t partitions = layout->partitions;
    // Where the messages go is chosen from what the caller gave (a key, or a dedup_id of its own),
    // before this queue gives ids: a caller's retry of the same batch goes where the first went.
    const auto key = partition_key(messages);
    const bool retries_safe = produce_retries_safe();
    std::vector<Message> with_ids;  // HttpQueueOptions::idempotent_produce
    if (idempotent_produce_ && retries_safe &&
        std::any_of(messages.begin(), messages.end(), [](const Message& m) { return !m.dedup_id; })) {
      with_ids.assign(messages.begin(), messages.end());
      for (Message& m : with_ids) {
        if (!m.dedup_id) m.dedup_id = dedup_ids_.next();
      }
      messages = with_ids;
    }
    const std::string body = produce_body(messages);
    // Every message carries a dedup_id: sending the request again cannot store one twice (within the
    // brokers' DEDUP_WINDOW_MS), so an answer lost or "outcome unknown" may be retried.
    const bool idempotent =
        retries_safe && std::all_of(messages.begin(), messages.end(),
                                    [](const Message& m) { return m.dedup_id.has_value(); });
    if (partition || key) {
      const std::uint32_t p = partition ? *partition : partition_for_key(*key, partitions);
      return produce_to(topic, p, body, messages.size(), idempotent);
    }
    // The sticky partitioner's choice; a partition whose broker cannot be reached is skipped for the
    // next one, so that one broker down does not stop producers that do not care where messages go.
    Status last;
    const std::uint32_t first = sticky_.next(topic, partitions);
    for (std::uint32_t i = 0; i < partitions; ++i) {
      auto result = produce_to(topic, (first + i) % partitions, body, messages.size(), idempotent);
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
      if (p < layout->partitions) continue;
      // Beyond the count the map has: route() asks the brokers again before saying kNotFound.
      if (auto where = directory_->route(topic, p);
          !where.ok() && where.status().code() == ErrorCode::kNotFound) {
        return where.status();
      }
    }
    return std::unique_ptr<Consumer>(std::make_unique<HttpConsumer>(directory_, std::string(topic), options,
                                                                    partitions, options.partitions.empty()));
  }

  Result<std::size_t> ack(std::span<const ReceivedMessage> messages) override {
    // One /ack request per partition and group: {"ids": [...]}.
    return ack_per_partition(messages, [this](std::string_view topic, std::uint32_t partition,
                                              std::string_view group, std::span<const std::string> ids) {
      std::string body = "{";
      append_json_key(body, field::kIds);
      body += '[';
      for (std::size_t i = 0; i < ids.size(); ++i) {
        if (i > 0) body += ',';
        append_json_string(body, ids[i]);
      }
      body += "]}";
      return ack_on_owner(topic, partition, group, body);
    });
  }

  Status nack(const ReceivedMessage& message, std::chrono::milliseconds delay) override {
    std::string body = "{";
    append_json_key(body, field::kId);
    append_json_string(body, message.id);
    if (delay.count() > 0) {
      body += ',';
      append_json_key(body, field::kDelayMs);
      body += std::to_string(delay.count());
    }
    body += "}";
    return send_to_owner(message.topic, message.partition, http::path::kNack, message.group, body).status();
  }

  Status touch(const ReceivedMessage& message) override {
    std::string body = "{";
    append_json_key(body, field::kId);
    append_json_string(body, message.id);
    body += "}";
    return send_to_owner(message.topic, message.partition, http::path::kTouch, message.group, body).status();
  }

  Result<ReadPage> read(std::string_view topic, std::uint32_t partition, const ReadFrom& from,
                        std::size_t limit) override {
    if (auto s = check_read_arguments(from, limit); !s.ok()) return s;
    auto path = owner_target(http::path::kMessages, topic, partition, "");
    if (!path.ok()) return path.status();
    if (from.offset) append_query_param(*path, param::kOffset, std::to_string(*from.offset));
    if (from.timestamp_ms) append_query_param(*path, param::kTimestamp, std::to_string(*from.timestamp_ms));
    append_query_param(*path, param::kLimit, std::to_string(limit));
    auto reply = request_owner(http::Method::kGet, topic, partition, *path, "");
    if (!reply.ok()) return reply.status();
    return parse_read_page(reply->body, topic, partition);
  }

  Result<std::uint64_t> seek(std::string_view topic, std::uint32_t partition, std::string_view group,
                             const SeekTarget& target) override {
    if (auto s = check_seek_target(target); !s.ok()) return s;
    if (auto s = check_name("group", group); !s.ok()) return s;
    // Exactly one of {"offset": N}, {"timestamp": ms}, {"position": "earliest" | "latest"}.
    std::string body = "{";
    if (target.offset) {
      append_json_key(body, field::kOffset);
      body += std::to_string(*target.offset);
    } else if (target.timestamp_ms) {
      append_json_key(body, field::kTimestamp);
      body += std::to_string(*target.timestamp_ms);
    } else {
      append_json_key(body, field::kPosition);
      append_json_string(body, *target.position == SeekTarget::Position::kEarliest ? param::kFromEarliest
                                                                                   : param::kFromLatest);
    }
    body += "}";
    auto reply = send_to_owner(topic, partition, http::path::kSeek, group, body);
    if (!reply.ok()) return reply.status();
    const auto answer = nlohmann::json::parse(reply->body, nullptr, false);
    if (!answer.is_object() || !answer.contains(field::kCommittedOffset) ||
        !answer[field::kCommittedOffset].is_number_unsigned()) {
      return Status::io_error("unexpected " + std::string(http::path::kSeek) + " answer: " + reply->body);
    }
    return answer[field::kCommittedOffset].get<std::uint64_t>();
  }

  Result<std::uint64_t> redrive(std::string_view topic, std::uint32_t partition,
                                std::optional<std::uint64_t> limit) override {
    if (limit && *limit == 0) return Status::invalid_argument("a redrive limit must be at least 1");
    std::string body = "{";
    if (limit) {
      append_json_key(body, field::kLimit);
      body += std::to_string(*limit);
    }
    body += "}";
    auto reply = send_to_owner(topic, partition, http::path::kRedrive, "", body);
    if (!reply.ok()) return reply.status();
    const auto answer = nlohmann::json::parse(reply->body, nullptr, false);
    if (!answer.is_object() || !answer.contains(field::kRedriven) ||
        !answer[field::kRedriven].is_number_unsigned())
      return Status::io_error("unexpected " + std::string(http::path::kRedrive) + " answer: " + reply->body);
    return answer[field::kRedriven].get<std::uint64_t>();
  }

  // Every broker: each removes the group from the partitions it owns.
  Result<bool> delete_group(std::string_view topic, std::string_view group) override {
    if (auto s = check_name("topic", topic); !s.ok()) return s;
    if (auto s = check_name("group", group); !s.ok()) return s;
    if (auto known = directory_->route(topic, std::nullopt); !known.ok()) return known.status();
    auto brokers = directory_->brokers();
    if (!brokers.ok()) return brokers.status();
    std::string path(http::path::kGroup);
    append_query_param(path, param::kTopic, topic);
    append_query_param(path, param::kGroup, group);
    bool deleted = false;
    for (const std::string& url : *brokers) {
      auto reply = directory_->send(http::Method::kDelete, url, path, "");
      if (!reply.ok()) return reply.status();
      if (reply->status == 200) {
        deleted = true;
      } else if (reply->status != 404) {  // 404: no state of the group there
        return status_of_reply(*reply, url);
      }
    }
    return deleted;
  }

  // Every broker's /stats, its partitions merged per topic in partition order.
  Result<std::vector<TopicStats>> stats(std::optional<std::string_view> topic) override {
    if (topic) {
      if (auto s = check_name("topic", *topic); !s.ok()) return s;
      if (auto known = directory_->route(*topic, std::nullopt); !known.ok()) return known.status();
    }
    auto brokers = directory_->brokers();
    if (!brokers.ok()) return brokers.status();
    std::string path(http::path::kStats);
    if (topic) append_query_param(path, param::kTopic, *topic);
    std::map<std::string, TopicStats, std::less<>> merged;
    std::optional<Status> unknown;  // a 404: that broker does not have the topic (yet)
    bool answered = false;
    for (const std::string& url : *brokers) {
      auto reply = directory_->send(http::Method::kGet, url, path, "");
      if (!reply.ok()) return reply.status();
      // A dead-letter topic exists on a broker from its first dead letter there: the others
      // answer 404 until then, which says nothing about the brokers that have it.
      if (topic && reply->status == 404) {
        unknown = status_of_reply(*reply, url);
        continue;
      }
      if (reply->status != 200) return status_of_reply(*reply, url);
      answered = true;
      auto parsed = parse_stats(reply->body);
      if (!parsed.ok()) return parsed.status();
      for (TopicStats& t : *parsed) {
        TopicStats& into = merged[t.name];
        into.name = t.name;
        for (PartitionStats& p : t.partitions) into.partitions.push_back(std::move(p));
      }
    }
    if (!answered && unknown) return *unknown;
    std::vector<TopicStats> out;
    for (auto& [name, t] : merged) {
      std::sort(t.partitions.begin(), t.partitions.end(),
                [](const PartitionStats& a, const PartitionStats& b) { return a.partition < b.partition; });
      out.push_back(std::move(t));
    }
    return out;
  }

  std::string_view backend_name() const override { return "http"; }

 private:
  static std::string produce_body(std::span<const Message> messages) {
    std::string body;
    auto append_message = [&](const Message& m) {
      body += '{';
      append_json_key(body, field::kPayload);
      body += m.payload.json();
      if (m.key) {
        body += ',';
        append_json_key(body, field::kKey);
        append_json_string(body, *m.key);
      }
      if (!m.headers.empty()) {
        body += ',';
        append_json_key(body, field::kHeaders);
        append_json_headers(body, m.headers);
      }
      if (m.delay) {
        body += ',';
        append_json_key(body, field::kDelayMs);
        body += std::to_string(m.delay->count());
      }
      if (m.deliver_at_ms) {
        body += ',';
        append_json_key(body, field::kDeliverAt);
        body += std::to_string(*m.deliver_at_ms);
      }
      if (m.dedup_id) {
        body += ',';
        append_json_key(body, field::kDedupId);
        append_json_string(body, *m.dedup_id);
      }
      body += "}";
    };
    if (messages.size() == 1) {
      append_message(messages.front());
      return body;
    }
    body = "{";
    append_json_key(body, field::kMessages);
    body += '[';
    for (std::size_t i = 0; i < messages.size(); ++i) {
      if (i > 0) body += ",";
      append_message(messages[i]);
    }
    body += "]}";
    return body;
  }

  Result<std::size_t> ack_on_owner(std::string_view topic, std::uint32_t partition, std::string_view group,
                                   const std::string& body) {
    auto reply = send_to_owner(topic, partition, http::path::kAck, group, body);
    if (!reply.ok()) return reply.status();
    const auto answer = nlohmann::json::parse(reply->body, nullptr, false);
    if (!answer.is_object() || !answer.contains(field::kAcked) ||
        !answer[field::kAcked].is_number_unsigned()) {
      return Status::io_error("unexpected /ack answer: " + reply->body);
    }
    return answer[field::kAcked].get<std::size_t>();
  }

  Result<ProduceResult> produce_to(std::string_view topic, std::uint32_t partition, const std::string& body,
                                   std::size_t count, bool idempotent) {
    auto path = owner_target(http::path::kProduce, topic, partition, "");
    if (!path.ok()) return path.status();
    auto reply = request_owner(http::Method::kPost, topic, partition, *path, body, idempotent);
    if (!reply.ok()) return reply.status();
    const auto answer = nlohmann::json::parse(reply->body, nullptr, false);
    ProduceResult result;
    try {
      result.partition = answer.at(field::kPartition).get<std::uint32_t>();
      if (count == 1) {
        result.first_offset = answer.at(field::kOffset).get<std::uint64_t>();
        result.offsets.push_back(result.first_offset);
        result.ids.push_back(answer.at(field::kId).get<std::string>());
        if (answer.value(field::kDuplicate, false)) result.duplicates.push_back(0);
      } else {
        result.offsets = answer.at(field::kOffsets).get<std::vector<std::uint64_t>>();
        result.ids = answer.at(field::kIds).get<std::vector<std::string>>();
        if (auto d = answer.find(field::kDuplicates); d != answer.end())
          result.duplicates = d->get<std::vector<std::size_t>>();
        if (result.offsets.size() != count || result.ids.size() != count) throw std::out_of_range("count");
        result.first_offset = result.offsets.at(0);
      }
    } catch (const std::exception& e) {
      return Status::io_error("unexpected /produce answer: " + reply->body);
    }
    return result;
  }

  // "<route_path>?topic=<topic>&partition=<partition>[&group=<group>]" (`group` when not empty),
  // or kInvalidArgument for a name that is not valid.
  static Result<std::string> owner_target(std::string_view route_path, std::string_view topic,
                                          std::uint32_t partition, std::string_view group) {
    if (auto s = check_name("topic", topic); !s.ok()) return s;
    std::string path = partition_target(route_path, topic, partition);
    if (!group.empty()) {
      if (auto s = check_name("group", group); !s.ok()) return s;
      append_query_param(path, param::kGroup, group);
    }
    return path;
  }

  // POSTs to the owner of the partition, following 421s. `group` is added to the query when not empty.
  Result<HttpReply> send_to_owner(std::string_view topic, std::uint32_t partition,
                                  std::string_view route_path, std::string_view group,
                                  const std::string& body) {
    auto path = owner_target(route_path, topic, partition, group);
    if (!path.ok()) return path.status();
    return request_owner(http::Method::kPost, topic, partition, *path, body);
  }

  // Sends `method` `path` (a target of the partition, see owner_target) with `body` to the owner of
  // the partition, following 421s and asking the brokers again once after a 404. `idempotent`
  // (replicated brokers): a request whose answer was lost or said "outcome unknown" (a leader that
  // died or lost its lease meanwhile) is sent again, to the partition's leader, within the failover
  // window; sending it twice must change nothing more than sending it once.
  Result<HttpReply> request_owner(http::Method method, std::string_view topic, std::uint32_t partition,
                                  const std::string& path, const std::string& body, bool idempotent = false) {
    Status unknown;  // an attempt whose outcome is unknown (idempotent retries)
    auto reply = request_owner(method, topic, partition, path, body, idempotent, unknown);
    // Given up after an attempt that may have been carried out: whatever the last one said, the
    // outcome is unknown (kUnavailable would tell the caller nothing was done).
    if (!reply.ok() && !unknown.ok() && reply.status().code() != ErrorCode::kIOError) {
      return Status::io_error(unknown.message() +
                              "; sending it again then failed: " + reply.status().message());
    }
    return reply;
  }
  Result<HttpReply> request_owner(http::Method method, std::string_view topic, std::uint32_t partition,
                                  const std::string& path, const std::string& body, bool idempotent,
                                  Status& unknown) {
    std::vector<std::string> misroutes;  // the 421s followed, for the error
    bool asked_again = false;            // after a 404
    const auto started = std::chrono::steady_clock::now();
    for (;;) {
      auto route = directory_->route(topic, partition);
      if (!route.ok()) return route.status();
      // A retry after an unknown outcome: the map just read may name a broker whose dedup window
      // is shorter (or unknown), and then it is not sent.
      if (!unknown.ok() && !produce_retries_safe()) {
        return Status::io_error(unknown.message() +
                                "; not sent again: the brokers' dedup window is now too short or unknown");
      }
      auto reply = directory_->send(method, route->url, path, body);
      if (!reply.ok() && reply.status().code() == ErrorCode::kUnavailable) {
        if (directory_->try_other_address(route->owner, route->url)) continue;
        // Replicated: the leader may have died; another replica takes over within the brokers'
        // LEASE_TTL_S + 2 s. The request was not sent (no connection), so sending it again is safe.
        if (directory_->replicated() && std::chrono::steady_clock::now() < started + kFailoverWait) {
          directory_->mark_stale();
          std::this_thread::sleep_for(kFailoverPoll);  // an election elsewhere: nothing here to await
          continue;
        }
        return Status::unavailable("partition " + std::to_string(partition) + " of topic \"" +
                                   std::string(topic) + "\" is owned by broker " +
                                   std::to_string(route->owner) + " at " + route->url +
                                   ", which cannot be reached (" + reply.status().message() + ")");
      }
      const bool may_retry =
          idempotent && produce_retries_safe() && std::chrono::steady_clock::now() < started + kFailoverWait;
      if (!reply.ok()) {  // sent, answer lost: the caller decides about a retry, unless it is safe
        if (!may_retry) return reply.status();
        unknown = reply.status();
        directory_->mark_stale();
        std::this_thread::sleep_for(kFailoverPoll);  // an election elsewhere: nothing here to await
        continue;
      }
      if (reply->status == 200) return reply;
      Status status = status_of_reply(*reply, route->url);
      if (reply->status == 503 && status.code() == ErrorCode::kIOError && may_retry) {  // outcome unknown
        unknown = status;
        directory_->mark_stale();
        std::this_thread::sleep_for(kFailoverPoll);
        continue;
      }
      // Replicated: a plain 503 did nothing (no leader yet, too few replicas in sync, a lease that
      // lapsed): another replica may lead in a moment, so ask again within the failover window. (A
      // write made but not confirmed says "outcome unknown", which status_of_reply turns into
      // kIOError: not retried, the caller decides.)
      if (status.code() == ErrorCode::kUnavailable && directory_->replicated() &&
          std::chrono::steady_clock::now() < started + kFailoverWait) {
        directory_->mark_stale();
        std::this_thread::sleep_for(kFailoverPoll);  // an election elsewhere: nothing here to await
        continue;
      }
      if (status.code() == ErrorCode::kNotFound && !asked_again) {
        // The map may be out of date (the topic was made or moved since): ask again, once, and
        // send again only if that changed where this partition lives. (A 404 changed nothing.)
        asked_again = true;
        directory_->mark_stale();
        auto fresh = directory_->route(topic, partition);
        if (fresh.ok() && (fresh->url != route->url || fresh->partitions != route->partitions)) continue;
        return status;
      }
      if (status.code() != ErrorCode::kNotOwned) return status;
      auto owner_url = owner_url_of(*reply);
      misroutes.push_back(hop_of(route->url, status, owner_url));
      // A 421 that names its own broker cannot be followed; a chain of them means the brokers
      // disagree about the map. Either way BROKER_ADDRS is wrong: say so instead of looping.
      if (points_back(owner_url, route->url) || misroutes.size() >= kMaxMisroutes) {
        return misrouted(topic, partition, misroutes);
      }
      directory_->learn_owner(status.owner().value_or(0), std::move(owner_url), topic,
                              partition);  // a stale map (or a new leader): follow the hint
    }
  }

  // Sending a produce again is safe only where every broker remembers its dedup_ids long enough.
  bool produce_retries_safe() const {
    const auto window = directory_->replicated_dedup_window();
    return window && *window >= kMinDedupWindowForRetries;
  }

  ProduceBatcher& batcher() override { return batcher_; }

  Result<std::uint32_t> key_partition(std::string_view topic, std::string_view key) override {
    if (auto s = check_name("topic", topic); !s.ok()) return s;
    auto layout = directory_->route(topic, std::nullopt);
    if (!layout.ok()) return layout.status();
    return partition_for_key(key, layout->partitions);
  }

  // The dedup_ids this queue gives messages (HttpQueueOptions::idempotent_produce): a random
  // prefix, so that two queues (or two runs of one program) never give the same id.
  class DedupIds {
   public:
    DedupIds() {
      std::random_device random;
      const std::uint64_t bits = (std::uint64_t{random()} << 32) ^ random();
      char hex[17];
      std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(bits));
      prefix_ = std::string("mq-q") + hex + "-";
    }
    std::string next() { return prefix_ + std::to_string(count_.fetch_add(1)); }

   private:
    std::string prefix_;
    std::atomic<std::uint64_t> count_{0};
  };

  std::shared_ptr<BrokerDirectory> directory_;
  const bool idempotent_produce_;
  DedupIds dedup_ids_;
  PartitionTurns sticky_{kStickyRun};
  ProduceBatcher batcher_;  // last: destroyed first, while what it sends through still stands
};

}  // namespace

Result<std::unique_ptr<Queue>> make_http_queue(HttpQueueOptions options) {
  if (options.addrs.empty()) return Status::invalid_argument("no mqd address given");
  if (!options.ca_file.empty()) {
    if (auto s = check_ca_file(options.ca_file); !s.ok()) return s;
  }
  if (options.metadata_max_age <= std::chrono::milliseconds(0)) {
    return Status::invalid_argument("HttpQueueOptions::metadata_max_age must be positive");
  }
  for (auto& addr : options.addrs) {
    auto url = parse_http_base_url(addr);
    if (!url.ok()) return url.status();
    addr = base_url(*url);
  }
  if (auto s = ProduceBatcher::check(options.producer); !s.ok()) return s;
  return std::unique_ptr<Queue>(std::make_unique<HttpQueue>(std::move(options)));
}

}  // namespace mq::detail

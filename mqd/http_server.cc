#include "http_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <cstdio>
#include <cstdlib>
#include <limits>
#include <nlohmann/json.hpp>

#include "connection_server.h"
#include "error_responses.h"
#include "mqd_assets.h"
#include "protocol/http_protocol.h"
#include "replication/replicated_leadership.h"
#include "request_parsing.h"
#include "wire_format.h"

namespace mqd {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kEventsPerWrite = 64;
// How long an event stream waits for messages before it checks that its client is still there: a
// closed client is noticed only on a write or an is_writable() peek (cpp-httplib 0.11.4).
constexpr std::chrono::milliseconds kStreamPoll{250};
// Threads beyond MAX_CONNECTIONS, so that connections over the cap still get their 503.
constexpr std::size_t kSpareThreads = 64;

Param param(const httplib::Request& req, std::string_view name) {
  const std::string key(name);
  if (!req.has_param(key)) return std::nullopt;
  return req.get_param_value(key);
}

// Compares in time that depends only on the lengths, so a token cannot be guessed byte by byte.
bool constant_time_equals(std::string_view a, std::string_view b) {
  unsigned char difference = a.size() == b.size() ? 0 : 1;
  const std::size_t n = std::max(a.size(), b.size());
  for (std::size_t i = 0; i < n; ++i) {
    const char x = i < a.size() ? a[i] : 0;
    const char y = i < b.size() ? b[i] : 0;
    difference |= static_cast<unsigned char>(x ^ y);
  }
  return difference == 0;
}

void send_json(httplib::Response& res, int status, std::string body) {
  res.status = status;
  res.set_content(std::move(body), "application/json");
}

}  // namespace

class HttpServer::Impl {
 public:
  Impl(const DaemonConfig& config, mq::Broker& broker, mq::replication::ReplicatedLeadership* leadership,
       std::string replica_secret)
      : config_(config),
        broker_(broker),
        leadership_(leadership),
        replica_secret_(std::move(replica_secret)),
        open_connections_(std::make_shared<std::atomic<std::size_t>>(0)),
        server_(ConnectionOptions{config.request_timeout, config.max_connections + kSpareThreads,
                                  std::make_shared<std::atomic<std::size_t>>(0), config.tls,
                                  open_connections_}) {
    tune();
    route();
  }

  bool bind() {
    if (bound_) return true;
    if (!server_.bind_to_port(config_.host, config_.port)) return false;
    // cpp-httplib 0.11.4 listens with a backlog of 5: 64 clients connecting at once would wait ~1 s
    // for a SYN retransmit. Listening again on the bound socket raises it.
    if (listen_socket_ >= 0) ::listen(listen_socket_, 4096);
    bound_ = true;
    return true;
  }

  bool serve() {
    if (!bound_) return false;
    if (stopping_) return true;  // stopped already: cpp-httplib would lose a stop() before it listens
    return server_.listen_after_bind();
  }

  void stop() {
    stopping_ = true;
    server_.stop();
  }

 private:
  // Debian's cpp-httplib 0.11.4 defaults that measurably cost latency or connections, each overridden here.
  void tune() {
    server_.set_tcp_nodelay(true);                // else every response waits ~40 ms for a delayed ACK
    server_.set_keep_alive_max_count(1'000'000);  // else a connection closes after 5 requests
    // Bodies are limited by read_body, which reads an oversized one to its end; the library's own
    // limit would leave it unread on the connection.
    server_.set_payload_max_length(std::numeric_limits<std::size_t>::max());
    // An idle keep-alive connection holds no thread and is closed at once by stop().
    server_.set_keep_alive_timeout(5);
    server_.set_socket_options([this](socket_t socket) {
      int yes = 1;
      ::setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
      listen_socket_ = socket;  // only the listening socket passes through here
    });
  }

  void route() {
    server_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      return admit(req, res) ? httplib::Server::HandlerResponse::Unhandled
                             : httplib::Server::HandlerResponse::Handled;
    });
    // Each route of the protocol (mq::http::kRoutes) bound to its handler; every other method on it
    // is a 405 (admit() answers it before routing).
    namespace path = mq::http::path;
    post(path::kProduce, &HttpServer::Impl::produce);
    post(path::kAck, &HttpServer::Impl::ack);
    post(path::kNack, &HttpServer::Impl::nack);
    post(path::kTouch, &HttpServer::Impl::touch);
    post(path::kSeek, &HttpServer::Impl::seek);
    post(path::kRedrive, &HttpServer::Impl::redrive);
    // With a content reader, so that a body is read through read_body (MAX_BODY_BYTES) and thrown
    // away rather than read whole into memory by the library.
    server_.Delete(std::string(path::kGroup), [this](const httplib::Request& req, httplib::Response& res,
                                                     const httplib::ContentReader& reader) {
      if (auto body = read_body(reader, res); !body.ok()) return fail(req, res, body.status());
      delete_group(req, res);
    });
    get(path::kConsume, [this](const httplib::Request& req, httplib::Response& res) { consume(req, res); });
    get(path::kTopics, [this](const httplib::Request&, httplib::Response& res) { topics(res); });
    get(path::kStats, [this](const httplib::Request& req, httplib::Response& res) { stats(req, res); });
    get(path::kHealthz,
        [](const httplib::Request&, httplib::Response& res) { send_json(res, 200, R"({"status":"ok"})"); });
    get(path::kMetrics, [this](const httplib::Request&, httplib::Response& res) { metrics(res); });
    get(path::kMessages, [this](const httplib::Request& req, httplib::Response& res) { messages(req, res); });
    get(path::kReplicaFetch,
        [this](const httplib::Request& req, httplib::Response& res) { replica_fetch(req, res); });
    serve_asset(path::kUi, mqd::assets::kConsolePage, "text/html; charset=utf-8");
    serve_asset(path::kUiScript, mqd::assets::kConsoleScript, "text/javascript; charset=utf-8");
    serve_asset(path::kUiStyle, mqd::assets::kConsoleStyle, "text/css; charset=utf-8");
    serve_asset(path::kOpenApi, mqd::assets::kOpenApiDocument, "application/json");

    // The library's own error responses (404 for unknown paths, 413, 400 for unparsable requests)
    // have empty bodies; every error here is JSON.
    server_.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      const std::string reason = res.status == 404 ? "no route " + req.method + " " + req.path
                                 : res.status == 413
                                     ? "request body larger than MAX_BODY_BYTES"
                                     : "bad request (HTTP status " + std::to_string(res.status) + ")";
      send_json(res, res.status, error_json(reason));
    });
    server_.set_exception_handler(
        [](const httplib::Request& req, httplib::Response& res, std::exception_ptr e) {
          std::string what = "unknown exception";
          try {
            if (e) std::rethrow_exception(e);
          } catch (const std::exception& ex) {
            what = ex.what();
          } catch (...) {
          }
          std::fprintf(stderr, "mqd: error serving %s %s: %s\n", req.method.c_str(), req.path.c_str(),
                       what.c_str());
          send_json(res, 500, error_json("internal error: " + what));
        });
  }

  using BodyHandler = void (HttpServer::Impl::*)(const httplib::Request&, httplib::Response&,
                                                 const httplib::ContentReader&);
  void post(std::string_view path, BodyHandler handler) {
    server_.Post(std::string(path), [this, handler](const httplib::Request& req, httplib::Response& res,
                                                    const httplib::ContentReader& reader) {
      (this->*handler)(req, res, reader);
    });
  }
  void get(std::string_view path, httplib::Server::Handler handler) {
    server_.Get(std::string(path), std::move(handler));
  }
  // A file compiled into mqd (mqd_assets.h). No caching headers beyond a revalidation: a new mqd
  // serves its own console at once.
  void serve_asset(std::string_view path, std::string_view content, const char* content_type) {
    get(path, [content, content_type](const httplib::Request&, httplib::Response& res) {
      res.status = 200;
      res.set_header("Cache-Control", "no-cache");
      res.set_header("X-Content-Type-Options", "nosniff");
      res.set_content(content.data(), content.size(), content_type);
    });
  }

  // The connection cap, the method and the token, checked once before any route.
  bool admit(const httplib::Request& req, httplib::Response& res) {
    // Connections being served (streams included); those still sending their head or idle between
    // requests cost no worker and are cut by REQUEST_TIMEOUT_MS and the keep-alive timeout instead.
    if (open_connections_->load() > config_.max_connections) {
      res.set_header("Connection", "close");
      send_json(res, 503,
                error_json("too many open connections (MAX_CONNECTIONS=" +
                           std::to_string(config_.max_connections) + ")"));
      return false;
    }
    if (stopping_) {
      res.set_header("Connection", "close");
      send_json(res, 503, error_json("mqd is shutting down"));
      return false;
    }
    // Auth before anything that depends on the request: an unauthenticated client learns nothing,
    // not even which methods a route takes.
    if (config_.auth_token && !mq::http::is_public(req.path) && !authenticated(req)) {
      res.set_header("WWW-Authenticate", "Bearer");
      res.set_header("Connection", "close");  // the request body, if any, was not read
      send_json(res, 401, error_json("missing or wrong bearer token (Authorization: Bearer <token>)"));
      return false;
    }
    if (auto route_method = mq::http::method_of(req.path)) {
      const auto method = mq::http::to_string(*route_method);
      if (req.method == method || head_allowed(req, method)) return true;
      res.set_header("Allow", std::string(method));
      res.set_header("Connection", "close");  // the request body, if any, was not read
      send_json(res, 405, error_json("method " + req.method + " is not allowed on " + req.path));
      return false;
    }
    return true;
  }

  bool authenticated(const httplib::Request& req) const {
    const std::string header = req.get_header_value("Authorization");
    const bool bearer =
        header.starts_with("Bearer ") && constant_time_equals(header.substr(7), *config_.auth_token);
    const bool query = req.has_param("access_token") &&
                       constant_time_equals(req.get_param_value("access_token"), *config_.auth_token);
    return bearer || query;
  }

  // HEAD is GET without the body, except on /consume: there a GET opens a subscription (and may
  // create a group), which a HEAD must not.
  static bool head_allowed(const httplib::Request& req, std::string_view method) {
    return req.method == "HEAD" && method == "GET" && req.path != mq::http::path::kConsume;
  }

  void fail(httplib::Response& res, const mq::Status& status) {
    if (http_status_of(status.code()) >= 500) {
      std::fprintf(stderr, "mqd: %s\n", status.to_string().c_str());
    }
    send_json(res, http_status_of(status.code()), error_json(status, config_.broker_addrs));
  }
  // The same for a request naming a partition: replicated, a 421 also names the leader epoch.
  void fail(const httplib::Request& req, httplib::Response& res, const mq::Status& status) {
    if (status.code() != mq::ErrorCode::kNotOwned || leadership_ == nullptr) return fail(res, status);
    const auto epoch =
        leader_epoch(param(req, mq::http::param::kTopic), param(req, mq::http::param::kPartition));
    if (!epoch) return fail(res, status);
    auto body = json::parse(error_json(status, config_.broker_addrs));
    body[mq::http::field::kLeaderEpoch] = *epoch;
    send_json(res, 421, body.dump());
  }
  std::optional<std::uint64_t> leader_epoch(const Param& topic, const Param& partition) const {
    const std::shared_ptr<mq::replication::ReplicaManager> manager =
        leadership_ ? leadership_->manager() : nullptr;
    if (manager == nullptr || !topic || !partition) return std::nullopt;
    auto p = required_partition(partition);
    if (!p.ok()) return std::nullopt;
    auto role = manager->role(*topic, *p);
    if (!role.ok()) return std::nullopt;
    return role->epoch;
  }

  // GET /replica/fetch: a follower's long poll (libmq/docs/replication.md section 4).
  void replica_fetch(const httplib::Request& req, httplib::Response& res) {
    namespace param_name = mq::http::param;
    const std::shared_ptr<mq::replication::ReplicaManager> manager =
        leadership_ ? leadership_->manager() : nullptr;
    if (manager == nullptr) {
      return fail(res,
                  mq::Status::not_found("this broker does not replicate partitions (ETCD_ENDPOINTS unset)"));
    }
    // Only a broker of the cluster may count as a copy of a write: it proves it with the secret the
    // brokers keep in etcd (anyone else could make acknowledged writes rest on one disk).
    if (req.method != "GET" ||
        !constant_time_equals(req.get_header_value(std::string(mq::http::path::kReplicaSecretHeader)),
                              replica_secret_)) {
      return send_json(
          res, 403,
          error_json(req.method != "GET" ? "GET only"
                                         : "a follower's fetch needs the cluster's replication secret"));
    }
    auto topic = required_name(param_name::kTopic, param(req, param_name::kTopic));
    if (!topic.ok()) return fail(req, res, topic.status());
    auto partition = required_partition(param(req, param_name::kPartition));
    if (!partition.ok()) return fail(req, res, partition.status());
    mq::replication::FetchRequest request;
    mq::replication::ReplicaId follower;
    std::uint64_t wait_ms = 0, broker = 0, max_bytes = request.max_bytes;
    struct Number {
      std::string_view name;
      std::uint64_t* target;
      bool required;
    };
    std::uint64_t last_epoch = 0;
    for (const Number& n :
         {Number{param_name::kEpoch, &request.leader_epoch, true},
          Number{param_name::kOffset, &request.offset, true},
          Number{param_name::kLogStart, &request.log_start, true},
          Number{param_name::kDurable, &request.durable, true}, Number{param_name::kBroker, &broker, true},
          Number{param_name::kWaitMs, &wait_ms, false}, Number{param_name::kMaxBytes, &max_bytes, false},
          Number{param_name::kLastEpoch, &last_epoch, false},
          Number{param_name::kStateEpoch, &request.state_epoch, false},
          Number{param_name::kStateVersion, &request.state_version, false}}) {
      const Param value = param(req, n.name);
      if (!value) {
        if (n.required) return fail(res, mq::Status::invalid_argument(std::string(n.name) + " is required"));
        continue;
      }
      auto parsed = parse_unsigned(n.name, *value);
      if (!parsed.ok()) return fail(res, parsed.status());
      *n.target = *parsed;
      if (n.name == param_name::kLastEpoch) request.last_epoch = *parsed;
    }
    if (broker >= broker_.config().broker.count)
      return fail(res, mq::Status::invalid_argument("broker: no such broker index"));
    follower.broker = static_cast<std::uint32_t>(broker);
    const Param disk = param(req, param_name::kDiskId);
    if (!disk || disk->empty() || disk->size() > 64)
      return fail(res, mq::Status::invalid_argument("disk_id is required (1 to 64 characters)"));
    follower.disk_id = *disk;
    request.max_bytes = static_cast<std::size_t>(std::min<std::uint64_t>(max_bytes, std::size_t{8} << 20));
    // A long poll holds a worker: bounded so that a follower cannot hold one for long.
    const auto wait = std::chrono::milliseconds(std::min<std::uint64_t>(wait_ms, 5000));
    auto answer = manager->serve_fetch(*topic, *partition, request, follower, wait);
    if (!answer.ok()) {
      if (answer.status().code() == mq::ErrorCode::kConflict) {
        auto role = manager->role(*topic, *partition);
        json body{{mq::http::field::kError, answer.status().message()}};
        if (role.ok()) body[mq::http::field::kLeaderEpoch] = role->epoch;
        return send_json(res, 409, body.dump());
      }
      return fail(req, res, answer.status());
    }
    res.status = 200;
    res.set_content(mq::replication::encode_fetch_answer(*answer), "application/x-ndjson");
  }

  // Reads the body, keeping at most MAX_BODY_BYTES: past that it goes on reading but throws the rest
  // away (nothing large is held in memory, chunked bodies included) and answers 413. Reading to
  // the end keeps the connection usable: cpp-httplib 0.11.4 cannot close it from a handler, and
  // unread bytes would be taken for the next request.
  mq::Result<std::string> read_body(const httplib::ContentReader& reader, httplib::Response& res) {
    std::string body;
    bool overflow = false;
    const bool complete = reader([&](const char* data, std::size_t length) {
      if (overflow || body.size() + length > config_.max_body_bytes) {
        overflow = true;
        body.clear();
        return true;
      }
      body.append(data, length);
      return true;
    });
    if (overflow) {
      return mq::Status::payload_too_large("request body larger than MAX_BODY_BYTES (" +
                                           std::to_string(config_.max_body_bytes) + ")");
    }
    if (!complete) {
      // The body could not be framed (a broken chunk, a short read): whatever follows on this
      // connection cannot be told apart from the body, so it must not be taken for a next request
      // (request smuggling). Answer and close.
      res.set_header("Connection", "close");
      return mq::Status::invalid_argument("the request body could not be read completely");
    }
    return body;
  }

  void produce(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
    auto body = read_body(reader, res);
    if (!body.ok()) return fail(req, res, body.status());
    auto topic = required_name(mq::http::param::kTopic, param(req, mq::http::param::kTopic));
    if (!topic.ok()) return fail(req, res, topic.status());
    auto partition = optional_partition(param(req, mq::http::param::kPartition));
    if (!partition.ok()) return fail(req, res, partition.status());
    auto parsed = parse_produce_body(*body);
    if (!parsed.ok()) return fail(req, res, parsed.status());
    auto result = broker_.produce(*topic, parsed->messages, *partition);
    if (!result.ok()) return fail(req, res, result.status());
    // Built by hand on the hot path; names and ids never need escaping.
    std::string out;
    const std::string head =
        "\"topic\":\"" + *topic + "\",\"partition\":" + std::to_string(result->partition);
    if (!parsed->batch) {
      out = "{\"id\":\"" + result->ids[0] + "\"," + head +
            ",\"offset\":" + std::to_string(result->first_offset);
      out += result->duplicates.empty() ? "}" : ",\"duplicate\":true}";
    } else {
      out = "{" + head + ",\"ids\":[";
      for (std::size_t i = 0; i < result->ids.size(); ++i) out += (i ? ",\"" : "\"") + result->ids[i] + "\"";
      out += "],\"offsets\":[";
      for (std::size_t i = 0; i < result->offsets.size(); ++i) {
        out += (i ? "," : "") + std::to_string(result->offsets[i]);
      }
      out += "]";
      if (!result->duplicates.empty()) {
        out += ",\"duplicates\":[";
        for (std::size_t i = 0; i < result->duplicates.size(); ++i) {
          out += (i ? "," : "") + std::to_string(result->duplicates[i]);
        }
        out += "]";
      }
      out += "}";
    }
    send_json(res, 200, std::move(out));
  }

  // Resolves topic, partition and group from the query.
  struct GroupTarget {
    std::string topic;
    std::uint32_t partition;
    std::string group;
  };
  mq::Result<GroupTarget> group_target(const httplib::Request& req) {
    auto topic = required_name(mq::http::param::kTopic, param(req, mq::http::param::kTopic));
    if (!topic.ok()) return topic.status();
    auto partition = required_partition(param(req, mq::http::param::kPartition));
    if (!partition.ok()) return partition.status();
    auto group = required_name(mq::http::param::kGroup, param(req, mq::http::param::kGroup));
    if (!group.ok()) return group.status();
    return GroupTarget{*topic, *partition, *group};
  }

  // The per-stream state, shared by the content provider and its release callback.
  struct Stream {
    std::unique_ptr<mq::Subscription> subscription;
    std::string topic;
    Clock::time_point last_write;
  };

  void consume(const httplib::Request& req, httplib::Response& res) {
    auto target = group_target(req);
    if (!target.ok()) return fail(req, res, target.status());
    auto options = subscribe_options(
        param(req, mq::http::param::kVisibilityTimeoutMs), param(req, mq::http::param::kMaxInflight),
        param(req, mq::http::param::kFrom), param(req, mq::http::param::kOrdering));
    if (!options.ok()) return fail(req, res, options.status());
    auto subscription = broker_.subscribe(target->topic, target->partition, target->group, *options);
    if (!subscription.ok() && subscription.status().code() == mq::ErrorCode::kConflict) {
      // Another ordering than the group's: the answer says which one it has (API.md).
      auto group = broker_.group(target->topic, target->partition, target->group);
      json body = json::parse(error_json(subscription.status(), config_.broker_addrs));
      if (group.ok()) body[mq::http::field::kOrdering] = mq::to_string((*group)->ordering());
      return send_json(res, 409, body.dump());
    }
    if (!subscription.ok()) return fail(req, res, subscription.status());
    auto stream =
        std::make_shared<Stream>(Stream{std::move(subscription.value()), target->topic, Clock::now()});
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");  // proxies must pass events on at once
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, stream](std::size_t, httplib::DataSink& sink) { return pump(*stream, sink); },
        [stream](bool) { stream->subscription.reset(); });  // hands what it holds back to the group
  }

  // One turn of an event stream: deliver what is ready in one write, or a keepalive when idle.
  bool pump(Stream& stream, httplib::DataSink& sink) {
    if (stopping_) {
      sink.done();
      return true;
    }
    const auto heartbeat_due = stream.last_write + config_.heartbeat;
    const auto now = Clock::now();
    const auto wait =
        std::min<Clock::duration>(kStreamPoll, heartbeat_due > now ? heartbeat_due - now : Clock::duration{});
    auto deliveries = stream.subscription->next(kEventsPerWrite,
                                                std::chrono::duration_cast<std::chrono::milliseconds>(wait));
    if (!deliveries.ok()) {
      // The broker is stopping: end the stream cleanly. Anything else (a damaged log) ends it too,
      // but never silently.
      // (kNotFound: DELETE /group removed the group, which ends its streams on purpose.)
      if (deliveries.status().code() != mq::ErrorCode::kShuttingDown &&
          deliveries.status().code() != mq::ErrorCode::kNotFound) {
        std::fprintf(stderr, "mqd: event stream of %s ended: %s\n", stream.topic.c_str(),
                     deliveries.status().to_string().c_str());
      }
      sink.done();
      return true;
    }
    if (!deliveries->empty()) {
      std::string events;
      for (const auto& d : *deliveries) append_event(events, stream.topic, d);
      stream.last_write = Clock::now();
      return sink.write(events.data(), events.size());  // every ready event in one write
    }
    if (!sink.is_writable())
      return false;  // the client went away: the release callback ends the subscription
    if (Clock::now() >= heartbeat_due) {
      stream.last_write = Clock::now();
      return sink.write(kKeepaliveEvent.data(), kKeepaliveEvent.size());
    }
    return true;
  }

  // The shape of /ack, /nack and /touch: read the body, resolve (topic, partition, group), parse
  // the body with `parse`, then `act` on the broker, which answers the JSON of a 200 or an error.
  template <typename Parse, typename Act>
  void group_call(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader,
                  Parse parse, Act act) {
    auto body = read_body(reader, res);
    if (!body.ok()) return fail(req, res, body.status());
    auto target = group_target(req);
    if (!target.ok()) return fail(req, res, target.status());
    auto parsed = parse(*body);
    if (!parsed.ok()) return fail(req, res, parsed.status());
    mq::Result<std::string> answer = act(*target, *parsed);
    if (!answer.ok()) return fail(req, res, answer.status());
    send_json(res, 200, std::move(answer.value()));
  }

  static mq::Result<std::string> ok_or(const mq::Status& status) {
    if (!status.ok()) return status;
    return std::string(R"({"ok":true})");
  }

  void ack(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
    group_call(req, res, reader, parse_ack_body,
               [this](const GroupTarget& t, const std::vector<std::string>& ids) -> mq::Result<std::string> {
                 auto acked = broker_.ack(t.topic, t.partition, t.group, ids);
                 if (!acked.ok()) return acked.status();
                 return "{\"acked\":" + std::to_string(*acked) + "}";
               });
  }

  void seek(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
    group_call(req, res, reader, parse_seek_body,
               [this](const GroupTarget& t, const mq::SeekTarget& target) -> mq::Result<std::string> {
                 auto committed = broker_.seek(t.topic, t.partition, t.group, target);
                 if (!committed.ok()) return committed.status();
                 return "{\"committed_offset\":" + std::to_string(*committed) + "}";
               });
  }

  // POST /redrive?topic=<T>-dlq&partition=P: dead letters back to their source (API.md "Operating it").
  void redrive(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
    namespace param = mq::http::param;
    auto body = read_body(reader, res);
    if (!body.ok()) return fail(req, res, body.status());
    auto topic = required_name(param::kTopic, mqd::param(req, param::kTopic));
    if (!topic.ok()) return fail(req, res, topic.status());
    auto partition = required_partition(mqd::param(req, param::kPartition));
    if (!partition.ok()) return fail(req, res, partition.status());
    auto limit = parse_redrive_body(*body);
    if (!limit.ok()) return fail(req, res, limit.status());
    auto redriven = broker_.redrive(*topic, *partition, *limit);
    if (!redriven.ok()) return fail(req, res, redriven.status());
    std::string out = "{";
    mq::http::append_json_key(out, mq::http::field::kRedriven);
    out += std::to_string(*redriven) + "}";
    send_json(res, 200, std::move(out));
  }

  // DELETE /group?topic=T&group=G (API.md "Operating it"); a body, if any, is ignored.
  void delete_group(const httplib::Request& req, httplib::Response& res) {
    namespace param = mq::http::param;
    auto topic = required_name(param::kTopic, mqd::param(req, param::kTopic));
    if (!topic.ok()) return fail(req, res, topic.status());
    auto group = required_name(param::kGroup, mqd::param(req, param::kGroup));
    if (!group.ok()) return fail(req, res, group.status());
    auto deleted = broker_.delete_group(*topic, *group);
    if (!deleted.ok()) return fail(req, res, deleted.status());
    if (!*deleted) {
      return fail(req, res,
                  mq::Status::not_found("consumer group '" + *group +
                                        "' has no state on this broker for topic '" + *topic + "'"));
    }
    std::string out = "{";
    mq::http::append_json_key(out, mq::http::field::kDeleted);
    out += "true}";
    send_json(res, 200, std::move(out));
  }

  void nack(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
    group_call(req, res, reader, parse_nack_body, [this](const GroupTarget& t, const NackBody& nack) {
      return ok_or(broker_.nack(t.topic, t.partition, t.group, nack.id, nack.delay));
    });
  }

  void touch(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
    group_call(req, res, reader, parse_touch_body, [this](const GroupTarget& t, const std::string& id) {
      return ok_or(broker_.touch(t.topic, t.partition, t.group, id));
    });
  }

  void topics(httplib::Response& res) {
    namespace field = mq::http::field;
    json topics = json::array();
    const std::shared_ptr<mq::replication::ReplicaManager> manager =
        leadership_ ? leadership_->manager() : nullptr;
    for (const mq::TopicInfo& topic : broker_.topics()) {
      json entry{
          {field::kName, topic.name}, {field::kPartitions, topic.partitions}, {field::kOwned, topic.owned}};
      if (manager != nullptr) entry[field::kPlacement] = placement(*manager, topic);
      topics.push_back(std::move(entry));
    }
    const mq::BrokerIdentity identity = broker_.config().broker;
    send_json(res, 200,
              json{{field::kBroker, {{field::kIndex, identity.index}, {field::kCount, identity.count}}},
                   {field::kBrokers, config_.broker_addrs},
                   // Clients that do not set a visibility timeout get this one (VISIBILITY_TIMEOUT_MS).
                   {field::kVisibilityTimeoutMs, broker_.config().groups.visibility_timeout.count()},
                   // How long a dedup_id is remembered (DEDUP_WINDOW_MS): the HTTP client retries a
                   // produce whose outcome it does not know only when this covers the retry.
                   {field::kDedupWindowMs, broker_.config().store.dedup_window.count()},
                   {field::kTopics, topics}}
                  .dump());
  }

  // Replicated: who leads each partition of `topic` and which replicas hold it, as this broker
  // knows it (its own copies; a partition it keeps no copy of shows its replicas only).
  json placement(const mq::replication::ReplicaManager& manager, const mq::TopicInfo& topic) const {
    namespace field = mq::http::field;
    const mq::BrokerIdentity identity = broker_.config().broker;
    json list = json::array();
    for (std::uint32_t p = 0; p < topic.partitions; ++p) {
      json replicas = json::array();
      for (std::uint32_t i = 0; i < identity.replicas; ++i) replicas.push_back((p + i) % identity.count);
      json entry{{field::kPartition, p}, {field::kReplicas, replicas}};
      auto role = manager.role(topic.name, p);
      if (role.ok()) {
        entry[field::kLeader] = role->leader ? json(*role->leader) : json(nullptr);
        entry[field::kLeaderEpoch] = role->epoch;
        json isr = json::array();
        for (const auto& member : role->isr) isr.push_back(member.broker);
        if (role->leading) entry[field::kIsr] = isr;
        entry[field::kHighWatermark] = role->high_watermark;
      }
      list.push_back(std::move(entry));
    }
    return list;
  }

  // GET /messages: a page of a partition read without a group; each stored record is spliced in
  // as it is, after its id.
  void messages(const httplib::Request& req, httplib::Response& res) {
    namespace field = mq::http::field;
    using mq::http::append_json_key;
    auto topic = required_name(mq::http::param::kTopic, param(req, mq::http::param::kTopic));
    if (!topic.ok()) return fail(req, res, topic.status());
    auto partition = required_partition(param(req, mq::http::param::kPartition));
    if (!partition.ok()) return fail(req, res, partition.status());
    auto from = read_from(param(req, mq::http::param::kOffset), param(req, mq::http::param::kTimestamp));
    if (!from.ok()) return fail(req, res, from.status());
    auto limit = read_limit(param(req, mq::http::param::kLimit));
    if (!limit.ok()) return fail(req, res, limit.status());
    auto read = broker_.read(*topic, *partition, *from, *limit);
    if (!read.ok()) return fail(req, res, read.status());
    std::string body = "{";
    append_json_key(body, field::kTopic);
    body += json(*topic).dump() + ",";
    append_json_key(body, field::kPartition);
    body += std::to_string(*partition) + ",";
    append_json_key(body, field::kLogStartOffset);
    body += std::to_string(read->log_start_offset) + ",";
    append_json_key(body, field::kNextOffset);
    body += std::to_string(read->next_offset) + ",";
    append_json_key(body, field::kMessages);
    body += '[';
    for (std::size_t i = 0; i < read->messages.size(); ++i) {
      const auto& m = read->messages[i];
      if (i > 0) body += ',';
      body += '{';
      append_json_key(body, field::kId);
      body += '"' + m.id + "\",";  // ids are digits and a dash
      body.append(m.line, 1, std::string::npos);
    }
    body += "]}";
    send_json(res, 200, body);
  }

  void stats(const httplib::Request& req, httplib::Response& res) {
    std::optional<std::string> topic;
    if (req.has_param(std::string(mq::http::param::kTopic))) {
      auto name = required_name(mq::http::param::kTopic, param(req, mq::http::param::kTopic));
      if (!name.ok()) return fail(req, res, name.status());
      topic = *name;
    }
    auto all = broker_.stats(topic ? std::optional<std::string_view>(*topic) : std::nullopt);
    if (!all.ok()) return fail(req, res, all.status());
    const std::shared_ptr<mq::replication::ReplicaManager> manager =
        leadership_ ? leadership_->manager() : nullptr;
    json topics = json::array();
    for (const auto& t : *all) {
      json partitions = json::array();
      for (const auto& p : t.partitions) {
        json groups = json::array();
        for (const auto& g : p.groups) {
          groups.push_back({{"group", g.group},
                            {"committed_offset", g.committed_offset},
                            {"inflight", g.inflight},
                            {"lag", g.lag},
                            {"delivered", g.delivered},
                            {"acked", g.acked},
                            {"redelivered", g.redelivered},
                            {"dead_lettered", g.dead_lettered},
                            {"delayed", g.delayed},
                            {"ordering", mq::to_string(g.ordering)}});
        }
        json partition{{"partition", p.partition},
                       {"next_offset", p.next_offset},
                       {"log_start_offset", p.log_start_offset},
                       {"segments", p.segments},
                       {"log_bytes", p.log_bytes},
                       {"groups", groups}};
        if (manager != nullptr) {
          // Replicated: next_offset is the high watermark (what consumers see); isr who has it.
          if (auto role = manager->role(t.name, p.partition); role.ok()) {
            partition[mq::http::field::kHighWatermark] = role->high_watermark;
            json isr = json::array();
            for (const auto& member : role->isr) isr.push_back(member.broker);
            partition[mq::http::field::kIsr] = isr;
          }
        }
        partitions.push_back(std::move(partition));
      }
      topics.push_back({{"name", t.name}, {"partitions", partitions}});
    }
    send_json(res, 200, json{{"topics", topics}}.dump());
  }

  void metrics(httplib::Response& res) {
    auto all = broker_.stats();
    if (!all.ok()) return fail(res, all.status());
    std::string text = prometheus_text(*all);
    if (const auto manager = leadership_ ? leadership_->manager() : nullptr) {
      std::vector<ReplicaState> replicas;
      const mq::BrokerIdentity identity = broker_.config().broker;
      for (const mq::TopicInfo& topic : broker_.topics()) {
        for (std::uint32_t p = 0; p < topic.partitions; ++p) {
          if (!identity.hosts(p)) continue;
          auto role = manager->role(topic.name, p);
          if (role.ok()) replicas.push_back({topic.name, p, role->leading, role->isr.size()});
        }
      }
      text += prometheus_replication_text(replicas);
    }
    res.status = 200;
    res.set_content(std::move(text), "text/plain; version=0.0.4");
  }

  const DaemonConfig& config_;
  mq::Broker& broker_;
  mq::replication::ReplicatedLeadership* const leadership_;           // nullptr: not replicated
  const std::string replica_secret_;                                  // what followers' fetches must carry
  const std::shared_ptr<std::atomic<std::size_t>> open_connections_;  // busy ones: see ConnectionOptions
  std::atomic<bool> stopping_{false};
  socket_t listen_socket_ = -1;
  bool bound_ = false;
  ConnectionServer server_;  // connections, timeouts, pipelining, TLS
};

HttpServer::HttpServer(const DaemonConfig& config, mq::Broker& broker,
                       mq::replication::ReplicatedLeadership* leadership, std::string replica_secret)
    : impl_(std::make_unique<Impl>(config, broker, leadership, std::move(replica_secret))) {}
HttpServer::~HttpServer() = default;
bool HttpServer::bind() { return impl_->bind(); }
bool HttpServer::serve() { return impl_->serve(); }
void HttpServer::stop() { impl_->stop(); }

}  // namespace mqd

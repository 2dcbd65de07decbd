#include "http_server.h"

#include <httplib.h>

#include <nlohmann/json.hpp>

namespace mqd {
namespace {

using nlohmann::json;

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

void send_error(httplib::Response& res, int status, const std::string& reason) {
  send_json(res, status, json{{"error", reason}});
}

}  // namespace

class HttpServer::Impl {
 public:
  Impl(ServerOptions options, mq::Broker& broker) : options_(std::move(options)), broker_(broker) {
    // cpp-httplib 0.11.4 leaves Nagle on: every response would wait for a delayed ACK (STYLE.md).
    server_.set_tcp_nodelay(true);
    server_.set_keep_alive_max_count(100000);
    server_.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
      send_json(res, 200, json{{"status", "ok"}});
    });
    server_.Get("/topics", [this](const httplib::Request&, httplib::Response& res) { list_topics(res); });
    for (const char* path : {"/healthz", "/topics"}) {
      server_.Post(path, method_not_allowed);
      server_.Put(path, method_not_allowed);
      server_.Delete(path, method_not_allowed);
      server_.Patch(path, method_not_allowed);
    }
    // The library's own error responses have empty bodies; every error here is JSON.
    server_.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      if (res.status == 404) {
        send_error(res, 404, "no route " + req.method + " " + req.path);
      } else {
        send_error(res, res.status, "HTTP status " + std::to_string(res.status));
      }
    });
  }

  bool run() { return server_.listen(options_.host, options_.port); }
  void stop() { server_.stop(); }

 private:
  static void method_not_allowed(const httplib::Request& req, httplib::Response& res) {
    send_error(res, 405, "method " + req.method + " is not allowed on " + req.path);
  }

  void list_topics(httplib::Response& res) const {
    json topics = json::array();
    for (const mq::TopicInfo& topic : broker_.topics()) {
      topics.push_back({{"name", topic.name}, {"partitions", topic.partitions}, {"owned", topic.owned}});
    }
    const mq::BrokerIdentity identity = broker_.config().broker;
    send_json(res, 200,
              json{{"broker", {{"index", identity.index}, {"count", identity.count}}},
                   {"brokers", options_.broker_addrs},
                   {"topics", topics}});
  }

  const ServerOptions options_;
  mq::Broker& broker_;
  httplib::Server server_;
};

HttpServer::HttpServer(ServerOptions options, mq::Broker& broker)
    : impl_(std::make_unique<Impl>(std::move(options), broker)) {}
HttpServer::~HttpServer() = default;
bool HttpServer::run() { return impl_->run(); }
void HttpServer::stop() { impl_->stop(); }

}  // namespace mqd

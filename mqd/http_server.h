// The HTTP binding of mqd: every route of docs/http-api.md onto the Broker. Routes are thin: they
// read the request, call the Broker, and write the answer; errors go through one table.
#pragma once

#include <memory>
#include <string>

#include "daemon_config.h"
#include "mq/broker.h"

namespace mq::replication {
class ReplicatedLeadership;
}

namespace mqd {

// Owns the listening server. serve() blocks serving until stop() is called from another thread.
// The broker must outlive the server.
class HttpServer {
 public:
  // `leadership`: the replication layer the broker was opened with (nullptr: not replicated); it
  // must outlive the server.
  // `replica_secret`: what a follower's /replica/fetch must carry (replication_setup.h).
  HttpServer(const DaemonConfig& config, mq::Broker& broker,
             mq::replication::ReplicatedLeadership* leadership = nullptr, std::string replica_secret = {});
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds host:port and listens, so that connections wait in the backlog from now on; false when the
  // address cannot be bound. Separate from serve() so that mqd says "listening" only once it is.
  // Once bound, later calls do nothing.
  bool bind();
  // Serves the bound address until stop(); false at once without a successful bind(). Returns at once
  // after an earlier stop(); a stop() racing with the start of serving can still be missed by
  // cpp-httplib, so a caller stopping from another thread repeats it until serve() has returned.
  bool serve();
  // Ends open event streams, stops accepting, and makes serve() return once connections are closed.
  void stop();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mqd

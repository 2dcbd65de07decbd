// The HTTP binding of mqd: routes of the API contract onto the library. This first version serves
// what the storage core can answer (GET /healthz, GET /topics); the rest of the contract follows.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "mq/mq.h"

namespace mqd {

struct ServerOptions {
  std::string host = "0.0.0.0";           // listen address
  int port = 8080;                        // PORT
  std::vector<std::string> broker_addrs;  // BROKER_ADDRS, in index order
};

// Owns the listening server. run() blocks in the accept loop until stop() is called from another
// thread. The broker must outlive the server.
class HttpServer {
 public:
  HttpServer(ServerOptions options, mq::Broker& broker);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and serves; false when the port cannot be bound.
  bool run();
  void stop();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mqd

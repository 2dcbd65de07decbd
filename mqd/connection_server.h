// cpp-httplib's Server with mqd's own connection handling (cpp-httplib 0.11.4 gives each
// connection a thread for its whole life, times out each recv() only, reads headers without a
// cap, honours Range and drops pipelined requests):
// - an accepted connection waits for its request head on the HeadReader's one thread, so slow and
//   idle clients hold no worker; the head and body of a request must arrive within
//   REQUEST_TIMEOUT_MS of its first byte, the head is at most 64 KiB (else 431), and `Range` is
//   ignored;
// - a complete head is served by a worker of a pool that grows with busy connections; requests
//   already pipelined behind it are served in order, then the connection goes back to wait;
// - with a TLS context, the connection speaks HTTPS only (the handshake is bounded by the same
//   timeout).
// The routes, handlers and the rest of the server are cpp-httplib's.
#pragma once

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>

#include "connection.h"
#include "connection_pool.h"
#include "head_reader.h"
#include "tls_context.h"

namespace mqd {

struct ConnectionOptions {
  std::chrono::milliseconds request_timeout{10000};  // REQUEST_TIMEOUT_MS
  std::size_t max_workers = 1088;                    // workers serving requests at once
  // Connections from accept to close (503 beyond MAX_CONNECTIONS is decided from it).
  std::shared_ptr<std::atomic<std::size_t>> open_connections = std::make_shared<std::atomic<std::size_t>>(0);
  TlsContext tls;  // null: plain HTTP
  // Connections being served by a worker (a request head arrived, or an event stream is open):
  // MAX_CONNECTIONS is decided from this, so that connections still sending their head, or idle
  // between requests, can never make a produce or ack of another client wait or be refused.
  std::shared_ptr<std::atomic<std::size_t>> busy_connections = std::make_shared<std::atomic<std::size_t>>(0);
  // How long a worker waits for the next request of a connection it answered before handing the
  // connection to the head reader (0: at once).
  std::chrono::microseconds linger{2000};
};

class ConnectionServer : public httplib::Server {
 public:
  explicit ConnectionServer(ConnectionOptions options);
  ~ConnectionServer() override;

  // Stops accepting, closes the connections waiting for a request and ends the reads of requests
  // in progress; listen_after_bind() returns once the workers are done. Hides Server::stop().
  void stop();

 private:
  class AcceptQueue;

  // Called by cpp-httplib for each accepted socket (on the accepting thread here): the connection
  // goes to the head reader and the thread returns at once.
  bool process_and_close_socket(socket_t socket) override;
  // Serves the requests whose heads are unread on `connection`, then hands it back to wait.
  void serve(const std::shared_ptr<Connection>& connection);
  // After an answer, waits up to ConnectionOptions::linger for the next request on `connection`
  // (plain HTTP only); true when a whole head arrived, which the caller serves at once. Bytes
  // read otherwise stay in the connection for the head reader.
  bool await_next_request(Connection& connection);
  void drain();  // after the accept loop ended
  bool stopping() const;

  const ConnectionOptions options_;
  const int stop_fd_;  // readable once stop() was called
  std::atomic<bool> stopping_{false};
  ConnectionPool workers_;
  HeadReader head_reader_;
};

}  // namespace mqd

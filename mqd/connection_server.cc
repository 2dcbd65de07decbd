#include "connection_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>

#include "connection_stream.h"

namespace mqd {
namespace {
constexpr std::size_t kLingerReadChunk = 16 * 1024;  // as the head reader reads
}  // namespace

// cpp-httplib's task queue for accepted sockets: process_and_close_socket only hands the socket
// to the head reader, so it runs on the accepting thread; the queue's shutdown (when the accept
// loop ends) waits for the connections to be done.
class ConnectionServer::AcceptQueue : public httplib::TaskQueue {
 public:
  explicit AcceptQueue(ConnectionServer& server) : server_(server) {}
  void enqueue(std::function<void()> task) override { task(); }
  void shutdown() override { server_.drain(); }

 private:
  ConnectionServer& server_;
};

ConnectionServer::ConnectionServer(ConnectionOptions options)
    : options_(std::move(options)),
      stop_fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)),
      workers_(options_.max_workers),
      head_reader_(options_.request_timeout, [this](std::shared_ptr<Connection> connection) {
        workers_.enqueue([this, connection = std::move(connection)] { serve(connection); });
      }) {
  new_task_queue = [this] { return new AcceptQueue(*this); };
}

ConnectionServer::~ConnectionServer() {
  drain();
  ::close(stop_fd_);
}

void ConnectionServer::stop() {
  if (!stopping_.exchange(true)) {
    const std::uint64_t one = 1;
    (void)!::write(stop_fd_, &one, sizeof one);
  }
  httplib::Server::stop();
  head_reader_.stop();
}

bool ConnectionServer::stopping() const { return stopping_ || svr_sock_ == INVALID_SOCKET; }

void ConnectionServer::drain() {
  head_reader_.stop();
  workers_.shutdown();
}

bool ConnectionServer::process_and_close_socket(socket_t socket) {
  auto connection = std::make_shared<Connection>(socket, options_.tls.get(), options_.open_connections);
  connection->deadline = Clock::now() + options_.request_timeout;  // for the handshake and first head
  head_reader_.park(std::move(connection), std::chrono::seconds(keep_alive_timeout_sec_));
  return true;
}

void ConnectionServer::serve(const std::shared_ptr<Connection>& connection) {
  struct Busy {
    std::atomic<std::size_t>& count;
    explicit Busy(std::atomic<std::size_t>& c) : count(c) { ++count; }
    ~Busy() { --count; }
    Busy(const Busy&) = delete;
    Busy& operator=(const Busy&) = delete;
  } busy(*options_.busy_connections);
  const std::chrono::milliseconds write_timeout =
      std::chrono::seconds(write_timeout_sec_) +
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::microseconds(write_timeout_usec_));
  // A request the head reader handed over: was it sent soon after the previous answer?
  if (connection->answered_at) {
    connection->quick_client = Clock::now() - *connection->answered_at <= options_.linger;
  }
  while (true) {
    // The head of a request is unread on the connection.
    const bool last = ++connection->requests >= keep_alive_max_count_ || stopping();
    bool client_closes = false;
    ConnectionStream stream(*connection, write_timeout, stop_fd_);
    const bool ok = process_request(stream, last, client_closes, nullptr);
    if (!ok || last || client_closes || stream.answer_closes() || stopping()) return;  // closes it
    connection->answered_at = Clock::now();
    connection->absorb_pending();
    const Head head = connection->scan_head();
    switch (head) {
      case Head::kComplete:  // pipelined: served now, in order
        connection->deadline = Clock::now() + options_.request_timeout;
        continue;
      case Head::kTooLarge:
      case Head::kTooManyFields:
        connection->write_now(Connection::refusal(head));
        return;
      case Head::kIncomplete:
        if (connection->unread().empty() && await_next_request(*connection)) continue;
        if (!connection->unread().empty()) connection->deadline = Clock::now() + options_.request_timeout;
        head_reader_.park(connection, std::chrono::seconds(keep_alive_timeout_sec_));
        return;
    }
  }
}

bool ConnectionServer::await_next_request(Connection& connection) {
  // A busy keep-alive client sends its next request soon after the answer: waiting for it here a
  // little spares the hand-off through the head reader (park, two epoll_ctl, its wake-up, the
  // pool's) that made the head reader's one thread the limit of single-message produces. Only for
  // a client whose last request came that soon (so that idle keep-alive connections hold no
  // worker), and without TLS, whose layer may hold bytes a poll cannot see.
  if (options_.linger.count() <= 0 || !connection.quick_client || connection.is_tls() || stopping()) {
    return false;
  }
  pollfd fds[2] = {{connection.fd(), POLLIN, 0}, {stop_fd_, POLLIN, 0}};
  const timespec linger{0, static_cast<long>(std::chrono::nanoseconds(options_.linger).count())};
  // Waiting is not serving: the connection does not count toward MAX_CONNECTIONS meanwhile.
  --*options_.busy_connections;
  const int ready = ::ppoll(fds, 2, &linger, nullptr);
  ++*options_.busy_connections;
  if (ready <= 0 || (fds[0].revents & POLLIN) == 0 || stopping()) {
    connection.quick_client = false;  // not this time: the head reader waits, and judges again
    return false;
  }
  if (connection.read_some(kLingerReadChunk) != Io::kDone)
    return false;  // closed, failed: parked, then closed
  connection.deadline =
      Clock::now() + options_.request_timeout;  // from its first byte, as the head reader does
  return connection.scan_head() == Head::kComplete;
}

}  // namespace mqd

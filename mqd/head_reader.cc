#include "head_reader.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>

namespace mqd {
namespace {

constexpr std::size_t kReadChunk = 16 * 1024;

// A whole answer of the HTTP layer, written before the connection is closed.
std::string closing_answer(int status, const char* reason, std::string_view error) {
  const std::string body = "{\"error\":\"" + std::string(error) + "\"}";
  return "HTTP/1.1 " + std::to_string(status) + " " + reason +
         "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nConnection: close\r\n\r\n" + body;
}

int millis_until(Clock::time_point deadline) {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 1 << 30));
}

}  // namespace

HeadReader::HeadReader(std::chrono::milliseconds request_timeout, Ready ready)
    : request_timeout_(request_timeout),
      ready_(std::move(ready)),
      epoll_fd_(::epoll_create1(EPOLL_CLOEXEC)),
      wake_fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.fd = wake_fd_;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &event);
  thread_ = std::thread([this] { run(); });
}

HeadReader::~HeadReader() {
  stop();
  ::close(wake_fd_);
  ::close(epoll_fd_);
}

void HeadReader::park(std::shared_ptr<Connection> connection, std::chrono::milliseconds keep_alive) {
  {
    std::lock_guard lock(mutex_);
    if (stopped_) return;  // `connection` closes here
    inbox_.push_back({std::move(connection), keep_alive});
  }
  const std::uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
}

void HeadReader::stop() {
  {
    std::lock_guard lock(mutex_);
    stopped_ = true;
  }
  const std::uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
  std::lock_guard join_lock(join_mutex_);
  if (thread_.joinable()) thread_.join();
}

void HeadReader::run() {
  std::vector<epoll_event> events(256);
  while (true) {
    {
      std::lock_guard lock(mutex_);
      if (stopped_) break;
    }
    take_parked();
    const int timeout = deadlines_.empty() ? -1 : millis_until(deadlines_.begin()->first);
    const int n = ::epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), timeout);
    for (int i = 0; i < n; ++i) {
      if (events[i].data.fd == wake_fd_) {
        std::uint64_t count;
        (void)!::read(wake_fd_, &count, sizeof count);
        continue;
      }
      auto it = waiting_.find(events[i].data.fd);
      if (it != waiting_.end()) advance(it->second);
    }
    expire();
  }
  // Stopping: every waiting connection is closed now.
  std::vector<Parked> parked;
  {
    std::lock_guard lock(mutex_);
    parked.swap(inbox_);
  }
  waiting_.clear();
  deadlines_.clear();
}

void HeadReader::take_parked() {
  std::vector<Parked> parked;
  {
    std::lock_guard lock(mutex_);
    parked.swap(inbox_);
  }
  const auto now = Clock::now();
  for (auto& [connection, keep_alive] : parked) {
    Waiting waiting{connection, State::kHead, connection->deadline, EPOLLIN, false};
    if (!connection->handshake_done()) {
      waiting.state = State::kHandshake;
    } else if (connection->requests > 0 && connection->unread().empty()) {
      waiting.state = State::kIdle;  // between requests: the keep-alive timeout applies
      waiting.deadline = now + keep_alive;
    }
    const int fd = connection->fd();
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.fd = fd;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &event) != 0) continue;  // closes it
    deadlines_.emplace(waiting.deadline, fd);
    waiting_.emplace(fd, std::move(waiting));
  }
}

void HeadReader::expire() {
  const auto now = Clock::now();
  // Too slow (or idle too long): closed without an answer, as docs/http-api.md says.
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) release(deadlines_.begin()->second);
}

void HeadReader::set_deadline(Waiting& waiting, Clock::time_point deadline) {
  const int fd = waiting.connection->fd();
  deadlines_.erase({waiting.deadline, fd});
  waiting.deadline = deadline;
  deadlines_.emplace(deadline, fd);
}

void HeadReader::wait_for(Waiting& waiting, std::uint32_t events) {
  if (waiting.events == events) return;
  waiting.events = events;
  epoll_event event{};
  event.events = events;
  event.data.fd = waiting.connection->fd();
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, event.data.fd, &event);
}

std::shared_ptr<Connection> HeadReader::release(int fd) {
  auto it = waiting_.find(fd);
  if (it == waiting_.end()) return nullptr;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  deadlines_.erase({it->second.deadline, fd});
  std::shared_ptr<Connection> connection = std::move(it->second.connection);
  waiting_.erase(it);
  return connection;
}

bool HeadReader::check_first_byte(Waiting& waiting) {
  if (waiting.first_byte_checked) return true;
  const int fd = waiting.connection->fd();
  unsigned char byte = 0;
  const ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;  // nothing yet
  if (n <= 0) {
    release(fd);
    return false;
  }
  waiting.first_byte_checked = true;
  if (byte >= 'A' && byte <= 'Z') {  // a request line, not a TLS record (0x16)
    const std::string answer =
        closing_answer(400, "Bad Request", "this port speaks HTTPS only (TLS_CERT_FILE is set)");
    (void)!::send(fd, answer.data(), answer.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    release(fd);
    return false;
  }
  return true;
}

void HeadReader::advance(Waiting& waiting) {
  Connection& connection = *waiting.connection;
  const int fd = connection.fd();
  if (waiting.state == State::kHandshake) {
    if (!check_first_byte(waiting)) return;
    if (!waiting.first_byte_checked) return;
    switch (connection.handshake()) {
      case Io::kDone:
        waiting.state = State::kHead;  // the deadline of the first request still runs
        wait_for(waiting, EPOLLIN);
        break;  // the request may have come with the handshake's last flight: read on
      case Io::kWantRead:
        return wait_for(waiting, EPOLLIN);
      case Io::kWantWrite:
        return wait_for(waiting, EPOLLOUT);
      default:
        release(fd);
        return;
    }
  }
  while (true) {
    switch (connection.read_some(kReadChunk)) {
      case Io::kDone:
        break;
      case Io::kWantRead:
        return wait_for(waiting, EPOLLIN);
      case Io::kWantWrite:
        return wait_for(waiting, EPOLLOUT);
      default:  // closed or failed
        release(fd);
        return;
    }
    if (waiting.state == State::kIdle) {
      // The first byte of the next request: it has REQUEST_TIMEOUT_MS from now.
      waiting.state = State::kHead;
      set_deadline(waiting, Clock::now() + request_timeout_);
    }
    const Head head = connection.scan_head();
    switch (head) {
      case Head::kIncomplete:
        continue;
      case Head::kTooLarge:
      case Head::kTooManyFields:
        connection.write_now(Connection::refusal(head));
        release(fd);
        return;
      case Head::kComplete: {
        connection.deadline = waiting.deadline;
        ready_(release(fd));
        return;
      }
    }
  }
}

}  // namespace mqd

#include "connection_stream.h"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>

#include <strings.h>
#include <cerrno>

namespace mqd {
namespace {

void ip_and_port(const sockaddr_storage& addr, std::string& ip, int& port) {
  char text[INET6_ADDRSTRLEN] = "";
  if (addr.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(addr);
    ::inet_ntop(AF_INET, &in.sin_addr, text, sizeof text);
    port = ntohs(in.sin_port);
  } else if (addr.ss_family == AF_INET6) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(addr);
    ::inet_ntop(AF_INET6, &in6.sin6_addr, text, sizeof text);
    port = ntohs(in6.sin6_port);
  }
  ip = text;
}

int millis_until(Clock::time_point deadline) {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 1 << 30));
}

}  // namespace

ConnectionStream::ConnectionStream(Connection& connection, std::chrono::milliseconds write_timeout,
                                   int stop_fd)
    : connection_(connection), write_timeout_(write_timeout), stop_fd_(stop_fd) {}

bool ConnectionStream::wait(short events, Clock::time_point deadline, bool watch_stop) const {
  while (true) {
    pollfd fds[2] = {{connection_.fd(), events, 0}, {stop_fd_, POLLIN, 0}};
    const int n = ::poll(fds, watch_stop ? 2 : 1, millis_until(deadline));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;  // the deadline passed
    if (watch_stop && fds[1].revents != 0) return false;
    return true;  // ready, or an error the next call reports
  }
}

bool ConnectionStream::is_readable() const {
  return !connection_.unread().empty() || wait(POLLIN, connection_.deadline, true);
}

bool ConnectionStream::is_writable() const {
  pollfd fd{connection_.fd(), POLLOUT | POLLIN | POLLRDHUP, 0};
  if (::poll(&fd, 1, 0) < 0) return false;
  if (fd.revents & (POLLERR | POLLHUP | POLLRDHUP | POLLNVAL)) return false;
  if (fd.revents & POLLIN) {
    char byte;
    const ssize_t n = ::recv(connection_.fd(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) return false;
  }
  if (fd.revents & POLLOUT) return true;
  // The socket buffer is full: a slow reader gets the write timeout to make room.
  return wait(POLLOUT, Clock::now() + write_timeout_, false);
}

ssize_t ConnectionStream::read(char* ptr, size_t size) {
  if (size == 0) return 0;
  if (connection_.unread().empty()) {
    while (true) {
      const Io io = connection_.read_some(16 * 1024);
      if (io == Io::kDone) break;
      if (io == Io::kClosed) return 0;
      if (io == Io::kFailed) return -1;
      // Bytes that do not arrive by the request's deadline end the request (slow bodies included).
      if (!wait(io == Io::kWantRead ? POLLIN : POLLOUT, connection_.deadline, true)) return -1;
    }
  }
  return static_cast<ssize_t>(connection_.take(ptr, size));
}

ssize_t ConnectionStream::write(const char* ptr, size_t size) {
  if (!head_written_) note_answer_head(std::string_view(ptr, size));
  const auto deadline = Clock::now() + write_timeout_;
  std::size_t done = 0;
  while (done < size) {
    std::size_t written = 0;
    const Io io = connection_.write_some(ptr + done, size - done, written);
    if (io == Io::kDone) {
      done += written;
      continue;
    }
    if (io == Io::kClosed || io == Io::kFailed) return -1;
    if (!wait(io == Io::kWantRead ? POLLIN : POLLOUT, deadline, false)) return -1;
  }
  return static_cast<ssize_t>(size);
}

// cpp-httplib writes an answer's status line and headers in one write; a handler's
// "Connection: close" (401, 503) closes the connection here too, whatever else was sent on it.
void ConnectionStream::note_answer_head(std::string_view bytes) {
  if (!bytes.starts_with("HTTP/1.")) return;
  if (bytes.size() > 12 && bytes.substr(9, 3) == "100") return;  // 100 Continue: the answer follows
  head_written_ = true;
  const std::string_view head = bytes.substr(0, bytes.find("\r\n\r\n"));
  for (std::size_t at = head.find("\r\n"); at != std::string_view::npos; at = head.find("\r\n", at + 2)) {
    const std::string_view line = head.substr(at + 2, head.find("\r\n", at + 2) - (at + 2));
    if (line.size() >= 17 && ::strncasecmp(line.data(), "connection: close", 17) == 0) {
      answer_closes_ = true;
    }
  }
}

void ConnectionStream::get_remote_ip_and_port(std::string& ip, int& port) const {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getpeername(connection_.fd(), reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    ip_and_port(addr, ip, port);
  }
}

void ConnectionStream::get_local_ip_and_port(std::string& ip, int& port) const {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(connection_.fd(), reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    ip_and_port(addr, ip, port);
  }
}

socket_t ConnectionStream::socket() const { return connection_.fd(); }

}  // namespace mqd

#include "connection.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <strings.h>
#include <algorithm>
#include <cerrno>
#include <climits>

namespace mqd {
namespace {

// The outcome of an OpenSSL call that returned `ret` <= 0.
Io tls_outcome(ssl_st* ssl, int ret) {
  switch (SSL_get_error(ssl, ret)) {
    case SSL_ERROR_WANT_READ:
      return Io::kWantRead;
    case SSL_ERROR_WANT_WRITE:
      return Io::kWantWrite;
    case SSL_ERROR_ZERO_RETURN:
      return Io::kClosed;
    case SSL_ERROR_SYSCALL:
      return errno == 0 ? Io::kClosed : Io::kFailed;
    default:
      return Io::kFailed;
  }
}

// A header line named `name` (case-insensitive), e.g. "Range: bytes=0-1".
bool is_header(std::string_view line, std::string_view name) {
  return line.size() > name.size() && line[name.size()] == ':' &&
         ::strncasecmp(line.data(), name.data(), name.size()) == 0;
}

}  // namespace

Connection::Connection(int fd, ssl_ctx_st* tls, std::shared_ptr<std::atomic<std::size_t>> open_connections)
    : fd_(fd), handshake_done_(tls == nullptr), open_connections_(std::move(open_connections)) {
  ++*open_connections_;
  ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
  int yes = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);  // else each answer waits for an ACK
  if (tls != nullptr) {
    ssl_ = SSL_new(tls);
    if (ssl_ != nullptr) {
      SSL_set_fd(ssl_, fd_);
      SSL_set_accept_state(ssl_);
    }
  }
}

Connection::~Connection() {
  if (ssl_ != nullptr) {
    if (handshake_done_) {
      ERR_clear_error();
      SSL_shutdown(ssl_);  // close_notify, best-effort: the socket is non-blocking
    }
    SSL_free(ssl_);
  }
  ::close(fd_);
  ERR_clear_error();
  --*open_connections_;
}

Io Connection::handshake() {
  if (handshake_done_) return Io::kDone;
  if (ssl_ == nullptr) return Io::kFailed;
  ERR_clear_error();
  const int ret = SSL_accept(ssl_);
  if (ret == 1) {
    handshake_done_ = true;
    return Io::kDone;
  }
  const Io outcome = tls_outcome(ssl_, ret);
  return outcome == Io::kClosed ? Io::kFailed : outcome;  // a handshake cut short is a failure
}

Io Connection::read_some(std::size_t max) {
  // Read into a scratch buffer and keep only what came: an idle connection then holds a few bytes,
  // not a 16 KiB buffer.
  char scratch[16 * 1024];
  max = std::min(max, sizeof scratch);
  Io outcome = Io::kDone;
  std::size_t got = 0;
  if (ssl_ != nullptr) {
    ERR_clear_error();
    const int ret = SSL_read(ssl_, scratch, static_cast<int>(max));
    if (ret > 0) {
      got = static_cast<std::size_t>(ret);
    } else {
      outcome = tls_outcome(ssl_, ret);
    }
  } else {
    ssize_t ret;
    do {
      ret = ::recv(fd_, scratch, max, 0);
    } while (ret < 0 && errno == EINTR);
    if (ret > 0) {
      got = static_cast<std::size_t>(ret);
    } else if (ret == 0) {
      outcome = Io::kClosed;
    } else {
      outcome = errno == EAGAIN || errno == EWOULDBLOCK ? Io::kWantRead : Io::kFailed;
    }
  }
  buffer_.append(scratch, got);
  return outcome;
}

Io Connection::write_some(const char* data, std::size_t size, std::size_t& written) {
  written = 0;
  if (ssl_ != nullptr) {
    ERR_clear_error();
    const int ret = SSL_write(ssl_, data, static_cast<int>(std::min<std::size_t>(size, INT_MAX)));
    if (ret > 0) {
      written = static_cast<std::size_t>(ret);
      return Io::kDone;
    }
    return tls_outcome(ssl_, ret);
  }
  ssize_t ret;
  do {
    ret = ::send(fd_, data, size, MSG_NOSIGNAL);
  } while (ret < 0 && errno == EINTR);
  if (ret >= 0) {
    written = static_cast<std::size_t>(ret);
    return Io::kDone;
  }
  return errno == EAGAIN || errno == EWOULDBLOCK ? Io::kWantWrite : Io::kFailed;
}

void Connection::absorb_pending() {
  if (ssl_ == nullptr || !handshake_done_) return;
  while (SSL_pending(ssl_) > 0) {
    if (read_some(static_cast<std::size_t>(SSL_pending(ssl_))) != Io::kDone) return;
  }
}

void Connection::write_now(std::string_view bytes) {
  while (!bytes.empty()) {
    std::size_t written = 0;
    if (write_some(bytes.data(), bytes.size(), written) != Io::kDone || written == 0) return;
    bytes.remove_prefix(written);
  }
}

std::size_t Connection::take(char* out, std::size_t size) {
  const std::size_t n = std::min(size, buffer_.size() - consumed_);
  std::copy_n(buffer_.data() + consumed_, n, out);
  consumed_ += n;
  if (consumed_ == buffer_.size()) {
    if (buffer_.capacity() > kMaxHeadBytes) {
      std::string().swap(buffer_);  // a large read is not kept for the connection's whole life
    } else {
      buffer_.clear();
    }
    consumed_ = scanned_ = 0;
  }
  return n;
}

Head Connection::scan_head() {
  // Empty lines before a request line are allowed (RFC 9112 2.2), e.g. after a POST body.
  while (buffer_.compare(consumed_, 2, "\r\n") == 0) consumed_ += 2;
  if (consumed_ == buffer_.size()) {
    buffer_.clear();
    consumed_ = scanned_ = 0;
    return Head::kIncomplete;
  }
  const std::size_t from = std::max(consumed_, scanned_ >= 3 ? scanned_ - 3 : 0);
  const std::size_t end = buffer_.find("\r\n\r\n", from);
  if (end == std::string::npos) {
    scanned_ = buffer_.size();
    return buffer_.size() - consumed_ > kMaxHeadBytes ? Head::kTooLarge : Head::kIncomplete;
  }
  const std::size_t head_end = end + 4;
  if (head_end - consumed_ > kMaxHeadBytes) return Head::kTooLarge;
  if (!strip_range_headers(head_end)) return Head::kTooManyFields;
  scanned_ = 0;
  return Head::kComplete;
}

bool Connection::strip_range_headers(std::size_t head_end) {
  const std::string_view head = std::string_view(buffer_).substr(consumed_, head_end - consumed_);
  // Lines end at '\n', as cpp-httplib reads them; the last one is the empty line.
  const std::size_t first_line_end = head.find('\n') + 1;
  std::size_t fields = 0;
  bool found = false;
  for (std::size_t at = first_line_end; at < head.size();) {
    const std::size_t line_end = head.find('\n', at) + 1;
    const std::string_view line = head.substr(at, line_end - at);
    if (line_end < head.size() && ++fields > kMaxHeaderFields) return false;
    if (is_header(line, "range") || is_header(line, "if-range")) found = true;
    at = line_end;
  }
  if (!found) return true;
  std::string kept(head.substr(0, first_line_end));
  for (std::size_t at = first_line_end; at < head.size();) {
    const std::size_t line_end = head.find('\n', at) + 1;
    const std::string_view line = head.substr(at, line_end - at);
    if (!is_header(line, "range") && !is_header(line, "if-range")) kept.append(line);
    at = line_end;
  }
  buffer_.replace(consumed_, head_end - consumed_, kept);
  return true;
}

std::string Connection::refusal(Head head) {
  const std::string body =
      head == Head::kTooManyFields
          ? "{\"error\":\"more than " + std::to_string(kMaxHeaderFields) + " request headers\"}"
          : std::string("{\"error\":\"request headers larger than 64 KiB\"}");
  return "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: "
         "application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

}  // namespace mqd

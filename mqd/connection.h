// One accepted client connection of mqd: the socket (non-blocking), its TLS session when mqd
// serves HTTPS, and the bytes read but not yet consumed, which outlive a request so that pipelined
// requests are never lost. Closing (the destructor) also takes it off the count of open
// connections. Used by one thread at a time: the head reader while the connection waits for a
// request head, a worker while a request is served.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

struct ssl_st;      // OpenSSL's SSL
struct ssl_ctx_st;  // OpenSSL's SSL_CTX

namespace mqd {

using Clock = std::chrono::steady_clock;

// What a read, write or handshake step did.
enum class Io {
  kDone,       // bytes moved (or the handshake finished)
  kWantRead,   // nothing now: wait until the socket is readable
  kWantWrite,  // nothing now: wait until the socket is writable
  kClosed,     // the peer closed the connection (end of stream)
  kFailed,     // an error; the connection is unusable
};

// Where the next request head stands in the unread bytes.
enum class Head {
  kIncomplete,
  kComplete,
  kTooLarge,       // more than kMaxHeadBytes: refused with 431
  kTooManyFields,  // more than kMaxHeaderFields header lines: refused with 431
};

class Connection {
 public:
  // Largest request head (request line and headers) mqd reads; larger gets 431.
  static constexpr std::size_t kMaxHeadBytes = 64 * 1024;
  // Most header lines in a request head (Apache's LimitRequestFields); more gets 431.
  static constexpr std::size_t kMaxHeaderFields = 100;
  // The whole 431 answer (with Connection: close) for a refused head.
  static std::string refusal(Head head);

  // Takes `fd` (made non-blocking here) and counts it in `open_connections` until destroyed.
  // With `tls`, a TLS session is created and handshake() must finish before reading.
  Connection(int fd, ssl_ctx_st* tls, std::shared_ptr<std::atomic<std::size_t>> open_connections);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  int fd() const { return fd_; }
  bool is_tls() const { return ssl_ != nullptr; }
  bool handshake_done() const { return handshake_done_; }

  // One non-blocking step of the TLS handshake (kDone at once without TLS).
  Io handshake();
  // One non-blocking read of up to `max` bytes appended to the unread bytes.
  Io read_some(std::size_t max);
  // One non-blocking write; `written` says how much went out.
  Io write_some(const char* data, std::size_t size, std::size_t& written);
  // Moves what the TLS layer has already decrypted into the unread bytes (none without TLS).
  void absorb_pending();
  // Writes `bytes` best-effort without waiting (small answers sent just before closing).
  void write_now(std::string_view bytes);

  // The bytes read but not consumed yet.
  std::string_view unread() const { return std::string_view(buffer_).substr(consumed_); }
  std::size_t take(char* out, std::size_t size);

  // Whether the unread bytes hold a whole request head. A complete head loses its `Range` and
  // `If-Range` lines: mqd ignores ranges on every route.
  Head scan_head();

  // The deadline of the request being read (REQUEST_TIMEOUT_MS from its first byte).
  Clock::time_point deadline;
  // Requests served on this connection.
  std::size_t requests = 0;
  // When its last answer was written, and whether its client sends its next request soon enough
  // after an answer for a worker to wait for it (ConnectionServer::await_next_request).
  std::optional<Clock::time_point> answered_at;
  bool quick_client = false;

 private:
  // Drops the Range and If-Range lines of the head; false when it has too many header lines.
  bool strip_range_headers(std::size_t head_end);

  const int fd_;
  ssl_st* ssl_ = nullptr;
  bool handshake_done_;
  const std::shared_ptr<std::atomic<std::size_t>> open_connections_;
  std::string buffer_;
  std::size_t consumed_ = 0;
  std::size_t scanned_ = 0;  // where the search for the end of the head resumes
};

}  // namespace mqd

// The one thread where mqd's connections wait for a request head, so that a slow or idle client
// holds no worker thread. It finishes TLS handshakes, reads bytes until a whole request head has
// arrived and then hands the connection to `ready` (which serves it on a worker). It closes a
// connection whose head (or handshake) is not complete REQUEST_TIMEOUT_MS after its first byte,
// whose head exceeds 64 KiB (after a 431), or that stays idle past the keep-alive timeout.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "connection.h"

namespace mqd {

class HeadReader {
 public:
  using Ready = std::function<void(std::shared_ptr<Connection>)>;

  HeadReader(std::chrono::milliseconds request_timeout, Ready ready);
  ~HeadReader();  // stop()s
  HeadReader(const HeadReader&) = delete;
  HeadReader& operator=(const HeadReader&) = delete;

  // From any thread: a connection to wait on. A new one (no request served yet) must complete its
  // first request (and handshake) by `connection.deadline`; one that served a request waits idle
  // for up to `keep_alive` for the first byte of the next, unless bytes of it are already unread.
  void park(std::shared_ptr<Connection> connection, std::chrono::milliseconds keep_alive);
  // Closes every waiting connection and ends the thread; connections parked later are closed.
  void stop();

 private:
  enum class State { kHandshake, kIdle, kHead };
  struct Waiting {
    std::shared_ptr<Connection> connection;
    State state;
    Clock::time_point deadline;
    std::uint32_t events;     // what epoll waits for: EPOLLIN, or EPOLLOUT while TLS must write
    bool first_byte_checked;  // TLS: a plain HTTP request is answered in plain text
  };
  struct Parked {
    std::shared_ptr<Connection> connection;
    std::chrono::milliseconds keep_alive;
  };

  void run();
  void take_parked();  // the connections of the inbox start waiting
  void expire();
  // Handshakes and reads what is there; closes the connection or hands it on when it is done.
  void advance(Waiting& waiting);
  // TLS: false (and the connection closed) when the client spoke plain HTTP or went away.
  bool check_first_byte(Waiting& waiting);
  void wait_for(Waiting& waiting, std::uint32_t events);
  void set_deadline(Waiting& waiting, Clock::time_point deadline);
  // Forgets the connection: it is closed unless it was handed on.
  std::shared_ptr<Connection> release(int fd);

  const std::chrono::milliseconds request_timeout_;
  const Ready ready_;
  const int epoll_fd_;
  const int wake_fd_;
  std::mutex mutex_;
  std::vector<Parked> inbox_;  // GUARDED_BY(mutex_)
  bool stopped_ = false;       // GUARDED_BY(mutex_)
  std::mutex join_mutex_;
  std::thread thread_;
  // Owned by the thread:
  std::unordered_map<int, Waiting> waiting_;
  std::set<std::pair<Clock::time_point, int>> deadlines_;
};

}  // namespace mqd

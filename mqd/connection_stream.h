// cpp-httplib's view of one Connection while a worker serves a request on it: reads come from the
// connection's unread bytes first (so bytes of a pipelined request are kept for the next request)
// and then from the socket, waiting at most until the request's deadline; writes wait at most the
// write timeout for room in the socket.
#pragma once

#include <httplib.h>

#include <chrono>

#include "connection.h"

namespace mqd {

class ConnectionStream : public httplib::Stream {
 public:
  // `stop_fd` becomes readable when the server stops: a read waiting for bytes gives up then.
  ConnectionStream(Connection& connection, std::chrono::milliseconds write_timeout, int stop_fd);

  bool is_readable() const override;
  // Whether the client is still there, without waiting when it is (an event stream asks this
  // between events): false once it closed or reset the connection, or when no byte could be
  // written within the write timeout.
  bool is_writable() const override;
  ssize_t read(char* ptr, size_t size) override;
  ssize_t write(const char* ptr, size_t size) override;
  void get_remote_ip_and_port(std::string& ip, int& port) const override;
  void get_local_ip_and_port(std::string& ip, int& port) const override;
  socket_t socket() const override;

  // Whether the answer written said "Connection: close" (the handler asked to close).
  bool answer_closes() const { return answer_closes_; }

 private:
  // Waits until the socket is ready for `events` or `deadline` passes (or the server stops).
  bool wait(short events, Clock::time_point deadline, bool watch_stop) const;
  void note_answer_head(std::string_view bytes);

  Connection& connection_;
  const std::chrono::milliseconds write_timeout_;
  const int stop_fd_;
  bool head_written_ = false;
  bool answer_closes_ = false;
};

}  // namespace mqd

// One blocking hiredis connection (not thread-safe: one user at a time) and what the Redis backend
// needs around it: connecting with AUTH and SELECT, running commands given as argument vectors,
// pipelining, and turning Redis error replies into Status values.
#pragma once

#include <hiredis/hiredis.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mq/queue.h"
#include "mq/status.h"

namespace mq::detail {

struct ReplyDeleter {
  void operator()(redisReply* reply) const {
    if (reply != nullptr) freeReplyObject(reply);
  }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

// The Status for a Redis error reply `text` ("WRONGTYPE Operation against ..."): NOAUTH, WRONGPASS
// and NOPERM -> kUnauthenticated; LOADING, BUSY, MASTERDOWN, TRYAGAIN, CLUSTERDOWN, READONLY and OOM
// -> kUnavailable (retrying later can help); NOGROUP -> kNotFound; WRONGTYPE -> kConflict; anything
// else -> kIOError. The message quotes the reply.
Status status_from_redis_error(std::string_view text);

// The first word of an error reply ("NOSCRIPT", "BUSYGROUP").
std::string_view redis_error_code(std::string_view text);
// The first word of the error reply a Status from status_from_redis_error quotes; empty for any
// other Status.
std::string_view redis_error_code(const Status& status);

class RedisConnection {
 public:
  using Clock = std::chrono::steady_clock;

  // Connects to options.host:options.port within options.connect_timeout (and before `deadline`,
  // when given), sets `command_timeout` as the socket timeout of every command, then AUTH (when
  // options.password is set) and SELECT (when options.db is not 0). kUnavailable naming host:port
  // when the server cannot be reached, kUnauthenticated when it refuses the credentials. The
  // deadline stays set for the commands that follow (see set_deadline).
  static Result<std::unique_ptr<RedisConnection>> connect(const RedisQueueOptions& options,
                                                          std::chrono::milliseconds command_timeout,
                                                          std::optional<Clock::time_point> deadline = {});
  ~RedisConnection();
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  // Runs one command. An error reply becomes its Status (status_from_redis_error). A failure of
  // the connection marks it broken and is kUnavailable when nothing of the command was sent (safe
  // to retry) or kIOError when it was (a timeout waiting for the reply included): Redis may or may
  // not have carried it out.
  Result<ReplyPtr> command(const std::vector<std::string>& args);
  // Sends every command of `commands` before reading any reply. The replies come back in order,
  // error replies included (the caller looks at each); only a failure of the connection fails the
  // whole call, as for command().
  Result<std::vector<ReplyPtr>> pipeline(const std::vector<std::vector<std::string>>& commands);

  // Changes the socket timeout of the following commands (a blocking XREADGROUP needs more).
  void set_command_timeout(std::chrono::milliseconds timeout);
  // Bounds the following commands by `deadline` too (nullopt: only by the command timeout): each
  // waits at most until then, and one started after it fails at once with kUnavailable. This is how
  // a caller's timeout bounds a series of commands when Redis stalls.
  void set_deadline(std::optional<Clock::time_point> deadline) { deadline_ = deadline; }
  // True after an I/O error or a timeout: the connection must be dropped.
  bool broken() const { return broken_; }
  // False when the server has closed the connection (or sent something unasked) while it was idle:
  // a zero-wait poll of the socket. A pooled connection is checked before it is used again.
  bool idle_and_healthy() const;
  // "host:port", for messages.
  const std::string& address() const { return address_; }

 private:
  RedisConnection(redisContext* context, std::string address)
      : context_(context), address_(std::move(address)) {}
  // command() and pipeline(): sends every command, then reads one reply per command.
  Result<std::vector<ReplyPtr>> exchange(const std::vector<const std::vector<std::string>*>& commands);
  // Sets the socket timeout for the next command from the command timeout and the deadline;
  // false when the deadline has passed.
  bool arm_timeout();
  // Writes the buffered commands out: kUnavailable when not a byte left, kIOError when some did.
  Status send_buffered(std::string_view what);
  // The connection failed (it is broken from now on) before `what` was sent, or after.
  Status failed_before_sending(std::string_view what);
  Status failed_after_sending(std::string_view what);

  redisContext* context_;
  std::string address_;
  bool broken_ = false;
  std::chrono::milliseconds command_timeout_{0};
  std::chrono::milliseconds applied_timeout_{0};  // what the socket has now (0: not set yet)
  std::optional<Clock::time_point> deadline_;
};

}  // namespace mq::detail

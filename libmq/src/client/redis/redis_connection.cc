#include "client/redis/redis_connection.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/time.h>

#include <algorithm>
#include <array>
#include <string>

namespace mq::detail {
namespace {

constexpr std::string_view kRedisReplied = "Redis replied: ";

timeval to_timeval(std::chrono::milliseconds ms) {
  if (ms.count() < 1) ms = std::chrono::milliseconds(1);
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

std::vector<const char*> argv_of(const std::vector<std::string>& args, std::vector<size_t>& lengths) {
  std::vector<const char*> argv;
  argv.reserve(args.size());
  lengths.clear();
  lengths.reserve(args.size());
  for (const auto& a : args) {
    argv.push_back(a.data());
    lengths.push_back(a.size());
  }
  return argv;
}

// hiredis writes with write(2): on a connection the server has reset, that raises SIGPIPE, which
// kills a program that has not ignored it. Block SIGPIPE on this thread while a command runs and
// swallow one it raised (the write then fails with EPIPE and the connection counts as broken).
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigemptyset(&pending);
    pending_before_ = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1;
    blocked_ = pthread_sigmask(SIG_BLOCK, &pipe_, &old_) == 0;
  }
  ~SigpipeGuard() {
    if (!blocked_) return;
    if (!pending_before_) {
      sigset_t pending;
      sigemptyset(&pending);
      if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1) {
        const timespec zero{0, 0};
        sigtimedwait(&pipe_, nullptr, &zero);
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

 private:
  sigset_t pipe_;
  sigset_t old_;
  bool pending_before_ = false;
  bool blocked_ = false;
};

}  // namespace

std::string_view redis_error_code(std::string_view text) { return text.substr(0, text.find(' ')); }

std::string_view redis_error_code(const Status& status) {
  const std::string_view message = status.message();
  if (status.ok() || message.substr(0, kRedisReplied.size()) != kRedisReplied) return {};
  return redis_error_code(message.substr(kRedisReplied.size()));
}

Status status_from_redis_error(std::string_view text) {
  const std::string_view code = redis_error_code(text);
  std::string message = std::string(kRedisReplied) + std::string(text);
  if (code == "NOAUTH" || code == "WRONGPASS" || code == "NOPERM") return Status::unauthenticated(message);
  constexpr std::array<std::string_view, 7> kTransient = {"LOADING",     "BUSY",     "MASTERDOWN", "TRYAGAIN",
                                                          "CLUSTERDOWN", "READONLY", "OOM"};
  for (auto transient : kTransient) {
    if (code == transient) return Status::unavailable(message);
  }
  if (code == "NOGROUP") return Status::not_found(message);
  if (code == "WRONGTYPE") return Status::conflict(message);
  return Status::io_error(message);
}

Result<std::unique_ptr<RedisConnection>> RedisConnection::connect(const RedisQueueOptions& options,
                                                                  std::chrono::milliseconds command_timeout,
                                                                  std::optional<Clock::time_point> deadline) {
  std::string address = options.host + ":" + std::to_string(options.port);
  auto connect_timeout = options.connect_timeout;
  if (deadline) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline - Clock::now());
    if (left <= std::chrono::milliseconds(0))
      return Status::unavailable("cannot connect to Redis at " + address + ": out of time");
    connect_timeout = std::min(connect_timeout, left);
  }
  redisContext* context =
      redisConnectWithTimeout(options.host.c_str(), options.port, to_timeval(connect_timeout));
  if (context == nullptr)
    return Status::unavailable("cannot connect to Redis at " + address + ": out of memory");
  if (context->err != 0) {
    Status failed = Status::unavailable("cannot connect to Redis at " + address + ": " + context->errstr);
    redisFree(context);
    return failed;
  }
  std::unique_ptr<RedisConnection> connection(new RedisConnection(context, address));
  connection->set_command_timeout(command_timeout);
  connection->set_deadline(deadline);
  // AUTH and SELECT change nothing that a retry could duplicate: any failure of the connection
  // here is kUnavailable.
  if (!options.password.empty()) {
    std::vector<std::string> auth{"AUTH"};
    if (!options.username.empty()) auth.push_back(options.username);
    auth.push_back(options.password);
    auto reply = connection->command(auth);
    if (!reply.ok()) {
      const Status& s = reply.status();
      if (connection->broken()) return Status::unavailable(s.message());
      if (s.code() == ErrorCode::kUnavailable) return s;
      return Status::unauthenticated("Redis at " + address + " refused AUTH: " + s.message());
    }
  }
  if (options.db != 0) {
    auto reply = connection->command({"SELECT", std::to_string(options.db)});
    if (!reply.ok()) {
      if (connection->broken()) return Status::unavailable(reply.status().message());
      return Status(reply.status().code(), "Redis at " + address + " refused SELECT " +
                                               std::to_string(options.db) + ": " + reply.status().message());
    }
  }
  return connection;
}

RedisConnection::~RedisConnection() { redisFree(context_); }

void RedisConnection::set_command_timeout(std::chrono::milliseconds timeout) {
  command_timeout_ = std::max(timeout, std::chrono::milliseconds(1));
}

bool RedisConnection::arm_timeout() {
  auto timeout = command_timeout_;
  if (deadline_) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline_ - Clock::now());
    if (left <= std::chrono::milliseconds(0)) return false;
    timeout = std::min(timeout, left);
  }
  if (timeout != applied_timeout_) {
    if (redisSetTimeout(context_, to_timeval(timeout)) != REDIS_OK) broken_ = true;
    applied_timeout_ = timeout;
  }
  return !broken_;
}

bool RedisConnection::idle_and_healthy() const {
  if (broken_ || context_->err != 0) return false;
  pollfd p{context_->fd, POLLIN, 0};
  const int n = ::poll(&p, 1, 0);
  // Readable while idle: EOF (the server closed it) or bytes nobody asked for. Either way, drop it.
  return n == 0;
}

Status RedisConnection::failed_before_sending(std::string_view what) {
  broken_ = true;
  std::string reason = context_->err != 0 ? context_->errstr : "out of memory";
  if (reason.empty()) reason = "I/O error";
  return Status::unavailable("Redis at " + address_ + ": " + std::string(what) + " was not sent: " + reason);
}

Status RedisConnection::failed_after_sending(std::string_view what) {
  broken_ = true;
  std::string reason = context_->err != 0 ? context_->errstr : "no reply";
  if (reason.empty() || reason == "Resource temporarily unavailable") reason = "no reply in time";
  // Redis may have carried the command out before the connection failed: not safe to repeat
  // blindly (a produce could be stored twice).
  return Status::io_error("Redis at " + address_ + ": the connection failed after " + std::string(what) +
                          " was sent (" + reason + "): it may or may not have been carried out");
}

Status RedisConnection::send_buffered(std::string_view what) {
  const SigpipeGuard guard;
  bool sent_some = false;  // a write() returned without error: bytes may be on their way
  for (int done = 0; done == 0;) {
    if (redisBufferWrite(context_, &done) != REDIS_OK) {
      return sent_some ? failed_after_sending(what) : failed_before_sending(what);
    }
    sent_some = true;
  }
  return {};
}

Result<ReplyPtr> RedisConnection::command(const std::vector<std::string>& args) {
  auto replies = exchange({&args});
  if (!replies.ok()) return replies.status();
  ReplyPtr reply = std::move(replies->front());
  if (reply->type == REDIS_REPLY_ERROR)
    return status_from_redis_error(std::string_view(reply->str, reply->len));
  return reply;
}

Result<std::vector<ReplyPtr>> RedisConnection::pipeline(
    const std::vector<std::vector<std::string>>& commands) {
  std::vector<const std::vector<std::string>*> each;
  each.reserve(commands.size());
  for (const auto& c : commands) each.push_back(&c);
  return exchange(each);
}

Result<std::vector<ReplyPtr>> RedisConnection::exchange(
    const std::vector<const std::vector<std::string>*>& commands) {
  const std::string what = commands.size() == 1 && !commands[0]->empty()
                               ? commands[0]->front()
                               : std::to_string(commands.size()) + " pipelined commands";
  if (broken_) return Status::unavailable("Redis at " + address_ + ": the connection is broken");
  // Checked before anything is buffered: a connection whose caller ran out of time stays usable.
  if (!arm_timeout()) {
    if (broken_) return failed_before_sending(what);
    return Status::unavailable("Redis at " + address_ + ": " + what + " was not sent: out of time");
  }
  std::vector<size_t> lengths;
  for (const auto* args : commands) {
    auto argv = argv_of(*args, lengths);
    if (redisAppendCommandArgv(context_, static_cast<int>(argv.size()), argv.data(), lengths.data()) !=
        REDIS_OK) {
      return failed_before_sending(what);
    }
  }
  if (Status s = send_buffered(what); !s.ok()) return s;
  const SigpipeGuard guard;
  std::vector<ReplyPtr> replies;
  replies.reserve(commands.size());
  for (std::size_t i = 0; i < commands.size(); ++i) {
    void* raw = nullptr;
    if (redisGetReply(context_, &raw) != REDIS_OK || raw == nullptr) {
      if (raw != nullptr) freeReplyObject(raw);
      return failed_after_sending(what);
    }
    replies.emplace_back(static_cast<redisReply*>(raw));
  }
  return replies;
}

}  // namespace mq::detail

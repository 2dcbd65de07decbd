// Talking to a real mqd from tests: plain requests, and an event-stream reader that collects
// Server-Sent Events on its own thread so that a test can await them with a bounded wait.
#pragma once

#include <httplib.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>

namespace mq::testing {

struct HttpAnswer {
  int status = 0;  // 0 when the request failed at the transport level
  std::string body;
  httplib::Headers headers;
  nlohmann::json json() const { return nlohmann::json::parse(body); }
};

inline HttpAnswer http_post(int port, const std::string& target, const std::string& body,
                            const httplib::Headers& headers = {}) {
  httplib::Client client("127.0.0.1", port);
  auto result = client.Post(target, headers, body, "application/json");
  if (!result) return {};
  return {result->status, result->body, result->headers};
}

inline HttpAnswer http_get(int port, const std::string& target, const httplib::Headers& headers = {}) {
  httplib::Client client("127.0.0.1", port);
  auto result = client.Get(target, headers);
  if (!result) return {};
  return {result->status, result->body, result->headers};
}

struct SseEvent {
  std::string id;
  nlohmann::json data;
};

// One GET /consume stream, read on a thread of its own until close().
class SseStream {
 public:
  SseStream(int port, std::string target, httplib::Headers headers = {}) : client_("127.0.0.1", port) {
    client_.set_read_timeout(std::chrono::seconds(60));  // longer than any heartbeat in the tests
    thread_ = std::thread([this, target = std::move(target), headers = std::move(headers)] {
      auto result = client_.Get(
          target, headers,
          [this](const httplib::Response& response) {
            std::lock_guard lock(mutex_);
            status_ = response.status;
            headers_ = response.headers;
            changed_.notify_all();
            return true;
          },
          [this](const char* data, std::size_t length) {
            feed(std::string_view(data, length));
            return !closing_.load();
          });
      std::lock_guard lock(mutex_);
      if (!status_ && result) status_ = result->status;
      ended_ = true;
      changed_.notify_all();
    });
  }
  ~SseStream() { close(); }
  SseStream(const SseStream&) = delete;
  SseStream& operator=(const SseStream&) = delete;

  // Closes the connection (as a consumer that goes away).
  void close() {
    closing_ = true;
    client_.stop();
    if (thread_.joinable()) thread_.join();
  }

  std::optional<int> status(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, timeout, [&] { return status_.has_value() || ended_; });
    return status_;
  }
  std::string header(const std::string& name) {
    std::lock_guard lock(mutex_);
    auto it = headers_.find(name);
    return it == headers_.end() ? "" : it->second;
  }
  // The next event, waiting up to `timeout`.
  std::optional<SseEvent> next(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock lock(mutex_);
    if (!changed_.wait_for(lock, timeout, [&] { return !events_.empty() || ended_; }) || events_.empty()) {
      return std::nullopt;
    }
    SseEvent event = std::move(events_.front());
    events_.pop_front();
    return event;
  }
  // Events already received, without waiting.
  std::vector<SseEvent> drain() {
    std::lock_guard lock(mutex_);
    std::vector<SseEvent> all(std::make_move_iterator(events_.begin()),
                              std::make_move_iterator(events_.end()));
    events_.clear();
    return all;
  }
  bool wait_for_keepalives(int count, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return keepalives_ >= count; });
  }
  bool wait_ended(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return ended_; });
  }
  std::string raw() {
    std::lock_guard lock(mutex_);
    return raw_;
  }

 private:
  void feed(std::string_view data) {
    std::lock_guard lock(mutex_);
    raw_.append(data);
    buffer_.append(data);
    for (std::size_t end; (end = buffer_.find("\n\n")) != std::string::npos; buffer_.erase(0, end + 2)) {
      const std::string block = buffer_.substr(0, end);
      if (block.starts_with(":")) {
        ++keepalives_;
        continue;
      }
      SseEvent event;
      std::size_t start = 0;
      while (start <= block.size()) {
        const auto nl = block.find('\n', start);
        const std::string line =
            block.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
        if (line.starts_with("id: ")) event.id = line.substr(4);
        if (line.starts_with("data: ")) event.data = nlohmann::json::parse(line.substr(6));
        if (nl == std::string::npos) break;
        start = nl + 1;
      }
      events_.push_back(std::move(event));
    }
    changed_.notify_all();
  }

  httplib::Client client_;
  std::thread thread_;
  std::atomic<bool> closing_{false};
  std::mutex mutex_;
  std::condition_variable changed_;
  std::optional<int> status_;    // GUARDED_BY(mutex_)
  httplib::Headers headers_;     // GUARDED_BY(mutex_)
  std::string buffer_;           // GUARDED_BY(mutex_)
  std::string raw_;              // GUARDED_BY(mutex_)
  std::deque<SseEvent> events_;  // GUARDED_BY(mutex_)
  int keepalives_ = 0;           // GUARDED_BY(mutex_)
  bool ended_ = false;           // GUARDED_BY(mutex_)
};

}  // namespace mq::testing

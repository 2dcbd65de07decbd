// mqctl produce: each line of stdin is a message, sent in batches of --batch lines.
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "commands.h"

namespace mqctl {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The progress line on a terminal: rewritten in place at most a few times a second, erased at the
// end so that the summary stands alone. Nothing when stderr is a file or a pipe (scripts, tests).
class Progress {
 public:
  explicit Progress(Clock::time_point start) : start_(start), enabled_(::isatty(STDERR_FILENO) == 1) {}

  void update(std::uint64_t sent) {
    if (!enabled_ || Clock::now() - shown_at_ < std::chrono::milliseconds(200)) return;
    shown_at_ = Clock::now();
    const double seconds = seconds_since(start_);
    std::cerr << "\r\033[K" << sent << " messages sent, " << human_number(seconds > 0 ? sent / seconds : 0)
              << " msg/s" << std::flush;
    shown_ = true;
  }
  void clear() {
    if (shown_) std::cerr << "\r\033[K" << std::flush;
    shown_ = false;
  }

 private:
  Clock::time_point start_;
  Clock::time_point shown_at_{};
  bool enabled_;
  bool shown_ = false;
};

// Collects lines into messages and sends them a batch at a time, counting what went where.
class BatchSender {
 public:
  BatchSender(const ProduceArgs& args, Context& context) : args_(args), context_(context) {}

  // A line read from stdin as the message it stands for; kInvalidArgument when it is not JSON.
  mq::Result<mq::Message> message_of(const std::string& line) const {
    auto payload = mq::Payload::parse(args_.raw ? json_string(line) : line);
    if (!payload.ok()) return payload.status();
    mq::Message message{.payload = std::move(payload).value(), .key = args_.key, .headers = args_.headers};
    return message;
  }

  void add(mq::Message message) {
    pending_bytes_ += message.payload.json().size();
    pending_.push_back(std::move(message));
  }
  // --batch lines, or fewer that are large: a request stays far below mqd's MAX_BODY_BYTES.
  bool full() const { return pending_.size() >= args_.batch || pending_bytes_ >= kMaxBatchBytes; }

  // Sends what is pending as one batch.
  mq::Status flush() {
    if (pending_.empty()) return {};
    auto result = context_.connection.queue().produce(args_.topic, pending_, args_.partition);
    if (!result.ok()) return result.status();
    sent_ += pending_.size();
    partitions_.insert(result->partition);
    pending_.clear();
    pending_bytes_ = 0;
    return {};
  }

  std::uint64_t sent() const { return sent_; }
  const std::set<std::uint32_t>& partitions() const { return partitions_; }

 private:
  const ProduceArgs& args_;
  Context& context_;
  static constexpr std::size_t kMaxBatchBytes = 1 << 20;  // ProducerOptions::batch_max_bytes's default

  std::vector<mq::Message> pending_;
  std::size_t pending_bytes_ = 0;  // the payloads of pending_
  std::uint64_t sent_ = 0;
  std::set<std::uint32_t> partitions_;
};

// "1 message", "3 messages".
std::string messages(std::uint64_t count) {
  return std::to_string(count) + (count == 1 ? " message" : " messages");
}

std::string partitions_text(const std::set<std::uint32_t>& partitions) {
  std::string out;
  for (std::uint32_t p : partitions) out += (out.empty() ? "" : ",") + std::to_string(p);
  return out.empty() ? "-" : out;
}

}  // namespace

int run_produce(const ProduceArgs& args, Context& context) {
  const Clock::time_point start = Clock::now();
  BatchSender sender(args, context);
  Progress progress(start);
  auto failed = [&](const std::string& what, const mq::Status& status) {
    progress.clear();
    const int code = context.report.fail(what, status);
    context.report.note(messages(sender.sent()) + " sent before the failure");
    return code;
  };

  std::string line;
  std::uint64_t line_number = 0;
  while (std::getline(std::cin, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();  // a file written on Windows
    // Blank lines (a trailing newline, spacing in a hand-written file) are no JSON value: skip them
    // rather than fail; with --raw every line is a string, the empty one too.
    if (!args.raw && line.find_first_not_of(" \t") == std::string::npos) continue;
    auto message = sender.message_of(line);
    if (!message.ok()) {
      // What came before the bad line is sent, so that "N sent" is exactly lines 1 to N.
      if (mq::Status s = sender.flush(); !s.ok()) return failed("producing to " + args.topic, s);
      progress.clear();
      context.report.fail(
          "line " + std::to_string(line_number) + " is not valid JSON (use --raw to send lines as strings)",
          message.status());
      context.report.note(messages(sender.sent()) + " sent before line " + std::to_string(line_number) +
                          ", none after");
      return kExitFailed;
    }
    sender.add(std::move(message).value());
    if (sender.full()) {
      if (mq::Status s = sender.flush(); !s.ok()) return failed("producing to " + args.topic, s);
      progress.update(sender.sent());
    }
  }
  if (mq::Status s = sender.flush(); !s.ok()) return failed("producing to " + args.topic, s);
  progress.clear();

  const double seconds = seconds_since(start);
  const double rate = seconds > 0 ? static_cast<double>(sender.sent()) / seconds : 0;
  if (args.json) {
    std::cout << nlohmann::json{{"topic", args.topic},
                                {"messages", sender.sent()},
                                {"partitions", sender.partitions()},
                                {"seconds", seconds}}
                     .dump()
              << std::endl;
    return 0;
  }
  std::cout << "produced " << messages(sender.sent()) << " to " << args.topic
            << (sender.partitions().size() == 1 ? " (partition " : " (partitions ")
            << partitions_text(sender.partitions()) << ") in " << human_number(seconds) << " s, "
            << human_number(rate) << " msg/s" << std::endl;
  return 0;
}

}  // namespace mqctl

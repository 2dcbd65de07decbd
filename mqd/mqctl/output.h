// What mqctl prints besides tables: failures on stderr with their exit status, messages as JSON
// lines, sizes and rates for people.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <mq/queue.h>

namespace mqctl {

// Exit statuses: 0 done, 1 a request failed (the brokers said no, or could not be reached), 2 the
// command line or configuration is wrong (CLI11's errors, an invalid address, a name or value the
// library or a broker refused as invalid).
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;

// Reports failures of one command on stderr as "mqctl <command>: <what>: <reason>". Not thread-safe.
class Reporter {
 public:
  explicit Reporter(std::string command) : command_(std::move(command)) {}

  // Prints the failure and returns its exit status: kExitUsage for kInvalidArgument, else kExitFailed.
  int fail(std::string_view what, const mq::Status& status) const;
  // Prints a failure that has no Status and returns kExitFailed.
  int fail(std::string_view what) const;
  // A line on stderr that is not a failure ("mqctl produce: 3 messages sent before line 4").
  void note(std::string_view text) const;

 private:
  std::string command_;
};

// How consume and tail print a message: one JSON object per line, {"topic", "partition", "offset",
// "id", "timestamp", ["delivery",] "key" (null when none), "headers" (an object, in their order),
// "payload" (as produced, byte for byte)} — or the payload alone.
struct MessageFormat {
  bool payload_only = false;
  bool with_delivery = false;  // consume: deliveries count; tail reads, so it has none
};
std::string message_line(const mq::ReceivedMessage& message, const MessageFormat& format);

// A JSON string literal of `text` (invalid UTF-8 replaced, never a throw).
std::string json_string(std::string_view text);

// "0B", "812B", "1.5KiB", "12.0MiB": a size without a blank, so that tables split on blanks.
std::string human_bytes(std::uint64_t bytes);
// "1234.5", "12.0", "0.003": seconds or a rate with as many digits as help reading it.
std::string human_number(double value);

}  // namespace mqctl

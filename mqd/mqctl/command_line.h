// mqctl's arguments: one plain struct per command, filled by CommandLine from argv with CLI11.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace CLI {
class App;
}

namespace mqctl {

// Where the brokers are and how to authenticate (every command).
struct ConnectionArgs {
  // Comma-separated base URLs of one or more brokers (--addr, else MSG_QUEUE_ADDR).
  std::string addr = "http://127.0.0.1:8080";
  // Sent as a bearer token when not empty (--token, else MSG_QUEUE_TOKEN).
  std::string token;
};

struct TopicsArgs {
  bool json = false;
};

struct StatsArgs {
  std::optional<std::string> topic;  // nullopt: every topic
  bool json = false;
};

struct ProduceArgs {
  std::string topic;
  std::optional<std::string> key;          // every message's key
  std::optional<std::uint32_t> partition;  // every message's partition
  std::vector<std::pair<std::string, std::string>> headers;
  bool raw = false;         // each line is sent as a JSON string, not parsed as JSON
  std::size_t batch = 100;  // lines per produce request
  bool json = false;        // the summary as JSON
};

struct ConsumeArgs {
  std::string topic;
  std::string group;
  std::vector<std::uint32_t> partitions;  // empty: every partition
  std::size_t count = 0;                  // stop after this many messages; 0: no limit
  bool follow = false;                    // keep waiting for messages
  std::size_t wait_ms = 1000;             // without --follow: stop when nothing arrives for this long
  std::string from = "earliest";          // where a new group starts
  bool no_ack = false;
  bool payload_only = false;
  std::optional<std::size_t> visibility_timeout_ms;  // nullopt: the brokers' default
};

struct TailArgs {
  std::string topic;
  std::optional<std::uint32_t> partition;  // nullopt: every partition
  std::size_t count = 0;                   // stop after this many messages; 0: no limit
  bool from_start = false;                 // from each partition's log start, not its end
  std::size_t wait_ms = 0;                 // stop when nothing arrives for this long; 0: never
  std::size_t poll_ms = 200;               // how often the partitions are asked for news
  bool payload_only = false;
};

struct SeekArgs {
  std::string topic;
  std::string group;
  std::optional<std::uint32_t> partition;  // nullopt: every partition
  std::optional<std::uint64_t> offset;
  std::optional<std::int64_t> timestamp_ms;
  bool earliest = false;
  bool latest = false;
  bool json = false;
};

struct RedriveArgs {
  std::string topic;                       // a dead-letter topic, "<T>-dlq"
  std::optional<std::uint32_t> partition;  // nullopt: every partition
  std::optional<std::uint64_t> limit;      // at most this many in all; nullopt: all
  bool json = false;
};

struct DeleteGroupArgs {
  std::string topic;
  std::string group;
  bool json = false;
};

using CommandArgs = std::variant<TopicsArgs, StatsArgs, ProduceArgs, ConsumeArgs, TailArgs, SeekArgs,
                                 RedriveArgs, DeleteGroupArgs>;

// A parsed command line: the connection and the chosen command's arguments.
struct Invocation {
  std::string command;  // the subcommand's name, for error messages ("mqctl stats: ...")
  ConnectionArgs connection;
  CommandArgs args;
};

// What parsing decided: run `invocation`, or exit with `exit_code` (help printed: 0; a usage error,
// already reported on stderr: 2).
struct ParseOutcome {
  std::optional<Invocation> invocation;
  int exit_code = 0;
};

// Declares mqctl's commands and options with CLI11 and parses argv into an Invocation. Not
// thread-safe; used once by main.
class CommandLine {
 public:
  CommandLine();
  ~CommandLine();
  CommandLine(const CommandLine&) = delete;
  CommandLine& operator=(const CommandLine&) = delete;

  ParseOutcome parse(int argc, char** argv);

 private:
  // The values CLI11 writes into while parsing, one struct per command.
  std::optional<std::string> addr_;  // --addr of whichever command
  std::optional<std::string> token_;
  TopicsArgs topics_;
  StatsArgs stats_;
  ProduceArgs produce_;
  std::vector<std::string> produce_headers_;  // "name=value", split after parsing
  ConsumeArgs consume_;
  TailArgs tail_;
  SeekArgs seek_;
  RedriveArgs redrive_;
  DeleteGroupArgs delete_group_;
  std::unique_ptr<CLI::App> app_;
};

}  // namespace mqctl

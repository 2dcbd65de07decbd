#include "command_line.h"

#include <CLI/CLI.hpp>

#include <cstdlib>
#include <iostream>

namespace mqctl {
namespace {

// Every command takes these, after the command name (`mqctl stats --addr URL`). Each subcommand
// binds them to the same strings; the environment's values are applied after parsing, because
// CLI11's envname() would let every subcommand, parsed or not, write its variable into them.
void add_connection_options(CLI::App& command, std::optional<std::string>& addr,
                            std::optional<std::string>& token) {
  command.add_option("--addr", addr,
                     "Base URL(s) of the broker(s), comma-separated (default: MSG_QUEUE_ADDR, else "
                     "http://127.0.0.1:8080)");
  command.add_option("--token", token, "Bearer token, mqd's AUTH_TOKEN (default: MSG_QUEUE_TOKEN)");
}

// The value of environment variable `name`, or `fallback` when it is unset or empty.
std::string from_environment(const char* name, std::string fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : fallback;
}

void add_json_flag(CLI::App& command, bool& json) {
  command.add_flag("--json", json, "Print JSON for scripts instead of text");
}

// "name=value", the form of --header.
std::string check_header(const std::string& text) {
  const auto equals = text.find('=');
  if (equals == std::string::npos || equals == 0) return "a header is name=value, got '" + text + "'";
  return "";
}

}  // namespace

CommandLine::CommandLine() : app_(std::make_unique<CLI::App>("mqctl: look at and operate mqd brokers")) {
  CLI::App& app = *app_;
  app.name("mqctl");
  app.require_subcommand(1);
  app.footer(
      "The brokers are found at --addr (default: MSG_QUEUE_ADDR, else http://127.0.0.1:8080); one is\n"
      "enough when they were started with BROKER_ADDRS. `mqctl COMMAND --help` describes a command.\n"
      "Exit status: 0 done, 1 a request failed, 2 a usage error.");

  CLI::App* topics =
      app.add_subcommand("topics", "Topics, partition counts, messages and which broker owns what");
  add_connection_options(*topics, addr_, token_);
  add_json_flag(*topics, topics_.json);

  CLI::App* stats = app.add_subcommand("stats", "Partitions and consumer groups of one topic or all");
  add_connection_options(*stats, addr_, token_);
  stats->add_option("topic", stats_.topic, "Only this topic");
  add_json_flag(*stats, stats_.json);

  CLI::App* produce = app.add_subcommand("produce", "Send each line of stdin as a message (a JSON value)");
  add_connection_options(*produce, addr_, token_);
  produce->add_option("topic", produce_.topic, "Topic")->required();
  produce->add_option("-k,--key", produce_.key, "Key of every message (picks the partition)");
  produce->add_option("-p,--partition", produce_.partition, "Partition of every message");
  produce->add_option("-H,--header", produce_headers_, "Header name=value of every message (repeatable)")
      ->allow_extra_args(false)
      ->check(check_header);
  produce->add_flag("--raw", produce_.raw, "Send each line as a JSON string instead of parsing it");
  produce->add_option("-b,--batch", produce_.batch, "Lines per produce request")
      ->check(CLI::Range(std::size_t{1}, std::size_t{100000}))
      ->capture_default_str();
  add_json_flag(*produce, produce_.json);

  CLI::App* consume =
      app.add_subcommand("consume", "Receive messages as a consumer group, print and ack them");
  add_connection_options(*consume, addr_, token_);
  consume->add_option("topic", consume_.topic, "Topic")->required();
  consume->add_option("-g,--group", consume_.group, "Consumer group")->required();
  consume->add_option("-p,--partition", consume_.partitions, "Only this partition (repeatable)")
      ->allow_extra_args(false);
  consume->add_option("-n,--count", consume_.count, "Stop after this many messages")
      ->check(CLI::PositiveNumber);
  consume->add_flag("-f,--follow", consume_.follow, "Keep waiting for messages (until Ctrl-C)");
  consume
      ->add_option("--wait-ms", consume_.wait_ms, "Without --follow: stop when nothing arrives for this long")
      ->capture_default_str();
  consume->add_option("--from", consume_.from, "Where a new group starts")
      ->check(CLI::IsMember({"earliest", "latest"}))
      ->capture_default_str();
  consume->add_flag("--no-ack", consume_.no_ack, "Print without acknowledging (the group gets them again)");
  consume->add_flag("--payload-only", consume_.payload_only, "Print each payload alone");
  consume
      ->add_option("--visibility-timeout-ms", consume_.visibility_timeout_ms,
                   "How long a message may stay unacknowledged (default: the brokers')")
      ->check(CLI::PositiveNumber);

  CLI::App* tail = app.add_subcommand("tail", "Print new messages of a topic, without a consumer group");
  add_connection_options(*tail, addr_, token_);
  tail->add_option("topic", tail_.topic, "Topic")->required();
  tail->add_option("-p,--partition", tail_.partition, "Only this partition");
  tail->add_option("-n,--count", tail_.count, "Stop after this many messages")->check(CLI::PositiveNumber);
  tail->add_flag("--from-start", tail_.from_start, "Start at each partition's first stored message");
  tail->add_option("--wait-ms", tail_.wait_ms, "Stop when nothing arrives for this long (default: never)");
  tail->add_option("--poll-ms", tail_.poll_ms, "How often to ask the brokers for new messages")
      ->check(CLI::Range(std::size_t{10}, std::size_t{60000}))
      ->capture_default_str();
  tail->add_flag("--payload-only", tail_.payload_only, "Print each payload alone");

  CLI::App* seek = app.add_subcommand("seek", "Move a consumer group's position in a partition");
  add_connection_options(*seek, addr_, token_);
  seek->add_option("topic", seek_.topic, "Topic")->required();
  seek->add_option("-g,--group", seek_.group, "Consumer group")->required();
  seek->add_option("-p,--partition", seek_.partition, "Partition (default: every partition)");
  CLI::Option_group* target = seek->add_option_group("target", "Where to move the group (exactly one)");
  target->add_option("--offset", seek_.offset, "To this offset");
  target->add_option("--timestamp", seek_.timestamp_ms, "To the first message at or after this time (ms)")
      ->check(CLI::NonNegativeNumber);
  target->add_flag("--earliest", seek_.earliest, "To the first stored message");
  target->add_flag("--latest", seek_.latest, "Past the last message");
  target->require_option(1);
  add_json_flag(*seek, seek_.json);

  CLI::App* redrive = app.add_subcommand("redrive", "Send dead letters back to the topic they came from");
  add_connection_options(*redrive, addr_, token_);
  redrive->add_option("topic", redrive_.topic, "Dead-letter topic (<topic>-dlq)")->required();
  redrive->add_option("-p,--partition", redrive_.partition, "Partition (default: every partition)");
  redrive->add_option("--limit", redrive_.limit, "At most this many")->check(CLI::PositiveNumber);
  add_json_flag(*redrive, redrive_.json);

  CLI::App* delete_group = app.add_subcommand("delete-group", "Remove a consumer group from every partition");
  add_connection_options(*delete_group, addr_, token_);
  delete_group->add_option("topic", delete_group_.topic, "Topic")->required();
  delete_group->add_option("-g,--group", delete_group_.group, "Consumer group")->required();
  add_json_flag(*delete_group, delete_group_.json);
}

CommandLine::~CommandLine() = default;

ParseOutcome CommandLine::parse(int argc, char** argv) {
  try {
    app_->parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app_->exit(e);  // prints the help, or the error and a hint on stderr
    return {std::nullopt, code == 0 ? 0 : 2};
  }
  const CLI::App* chosen = app_->get_subcommands().front();
  ConnectionArgs connection;
  connection.addr = addr_ ? *addr_ : from_environment("MSG_QUEUE_ADDR", connection.addr);
  connection.token = token_ ? *token_ : from_environment("MSG_QUEUE_TOKEN", "");
  Invocation invocation{chosen->get_name(), std::move(connection), TopicsArgs{}};
  const std::string& name = invocation.command;
  if (name == "topics") {
    invocation.args = topics_;
  } else if (name == "stats") {
    invocation.args = stats_;
  } else if (name == "produce") {
    for (const std::string& header : produce_headers_) {
      const auto equals = header.find('=');
      produce_.headers.emplace_back(header.substr(0, equals), header.substr(equals + 1));
    }
    invocation.args = produce_;
  } else if (name == "consume") {
    invocation.args = consume_;
  } else if (name == "tail") {
    invocation.args = tail_;
  } else if (name == "seek") {
    invocation.args = seek_;
  } else if (name == "redrive") {
    invocation.args = redrive_;
  } else {
    invocation.args = delete_group_;
  }
  return {std::move(invocation), 0};
}

}  // namespace mqctl

// mqctl: look at and operate a deployment of mqd brokers from a terminal (README "mqctl").
//
//   mqctl topics | stats [TOPIC] | produce TOPIC | consume TOPIC -g G | tail TOPIC
//         | seek TOPIC -g G ... | redrive TOPIC-dlq | delete-group TOPIC -g G
//
// Exit status: 0 done, 1 a request failed, 2 a usage error (output.h).
#include <optional>
#include <variant>

#include "command_line.h"
#include "commands.h"

namespace {

// One lambda per command for std::visit.
template <typename... Fs>
struct Overloaded : Fs... {
  using Fs::operator()...;
};
template <typename... Fs>
Overloaded(Fs...) -> Overloaded<Fs...>;

int run(const mqctl::Invocation& invocation) {
  const mqctl::Reporter report(invocation.command);
  // Before the queue starts its threads, which inherit the blocked signals (stop_signal.h).
  std::optional<mqctl::StopSignal> stop;
  if (std::holds_alternative<mqctl::ConsumeArgs>(invocation.args) ||
      std::holds_alternative<mqctl::TailArgs>(invocation.args)) {
    stop.emplace();
  }
  auto connection = mqctl::Connection::open(invocation.connection);
  if (!connection.ok())
    return report.fail("bad --addr, --token or MSG_QUEUE_* variable", connection.status());
  mqctl::Context context{**connection, report, stop ? &*stop : nullptr};
  return std::visit(Overloaded{
                        [&](const mqctl::TopicsArgs& args) { return run_topics(args, context); },
                        [&](const mqctl::StatsArgs& args) { return run_stats(args, context); },
                        [&](const mqctl::ProduceArgs& args) { return run_produce(args, context); },
                        [&](const mqctl::ConsumeArgs& args) { return run_consume(args, context); },
                        [&](const mqctl::TailArgs& args) { return run_tail(args, context); },
                        [&](const mqctl::SeekArgs& args) { return run_seek(args, context); },
                        [&](const mqctl::RedriveArgs& args) { return run_redrive(args, context); },
                        [&](const mqctl::DeleteGroupArgs& args) { return run_delete_group(args, context); },
                    },
                    invocation.args);
}

}  // namespace

int main(int argc, char** argv) {
  mqctl::CommandLine command_line;
  const mqctl::ParseOutcome parsed = command_line.parse(argc, argv);
  if (!parsed.invocation) return parsed.exit_code;
  return run(*parsed.invocation);
}

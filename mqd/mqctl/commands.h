// mqctl's commands, one function each: they take their arguments and a Context, print their result
// on stdout and failures on stderr, and return the process's exit status (output.h).
#pragma once

#include "command_line.h"
#include "connection.h"
#include "output.h"
#include "stop_signal.h"

namespace mqctl {

struct Context {
  Connection& connection;
  const Reporter& report;
  const StopSignal* stop = nullptr;  // for the commands that run until interrupted (consume, tail)
};

// inspect_commands.cc
int run_topics(const TopicsArgs& args, Context& context);
int run_stats(const StatsArgs& args, Context& context);
// produce_command.cc
int run_produce(const ProduceArgs& args, Context& context);
// read_commands.cc
int run_consume(const ConsumeArgs& args, Context& context);
int run_tail(const TailArgs& args, Context& context);
// admin_commands.cc
int run_seek(const SeekArgs& args, Context& context);
int run_redrive(const RedriveArgs& args, Context& context);
int run_delete_group(const DeleteGroupArgs& args, Context& context);

}  // namespace mqctl

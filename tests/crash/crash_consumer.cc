// The child of the consumer crash test: consumes topic "crash" partition 0 in group "g" with the
// configuration from the environment (FSYNC=always in the test), acknowledges four messages of
// every five, and reports on stdout "A <offset>" once an acknowledgement has returned and
// "S <offset>" for each message it skipped (left in flight).
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "mq/mq.h"

int main() {
  auto config = mq::config_from_env([](std::string_view name) -> std::optional<std::string> {
    const char* value = std::getenv(std::string(name).c_str());
    return value ? std::optional<std::string>(value) : std::nullopt;
  });
  if (!config.ok()) return 2;
  auto broker = mq::Broker::open(*config);
  if (!broker.ok()) {
    std::fprintf(stderr, "%s\n", broker.status().to_string().c_str());
    return 2;
  }
  mq::SubscribeOptions options;
  options.max_inflight = 1'000'000;
  auto sub = (*broker)->subscribe("crash", 0, "g", options);
  if (!sub.ok()) return 2;
  while (true) {
    auto got = (*sub)->next(20, std::chrono::seconds(5));
    if (!got.ok()) return 3;
    if (got->empty()) return 0;  // everything consumed
    std::vector<std::string> ids;
    std::string report;
    for (const auto& d : *got) {
      if (d.offset % 5 == 4) {
        report += "S " + std::to_string(d.offset) + "\n";
      } else {
        ids.push_back(d.id);
      }
    }
    if (!ids.empty()) {
      if (!(*broker)->ack("crash", 0, "g", ids).ok()) return 4;
      for (const auto& id : ids) report += "A " + id.substr(id.find('-') + 1) + "\n";
    }
    if (::write(STDOUT_FILENO, report.data(), report.size()) != static_cast<ssize_t>(report.size())) return 5;
  }
}

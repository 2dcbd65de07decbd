// The child of the crash test: appends forever with the configuration from the environment
// (FSYNC=always in the test) from several threads, and after every acknowledged append writes
// "<offset> <thread> <seq>\n" for each message to stdout, which the parent reads through a pipe.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "mq/mq.h"
#include "storage/internal_access.h"  // PayloadInternal: exact stored bytes

int main() {
  auto config = mq::config_from_env([](std::string_view name) -> std::optional<std::string> {
    const char* value = std::getenv(std::string(name).c_str());
    return value ? std::optional<std::string>(value) : std::nullopt;
  });
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", config.status().to_string().c_str());
    return 2;
  }
  auto store = mq::LogStore::open(config->store);
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", store.status().to_string().c_str());
    return 2;
  }
  auto partition = (*store)->partition("crash", 0);
  if (!partition.ok()) return 2;
  std::mutex out_mutex;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (long seq = 0;; seq += 3) {
        std::vector<mq::Message> batch;
        const int size = 1 + static_cast<int>(seq / 3 % 3);
        for (int j = 0; j < size; ++j) {
          batch.push_back({mq::detail::PayloadInternal::from_minified_json(
                               "{\"thread\":" + std::to_string(t) + ",\"seq\":" + std::to_string(seq + j) +
                               ",\"pad\":\"" + std::string(64, 'x') + "\"}"),
                           std::nullopt});
        }
        auto first = (*partition)->append(batch);
        if (!first.ok()) std::_Exit(3);
        std::string report;
        for (int j = 0; j < size; ++j) {
          report +=
              std::to_string(*first + j) + " " + std::to_string(t) + " " + std::to_string(seq + j) + "\n";
        }
        std::lock_guard lock(out_mutex);
        if (::write(STDOUT_FILENO, report.data(), report.size()) != static_cast<ssize_t>(report.size())) {
          std::_Exit(4);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
}

// mqd's configuration: the library's (mq::config_from_env) plus what only the daemon reads.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "mq/options.h"
#include "mq/status.h"

namespace mqd {

struct DaemonConfig {
  mq::Config library;                          // TOPICS, DATA_DIR, BROKER_*, FSYNC*, MAX_PAYLOAD_BYTES, ...
  std::string host = "0.0.0.0";                // listen address
  int port = 8080;                             // PORT
  std::vector<std::string> broker_addrs;       // BROKER_ADDRS, base URLs in broker index order
  std::size_t max_body_bytes = 16 << 20;       // MAX_BODY_BYTES
  std::size_t max_connections = 1024;          // MAX_CONNECTIONS
  std::optional<std::string> auth_token;       // AUTH_TOKEN
  std::chrono::milliseconds heartbeat{15000};  // HEARTBEAT_MS
};

// Reads every variable of the API's configuration table; an error names the variable and value.
mq::Result<DaemonConfig> daemon_config_from_env(const mq::EnvLookup& lookup);

}  // namespace mqd

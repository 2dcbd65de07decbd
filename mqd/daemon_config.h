// mqd's configuration: the library's (mq::config_from_env) plus what only the daemon reads.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "mq/options.h"
#include "mq/status.h"
#include "tls_context.h"

namespace mqd {

// Replicated partitions (API.md "Replicated partitions"): set by ETCD_ENDPOINTS.
struct ReplicationConfig {
  std::vector<std::string> etcd_endpoints;  // ETCD_ENDPOINTS
  std::string prefix = "/mq";               // ETCD_PREFIX
  std::uint32_t factor = 1;                 // REPLICATION_FACTOR (also library.broker.replicas)
  std::uint32_t min_insync = 1;             // MIN_INSYNC_REPLICAS: default min(2, factor)
  std::chrono::seconds lease_ttl{5};        // LEASE_TTL_S
};

struct DaemonConfig {
  mq::Config library;                          // TOPICS, DATA_DIR, BROKER_*, FSYNC*, MAX_PAYLOAD_BYTES, ...
  std::string host = "0.0.0.0";                // HOST: listen address
  int port = 8080;                             // PORT
  std::vector<std::string> broker_addrs;       // BROKER_ADDRS, base URLs in broker index order
  std::size_t max_body_bytes = 16 << 20;       // MAX_BODY_BYTES
  std::size_t max_connections = 1024;          // MAX_CONNECTIONS
  std::optional<std::string> auth_token;       // AUTH_TOKEN
  std::chrono::milliseconds heartbeat{15000};  // HEARTBEAT_MS
  std::chrono::milliseconds request_timeout{10000};  // REQUEST_TIMEOUT_MS: a request's head and body
  std::optional<std::string> tls_cert_file;          // TLS_CERT_FILE
  std::optional<std::string> tls_key_file;           // TLS_KEY_FILE
  TlsContext tls;  // both files, loaded and checked: mqd serves HTTPS only; null: plain HTTP
  std::optional<ReplicationConfig> replication;  // unset: one copy, static ownership
};

// Reads every variable of docs/http-api.md's configuration table; an error names the variable and value.
mq::Result<DaemonConfig> daemon_config_from_env(const mq::EnvLookup& lookup);

}  // namespace mqd

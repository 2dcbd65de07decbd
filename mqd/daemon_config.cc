#include "daemon_config.h"

#include "common/decimal.h"

#include <charconv>

namespace mqd {
namespace {

mq::Status bad(std::string_view name, std::string_view value, std::string_view why) {
  return mq::Status::invalid_argument(std::string(name) + "='" + std::string(value) +
                                      "': " + std::string(why));
}

// Reads `name` as a whole number in [min, max] into `out` when it is set.
mq::Status read_number(const mq::EnvLookup& lookup, std::string_view name, std::uint64_t min,
                       std::uint64_t max, std::uint64_t& out) {
  auto value = lookup(name);
  if (!value) return {};
  auto number = mq::detail::parse_decimal(*value, min, max);
  if (!number) {
    return bad(name, *value,
               "expected a whole number from " + std::to_string(min) + " to " + std::to_string(max));
  }
  out = *number;
  return {};
}

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (true) {
    const auto comma = text.find(',', start);
    parts.push_back(text.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) return parts;
    start = comma + 1;
  }
}

// TLS_CERT_FILE and TLS_KEY_FILE: both or neither; both are loaded now, so that a bad file stops
// mqd at start, naming its variable.
mq::Status read_tls(const mq::EnvLookup& lookup, DaemonConfig& config) {
  auto cert = lookup("TLS_CERT_FILE");
  auto key = lookup("TLS_KEY_FILE");
  if (!cert && !key) return {};
  if (!cert || !key) {
    const char* set = cert ? "TLS_CERT_FILE" : "TLS_KEY_FILE";
    const char* unset = cert ? "TLS_KEY_FILE" : "TLS_CERT_FILE";
    return bad(unset, "", std::string("must be set too, since ") + set + " is (both, or neither)");
  }
  auto tls = tls_context_from_files(*cert, *key);
  if (!tls.ok()) return tls.status();
  config.tls_cert_file = *cert;
  config.tls_key_file = *key;
  config.tls = std::move(tls.value());
  return {};
}

}  // namespace

namespace {

// ETCD_ENDPOINTS and the variables that only mean something with it.
mq::Status read_replication(const mq::EnvLookup& lookup, DaemonConfig& config) {
  auto endpoints = lookup("ETCD_ENDPOINTS");
  if (!endpoints || endpoints->empty()) {
    for (const char* name : {"REPLICATION_FACTOR", "MIN_INSYNC_REPLICAS"}) {
      if (auto v = lookup(name); v && *v != "1") {
        return bad(name, *v,
                   "needs ETCD_ENDPOINTS (replicated partitions); without it each partition has one copy");
      }
    }
    return {};
  }
  ReplicationConfig r;
  r.etcd_endpoints = split_commas(*endpoints);
  for (auto& e : r.etcd_endpoints) {
    if (!e.starts_with("http://") && !e.starts_with("https://")) {
      return bad("ETCD_ENDPOINTS", *endpoints, "each endpoint must be a URL such as http://127.0.0.1:2379");
    }
    while (e.ends_with('/')) e.pop_back();
  }
  if (config.broker_addrs.empty()) {
    return bad("ETCD_ENDPOINTS", *endpoints,
               "replicated partitions need BROKER_ADDRS (how the brokers reach each other)");
  }
  if (auto prefix = lookup("ETCD_PREFIX")) {
    if (prefix->empty() || !prefix->starts_with('/') || prefix->find_first_of(" \t\n") != std::string::npos)
      return bad("ETCD_PREFIX", *prefix, "expected a key prefix starting with '/', such as /mq");
    r.prefix = *prefix;
  }
  const std::uint32_t brokers = config.library.broker.count;
  std::uint64_t factor = 1;
  if (auto s = read_number(lookup, "REPLICATION_FACTOR", 1, brokers, factor); !s.ok()) return s;
  r.factor = static_cast<std::uint32_t>(factor);
  std::uint64_t min_insync = std::min<std::uint64_t>(2, factor);
  if (auto s = read_number(lookup, "MIN_INSYNC_REPLICAS", 1, factor, min_insync); !s.ok()) return s;
  r.min_insync = static_cast<std::uint32_t>(min_insync);
  std::uint64_t ttl = static_cast<std::uint64_t>(r.lease_ttl.count());
  if (auto s = read_number(lookup, "LEASE_TTL_S", 2, 3600, ttl); !s.ok()) return s;
  r.lease_ttl = std::chrono::seconds(ttl);
  config.library.broker.replicas = r.factor;
  config.replication = std::move(r);
  return {};
}

}  // namespace

mq::Result<DaemonConfig> daemon_config_from_env(const mq::EnvLookup& lookup) {
  auto library = mq::config_from_env(lookup);
  if (!library.ok()) return library.status();
  DaemonConfig config;
  config.library = std::move(library.value());

  if (auto host = lookup("HOST")) {
    // The address to listen on: 127.0.0.1 keeps mqd to this machine, :: or 0.0.0.0 all interfaces.
    if (host->empty() || host->find_first_of(" \t/") != std::string::npos) {
      return bad("HOST", *host, "expected an address to listen on, such as 127.0.0.1, 0.0.0.0 or ::");
    }
    config.host = *host;
  }
  std::uint64_t port = static_cast<std::uint64_t>(config.port);
  if (auto s = read_number(lookup, "PORT", 1, 65535, port); !s.ok()) return s;
  config.port = static_cast<int>(port);
  std::uint64_t max_body = config.max_body_bytes;
  if (auto s = read_number(lookup, "MAX_BODY_BYTES", 1, 1ull << 32, max_body); !s.ok()) return s;
  config.max_body_bytes = static_cast<std::size_t>(max_body);
  std::uint64_t max_connections = config.max_connections;
  if (auto s = read_number(lookup, "MAX_CONNECTIONS", 1, 100000, max_connections); !s.ok()) return s;
  config.max_connections = static_cast<std::size_t>(max_connections);
  std::uint64_t heartbeat = static_cast<std::uint64_t>(config.heartbeat.count());
  if (auto s = read_number(lookup, "HEARTBEAT_MS", 1, 3'600'000, heartbeat); !s.ok()) return s;
  config.heartbeat = std::chrono::milliseconds(heartbeat);

  std::uint64_t request_timeout = static_cast<std::uint64_t>(config.request_timeout.count());
  if (auto s = read_number(lookup, "REQUEST_TIMEOUT_MS", 1, 3'600'000, request_timeout); !s.ok()) return s;
  config.request_timeout = std::chrono::milliseconds(request_timeout);
  if (auto s = read_tls(lookup, config); !s.ok()) return s;

  if (auto token = lookup("AUTH_TOKEN")) {
    // Set but empty would silently turn auth off: that is a mistake, not a choice.
    if (token->empty()) return bad("AUTH_TOKEN", *token, "must not be empty (unset it to turn auth off)");
    config.auth_token = *token;
  }
  if (auto addrs = lookup("BROKER_ADDRS"); addrs && !addrs->empty()) {
    config.broker_addrs = split_commas(*addrs);
    if (config.broker_addrs.size() != config.library.broker.count) {
      return bad("BROKER_ADDRS", *addrs,
                 "expected " + std::to_string(config.library.broker.count) + " addresses (BROKER_COUNT)");
    }
    for (auto& addr : config.broker_addrs) {
      if (!addr.starts_with("http://") && !addr.starts_with("https://")) {
        return bad("BROKER_ADDRS", *addrs, "each address must be a base URL such as http://host:8080");
      }
      while (addr.ends_with('/')) addr.pop_back();
    }
  }
  if (auto s = read_replication(lookup, config); !s.ok()) return s;
  return config;
}

}  // namespace mqd

// Queue::from_env's half that reads the environment: every variable checked, every error naming it.
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <iterator>

#include "client/queue_backends.h"
#include "common/decimal.h"

namespace mq {
namespace {

Status bad_value(std::string_view variable, std::string_view value, std::string_view why) {
  return Status::invalid_argument(std::string(variable) + "=\"" + std::string(value) +
                                  "\": " + std::string(why));
}

std::string lowercase(std::string_view s) {
  std::string out(s);
  std::ranges::transform(out, out.begin(),
                         [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::optional<std::uint16_t> parse_port(std::string_view text) {
  auto port = detail::parse_decimal(text, 1, 65535);
  if (!port) return std::nullopt;
  return static_cast<std::uint16_t>(*port);
}

std::string_view trim(std::string_view s) {
  constexpr std::string_view kBlanks = " \t\r\n\v\f";
  const auto first = s.find_first_not_of(kBlanks);
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(kBlanks) - first + 1);
}

// MSG_QUEUE_ADDR: comma-separated base URLs. Empty is an error only for the HTTP backend (a
// deployment template may set it for every service, whichever backend they use).
Status parse_addrs(std::string_view value, QueueSettings::Backend backend, HttpQueueOptions& http) {
  std::vector<std::string> addrs;
  std::string_view rest = value;
  while (true) {
    const auto comma = rest.find(',');
    const std::string_view item = trim(rest.substr(0, comma));
    if (!item.empty()) {
      auto url = detail::parse_http_base_url(item);
      if (!url.ok()) return bad_value("MSG_QUEUE_ADDR", value, url.status().message());
      addrs.emplace_back(item);
    }
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 1);
  }
  if (!addrs.empty()) {
    http.addrs = std::move(addrs);
  } else if (backend == QueueSettings::Backend::kHttp) {
    return bad_value("MSG_QUEUE_ADDR", value, "no address given");
  }
  return {};
}

// RFC 3986 percent-decoding of a URL's user or password ("p%40ss" is "p@ss").
std::optional<std::string> percent_decode(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    if (i + 2 >= text.size() || !std::isxdigit(static_cast<unsigned char>(text[i + 1])) ||
        !std::isxdigit(static_cast<unsigned char>(text[i + 2]))) {
      return std::nullopt;
    }
    out += static_cast<char>(std::stoi(std::string(text.substr(i + 1, 2)), nullptr, 16));
    i += 2;
  }
  return out;
}

Result<bool> parse_use_http(std::string_view value) {
  const std::string v = lowercase(value);
  if (v == "true" || v == "1" || v == "yes" || v == "on") return true;
  if (v.empty() || v == "false" || v == "0" || v == "no" || v == "off") return false;
  return bad_value("USE_HTTP_QUEUE", value, "expected true/1/yes/on (HTTP) or false/0/no/off (Redis)");
}

Status parse_redis_url(std::string_view url, RedisQueueOptions& redis) {
  constexpr std::string_view kScheme = "redis://";
  auto fail = [&](std::string_view why) { return bad_value("REDIS_URL", url, why); };
  if (!url.starts_with(kScheme)) return fail("expected redis://[[user]:password@]host[:port][/db]");
  std::string_view rest = url.substr(kScheme.size());
  if (const auto at = rest.rfind('@'); at != std::string_view::npos) {
    const std::string_view userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    const auto colon = userinfo.find(':');
    // redis://secret@host (no colon) is a password alone, as redis-cli reads it.
    const auto user = percent_decode(colon == std::string_view::npos ? "" : userinfo.substr(0, colon));
    const auto password =
        percent_decode(colon == std::string_view::npos ? userinfo : userinfo.substr(colon + 1));
    if (!user || !password) return fail("a '%' in the user or password must start an escape like %40");
    redis.username = *user;
    redis.password = *password;
  }
  std::string_view db_text;
  if (const auto slash = rest.find('/'); slash != std::string_view::npos) {
    db_text = rest.substr(slash + 1);
    rest = rest.substr(0, slash);
  }
  auto host_port = detail::parse_host_port(rest, 6379);
  if (!host_port.ok()) return fail(host_port.status().message());
  redis.host = host_port->host;
  redis.port = host_port->port;
  if (!db_text.empty()) {
    auto db = detail::parse_decimal(db_text, 0, UINT32_MAX);
    if (!db) return fail("the database must be a number");
    redis.db = static_cast<std::uint32_t>(*db);
  }
  return {};
}

}  // namespace

namespace detail {

std::string default_client_name() {
  std::string name = system_host_name().value_or("");
  if (name.empty()) name = "client";
  // Keep it a valid name (is_valid_name): host names may hold characters it refuses.
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') c = '-';
  }
  name += "-" + std::to_string(::getpid());
  return name.substr(0, 128);
}

Result<HostPort> parse_host_port(std::string_view text, std::optional<std::uint16_t> default_port) {
  std::string_view host = text;
  std::string_view port_text;
  if (text.starts_with('[')) {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return Status::invalid_argument("unclosed '[' in the host");
    host = text.substr(1, close - 1);
    const auto rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (!rest.starts_with(':')) return Status::invalid_argument("expected ':' after ']'");
      port_text = rest.substr(1);
    }
  } else if (std::ranges::count(text, ':') > 1) {
    // Two colons or more: an IPv6 address without brackets, hence without a port ("::1").
  } else if (const auto colon = text.rfind(':'); colon != std::string_view::npos) {
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
  }
  if (host.empty()) return Status::invalid_argument("the host is empty");
  if (host.find_first_of("/?#@ \t[]") != std::string_view::npos) return Status::invalid_argument("bad host");
  HostPort out{std::string(host), default_port.value_or(0)};
  if (!port_text.empty() || !default_port) {
    auto port = parse_port(port_text);
    if (!port) return Status::invalid_argument("the port must be a number from 1 to 65535");
    out.port = *port;
  }
  return out;
}

Result<HostPort> parse_http_base_url(std::string_view url) {
  auto fail = [&](std::string_view why) {
    return Status::invalid_argument("\"" + std::string(url) +
                                    "\" is not a base URL http[s]://host:port: " + std::string(why));
  };
  std::string_view rest = url;
  bool tls = false;
  if (rest.starts_with("https://")) {
    rest.remove_prefix(8);
    tls = true;
  } else if (rest.starts_with("http://")) {
    rest.remove_prefix(7);
  } else if (rest.find("://") != std::string_view::npos) {
    return fail("the scheme must be http or https");
  }
  if (rest.ends_with('/')) rest.remove_suffix(1);
  if (rest.find('/') != std::string_view::npos) return fail("a path is not allowed");
  // A URL's IPv6 host is always in brackets: "http://::1:8080" would be ambiguous.
  if (!rest.starts_with('[') && std::ranges::count(rest, ':') > 1)
    return fail("put an IPv6 host in brackets");
  auto host_port = parse_host_port(rest, std::nullopt);
  if (!host_port.ok()) return fail(host_port.status().message());
  host_port->tls = tls;
  return host_port;
}

std::string base_url(const HostPort& where) {
  const bool v6 = where.host.find(':') != std::string::npos;
  return std::string(where.tls ? "https://" : "http://") + (v6 ? "[" + where.host + "]" : where.host) + ":" +
         std::to_string(where.port);
}

Status check_ca_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::invalid_argument("cannot read the CA file \"" + path + "\"");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
    return Status::invalid_argument("the CA file \"" + path + "\" holds no PEM certificate");
  }
  return {};
}

}  // namespace detail

Result<QueueSettings> queue_settings_from_env(const EnvLookup& lookup) {
  // Values from env files and manifests often carry stray blanks ("8\t", "true\r"): they never
  // belong to a flag, number, name, address or URL. (Tokens and file paths are taken as given.)
  auto trimmed = [&lookup](std::string_view variable) -> std::optional<std::string> {
    auto value = lookup(variable);
    if (!value) return std::nullopt;
    return std::string(trim(*value));
  };
  QueueSettings settings;
  if (auto value = trimmed("USE_HTTP_QUEUE")) {
    auto use_http = parse_use_http(*value);
    if (!use_http.ok()) return use_http.status();
    settings.backend = *use_http ? QueueSettings::Backend::kHttp : QueueSettings::Backend::kRedis;
  }
  if (auto value = lookup("MSG_QUEUE_ADDR")) {
    if (auto s = parse_addrs(*value, settings.backend, settings.http); !s.ok()) return s;
  }
  if (auto value = lookup("MSG_QUEUE_CA_FILE"); value && !value->empty()) {
    if (auto s = detail::check_ca_file(*value); !s.ok())
      return bad_value("MSG_QUEUE_CA_FILE", *value, s.message());
    settings.http.ca_file = *value;
  }
  auto name = [&](std::string_view variable, std::string& out) -> Status {
    auto value = trimmed(variable);
    if (!value) return {};
    if (!is_valid_name(*value)) {
      return bad_value(variable, *value,
                       "a name is 1-128 characters of A-Z a-z 0-9 . _ - and starts with a letter or digit");
    }
    out = *value;
    return {};
  };
  if (auto s = name("MSG_QUEUE_TOPIC", settings.topic); !s.ok()) return s;
  if (auto s = name("MSG_QUEUE_GROUP", settings.group); !s.ok()) return s;
  settings.producer_name = detail::default_client_name();
  if (auto s = name("MSG_QUEUE_PRODUCER_NAME", settings.producer_name); !s.ok()) return s;
  if (auto value = lookup("MSG_QUEUE_TOKEN")) settings.http.auth_token = *value;
  if (auto value = trimmed("MSG_QUEUE_PARTITIONS")) {
    auto partitions = detail::parse_decimal(*value, 1, 65536);
    if (!partitions) {
      return bad_value("MSG_QUEUE_PARTITIONS", *value, "expected a number from 1 to 65536");
    }
    settings.redis.partitions = static_cast<std::uint32_t>(*partitions);
  }
  // The producer's batching (ProducerOptions), the same for both backends.
  ProducerOptions producer;
  struct NumberSetting {
    const char* variable;
    std::uint64_t min;
    std::uint64_t max;
    std::size_t* target;
  };
  std::size_t linger_ms = 0;
  for (const NumberSetting& n :
       {NumberSetting{"MSG_QUEUE_LINGER_MS", 0, 60000, &linger_ms},
        NumberSetting{"MSG_QUEUE_BATCH_MAX_MESSAGES", 1, 100000, &producer.batch_max_messages},
        NumberSetting{"MSG_QUEUE_BATCH_MAX_BYTES", 1, 8u << 20, &producer.batch_max_bytes}}) {
    if (auto value = trimmed(n.variable)) {
      auto number = detail::parse_decimal(*value, n.min, n.max);
      if (!number) {
        return bad_value(n.variable, *value,
                         "expected a number from " + std::to_string(n.min) + " to " + std::to_string(n.max));
      }
      *n.target = static_cast<std::size_t>(*number);
    }
  }
  producer.linger = std::chrono::milliseconds(linger_ms);
  settings.http.producer = producer;
  settings.redis.producer = producer;
  if (auto value = trimmed("REDIS_URL"); value && !value->empty()) {
    if (auto s = parse_redis_url(*value, settings.redis); !s.ok()) return s;
  } else if (auto addr = trimmed("REDIS_ADDR"); addr && !addr->empty()) {
    auto host_port = detail::parse_host_port(*addr, 6379);
    if (!host_port.ok())
      return bad_value("REDIS_ADDR", *addr, host_port.status().message() + " (expected host:port)");
    settings.redis.host = host_port->host;
    settings.redis.port = host_port->port;
  }
  return settings;
}

}  // namespace mq

#include <unistd.h>

#include <charconv>
#include <set>

#include <cstdlib>

#include "common/decimal.h"
#include "common/names.h"
#include "mq/options.h"

namespace mq {

std::optional<std::string> process_environment(std::string_view name) {
  const char* value = std::getenv(std::string(name).c_str());
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

namespace {

std::string quote(std::string_view value) {
  std::string out;  // appended piecewise: "'" + std::string(value) + "'" trips gcc 12's -Wrestrict at -O3
  out.reserve(value.size() + 2);
  out += '\'';
  out += value;
  out += '\'';
  return out;
}

Status bad_variable(std::string_view name, std::string_view value, std::string_view why) {
  return Status::invalid_argument(std::string(name) + "=" + quote(value) + ": " + std::string(why));
}

using detail::parse_decimal;

// Reads the variable `name` as a number in [min, max] into `out` when it is set.
Status read_number(const EnvLookup& lookup, std::string_view name, std::uint64_t min, std::uint64_t max,
                   std::uint64_t& out) {
  auto value = lookup(name);
  if (!value) return {};
  auto number = parse_decimal(*value, min, max);
  if (!number) {
    return bad_variable(name, *value,
                        "expected a whole number from " + std::to_string(min) + " to " + std::to_string(max));
  }
  out = *number;
  return {};
}

}  // namespace

bool is_valid_name(std::string_view name) {
  if (name.empty() || name.size() > 128) return false;
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  if (!alnum(name.front())) return false;
  for (char c : name) {
    if (!alnum(c) && c != '.' && c != '_' && c != '-') return false;
  }
  return true;
}

namespace {

// One "setting=value" of a TOPICS entry into `settings`.
Status parse_topic_setting(std::string_view topic, std::string_view text, TopicSettings& settings) {
  const auto equals = text.find('=');
  const std::string_view name = text.substr(0, equals);
  const std::string_view value =
      equals == std::string_view::npos ? std::string_view() : text.substr(equals + 1);
  const auto bad = [&](std::string_view expected) {
    return Status::invalid_argument("setting " + quote(text) + " of topic " + quote(topic) + ": " +
                                    std::string(expected));
  };
  if (equals == std::string_view::npos) return bad("expected <setting>=<value>");
  const bool twice = (name == "segment_bytes" && settings.segment_bytes) ||
                     (name == "retention_bytes" && settings.retention_bytes) ||
                     (name == "retention_ms" && settings.retention_time) ||
                     (name == "retention_acked" && settings.retention_acked);
  if (twice) return bad("given twice");
  if (name == "segment_bytes") {
    auto n = parse_decimal(value, 1024, 1ull << 40);
    if (!n) return bad("expected a whole number of bytes from 1024 to 2^40");
    settings.segment_bytes = *n;
  } else if (name == "retention_bytes") {
    auto n = parse_decimal(value, 0, 1ull << 60);
    if (!n) return bad("expected a whole number of bytes (0: no limit)");
    settings.retention_bytes = *n;
  } else if (name == "retention_ms") {
    auto n = parse_decimal(value, 0, 1ull << 50);
    if (!n) return bad("expected a whole number of milliseconds (0: no limit)");
    settings.retention_time = std::chrono::milliseconds(*n);
  } else if (name == "retention_acked") {
    if (value != "true" && value != "false") return bad("expected true or false");
    settings.retention_acked = value == "true";
  } else {
    return bad("unknown setting (segment_bytes, retention_bytes, retention_ms, retention_acked)");
  }
  return {};
}

}  // namespace

Result<std::vector<TopicSpec>> parse_topics(std::string_view value) {
  std::vector<TopicSpec> topics;
  std::set<std::string, std::less<>> seen;
  std::string_view rest = value;
  while (true) {
    const auto comma = rest.find(',');
    std::string_view entry = rest.substr(0, comma);
    const auto colon = entry.find(':');
    if (colon == std::string_view::npos) {
      return Status::invalid_argument("entry " + quote(entry) + " is not <name>:<partitions>");
    }
    std::string_view name = entry.substr(0, colon);
    std::string_view count = entry.substr(colon + 1);
    // name:partitions[:setting=value]...
    TopicSettings settings;
    std::optional<std::string_view> settings_text;
    if (const auto more = count.find(':'); more != std::string_view::npos) {
      settings_text = count.substr(more + 1);
      count = count.substr(0, more);
    }
    if (!is_valid_name(name)) {
      return detail::invalid_name("topic name", name);
    }
    auto partitions = parse_decimal(count, 1, 65536);
    if (!partitions) {
      return Status::invalid_argument("partition count " + quote(count) + " of topic " + quote(name) +
                                      " must be a whole number from 1 to 65536");
    }
    if (!seen.emplace(name).second)
      return Status::invalid_argument("topic " + quote(name) + " is listed twice");
    while (settings_text) {
      const auto next = settings_text->find(':');
      if (auto s = parse_topic_setting(name, settings_text->substr(0, next), settings); !s.ok()) return s;
      if (next == std::string_view::npos) break;
      settings_text->remove_prefix(next + 1);
    }
    topics.push_back({std::string(name), static_cast<std::uint32_t>(*partitions), settings});
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  return topics;
}

std::optional<std::string> system_host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return std::nullopt;
  return std::string(name);
}

Result<std::uint32_t> broker_index_from_host_name(std::optional<std::string> host_name) {
  if (!host_name || host_name->empty()) return Status::invalid_argument("the host name is unknown");
  // A StatefulSet pod is "<set>-<ordinal>"; ignore a domain after the first label.
  const std::string_view label = std::string_view(*host_name).substr(0, host_name->find('.'));
  const auto dash = label.rfind('-');
  const auto number =
      dash == std::string_view::npos ? std::nullopt : parse_decimal(label.substr(dash + 1), 0, 65535);
  if (!number) {
    return Status::invalid_argument("the host name " + quote(*host_name) +
                                    " does not end in -<number> (as StatefulSet pods mq-0, mq-1, ... do)");
  }
  return static_cast<std::uint32_t>(*number);
}

Result<Config> config_from_env(const EnvLookup& lookup, const HostNameLookup& host_name) {
  Config config;
  if (auto topics = lookup("TOPICS")) {
    auto parsed = parse_topics(*topics);
    if (!parsed.ok()) return bad_variable("TOPICS", *topics, parsed.status().message());
    config.topics = std::move(parsed.value());
  }
  if (auto dir = lookup("DATA_DIR")) {
    if (dir->empty()) return bad_variable("DATA_DIR", *dir, "must not be empty");
    config.store.data_dir = *dir;
  }
  std::uint64_t count = config.broker.count;
  std::uint64_t index = config.broker.index;
  if (auto s = read_number(lookup, "BROKER_COUNT", 1, 65536, count); !s.ok()) return s;
  std::string index_text;  // how BROKER_INDEX was given, for the error below
  if (auto value = lookup("BROKER_INDEX"); value && *value == "auto") {
    const auto name = host_name ? host_name() : system_host_name();
    auto from_host = broker_index_from_host_name(name);
    if (!from_host.ok()) return bad_variable("BROKER_INDEX", *value, from_host.status().message());
    index = *from_host;
    index_text = "'auto' (host name " + quote(name.value_or("")) + " gives " + std::to_string(index) + ")";
  } else if (auto s = read_number(lookup, "BROKER_INDEX", 0, 65535, index); !s.ok()) {
    return s;
  }
  if (index >= count) {
    if (index_text.empty()) index_text = quote(std::to_string(index));
    return Status::invalid_argument("BROKER_INDEX=" + index_text + ": must be less than BROKER_COUNT (" +
                                    std::to_string(count) + ")");
  }
  config.broker = {static_cast<std::uint32_t>(index), static_cast<std::uint32_t>(count)};
  if (auto mode = lookup("FSYNC")) {
    if (*mode == "always") {
      config.store.fsync = FsyncMode::kAlways;
    } else if (*mode == "interval") {
      config.store.fsync = FsyncMode::kInterval;
    } else if (*mode == "never") {
      config.store.fsync = FsyncMode::kNever;
    } else {
      return bad_variable("FSYNC", *mode, "expected always, interval or never");
    }
  }
  std::uint64_t interval = static_cast<std::uint64_t>(config.store.fsync_interval.count());
  if (auto s = read_number(lookup, "FSYNC_INTERVAL_MS", 1, 3'600'000, interval); !s.ok()) return s;
  config.store.fsync_interval = std::chrono::milliseconds(interval);
  std::uint64_t max_payload = config.store.max_payload_bytes;
  if (auto s = read_number(lookup, "MAX_PAYLOAD_BYTES", 1, 1ull << 30, max_payload); !s.ok()) return s;
  config.store.max_payload_bytes = static_cast<std::size_t>(max_payload);
  std::uint64_t dedup_window = static_cast<std::uint64_t>(config.store.dedup_window.count());
  if (auto s = read_number(lookup, "DEDUP_WINDOW_MS", 0, 86'400'000ull * 7, dedup_window); !s.ok()) return s;
  config.store.dedup_window = std::chrono::milliseconds(dedup_window);
  std::uint64_t visibility = static_cast<std::uint64_t>(config.groups.visibility_timeout.count());
  if (auto s = read_number(lookup, "VISIBILITY_TIMEOUT_MS", 1, 86'400'000ull * 7, visibility); !s.ok())
    return s;
  config.groups.visibility_timeout = std::chrono::milliseconds(visibility);
  std::uint64_t max_deliveries = config.groups.max_deliveries;
  if (auto s = read_number(lookup, "MAX_DELIVERIES", 0, 1'000'000, max_deliveries); !s.ok()) return s;
  config.groups.max_deliveries = static_cast<std::uint32_t>(max_deliveries);
  if (auto s = read_number(lookup, "SEGMENT_BYTES", 1024, 1ull << 40, config.store.segment_bytes); !s.ok())
    return s;
  if (auto s = read_number(lookup, "RETENTION_BYTES", 0, 1ull << 60, config.retention.bytes); !s.ok())
    return s;
  std::uint64_t retention_ms = static_cast<std::uint64_t>(config.retention.time.count());
  if (auto s = read_number(lookup, "RETENTION_MS", 0, 1ull << 50, retention_ms); !s.ok()) return s;
  config.retention.time = std::chrono::milliseconds(retention_ms);
  if (auto acked = lookup("RETENTION_ACKED")) {
    if (*acked != "true" && *acked != "false")
      return bad_variable("RETENTION_ACKED", *acked, "expected true or false");
    config.retention.acked = *acked == "true";
  }
  std::uint64_t check_ms = static_cast<std::uint64_t>(config.retention.check_interval.count());
  if (auto s = read_number(lookup, "RETENTION_CHECK_MS", 1, 86'400'000, check_ms); !s.ok()) return s;
  config.retention.check_interval = std::chrono::milliseconds(check_ms);
  return config;
}

}  // namespace mq

#include "output.h"

#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

namespace mqctl {

int Reporter::fail(std::string_view what, const mq::Status& status) const {
  std::cerr << "mqctl " << command_ << ": " << what << ": " << status.to_string() << std::endl;
  return status.code() == mq::ErrorCode::kInvalidArgument ? kExitUsage : kExitFailed;
}

int Reporter::fail(std::string_view what) const {
  std::cerr << "mqctl " << command_ << ": " << what << std::endl;
  return kExitFailed;
}

void Reporter::note(std::string_view text) const {
  std::cerr << "mqctl " << command_ << ": " << text << std::endl;
}

std::string json_string(std::string_view text) {
  return nlohmann::json(std::string(text)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string message_line(const mq::ReceivedMessage& message, const MessageFormat& format) {
  if (format.payload_only) return message.payload;
  // Written by hand rather than through nlohmann::json: the payload goes out as stored, so that
  // integers longer than a double's 53 bits and the order of object members survive.
  std::string line = "{\"topic\":" + json_string(message.topic) +
                     ",\"partition\":" + std::to_string(message.partition) +
                     ",\"offset\":" + std::to_string(message.offset) + ",\"id\":" + json_string(message.id) +
                     ",\"timestamp\":" + std::to_string(message.timestamp_ms);
  if (format.with_delivery) line += ",\"delivery\":" + std::to_string(message.delivery);
  line += ",\"key\":" + (message.key ? json_string(*message.key) : std::string("null"));
  line += ",\"headers\":{";
  for (std::size_t i = 0; i < message.headers.size(); ++i) {
    if (i > 0) line += ',';
    line += json_string(message.headers[i].first) + ":" + json_string(message.headers[i].second);
  }
  line += "},\"payload\":" + message.payload + "}";
  return line;
}

std::string human_bytes(std::uint64_t bytes) {
  constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  if (bytes < 1024) return std::to_string(bytes) + "B";
  double value = static_cast<double>(bytes);
  std::size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, "%.1f%s", value, kUnits[unit]);
  return text;
}

std::string human_number(double value) {
  char text[32];
  if (value >= 100) {
    std::snprintf(text, sizeof text, "%.0f", value);
  } else if (value >= 1) {
    std::snprintf(text, sizeof text, "%.1f", value);
  } else {
    std::snprintf(text, sizeof text, "%.3f", value);
  }
  return text;
}

}  // namespace mqctl

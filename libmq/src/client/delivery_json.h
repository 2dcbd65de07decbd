// Reading a delivered message out of JSON: the data of an mqd event
// ({"id","topic","partition","offset","timestamp","delivery",["key"],"payload"}) or a log record
// ({"offset","timestamp",["key"],"payload"}).
#pragma once

#include <memory>
#include <string_view>

#include "mq/queue.h"

namespace mq::detail {

// Not thread-safe: one per thread that parses (it reuses its buffers).
class DeliveryParser {
 public:
  DeliveryParser();
  ~DeliveryParser();
  DeliveryParser(const DeliveryParser&) = delete;
  DeliveryParser& operator=(const DeliveryParser&) = delete;

  // Sets the fields of `out` that `json` holds (the payload as its minified text), leaving the
  // others as they are; unknown fields are ignored. kInvalidArgument when `json` is not an object
  // with a payload.
  Status parse(std::string_view json, ReceivedMessage& out);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mq::detail

// mqd's query parameters (already percent-decoded by the HTTP layer, so any bytes): topic/group
// names, partition numbers and /consume's options. The input holds up to four values
// (FuzzedDataProvider strings; a missing one is an absent parameter).
#include <fuzzer/FuzzedDataProvider.h>

#include <charconv>

#include "fuzz_support.h"
#include "mq/options.h"
#include "request_parsing.h"

namespace {

mqd::Param param(FuzzedDataProvider& input) {
  if (input.remaining_bytes() == 0 || !input.ConsumeBool()) return std::nullopt;
  return input.ConsumeRandomLengthString(512);
}

bool all_digits(std::string_view text) {
  return !text.empty() && text.find_first_not_of("0123456789") == std::string_view::npos;
}

// The number `text` means: digits only, so leading zeros are allowed; nullopt above UINT64_MAX.
std::optional<std::uint64_t> decimal(std::string_view text) {
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider input(data, size);
  const mqd::Param a = param(input), b = param(input), c = param(input);
  const mqd::Param d =
      input.remaining_bytes() ? mqd::Param(input.ConsumeRemainingBytesAsString()) : std::nullopt;

  for (const auto* value : {&a, &b, &c, &d}) {
    auto name = mqd::required_name("topic", *value);
    if (name.ok()) {
      FUZZ_CHECK(*value && *name == **value, "an accepted name is the value given");
      FUZZ_CHECK(mq::is_valid_name(*name), "an accepted name is valid");
      FUZZ_CHECK(name->size() <= 128 && name->find_first_of("/\\\0", 0, 3) == std::string::npos,
                 "a name can never leave the data directory");
    } else {
      FUZZ_CHECK(name.status().code() == mq::ErrorCode::kInvalidArgument, "a bad name is a 400");
      FUZZ_CHECK(!*value || !mq::is_valid_name(**value), "a valid name is accepted");
    }

    auto partition = mqd::optional_partition(*value);
    if (!*value) {
      FUZZ_CHECK(partition.ok() && !*partition, "an absent partition is no partition");
    } else if (partition.ok()) {
      FUZZ_CHECK(all_digits(**value), "a partition is digits only: no sign, space or suffix");
      FUZZ_CHECK(decimal(**value) == **partition, "a partition reads as the number written");
    } else {
      const auto code = partition.status().code();
      const bool in_range = all_digits(**value) && decimal(**value) && *decimal(**value) <= UINT32_MAX;
      FUZZ_CHECK(!in_range, "every 32-bit partition number is accepted");
      // docs/http-api.md: a number too large for any topic is a 404 like any missing partition; not a number,
      // 400.
      FUZZ_CHECK(code == mq::ErrorCode::kInvalidArgument || code == mq::ErrorCode::kNotFound,
                 "a bad partition is a 400 or a 404");
      if (code == mq::ErrorCode::kNotFound) FUZZ_CHECK(all_digits(**value), "only a number can be a 404");
    }
    auto required = mqd::required_partition(*value);
    FUZZ_CHECK(required.ok() == (partition.ok() && partition->has_value()), "required_partition agrees");
  }

  auto options = mqd::subscribe_options(a, b, c);
  if (options.ok()) {
    if (a)
      FUZZ_CHECK(options->visibility_timeout && options->visibility_timeout->count() >= 1,
                 "a visibility timeout is at least 1 ms");
    if (b)
      FUZZ_CHECK(options->max_inflight >= 1 && options->max_inflight <= 1'000'000, "max_inflight in range");
    if (c) FUZZ_CHECK(*c == "earliest" || *c == "latest", "from is earliest or latest");
  } else {
    FUZZ_CHECK(options.status().code() == mq::ErrorCode::kInvalidArgument, "bad options are a 400");
  }
  return 0;
}

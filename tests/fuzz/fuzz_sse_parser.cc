// The client's Server-Sent Events reader. The input is a few chunk lengths and then the stream: the
// events must be the same whether the stream is fed whole, byte by byte, or in the fuzz-chosen chunks,
// and the same as a straightforward reading of the format (sse_parser.h) gives.
#include <string>
#include <vector>

#include "client/http/sse_parser.h"
#include "fuzz_support.h"

namespace {

using Events = std::vector<std::string>;

Events feed_in_chunks(std::string_view stream, const std::vector<std::size_t>& lengths) {
  mq::detail::SseParser parser;
  Events events;
  std::size_t next = 0;
  while (!stream.empty()) {
    const std::size_t length =
        lengths.empty() ? stream.size() : std::min(lengths[next++ % lengths.size()], stream.size());
    parser.feed(stream.substr(0, length), [&](std::string_view data) { events.emplace_back(data); });
    stream.remove_prefix(length);
  }
  return events;
}

// The format read the obvious way: one byte order mark at the very start dropped, whole lines
// ending in "\n" (a "\r" before it dropped); the unterminated last line is not a line yet.
Events reference(std::string_view stream) {
  if (stream.starts_with("\xEF\xBB\xBF")) stream.remove_prefix(3);
  Events events;
  std::string data;
  bool has_data = false;
  for (std::size_t newline; (newline = stream.find('\n')) != std::string_view::npos;) {
    std::string_view line = stream.substr(0, newline);
    stream.remove_prefix(newline + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) {
      if (has_data) events.push_back(data);
      data.clear();
      has_data = false;
      continue;
    }
    const auto colon = line.find(':');
    const std::string_view field = line.substr(0, colon);
    if (field != "data") continue;  // comments (empty field) and other fields
    std::string_view value = colon == std::string_view::npos ? std::string_view() : line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    if (has_data) data.push_back('\n');
    data.append(value);
    has_data = true;
  }
  return events;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // Byte 0: how many chunk lengths follow (0-7), each one byte (0 counts as 1).
  std::vector<std::size_t> lengths;
  std::size_t header = 0;
  if (size > 0) {
    const std::size_t count = data[0] % 8;
    header = 1;
    for (std::size_t i = 0; i < count && header < size; ++i)
      lengths.push_back(std::max<std::size_t>(1, data[header++]));
  }
  const std::string_view stream = mq::fuzzing::as_text(data + header, size - header);

  const Events whole = feed_in_chunks(stream, {});
  FUZZ_CHECK(whole == reference(stream), "the parser reads the format as written");
  FUZZ_CHECK(feed_in_chunks(stream, lengths) == whole, "chunking does not change the events");
  FUZZ_CHECK(feed_in_chunks(stream, {1}) == whole, "byte by byte gives the same events");
  return 0;
}

// The HTTP client's Server-Sent Events parser (an internal part): the text/event-stream grammar as
// the WHATWG HTML standard gives it (data lines joined, comments and other fields skipped, line
// ends, a leading space dropped once, dispatch at a blank line), with bytes split anywhere.
#include <doctest/doctest.h>

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "client/http/sse_parser.h"

using mq::detail::SseParser;

namespace {

using Events = std::vector<std::string>;

// Feeds `chunks` in order to one parser and collects every event's data.
Events parse_chunks(const std::vector<std::string_view>& chunks) {
  SseParser parser;
  Events events;
  for (auto chunk : chunks) parser.feed(chunk, [&](std::string_view data) { events.emplace_back(data); });
  return events;
}

Events parse(std::string_view stream) { return parse_chunks({stream}); }

// A stream that uses every feature at once, and its events.
const std::string kStream =
    ": a comment first\n"
    "retry: 1000\n"
    "\n"
    "id: 1\n"
    "event: delivery\n"
    "data: {\"offset\":1,\"payload\":\"é\"}\n"
    "\n"
    "data:first\r\n"
    ":between\r\n"
    "data:  second\r\n"
    "data\r\n"
    "\r\n"
    "\n"
    "data: third: with colons\n"
    "\r\n"
    "data:\n"
    "\n"
    "id: 4\n"
    "\n"
    "data: last\n"
    "\n"
    "data: not finished\n";
const Events kStreamEvents = {"{\"offset\":1,\"payload\":\"é\"}", "first\n second\n", "third: with colons",
                              "", "last"};

}  // namespace

TEST_CASE("An event's data is dispatched at the blank line that ends it") {
  CHECK(parse("data: hello\n\n") == Events{"hello"});
  CHECK(parse("data: {\"a\":[1,2]}\n\n") == Events{"{\"a\":[1,2]}"});
  // Several events in one chunk, in order, each with only its own data.
  CHECK(parse("data: a\n\ndata: b\n\ndata: c\n\n") == Events{"a", "b", "c"});
  // Blank lines without data dispatch nothing.
  CHECK(parse("\n\n\n").empty());
  CHECK(parse("\n\ndata: x\n\n\n\n") == Events{"x"});
  CHECK(parse("").empty());
}

TEST_CASE("The data lines of one event are joined with a newline") {
  CHECK(parse("data: a\ndata: b\ndata: c\n\n") == Events{"a\nb\nc"});
  CHECK(parse("data: {\ndata: \"k\": 1\ndata: }\n\n") == Events{"{\n\"k\": 1\n}"});
  // Empty data lines count as lines.
  CHECK(parse("data: a\ndata:\ndata: b\n\n") == Events{"a\n\nb"});
  CHECK(parse("data:\ndata:\n\n") == Events{"\n"});
}

TEST_CASE("One space after the colon is dropped, and only one") {
  CHECK(parse("data:no space\n\n") == Events{"no space"});
  CHECK(parse("data: one space\n\n") == Events{"one space"});
  CHECK(parse("data:  two spaces\n\n") == Events{" two spaces"});
  CHECK(parse("data:\tnot a space\n\n") == Events{"\tnot a space"});
  CHECK(parse("data: trailing space \n\n") == Events{"trailing space "});
  CHECK(parse("data: \n\n") == Events{""});
  // Only the first colon separates the field name from the value.
  CHECK(parse("data: a:b: c\n\n") == Events{"a:b: c"});
  CHECK(parse("data::x\n\n") == Events{":x"});
}

TEST_CASE("A data field without a colon or without a value is an empty data line, still an event") {
  CHECK(parse("data\n\n") == Events{""});
  CHECK(parse("data:\n\n") == Events{""});
  CHECK(parse("data\ndata\n\n") == Events{"\n"});
  CHECK(parse("data: a\ndata\n\n") == Events{"a\n"});
}

TEST_CASE("Comments and every field other than data are skipped") {
  CHECK(parse(": heartbeat\n\n").empty());
  CHECK(parse(":\n\n").empty());
  CHECK(parse(":data: not data\n\n").empty());
  CHECK(parse("data: a\n: comment\ndata: b\n\n") == Events{"a\nb"});
  CHECK(parse("id: 7\nevent: delivery\nretry: 50\ndata: d\n\n") == Events{"d"});
  CHECK(parse("data: d\nid: 7\nevent: x\n\n") == Events{"d"});
  // An event with an id but no data is not dispatched, and does not leak into the next one.
  CHECK(parse("id: 1\n\ndata: next\n\n") == Events{"next"});
  CHECK(parse("event: ping\n\n").empty());
  CHECK(parse("id\nevent\nretry\n\n").empty());
}

TEST_CASE("The field name must be exactly data") {
  for (std::string_view line : {"Data: x", "DATA: x", "data : x", "datax: y", "data-x: y", "dat: z",
                                " data: x", "\tdata: x", "datadata: x", "xdata: x"}) {
    CAPTURE(line);
    CHECK(parse(std::string(line) + "\n\n").empty());
    // Between two data lines it adds nothing to the event.
    CHECK(parse("data: a\n" + std::string(line) + "\ndata: b\n\n") == Events{"a\nb"});
  }
}

TEST_CASE("Lines end in LF or CRLF, mixed freely") {
  CHECK(parse("data: a\r\n\r\n") == Events{"a"});
  CHECK(parse("data: a\r\ndata: b\r\n\r\n") == Events{"a\nb"});
  CHECK(parse("data: a\r\n\n") == Events{"a"});
  CHECK(parse("data: a\n\r\n") == Events{"a"});
  CHECK(parse(": comment\r\nid: 1\r\ndata: x\r\n\r\ndata: y\n\n") == Events{"x", "y"});
  // Only the CR of a CRLF goes, not one that belongs to the value.
  CHECK(parse("data: a\r\r\n\r\n") == Events{"a\r"});
}

TEST_CASE("A lone CR is no line end (as the parser documents)") {
  // The HTML standard would read "a" and "b" as two data lines; mqd never sends a lone CR, and the
  // parser documents that it keeps it in the line.
  CHECK(parse("data: a\rdata: b\n\n") == Events{"a\rdata: b"});
  // The standard would read "\r\r\n" as the end of the line, then the blank line that ends the event.
  CHECK(parse("data: a\r\r\n").empty());
  CHECK(parse("data: a\n\r\n") == Events{"a"});
}

TEST_CASE("An event without its terminating blank line is not dispatched until the blank line comes") {
  SseParser parser;
  Events events;
  auto collect = [&](std::string_view data) { events.emplace_back(data); };
  parser.feed("data: a\n", collect);
  CHECK(events.empty());
  parser.feed("data: b", collect);
  CHECK(events.empty());
  parser.feed("\n", collect);
  CHECK(events.empty());
  parser.feed("\n", collect);
  CHECK(events == Events{"a\nb"});
  // A stream that ends in the middle of an event (the connection dropped) dispatches nothing more.
  parser.feed("data: cut off\n", collect);
  parser.feed("data: mid-line", collect);
  CHECK(events == Events{"a\nb"});
  // Empty chunks change nothing.
  CHECK(parse_chunks({"", "data: x\n", "", "\n", ""}) == Events{"x"});
  CHECK(parse("data: x").empty());
  CHECK(parse("data: x\n").empty());
  CHECK(parse("data: x\r\n").empty());
}

TEST_CASE("The data of one event is delivered at once, then forgotten") {
  SseParser parser;
  Events events;
  int calls = 0;
  auto collect = [&](std::string_view data) {
    ++calls;
    events.emplace_back(data);
  };
  parser.feed("data: one\n\n", collect);
  parser.feed("data: two\n\n", collect);
  CHECK(calls == 2);
  CHECK(events == Events{"one", "two"});
  // A data line that is long, and split into many chunks, comes out whole.
  const std::string big(100000, 'x');
  const std::string stream = "data: " + big + "\n\n";
  for (std::size_t at = 0; at < stream.size(); at += 777)
    parser.feed(std::string_view(stream).substr(at, 777), collect);
  CHECK(calls == 3);
  CHECK(events.back() == big);
}

TEST_CASE("A stream split at any byte, or into single bytes, gives the same events") {
  REQUIRE(parse(kStream) == kStreamEvents);
  const std::string_view stream = kStream;
  for (std::size_t at = 0; at <= stream.size(); ++at) {
    CAPTURE(at);
    CHECK(parse_chunks({stream.substr(0, at), stream.substr(at)}) == kStreamEvents);
  }
  std::vector<std::string_view> bytes;
  for (std::size_t i = 0; i < stream.size(); ++i) bytes.push_back(stream.substr(i, 1));
  CHECK(parse_chunks(bytes) == kStreamEvents);
}

TEST_CASE("A stream split at any two bytes gives the same events") {
  // Every split of one CRLF event: each line end may be cut between its CR and its LF.
  const std::string_view stream = "id: 9\r\ndata: a\r\n: c\r\ndata:  b\r\n\r\ndata\r\n\r\n";
  const Events expected = {"a\n b", ""};
  REQUIRE(parse(stream) == expected);
  for (std::size_t first = 0; first <= stream.size(); ++first) {
    for (std::size_t second = first; second <= stream.size(); ++second) {
      const auto events = parse_chunks(
          {stream.substr(0, first), stream.substr(first, second - first), stream.substr(second)});
      if (events != expected) {
        CAPTURE(first);
        CAPTURE(second);
        CHECK(events == expected);
      }
    }
  }
}

// The HTML standard drops one U+FEFF at the start of a stream (only there, and only one), in
// whatever chunks its bytes arrive.
TEST_CASE("A byte order mark at the start of the stream is dropped") {
  CHECK(parse("\xEF\xBB\xBF"
              "data: a\n\n") == Events{"a"});
  CHECK(parse_chunks({"\xEF",
                      "\xBB\xBF"
                      "data: a\n\n"}) == Events{"a"});
  CHECK(parse_chunks({"\xEF", "\xBB", "\xBF", "data: a\n\n"}) == Events{"a"});
  // Two marks: the second is part of the first line's field name, which is then no "data".
  CHECK(parse("\xEF\xBB\xBF\xEF\xBB\xBF"
              "data: a\n\ndata: b\n\n") == Events{"b"});
  // A partial mark is no mark: its bytes stay in the stream.
  CHECK(parse_chunks({"\xEF", "data: a\n\ndata: b\n\n"}) == Events{"b"});
  CHECK(parse("data: \xEF\xBB\xBF"
              "a\n\n") == Events{"\xEF\xBB\xBF"
                                 "a"});
}

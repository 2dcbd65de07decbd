// An incremental reader of a text/event-stream (the Server-Sent Events wire format): bytes go in
// as they arrive, split anywhere; each complete event's data comes out.
#pragma once

#include <algorithm>
#include <string>
#include <string_view>

namespace mq::detail {

// Lines end in "\n" or "\r\n" (a lone "\r" is not treated as a line end). Comment lines (":...")
// and fields other than "data" are skipped; an event is dispatched at the blank line that ends it,
// when it had data. Not thread-safe.
class SseParser {
 public:
  // Calls `on_data(std::string_view data)` for every event completed by `chunk`; the data of an
  // event with several data lines is joined with "\n", as EventSource does.
  template <typename OnData>
  void feed(std::string_view chunk, OnData&& on_data) {
    if (!past_byte_order_mark_ && !skip_byte_order_mark(chunk)) return;
    while (!chunk.empty()) {
      const auto newline = chunk.find('\n');
      if (newline == std::string_view::npos) {
        partial_.append(chunk);
        return;
      }
      std::string_view line = chunk.substr(0, newline);
      chunk.remove_prefix(newline + 1);
      if (!partial_.empty()) {
        partial_.append(line);
        line = partial_;
      }
      if (line.ends_with('\r')) line.remove_suffix(1);
      if (line.empty()) {
        if (has_data_) on_data(std::string_view(data_));
        data_.clear();
        has_data_ = false;
      } else if (line.starts_with("data")) {
        std::string_view value = line.substr(4);
        if (value.empty() || value.front() == ':') {
          if (!value.empty()) value.remove_prefix(1);
          if (value.starts_with(' ')) value.remove_prefix(1);
          if (has_data_) data_.push_back('\n');
          data_.append(value);
          has_data_ = true;
        }
      }
      partial_.clear();
    }
  }

 private:
  // The HTML standard drops one U+FEFF at the start of a stream. Removes it (or as much of it as
  // `chunk` holds) from `chunk`; false while the stream's first bytes could still be one.
  bool skip_byte_order_mark(std::string_view& chunk) {
    static constexpr std::string_view kMark = "\xEF\xBB\xBF";
    const std::size_t n = std::min(chunk.size(), kMark.size() - mark_bytes_seen_);
    if (chunk.substr(0, n) != kMark.substr(mark_bytes_seen_, n)) {
      // Not a mark after all: the bytes held back so far are the stream's first bytes.
      past_byte_order_mark_ = true;
      if (mark_bytes_seen_ > 0) partial_.assign(kMark.substr(0, mark_bytes_seen_));
      return true;
    }
    mark_bytes_seen_ += n;
    chunk.remove_prefix(n);
    past_byte_order_mark_ = mark_bytes_seen_ == kMark.size();
    return past_byte_order_mark_;
  }

  bool past_byte_order_mark_ = false;
  std::size_t mark_bytes_seen_ = 0;  // of a possible mark at the start, held back
  std::string partial_;              // an incomplete line from the previous chunk
  std::string data_;                 // the data of the event being read
  bool has_data_ = false;
};

}  // namespace mq::detail

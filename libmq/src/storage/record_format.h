// The grammar of one log line (libmq/docs/log_format.md): writing it, and reading it back during
// reads (cheap prefix check) and recovery (full validation).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mq/message.h"

namespace mq::detail {

// The fields recovery needs from one line.
struct RecordHeader {
  std::uint64_t offset = 0;
  // The offset of the last message of the batch this line belongs to; absent for a batch of one.
  std::optional<std::uint64_t> batch_last;
};

// True when `s` is valid UTF-8 (what a JSON string may hold).
bool is_valid_utf8(std::string_view s);

// Appends `s` to `out` as a JSON string literal (quotes included), escaping what JSON requires.
void append_json_string(std::string& out, std::string_view s);

// Appends `headers` as a JSON object of strings, in order ({"name":"value",...}).
void append_json_headers(std::string& out, const std::vector<std::pair<std::string, std::string>>& headers);

// When `message`, stored at `timestamp_ms`, is due: its deliver_at, or the timestamp plus its
// delay plus 1 ms (the store time's fraction of a millisecond, rounded up), or the timestamp itself.
std::int64_t due_time(const Message& message, std::int64_t timestamp_ms);

// Appends one record line, newline included:
// {"offset":N,"timestamp":T[,"batch_last":L][,"key":"k"][,"headers":{..}][,"deliver_at":D]
//  [,"dedup_id":"d"][,"source":S],"payload":P}\n  (deliver_at only when it is after T)
void append_record_line(std::string& out, std::uint64_t offset, std::int64_t timestamp_ms,
                        std::optional<std::uint64_t> batch_last, const Message& message);

// The offset of a line that starts as append_record_line writes it; nullopt when it does not.
std::optional<std::uint64_t> parse_offset_prefix(std::string_view line);
// The timestamp of such a line ({"offset":N,"timestamp":T,...}); nullopt when it does not start so.
std::optional<std::int64_t> parse_timestamp_prefix(std::string_view line);

// The fields of a stored line that decide when and in which order groups get it, and whether a
// later message is its duplicate.
struct RecordOptions {
  std::uint64_t offset = 0;
  std::int64_t timestamp_ms = 0;
  // The key as it is written in the line (a JSON string with its quotes and escapes): the writer
  // escapes every key the same way, so equal keys are equal texts.
  std::optional<std::string> raw_key;
  std::optional<std::int64_t> deliver_at_ms;
  std::optional<std::string> dedup_id;  // unescaped
};
// Reads them from a line recovery accepted: from the prefix that append_record_line writes when
// the line has it, else (a line written some other way) by parsing it. nullopt for a line that is
// not a record. With DedupIdField::kSkip, dedup_id is left out (groups have no use for it, and copying
// it cost every delivery an allocation).
enum class DedupIdField { kSkip, kRead };
std::optional<RecordOptions> parse_record_options(std::string_view line,
                                                  DedupIdField dedup_id = DedupIdField::kRead);

// Fully checks `line` (without its newline): one JSON object with an unsigned "offset", a numeric
// "timestamp", a "payload", a string "key" if any and an unsigned "batch_last" >= offset if any.
// nullopt when the line is damaged. Not thread-safe (reuses its parser).
class RecordValidator {
 public:
  RecordValidator();
  ~RecordValidator();
  RecordValidator(const RecordValidator&) = delete;
  RecordValidator& operator=(const RecordValidator&) = delete;
  std::optional<RecordHeader> validate(std::string_view line);

  // The producer's fields of a stored record, for re-appending it elsewhere (dead letters).
  struct ProducedFields {
    std::string payload_json;  // minified
    std::optional<std::string> key;
    std::optional<std::string> source_json;  // a dead letter's own source, minified
    std::vector<std::pair<std::string, std::string>> headers;
  };
  std::optional<ProducedFields> produced_fields(std::string_view line);

 private:
  struct Parser;
  std::unique_ptr<Parser> parser_;
};

}  // namespace mq::detail

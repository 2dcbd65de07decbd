#include "replication/fetch.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <limits>
#include <optional>
#include <utility>

#include "storage/record_format.h"

namespace mq::replication {
namespace {

// The offset of the last line of the batch `line` (at `offset`) belongs to.
Result<std::uint64_t> batch_last_of(detail::RecordValidator& validator, std::string_view line,
                                    std::uint64_t offset) {
  const auto header = validator.validate(line);
  if (!header)
    return Status::corruption("the stored line at offset " + std::to_string(offset) + " is damaged");
  return header->batch_last.value_or(offset);
}

constexpr std::size_t kReadMessages = 65536;
// Whatever a follower asks for, an answer holds at most this much (plus the rest of one batch).
constexpr std::size_t kMaxAnswerBytes = std::size_t{8} << 20;

}  // namespace

Result<FetchAnswer> answer_fetch(const Partition& log, const EpochCache& epochs, std::uint64_t leader_epoch,
                                 std::uint64_t high_watermark, const FetchRequest& request) {
  if (request.leader_epoch != leader_epoch) {
    return Status::conflict("leader epoch mismatch: asked epoch " + std::to_string(request.leader_epoch) +
                            ", this leader's is " + std::to_string(leader_epoch));
  }
  FetchAnswer answer;
  answer.leader_epoch = leader_epoch;
  answer.high_watermark = high_watermark;
  answer.log_start = log.log_start_offset();
  const std::uint64_t end = log.log_end_offset();
  // Divergence first (KIP-101, KIP-279): where the follower's newest epoch ends in this log. It
  // parts from it when that end is below its own, or when this log does not know that epoch (the
  // answer then names the newest epoch this log has below it, and the follower cuts where its own
  // copy of that epoch ends too). A follower without epochs has nothing to compare: everything it
  // holds goes. An empty one has nothing to part from.
  if (request.offset > request.log_start) {
    if (!request.last_epoch) {
      answer.truncate_to = request.log_start;
      answer.truncate_epoch = 0;
      return answer;
    }
    const auto epoch_end = epochs.end_of(*request.last_epoch, end);
    if (epoch_end.epoch < *request.last_epoch || epoch_end.end_offset < request.offset) {
      answer.truncate_to = epoch_end.end_offset;
      answer.truncate_epoch = epoch_end.epoch;
      return answer;
    }
  }
  if (request.offset < answer.log_start) {
    answer.reset_to = answer.log_start;
    return answer;
  }
  answer.first_offset = request.offset;
  answer.epochs = epochs.entries_from(request.offset);
  detail::RecordValidator validator;
  // At least one batch whatever is asked (0 would answer nothing forever, as if caught up).
  const std::size_t max_bytes = std::clamp<std::size_t>(request.max_bytes, 1, kMaxAnswerBytes);
  std::uint64_t offset = request.offset;
  std::uint64_t whole_end = offset;  // lines before this are whole batches in answer.lines
  std::size_t whole_bytes = 0;
  // The batch the last line read belongs to, when unfinished (no optional: gcc -O1 warns falsely).
  bool batch_open = false;
  std::uint64_t open_batch_last = 0;
  while (offset < end) {
    // Within the budget; past it only to finish the batch under way, which is read whole at once.
    const bool finishing = answer.lines.size() >= max_bytes;
    if (finishing && !batch_open) break;
    auto batch = finishing ? log.read_past_limit(offset, open_batch_last - offset + 1,
                                                 std::numeric_limits<std::size_t>::max())
                           : log.read_past_limit(offset, kReadMessages, max_bytes - answer.lines.size());
    if (!batch.ok()) return batch.status();
    if (batch->empty()) break;  // the rest is not durable yet
    for (const StoredMessage& m : *batch) {
      answer.lines.append(m.line);
      answer.lines += '\n';
      auto last = batch_last_of(validator, m.line, m.offset);
      if (!last.ok()) return last.status();
      if (*last == m.offset) {
        whole_end = m.offset + 1;
        whole_bytes = answer.lines.size();
        batch_open = false;
      } else {
        batch_open = true;
        open_batch_last = *last;
      }
    }
    offset = batch->next_offset();
  }
  answer.lines.resize(whole_bytes);  // a batch the budget cut goes in the next answer
  answer.line_count = whole_end - request.offset;
  std::erase_if(answer.epochs, [&](const EpochCache::Entry& e) { return e.start > whole_end; });
  return answer;
}

Result<std::uint64_t> apply_fetch_answer(Partition& log, EpochCache& epochs, FetchAnswer answer) {
  if (answer.truncate_to) {
    // Where the leader's copy of truncate_epoch ends, or this log's own copy of it if that ends
    // sooner (the leader did not know this log's newest epoch, KIP-279). Below its log start,
    // everything it holds goes; the next fetch, from an empty log, is not checked for divergence.
    const std::uint64_t own_end = epochs.end_of(answer.truncate_epoch, log.log_end_offset()).end_offset;
    const std::uint64_t to =
        std::clamp(std::min(*answer.truncate_to, own_end), log.log_start_offset(), log.log_end_offset());
    if (auto s = log.truncate_to(to); !s.ok()) return s;
    // (The log may have cut further back, to the start of the batch holding `to`.)
    if (auto s = epochs.truncate_from(log.log_end_offset()); !s.ok()) return s;
    return log.log_end_offset();
  }
  if (answer.reset_to) {
    if (auto s = log.reset_to(*answer.reset_to); !s.ok()) return s;
    if (auto s = epochs.truncate_from(0); !s.ok()) return s;
    return log.log_end_offset();
  }
  if (answer.line_count == 0) return log.log_end_offset();
  if (answer.first_offset != log.log_end_offset()) {
    return Status::invalid_argument("fetch answer: lines from offset " + std::to_string(answer.first_offset) +
                                    " for a log ending at " + std::to_string(log.log_end_offset()));
  }
  const std::uint64_t end = answer.first_offset + answer.line_count;
  // The epochs first, those that cover the lines: a crash between the two leaves an entry whose
  // start is at or past the log's end, which a later entry or truncation replaces; the reverse
  // order would leave lines whose epoch the cache does not know.
  for (const auto& entry : answer.epochs) {
    if (entry.start >= end) continue;
    if (auto newest = epochs.newest(); newest && entry.epoch <= newest->epoch) continue;  // known already
    // The epoch the first line falls in starts, in this log, at that line (after a reset, or in a
    // log that took lines of it before).
    if (auto s = epochs.assign(entry.epoch, std::max(entry.start, answer.first_offset)); !s.ok()) return s;
  }
  auto stored = log.append_copied(std::move(answer.lines), answer.first_offset);
  if (!stored.ok()) return stored.status();
  return log.log_end_offset();
}

std::string encode_fetch_answer(const FetchAnswer& answer) {
  nlohmann::json header = {{"leader_epoch", answer.leader_epoch},
                           {"high_watermark", answer.high_watermark},
                           {"log_start", answer.log_start}};
  if (answer.truncate_to) {
    header["truncate_to"] = *answer.truncate_to;
    header["truncate_epoch"] = answer.truncate_epoch;
  } else if (answer.reset_to) {
    header["reset_to"] = *answer.reset_to;
  } else {
    header["first_offset"] = answer.first_offset;
    header["lines"] = answer.line_count;
    nlohmann::json list = nlohmann::json::array();
    for (const auto& e : answer.epochs) list.push_back({e.epoch, e.start});
    header["epochs"] = std::move(list);
    if (answer.state_version) {
      header["state_version"] = *answer.state_version;
      header["state_lines"] = answer.state.size();
      header["state_snapshot"] = answer.state_snapshot;
    }
  }
  std::string body = header.dump();
  body += '\n';
  body += answer.lines;
  for (const auto& r : answer.state) {
    body += R"({"group":)";
    body += nlohmann::json(r.group).dump();
    body += R"(,"record":)";
    body += r.record;  // minified JSON, as the journal holds it
    body += "}\n";
  }
  return body;
}

Result<FetchAnswer> decode_fetch_answer(std::string body) {
  const auto bad = [](const std::string& why) { return Status::invalid_argument("fetch answer: " + why); };
  const std::size_t newline = body.find('\n');
  if (newline == std::string::npos) return bad("no header line");
  const auto header = nlohmann::json::parse(std::string_view(body).substr(0, newline), nullptr, false);
  if (!header.is_object()) return bad("the header is not a JSON object");
  const auto number = [&](const char* name) -> std::optional<std::uint64_t> {
    const auto it = header.find(name);
    if (it == header.end() || !it->is_number_unsigned()) return std::nullopt;
    return it->get<std::uint64_t>();
  };
  FetchAnswer answer;
  const auto epoch = number("leader_epoch");
  const auto hw = number("high_watermark");
  const auto start = number("log_start");
  if (!epoch || !hw || !start) return bad("leader_epoch, high_watermark and log_start are required");
  answer.leader_epoch = *epoch;
  answer.high_watermark = *hw;
  answer.log_start = *start;
  const bool truncate = header.contains("truncate_to");
  const bool reset = header.contains("reset_to");
  const bool lines = header.contains("lines");
  if (int(truncate) + int(reset) + int(lines) != 1) return bad("one of truncate_to, reset_to and lines");
  if (body.size() != newline + 1 && !lines) return bad("lines after a header that announces none");
  if (truncate) {
    answer.truncate_to = number("truncate_to");
    const auto truncate_epoch = number("truncate_epoch");
    if (!answer.truncate_to || !truncate_epoch) return bad("truncate_to and truncate_epoch must be numbers");
    answer.truncate_epoch = *truncate_epoch;
    return answer;
  }
  if (reset) {
    answer.reset_to = number("reset_to");
    if (!answer.reset_to) return bad("reset_to must be a number");
    return answer;
  }
  const auto first = number("first_offset");
  const auto count = number("lines");
  if (!first || !count) return bad("first_offset and lines must be numbers");
  answer.first_offset = *first;
  answer.line_count = *count;
  const auto list = header.find("epochs");
  if (list == header.end() || !list->is_array()) return bad("epochs must be an array");
  for (const auto& pair : *list) {
    if (!pair.is_array() || pair.size() != 2 || !pair[0].is_number_unsigned() ||
        !pair[1].is_number_unsigned())
      return bad("an epoch entry is not [epoch, start]");
    answer.epochs.push_back({pair[0].get<std::uint64_t>(), pair[1].get<std::uint64_t>()});
  }
  std::uint64_t state_lines = 0;
  if (header.contains("state_version")) {
    answer.state_version = number("state_version");
    const auto count_of_state = number("state_lines");
    const auto snapshot = header.find("state_snapshot");
    if (!answer.state_version || !count_of_state || snapshot == header.end() || !snapshot->is_boolean())
      return bad("state_version and state_lines must be numbers, state_snapshot a boolean");
    state_lines = *count_of_state;
    answer.state_snapshot = snapshot->get<bool>();
  }
  // The log lines end after line_count newlines; the state lines follow.
  std::size_t end = newline + 1;
  for (std::uint64_t i = 0; i < answer.line_count; ++i) {
    const std::size_t next = body.find('\n', end);
    if (next == std::string::npos)
      return bad("the header announces " + std::to_string(answer.line_count) + " lines");
    end = next + 1;
  }
  std::string_view rest = std::string_view(body).substr(end);
  for (std::uint64_t i = 0; i < state_lines; ++i) {
    const std::size_t next = rest.find('\n');
    if (next == std::string_view::npos)
      return bad("the header announces " + std::to_string(state_lines) + " state lines");
    const auto line = nlohmann::json::parse(rest.substr(0, next), nullptr, false);
    rest.remove_prefix(next + 1);
    if (!line.is_object() || !line.contains("group") || !line["group"].is_string() ||
        !line.contains("record"))
      return bad("a state line is not {\"group\":G,\"record\":R}");
    answer.state.push_back({line["group"].get<std::string>(), line["record"].dump()});
  }
  if (!rest.empty()) return bad("more lines than the header announces");
  body.resize(end);
  answer.lines = body.substr(newline + 1);
  return answer;
}

}  // namespace mq::replication

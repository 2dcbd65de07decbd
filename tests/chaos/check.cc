// The kill -9 checker's judge: reads the logs mqd left and checks the history against them.
#include <algorithm>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "history.h"

namespace mq::chaos {

const char* outcome_name(Outcome outcome) {
  switch (outcome) {
    case Outcome::kOk:
      return "200";
    case Outcome::kRefused:
      return "refused";
    case Outcome::kIndeterminate:
      return "indeterminate";
    case Outcome::kRejected:
      return "rejected";
  }
  return "?";
}

const char* style_name(ProduceOp::Style style) {
  switch (style) {
    case ProduceOp::Style::kSingle:
      return "single";
    case ProduceOp::Style::kSingleKeyed:
      return "single-keyed";
    case ProduceOp::Style::kSingleUnrouted:
      return "single-unrouted";
    case ProduceOp::Style::kBatch:
      return "batch";
    case ProduceOp::Style::kBatchKeyed:
      return "batch-keyed";
  }
  return "?";
}

std::size_t payload_hash(const std::string& canonical_json) {
  return std::hash<std::string>{}(canonical_json);
}

namespace {

namespace fs = std::filesystem;

// The segments of one partition in offset order: sealed `partition-<N>.<first offset>.log`, then the
// active `partition-<N>.log`.
std::vector<fs::path> segments_of(const fs::path& dir, std::uint32_t partition) {
  const std::string prefix = "partition-" + std::to_string(partition) + ".";
  std::vector<std::pair<std::uint64_t, fs::path>> sealed;
  std::vector<fs::path> all;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(dir, error)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with(prefix) || !name.ends_with(".log")) continue;
    const std::string middle = name.substr(prefix.size(), name.size() - prefix.size() - 4);
    if (middle.empty()) continue;
    std::uint64_t first = 0;
    const auto [end, ec] = std::from_chars(middle.data(), middle.data() + middle.size(), first);
    if (ec == std::errc() && end == middle.data() + middle.size()) sealed.emplace_back(first, entry.path());
  }
  std::sort(sealed.begin(), sealed.end());
  for (auto& [first, path] : sealed) all.push_back(path);
  if (fs::exists(dir / (prefix + "log"))) all.push_back(dir / (prefix + "log"));
  return all;
}

std::string seconds_since(Clock::time_point start, Clock::time_point t) {
  char text[32];
  std::snprintf(text, sizeof text, "+%.3fs", std::chrono::duration<double>(t - start).count());
  return text;
}

std::string where(std::uint32_t partition, std::uint64_t offset) {
  return "partition " + std::to_string(partition) + " offset " + std::to_string(offset);
}

}  // namespace

std::map<std::uint32_t, PartitionLog> read_logs(const std::string& data_dir, const std::string& topic,
                                                std::uint32_t partitions) {
  std::map<std::uint32_t, PartitionLog> logs;
  const fs::path dir = fs::path(data_dir) / topic;
  for (std::uint32_t p = 0; p < partitions; ++p) {
    PartitionLog& log = logs[p];
    for (const auto& segment : segments_of(dir, p)) {
      std::ifstream in(segment, std::ios::binary);
      std::string line;
      std::size_t number = 0;
      while (std::getline(in, line)) {
        ++number;
        auto record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
        if (!record.is_object() || !record.contains("offset") || !record["offset"].is_number_unsigned() ||
            !record.contains("payload")) {
          log.damage.push_back(segment.filename().string() + " line " + std::to_string(number) + ": " +
                               line.substr(0, 200));
          continue;
        }
        LogLine parsed;
        parsed.offset = record["offset"].get<std::uint64_t>();
        const auto& payload = record["payload"];
        const std::string canonical = payload.dump();
        parsed.payload_hash = payload_hash(canonical);
        if (payload.is_object() && payload.contains("uid") && payload["uid"].is_string()) {
          parsed.uid = payload["uid"].get<std::string>();
        } else {
          parsed.payload = canonical.substr(0, 200);
        }
        if (record.contains("key") && record["key"].is_string())
          parsed.key = record["key"].get<std::string>();
        if (record.contains("batch_last") && record["batch_last"].is_number_unsigned()) {
          parsed.batch_last = record["batch_last"].get<std::uint64_t>();
        }
        log.lines.push_back(std::move(parsed));
      }
    }
  }
  return logs;
}

void Verdict::add(std::string kind, std::string detail) {
  if (counts_[kind]++ < keep_) examples_.push_back({std::move(kind), std::move(detail)});
}

std::size_t Verdict::total() const {
  std::size_t total = 0;
  for (const auto& [kind, count] : counts_) total += count;
  return total;
}

void check(const History& history, const std::map<std::uint32_t, PartitionLog>& logs, Verdict& verdict) {
  auto report = [&](std::string kind, std::string detail) {
    verdict.add(std::move(kind), std::move(detail));
  };
  auto at = [&](Clock::time_point t) { return seconds_since(history.start, t); };

  // --- The logs on their own: well-formed, offsets contiguous from 0, every payload unique and ours.
  struct Place {
    std::uint32_t partition;
    std::uint64_t offset;
  };
  std::unordered_map<std::string, std::vector<Place>> placed;                 // uid -> where the log holds it
  std::unordered_map<std::string, std::pair<std::size_t, std::size_t>> sent;  // uid -> (op, message)
  for (std::size_t i = 0; i < history.produces.size(); ++i) {
    for (std::size_t m = 0; m < history.produces[i].uids.size(); ++m)
      sent[history.produces[i].uids[m]] = {i, m};
  }
  auto line_at = [&](std::uint32_t partition, std::uint64_t offset) -> const LogLine* {
    auto log = logs.find(partition);
    if (log == logs.end() || offset >= log->second.lines.size()) return nullptr;
    const LogLine& line = log->second.lines[offset];
    return line.offset == offset ? &line : nullptr;
  };
  for (const auto& [partition, log] : logs) {
    for (const auto& damage : log.damage) {
      report("damaged-log-line", "partition " + std::to_string(partition) + ": " + damage);
    }
    for (std::size_t i = 0; i < log.lines.size(); ++i) {
      const LogLine& line = log.lines[i];
      if (line.offset != i) {
        report("offsets-not-contiguous", "partition " + std::to_string(partition) + ": line " +
                                             std::to_string(i + 1) + " holds offset " +
                                             std::to_string(line.offset) + ", expected " + std::to_string(i));
      }
      if (line.uid.empty() || !sent.contains(line.uid)) {
        report("unknown-message", where(partition, line.offset) +
                                      " holds a message the checker never sent: " +
                                      (line.uid.empty() ? line.payload : "uid " + line.uid));
      }
      if (!line.uid.empty()) placed[line.uid].push_back({partition, line.offset});
    }
  }
  for (const auto& [uid, places] : placed) {
    if (places.size() < 2) continue;
    std::string list;
    for (const auto& place : places)
      list += " " + std::to_string(place.partition) + "/" + std::to_string(place.offset);
    report("duplicate", "uid " + uid + " (never retried) is stored " + std::to_string(places.size()) +
                            " times, at partition/offset" + list);
  }

  // --- Produces: a 200 is in the log where the answer said, with the payload sent; a refused or
  // 4xx-rejected produce is not; a batch is all or nothing; a key stays on one partition.
  std::map<std::string, std::pair<std::uint32_t, std::string>> key_home;  // key -> (partition, uid)
  for (const ProduceOp& op : history.produces) {
    const std::string answered = "(sent " + at(op.sent) + ", answered " + at(op.answered) +
                                 ", mqd incarnation " + std::to_string(op.epochs.lo) + ".." +
                                 std::to_string(op.epochs.hi) + ", " + style_name(op.style) + ")";
    if (op.outcome == Outcome::kOk) {
      if (op.offsets.size() != op.uids.size()) {
        report("bad-answer", "produce of " + op.uids.front() + " answered 200 with " +
                                 std::to_string(op.offsets.size()) + " offsets for " +
                                 std::to_string(op.uids.size()) + " messages " + answered);
        continue;
      }
      for (std::size_t m = 0; m < op.uids.size(); ++m) {
        const std::string& uid = op.uids[m];
        if (m > 0 && op.offsets[m] != op.offsets[m - 1] + 1) {
          report("bad-answer", "batch answer offsets not consecutive at " + uid + " " + answered);
        }
        const LogLine* line = line_at(op.partition, op.offsets[m]);
        if (line == nullptr || line->uid != uid) {
          std::string found =
              line == nullptr
                  ? "the partition's log ends at offset " +
                        std::to_string(logs.contains(op.partition) ? logs.at(op.partition).lines.size() : 0)
                  : "that offset holds " + (line->uid.empty() ? line->payload : line->uid);
          auto elsewhere = placed.find(uid);
          if (elsewhere != placed.end()) {
            found += "; the message is at " +
                     where(elsewhere->second.front().partition, elsewhere->second.front().offset);
          }
          report(elsewhere == placed.end() ? "lost-produce" : "wrong-offset",
                 "uid " + uid + " answered 200 at " + where(op.partition, op.offsets[m]) + " " + answered +
                     ": " + found);
          continue;
        }
        if (line->payload_hash != payload_hash(op.payloads[m])) {
          report("payload-mismatch",
                 where(op.partition, op.offsets[m]) + " of uid " + uid +
                     " holds another payload than the one sent: " + op.payloads[m].substr(0, 200));
        }
        if (line->key != op.keys[m]) {
          report("key-mismatch", where(op.partition, op.offsets[m]) + " of uid " + uid + " has key '" +
                                     line->key + "', sent '" + op.keys[m] + "'");
        }
        if (op.partition_asked && *op.partition_asked != op.partition) {
          report("bad-answer", "uid " + uid + " asked for partition " + std::to_string(*op.partition_asked) +
                                   ", answered " + std::to_string(op.partition));
        }
        const bool routed_by_key = op.style == ProduceOp::Style::kSingleKeyed ||
                                   (op.style == ProduceOp::Style::kBatchKeyed && m == 0);
        if (routed_by_key) {
          auto [home, fresh] = key_home.try_emplace(op.keys[m], op.partition, uid);
          if (!fresh && home->second.first != op.partition) {
            report("key-moved", "key '" + op.keys[m] + "' went to partition " +
                                    std::to_string(home->second.first) + " (uid " + home->second.second +
                                    ") and to partition " + std::to_string(op.partition) + " (uid " + uid +
                                    ")");
          }
        }
      }
    } else {
      const bool never_happened =
          op.outcome == Outcome::kRefused || (op.outcome == Outcome::kRejected && op.status < 500);
      if (op.outcome == Outcome::kRejected && op.status < 500) {
        report("unexpected-status", "produce of " + op.uids.front() + " answered " +
                                        std::to_string(op.status) + " " + op.error.substr(0, 200) + " " +
                                        answered);
      }
      for (const auto& uid : op.uids) {
        if (never_happened && placed.contains(uid)) {
          report("refused-produce-stored",
                 "uid " + uid + " (" + outcome_name(op.outcome) + ") is at " +
                     where(placed[uid].front().partition, placed[uid].front().offset) + " " + answered);
        }
      }
    }
    if (op.uids.size() > 1) {  // atomic batches: all of it, consecutive and in order, or none of it
      std::size_t present = 0;
      for (const auto& uid : op.uids) present += placed.contains(uid) ? 1 : 0;
      if (present != 0 && present != op.uids.size()) {
        report("torn-batch", "batch " + op.uids.front() + ".." + op.uids.back() + " (" +
                                 outcome_name(op.outcome) + ") has " + std::to_string(present) + " of its " +
                                 std::to_string(op.uids.size()) + " messages in the log " + answered);
      } else if (present == op.uids.size()) {
        const Place first = placed[op.uids.front()].front();
        for (std::size_t m = 1; m < op.uids.size(); ++m) {
          const Place place = placed[op.uids[m]].front();
          if (place.partition != first.partition || place.offset != first.offset + m) {
            report("torn-batch", "batch " + op.uids.front() + ".." + op.uids.back() +
                                     " is not stored consecutively: " + op.uids[m] + " at " +
                                     where(place.partition, place.offset));
            break;
          }
        }
      }
    }
  }

  // --- Deliveries: each one is a message of the final log (no read of something later lost), and
  // none comes after an ack of it was answered 200.
  std::unordered_map<std::string, Clock::time_point> produce_sent;  // uid -> when its produce went out
  for (const ProduceOp& op : history.produces) {
    for (const auto& uid : op.uids) produce_sent[uid] = op.sent;
  }
  struct AckSeen {
    Clock::time_point answered;
    int epoch_hi;
  };
  std::unordered_map<std::string, AckSeen> first_ack;  // uid -> the earliest ack answered 200
  std::unordered_set<std::string> maybe_acked;         // uid -> an ack was sent and its answer lost
  for (const AckOp& ack : history.acks) {
    for (const auto& uid : ack.uids) {
      if (ack.outcome == Outcome::kOk) {
        auto [seen, fresh] = first_ack.try_emplace(uid, AckSeen{ack.answered, ack.epochs.hi});
        if (!fresh && ack.answered < seen->second.answered) seen->second = {ack.answered, ack.epochs.hi};
      } else if (ack.outcome == Outcome::kIndeterminate) {
        maybe_acked.insert(uid);
      } else if (ack.outcome == Outcome::kRejected) {
        report("unexpected-status", "ack of " + uid + " on partition " + std::to_string(ack.partition) +
                                        " answered " + std::to_string(ack.status) + " " +
                                        ack.error.substr(0, 200) + " (sent " + at(ack.sent) + ")");
      }
    }
  }
  std::vector<std::size_t> order(history.deliveries.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const Delivery& x = history.deliveries[a];
    const Delivery& y = history.deliveries[b];
    return std::tie(x.stream, x.seq) < std::tie(y.stream, y.seq);
  });
  // A delivery certainly left mqd after `sent_after` when its stream was opened after it, or when an
  // earlier event on the same stream is a message whose produce was sent after it (a stream's events
  // leave in order). It certainly came from an incarnation >= its stream's epoch_lo.
  std::size_t current_stream = static_cast<std::size_t>(-1);
  Clock::time_point sent_after;
  for (std::size_t index : order) {
    const Delivery& d = history.deliveries[index];
    const StreamRecord& stream = history.streams[d.stream];
    if (d.stream != current_stream) {
      current_stream = d.stream;
      sent_after = stream.opened;
    }
    const std::string seen = "delivery " + std::to_string(d.delivery) + " received " + at(d.received) +
                             " by consumer " + std::to_string(stream.consumer) + " on a stream opened " +
                             at(stream.opened) + " (mqd incarnation >= " + std::to_string(stream.epoch_lo) +
                             ")";
    const LogLine* line = line_at(d.partition, d.offset);
    if (line == nullptr || line->uid != d.uid || line->payload_hash != d.payload_hash) {
      report("delivered-not-in-log", "event " + d.id + " (" + where(d.partition, d.offset) + ", uid " +
                                         d.uid + ", " + seen +
                                         ") does not match the final log, which holds " +
                                         (line == nullptr      ? std::string("nothing there")
                                          : line->uid == d.uid ? "another payload of that uid"
                                                               : line->uid));
    }
    if (auto ack = first_ack.find(d.uid); ack != first_ack.end()) {
      const bool later_incarnation = stream.epoch_lo > ack->second.epoch_hi;
      if (later_incarnation || sent_after > ack->second.answered) {
        report("redelivered-after-ack",
               "uid " + d.uid + " (" + where(d.partition, d.offset) + ") acked 200 at " +
                   at(ack->second.answered) + " (mqd incarnation <= " + std::to_string(ack->second.epoch_hi) +
                   "), then " + seen +
                   (later_incarnation ? ", after a restart" : ", sent by mqd after " + at(sent_after)));
      }
    }
    if (auto produced = produce_sent.find(d.uid); produced != produce_sent.end()) {
      sent_after = std::max(sent_after, produced->second);
    }
  }

  // --- Every message of the log was delivered again until it was acknowledged (the drain), and the
  // group's position agrees.
  std::unordered_map<std::string, const Delivery*> last_delivery;
  for (const Delivery& d : history.deliveries) {
    auto& last = last_delivery[d.uid];
    if (last == nullptr || last->received < d.received) last = &d;
  }
  for (const auto& [partition, log] : logs) {
    auto position = history.final_positions.find(partition);
    for (const LogLine& line : log.lines) {
      if (first_ack.contains(line.uid)) continue;
      const bool committed =
          position != history.final_positions.end() && position->second.committed_offset > line.offset;
      if (maybe_acked.contains(line.uid) && committed) continue;  // the lost answer was a success
      auto last = last_delivery.find(line.uid);
      std::string produced = "never produced by the checker";
      if (auto s = sent.find(line.uid); s != sent.end()) {
        const ProduceOp& op = history.produces[s->second.first];
        produced = std::string("produced ") + outcome_name(op.outcome) + " at " + at(op.answered);
      }
      report("not-redelivered", "uid " + line.uid + " (" + where(partition, line.offset) + ", " + produced +
                                    ") was never acknowledged, and " +
                                    (last == last_delivery.end()
                                         ? std::string("never delivered")
                                         : "last delivered " + at(last->second->received) + " (delivery " +
                                               std::to_string(last->second->delivery) + ")") +
                                    (history.drained ? "" : "; the drain timed out") +
                                    (committed ? "; the group's committed offset is past it" : ""));
    }
    if (position == history.final_positions.end()) {
      report("no-final-position",
             "GET /stats gave no position of the group on partition " + std::to_string(partition));
      continue;
    }
    const GroupPosition& p = position->second;
    if (p.next_offset != log.lines.size()) {
      report("next-offset-mismatch", "partition " + std::to_string(partition) + ": /stats says next_offset " +
                                         std::to_string(p.next_offset) + ", the log holds " +
                                         std::to_string(log.lines.size()) + " messages");
    }
    if (p.committed_offset != p.next_offset || p.inflight != 0) {
      report("group-behind",
             "partition " + std::to_string(partition) + ": after the drain the group's committed_offset is " +
                 std::to_string(p.committed_offset) + " of next_offset " + std::to_string(p.next_offset) +
                 ", " + std::to_string(p.inflight) + " in flight");
    }
  }
}

Figures figures(const History& history, const std::map<std::uint32_t, PartitionLog>& logs) {
  Figures f;
  std::unordered_set<std::string> in_log;
  for (const auto& [partition, log] : logs) {
    f.log_messages += log.lines.size();
    for (const auto& line : log.lines) in_log.insert(line.uid);
  }
  for (const ProduceOp& op : history.produces) {
    ++f.produce_requests;
    ++f.requests_by_style[style_name(op.style)];
    f.messages_sent += op.uids.size();
    switch (op.outcome) {
      case Outcome::kOk:
        f.messages_ok += op.uids.size();
        break;
      case Outcome::kRefused:
        f.messages_refused += op.uids.size();
        break;
      case Outcome::kRejected:
        f.messages_rejected += op.uids.size();
        break;
      case Outcome::kIndeterminate:
        f.messages_indeterminate += op.uids.size();
        for (const auto& uid : op.uids) f.indeterminate_in_log += in_log.contains(uid) ? 1 : 0;
        break;
    }
  }
  f.streams = history.streams.size();
  for (const Delivery& d : history.deliveries) {
    ++f.deliveries;
    if (d.delivery > 1) ++f.redeliveries;
    if (history.streams[d.stream].epoch_lo > 1) ++f.deliveries_after_a_restart;
  }
  for (const AckOp& ack : history.acks) {
    ++f.ack_requests;
    switch (ack.outcome) {
      case Outcome::kOk:
        ++f.ack_requests_ok;
        f.ids_acked_ok += ack.ids.size();
        break;
      case Outcome::kIndeterminate:
        ++f.ack_requests_indeterminate;
        break;
      case Outcome::kRefused:
        ++f.ack_requests_refused;
        break;
      case Outcome::kRejected:
        ++f.ack_requests_rejected;
        break;
    }
  }
  return f;
}

}  // namespace mq::chaos

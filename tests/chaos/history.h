// What the kill -9 checker's clients saw (Jepsen's "history"), the logs mqd left behind, and the
// invariants checked over both after the run. Nothing here talks to mqd: kill9_checker.cc records,
// check.cc judges.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace mq::chaos {

using Clock = std::chrono::steady_clock;

// How a request ended, as the client saw it.
enum class Outcome {
  kOk,             // answered 200
  kRefused,        // the connection could not be made: nothing was sent, so nothing happened
  kIndeterminate,  // sent, answer lost (connection reset by the kill, timeout): may or may not have happened
  kRejected,       // answered with another status
};
const char* outcome_name(Outcome outcome);

// Every incarnation of mqd has a number, counted up before it is spawned and after the previous one
// has exited. A client reads the counter before a request (`epoch_lo`: no older process can answer it)
// and after the answer (`epoch_hi`: no newer process answered it).
struct EpochRange {
  int lo = 0;
  int hi = 0;
};

// One POST /produce: a single message or a batch. Each message carries a payload with a unique
// `uid`, so where it landed can be read back from the log; a produce is never retried.
struct ProduceOp {
  enum class Style { kSingle, kSingleKeyed, kSingleUnrouted, kBatch, kBatchKeyed };
  Style style = Style::kSingle;
  std::vector<std::string> uids;
  std::vector<std::string> payloads;  // canonical JSON (nlohmann's dump) of what was sent
  std::vector<std::string> keys;      // "" = no key
  std::optional<std::uint32_t> partition_asked;
  Clock::time_point sent, answered;
  EpochRange epochs;
  Outcome outcome = Outcome::kIndeterminate;
  int status = 0;                      // HTTP status, 0 without an answer
  std::string error;                   // transport error or the body of a rejection
  std::uint32_t partition = 0;         // kOk only
  std::vector<std::uint64_t> offsets;  // kOk only, one per message
};
const char* style_name(ProduceOp::Style style);

// Payloads are compared by a hash of their canonical JSON (nlohmann's dump: keys sorted, minified),
// so that a long run holds one copy of each payload, not one per delivery.
std::size_t payload_hash(const std::string& canonical_json);

// One GET /consume connection of the checker's group.
struct StreamRecord {
  int consumer = 0;
  std::uint32_t partition = 0;
  Clock::time_point opened;  // before the request went out: every event on it was sent later
  int epoch_lo = 0;
};

// One event received on a stream.
struct Delivery {
  std::size_t stream = 0;  // index into History::streams
  std::size_t seq = 0;     // position among the stream's events
  std::uint32_t partition = 0;
  std::uint64_t offset = 0;
  std::string id;
  std::string uid;               // payload.uid, "" if the payload had none
  std::size_t payload_hash = 0;  // of the canonical JSON (payload_hash())
  int delivery = 0;              // the event's delivery count
  Clock::time_point received;
};

// One POST /ack of one or several ids (all of one partition).
struct AckOp {
  std::uint32_t partition = 0;
  std::vector<std::string> ids;
  std::vector<std::uint64_t> offsets;
  std::vector<std::string> uids;  // as delivered
  bool as_list = false;           // {"ids": [...]} rather than {"id": ...}
  Clock::time_point sent, answered;
  EpochRange epochs;
  Outcome outcome = Outcome::kIndeterminate;
  int status = 0;
  std::string error;
};

// The group's position at the end, from GET /stats.
struct GroupPosition {
  std::uint64_t next_offset = 0;
  std::uint64_t committed_offset = 0;
  std::uint64_t inflight = 0;
};

struct History {
  Clock::time_point start;  // times in reports are seconds since this
  std::vector<ProduceOp> produces;
  std::vector<StreamRecord> streams;
  std::vector<Delivery> deliveries;
  std::vector<AckOp> acks;
  std::map<std::uint32_t, GroupPosition> final_positions;  // empty when /stats could not be read
  bool drained = false;  // every message of the log was acknowledged within the drain timeout
};

// One line of a partition's log as read back after the final clean stop.
struct LogLine {
  std::uint64_t offset = 0;
  std::string uid;  // payload.uid, "" if none
  std::size_t payload_hash = 0;
  std::string payload;  // canonical JSON, kept only when there is no uid (to show it)
  std::string key;      // "" = no key
  std::optional<std::uint64_t> batch_last;
};

struct PartitionLog {
  std::vector<LogLine> lines;       // in file order, across every segment
  std::vector<std::string> damage;  // lines that did not parse as records
};

// Reads every segment of `<data_dir>/<topic>/partition-<N>*.log` for N < partitions.
std::map<std::uint32_t, PartitionLog> read_logs(const std::string& data_dir, const std::string& topic,
                                                std::uint32_t partitions);

struct Violation {
  std::string kind;    // a short stable name: "lost-produce", "redelivered-after-ack", ...
  std::string detail;  // what, where, when: enough to find it in the data directory
};

// Every violation counted by kind, and the first few of each kind in full.
class Verdict {
 public:
  // Keeps the details of the first `keep` violations of each kind.
  explicit Verdict(std::size_t keep = 12) : keep_(keep) {}
  void add(std::string kind, std::string detail);
  bool passed() const { return counts_.empty(); }
  std::size_t total() const;
  const std::map<std::string, std::size_t>& counts() const { return counts_; }
  const std::vector<Violation>& examples() const { return examples_; }

 private:
  std::size_t keep_;
  std::map<std::string, std::size_t> counts_;
  std::vector<Violation> examples_;
};

// Checks the invariants over the history and the final logs, adding what it finds to `verdict`.
void check(const History& history, const std::map<std::uint32_t, PartitionLog>& logs, Verdict& verdict);

// Figures of a run for the report.
struct Figures {
  std::size_t produce_requests = 0, messages_sent = 0, messages_ok = 0, messages_indeterminate = 0,
              messages_refused = 0, messages_rejected = 0, indeterminate_in_log = 0;
  std::map<std::string, std::size_t> requests_by_style;
  std::size_t log_messages = 0;
  std::size_t deliveries = 0, redeliveries = 0, deliveries_after_a_restart = 0, streams = 0;
  std::size_t ack_requests = 0, ack_requests_ok = 0, ack_requests_indeterminate = 0, ack_requests_refused = 0,
              ack_requests_rejected = 0, ids_acked_ok = 0;
};
Figures figures(const History& history, const std::map<std::uint32_t, PartitionLog>& logs);

}  // namespace mq::chaos

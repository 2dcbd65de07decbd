// The data path of replicated partitions (libmq/docs/replication.md "The data path: followers
// fetch"), without the transport: what a follower asks, what its leader answers from its log and
// epoch cache, and how the follower applies the answer to its own. mqd carries these over HTTP
// (GET /replica/fetch); keeping them here lets the whole exchange, divergence and all, be tested
// without a network.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "groups/leadership.h"
#include "mq/partition.h"
#include "mq/status.h"
#include "replication/epoch_cache.h"

namespace mq::replication {

struct FetchRequest {
  std::uint64_t leader_epoch = 0;           // the epoch whose leader the follower thinks it asks
  std::uint64_t offset = 0;                 // the follower's next offset (its LEO)
  std::uint64_t log_start = 0;              // its log start: offset == log_start is an empty log
  std::optional<std::uint64_t> last_epoch;  // the newest epoch in its cache (none: 0)
  std::uint64_t durable = 0;                // its durable offset (per FSYNC)
  std::size_t max_bytes = 1 << 20;          // lines to send at most, unless one batch is larger
  // Group state (section 7): the leader epoch whose records the follower applied (0: none), and
  // the newest of them it holds durably.
  std::uint64_t state_epoch = 0;
  std::uint64_t state_version = 0;
};

// What a leader answers. Exactly one of the three shapes: truncate_to set (the follower's log
// parts from the leader's there), reset_to set (the follower is below the leader's log start),
// or lines from the follower's offset (maybe none).
struct FetchAnswer {
  std::uint64_t leader_epoch = 0;
  std::uint64_t high_watermark = 0;
  std::uint64_t log_start = 0;
  std::optional<std::uint64_t> truncate_to;
  std::uint64_t truncate_epoch = 0;  // with truncate_to: the epoch that answer is for (KIP-279)
  std::optional<std::uint64_t> reset_to;
  std::uint64_t first_offset = 0;  // of `lines`
  std::uint64_t line_count = 0;
  std::string lines;  // whole batches, each line ending in '\n', as the leader stores them
  // The leader's entries covering the lines (EpochCache::entries_from(first_offset)).
  std::vector<EpochCache::Entry> epochs;
  // Group state, with lines (none from a leader that replicates no group state): `state` takes the
  // follower to `state_version` of this epoch; with `state_snapshot` it replaces every group's.
  std::optional<std::uint64_t> state_version;
  bool state_snapshot = false;
  std::vector<mq::detail::GroupStateRecord> state;
};

// The leader's side: answers `request` from `log` (its partition) and `epochs` (its cache), as the
// leader of `leader_epoch` with high watermark `high_watermark`. Lines are read past the read limit
// (the high watermark) as far as they are durable per FSYNC, whole batches only: up to request.max_bytes, or
// the first batch whole when it alone is larger. kConflict when the request names another leader epoch.
Result<FetchAnswer> answer_fetch(const Partition& log, const EpochCache& epochs, std::uint64_t leader_epoch,
                                 std::uint64_t high_watermark, const FetchRequest& request);

// The follower's side: applies `answer` to its `log` and `epochs`: truncates or resets (durably),
// or stores the lines as they are and adds the leader's epoch entries that cover them. Returns the
// log's end (log_end_offset) afterwards. kInvalidArgument for an answer that does not fit the log (lines
// not starting at its end, epochs going backwards): the follower fetches again.
Result<std::uint64_t> apply_fetch_answer(Partition& log, EpochCache& epochs, FetchAnswer answer);

// The answer on the wire (application/x-ndjson): one JSON header line, then the lines, then the
// group-state lines ({"group":G,"record":R}, when the header has state_version).
//   {"leader_epoch":E,"high_watermark":H,"log_start":S,"first_offset":O,"lines":N,"epochs":[[e,s],...]
//    [,"state_version":V,"state_lines":M,"state_snapshot":B]}
//   {"leader_epoch":E,"high_watermark":H,"log_start":S,"truncate_to":T,"truncate_epoch":e}
//   {"leader_epoch":E,"high_watermark":H,"log_start":S,"reset_to":R}
std::string encode_fetch_answer(const FetchAnswer& answer);
// kInvalidArgument for anything else (a damaged or hostile body): the header must parse, name one
// shape, and the lines that follow must be exactly `lines` lines.
Result<FetchAnswer> decode_fetch_answer(std::string body);

}  // namespace mq::replication

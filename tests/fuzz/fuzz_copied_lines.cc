// Differential: lines a follower accepts from its leader (check_copied_lines, libmq/docs/replication.md
// "The data path") must be a log that recovery keeps whole. A leader's bytes are network input: an
// accepted chunk that the follower's next open would cut would lose acknowledged writes there. The
// input is: byte 0, the first offset (0-255); then the chunk. Also: decode_fetch_answer on the whole
// input never crashes, and what it accepts encodes back to the same answer.
#include <string>

#include "fuzz_support.h"
#include "replication/fetch.h"
#include "storage/copied_lines.h"
#include "storage/log_recovery.h"
#include "storage/offset_index.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input = mq::fuzzing::as_text(data, size);
  if (auto answer = mq::replication::decode_fetch_answer(std::string(input)); answer.ok()) {
    auto again = mq::replication::decode_fetch_answer(mq::replication::encode_fetch_answer(*answer));
    FUZZ_CHECK(again.ok(), "an accepted answer encodes to an accepted answer");
    FUZZ_CHECK(again->lines == answer->lines && again->line_count == answer->line_count &&
                   again->first_offset == answer->first_offset && again->truncate_to == answer->truncate_to &&
                   again->reset_to == answer->reset_to,
               "encoding an answer keeps it");
  }
  if (size < 1) return 0;
  const std::uint64_t first = data[0];
  const std::string chunk(input.substr(1));
  auto copied = mq::detail::check_copied_lines(chunk, first);
  if (!copied.ok()) return 0;
  FUZZ_CHECK(copied->text == chunk, "accepted lines are kept byte for byte");
  if (chunk.empty()) return 0;
  // The follower's log file holding exactly these lines, opened as a segment starting at `first`.
  mq::fuzzing::MemoryFile log(chunk);
  std::string index_bytes;
  mq::detail::encode_index_header(index_bytes);
  mq::fuzzing::MemoryFile index(index_bytes);
  auto recovered = mq::detail::recover_log(log, index, "fuzz/partition-0.log", mq::RecoveryMode::kStrict, 64,
                                           nullptr, first);
  FUZZ_CHECK(recovered.ok(), "strict recovery accepts what a follower stored");
  FUZZ_CHECK(recovered->end_position == chunk.size() && recovered->report.truncated_bytes == 0,
             "recovery keeps every accepted byte");
  FUZZ_CHECK(recovered->next_offset == first + copied->count, "recovery finds every accepted line");
  return 0;
}

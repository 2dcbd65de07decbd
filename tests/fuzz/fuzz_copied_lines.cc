// Differential: lines a follower accepts from its leader (check_copied_lines, libmq/docs/replication.md
// "The data path") must be a log that recovery keeps whole. A leader's bytes are network input: an
// accepted chunk that the follower's next open would cut would lose acknowledged writes there. The
// input is: byte 0, the first offset (0-255); then the chunk. Also: decode_fetch_answer on the whole
// input never crashes, and what it accepts encodes back to the same answer.
#include <string>

#include "fuzz_support.h"
#include "groups/ack_journal.h"
#include "groups/redriver.h"
#include "replication/fetch.h"
#include "storage/copied_lines.h"
#include "storage/internal_access.h"
#include "storage/log_recovery.h"
#include "storage/offset_index.h"
#include "storage/record_format.h"

namespace {

// A group-state record a follower accepts (Broker::State::apply_state's checks) is written as a
// journal record: recovery must keep that line, and reading it back must give the same state. A
// record applied twice changes nothing more (a snapshot's records are sent again after a lapse).
void check_state_record(const mq::detail::GroupStateRecord& r) {
  if (r.group == mq::detail::kRedrivePositionName) {
    (void)mq::detail::Redriver::position_of(r.record);  // never crashes; a position is any number
    return;
  }
  if (!mq::is_ack_journal_record(r.record) || r.record == mq::kRemovedRecord) return;
  std::string line;
  const mq::Message message{mq::detail::PayloadInternal::from_minified_json(r.record), std::nullopt};
  mq::detail::append_record_line(line, 0, 0, std::nullopt, message);
  line.pop_back();
  static mq::detail::RecordValidator validator;
  FUZZ_CHECK(validator.validate(line).has_value(), "recovery keeps a group-state record a follower wrote");
  auto fields = validator.produced_fields(line);
  FUZZ_CHECK(fields.has_value(), "a written group-state record reads back");
  mq::GroupProgress once, read_back, twice;
  FUZZ_CHECK(mq::apply_ack_journal_record(r.record, once), "an accepted record applies");
  FUZZ_CHECK(mq::apply_ack_journal_record(fields->payload_json, read_back), "the record read back applies");
  FUZZ_CHECK(read_back.committed == once.committed && read_back.acked == once.acked &&
                 read_back.ordering_key == once.ordering_key,
             "the record read back is the record written");
  twice = once;
  FUZZ_CHECK(mq::apply_ack_journal_record(r.record, twice), "an accepted record applies again");
  FUZZ_CHECK(twice.committed == once.committed && twice.acked == once.acked &&
                 twice.ordering_key == once.ordering_key,
             "a record applied twice is applied once");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input = mq::fuzzing::as_text(data, size);
  if (auto answer = mq::replication::decode_fetch_answer(std::string(input)); answer.ok()) {
    auto again = mq::replication::decode_fetch_answer(mq::replication::encode_fetch_answer(*answer));
    FUZZ_CHECK(again.ok(), "an accepted answer encodes to an accepted answer");
    FUZZ_CHECK(again->lines == answer->lines && again->line_count == answer->line_count &&
                   again->first_offset == answer->first_offset && again->truncate_to == answer->truncate_to &&
                   again->reset_to == answer->reset_to,
               "encoding an answer keeps it");
    for (const auto& r : answer->state) check_state_record(r);
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

#include "groups/ack_journal.h"

#include "groups/ack_wal.h"

#include <algorithm>

#include <simdjson.h>

#include "storage/file_replace.h"
#include "storage/internal_access.h"
#include "storage/partition_log.h"

namespace mq {
namespace {

constexpr std::size_t kReplayBatch = 4096;

bool apply_snapshot(simdjson::dom::element snapshot, GroupProgress& progress);

// Applies one record's payload (or a snapshot) to `progress`; false when it is not one we wrote.
bool apply_record(simdjson::dom::element record, GroupProgress& progress) {
  simdjson::dom::array offsets;
  if (!record.get_array().get(offsets)) {
    for (auto element : offsets) {
      std::uint64_t offset = 0;
      if (element.get_uint64().get(offset)) return false;
      progress.acknowledge(offset);
    }
    return true;
  }
  std::uint64_t start = 0;
  if (!record["start"].get_uint64().get(start)) {
    progress.start_at(start);
    return true;
  }
  // A seek resets the state, so replaying records a snapshot already holds still ends in the same
  // state: everything after the last seek is applied again over it.
  std::uint64_t seek = 0;
  if (!record["seek"].get_uint64().get(seek)) {
    progress.seek_to(seek);
    return true;
  }
  std::string_view ordering;
  if (!record["ordering"].get_string().get(ordering) && ordering == "key") {
    progress.ordering_key = true;
    return true;
  }
  // A whole state replacing the one before (a follower taking its leader's, replication.md section
  // 7): in one record, so that a crash cannot leave the group between two states.
  simdjson::dom::element whole;
  if (!record["progress"].get(whole)) {
    GroupProgress replaced;
    if (!apply_snapshot(whole, replaced)) return false;
    progress = std::move(replaced);
    return true;
  }
  return false;
}

bool apply_snapshot(simdjson::dom::element snapshot, GroupProgress& progress) {
  std::uint64_t committed = 0;
  simdjson::dom::array acked;
  if (snapshot["committed"].get_uint64().get(committed) || snapshot["acked"].get_array().get(acked))
    return false;
  progress.start_at(committed);
  std::string_view ordering;
  if (!snapshot["ordering"].get_string().get(ordering)) {
    if (ordering != "key") return false;
    progress.ordering_key = true;
  }
  for (auto element : acked) {
    std::uint64_t offset = 0;
    if (element.get_uint64().get(offset)) return false;
    progress.acknowledge(offset);
  }
  return true;
}

}  // namespace

bool GroupProgress::acknowledge(std::uint64_t offset) {
  if (is_acknowledged(offset)) return false;
  acked.insert(offset);
  while (!acked.empty() && *acked.begin() == committed) {
    acked.erase(acked.begin());
    ++committed;
  }
  return true;
}

void GroupProgress::start_at(std::uint64_t offset) {
  if (offset <= committed) return;
  committed = offset;
  acked.erase(acked.begin(), acked.lower_bound(offset));
  while (!acked.empty() && *acked.begin() == committed) {
    acked.erase(acked.begin());
    ++committed;
  }
}

bool GroupProgress::truncate_to(std::uint64_t end) {
  bool changed = false;
  if (committed > end) {
    committed = end;
    changed = true;
  }
  auto first_beyond = acked.lower_bound(end);
  changed |= first_beyond != acked.end();
  acked.erase(first_beyond, acked.end());
  return changed;
}

namespace {
// A broker may hold thousands of journals (groups times partitions), each written a little: a
// smaller step of preallocated space keeps what they reserve on disk small.
constexpr std::uint64_t kJournalPreallocateBytes = 64 << 10;
}  // namespace

std::size_t ack_journal_record_limit(const StoreOptions& options) {
  return std::max<std::size_t>(options.max_payload_bytes, 256);
}

StoreOptions ack_journal_options(StoreOptions options, bool shared_log) {
  options.max_payload_bytes = ack_journal_record_limit(options);
  options.preallocate_bytes = std::min(options.preallocate_bytes, kJournalPreallocateBytes);
  if (shared_log) options.fsync = FsyncMode::kInterval;  // nothing syncs on a timer: checkpoints do
  return options;
}

bool is_ack_journal_record(std::string_view json) {
  if (json == kRemovedRecord) return true;
  GroupProgress scratch;
  return apply_ack_journal_record(json, scratch);
}

bool apply_ack_journal_record(std::string_view json, GroupProgress& progress) {
  simdjson::dom::parser parser;
  simdjson::dom::element record;
  return !parser.parse(json.data(), json.size()).get(record) && apply_record(record, progress);
}

std::string progress_json(const GroupProgress& progress) {
  std::string json = "{\"committed\":" + std::to_string(progress.committed) + ",\"acked\":[";
  bool first = true;
  for (std::uint64_t offset : progress.acked) {
    if (!first) json += ',';
    first = false;
    json += std::to_string(offset);
  }
  json += progress.ordering_key ? R"(],"ordering":"key"})" : "]}";
  return json;
}

std::string progress_record(const GroupProgress& progress) {
  return "{\"progress\":" + progress_json(progress) + "}";
}

AckJournal::AckJournal(FileSystem& fs, const StoreOptions& options, AckWal* shared_log, std::string key,
                       std::string dir, std::string stem, std::string label)
    : fs_(fs),
      options_(ack_journal_options(options, shared_log != nullptr)),
      shared_log_(shared_log),
      key_(std::move(key)),
      dir_(std::move(dir)),
      stem_(std::move(stem)),
      label_(std::move(label)) {}

AckJournal::~AckJournal() = default;

Status AckJournal::open_log() {
  auto log = PartitionLog::open(fs_, options_, dir_, stem_, label_, 0);
  if (!log.ok()) return log.status();
  log_ = std::move(log.value());
  return {};
}

Result<std::unique_ptr<AckJournal>> AckJournal::open(FileSystem& fs, const StoreOptions& options,
                                                     AckWal* shared_log, std::string key, std::string dir,
                                                     std::string stem, std::string label,
                                                     GroupProgress& progress, bool& created) {
  const std::string log_path = dir + "/" + stem + ".log";
  const std::string snapshot_path = dir + "/" + stem + ".snapshot";
  created = !fs.exists(log_path) && !fs.exists(snapshot_path);
  std::unique_ptr<AckJournal> journal(new AckJournal(fs, options, shared_log, std::move(key), std::move(dir),
                                                     std::move(stem), std::move(label)));
  progress = {};
  simdjson::dom::parser parser;
  if (fs.exists(snapshot_path)) {
    auto text = detail::read_whole_file(fs, snapshot_path);
    if (!text.ok()) return text.status();
    simdjson::dom::element snapshot;
    // The snapshot is replaced by rename, so it is whole or absent; damage here is real corruption.
    if (parser.parse(*text).get(snapshot) || !apply_snapshot(snapshot, progress)) {
      return Status::corruption(snapshot_path + " is not a valid acknowledgement snapshot");
    }
  }
  if (auto s = journal->open_log(); !s.ok()) return s;
  for (std::uint64_t offset = 0;;) {
    auto batch = journal->log_->read(offset, kReplayBatch, 1 << 20);
    if (!batch.ok()) return batch.status();
    if (batch->empty()) break;
    for (const StoredMessage& m : *batch) {
      simdjson::dom::element line;
      simdjson::dom::element payload;
      if (parser.parse(m.line.data(), m.line.size()).get(line) || line["payload"].get(payload) ||
          !apply_record(payload, progress)) {
        return Status::corruption(journal->label_ + ": record " + std::to_string(m.offset) +
                                  " of the acknowledgement log is not one libmq wrote");
      }
    }
    offset = batch->next_offset();
  }
  return journal;
}

Status AckJournal::record_raw(std::string payload_json) { return record(std::move(payload_json)); }

Status AckJournal::close() {
  if (!log_) return {};
  Status s = log_->sync(/*only_if_behind=*/true);
  log_.reset();
  return s;
}

Status AckJournal::record(std::string payload_json) {
  if (!log_)
    return Status::io_error(label_ + ": the acknowledgement log could not be reopened after compaction");
  const Message message{detail::PayloadInternal::from_minified_json(payload_json), std::nullopt};
  auto offset = log_->append(std::span(&message, 1));
  if (!offset.ok()) return offset.status();
  // Written to the journal first: a checkpoint's journal sync must cover every record in the
  // shared logs it retires (AckWal::checkpoint).
  return shared_log_ ? shared_log_->append(key_, payload_json) : Status();
}

Status AckJournal::record_start(std::uint64_t offset) {
  return record("{\"start\":" + std::to_string(offset) + "}");
}

Status AckJournal::record_ordering_key() { return record(R"({"ordering":"key"})"); }

Status AckJournal::record_seek(std::uint64_t offset) {
  return record("{\"seek\":" + std::to_string(offset) + "}");
}

Status AckJournal::record_acks(std::span<const std::uint64_t> offsets) {
  std::string json = "[";
  for (std::uint64_t offset : offsets) {
    const std::string number = std::to_string(offset);
    if (json.size() > 1 && json.size() + 1 + number.size() + 1 > options_.max_payload_bytes) {
      if (auto s = record(json + "]"); !s.ok()) return s;
      json = "[";
    }
    if (json.size() > 1) json += ',';
    json += number;
  }
  return record(json + "]");
}

Status AckJournal::compact(const GroupProgress& progress) {
  const std::string snapshot = progress_json(progress);
  // 1. The new snapshot replaces the old one atomically (write a temp file, sync, rename, sync the
  //    directory). A crash before the rename keeps the old snapshot and the whole log.
  const std::string base = dir_ + "/" + stem_;
  // With FSYNC=never nothing is promised across a power cut, so the syncs are skipped; the rename
  // alone keeps a killed process safe.
  const bool durable = options_.fsync != FsyncMode::kNever;
  if (auto s = detail::replace_file(fs_, dir_, stem_ + ".snapshot", snapshot, durable); !s.ok()) return s;
  // 2. The log's records are all in the snapshot now. A crash from here on leaves some of them to
  //    be replayed over it, which changes nothing.
  log_.reset();
  if (auto s = fs_.remove(base + ".log"); !s.ok()) return s;
  if (auto s = fs_.remove(base + ".index"); !s.ok()) return s;
  return open_log();
}

Status AckJournal::remove() {
  if (shared_log_ != nullptr) {
    if (auto s = shared_log_->append(key_, kRemovedRecord); !s.ok()) return s;
    // FSYNC=interval does not sync on append: the removal must be durable before the files go,
    // or a crash could leave older records of the shared log to be folded into a new journal.
    if (auto s = shared_log_->sync_if_behind(); !s.ok()) return s;
  }
  log_.reset();
  // A marker first, removed last: a crash between the files' removals (a snapshot left without
  // its log would bring the group back) is finished at the next start (remove_if_marked).
  const std::string base = dir_ + "/" + stem_;
  {
    auto marker = fs_.open(base + ".removed");
    if (!marker.ok()) return marker.status();
  }
  if (options_.fsync != FsyncMode::kNever || shared_log_ != nullptr) {
    if (auto s = fs_.sync_directory(dir_); !s.ok()) return s;
  }
  return remove_if_marked(fs_, dir_, stem_, options_.fsync != FsyncMode::kNever || shared_log_ != nullptr)
      .status();
}

Result<bool> AckJournal::remove_if_marked(FileSystem& fs, const std::string& dir, const std::string& stem,
                                          bool durable) {
  const std::string base = dir + "/" + stem;
  if (!fs.exists(base + ".removed")) return false;
  for (const char* extension : {".log", ".index", ".snapshot", ".snapshot.tmp"}) {
    if (auto s = fs.remove(base + extension); !s.ok()) return s;
  }
  if (durable) {
    if (auto s = fs.sync_directory(dir); !s.ok()) return s;
  }
  if (auto s = fs.remove(base + ".removed"); !s.ok()) return s;
  if (durable) {
    if (auto s = fs.sync_directory(dir); !s.ok()) return s;
  }
  return true;
}

Status AckJournal::reopen_if_closed() {
  if (log_) return {};
  if (auto s = open_log(); !s.ok()) {
    return Status(s.code(), label_ + ": the acknowledgement log could not be reopened: " + s.message());
  }
  return {};
}

std::uint64_t AckJournal::log_bytes() const { return log_ ? log_->positions().written : 0; }

Status AckJournal::sync_if_behind() { return log_ ? log_->sync(/*only_if_behind=*/true) : Status(); }

}  // namespace mq

#include "groups/ack_wal.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <map>
#include <set>
#include <utility>

#include <simdjson.h>

#include "groups/ack_journal.h"
#include "storage/internal_access.h"
#include "storage/partition_log.h"

namespace mq {
namespace {

constexpr std::string_view kDirectory = ".acks";
constexpr std::string_view kLogPrefix = "wal-";
constexpr std::string_view kLogExtension = ".log";
constexpr std::size_t kReplayBatch = 4096;
// The envelope around a journal record: {"journal":"<topic>/groups/<group>/partition-<N>","record":}
// with names of at most 128 characters.
constexpr std::size_t kEnvelopeBytes = 512;

std::string generation_stem(std::uint64_t generation) {
  return std::string(kLogPrefix) + std::to_string(generation);
}

// The generation of a file named wal-<G>.log, if it is one.
std::optional<std::uint64_t> generation_of(std::string_view name) {
  if (!name.starts_with(kLogPrefix) || !name.ends_with(kLogExtension)) return std::nullopt;
  const std::string_view digits =
      name.substr(kLogPrefix.size(), name.size() - kLogPrefix.size() - kLogExtension.size());
  std::uint64_t generation = 0;
  auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), generation);
  if (digits.empty() || error != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
  return generation;
}

// Where a journal named `key` lives: {directory, stem}; nullopt unless `key` is one
// ack_journal_key() makes (so that a damaged or crafted log cannot write outside the data directory).
std::optional<std::pair<std::string, std::string>> journal_location(const std::string& data_dir,
                                                                    std::string_view key) {
  std::vector<std::string_view> parts;
  for (std::size_t start = 0;;) {
    const std::size_t slash = key.find('/', start);
    parts.push_back(
        key.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  constexpr std::string_view kPartitionPrefix = "partition-";
  if (parts.size() != 4 || !is_valid_name(parts[0]) || parts[1] != "groups" || !is_valid_name(parts[2]) ||
      !parts[3].starts_with(kPartitionPrefix))
    return std::nullopt;
  const std::string_view digits = parts[3].substr(kPartitionPrefix.size());
  std::uint32_t partition = 0;
  auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), partition);
  if (digits.empty() || error != std::errc() || end != digits.data() + digits.size() ||
      std::to_string(partition) != digits)
    return std::nullopt;
  return std::pair{data_dir + "/" + std::string(parts[0]) + "/groups/" + std::string(parts[2]),
                   std::string(parts[3])};
}

}  // namespace

std::string ack_journal_key(std::string_view topic, std::string_view group, std::uint32_t partition) {
  return std::string(topic) + "/groups/" + std::string(group) + "/partition-" + std::to_string(partition);
}

AckWal::AckWal(std::shared_ptr<FileSystem> fs, const StoreOptions& options, std::uint64_t checkpoint_bytes)
    : owned_fs_(std::move(fs)),
      fs_(*owned_fs_),
      options_([&] {
        StoreOptions own = options;
        // Whatever a journal accepts fits in its envelope.
        own.max_payload_bytes = ack_journal_record_limit(options) + kEnvelopeBytes;
        return own;
      }()),
      dir_(options.data_dir + "/" + std::string(kDirectory)),
      checkpoint_bytes_(std::max<std::uint64_t>(checkpoint_bytes, 1)),
      due_at_(checkpoint_bytes_) {}

AckWal::~AckWal() = default;

Status AckWal::fold_earlier_logs(FileSystem& fs, const StoreOptions& options) {
  const std::string dir = options.data_dir + "/" + std::string(kDirectory);
  if (!fs.exists(dir)) return {};
  auto names = fs.list_directory(dir);
  if (!names.ok()) return names.status();
  std::vector<std::uint64_t> generations;
  for (const std::string& name : *names) {
    if (auto generation = generation_of(name)) generations.push_back(*generation);
  }
  if (generations.empty()) return {};
  std::sort(generations.begin(), generations.end());
  // Journals restored from the shared log are recovered tolerantly even under kStrict: their records
  // since the last checkpoint were never synced, so a power cut may have damaged them in any order,
  // and the shared log holds every one of them (libmq/docs/log_format.md).
  StoreOptions journal_options = ack_journal_options(options, /*shared_log=*/true);
  journal_options.recovery = RecoveryMode::kTolerateTornTail;
  StoreOptions log_options = options;
  log_options.max_payload_bytes = ack_journal_record_limit(options) + kEnvelopeBytes;
  simdjson::dom::parser parser;
  // One log at a time, oldest first, so that memory holds one log's records and every journal gets
  // its records in the order they were written.
  for (std::uint64_t generation : generations) {
    const std::string label = dir + "/" + generation_stem(generation) + ".log";
    std::map<std::string, std::vector<std::string>> records;  // by journal, in log order
    {
      auto log = PartitionLog::open(fs, log_options, dir, generation_stem(generation),
                                    std::string(kDirectory), static_cast<std::uint32_t>(generation));
      if (!log.ok()) return log.status();
      for (std::uint64_t offset = 0;;) {
        auto batch = (*log)->read(offset, kReplayBatch, 1 << 20);
        if (!batch.ok()) return batch.status();
        if (batch->empty()) break;
        for (const StoredMessage& m : *batch) {
          simdjson::dom::element line;
          std::string_view key;
          simdjson::dom::element record;
          bool valid = !parser.parse(m.line.data(), m.line.size()).get(line) &&
                       !line["payload"]["journal"].get_string().get(key) &&
                       !line["payload"]["record"].get(record) &&
                       journal_location(options.data_dir, key).has_value();
          std::string text = valid ? simdjson::minify(record) : std::string();
          if (!valid || !is_ack_journal_record(text)) {
            return Status::corruption(label + ": record " + std::to_string(m.offset) +
                                      " of the shared acknowledgement log is not one libmq wrote");
          }
          records[std::string(key)].push_back(std::move(text));
        }
        offset = batch->next_offset();
      }
    }
    for (const auto& [key, payloads] : records) {
      const auto location = journal_location(options.data_dir, key);
      // A group deleted on the partition (kRemovedRecord): its journal goes, and only the records
      // after the deletion (a new group of the same name) are applied, to a new journal.
      auto removal = std::find(payloads.rbegin(), payloads.rend(), kRemovedRecord);
      if (removal != payloads.rend()) {
        const std::string base = location->first + "/" + location->second;
        for (const char* extension : {".log", ".index", ".snapshot", ".snapshot.tmp"}) {
          if (auto s = fs.remove(base + extension); !s.ok()) return s;
        }
        if (fs.exists(location->first)) {
          if (auto s = fs.sync_directory(location->first); !s.ok()) return s;
        }
      }
      const auto after_removal = removal.base();  // payloads.begin() when there was none
      if (after_removal == payloads.end()) continue;
      auto journal = PartitionLog::open(fs, journal_options, location->first, location->second, key, 0);
      if (!journal.ok()) return journal.status();
      std::vector<Message> messages;
      messages.reserve(static_cast<std::size_t>(payloads.end() - after_removal));
      for (auto it = after_removal; it != payloads.end(); ++it)
        messages.push_back(Message{detail::PayloadInternal::from_minified_json(*it), std::nullopt});
      if (auto appended = (*journal)->append(messages); !appended.ok()) return appended.status();
      if (auto s = (*journal)->sync(); !s.ok()) return s;
    }
  }
  for (std::uint64_t generation : generations) {
    const std::string base = dir + "/" + generation_stem(generation);
    if (auto s = fs.remove(base + ".log"); !s.ok()) return s;
    if (auto s = fs.remove(base + ".index"); !s.ok()) return s;
  }
  // Durably gone before any group opens: a group may forget acknowledgements beyond a log that
  // recovery cut, and these records must not come back after a power cut to acknowledge them again.
  return fs.sync_directory(dir);
}

Result<std::unique_ptr<AckWal>> AckWal::open(std::shared_ptr<FileSystem> fs, const StoreOptions& options,
                                             std::uint64_t checkpoint_bytes) {
  std::unique_ptr<AckWal> wal(new AckWal(std::move(fs), options, checkpoint_bytes));
  // The generation numbers left there, if any: new ones follow them, so that a removal that a power
  // cut undid brings back a log older than the new ones, which is folded first, as it must be.
  std::uint64_t next = 0;
  if (wal->fs_.exists(wal->dir_)) {
    auto names = wal->fs_.list_directory(wal->dir_);
    if (!names.ok()) return names.status();
    for (const std::string& name : *names) {
      if (auto generation = generation_of(name)) next = std::max(next, *generation + 1);
    }
  }
  if (auto s = fold_earlier_logs(wal->fs_, options); !s.ok()) return s;
  if (auto s = wal->fs_.create_directories(wal->dir_); !s.ok()) return s;
  auto log = wal->open_generation(next);
  if (!log.ok()) return log.status();
  wal->current_ = std::move(log.value());
  wal->generation_ = next;
  return wal;
}

Result<std::shared_ptr<PartitionLog>> AckWal::open_generation(std::uint64_t generation) {
  auto log = PartitionLog::open(fs_, options_, dir_, generation_stem(generation), std::string(kDirectory),
                                static_cast<std::uint32_t>(generation));
  if (!log.ok()) return log.status();
  return std::shared_ptr<PartitionLog>(std::move(log.value()));
}

Status AckWal::remove_generation(std::uint64_t generation) {
  const std::string base = dir_ + "/" + generation_stem(generation);
  if (auto s = fs_.remove(base + ".log"); !s.ok()) return s;
  return fs_.remove(base + ".index");
}

std::shared_ptr<PartitionLog> AckWal::current() const {
  std::shared_lock lock(mutex_);
  return current_;
}

Status AckWal::append(std::string_view journal_key, std::string_view record) {
  std::string envelope;
  envelope.reserve(journal_key.size() + record.size() + 24);
  envelope += "{\"journal\":\"";
  envelope += journal_key;
  envelope += "\",\"record\":";
  envelope += record;
  envelope += '}';
  const Message message{detail::PayloadInternal::from_minified_json(std::move(envelope)), std::nullopt};
  // A checkpoint may swap the log meanwhile: this append then goes to the older one, whose records
  // that checkpoint's journal sync covers (the caller wrote the journal before calling).
  const std::shared_ptr<PartitionLog> log = current();
  auto offset = log->append(std::span(&message, 1));
  if (offset.ok()) return {};
  // A failed write or sync leaves a log that refuses every later append: one failure must not stop
  // the acknowledgements of every group until a restart.
  if (offset.status().code() == ErrorCode::kStorageFailed) {
    if (auto s = replace_failed(log); !s.ok()) {
      std::fprintf(stderr, "libmq: replacing the failed shared acknowledgement log failed: %s\n",
                   s.to_string().c_str());
    }
  }
  return offset.status();
}

Status AckWal::replace_failed(const std::shared_ptr<PartitionLog>& failed) {
  std::lock_guard swap(swap_mutex_);
  if (current() != failed) return {};  // another append or a checkpoint replaced it already
  return start_next_generation_locked();
}

Status AckWal::start_next_generation_locked() {
  std::uint64_t generation = 0;
  {
    std::shared_lock lock(mutex_);
    generation = generation_;
  }
  auto next = open_generation(generation + 1);
  if (!next.ok()) {
    std::unique_lock lock(mutex_);
    due_at_ = current_->positions().written + checkpoint_bytes_;  // not again at the next append
    return next.status();
  }
  std::shared_ptr<PartitionLog> old;
  {
    std::unique_lock lock(mutex_);
    old = std::exchange(current_, std::move(next.value()));
    generation_ = generation + 1;
    due_at_ = checkpoint_bytes_;
  }
  retired_.push_back({generation, std::move(old)});
  return {};
}

bool AckWal::checkpoint_due() const {
  std::shared_lock lock(mutex_);
  return current_->positions().written >= due_at_;
}

Status AckWal::carry_forward(const std::vector<Retired>& logs, const std::vector<std::string>& journals) {
  const std::set<std::string, std::less<>> wanted(journals.begin(), journals.end());
  std::vector<Message> carried;
  simdjson::dom::parser parser;
  for (const Retired& retired : logs) {
    for (std::uint64_t offset = retired.log->first_offset();;) {
      // What a reader sees: with FSYNC=always the synced records, every answered one among them.
      auto batch = retired.log->read(offset, kReplayBatch, 1 << 20);
      if (!batch.ok()) return batch.status();
      if (batch->empty()) break;
      for (const StoredMessage& m : *batch) {
        simdjson::dom::element payload;
        std::string_view key;
        if (parser.parse(m.line.data(), m.line.size())["payload"].get(payload) ||
            payload["journal"].get_string().get(key) || !wanted.contains(key))
          continue;
        carried.push_back(
            Message{detail::PayloadInternal::from_minified_json(simdjson::minify(payload)), std::nullopt});
      }
      offset = batch->next_offset();
    }
  }
  if (carried.empty()) return {};
  const std::shared_ptr<PartitionLog> log = current();
  if (auto appended = log->append(carried); !appended.ok()) return appended.status();
  return log->sync(/*only_if_behind=*/true);  // FSYNC=interval: durable before the old logs go
}

Status AckWal::checkpoint(const SyncJournals& sync_journals) {
  std::unique_lock running(checkpoint_mutex_, std::try_to_lock);
  if (!running.owns_lock() || !checkpoint_due()) return {};
  std::vector<Retired> covered;
  {
    std::lock_guard swap(swap_mutex_);
    if (auto s = start_next_generation_locked(); !s.ok()) return s;
    covered = retired_;  // logs retired later (a failure) may hold records written after the sync
  }
  // Every record of a covered log was written to its journal before it was appended there, so
  // before the swap: this sync covers them all, but for the journals it could not sync, whose
  // records stay durable in the current log instead (they would otherwise keep every old log).
  if (const auto unsynced = sync_journals(); !unsynced.empty()) {
    if (auto s = carry_forward(covered, unsynced); !s.ok()) return s;
  }
  for (const Retired& retired : covered) {
    if (auto s = remove_generation(retired.generation); !s.ok()) return s;
    std::lock_guard swap(swap_mutex_);
    std::erase_if(retired_, [&](const Retired& r) { return r.generation == retired.generation; });
  }
  return {};
}

Status AckWal::sync_if_behind() { return current()->sync(/*only_if_behind=*/true); }

}  // namespace mq

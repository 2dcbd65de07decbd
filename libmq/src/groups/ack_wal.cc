#include "groups/ack_wal.h"

#include <algorithm>
#include <charconv>
#include <map>

#include <simdjson.h>

#include "groups/ack_journal.h"
#include "storage/internal_access.h"
#include "storage/partition_log.h"

namespace mq {
namespace {

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
        own.max_payload_bytes += kEnvelopeBytes;  // whatever a journal accepts fits in its envelope
        return own;
      }()),
      store_options_(options),
      dir_(options.data_dir + "/.acks"),
      checkpoint_bytes_(std::max<std::uint64_t>(checkpoint_bytes, 1)) {}

AckWal::~AckWal() = default;

Result<std::unique_ptr<AckWal>> AckWal::open(std::shared_ptr<FileSystem> fs, const StoreOptions& options,
                                             std::uint64_t checkpoint_bytes) {
  std::unique_ptr<AckWal> wal(new AckWal(std::move(fs), options, checkpoint_bytes));
  if (auto s = wal->fs_.create_directories(wal->dir_); !s.ok()) return s;
  auto names = wal->fs_.list_directory(wal->dir_);
  if (!names.ok()) return names.status();
  std::vector<std::uint64_t> generations;
  for (const std::string& name : *names) {
    if (auto generation = generation_of(name)) generations.push_back(*generation);
  }
  std::sort(generations.begin(), generations.end());
  if (auto s = wal->fold_earlier_logs(generations); !s.ok()) return s;
  // Numbers are not reused within a start: a removal that a power cut undoes brings back a log older
  // than the new ones, which is folded first, as it must be.
  const std::uint64_t next = generations.empty() ? 0 : generations.back() + 1;
  auto log = wal->open_generation(next);
  if (!log.ok()) return log.status();
  wal->current_ = std::move(log.value());
  wal->generation_ = next;
  return wal;
}

Result<std::shared_ptr<PartitionLog>> AckWal::open_generation(std::uint64_t generation) {
  auto log = PartitionLog::open(fs_, options_, dir_, generation_stem(generation), "acknowledgements", 0);
  if (!log.ok()) return log.status();
  return std::shared_ptr<PartitionLog>(std::move(log.value()));
}

Status AckWal::remove_generation(std::uint64_t generation) {
  const std::string base = dir_ + "/" + generation_stem(generation);
  if (auto s = fs_.remove(base + ".log"); !s.ok()) return s;
  return fs_.remove(base + ".index");
}

Status AckWal::fold_earlier_logs(const std::vector<std::uint64_t>& generations) {
  if (generations.empty()) return {};
  // Each journal's records in the order they were written (generations ascending, then offsets).
  std::map<std::string, std::vector<std::string>> records;
  simdjson::dom::parser parser;
  for (std::uint64_t generation : generations) {
    const std::string label = dir_ + "/" + generation_stem(generation) + ".log";
    auto log = open_generation(generation);
    if (!log.ok()) return log.status();
    for (std::uint64_t offset = 0;;) {
      auto batch = (*log)->read(offset, kReplayBatch, 1 << 20);
      if (!batch.ok()) return batch.status();
      if (batch->empty()) break;
      for (const StoredMessage& m : *batch) {
        simdjson::dom::element line;
        std::string_view key;
        simdjson::dom::element record;
        std::optional<std::pair<std::string, std::string>> location;
        if (!parser.parse(m.line.data(), m.line.size()).get(line) &&
            !line["payload"]["journal"].get_string().get(key) && !line["payload"]["record"].get(record)) {
          location = journal_location(store_options_.data_dir, key);
        }
        std::string text = location ? simdjson::minify(record) : std::string();
        if (!location || !is_ack_journal_record(text)) {
          return Status::corruption(label + ": record " + std::to_string(m.offset) +
                                    " of the shared acknowledgement log is not one libmq wrote");
        }
        records[std::string(key)].push_back(std::move(text));
      }
      offset = batch->next_offset();
    }
  }
  const StoreOptions journal_options = ack_journal_options(store_options_, /*shared_log=*/true);
  for (const auto& [key, payloads] : records) {
    const auto location = journal_location(store_options_.data_dir, key);
    auto journal = PartitionLog::open(fs_, journal_options, location->first, location->second, key, 0);
    if (!journal.ok()) return journal.status();
    std::vector<Message> messages;
    messages.reserve(payloads.size());
    for (const std::string& payload : payloads)
      messages.push_back(Message{detail::PayloadInternal::from_minified_json(payload), std::nullopt});
    if (auto appended = (*journal)->append(messages); !appended.ok()) return appended.status();
    if (auto s = (*journal)->sync(); !s.ok()) return s;
  }
  for (std::uint64_t generation : generations) {
    if (auto s = remove_generation(generation); !s.ok()) return s;
  }
  // Durably gone before any group opens: a group may forget acknowledgements beyond a log that
  // recovery cut, and these records must not come back after a power cut to acknowledge them again.
  return fs_.sync_directory(dir_);
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
  auto offset = current()->append(std::span(&message, 1));
  return offset.ok() ? Status() : offset.status();
}

bool AckWal::checkpoint_due() const { return current()->positions().written >= checkpoint_bytes_; }

Status AckWal::checkpoint(const std::function<Status()>& sync_journals) {
  std::unique_lock running(checkpoint_mutex_, std::try_to_lock);
  if (!running.owns_lock() || !checkpoint_due()) return {};
  std::uint64_t generation = 0;
  {
    std::shared_lock lock(mutex_);
    generation = generation_;
  }
  auto next = open_generation(generation + 1);
  if (!next.ok()) return next.status();
  {
    std::unique_lock lock(mutex_);
    current_ = std::move(next.value());
    generation_ = generation + 1;
  }
  retired_.push_back(generation);
  // Every record of a retired log was written to its journal before it was appended there, so
  // before the swap above: this sync covers them all.
  if (auto s = sync_journals(); !s.ok()) return s;
  while (!retired_.empty()) {
    if (auto s = remove_generation(retired_.front()); !s.ok()) return s;
    retired_.erase(retired_.begin());
  }
  return {};
}

Status AckWal::sync_if_behind() { return current()->sync(/*only_if_behind=*/true); }

}  // namespace mq

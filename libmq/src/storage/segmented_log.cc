#include "storage/segmented_log.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>
#include <system_error>

#include "storage/file_replace.h"
#include "storage/internal_access.h"
#include "storage/record_format.h"

namespace mq::detail {
namespace {

constexpr std::size_t kOffsetDigits = 20;
// Enough of a log's first line to hold {"offset":<20 digits>,
constexpr std::size_t kFirstLinePrefixBytes = 64;

struct Meta {
  std::uint64_t log_start_offset = 0;
  std::uint64_t active_first_offset = 0;
};

Result<std::optional<Meta>> read_meta(FileSystem& fs, const std::string& path) {
  if (!fs.exists(path)) return std::optional<Meta>{};
  auto file = fs.open(path);
  if (!file.ok()) return file.status();
  auto size = (*file)->size();
  if (!size.ok()) return size.status();
  std::string text;
  if (auto s = (*file)->read(0, static_cast<std::size_t>(std::min<std::uint64_t>(*size, 4096)), text);
      !s.ok())
    return s;
  const auto json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  const auto field = [&](const char* name) -> std::optional<std::uint64_t> {
    if (!json.is_object() || !json.contains(name) || !json[name].is_number_unsigned()) return std::nullopt;
    return json[name].get<std::uint64_t>();
  };
  const auto start = field("log_start_offset");
  const auto active = field("active_first_offset");
  // Written whole and renamed into place, so a damaged one was damaged on disk: say so, never guess.
  if (!start || !active) return Status::corruption(path + " is damaged: " + text.substr(0, 200));
  return std::optional<Meta>(Meta{*start, *active});
}

}  // namespace

std::string sealed_stem(std::string_view stem, std::uint64_t first_offset) {
  std::string digits = std::to_string(first_offset);
  return std::string(stem) + "." + std::string(kOffsetDigits - digits.size(), '0') + digits;
}

std::optional<std::uint64_t> sealed_first_offset(std::string_view file_name, std::string_view stem,
                                                 std::string_view suffix) {
  if (file_name.size() != stem.size() + 1 + kOffsetDigits + suffix.size() || !file_name.starts_with(stem) ||
      file_name[stem.size()] != '.' || !file_name.ends_with(suffix)) {
    return std::nullopt;
  }
  const std::string_view digits = file_name.substr(stem.size() + 1, kOffsetDigits);
  std::uint64_t offset = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), offset);
  if (ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
  return offset;
}

SegmentedLog::SegmentedLog(FileSystem& fs, const StoreOptions& options, std::string dir, std::string stem,
                           std::string topic, std::uint32_t index)
    : fs_(fs),
      options_(options),
      dir_(std::move(dir)),
      stem_(std::move(stem)),
      topic_(std::move(topic)),
      index_(index),
      dedup_(options.dedup_window.count() > 0 ? std::make_unique<DedupWindow>(options.dedup_window)
                                              : nullptr) {}

SegmentedLog::~SegmentedLog() {
  std::shared_ptr<PartitionLog> segment = active();
  if (segment) segment->remove_append_listener(active_listener_);
}

Result<std::shared_ptr<PartitionLog>> SegmentedLog::open_segment(const std::string& stem,
                                                                 std::uint64_t first_offset) const {
  auto log = PartitionLog::open(fs_, options_, dir_, stem, topic_, index_, first_offset);
  if (!log.ok()) return log.status();
  return std::shared_ptr<PartitionLog>(std::move(log.value()));
}

Result<std::unique_ptr<SegmentedLog>> SegmentedLog::open(FileSystem& fs, const StoreOptions& options,
                                                         std::string dir, std::string stem, std::string topic,
                                                         std::uint32_t index) {
  if (auto s = fs.create_directories(dir); !s.ok()) return s;
  std::unique_ptr<SegmentedLog> log;
  try {
    log.reset(new SegmentedLog(fs, options, std::move(dir), std::move(stem), std::move(topic), index));
  } catch (const std::system_error& e) {  // no random source for the dedup window's hash key
    return Status::io_error(e.what());
  }
  const std::string& d = log->dir_;
  const std::string& st = log->stem_;
  auto names = fs.list_directory(d);
  if (!names.ok()) return names.status();
  std::vector<std::uint64_t> firsts;
  for (const auto& name : *names) {
    if (auto first = sealed_first_offset(name, st, ".log")) firsts.push_back(*first);
  }
  std::sort(firsts.begin(), firsts.end());
  // Index files of a sealed name without their log are what a roll interrupted before its commit
  // point left behind (or retention, when removing the index failed): the active segment still
  // owns those messages and rebuilds its index. Harmless where they are, so one that cannot be
  // removed is reported, not a reason to refuse the partition (a roll renames over it).
  for (const auto& name : *names) {
    auto first = sealed_first_offset(name, st, ".index");
    if (first && !std::binary_search(firsts.begin(), firsts.end(), *first)) {
      if (auto s = fs.remove(d + "/" + name); !s.ok()) {
        write_recovery_line(
            options, "cannot remove " + d + "/" + name + ", an index without its log: " + s.to_string());
      }
    }
  }
  auto meta = read_meta(fs, d + "/" + st + ".meta");
  if (!meta.ok()) return meta.status();
  // Segments wholly below the recorded log start (a meta written by an older version between its
  // log start moving up and the deletion of the files) are deleted now.
  if (*meta) {
    while (firsts.size() > 1 && firsts[1] <= (*meta)->log_start_offset) {
      for (const char* suffix : {".log", ".index"}) {
        if (auto s = fs.remove(d + "/" + sealed_stem(st, firsts.front()) + suffix); !s.ok()) return s;
      }
      firsts.erase(firsts.begin());
    }
  }

  // Where the active segment starts: after the newest sealed segment, else where the meta says
  // (every sealed segment was deleted), else at 0 (a log from before segments, or a new one).
  std::uint64_t active_first = *meta ? (*meta)->active_first_offset : 0;
  std::shared_ptr<PartitionLog> newest;
  if (!firsts.empty()) {
    auto opened = log->open_segment(sealed_stem(st, firsts.back()), firsts.back());
    if (!opened.ok()) return opened.status();
    newest = std::move(opened.value());
    active_first = newest->next_offset();
  }
  // An active segment whose first record says another offset does not join the segments before
  // it: refuse (recovery would otherwise cut every message in it).
  const std::string active_path = d + "/" + st + ".log";
  if (fs.exists(active_path)) {
    auto file = fs.open(active_path);
    if (!file.ok()) return file.status();
    std::string prefix;
    if (auto s = (*file)->read(0, kFirstLinePrefixBytes, prefix); !s.ok()) return s;
    const auto offset = parse_offset_prefix(prefix);
    // With no sealed segment before it, the active segment's first record says where it starts
    // (the meta may be missing or older).
    if (offset && firsts.empty()) active_first = *offset;
    if (offset && *offset != active_first) {
      return Status::corruption(active_path + " starts at offset " + std::to_string(*offset) +
                                " but the segments before it end at offset " + std::to_string(active_first) +
                                " (libmq/docs/log_format.md \"Segments\")");
    }
  }
  // A roll cut between its commit point and its meta write (step 4), or an older version's meta,
  // leaves the meta behind the segments. Once retention deletes every sealed segment, the meta is
  // what says where an empty active segment starts: bring it up to date before that segment exists.
  if (!firsts.empty() && (!*meta || (*meta)->active_first_offset != active_first)) {
    const std::uint64_t log_start = std::max(firsts.front(), *meta ? (*meta)->log_start_offset : 0);
    std::lock_guard meta_lock(log->meta_mutex_);
    if (auto s = log->write_meta(log_start, active_first); !s.ok()) return s;
  }
  auto active = log->open_segment(st, active_first);
  if (!active.ok()) return active.status();
  log->report_ = (*active)->recovery_report();

  // The sizes of the sealed segments, for log_bytes and retention; their contents wait for a read.
  for (std::size_t i = 0; i < firsts.size(); ++i) {
    Sealed sealed;
    if (i + 1 == firsts.size()) {
      sealed.log = newest;
      sealed.bytes = newest->positions().written;
      sealed.largest_timestamp = newest->largest_timestamp();
    } else {
      auto size = fs.file_size(d + "/" + sealed_stem(st, firsts[i]) + ".log");
      if (!size.ok()) return size.status();
      sealed.bytes = *size;
    }
    log->sealed_bytes_ += sealed.bytes;
    log->sealed_.emplace(firsts[i], std::move(sealed));
  }
  log->active_ = std::move(active.value());
  const std::uint64_t oldest = firsts.empty() ? active_first : firsts.front();
  log->log_start_ = std::max(oldest, *meta ? (*meta)->log_start_offset : 0);
  log->attach_listener(*log->active_);
  return log;
}

Status SegmentedLog::rebuild_dedup_window() {
  if (!dedup_) return {};
  const std::int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
  // The first message within the window (the time index finds it), then every one after it.
  auto from = offset_for_time(now - options_.dedup_window.count());
  if (!from.ok()) return from.status();
  std::uint64_t offset = std::max(*from, log_start_offset());
  const std::uint64_t end = log_end_offset();  // every stored id, the read limit notwithstanding
  std::vector<PartitionLog::StoredDedupId> found;
  while (offset < end) {
    auto batch = read_past_limit(offset, 4096, 4 << 20);
    if (!batch.ok() && batch.status().code() == ErrorCode::kNotFound && offset < log_start_offset()) {
      offset = log_start_offset();  // retention deleted it meanwhile (it takes no roll lock)
      continue;
    }
    if (!batch.ok()) return batch.status();
    if (batch->empty()) break;
    for (const StoredMessage& m : *batch) {
      auto options = parse_record_options(m.line);
      if (options && options->dedup_id)
        found.push_back({std::move(*options->dedup_id), m.offset, options->timestamp_ms});
    }
    offset = batch->next_offset();
  }
  active()->remember_dedup_ids(found);  // under the segment's lock, which guards the window
  return {};
}

std::shared_ptr<PartitionLog> SegmentedLog::active() const {
  std::shared_lock lock(segments_mutex_);
  return active_;
}

void SegmentedLog::attach_listener(PartitionLog& segment) {
  segment.deduplicate_with(dedup_.get());
  const std::uint64_t id = segment.add_append_listener([this] { listeners_.notify(); });
  std::unique_lock lock(segments_mutex_);
  active_listener_ = id;
}

Status SegmentedLog::ensure_dedup_window() {
  if (!dedup_ || dedup_rebuilt_.load(std::memory_order_acquire)) return {};
  // Found again in the log with no append in flight; the window then follows every append in
  // offset order (forget_from() relies on that order).
  std::unique_lock rolling(roll_mutex_);
  if (!dedup_rebuilt_.load(std::memory_order_relaxed)) {
    if (auto s = rebuild_dedup_window(); !s.ok()) return s;
    dedup_rebuilt_.store(true, std::memory_order_release);
  }
  return {};
}

Result<std::uint64_t> SegmentedLog::append(std::span<const Message> batch, AppendResult* result) {
  // The first append that needs the window finds it (a partition nobody deduplicates on opens
  // without reading it).
  if (std::any_of(batch.begin(), batch.end(), [](const Message& m) { return m.dedup_id.has_value(); })) {
    if (auto s = ensure_dedup_window(); !s.ok()) return s;
  }
  return append_rolling([&](PartitionLog& segment) { return segment.append(batch, result); });
}

Result<std::uint64_t> SegmentedLog::append_copied(const CopiedLines& copied) {
  // A copy remembers its lines' ids as it goes: the window must hold what came before them first.
  if (auto s = ensure_dedup_window(); !s.ok()) return s;
  return append_rolling([&](PartitionLog& segment) { return segment.append_copied(copied); });
}

Result<std::uint64_t> SegmentedLog::append_rolling(
    const std::function<Result<std::uint64_t>(PartitionLog&)>& append_to) {
  while (true) {
    {
      std::shared_lock appending(roll_mutex_);
      if (!failure_.ok()) return failure_;
      std::shared_ptr<PartitionLog> segment = active();
      const bool sealed_without_successor = sealed_pending_.has_value();
      // A segment rolls before the append that finds it full, so that a failed roll fails that
      // append (and stores nothing) rather than one that was already answered.
      if (!sealed_without_successor && (segment->positions().appended < options_.segment_bytes ||
                                        segment->next_offset() == segment->first_offset()))
        return append_to(*segment);
    }
    // Segments the roll evicts from the open set, closed (an index sync) once appends may go on.
    std::vector<std::shared_ptr<PartitionLog>> evicted;
    std::unique_lock rolling(roll_mutex_);
    const auto keep_evicted = [&] { evicted = std::move(evicted_by_roll_); };
    if (!failure_.ok()) return failure_;
    if (sealed_pending_) {
      Status started = start_active_locked();
      keep_evicted();
      if (!started.ok()) return started;
      continue;
    }
    std::shared_ptr<PartitionLog> segment = active();
    if (segment->positions().appended >= options_.segment_bytes &&
        segment->next_offset() > segment->first_offset()) {
      Status rolled = roll_locked();
      keep_evicted();
      if (!rolled.ok()) return rolled;
    }
  }
}

Status SegmentedLog::truncate_to(std::uint64_t offset) {
  std::unique_lock rolling(roll_mutex_);
  std::lock_guard retention(retention_mutex_);
  return truncate_locked(offset);
}

Status SegmentedLog::truncate_locked(std::uint64_t offset) {
  if (!failure_.ok()) return failure_;
  if (sealed_pending_) {  // a roll that could not start its successor: finish it first
    if (auto s = start_active_locked(); !s.ok()) return s;
    evicted_by_roll_.clear();
  }
  if (offset >= log_end_offset()) return {};
  const std::string where = topic_ + "/" + std::to_string(index_);
  if (offset < log_start_offset()) {
    return Status::invalid_argument("cannot truncate " + where + " to offset " + std::to_string(offset) +
                                    ", below its log start " + std::to_string(log_start_offset()));
  }
  // Recovery keeps batches whole: a cut inside one goes back to the batch's first line (a batch
  // never spans two segments).
  auto holder = segment_for(offset);
  if (!holder.ok()) return holder.status();
  const std::shared_ptr<PartitionLog> cut = *holder;
  auto batch_start = cut->batch_start_of(offset);
  if (!batch_start.ok()) return batch_start.status();
  offset = batch_start->offset;
  const std::uint64_t cut_position = batch_start->position;

  // Every step leaves a log that opens as a prefix of this one, so that a crash anywhere is
  // finished by truncating again (libmq/docs/replication.md "Files"): the active segment goes
  // first (the newest sealed one then says where the log ends), then sealed segments newest first,
  // then the cut of the segment holding `offset`.
  failure_ =
      Status::unavailable("a truncation of " + where + " failed half-way; it is refused until opened again");
  std::lock_guard opening(open_mutex_);
  std::lock_guard meta(meta_mutex_);
  std::shared_ptr<PartitionLog> old_active;
  std::vector<std::shared_ptr<PartitionLog>> dropped;  // closed once segments_mutex_ is released
  {
    std::unique_lock segments(segments_mutex_);
    const bool cut_is_active = cut == active_;
    const std::uint64_t new_active_first = cut_is_active ? cut->first_offset() : offset;
    // Where an empty log starts if every segment below goes (open() reads the meta then).
    if (auto s = write_meta(log_start_, new_active_first); !s.ok()) return s;
    old_active = active_;
    old_active->remove_append_listener(active_listener_);
    const std::string base = dir_ + "/";
    // Each removal is made durable before the next (as retention does, oldest first there): a power
    // cut must not keep a later removal and lose an earlier one, which would leave a gap.
    if (!cut_is_active) {
      old_active->mark_deleted();
      for (const char* suffix : {".log", ".index"})
        if (auto s = fs_.remove(base + stem_ + suffix); !s.ok()) return s;
      if (auto s = fs_.sync_directory(dir_); !s.ok()) return s;
      while (!sealed_.empty() && std::prev(sealed_.end())->first >= offset) {
        auto newest = std::prev(sealed_.end());
        const std::string stem = base + sealed_stem(stem_, newest->first);
        if (newest->second.log) {
          newest->second.log->mark_deleted();
          dropped.push_back(std::move(newest->second.log));
        }
        for (const char* suffix : {".log", ".index"})
          if (auto s = fs_.remove(stem + suffix); !s.ok()) return s;
        if (auto s = fs_.sync_directory(dir_); !s.ok()) return s;
        sealed_bytes_ -= newest->second.bytes;
        std::erase(opened_, newest->first);
        sealed_.erase(newest);
      }
    }
    if (cut_is_active || offset > cut->first_offset()) {
      // The segment holding the cut is closed first: its index is rebuilt past the cut at the next
      // open (entries past a log's end are dropped, log_format.md "Recovery").
      const std::string path =
          base + (cut_is_active ? stem_ : sealed_stem(stem_, cut->first_offset())) + ".log";
      if (!cut_is_active) {
        auto it = sealed_.find(cut->first_offset());
        if (it != sealed_.end()) {
          dropped.push_back(std::move(it->second.log));
          sealed_bytes_ -= it->second.bytes;
          it->second.bytes = cut_position;
          sealed_bytes_ += cut_position;
          it->second.largest_timestamp.reset();
          std::erase(opened_, it->first);
        }
      }
      auto file = fs_.open(path);
      if (!file.ok()) return file.status();
      if (auto s = (*file)->truncate(cut_position); !s.ok()) return s;
      if (auto s = (*file)->sync(); !s.ok()) return s;
    }
    if (auto s = fs_.sync_directory(dir_); !s.ok()) return s;
    if (cut_is_active) {
      old_active->mark_deleted();  // its file was cut under it: closing must not write to it
    }
    active_.reset();
    // Waits on it end (they go on on the new segment); its object is closed before its file name is
    // opened again.
    old_active->interrupt_waiters();
    old_active.reset();
    auto fresh = open_segment(stem_, new_active_first);
    if (!fresh.ok()) return fresh.status();
    active_ = std::move(*fresh);
  }
  attach_listener(*active_);
  if (dedup_) {
    // The window must not find ids the cut removed; the ids below it stay.
    dedup_->forget_from(offset);
  }
  failure_ = {};
  return {};
}

Status SegmentedLog::reset_to(std::uint64_t offset) {
  std::unique_lock rolling(roll_mutex_);
  std::lock_guard retention(retention_mutex_);
  const std::string where = topic_ + "/" + std::to_string(index_);
  if (offset < log_start_offset()) {
    return Status::invalid_argument("cannot reset " + where + " to offset " + std::to_string(offset) +
                                    ", below its log start " + std::to_string(log_start_offset()));
  }
  // Everything goes: first by truncation, which leaves an empty active segment at the log start.
  if (auto s = truncate_locked(log_start_offset()); !s.ok()) return s;
  if (offset == log_start_offset() && log_end_offset() == offset) return {};
  failure_ =
      Status::unavailable("a reset of " + where + " failed half-way; it is refused until opened again");
  std::lock_guard opening(open_mutex_);
  std::lock_guard meta(meta_mutex_);
  {
    std::unique_lock segments(segments_mutex_);
    // The meta first: with the empty active segment gone, it alone says where the log starts.
    if (auto s = write_meta(offset, offset); !s.ok()) return s;
    active_->remove_append_listener(active_listener_);
    active_->mark_deleted();
    for (const char* suffix : {".log", ".index"})
      if (auto s = fs_.remove(dir_ + "/" + stem_ + suffix); !s.ok()) return s;
    if (auto s = fs_.sync_directory(dir_); !s.ok()) return s;
    active_.reset();
    auto fresh = open_segment(stem_, offset);
    if (!fresh.ok()) return fresh.status();
    active_ = std::move(*fresh);
    log_start_ = offset;
  }
  attach_listener(*active_);
  if (dedup_) dedup_->forget_from(0);
  failure_ = {};
  return {};
}

Status SegmentedLog::roll_locked() {
  std::shared_ptr<PartitionLog> old = active();
  // 1. A sealed segment is complete on disk, whatever FSYNC says, without preallocated space.
  if (auto s = old->seal(); !s.ok()) return s;
  const std::uint64_t first = old->first_offset();
  const std::uint64_t next = old->next_offset();
  const std::string sealed = sealed_stem(stem_, first);
  const std::string base = dir_ + "/";
  // 2. The index first: a crash before the log's rename leaves an index of a sealed name without
  // its log, which the next open deletes.
  if (auto s = fs_.rename(base + stem_ + ".index", base + sealed + ".index"); !s.ok()) return s;
  // 3. The commit point.
  if (auto s = fs_.rename(base + stem_ + ".log", base + sealed + ".log"); !s.ok()) {
    if (fs_.rename(base + sealed + ".index", base + stem_ + ".index").ok()) return s;
    failure_ = Status(s.code(), "rolling " + base + stem_ + ".log failed half-way (" + s.message() +
                                    "); the partition refuses appends until it is opened again");
    return failure_;
  }
  // 4. From here the old segment is sealed: the new active segment is started now or, when that
  // fails (no descriptors left, a full disk), by the next append.
  sealed_pending_ = Sealing{old, first, next};
  return start_active_locked();
}

Status SegmentedLog::start_active_locked() {
  // Named copies, not a structured binding: clang 14 cannot capture bindings in a lambda.
  const std::shared_ptr<PartitionLog> old = sealed_pending_->old;
  const std::uint64_t first = sealed_pending_->first;
  const std::uint64_t next = sealed_pending_->next;
  const auto fail = [&](const Status& s) {
    return Status::unavailable("starting a new segment of " + topic_ + "/" + std::to_string(index_) +
                               " after offset " + std::to_string(next) + " failed (" + s.message() +
                               "); appends are refused until it succeeds (tried again at each append)");
  };
  {
    std::lock_guard meta(meta_mutex_);
    std::uint64_t log_start = 0;
    {
      std::shared_lock lock(segments_mutex_);
      log_start = log_start_;
    }
    if (auto s = write_meta(log_start, next); !s.ok()) return fail(s);
  }
  auto fresh = open_segment(stem_, next);
  if (!fresh.ok()) return fail(fresh.status());
  old->remove_append_listener(active_listener_);
  bool interrupted = false;
  {
    std::unique_lock lock(segments_mutex_);
    const std::uint64_t bytes = old->positions().written;
    sealed_.emplace(first, Sealed{bytes, old->largest_timestamp(), old});
    evicted_by_roll_ = keep_open_locked(first);
    sealed_bytes_ += bytes;
    active_ = *fresh;
    interrupted = waits_interrupted_;
  }
  sealed_pending_.reset();
  attach_listener(**fresh);
  if (interrupted) (*fresh)->interrupt_waiters();
  // Waits on the sealed segment return now; wait_beyond goes on waiting on the new one.
  old->interrupt_waiters();
  return {};
}

Status SegmentedLog::write_meta(std::uint64_t log_start, std::uint64_t active_first) {
  const std::string text = "{\"log_start_offset\":" + std::to_string(log_start) +
                           ",\"active_first_offset\":" + std::to_string(active_first) + "}\n";
  if (auto s = replace_file(fs_, dir_, stem_ + ".meta", text, /*durable=*/true); !s.ok()) return s;
  removed_synced_ = removed_;  // the sync covered every removal before it
  return {};
}

Result<std::int64_t> SegmentedLog::largest_timestamp(std::uint64_t first) const {
  {
    std::shared_lock lock(segments_mutex_);
    auto it = sealed_.find(first);
    if (it != sealed_.end() && it->second.largest_timestamp) return *it->second.largest_timestamp;
  }
  auto segment = segment_for(first);  // kNotFound once retention deleted it
  if (!segment.ok()) return segment.status();
  const std::int64_t largest = (*segment)->largest_timestamp();
  std::unique_lock lock(segments_mutex_);
  if (auto it = sealed_.find(first); it != sealed_.end()) it->second.largest_timestamp = largest;
  return largest;
}

Result<std::uint64_t> SegmentedLog::offset_for_time(std::int64_t timestamp_ms) const {
  // libmq/docs/log_format.md "The time index": a binary search over the sealed segments by their
  // largest timestamps, then one segment's index and at most about one index interval of its log.
  while (true) {
    std::vector<std::uint64_t> firsts;
    std::shared_ptr<PartitionLog> active_segment;  // still answers for its offsets if it rolls meanwhile
    {
      std::shared_lock lock(segments_mutex_);
      firsts.reserve(sealed_.size());
      for (const auto& [first, segment] : sealed_) firsts.push_back(first);
      active_segment = active_;
    }
    // Retention deleted a segment under the search: search again from the new log start.
    const auto deleted = [&](const Status& s, std::uint64_t first) {
      return s.code() == ErrorCode::kNotFound && first < log_start_offset();
    };
    std::size_t low = 0;
    std::size_t high = firsts.size();
    Status failure;
    while (low < high) {
      const std::size_t middle = low + (high - low) / 2;
      auto largest = largest_timestamp(firsts[middle]);
      if (!largest.ok()) {
        failure = deleted(largest.status(), firsts[middle]) ? Status::not_found("retry") : largest.status();
        break;
      }
      if (*largest >= timestamp_ms) {
        high = middle;
      } else {
        low = middle + 1;
      }
    }
    bool retry = failure.code() == ErrorCode::kNotFound;
    if (!failure.ok() && !retry) return failure;
    // The first segment found answers, unless the clock stepped back (log_format.md): then on.
    for (std::size_t i = low; i < firsts.size() && !retry; ++i) {
      auto segment = segment_for(firsts[i]);
      if (!segment.ok()) {
        if (deleted(segment.status(), firsts[i])) {
          retry = true;
          break;
        }
        return segment.status();
      }
      auto found = (*segment)->offset_for_time(timestamp_ms);
      if (!found.ok()) {
        if (deleted(found.status(), firsts[i])) {
          retry = true;
          break;
        }
        return found.status();
      }
      // A sealed segment's end is fixed: below it, a match.
      if (*found < (*segment)->next_offset()) return std::max(*found, log_start_offset());
    }
    if (retry) continue;
    // A match, or the end as of the lookup (never an end read later: it would skip new messages).
    return active_segment->offset_for_time(timestamp_ms);
  }
}

Result<std::uint64_t> SegmentedLog::apply_retention(const RetentionRule& rule) {
  std::lock_guard retention(retention_mutex_);
  std::uint64_t deleted = 0;
  while (true) {
    std::uint64_t first = 0;
    std::uint64_t end = 0;
    std::uint64_t bytes = 0;
    std::uint64_t total = 0;
    {
      std::shared_lock lock(segments_mutex_);
      if (sealed_.empty()) break;
      auto oldest = sealed_.begin();
      auto after = std::next(oldest);
      first = oldest->first;
      end = after == sealed_.end() ? active_->first_offset() : after->first;
      bytes = oldest->second.bytes;
      total = sealed_bytes_ + active_->positions().written;
    }
    // Never what readers cannot see yet (a replica's lines above its high watermark may still
    // become visible, and followers may still need them).
    if (end > read_limit_.load(std::memory_order_acquire)) break;
    bool goes =
        (rule.max_bytes > 0 && total > rule.max_bytes) || (rule.delete_below && end <= *rule.delete_below);
    if (!goes && rule.max_age.count() > 0) {
      auto largest = largest_timestamp(first);
      if (!largest.ok()) return largest.status();
      goes = *largest < rule.now_ms - rule.max_age.count();
    }
    if (!goes) break;
    {
      // No meta write here (its two fsyncs stalled every append for as long: ext4 commits its
      // journal): the files say where the log starts, and the meta written by the roll that
      // started the active segment says where that starts once no sealed segment is left
      // (log_format.md "The log start"). What must hold after a power cut is the order: segments
      // go oldest first, so an earlier removal is made durable before the next one (the directory
      // sync of a roll in between usually did it already), and no gap can open at the bottom.
      // open_mutex_ first: a reader may hold it through a segment's open (directory syncs,
      // recovery), and a roll, which every append waits for, must not wait behind that for
      // meta_mutex_.
      std::lock_guard opening(open_mutex_);
      std::lock_guard meta(meta_mutex_);
      if (removed_ != removed_synced_) {
        if (auto s = fs_.sync_directory(dir_); !s.ok()) return s;
        removed_synced_ = removed_;
      }
      // The log first, and only then the memory: when the removal fails (a read-only or immutable
      // file), the segment stays the log's start and this run ends, so that no newer segment goes
      // before it (that would leave a gap at the bottom, reported as corruption at every read).
      // Held open_mutex_ keeps readers from opening it meanwhile; one that has it open reads on.
      const std::string stem = dir_ + "/" + sealed_stem(stem_, first);
      if (auto s = fs_.remove(stem + ".log"); !s.ok()) return s;
      ++removed_;
      // Closed after segments_mutex_ is released, syncing nothing: its files are gone.
      std::shared_ptr<PartitionLog> gone;
      {
        std::unique_lock lock(segments_mutex_);
        if (auto it = sealed_.find(first); it != sealed_.end()) gone = std::move(it->second.log);
        sealed_.erase(first);
        std::erase(opened_, first);
        sealed_bytes_ -= bytes;
        log_start_ = end;
      }
      if (gone) gone->mark_deleted();
      // An index left behind (this removal failing) is an orphan the next open deletes (or
      // reports, if it cannot).
      if (auto s = fs_.remove(stem + ".index"); !s.ok()) return s;
    }
    deleted += end - first;
  }
  return deleted;
}

Result<std::shared_ptr<PartitionLog>> SegmentedLog::segment_for(std::uint64_t offset) const {
  std::uint64_t first = 0;
  {
    std::shared_lock lock(segments_mutex_);
    if (offset < log_start_) {
      return Status::not_found("offset " + std::to_string(offset) + " is below the start of " + topic_ + "/" +
                               std::to_string(index_) + " (log start " + std::to_string(log_start_) + ")");
    }
    if (offset >= active_->first_offset()) return active_;
    auto it = sealed_.upper_bound(offset);
    if (it == sealed_.begin()) {
      return Status::not_found("offset " + std::to_string(offset) + " is below the oldest segment of " +
                               topic_ + "/" + std::to_string(index_));
    }
    --it;
    if (it->second.log) return it->second.log;
    first = it->first;
  }
  // Opening may create files: retention must not delete this segment meanwhile, or its files
  // would come back empty (open_mutex_ is held by retention while it deletes).
  std::lock_guard opening(open_mutex_);
  std::uint64_t end = 0;
  {
    std::shared_lock lock(segments_mutex_);
    auto it = sealed_.find(first);
    if (it == sealed_.end()) {
      return Status::not_found("offset " + std::to_string(offset) + " is below the start of " + topic_ + "/" +
                               std::to_string(index_) + " (log start " + std::to_string(log_start_) + ")");
    }
    if (it->second.log) return it->second.log;
    auto after = std::next(it);
    end = after == sealed_.end() ? active_->first_offset() : after->first;
  }
  auto opened = open_segment(sealed_stem(stem_, first), first);
  if (!opened.ok()) return opened.status();
  // A sealed segment must end where the next one starts: a gap (a deleted or damaged file) is
  // reported, never papered over.
  if ((*opened)->next_offset() != end) {
    return Status::corruption(dir_ + "/" + sealed_stem(stem_, first) + ".log ends at offset " +
                              std::to_string((*opened)->next_offset()) + " but the next segment starts at " +
                              std::to_string(end) + " (libmq/docs/log_format.md \"Segments\")");
  }
  std::vector<std::shared_ptr<PartitionLog>> evicted;  // closed after the lock is released
  std::unique_lock lock(segments_mutex_);
  auto it = sealed_.find(first);
  if (it == sealed_.end()) return *opened;
  if (!it->second.log) {
    it->second.log = *opened;
    evicted = keep_open_locked(first);
  }
  return it->second.log;
}

std::vector<std::shared_ptr<PartitionLog>> SegmentedLog::keep_open_locked(std::uint64_t first) const {
  // Each open segment holds two descriptors: only the most recently opened few stay open (a reader
  // holding an evicted one keeps its files until it is done).
  std::vector<std::shared_ptr<PartitionLog>> evicted;
  opened_.push_back(first);
  while (opened_.size() > kMaxOpenSealedSegments) {
    if (auto it = sealed_.find(opened_.front()); it != sealed_.end())
      evicted.push_back(std::move(it->second.log));
    opened_.pop_front();
  }
  return evicted;
}

Result<ReadBatch> SegmentedLog::read_past_limit(std::uint64_t offset, std::size_t max_messages,
                                                std::size_t max_bytes) const {
  auto segment = segment_for(offset);
  if (!segment.ok()) return segment.status();
  return (*segment)->read(offset, max_messages, max_bytes);
}

Result<ReadBatch> SegmentedLog::read(std::uint64_t offset, std::size_t max_messages,
                                     std::size_t max_bytes) const {
  if (read_limit_.load(std::memory_order_acquire) == kNoLimit)
    return read_past_limit(offset, max_messages, max_bytes);
  const std::uint64_t limit = effective_limit();
  if (offset > limit) {
    return Status::not_found("offset " + std::to_string(offset) + " is beyond the end of " + topic_ + "/" +
                             std::to_string(index_) + " (next offset " + std::to_string(limit) + ")");
  }
  auto batch = read_past_limit(offset, offset == limit ? 0 : max_messages, max_bytes);
  if (!batch.ok()) return batch;
  auto& messages = ReadBatchInternal::messages(*batch);
  while (!messages.empty() && messages.back().offset >= limit) messages.pop_back();
  ReadBatchInternal::set_next_offset(*batch, std::min(batch->next_offset(), limit));
  return batch;
}

std::uint64_t SegmentedLog::log_end_offset() const { return active()->next_offset(); }

std::uint64_t SegmentedLog::effective_limit() const {
  // Never below the log start: what retention or a reset removed is not "beyond the end".
  const std::uint64_t limit = read_limit_.load(std::memory_order_acquire);
  return limit == kNoLimit ? kNoLimit : std::max(limit, log_start_offset());
}

std::uint64_t SegmentedLog::next_offset() const { return std::min(log_end_offset(), effective_limit()); }

void SegmentedLog::set_read_limit(std::optional<std::uint64_t> limit) {
  {
    std::lock_guard lock(limit_mutex_);
    read_limit_.store(limit.value_or(kNoLimit), std::memory_order_release);
  }
  limit_changed_.notify_all();
  listeners_.notify();  // what groups see may have grown, as after an append
}

std::uint64_t SegmentedLog::log_start_offset() const {
  std::shared_lock lock(segments_mutex_);
  return log_start_;
}

std::size_t SegmentedLog::segment_count() const {
  std::shared_lock lock(segments_mutex_);
  return sealed_.size() + 1;
}

std::uint64_t SegmentedLog::log_bytes() const { return positions().written; }

LogPositions SegmentedLog::positions() const {
  std::shared_ptr<PartitionLog> segment;
  std::uint64_t sealed_bytes = 0;
  {
    std::shared_lock lock(segments_mutex_);
    segment = active_;
    sealed_bytes = sealed_bytes_;
  }
  LogPositions p = segment->positions();
  return {p.appended + sealed_bytes, p.written + sealed_bytes, p.synced + sealed_bytes};
}

std::uint64_t SegmentedLog::wait_beyond(std::uint64_t offset, std::chrono::milliseconds timeout) const {
  if (read_limit_.load(std::memory_order_acquire) == kNoLimit) {
    const std::uint64_t end = wait_beyond_end(offset, timeout);
    // A limit set meanwhile still holds.
    return std::min(end, read_limit_.load(std::memory_order_acquire));
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    const std::uint64_t end = log_end_offset();
    const std::uint64_t visible = next_offset();
    if (visible > offset) return visible;
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return visible;
    {
      std::shared_lock lock(segments_mutex_);
      if (waits_interrupted_) return visible;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    if (end > offset) {
      // Stored but above the limit: wait for the limit to move (or be lifted).
      std::unique_lock lock(limit_mutex_);
      limit_changed_.wait_for(lock, left,
                              [&] { return effective_limit() > offset || waits_interrupted_flag(); });
    } else {
      (void)wait_beyond_end(offset, left);
    }
  }
}

std::uint64_t SegmentedLog::wait_beyond_end(std::uint64_t offset, std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    std::shared_ptr<PartitionLog> segment = active();
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    const std::uint64_t next = segment->wait_beyond(offset, std::max(left, std::chrono::milliseconds(0)));
    if (next > offset) return next;
    bool rolled = false;
    bool interrupted = false;
    {
      std::shared_lock lock(segments_mutex_);
      rolled = active_ != segment;
      interrupted = waits_interrupted_;
    }
    // A roll interrupted the wait on the segment it sealed: wait on the new one for the time left.
    if (!rolled || interrupted || std::chrono::steady_clock::now() >= deadline) return log_end_offset();
  }
}

bool SegmentedLog::waits_interrupted_flag() const {
  std::shared_lock lock(segments_mutex_);
  return waits_interrupted_;
}

void SegmentedLog::interrupt_waiters() {
  std::shared_ptr<PartitionLog> segment;
  {
    std::unique_lock lock(segments_mutex_);
    waits_interrupted_ = true;
    segment = active_;
  }
  segment->interrupt_waiters();
  { std::lock_guard lock(limit_mutex_); }
  limit_changed_.notify_all();
}

Status SegmentedLog::sync(bool only_if_behind) { return active()->sync(only_if_behind); }

std::uint64_t SegmentedLog::add_append_listener(std::function<void()> on_append) {
  return listeners_.add(std::move(on_append));
}

void SegmentedLog::remove_append_listener(std::uint64_t id) { listeners_.remove(id); }

}  // namespace mq::detail

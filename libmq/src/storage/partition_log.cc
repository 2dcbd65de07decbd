#include "storage/partition_log.h"

#include <algorithm>
#include <cassert>
#include <cctype>
#include <limits>
#include <set>
#include <string_view>
#include <unordered_map>

#include "common/message_rules.h"
#include "storage/internal_access.h"
#include "storage/record_format.h"

namespace mq {
namespace {

constexpr std::size_t kReadChunkBytes = 64 * 1024;
constexpr std::size_t kMaxSpareBufferBytes = 4 << 20;  // don't hoard memory after a huge batch
// The formatting buffer kept between appends: a batch of 100 small messages takes 16–34 KiB; a
// partition that once took a huge batch keeps no more than this of it.
constexpr std::size_t kMaxFormatSpareBytes = 256 << 10;
// Batches of at least this many messages are formatted outside the partition's lock.
constexpr std::size_t kFormatOutsideLockMessages = 64;
// The most id hashes an append keeps room for after use (64 KiB): a huge batch's are given back.
constexpr std::size_t kMaxKeptHashes = 4096;

std::int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

// Syncs `dir` and every directory above it up to `root`, making the entries of the log's files and
// directories durable. Every time, not only when they were just created: one created before a crash
// but never synced would otherwise stay undurable forever, since the next start finds it present.
// Runs once per log opened.
Status sync_directories_up_to(FileSystem& fs, const std::string& root, const std::string& dir) {
  std::string current = dir;
  while (true) {
    if (auto s = fs.sync_directory(current); !s.ok()) return s;
    const auto slash = current.find_last_of('/');
    if (current == root || current.size() <= root.size() || slash == std::string::npos || slash == 0) break;
    current.resize(slash);
  }
  return {};
}

// Says what recovery cut, if anything: damage must never cost messages silently.
void report_recovery(const StoreOptions& options, const std::string& path, const RecoveryReport& report) {
  if (report.truncated_bytes == 0) return;
  std::string line = "recovery of " + path + ": dropped " + std::to_string(report.truncated_bytes) +
                     " bytes from byte " + std::to_string(report.damage_position) + " (offset " +
                     std::to_string(report.damage_offset) + " on)";
  line +=
      report.intact_records_dropped > 0
          ? "; " + std::to_string(report.intact_records_dropped) +
                " intact records followed the damage and were dropped with it (the cut bytes are kept in " +
                report.damaged_bytes_kept_in + ")"
          : " (a torn tail: no intact record followed)";
  detail::write_recovery_line(options, line);
}

}  // namespace

Result<std::unique_ptr<PartitionLog>> PartitionLog::open(FileSystem& fs, const StoreOptions& options,
                                                         const std::string& dir, const std::string& stem,
                                                         std::string topic, std::uint32_t index,
                                                         std::uint64_t first_offset) {
  if (auto s = fs.create_directories(dir); !s.ok()) return s;
  const std::string path = dir + "/" + stem + ".log";
  auto log = fs.open(path);
  if (!log.ok()) return log.status();
  auto index_file = fs.open(dir + "/" + stem + ".index");
  if (!index_file.ok()) return index_file.status();
  // A synced append is worthless if the file's directory entry is lost in a power cut.
  if (options.fsync != FsyncMode::kNever) {
    if (auto s = sync_directories_up_to(fs, options.data_dir, dir); !s.ok()) return s;
  }
  auto recovered = detail::recover_log(**log, **index_file, path, options.recovery,
                                       options.index_interval_bytes, &fs, first_offset);
  if (!recovered.ok()) return recovered.status();
  report_recovery(options, path, recovered->report);
  return std::make_unique<PartitionLog>(std::move(topic), index, options, std::move(log.value()),
                                        std::move(index_file.value()), std::move(recovered.value()));
}

PartitionLog::PartitionLog(std::string topic, std::uint32_t index, const StoreOptions& options,
                           std::unique_ptr<File> log, std::unique_ptr<File> index_file,
                           detail::RecoveredLog recovered)
    : topic_(std::move(topic)),
      index_(index),
      options_(options),
      log_(std::move(log)),
      index_file_(std::move(index_file)),
      report_(recovered.report),
      first_offset_(recovered.index.front().offset),
      entries_(std::move(recovered.index)) {
  const Mark end{recovered.end_position, recovered.next_offset};
  appended_ = written_ = synced_ = end;
  last_indexed_position_ = entries_.back().position;
  largest_timestamp_ = recovered.largest_timestamp;
  index_writes_ = recovered.index_written ? 1 : 0;
  preallocated_end_ = recovered.end_position;  // recovery cut any zeros beyond the records
}

PartitionLog::~PartitionLog() {
  if (deleted_) return;
  (void)sync(/*only_if_behind=*/true);
  // Zeros left beyond the records would only be cut by the next open (unsynced: if this is lost,
  // that open still cuts them). The file's size decides, not preallocated_end_: a preallocation
  // that failed half-way may have grown it anyway.
  if (options_.fsync != FsyncMode::kNever && options_.preallocate_bytes > 0) {
    if (auto size = log_->size(); size.ok() && *size > written_.position)
      (void)log_->truncate(written_.position);
  }
  // The index is never synced on the append path; spare the next open a rebuild. Only when
  // something was written since its last sync: a sealed segment closed after a read is not (its
  // fdatasync stalled appends elsewhere on the disk for nothing).
  if (index_writes_ != index_writes_synced_) (void)index_file_->sync();
}

Status PartitionLog::seal() {
  if (auto s = sync(); !s.ok()) return s;
  std::lock_guard lock(mutex_);
  // The file's size decides, not preallocated_end_: a preallocation that failed half-way may have
  // grown it anyway.
  auto size = log_->size();
  if (!size.ok()) return size.status();
  if (*size <= written_.position) return {};
  if (auto s = log_->truncate(written_.position); !s.ok()) return s;
  preallocated_end_ = written_.position;
  return log_->sync();
}

Status PartitionLog::check_payloads(std::span<const Message> batch) const {
  const std::int64_t now = now_ms();
  for (const Message& m : batch) {
    const std::string& json = m.payload.json();
    if (json.empty()) return Status::invalid_argument("a payload must be a JSON value");
    if (json.size() > options_.max_payload_bytes) {
      return Status::payload_too_large("payload of " + std::to_string(json.size()) +
                                       " bytes exceeds MAX_PAYLOAD_BYTES (" +
                                       std::to_string(options_.max_payload_bytes) + ")");
    }
    // Anything that would not read back as one valid line would make recovery cut the log here,
    // taking every later message with it: refuse it now instead.
    if (json.find('\n') != std::string::npos) {
      return Status::invalid_argument("a payload must be minified JSON (it contains a raw newline)");
    }
    if (auto s = detail::check_message_options(m, now); !s.ok()) {
      if (batch.size() == 1) return s;
      // Which message of the batch, as the request parser says for what it refuses.
      return Status::invalid_argument(s.message() + " in messages[" + std::to_string(&m - batch.data()) +
                                      "]");
    }
  }
  return {};
}

Result<std::uint64_t> PartitionLog::append(std::span<const Message> batch, AppendResult* result) {
  auto first = append_durably(batch, result);
  if (first.ok()) listeners_.notify();
  return first;
}

void PartitionLog::deduplicate_with(detail::DedupWindow* window) {
  std::lock_guard lock(mutex_);
  dedup_ = window;
}

void PartitionLog::remember_dedup_ids(const std::vector<StoredDedupId>& ids) {
  std::lock_guard lock(mutex_);
  if (dedup_ == nullptr) return;
  for (const auto& stored : ids) dedup_->remember(stored.id, stored.offset, stored.timestamp_ms);
}

void PartitionLog::deduplicate_locked(std::span<const Message> batch, std::int64_t now_ms,
                                      AppendResult& result, std::vector<Message>& kept) {
  result.offsets.resize(batch.size());
  result.duplicates.clear();  // (`kept` is made from it below)
  // Every id's hash first, its index slot fetched at once: the lookups below then find their slots
  // in the cache rather than waiting on a miss each (a lone id has nothing to overlap with). In a
  // vector kept from the last append (up to kMaxKeptHashes): a batch's hashes, 1.6 KiB for 100,
  // are too large for malloc's per-thread cache, and their free showed in profiles.
  const auto ids = static_cast<std::size_t>(
      std::count_if(batch.begin(), batch.end(), [](const Message& m) { return m.dedup_id.has_value(); }));
  std::vector<detail::Hash128>& hashes = dedup_hashes_;
  hashes.clear();
  if (dedup_ != nullptr && ids > 1) {
    hashes.resize(batch.size());
    dedup_->reserve(ids);
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (!batch[i].dedup_id) continue;
      hashes[i] = dedup_->hash_of(*batch[i].dedup_id);
      dedup_->prefetch(hashes[i]);
    }
  }
  std::uint64_t next = appended_.offset;
  try {
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const auto& id = batch[i].dedup_id;
      // Remembered now, before the write: a later message of this batch or a concurrent append of
      // the same id must find it. A write that a full disk drops forgets them again
      // (roll_back_locked); a failed one fails the partition.
      std::optional<std::uint64_t> earlier;
      if (id && dedup_ != nullptr) {
        earlier = hashes.empty() ? dedup_->find_or_remember(*id, next, now_ms)
                                 : dedup_->find_or_remember(hashes[i], next, now_ms);
      }
      if (earlier) {
        result.offsets[i] = *earlier;
        result.duplicates.push_back(i);
        continue;
      }
      result.offsets[i] = next++;
    }
    if (hashes.capacity() > kMaxKeptHashes) std::vector<detail::Hash128>().swap(hashes);
    if (!result.duplicates.empty()) {
      // The others, in order: result.duplicates is ascending.
      kept.reserve(batch.size() - result.duplicates.size());
      auto duplicate = result.duplicates.begin();
      for (std::size_t i = 0; i < batch.size(); ++i) {
        if (duplicate != result.duplicates.end() && *duplicate == i) {
          ++duplicate;
        } else {
          kept.push_back(batch[i]);
        }
      }
    }
  } catch (...) {
    // Out of memory part way (reserve() above leaves the window nothing to allocate, but the
    // vectors here do): none of this batch is stored, so none of its ids may stay remembered, or a
    // retry would be answered "duplicate" of offsets other messages take.
    if (dedup_ != nullptr) dedup_->forget_from(appended_.offset);
    throw;
  }
}

std::uint64_t PartitionLog::add_append_listener(std::function<void()> on_append) {
  return listeners_.add(std::move(on_append));
}

void PartitionLog::remove_append_listener(std::uint64_t id) { listeners_.remove(id); }

Result<std::uint64_t> PartitionLog::append_durably(std::span<const Message> all, AppendResult* result) {
  if (all.empty()) return Status::invalid_argument("an append needs at least one message");
  if (auto s = check_payloads(all); !s.ok()) return s;
  const std::int64_t timestamp = now_ms();
  const bool has_dedup_ids = std::any_of(all.begin(), all.end(), [](const Message& m) { return m.dedup_id; });
  std::span<const Message> batch = all;  // what is stored: all but the duplicates
  std::vector<Message> kept;
  auto format = [&](std::string& out, std::uint64_t first) {
    const std::optional<std::uint64_t> batch_last =
        batch.size() > 1 ? std::optional(first + batch.size() - 1) : std::nullopt;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      detail::append_record_line(out, first + i, timestamp, batch_last, batch[i]);
    }
  };

  std::unique_lock lock(mutex_);
  // A large batch is formatted outside the lock, for the offset it will most likely get, so that
  // it does not hold up the partition's other appenders (1.2 M tiny messages took 0.38 s to
  // format); if another append took that offset meanwhile, it is formatted again.
  // In a buffer kept from an earlier append: a new one grows by doubling, each step a copy, and
  // fresh heap memory is slow to touch on the machines measured here.
  std::string formatted;
  if (batch.size() >= kFormatOutsideLockMessages) formatted.swap(format_spare_);
  // (With dedup ids it is formatted as if none were a duplicate, as is most likely.)
  for (int attempt = 0; batch.size() >= kFormatOutsideLockMessages && attempt < 3; ++attempt) {
    const std::uint64_t guess = appended_.offset;
    lock.unlock();
    formatted.clear();
    format(formatted, guess);
    lock.lock();
    if (appended_.offset == guess) break;
    formatted.clear();
  }
  if (!error_.ok()) return error_;
  const std::uint64_t epoch = epoch_;
  if (dedup_ != nullptr) dedup_->expire(timestamp);  // every append trims it, not only those with ids
  AppendResult local;
  AppendResult& outcome = result != nullptr ? *result : local;
  if (has_dedup_ids) {
    deduplicate_locked(all, timestamp, outcome, kept);
    if (!outcome.duplicates.empty()) {
      batch = kept;
      formatted.clear();  // formatted with the duplicates: formatted again below, without them
    }
  } else if (result != nullptr) {
    result->offsets.resize(all.size());
    for (std::size_t i = 0; i < all.size(); ++i) result->offsets[i] = appended_.offset + i;
  }
  if (batch.empty()) {
    // Every message was a duplicate: answer once what they name is as visible (durable, with
    // kAlways) as the append would have made itself, waiting for the round under way if need be.
    const Mark mine = appended_;
    while (visible_locked().position < mine.position) {
      if (epoch_ != epoch) return rollback_status_;
      if (!error_.ok()) return failure_for_locked(mine.position);
      if (options_.fsync != FsyncMode::kAlways) {
        write_pending_locked();
      } else if (!writer_active_) {
        write_and_sync_pending(lock);
      } else {
        round_done_[(round_ + (mine.position <= round_target_ ? 0 : 1)) % 2].wait(lock);
      }
    }
    return outcome.offsets.front();
  }
  const std::uint64_t first = appended_.offset;
  const std::uint64_t batch_position = appended_.position;
  const std::size_t before = pending_.size();
  if (!formatted.empty()) {
    if (pending_.empty()) {
      pending_.swap(formatted);  // no copy under the lock
    } else {
      pending_ += formatted;
    }
  } else {
    format(pending_, first);
  }
  appended_.position += pending_.size() - before;
  appended_.offset += batch.size();
  ++pending_appends_;
  if (gathering_) gathered_.notify_one();
  if (batch_position > 0 && batch_position - last_indexed_position_ >= options_.index_interval_bytes) {
    pending_entries_.push_back({first, batch_position, largest_timestamp_});
    last_indexed_position_ = batch_position;
  }
  largest_timestamp_ = std::max(largest_timestamp_, timestamp);
  // What `formatted` holds now (the bytes appended, or the empty buffer pending_ had) is kept for
  // the next append.
  formatted.clear();
  if (formatted.capacity() > format_spare_.capacity() && formatted.capacity() <= kMaxFormatSpareBytes) {
    format_spare_.swap(formatted);
  }
  return finish_append_locked(lock, first, epoch);
}

Result<std::uint64_t> PartitionLog::finish_append_locked(std::unique_lock<std::mutex>& lock,
                                                         std::uint64_t first, std::uint64_t epoch) {
  if (options_.fsync != FsyncMode::kAlways) {
    // Nothing to wait for but write(2), which costs about a microsecond for a small batch: doing it
    // under the lock is cheaper than handing the bytes to another thread (measured: with 8 threads
    // on 2 cores, a hand-off through a condition variable was 3x slower).
    write_pending_locked();
    if (epoch_ != epoch) return rollback_status_;
    if (!error_.ok()) return failure_for_locked(appended_.position);
    return first;
  }
  // Group commit: wait until a sync covers these bytes, doing the write and sync ourselves when
  // no other appender is.
  const Mark mine = appended_;
  while (true) {
    // Synced is synced, even if a later round failed: answering an error would invite a duplicate.
    if (synced_.position >= mine.position) return first;
    if (epoch_ != epoch) return rollback_status_;  // dropped for a full disk: nothing of it is kept
    if (!error_.ok()) return failure_for_locked(mine.position);
    if (!writer_active_) {
      write_and_sync_pending(lock);
    } else {
      // Bytes already taken by the round under way wait for its end; bytes still pending wait for
      // the next round, so that the end of a round wakes the appenders it finished and just one
      // of the others, to lead the next round (not every waiter, most of them for nothing).
      const bool in_this_round = mine.position <= round_target_;
      round_done_[(round_ + (in_this_round ? 0 : 1)) % 2].wait(lock);
    }
  }
}

Result<std::uint64_t> PartitionLog::append_copied(const detail::CopiedLines& copied) {
  if (copied.count == 0) return Status::invalid_argument("an append needs at least one message");
  std::unique_lock lock(mutex_);
  if (!error_.ok()) return error_;
  if (copied.first_offset != appended_.offset) {
    return Status::conflict("copied lines start at offset " + std::to_string(copied.first_offset) +
                            ", the log at " + std::to_string(appended_.offset));
  }
  const std::uint64_t epoch = epoch_;
  if (dedup_ != nullptr) {
    // A follower keeps the window as its leader does, so that it deduplicates the same way once it leads.
    dedup_->expire(now_ms());
    for (const auto& id : copied.dedup_ids) dedup_->remember(id.id, id.offset, id.timestamp_ms);
  }
  const std::uint64_t first = appended_.offset;
  const std::uint64_t base = appended_.position;
  pending_ += copied.text;
  for (const auto& batch : copied.batches) {
    const std::uint64_t position = base + batch.position;
    if (position > 0 && position - last_indexed_position_ >= options_.index_interval_bytes) {
      pending_entries_.push_back(
          {batch.offset, position, std::max(largest_timestamp_, batch.largest_timestamp_before)});
      last_indexed_position_ = position;
    }
  }
  appended_.position += copied.text.size();
  appended_.offset += copied.count;
  ++pending_appends_;
  if (gathering_) gathered_.notify_one();
  largest_timestamp_ = std::max(largest_timestamp_, copied.largest_timestamp);
  return finish_append_locked(lock, first, epoch);
}

Status PartitionLog::write_out(std::uint64_t position, std::string_view data,
                               const std::vector<detail::IndexEntry>& entries) {
  if (options_.fsync != FsyncMode::kNever && options_.preallocate_bytes > 0 &&
      position + data.size() > preallocated_end_) {
    // Space ahead of the appends: the fdatasyncs after the next writes then commit no file size
    // (log_format.md "Preallocated space"). Not done (no room, no support): appends go on as before.
    const std::uint64_t target = position + data.size() + options_.preallocate_bytes;
    if (log_->preallocate(target)) preallocated_end_ = target;
  }
  Status status = log_->write_at(position, data);
  if (status.ok() && !entries.empty()) {
    // The index is a shortcut that recovery can rebuild, so its write failing costs only start-up time.
    std::string encoded;
    for (const auto& e : entries) detail::encode_index_entry(encoded, e);
    (void)index_file_->append(encoded);
    ++index_writes_;  // after the write: a sync that counts it started after it
  }
  return status;
}

void PartitionLog::write_pending_locked() {
  const Mark target = appended_;
  Status status = write_out(written_.position, pending_, pending_entries_);
  if (status.ok()) {
    pending_.clear();
    publish(target, /*synced=*/false, pending_entries_);
    pending_entries_.clear();
  } else if (status.code() != ErrorCode::kNoSpace || !roll_back_locked(status)) {
    pending_.clear();
    pending_entries_.clear();
    fail(status, target);
  }
}

bool PartitionLog::roll_back_locked(const Status& status) {
  // What part of the failed write reached the file goes, so that nothing of it survives a restart.
  if (!log_->truncate(written_.position).ok()) return false;
  preallocated_end_ = written_.position;
  appended_ = written_;
  if (dedup_ != nullptr) dedup_->forget_from(appended_.offset);
  pending_.clear();
  pending_entries_.clear();
  pending_appends_ = 0;
  last_indexed_position_ = entries_.back().position;
  ++epoch_;
  rollback_status_ =
      Status::no_space(status.message() + " (nothing of this write was stored; " + topic_ + "/" +
                       std::to_string(index_) + " takes writes again once there is space)");
  return true;
}

void PartitionLog::write_and_sync_pending(std::unique_lock<std::mutex>& lock) {
  assert(!writer_active_);
  writer_active_ = true;
  gather_locked(lock);
  ++round_;
  round_target_ = appended_.position;
  const std::size_t round_appends = pending_appends_;
  pending_appends_ = 0;
  std::string data;
  data.swap(spare_);
  data.swap(pending_);
  std::vector<detail::IndexEntry> entries;
  entries.swap(pending_entries_);
  const Mark target = appended_;
  const std::uint64_t position = written_.position;
  lock.unlock();

  Status status = write_out(position, data, entries);
  const auto sync_start = std::chrono::steady_clock::now();
  if (status.ok()) status = log_->sync();
  const auto sync_time = std::chrono::steady_clock::now() - sync_start;

  lock.lock();
  writer_active_ = false;
  last_sync_time_ = sync_time;
  // Everyone this round answered, plus whoever queued meanwhile: how many appenders are around.
  expected_appends_ = round_appends + pending_appends_;
  data.clear();
  if (data.capacity() <= kMaxSpareBufferBytes) spare_.swap(data);
  if (status.ok()) {
    publish(target, /*synced=*/true, entries);
  } else if (status.code() != ErrorCode::kNoSpace || !roll_back_locked(status)) {
    fail(status, target);  // a failed sync (or write): the file's state is unknown
  }
  round_done_[round_ % 2].notify_all();
  if (!status.ok()) {
    round_done_[(round_ + 1) % 2].notify_all();  // everyone learns of the error
  } else if (!pending_.empty()) {
    round_done_[(round_ + 1) % 2].notify_one();  // one of the next round's appenders leads it
  }
}

void PartitionLog::gather_locked(std::unique_lock<std::mutex>& lock) {
  // With a slow fdatasync, concurrent appenders split into two cohorts that take turns: those a
  // round answers append again while the next round is already syncing, so each sync covers half
  // of them. Waiting a fraction of a sync for the answered ones to come back merges the cohorts.
  // Cheap disks (fast syncs) and lone appenders skip the wait.
  constexpr auto kSlowSync = std::chrono::microseconds(100);
  constexpr auto kMaxGather = std::chrono::microseconds(1000);
  if (last_sync_time_ < kSlowSync || pending_appends_ >= expected_appends_) return;
  const auto budget = std::min<std::chrono::steady_clock::duration>(last_sync_time_ / 2, kMaxGather);
  gathering_ = true;
  gathered_.wait_for(lock, budget, [&] { return pending_appends_ >= expected_appends_ || !error_.ok(); });
  gathering_ = false;
}

Status PartitionLog::failure_for_locked(std::uint64_t end_position) const {
  // Bytes that were handed to the disk when its write or sync failed may or may not survive a crash.
  if (end_position <= failed_round_end_)
    return Status::storage_failed(error_.message(), /*outcome_unknown=*/true);
  return error_;
}

void PartitionLog::fail(const Status& status, Mark round_end) {
  // After a failed write or fsync the file's state is unknown: stop accepting writes rather than
  // pretend (leveldb's RecordBackgroundError; PostgreSQL learnt that a failed fsync retried "works").
  // Recovery at the next open repairs the tail.
  if (!error_.ok()) return;
  failed_round_end_ = round_end.position;
  error_ = Status::storage_failed("partition " + topic_ + "/" + std::to_string(index_) +
                                      " stopped accepting writes until mqd is restarted: " + status.message(),
                                  /*outcome_unknown=*/false);
}

void PartitionLog::publish(Mark written, bool synced, const std::vector<detail::IndexEntry>& new_entries) {
  assert(written.position >= written_.position);
  written_ = written;
  if (synced) synced_ = written;
  entries_.insert(entries_.end(), new_entries.begin(), new_entries.end());
  assert(appended_.position >= written_.position && written_.position >= synced_.position);
  visible_cv_.notify_all();
}

Status PartitionLog::sync(bool only_if_behind) {
  std::unique_lock lock(mutex_);
  // One sync at a time; writes go on meanwhile (an fdatasync covers at least what was written
  // before it started, which is all that `target` claims).
  while (syncing_) synced_cv_.wait(lock);
  if (!error_.ok()) return error_;
  if (only_if_behind && synced_.position == written_.position) return {};
  syncing_ = true;
  const Mark target = written_;
  const std::uint64_t index_writes = index_writes_;
  lock.unlock();
  Status status = log_->sync();
  const bool index_synced = status.ok() && index_file_->sync().ok();
  lock.lock();
  syncing_ = false;
  if (index_synced) index_writes_synced_ = std::max(index_writes_synced_, index_writes);
  if (status.ok()) {
    if (target.position > synced_.position) synced_ = target;
    visible_cv_.notify_all();
  } else {
    fail(status, target);
  }
  synced_cv_.notify_all();
  return status;
}

std::int64_t PartitionLog::largest_timestamp() const {
  std::lock_guard lock(mutex_);
  return largest_timestamp_;
}

Result<std::uint64_t> PartitionLog::offset_for_time(std::int64_t timestamp_ms) const {
  detail::IndexEntry start;
  // The next entry's offset: a match must come before it (a plain number, not an optional, which
  // GCC's -O1 -Wmaybe-uninitialized misreads under the sanitizers).
  constexpr std::uint64_t kNoBound = std::numeric_limits<std::uint64_t>::max();
  std::uint64_t bound = kNoBound;
  {
    std::lock_guard lock(mutex_);
    // The end as of this moment, read under the same lock as the maximum: what is appended later
    // is newer, and answering an end read after the scan would skip it.
    if (largest_timestamp_ < timestamp_ms) return visible_locked().offset;
    start = detail::time_floor_entry(entries_, timestamp_ms);
    auto next = std::upper_bound(entries_.begin(), entries_.end(), start.offset,
                                 [](std::uint64_t o, const detail::IndexEntry& e) { return o < e.offset; });
    if (next != entries_.end()) bound = next->offset;
  }
  // The index is checked, not trusted: a timestamp in it that the log contradicts (a damaged or
  // hand-made index with valid checks) costs a scan of the whole segment, never a wrong answer.
  // The message before `start` must be older, and a match must come before `bound`.
  bool trusted = true;
  if (start.offset > first_offset_) {
    auto before = read(start.offset - 1, 1, 1 << 20);
    if (!before.ok()) return before.status();
    if (before->empty())
      return Status::corruption("the log of " + topic_ + "/" + std::to_string(index_) +
                                " ends before its index entry at " + std::to_string(start.offset));
    const auto timestamp = detail::parse_timestamp_prefix((*before)[0].line);
    trusted = timestamp && *timestamp < timestamp_ms;
  }
  // Every message before `start` is older; the next entry proves a match before it, so this reads
  // about one index interval. Small reads: most of it is skipped.
  constexpr std::size_t kScanMessages = 256;
  constexpr std::size_t kScanBytes = 64 << 10;
  std::uint64_t offset = start.offset;
  if (!trusted) {
    offset = first_offset_;
    bound = kNoBound;
  }
  while (true) {
    auto batch = read(offset, kScanMessages, kScanBytes);
    if (!batch.ok()) return batch.status();
    if (batch->empty()) return batch->next_offset();  // the end where it looked
    offset = batch->next_offset();
    for (const auto& message : *batch) {
      if (message.offset >= bound) {  // the next entry lied: scan the whole segment
        bound = kNoBound;
        offset = first_offset_;
        break;
      }
      const auto timestamp = detail::parse_timestamp_prefix(message.line);
      if (timestamp && *timestamp >= timestamp_ms) return message.offset;
    }
  }
}

Result<PartitionLog::LineStart> PartitionLog::batch_start_of(std::uint64_t offset) const {
  detail::IndexEntry start;
  Mark visible;
  {
    std::lock_guard lock(mutex_);
    visible = visible_locked();
    start = detail::floor_entry(entries_, offset);
  }
  if (offset == visible.offset) return LineStart{offset, visible.position};
  // One scan forward from the index entry at or below `offset` (entries are at batch starts),
  // keeping where the batch under way began.
  detail::RecordValidator validator;
  LineStart batch{start.offset, start.position};
  std::uint64_t at = start.offset;
  std::uint64_t position = start.position;
  while (true) {
    auto lines = read(at, 4096, 4 << 20);
    if (!lines.ok()) return lines.status();
    if (lines->empty()) break;
    for (const StoredMessage& m : *lines) {
      const auto header = validator.validate(m.line);
      if (!header) {
        return Status::corruption("the line at offset " + std::to_string(m.offset) + " of " + topic_ + "/" +
                                  std::to_string(index_) + " is damaged");
      }
      if (m.offset == offset) return batch;
      position += m.line.size() + 1;
      if (header->batch_last.value_or(m.offset) == m.offset) batch = {m.offset + 1, position};
    }
    at = lines->next_offset();
  }
  return Status::not_found("offset " + std::to_string(offset) + " is not in this log of " + topic_ + "/" +
                           std::to_string(index_));
}

Result<ReadBatch> PartitionLog::read(std::uint64_t offset, std::size_t max_messages,
                                     std::size_t max_bytes) const {
  Mark visible;
  detail::IndexEntry start;
  {
    std::lock_guard lock(mutex_);
    visible = visible_locked();
    start = detail::floor_entry(entries_, offset);
  }
  if (offset < first_offset_) {
    return Status::not_found("offset " + std::to_string(offset) + " is below the first offset (" +
                             std::to_string(first_offset_) + ") of this log of " + topic_ + "/" +
                             std::to_string(index_));
  }
  if (offset > visible.offset) {
    return Status::not_found("offset " + std::to_string(offset) + " is beyond the end of " + topic_ + "/" +
                             std::to_string(index_) + " (next offset " + std::to_string(visible.offset) +
                             ")");
  }
  ReadBatch batch;
  detail::ReadBatchInternal::set_next_offset(batch, offset);
  if (offset == visible.offset || max_messages == 0) return batch;

  // buffer holds the file from buffer_position on; lines before `cursor` are consumed.
  std::string& buffer = detail::ReadBatchInternal::buffer(batch);
  std::uint64_t buffer_position = start.position;
  std::size_t cursor = 0;
  std::uint64_t current = start.offset;
  std::string chunk;
  auto load_more = [&]() -> Status {
    const std::uint64_t loaded_end = buffer_position + buffer.size();
    if (loaded_end >= visible.position) {
      return Status::corruption(topic_ + "/" + std::to_string(index_) +
                                ": log ends inside a record at byte " + std::to_string(loaded_end));
    }
    const std::size_t want = std::max(kReadChunkBytes, buffer.size());
    if (auto s = log_->read(
            loaded_end,
            static_cast<std::size_t>(std::min<std::uint64_t>(want, visible.position - loaded_end)), chunk);
        !s.ok()) {
      return s;
    }
    if (chunk.empty()) return Status::io_error("log of " + topic_ + "/" + std::to_string(index_) + " shrank");
    buffer += chunk;
    return {};
  };

  while (current < offset) {  // skip from the index entry to `offset`
    const auto newline = buffer.find('\n', cursor);
    if (newline == std::string::npos) {
      buffer.erase(0, cursor);
      buffer_position += cursor;
      cursor = 0;
      if (auto s = load_more(); !s.ok()) return s;
      continue;
    }
    cursor = newline + 1;
    ++current;
  }
  buffer.erase(0, cursor);
  buffer_position += cursor;
  cursor = 0;

  std::vector<std::pair<std::size_t, std::size_t>> spans;  // (start, length) in buffer
  std::size_t bytes = 0;
  while (current < visible.offset && spans.size() < max_messages) {
    const auto newline = buffer.find('\n', cursor);
    if (newline == std::string::npos) {
      // A next line already too large for the batch is not loaded whole only to be left out.
      if (!spans.empty() && bytes + (buffer.size() - cursor) > max_bytes) break;
      if (auto s = load_more(); !s.ok()) return s;
      continue;
    }
    const std::size_t length = newline - cursor;
    if (!spans.empty() && bytes + length > max_bytes) break;
    // The index only points near the record; the line itself must confirm its offset.
    if (detail::parse_offset_prefix(std::string_view(buffer).substr(cursor, length)) != current) {
      return Status::corruption(topic_ + "/" + std::to_string(index_) + ": expected offset " +
                                std::to_string(current) + " at byte " +
                                std::to_string(buffer_position + cursor));
    }
    spans.emplace_back(cursor, length);
    bytes += length;
    cursor = newline + 1;
    ++current;
  }
  buffer.resize(cursor);
  // Loading doubles the buffer: a batch that is kept (a group's read ahead) should hold about what
  // it returns, not twice that.
  if (buffer.capacity() - buffer.size() > std::max(kReadChunkBytes, buffer.size() / 4))
    buffer.shrink_to_fit();
  // The buffer holds at least one record line, so it lives on the heap and moving the ReadBatch
  // keeps these views valid.
  auto& messages = detail::ReadBatchInternal::messages(batch);
  messages.reserve(spans.size());
  for (std::size_t i = 0; i < spans.size(); ++i) {
    messages.push_back({offset + i, std::string_view(buffer).substr(spans[i].first, spans[i].second)});
  }
  detail::ReadBatchInternal::set_next_offset(batch, current);
  return batch;
}

std::uint64_t PartitionLog::next_offset() const {
  std::lock_guard lock(mutex_);
  return visible_locked().offset;
}

std::uint64_t PartitionLog::wait_beyond(std::uint64_t offset, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mutex_);
  visible_cv_.wait_for(lock, timeout, [&] { return visible_locked().offset > offset || waits_interrupted_; });
  return visible_locked().offset;
}

void PartitionLog::interrupt_waiters() {
  std::lock_guard lock(mutex_);
  waits_interrupted_ = true;
  visible_cv_.notify_all();
}

LogPositions PartitionLog::positions() const {
  std::lock_guard lock(mutex_);
  return {appended_.position, written_.position, synced_.position};
}

}  // namespace mq

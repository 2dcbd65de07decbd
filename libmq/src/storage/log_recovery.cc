#include "storage/log_recovery.h"

#include <algorithm>
#include <cstdio>

#include "storage/record_format.h"

namespace mq::detail {
namespace {

// 64 KiB: a larger buffer is a fresh mmap (and its page faults) for every open of a segment.
constexpr std::size_t kScanChunkBytes = 64 << 10;

// Reads the file forward line by line from a position, in chunks.
class LineReader {
 public:
  LineReader(const File& file, std::uint64_t position, std::uint64_t end)
      : file_(file), buffer_position_(position), end_(end) {}

  // The next complete line (without '\n') and its position; false at the end or before a torn line.
  Status next(std::string_view& line, std::uint64_t& line_position, bool& found) {
    while (true) {
      const auto newline = buffer_.find('\n', cursor_);
      if (newline != std::string::npos) {
        line = std::string_view(buffer_).substr(cursor_, newline - cursor_);
        line_position = buffer_position_ + cursor_;
        cursor_ = newline + 1;
        found = true;
        return {};
      }
      const std::uint64_t loaded_end = buffer_position_ + buffer_.size();
      if (loaded_end >= end_) {
        found = false;
        return {};
      }
      buffer_.erase(0, cursor_);
      buffer_position_ += cursor_;
      cursor_ = 0;
      std::string chunk;
      const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(kScanChunkBytes, end_ - loaded_end));
      if (auto s = file_.read(loaded_end, want, chunk); !s.ok()) return s;
      if (chunk.empty()) {  // the file shrank under us
        found = false;
        return {};
      }
      buffer_ += chunk;
    }
  }

  // The position just after the last line returned.
  std::uint64_t position() const { return buffer_position_ + cursor_; }

 private:
  const File& file_;
  std::string buffer_;
  std::uint64_t buffer_position_;
  std::size_t cursor_ = 0;
  std::uint64_t end_;
};

// True when a record with `entry.offset` starts exactly at `entry.position`.
Result<bool> entry_matches_log(const File& log, std::uint64_t log_size, IndexEntry entry,
                               RecordValidator& validator) {
  if (entry.position > 0) {
    std::string before;
    if (auto s = log.read(entry.position - 1, 1, before); !s.ok()) return s;
    if (before != "\n") return false;
  }
  LineReader reader(log, entry.position, log_size);
  std::string_view line;
  std::uint64_t position = 0;
  bool found = false;
  if (auto s = reader.next(line, position, found); !s.ok()) return s;
  if (!found) return false;
  auto header = validator.validate(line);
  return header && header->offset == entry.offset;
}

// Scans forward from `start` and returns the end of the last complete batch; `after_damage` tells
// whether an intact record was seen after a damaged line (rather than a mere torn tail).
struct TailScan {
  std::uint64_t good_position;
  std::uint64_t good_offset;
  std::int64_t good_timestamp;  // the largest timestamp up to good_position
  std::uint64_t intact_records_after_damage = 0;
  std::vector<IndexEntry> new_entries;
};

Result<TailScan> scan_tail(const File& log, std::uint64_t log_size, IndexEntry start,
                           std::size_t index_interval_bytes, RecordValidator& validator) {
  TailScan scan{start.position, start.offset, start.timestamp, 0, {}};
  LineReader reader(log, start.position, log_size);
  std::uint64_t expected = start.offset;
  std::uint64_t last_indexed = start.position;
  IndexEntry batch_start;
  bool in_batch = false;  // inside a batch of several messages that ends at batch_last
  std::uint64_t batch_last = 0;
  bool damaged = false;
  std::int64_t largest_timestamp = start.timestamp;  // of the lines accepted so far
  while (true) {
    std::string_view line;
    std::uint64_t line_position = 0;
    bool found = false;
    if (auto s = reader.next(line, line_position, found); !s.ok()) return s;
    if (!found) break;
    auto header = validator.validate(line);
    if (!header || header->offset != expected || (in_batch && header->batch_last.value_or(0) != batch_last)) {
      damaged = true;
      break;
    }
    if (!in_batch) {
      batch_start = {expected, line_position, largest_timestamp};
      batch_last = header->batch_last.value_or(header->offset);
      in_batch = batch_last > header->offset;
    }
    // Lines are written by append_record_line, which puts the timestamp second; a line that passed
    // validation with another shape (none is written so) leaves the maximum alone.
    if (const auto timestamp = parse_timestamp_prefix(line)) {
      largest_timestamp = std::max(largest_timestamp, *timestamp);
    }
    ++expected;
    if (in_batch && header->offset < batch_last) continue;
    in_batch = false;  // the batch is complete
    if (batch_start.position > 0 && batch_start.position - last_indexed >= index_interval_bytes) {
      scan.new_entries.push_back(batch_start);
      last_indexed = batch_start.position;
    }
    scan.good_position = reader.position();
    scan.good_offset = expected;
    scan.good_timestamp = largest_timestamp;
  }
  // Intact records after a damaged line mean damage in the middle, not a crash mid-write: count
  // them all, so that the report says what the cut costs.
  while (damaged) {
    std::string_view line;
    std::uint64_t line_position = 0;
    bool found = false;
    if (auto s = reader.next(line, line_position, found); !s.ok()) return s;
    if (!found) break;
    auto header = validator.validate(line);
    if (header && header->offset >= scan.good_offset) ++scan.intact_records_after_damage;
  }
  return scan;
}

// The end of the log without the zero bytes that end it: preallocated space that no record reached
// (log_format.md "Preallocated space"). A record never holds a zero byte, so every zero after the
// last record's newline is such space, or part of a torn write.
Result<std::uint64_t> end_before_zeros(const File& log, std::uint64_t size) {
  std::string chunk;
  std::uint64_t end = size;
  // Most logs end in a record's newline: one byte tells, without reading a chunk at every open.
  if (end == 0) return end;
  if (auto s = log.read(end - 1, 1, chunk); !s.ok()) return s;
  if (chunk.size() == 1 && chunk[0] != '\0') return end;
  while (end > 0) {
    const std::uint64_t from = end - std::min<std::uint64_t>(kScanChunkBytes, end);
    if (auto s = log.read(from, static_cast<std::size_t>(end - from), chunk); !s.ok()) return s;
    const auto last = chunk.find_last_not_of('\0');
    if (last != std::string::npos) return from + last + 1;
    if (chunk.size() < end - from) return end;  // the file shrank under us: leave it to the scan
    end = from;
  }
  return end;
}

Status write_index(File& index, const std::vector<IndexEntry>& entries, bool rewrite) {
  std::string bytes;
  if (rewrite) {
    if (auto s = index.truncate(0); !s.ok()) return s;
    encode_index_header(bytes);
  }
  for (const auto& e : entries) encode_index_entry(bytes, e);
  if (bytes.empty()) return {};
  // Not synced: the index is a shortcut that every open checks against the log (and synced when
  // its partition closes); a sync here cost every group journal an fdatasync at each start.
  return index.append(bytes);
}

// Copies log bytes [from, size) to a new file at `path`, synced, before recovery cuts them.
Status keep_damaged_bytes(const File& log, std::uint64_t size, std::uint64_t from, FileSystem& fs,
                          const std::string& path) {
  if (auto s = fs.remove(path); !s.ok()) return s;
  auto copy = fs.open(path);
  if (!copy.ok()) return copy.status();
  std::string chunk;
  for (std::uint64_t position = from; position < size; position += chunk.size()) {
    const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(kScanChunkBytes, size - position));
    if (auto s = log.read(position, want, chunk); !s.ok()) return s;
    if (chunk.empty()) break;
    if (auto s = (*copy)->append(chunk); !s.ok()) return s;
  }
  return (*copy)->sync();
}

}  // namespace

void write_recovery_line(const StoreOptions& options, const std::string& line) {
  if (options.recovery_log) {
    options.recovery_log(line);
  } else {
    std::fprintf(stderr, "libmq: %s\n", line.c_str());
  }
}

Result<RecoveredLog> recover_log(File& log, File& index, const std::string& log_path, RecoveryMode mode,
                                 std::size_t index_interval_bytes, FileSystem* fs,
                                 std::uint64_t first_offset) {
  RecoveredLog recovered;
  auto log_size = log.size();
  if (!log_size.ok()) return log_size.status();
  // Preallocated space beyond the records is not damage: everything below reads the log as ending
  // before it, and it is cut (without a report) where the log is cut, or alone at the end.
  const std::uint64_t file_size = *log_size;
  auto records_end = end_before_zeros(log, file_size);
  if (!records_end.ok()) return records_end.status();
  log_size = *records_end;
  auto index_size = index.size();
  if (!index_size.ok()) return index_size.status();

  std::string index_bytes;
  if (auto s = index.read(0, static_cast<std::size_t>(*index_size), index_bytes); !s.ok()) return s;
  auto decoded = decode_index(index_bytes);
  bool rewrite_index = !decoded.has_value();
  recovered.report.index_rebuilt = !decoded.has_value() && (*log_size > 0 || *index_size > 0);
  std::vector<IndexEntry> entries = decoded.value_or(std::vector<IndexEntry>{});
  // Every entry follows the implied (first_offset, 0); an index of another start is rebuilt.
  if (!entries.empty() && entries.front().offset <= first_offset) {
    entries.clear();
    rewrite_index = true;
    recovered.report.index_rebuilt = true;
  }

  // Entries at or past the end of the log are stale (the log lost its tail): drop them, however
  // many. The last remaining one must then point at a record with its offset, or it goes too; too
  // many such mismatches and the index is rebuilt.
  while (!entries.empty() && entries.back().position >= *log_size) {
    entries.pop_back();
    rewrite_index = true;
  }
  // A torn index write leaves a partial entry: rewrite, so later entries stay aligned.
  if (*index_size > kIndexMagic.size() && (*index_size - kIndexMagic.size()) % kIndexEntryBytes != 0) {
    rewrite_index = true;
  }
  RecordValidator validator;
  int rejected = 0;
  while (!entries.empty()) {
    auto matches = entry_matches_log(log, *log_size, entries.back(), validator);
    if (!matches.ok()) return matches.status();
    if (*matches) break;
    entries.pop_back();
    rewrite_index = true;
    if (++rejected > 16) {
      entries.clear();
      recovered.report.index_rebuilt = true;
    }
  }

  const IndexEntry start = entries.empty() ? IndexEntry{first_offset, 0, kNoTimestamp} : entries.back();
  auto scan = scan_tail(log, *log_size, start, index_interval_bytes, validator);
  if (!scan.ok()) return scan.status();
  recovered.report.scanned_bytes = *log_size - start.position;

  if (scan->good_position < *log_size) {
    recovered.report.truncated_bytes = *log_size - scan->good_position;
    recovered.report.intact_records_after_damage = scan->intact_records_after_damage > 0;
    recovered.report.intact_records_dropped = scan->intact_records_after_damage;
    recovered.report.damage_position = scan->good_position;
    recovered.report.damage_offset = scan->good_offset;
    if (mode == RecoveryMode::kStrict && scan->intact_records_after_damage > 0) {
      return Status::corruption(log_path + ": damaged record at byte " + std::to_string(scan->good_position) +
                                " is followed by intact records; refusing to open in strict recovery mode");
    }
    if (fs != nullptr && scan->intact_records_after_damage > 0) {
      const std::string kept = log_path + ".damaged-" + std::to_string(scan->good_offset);
      if (auto s = keep_damaged_bytes(log, *log_size, scan->good_position, *fs, kept); !s.ok()) {
        return Status(s.code(), "cannot keep the damaged part of " + log_path + " in " + kept +
                                    " before cutting it: " + s.message());
      }
      recovered.report.damaged_bytes_kept_in = kept;
    }
    if (auto s = log.truncate(scan->good_position); !s.ok()) return s;
    if (auto s = log.sync(); !s.ok()) return s;
  } else if (file_size > *log_size) {
    // Only preallocated zeros: cut, unsynced (if that is lost, the next open cuts them again).
    if (auto s = log.truncate(*log_size); !s.ok()) return s;
  }

  std::vector<IndexEntry> to_write = rewrite_index ? entries : std::vector<IndexEntry>{};
  to_write.insert(to_write.end(), scan->new_entries.begin(), scan->new_entries.end());
  // The index is a shortcut that the next open can rebuild: failing to write it (a full disk) must
  // not keep the log from opening.
  recovered.report.index_write_failed = !write_index(index, to_write, rewrite_index || *index_size == 0).ok();
  recovered.index_written = !to_write.empty() || rewrite_index || *index_size == 0;

  recovered.end_position = scan->good_position;
  recovered.next_offset = scan->good_offset;
  recovered.largest_timestamp = scan->good_timestamp;
  recovered.index.reserve(entries.size() + scan->new_entries.size() + 1);
  recovered.index.push_back({first_offset, 0, kNoTimestamp});
  recovered.index.insert(recovered.index.end(), entries.begin(), entries.end());
  recovered.index.insert(recovered.index.end(), scan->new_entries.begin(), scan->new_entries.end());
  return recovered;
}

}  // namespace mq::detail

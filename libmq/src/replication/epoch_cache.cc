#include "replication/epoch_cache.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <utility>

#include "storage/file_replace.h"

namespace mq::replication {
namespace {

// An epoch cache file is a few lines per leader change; anything this large is not one.
constexpr std::uint64_t kMaxFileBytes = 16u << 20;

Result<std::vector<EpochCache::Entry>> parse(const std::string& path, const std::string& text) {
  std::vector<EpochCache::Entry> entries;
  std::size_t line_start = 0;
  while (line_start < text.size()) {
    const std::size_t line_end = text.find('\n', line_start);
    if (line_end == std::string::npos)
      return Status::corruption(path +
                                ": the last line has no newline (the file is replaced whole: not ours?)");
    const std::string_view line(text.data() + line_start, line_end - line_start);
    line_start = line_end + 1;
    const auto json = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    const auto epoch = json.is_object() ? json.find("epoch") : json.end();
    const auto start = json.is_object() ? json.find("start") : json.end();
    if (!json.is_object() || json.size() != 2 || epoch == json.end() || start == json.end() ||
        !epoch->is_number_unsigned() || !start->is_number_unsigned()) {
      return Status::corruption(path + ": not an epoch entry: " + std::string(line.substr(0, 200)));
    }
    EpochCache::Entry entry{epoch->get<std::uint64_t>(), start->get<std::uint64_t>()};
    if (!entries.empty() && (entry.epoch <= entries.back().epoch || entry.start < entries.back().start))
      return Status::corruption(path + ": epochs and starts are not ascending at epoch " +
                                std::to_string(entry.epoch));
    entries.push_back(entry);
  }
  return entries;
}

}  // namespace

EpochCache::EpochCache(FileSystem& fs, std::string dir, std::string name, std::vector<Entry> entries)
    : fs_(&fs), dir_(std::move(dir)), name_(std::move(name)), entries_(std::move(entries)) {}

Result<EpochCache> EpochCache::open(FileSystem& fs, std::string dir, std::string name) {
  const std::string path = dir + "/" + name;
  if (!fs.exists(path)) return EpochCache(fs, std::move(dir), std::move(name), {});
  auto file = fs.open(path);
  if (!file.ok()) return file.status();
  auto size = (*file)->size();
  if (!size.ok()) return size.status();
  if (*size > kMaxFileBytes) return Status::corruption(path + ": larger than any epoch cache");
  std::string text;
  if (auto s = (*file)->read(0, static_cast<std::size_t>(*size), text); !s.ok()) return s;
  auto entries = parse(path, text);
  if (!entries.ok()) return entries.status();
  return EpochCache(fs, std::move(dir), std::move(name), std::move(*entries));
}

Status EpochCache::write(const std::vector<Entry>& entries) {
  std::string text;
  for (const auto& e : entries)
    text += R"({"epoch":)" + std::to_string(e.epoch) + R"(,"start":)" + std::to_string(e.start) + "}\n";
  if (auto s = detail::replace_file(*fs_, dir_, name_, text, /*durable=*/true); !s.ok()) return s;
  entries_ = entries;
  return {};
}

Status EpochCache::assign(std::uint64_t epoch, std::uint64_t start) {
  std::vector<Entry> next = entries_;
  if (!next.empty()) {
    const Entry& last = next.back();
    if (epoch == last.epoch && start == last.start) return {};
    if (epoch <= last.epoch)
      return Status::invalid_argument("epoch " + std::to_string(epoch) + " is not newer than epoch " +
                                      std::to_string(last.epoch));
    if (start < last.start)
      return Status::invalid_argument("epoch " + std::to_string(epoch) + " would start at " +
                                      std::to_string(start) + ", before epoch " + std::to_string(last.epoch) +
                                      " (at " + std::to_string(last.start) + ")");
    // No line was written in the newest epoch: the newer one takes its place (as Kafka's cache does),
    // so that every entry covers at least one line or is the newest.
    if (start == last.start) next.pop_back();
  }
  next.push_back({epoch, start});
  return write(next);
}

Status EpochCache::truncate_from(std::uint64_t offset) {
  std::vector<Entry> next = entries_;
  std::erase_if(next, [offset](const Entry& e) { return e.start >= offset; });
  if (next.size() == entries_.size()) return {};
  return write(next);
}

EpochCache::EpochEnd EpochCache::end_of(std::uint64_t epoch, std::uint64_t log_end) const {
  if (entries_.empty()) return {epoch, log_end};
  // The first entry newer than `epoch`: the lines of every epoch up to `epoch` end where it starts.
  const auto newer = std::upper_bound(entries_.begin(), entries_.end(), epoch,
                                      [](std::uint64_t e, const Entry& entry) { return e < entry.epoch; });
  if (newer == entries_.begin()) return {epoch, entries_.front().start};
  const std::uint64_t found = std::prev(newer)->epoch;
  return {found, newer == entries_.end() ? log_end : newer->start};
}

std::optional<EpochCache::Entry> EpochCache::newest() const {
  if (entries_.empty()) return std::nullopt;
  return entries_.back();
}

std::vector<EpochCache::Entry> EpochCache::entries_from(std::uint64_t offset) const {
  auto later = std::upper_bound(entries_.begin(), entries_.end(), offset,
                                [](std::uint64_t o, const Entry& e) { return o < e.start; });
  if (later != entries_.begin()) --later;  // the one `offset` falls in
  return {later, entries_.end()};
}

}  // namespace mq::replication

#include "mq/partition.h"

#include <algorithm>

#include "storage/segmented_log.h"

namespace mq {

Partition::Partition(std::unique_ptr<detail::SegmentedLog> log) : log_(std::move(log)) {}
Partition::~Partition() = default;

const std::string& Partition::topic() const { return log_->topic(); }
std::uint32_t Partition::index() const { return log_->index(); }
Result<std::uint64_t> Partition::append(std::span<const Message> batch) { return log_->append(batch); }

Result<AppendResult> Partition::append_messages(std::span<const Message> batch) {
  AppendResult result;
  auto first = log_->append(batch, &result);
  if (!first.ok()) return first.status();
  return result;
}
Result<ReadBatch> Partition::read(std::uint64_t offset, std::size_t max_messages,
                                  std::size_t max_bytes) const {
  return log_->read(offset, max_messages, max_bytes);
}
std::uint64_t Partition::next_offset() const { return log_->next_offset(); }
std::uint64_t Partition::wait_beyond(std::uint64_t offset, std::chrono::milliseconds timeout) const {
  return log_->wait_beyond(offset, timeout);
}
void Partition::interrupt_waiters() { log_->interrupt_waiters(); }
std::uint64_t Partition::log_start_offset() const { return log_->log_start_offset(); }
std::size_t Partition::segment_count() const { return log_->segment_count(); }
std::uint64_t Partition::log_bytes() const { return log_->log_bytes(); }
LogPositions Partition::positions() const { return log_->positions(); }
const RecoveryReport& Partition::recovery_report() const { return log_->recovery_report(); }
Status Partition::sync() { return log_->sync(); }
Result<std::uint64_t> Partition::offset_for_time(std::int64_t timestamp_ms) const {
  auto offset = log_->offset_for_time(timestamp_ms);
  if (!offset.ok()) return offset;
  return std::min(*offset, log_->next_offset());  // what readers see: a read limit counts
}
Result<std::uint64_t> Partition::append_copied(std::string lines, std::uint64_t first_offset) {
  auto copied = detail::check_copied_lines(std::move(lines), first_offset);
  if (!copied.ok()) return copied.status();
  if (copied->count == 0) return log_end_offset();
  return log_->append_copied(*copied);
}
Status Partition::truncate_to(std::uint64_t offset) { return log_->truncate_to(offset); }
void Partition::set_read_limit(std::optional<std::uint64_t> limit) { log_->set_read_limit(limit); }
std::uint64_t Partition::log_end_offset() const { return log_->log_end_offset(); }
Result<ReadBatch> Partition::read_past_limit(std::uint64_t offset, std::size_t max_messages,
                                             std::size_t max_bytes) const {
  return log_->read_past_limit(offset, max_messages, max_bytes);
}
std::uint64_t Partition::wait_beyond_end(std::uint64_t offset, std::chrono::milliseconds timeout) const {
  return log_->wait_beyond_end(offset, timeout);
}
Status Partition::reset_to(std::uint64_t offset) { return log_->reset_to(offset); }
Result<std::uint64_t> Partition::apply_retention(const RetentionRule& rule) {
  return log_->apply_retention(rule);
}

}  // namespace mq

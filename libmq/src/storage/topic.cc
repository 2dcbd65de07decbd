#include "mq/topic.h"

#include "common/names.h"

namespace mq {

std::int32_t murmur2(std::string_view bytes) {
  // Unsigned arithmetic gives Java's wrapping int semantics without signed overflow.
  constexpr std::uint32_t kSeed = 0x9747b28c;
  constexpr std::uint32_t kM = 0x5bd1e995;
  constexpr int kR = 24;
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  const std::size_t length = bytes.size();
  std::uint32_t h = kSeed ^ static_cast<std::uint32_t>(length);
  for (std::size_t i = 0; i + 4 <= length; i += 4) {
    std::uint32_t k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (std::uint32_t{data[i + 3]} << 24);
    k *= kM;
    k ^= k >> kR;
    k *= kM;
    h *= kM;
    h ^= k;
  }
  const std::size_t tail = length & ~std::size_t{3};
  switch (length % 4) {
    case 3:
      h ^= std::uint32_t{data[tail + 2]} << 16;
      [[fallthrough]];
    case 2:
      h ^= std::uint32_t{data[tail + 1]} << 8;
      [[fallthrough]];
    case 1:
      h ^= data[tail];
      h *= kM;
  }
  h ^= h >> 13;
  h *= kM;
  h ^= h >> 15;
  return static_cast<std::int32_t>(h);
}

std::optional<std::string_view> partition_key(const Message& message) {
  if (message.key) return std::string_view(*message.key);
  if (message.dedup_id) return std::string_view(*message.dedup_id);
  return std::nullopt;
}

std::optional<std::string_view> partition_key(std::span<const Message> batch) {
  if (batch.empty()) return std::nullopt;
  if (batch.front().key) return std::string_view(*batch.front().key);
  for (const Message& m : batch) {
    if (m.dedup_id) return std::string_view(*m.dedup_id);
  }
  return std::nullopt;
}

std::uint32_t partition_for_key(std::string_view key, std::uint32_t partitions) {
  const auto positive = static_cast<std::uint32_t>(murmur2(key)) & 0x7fffffffu;
  return positive % partitions;
}

Topic::Topic(std::string name, std::vector<Partition*> partitions)
    : name_(std::move(name)), partitions_(std::move(partitions)) {}

Result<std::unique_ptr<Topic>> Topic::open(LogStore& store, const TopicSpec& spec, BrokerIdentity broker) {
  if (!is_valid_name(spec.name)) {
    return detail::invalid_name("topic name", spec.name);
  }
  if (spec.partitions == 0)
    return Status::invalid_argument("topic '" + spec.name + "' needs at least one partition");
  const auto on_disk = store.partitions_on_disk(spec.name);
  if (!on_disk.ok()) return on_disk.status();
  if (*on_disk > spec.partitions) {
    return Status::invalid_argument("topic '" + spec.name + "' has " + std::to_string(*on_disk) +
                                    " partitions on disk but is configured with " +
                                    std::to_string(spec.partitions) + "; fewer would orphan data");
  }
  std::vector<Partition*> partitions(spec.partitions, nullptr);
  for (std::uint32_t p = 0; p < spec.partitions; ++p) {
    if (!broker.hosts(p)) continue;
    auto partition = store.partition(spec.name, p, spec.settings);
    if (!partition.ok()) return partition.status();
    partitions[p] = *partition;
  }
  return std::unique_ptr<Topic>(new Topic(spec.name, std::move(partitions)));
}

std::vector<std::uint32_t> Topic::owned_partitions() const {
  std::vector<std::uint32_t> owned;
  for (std::uint32_t p = 0; p < partitions_.size(); ++p) {
    if (partitions_[p] != nullptr) owned.push_back(p);
  }
  return owned;
}

Partition* Topic::partition(std::uint32_t index) const {
  return index < partitions_.size() ? partitions_[index] : nullptr;
}

}  // namespace mq

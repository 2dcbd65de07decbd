// Plain option structs with defaults, and the environment parser that fills them.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mq/export.h"
#include "mq/status.h"

namespace mq {

class FileSystem;

// When an append (and an ack) counts as durable.
enum class FsyncMode {
  kAlways,    // group commit: answered only after an fdatasync that covers its bytes
  kInterval,  // written before the answer; synced every fsync_interval in the background
  kNever,     // written before the answer (survives a killed process); synced only on close
};

// What opening a log does about damage found after its last index checkpoint.
enum class RecoveryMode {
  kTolerateTornTail,  // cut the log at the first damaged line: a crash mid-write leaves exactly that
  kStrict,            // cut a torn tail, but refuse to open when intact records follow the damage
};

struct StoreOptions {
  // Root directory; one log per partition at <data_dir>/<topic>/partition-<N>.log.
  std::string data_dir = "./data";
  // Durability of appends.
  FsyncMode fsync = FsyncMode::kAlways;
  // Period of the background sync with FsyncMode::kInterval.
  std::chrono::milliseconds fsync_interval{100};
  // What recovery does about damage in a log.
  RecoveryMode recovery = RecoveryMode::kTolerateTornTail;
  // A partition's active segment rolls into a sealed one once it holds this many bytes
  // (SEGMENT_BYTES; libmq/docs/log_format.md "Segments").
  std::uint64_t segment_bytes = 128ull << 20;
  // Bytes of log between two entries of the sparse offset index (smaller: faster seeks, larger index).
  std::size_t index_interval_bytes = 4096;
  // With FsyncMode kAlways or kInterval, a log's file is extended ahead of its appends by this many
  // bytes that read as zero (fallocate), so that the fdatasync after an append commits no change of
  // file size: a quarter less time and a third less CPU per sync on ext4 (libmq/docs/log_format.md
  // "Preallocated space"). Group journals use 64 KiB at most. 0: never.
  std::uint64_t preallocate_bytes = 1 << 20;
  // Largest accepted payload (minified JSON bytes).
  std::size_t max_payload_bytes = 1 << 20;
  // How long a partition remembers a stored Message::dedup_id (DEDUP_WINDOW_MS, as NATS
  // JetStream's duplicate window): a message with an id stored this recently is not stored again.
  // Found again at open by reading the partition's last `dedup_window` of log. 0: no deduplication.
  std::chrono::milliseconds dedup_window{120000};
  // The file layer; nullptr means the real POSIX one. Tests inject faults through it.
  std::shared_ptr<FileSystem> file_system;
  // Receives one line for every log that recovery had to cut (how many bytes from where, how many
  // intact records went with them); nullptr writes the line to stderr. Never silent.
  std::function<void(const std::string& line)> recovery_log;
};

// What a TOPICS entry may set for its topic alone (name:partitions[:setting=value]...), overriding
// StoreOptions and RetentionOptions; unset: the global value.
struct TopicSettings {
  std::optional<std::uint64_t> segment_bytes;               // segment_bytes
  std::optional<std::uint64_t> retention_bytes;             // retention_bytes
  std::optional<std::chrono::milliseconds> retention_time;  // retention_ms
  std::optional<bool> retention_acked;                      // retention_acked
};

struct TopicSpec {
  std::string name;          // valid per is_valid_name()
  std::uint32_t partitions;  // at least 1
  TopicSettings settings = {};
};

// How long partitions keep their messages (libmq/docs/log_format.md "Segments"). Whole sealed
// segments are deleted, oldest first, never the active one. The defaults keep everything.
struct RetentionOptions {
  std::uint64_t bytes = 0;            // RETENTION_BYTES: per partition; 0: no limit
  std::chrono::milliseconds time{0};  // RETENTION_MS: a segment whose newest message is older; 0: no limit
  bool acked = false;                 // RETENTION_ACKED: once every group committed past a segment
  std::chrono::milliseconds check_interval{1000};  // RETENTION_CHECK_MS
};

// The partitions this process serves: partition p is ours when p % count == index. With replicated
// partitions (libmq/docs/replication.md), it also keeps a copy of p when it is one of p's `replicas`
// brokers (p + i) % count, i < replicas; which copy leads is decided at run time.
struct BrokerIdentity {
  std::uint32_t index = 0;
  std::uint32_t count = 1;
  std::uint32_t replicas = 1;
  bool owns(std::uint32_t partition) const { return partition % count == index; }
  bool hosts(std::uint32_t partition) const { return (index + count - partition % count) % count < replicas; }
};

// Consumer-group behaviour.
struct GroupOptions {
  // How long a delivered message may stay unacknowledged before it is delivered again, unless the
  // subscription sets its own.
  std::chrono::milliseconds visibility_timeout{30000};
  // A message whose this-many-th delivery ends without an ack goes to <topic>-dlq; 0: no limit.
  std::uint32_t max_deliveries = 0;
  // The acknowledgements of every group and partition share group commits in one log, which is
  // folded into the groups' own journals once it holds this many bytes (libmq/docs/log_format.md
  // "The shared acknowledgement log"). Larger: fewer bursts of journal syncs, a longer start.
  std::uint64_t ack_log_checkpoint_bytes = 8 << 20;
  // Never-delivered messages a group holds back on one partition, each tracked in memory (about 190
  // bytes, measured with 100,000 delayed ones): delayed ones not yet due, and with ordering=key those behind
  // an earlier message of their key. 0 (the default): no limit, so memory grows with such a backlog. With a
  // limit, a group that reaches it reads no further into the partition (messages after them wait too, which
  // API.md does not allow for delayed messages) until some of them go: for bounded memory at that price.
  std::size_t max_held_messages = 0;
};

// Everything the environment configures for the library.
struct Config {
  StoreOptions store;
  RetentionOptions retention;
  BrokerIdentity broker;
  std::vector<TopicSpec> topics{{"events", 8}, {"orders", 4}, {"default", 8}};
  GroupOptions groups;
};

// Looks an environment variable up; std::nullopt when it is unset.
using EnvLookup = std::function<std::optional<std::string>(std::string_view name)>;
// The process environment (getenv), as an EnvLookup.
MQ_EXPORT std::optional<std::string> process_environment(std::string_view name);

// The machine's host name; std::nullopt when it cannot be read.
using HostNameLookup = std::function<std::optional<std::string>()>;
MQ_EXPORT std::optional<std::string> system_host_name();

// Reads TOPICS, DATA_DIR, BROKER_INDEX, BROKER_COUNT, FSYNC, FSYNC_INTERVAL_MS, MAX_PAYLOAD_BYTES,
// VISIBILITY_TIMEOUT_MS and MAX_DELIVERIES through `lookup`; unset variables keep their defaults. A bad value
// gives kInvalidArgument whose message names the variable and quotes the value. BROKER_INDEX=auto takes
// broker_index_from_host_name(host_name()) (`host_name` empty: system_host_name).
MQ_EXPORT Result<Config> config_from_env(const EnvLookup& lookup, const HostNameLookup& host_name = {});

// The number after the last '-' of the host name's first label: "mq-2" -> 2 (Kubernetes StatefulSet
// pods are "<set>-<ordinal>"). kInvalidArgument when there is none.
MQ_EXPORT Result<std::uint32_t> broker_index_from_host_name(std::optional<std::string> host_name);

// Parses a TOPICS value ("events:8,orders:4:retention_ms=86400000"): names valid and unique,
// partitions in [1, 65536], then optional settings (TopicSettings) each once at most.
MQ_EXPORT Result<std::vector<TopicSpec>> parse_topics(std::string_view value);

// True when `name` can name a topic or group: ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$. Such a name can
// never form a path outside the data directory.
MQ_EXPORT bool is_valid_name(std::string_view name);

}  // namespace mq

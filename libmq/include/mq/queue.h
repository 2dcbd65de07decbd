// The client side: one Queue interface for services, with three backends behind it — in-process
// (a Broker in the same program), HTTP (one or more mqd brokers) and Redis Streams — and
// Queue::from_env(), which picks HTTP or Redis from the environment (USE_HTTP_QUEUE).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mq/broker.h"          // ReadFrom
#include "mq/consumer_group.h"  // SeekTarget
#include "mq/export.h"
#include "mq/message.h"
#include "mq/options.h"
#include "mq/status.h"

namespace mq {

namespace detail {
class ProduceBatcher;
}  // namespace detail

// ReceivedMessage::offset of a message that has none: a Redis stream entry written by another client.
inline constexpr std::uint64_t kNoOffset = UINT64_MAX;

// One delivery of a message to a consumer. Copyable. Hand it back to Queue::ack, nack or touch.
// Queue::read returns messages in it too, with `group` empty and `delivery` 0 (not deliveries).
struct ReceivedMessage {
  std::string topic;
  std::string group;  // the group it was delivered to
  std::uint32_t partition = 0;
  // The message's position in its partition: 0, 1, 2, ... (on Redis: from the producer's counter,
  // see README "Redis Streams backend"; kNoOffset for entries other Redis clients wrote).
  std::uint64_t offset = 0;
  // Opaque, unique within the partition (on Redis: the stream entry id, which another partition's
  // stream may repeat): (topic, partition, id) names a message.
  std::string id;
  std::uint32_t delivery = 1;     // 1 on the first delivery, counting up on each redelivery
  std::int64_t timestamp_ms = 0;  // when it was produced (ms since the Unix epoch)
  std::optional<std::string> key;
  std::string payload;  // the JSON value as produced, minified
  // The message's headers as produced, in order (on Redis: its "header:<name>" fields).
  std::vector<std::pair<std::string, std::string>> headers;
  // When a delayed message became due (ms since the epoch); nullopt for one due when stored.
  std::optional<std::int64_t> deliver_at_ms;
};

// One page of a partition read without a group (Queue::read). Copyable.
struct ReadPage {
  std::uint64_t log_start_offset = 0;  // the first offset still stored (retention deletes below it)
  std::uint64_t next_offset = 0;       // the offset the next message produced to the partition gets
  // In offset order. Each has `group` empty and `delivery` 0: it was read, not delivered, so there
  // is nothing to ack, nack or touch. The next page starts at messages.back().offset + 1; an empty
  // page means nothing is stored from the requested position on.
  std::vector<ReceivedMessage> messages;
};

// A consumer of a topic: SubscribeOptions (visibility_timeout, max_inflight per partition, from)
// for each partition it consumes, and which group, name and partitions.
struct ConsumeOptions : SubscribeOptions {
  // The consumer group (required; is_valid_name()). Every group gets every message; the consumers
  // of one group share them.
  std::string group;
  // This consumer's name within the group. Redis keeps a pending-entries list per name; the other
  // backends do not need one. Empty: "<host name>-<process id>".
  std::string consumer_name;
  // The partitions to consume; empty means every partition of the topic.
  std::vector<std::uint32_t> partitions;
};

// A consumer of one topic in one group. receive() is for one thread at a time; destroying the
// Consumer gives its unacknowledged messages back to the group for redelivery (on Redis within
// 1 s; what is not handed back by then comes back after the visibility timeout). An HTTP consumer
// of every partition also reads partitions added to the topic later (mqd restarted with more).
class MQ_EXPORT Consumer {
 public:
  virtual ~Consumer() = default;
  // Waits up to `timeout` for messages and returns between 1 and `max_messages` (at least 1, else
  // kInvalidArgument) of them, or none when the timeout passes. A message received is in flight:
  // one held here unread past its visibility timeout is dropped (the group gets it again). Redeliveries come
  // before new messages of a partition. Fails on what retrying cannot fix (unknown topic, refused
  // credentials, HTTP brokers that keep sending the partition elsewhere: kNotOwned) and with
  // kShuttingDown when an in-process broker stops; an unreachable or stalled server is retried in
  // the background (HTTP, Redis) and only shows as no messages. Returns within `timeout`, plus at
  // most 0.5 s on Redis (a command that takes longer drops the connection).
  virtual Result<std::vector<ReceivedMessage>> receive(std::size_t max_messages,
                                                       std::chrono::milliseconds timeout) = 0;
};

// How a Queue batches the messages handed to produce_async and to the single-message produce (like
// Kafka's producer: batch.size, linger.ms, max.in.flight.requests.per.connection, buffer.memory).
// The defaults were chosen by measurement (README "Performance"): with linger 0 nothing waits that
// need not, and batches still grow with load, because the messages that arrive while a
// partition's batch is being stored go together as its next batch.
struct ProducerOptions {
  // How long a message may wait for more to join its batch before the batch is sent (linger.ms).
  // 0: sent as soon as its partition has no batch in flight.
  std::chrono::microseconds linger{0};
  // A batch holds at most this many messages ...
  std::size_t batch_max_messages = 1000;
  // ... and about this many bytes (payloads and keys; a bigger message goes alone). Keep it under
  // mqd's MAX_BODY_BYTES.
  std::size_t batch_max_bytes = 1u << 20;
  // Batches of one topic's keyless messages in flight at once (each partition's batches go one at
  // a time, so that they are stored in the order they were handed in).
  std::size_t max_in_flight = 1;
  // Batches in flight at once in all: the producer's sender threads (started by the first message).
  std::size_t max_requests = 8;
  // produce_async blocks while this many messages are handed in and not yet answered.
  std::size_t max_buffered_messages = 100000;
};

// Talks to one or more mqd brokers (routes: docs/http-api.md; README "Using mqd over HTTP").
struct HttpQueueOptions {
  // Base URLs ("http://host:port", or "https://host:port" for brokers started with TLS_CERT_FILE)
  // of the brokers. One is enough when the brokers are started with
  // BROKER_ADDRS and this client can reach those addresses: /topics names every broker. Where it
  // cannot (compose service names seen from the host), list every broker by an address it can
  // reach; a broker unreachable at its BROKER_ADDRS entry is then used at the one listed here.
  std::vector<std::string> addrs{"http://127.0.0.1:8080"};
  // Sent as "Authorization: Bearer <token>" when not empty (mqd's AUTH_TOKEN).
  std::string auth_token;
  // For https brokers: a PEM file of the certificate authorities to verify them with; empty: the
  // system's CAs. The server's certificate must name the host of its URL either way.
  std::string ca_file;
  // The brokers' map (/topics: partition counts, owners, mqd's VISIBILITY_TIMEOUT_MS) is read again
  // at least this often, besides on a 404 or 421, so that partitions added to a topic by a restart
  // are used (like Kafka's metadata.max.age.ms).
  std::chrono::milliseconds metadata_max_age{30000};
  std::chrono::milliseconds connect_timeout{2000};
  // How long a produce, ack, nack or touch may wait for its answer.
  std::chrono::milliseconds request_timeout{30000};
  // Silence after which an event stream counts as dead and is reconnected; must exceed mqd's
  // HEARTBEAT_MS (15000 by default).
  std::chrono::milliseconds stream_read_timeout{45000};
  // Reconnecting a dropped event stream waits this long, doubling up to reconnect_backoff_max.
  std::chrono::milliseconds reconnect_backoff_min{50};
  std::chrono::milliseconds reconnect_backoff_max{5000};
  // With replicated brokers: every produced message without a dedup_id gets one of this queue's
  // own ("mq-q<16 hex digits>-<n>": a random prefix per queue, then a count), so that a produce
  // whose answer was lost or said "outcome unknown" is sent again without storing anything twice
  // (see kIOError below). Off by default: each id takes room in its partition's dedup window for
  // DEDUP_WINDOW_MS (48 to 96 bytes an id: a million take 48 MiB). A message keeps a dedup_id it has.
  // Retries (and these ids) happen only when every broker's /topics reports a dedup window of at
  // least 30 s: with a shorter one a retry could store a message twice.
  bool idempotent_produce = false;
  ProducerOptions producer;
};

// Talks to Redis (7.0 or newer) through hiredis. Topic T's partition p is the stream key "T:p"
// (see README "Redis Streams backend").
struct RedisQueueOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 6379;
  std::string username;  // with a password: AUTH <username> <password> (Redis ACL users)
  std::string password;  // AUTH when not empty
  std::uint32_t db = 0;  // SELECT when not 0
  // Streams per topic. Producers and consumers of a topic must agree on it.
  std::uint32_t partitions = 1;
  std::chrono::milliseconds connect_timeout{2000};
  // How long a produce, ack, nack or touch may wait for Redis's answer (then kIOError: it may have
  // been carried out). Consumer::receive is bounded by its own timeout instead.
  std::chrono::milliseconds request_timeout{30000};
  // The default visibility timeout of consumers (ConsumeOptions::visibility_timeout wins).
  std::chrono::milliseconds visibility_timeout{30000};
  // How long a produced Message::dedup_id is remembered (mqd's DEDUP_WINDOW_MS).
  std::chrono::milliseconds dedup_window{120000};
  ProducerOptions producer;
};

// What the environment configures (see Queue::from_env).
struct QueueSettings {
  enum class Backend { kHttp, kRedis };
  Backend backend = Backend::kRedis;
  HttpQueueOptions http;
  RedisQueueOptions redis;
  std::string topic = "events";   // MSG_QUEUE_TOPIC
  std::string group = "default";  // MSG_QUEUE_GROUP
  std::string producer_name;      // MSG_QUEUE_PRODUCER_NAME, also the consumer's name
};

// Reads USE_HTTP_QUEUE (true/1/yes/on: HTTP; false/0/no/off, empty or unset: Redis; anything else
// is an error), MSG_QUEUE_ADDR (comma-separated base URLs; may be empty when Redis is chosen),
// MSG_QUEUE_CA_FILE (PEM CAs for https brokers; default: the system's), MSG_QUEUE_TOPIC,
// MSG_QUEUE_GROUP, MSG_QUEUE_PRODUCER_NAME (default "<host name>-<process id>"), MSG_QUEUE_TOKEN
// (mqd's AUTH_TOKEN), MSG_QUEUE_PARTITIONS (Redis streams per topic, default 1: Redis keeps no
// partition count, so every producer and consumer of a topic must be given the same one; mqd's
// topics have their own, e.g. `events` has 8, and the HTTP backend ignores this variable), and for
// Redis REDIS_URL ("redis://[[user]:password@]host[:port][/db]", user and password
// percent-decoded, an IPv6 host in brackets; wins) or REDIS_ADDR ("host:port", "[v6]:port" or a
// host alone, "::1" included; default 127.0.0.1:6379), and for the producer of either backend
// (ProducerOptions) MSG_QUEUE_LINGER_MS (0 to 60000), MSG_QUEUE_BATCH_MAX_MESSAGES (1 to 100000) and
// MSG_QUEUE_BATCH_MAX_BYTES (1 to 8 MiB, half of mqd's default MAX_BODY_BYTES), the library's
// defaults when unset. Blanks (spaces, tabs, CR)
// around values are ignored, except in MSG_QUEUE_TOKEN and MSG_QUEUE_CA_FILE. kInvalidArgument naming the
// variable and quoting the value when one is bad.
MQ_EXPORT Result<QueueSettings> queue_settings_from_env(const EnvLookup& lookup);

class Queue;

// A queue opened from the environment, with the settings that chose it.
struct QueueFromEnv {
  QueueSettings settings;
  std::unique_ptr<Queue> queue;
};

// Thread-safe: produce, ack, nack, touch, read and seek may be called from any number of threads.
// Creating a queue does not contact a server; the first call that needs one does, and an
// unreachable one fails that call with kUnavailable (the next call tries again).
//
// Which failures are safe to retry (HTTP and Redis backends):
//   kUnavailable   nothing was done: the server could not be reached, nothing of the request was
//                  sent, or the server refused it before storing anything (mqd shutting down, at
//                  MAX_CONNECTIONS, a partition refusing writes after a failed fsync; Redis
//                  LOADING, BUSY, OOM, ...). Retry, with a backoff.
//   kNoSpace       (mqd, in-process) the disk is full: nothing was stored. Retrying works once
//                  there is room again.
//   kIOError       the request went out and its outcome is unknown (the connection broke or timed
//                  out waiting for the answer, or mqd's fdatasync failed after the write): it may
//                  have been carried out. Retrying a produce may store it twice (at-least-once)
//                  unless every message has a dedup_id (then a retry within the brokers'
//                  DEDUP_WINDOW_MS stores none twice; with replicated mqd brokers the HTTP queue
//                  does that retry itself, for up to 15 s, and still answers kIOError when it
//                  gives up); ack, nack, touch, read and seek may be retried.
//   kNotOwned      (HTTP) brokers that send requests for a partition back and forth or to
//                  themselves (BROKER_ADDRS not in BROKER_INDEX order): a configuration error,
//                  the message names the URLs. (A single 421 is followed inside the call.)
//   anything else  retrying the same request gives the same answer (kInvalidArgument, kNotFound,
//                  kConflict, kPayloadTooLarge, kUnauthenticated).
class MQ_EXPORT Queue {
 public:
  virtual ~Queue() = default;
  Queue(const Queue&) = delete;
  Queue& operator=(const Queue&) = delete;

  // A queue on `broker`, in this process. Every Consumer must be destroyed before the broker, and
  // the queue too when it produced asynchronously. Invalid `producer` options fail every
  // produce_async and single-message produce with kInvalidArgument.
  static std::unique_ptr<Queue> in_process(std::shared_ptr<Broker> broker, ProducerOptions producer = {});
  // A queue on mqd brokers; kInvalidArgument for an address that is not "http[s]://host:port",
  // a CA file that cannot be read, or invalid producer options.
  static Result<std::unique_ptr<Queue>> http(HttpQueueOptions options);
  // A queue on Redis Streams; kInvalidArgument for bad options.
  static Result<std::unique_ptr<Queue>> redis(RedisQueueOptions options);
  // The queue `settings` describe.
  static Result<std::unique_ptr<Queue>> open(const QueueSettings& settings);
  // queue_settings_from_env(lookup), then open().
  static Result<QueueFromEnv> from_env(const EnvLookup& lookup = process_environment);

  // Appends `messages` atomically to one partition of `topic`: `partition` if given, else the one
  // the first message's key maps to (Kafka's murmur2 partitioner, the same on every backend), else
  // one the queue picks: like Kafka's sticky partitioner, a run of calls goes to one partition
  // before the next takes its turn, so that concurrent producers share its group commit (the Redis
  // backend, with one append-only file, takes the partitions in turn). Durable (per the server's
  // fsync setting) when it returns.
  virtual Result<ProduceResult> produce(std::string_view topic, std::span<const Message> messages,
                                        std::optional<std::uint32_t> partition = std::nullopt) = 0;
  // One message, sent in a batch with the messages other threads hand to produce_async or to this
  // produce at the same time (see ProducerOptions): returns when the message is durable, with its
  // own partition, offset and id. A message refused alone (too large, a bad key) fails alone.
  Result<ProduceResult> produce(std::string_view topic, const Message& message,
                                std::optional<std::uint32_t> partition = std::nullopt);

  // Called once with a message's result: its partition, offset and id (ProduceResult with one id)
  // once it is durable, or the error of its batch. Runs on one of the queue's sender threads (an
  // error found before sending, such as an unknown topic's key partition or invalid
  // ProducerOptions, is answered at once on the calling thread): it must be quick and must not
  // wait for other messages, so never call the single-message produce (which waits) from it. It
  // may call produce_async (that never waits for room there). An empty callback is allowed; what
  // one throws is swallowed.
  using ProduceCallback = std::function<void(Result<ProduceResult>)>;
  // Hands `message` to the queue's producer and returns at once (unless
  // ProducerOptions::max_buffered_messages are unanswered: then it waits for room). The message goes
  // in the next batch of its partition (`partition`, else its key's, else one the backend picks per
  // batch, as produce() does), and `done` learns the outcome, with the same error codes as
  // produce(). Messages to one partition (given, or by key) are stored in the order they were
  // handed in from one thread. Destroying the queue waits until every message handed in is answered.
  void produce_async(std::string_view topic, Message message, ProduceCallback done,
                     std::optional<std::uint32_t> partition = std::nullopt);
  // The same, with a future of the result.
  std::future<Result<ProduceResult>> produce_async(std::string_view topic, Message message,
                                                   std::optional<std::uint32_t> partition = std::nullopt);
  // One message given as JSON text (validated: kInvalidArgument when it is not one JSON value).
  Result<ProduceResult> produce_json(std::string_view topic, std::string_view payload_json,
                                     std::optional<std::string> key = std::nullopt);

  // A consumer of `topic` in `options.group`.
  virtual Result<std::unique_ptr<Consumer>> consume(std::string_view topic,
                                                    const ConsumeOptions& options) = 0;

  // Acknowledges `messages` (each in its own topic, partition and group) durably; returns how many
  // were not acknowledged before. kNotFound when an id names no message. Each partition's
  // acknowledgements are one durable step; on an error those of other partitions may have been made.
  virtual Result<std::size_t> ack(std::span<const ReceivedMessage> messages) = 0;
  Result<std::size_t> ack(const ReceivedMessage& message) { return ack(std::span(&message, 1)); }
  // Gives an unacknowledged message back for redelivery now, or after `delay`. kConflict when it
  // is not in flight.
  virtual Status nack(const ReceivedMessage& message, std::chrono::milliseconds delay = {}) = 0;
  // Restarts the message's visibility timeout (long-running work). kConflict when not in flight.
  virtual Status touch(const ReceivedMessage& message) = 0;

  // Reads up to `limit` messages of one partition, in offset order, without a group: it changes
  // nothing (no delivery, no acknowledgement), for browsing and replaying. `from` is where to start:
  // an offset (nullopt: the log start; below the log start reads from it), or the first message
  // whose timestamp is at least from.timestamp_ms; not both. kInvalidArgument for a limit outside
  // [1, kMaxReadLimit], both or a negative timestamp, or an invalid topic name; kNotFound for an
  // unknown topic or partition (Redis, which keeps no list of topics, reads a topic nobody produced
  // to as an empty partition). Retrying is safe.
  // On Redis (see README "Redis Streams backend"): an offset is found by bisecting the stream's
  // entry ids, which relies on the `offset` fields growing with them, as this backend's producers
  // write them. Entries other Redis clients wrote (no `offset` field) are skipped: a page could not
  // say where to continue after them. A page whose offsets would not grow (the counter key
  // "T:p:next-offset" was deleted, or another client wrote `offset` fields) fails with kCorruption,
  // a search by offset among entry ids beyond 2^53 (Lua counts in doubles) with kInvalidArgument,
  // and a call that would step over more than 10,000 entries of other clients with kConflict (Redis
  // serves nobody else while a script runs), all saying "the redis backend cannot ...".
  virtual Result<ReadPage> read(std::string_view topic, std::uint32_t partition, const ReadFrom& from,
                                std::size_t limit) = 0;

  // Moves group `group`'s position in one partition (creating the group there if needed) and
  // returns the new position: the offset of the first message the group will be given next,
  // clamped to [log start, next offset]. `target` holds exactly one of an offset, a time (the first
  // message whose timestamp is at least it, else the next offset) or a position (earliest: the log
  // start; latest: the next offset). Messages from the new position on are delivered again, in
  // offset order, from delivery 1, even if they were acknowledged; open consumers of the group
  // follow without reconnecting. kInvalidArgument for no or several targets, a negative timestamp,
  // or an invalid topic or group name; kNotFound for an unknown topic or partition (not on Redis,
  // which creates the stream). Retrying is safe.
  // What happens to messages in flight differs:
  //   in-process, HTTP: every message below the new position counts as acknowledged, and nothing of
  //     the group on that partition is in flight any more: nack and touch of a delivery from before
  //     the seek get kConflict (unless the message was delivered again since: ids name messages,
  //     not deliveries), and ack acknowledges its message as usual. Durable when it returns.
  //   Redis: XGROUP SETID moves the group's last-delivered id and leaves its pending-entries list
  //     alone: a delivery from before the seek can still be acked, nacked and touched, and one that
  //     is not acknowledged comes back after its visibility timeout even if it is below the new
  //     position (one at or above it comes back at once, as a new delivery with count 1).
  //   Every backend: messages a Consumer had taken from the server before the seek but not yet
  //   handed to the application may still come out of receive() once. On Redis the target entry is
  //   found as for read() (the id-range and other-clients' refusals included; a stream whose
  //   offsets do not grow is not noticed here).
  virtual Result<std::uint64_t> seek(std::string_view topic, std::uint32_t partition, std::string_view group,
                                     const SeekTarget& target) = 0;

  // Sends the dead letters of `partition` of the dead-letter topic `topic` ("<T>-dlq") back to
  // their source topic and partition, from the partition's redrive position on, at most `limit`
  // (nullopt: all), and returns how many went (Broker::redrive, POST /redrive). Each dead letter
  // goes back at most once, so retrying is safe. kInvalidArgument when `topic` is not a
  // dead-letter topic; on Redis, which keeps no dead letters, always, naming the backend.
  virtual Result<std::uint64_t> redrive(std::string_view topic, std::uint32_t partition,
                                        std::optional<std::uint64_t> limit = std::nullopt) = 0;

  // Removes consumer group `group` of `topic` from every partition (on HTTP, from every broker):
  // its position, acknowledgements and in-flight messages, durably, and a later consume() of that
  // name starts a new group. Returns false when the group existed nowhere. Its open consumers: on
  // the in-process backend receive() fails with kNotFound; on HTTP their streams end and they
  // connect again, which starts the new group at once (close them first); on Redis (XGROUP DESTROY
  // on each partition's stream) their next read fails. Acks of earlier deliveries get kNotFound.
  virtual Result<bool> delete_group(std::string_view topic, std::string_view group) = 0;

  // Statistics of every topic, or of `topic` alone (kNotFound when unknown), as GET /stats gives
  // them; on HTTP, every broker's partitions together, in partition order. On Redis, which keeps
  // none of them, kInvalidArgument naming the backend.
  virtual Result<std::vector<TopicStats>> stats(std::optional<std::string_view> topic = std::nullopt) = 0;

  // "in-process", "http" or "redis".
  virtual std::string_view backend_name() const = 0;

 protected:
  friend class detail::ProduceBatcher;  // sends through produce() and maps keys by key_partition()
  Queue() = default;
  // The producer of produce_async, owned by the backend as its last member, so that it is
  // destroyed (sending what it holds through the backend's produce) before anything it uses.
  virtual detail::ProduceBatcher& batcher() = 0;
  // The partition `key` maps to in `topic` (partition_for_key with the topic's partition count).
  virtual Result<std::uint32_t> key_partition(std::string_view topic, std::string_view key) = 0;
};

}  // namespace mq

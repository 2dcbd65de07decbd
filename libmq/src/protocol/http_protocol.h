// mqd's HTTP protocol as data: the one definition that mqd (the server) and the HTTP Queue backend
// (the client) both use, so that a route, a parameter, a JSON field or the meaning of a status cannot
// drift between them. docs/http-api.md describes the same protocol for people.
// No HTTP library here: only names, numbers and the error table.
#pragma once

#include <array>
#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "mq/options.h"
#include "mq/status.h"

namespace mq::http {

enum class Method { kGet, kPost, kDelete };
std::string_view to_string(Method method);

// Routes (paths) and the one method each takes. HEAD is answered like GET except on /consume.
namespace path {
inline constexpr std::string_view kProduce = "/produce";
inline constexpr std::string_view kConsume = "/consume";
inline constexpr std::string_view kAck = "/ack";
inline constexpr std::string_view kNack = "/nack";
inline constexpr std::string_view kTouch = "/touch";
inline constexpr std::string_view kTopics = "/topics";
inline constexpr std::string_view kStats = "/stats";
inline constexpr std::string_view kHealthz = "/healthz";  // never needs the bearer token
inline constexpr std::string_view kMetrics = "/metrics";
inline constexpr std::string_view kMessages = "/messages";  // read without a group
inline constexpr std::string_view kSeek = "/seek";          // replay or skip
inline constexpr std::string_view kRedrive = "/redrive";    // dead letters back to their source
inline constexpr std::string_view kGroup = "/group";        // DELETE: remove a consumer group
// Replicated partitions: a follower's long poll for its leader's log (libmq/docs/replication.md).
inline constexpr std::string_view kReplicaFetch = "/replica/fetch";
// The header a follower proves it is a broker of the cluster with on /replica/fetch: the cluster's
// replication secret, which the brokers keep in etcd (only who can read etcd can fetch, and so
// count as a copy of an acknowledged write).
inline constexpr std::string_view kReplicaSecretHeader = "X-Mq-Replica-Secret";
// The operator console and its assets, and the API's description: no bearer token needed (the
// console asks for it and sends it with every call it makes).
inline constexpr std::string_view kUi = "/ui";
inline constexpr std::string_view kUiScript = "/ui/console.js";
inline constexpr std::string_view kUiStyle = "/ui/console.css";
inline constexpr std::string_view kOpenApi = "/openapi.json";
}  // namespace path

struct Route {
  std::string_view path;
  Method method;
};
inline constexpr std::array<Route, 18> kRoutes{{
    {path::kProduce, Method::kPost},
    {path::kConsume, Method::kGet},
    {path::kAck, Method::kPost},
    {path::kNack, Method::kPost},
    {path::kTouch, Method::kPost},
    {path::kTopics, Method::kGet},
    {path::kStats, Method::kGet},
    {path::kHealthz, Method::kGet},
    {path::kMetrics, Method::kGet},
    {path::kMessages, Method::kGet},
    {path::kSeek, Method::kPost},
    {path::kRedrive, Method::kPost},
    {path::kGroup, Method::kDelete},
    {path::kReplicaFetch, Method::kGet},
    {path::kUi, Method::kGet},
    {path::kUiScript, Method::kGet},
    {path::kUiStyle, Method::kGet},
    {path::kOpenApi, Method::kGet},
}};
// Whether `path` is served without the bearer token (/healthz, the console's files, /openapi.json).
bool is_public(std::string_view path);
// The method `path` takes; nullopt for a path that is no route.
std::optional<Method> method_of(std::string_view path);

// Query parameters.
namespace param {
inline constexpr std::string_view kTopic = "topic";
inline constexpr std::string_view kPartition = "partition";
inline constexpr std::string_view kGroup = "group";
inline constexpr std::string_view kVisibilityTimeoutMs = "visibility_timeout_ms";  // /consume
inline constexpr std::string_view kMaxInflight = "max_inflight";                   // /consume
inline constexpr std::string_view kFrom = "from";                                  // /consume
inline constexpr std::string_view kFromEarliest = "earliest";                      // kFrom's values
inline constexpr std::string_view kFromLatest = "latest";
inline constexpr std::string_view kOrdering = "ordering";    // /consume: "none" or "key"
inline constexpr std::string_view kOffset = "offset";        // /messages
inline constexpr std::string_view kTimestamp = "timestamp";  // /messages
inline constexpr std::string_view kLimit = "limit";          // /messages
// /replica/fetch (and kTopic, kPartition, kOffset): what the follower has and who it is.
inline constexpr std::string_view kEpoch = "epoch";
inline constexpr std::string_view kLogStart = "log_start";
inline constexpr std::string_view kLastEpoch = "last_epoch";
inline constexpr std::string_view kDurable = "durable";
inline constexpr std::string_view kStateEpoch = "state_epoch";
inline constexpr std::string_view kStateVersion = "state_version";
inline constexpr std::string_view kBroker = "broker";
inline constexpr std::string_view kDiskId = "disk_id";
inline constexpr std::string_view kWaitMs = "wait_ms";
inline constexpr std::string_view kMaxBytes = "max_bytes";
}  // namespace param

// Field names of request bodies, answers and event data.
namespace field {
// Requests.
inline constexpr std::string_view kPayload = "payload";
inline constexpr std::string_view kKey = "key";
inline constexpr std::string_view kMessages = "messages";
inline constexpr std::string_view kId = "id";
inline constexpr std::string_view kIds = "ids";
inline constexpr std::string_view kDelayMs = "delay_ms";  // /nack and /produce
// Message options of /produce (API.md "Message options"), also in events and /messages.
inline constexpr std::string_view kHeaders = "headers";
inline constexpr std::string_view kDeliverAt = "deliver_at";
inline constexpr std::string_view kDedupId = "dedup_id";
// Answers and events.
inline constexpr std::string_view kTopic = "topic";
inline constexpr std::string_view kPartition = "partition";
inline constexpr std::string_view kOffset = "offset";
inline constexpr std::string_view kOffsets = "offsets";
inline constexpr std::string_view kDuplicate = "duplicate";    // single produce: already stored
inline constexpr std::string_view kDuplicates = "duplicates";  // batch produce: their indexes
inline constexpr std::string_view kDelivery = "delivery";
inline constexpr std::string_view kTimestamp = "timestamp";
inline constexpr std::string_view kAcked = "acked";
inline constexpr std::string_view kLogStartOffset = "log_start_offset";
inline constexpr std::string_view kNextOffset = "next_offset";
inline constexpr std::string_view kCommittedOffset = "committed_offset";
inline constexpr std::string_view kPosition = "position";  // /seek: "earliest" or "latest"
inline constexpr std::string_view kOrdering = "ordering";  // 409 of /consume, /stats: "none" or "key"
inline constexpr std::string_view kLimit = "limit";        // /redrive request: at most this many
inline constexpr std::string_view kRedriven = "redriven";  // /redrive answer: how many went back
inline constexpr std::string_view kDeleted = "deleted";    // DELETE /group answer
// GET /topics: {"broker":{"index":i,"count":n},"brokers":[url...],"visibility_timeout_ms":ms,
//               "dedup_window_ms":ms,"topics":[{"name":t,"partitions":n,"owned":[p...]}...]}
inline constexpr std::string_view kBroker = "broker";
inline constexpr std::string_view kIndex = "index";
inline constexpr std::string_view kCount = "count";
inline constexpr std::string_view kBrokers = "brokers";
inline constexpr std::string_view kVisibilityTimeoutMs = "visibility_timeout_ms";
inline constexpr std::string_view kDedupWindowMs = "dedup_window_ms";
inline constexpr std::string_view kTopics = "topics";
inline constexpr std::string_view kName = "name";
inline constexpr std::string_view kPartitions = "partitions";
inline constexpr std::string_view kOwned = "owned";
// Replicated partitions: /topics placement, 421 and 409 answers.
inline constexpr std::string_view kPlacement = "placement";
inline constexpr std::string_view kLeader = "leader";
inline constexpr std::string_view kLeaderEpoch = "leader_epoch";
inline constexpr std::string_view kReplicas = "replicas";
inline constexpr std::string_view kIsr = "isr";
inline constexpr std::string_view kHighWatermark = "high_watermark";
// Errors: {"error": reason} plus "owner"/"owner_url" on 421 and "outcome":"unknown" when a failed
// fdatasync leaves it open whether the write survives.
inline constexpr std::string_view kError = "error";
inline constexpr std::string_view kOwner = "owner";
inline constexpr std::string_view kOwnerUrl = "owner_url";
inline constexpr std::string_view kOutcome = "outcome";
inline constexpr std::string_view kOutcomeUnknown = "unknown";
}  // namespace field

// mqd's visibility timeout when VISIBILITY_TIMEOUT_MS is unset: the library's default. /topics reports
// the one in force; a client that cannot read it assumes this one.
inline constexpr std::chrono::milliseconds kDefaultVisibilityTimeout = GroupOptions{}.visibility_timeout;

// Writing requests and answers.
// Appends `name=value` to a request target ("/ack" -> "/ack?topic=t", then "&partition=0"). Names and
// values must need no percent-encoding: protocol names, numbers and names valid per is_valid_name().
void append_query_param(std::string& target, std::string_view name, std::string_view value);
// Appends `"name":` for a field name of the protocol (plain ASCII: nothing to escape).
void append_json_key(std::string& out, std::string_view field_name);

// Errors both ways, from one table: the status mqd answers for `code`, and the code a client reads
// from a status mqd answered (kIOError for a status mqd never sends for an error).
int status_of(ErrorCode code);
ErrorCode error_code_of(int status);

}  // namespace mq::http

// The Redis Streams backend of mq::Queue (hiredis 0.14.1, Redis 7.0 or newer).
//
// Mapping. Topic T with RedisQueueOptions::partitions = P is the streams "T:0" ... "T:<P-1>" (names
// cannot hold ':', so no two topics share a key); partition p's offset counter is the string key
// "T:p:next-offset". A consumer group is a Redis consumer group of the same name on each stream.
//
// Produce runs one Lua script (EVALSHA, loaded with SCRIPT LOAD on first use and again after
// NOSCRIPT): it checks the key types, INCRBY the counter by the batch size, then XADD <stream> *
// offset <n> payload <minified JSON> [key <key>] per message. One script is atomic and is one AOF
// write, so with appendfsync always the whole batch is on disk when Redis replies; offsets are
// dense per partition: 0, 1, 2, ... ProduceResult::ids are the stream entry ids.
//
// Entries. ReceivedMessage::id is the entry id "<ms>-<seq>", timestamp_ms its <ms>, offset the
// `offset` field, key the `key` field, payload the `payload` field. Entries written by a foreign
// producer are delivered, never dropped:
//   - without a parsable `offset` field: offset = kNoOffset (UINT64_MAX, "no offset"), since a made
//     up number would collide with real offsets;
//   - payload: when there is no `offset` field (foreign), a `payload` field that is valid JSON is
//     delivered minified, one that is not becomes a JSON string of its text, and an entry without
//     `payload` is delivered as a JSON object of all its fields ({"field":"value",...}, invalid
//     UTF-8 replaced), so nothing is lost. Entries carrying `offset` are trusted as ours.
//
// Consumers. Each Consumer has its own connection. consume() connects and creates the group on
// every stream it reads (XGROUP CREATE <stream> <group> 0|$ MKSTREAM, BUSYGROUP ignored) before it
// returns, so StartPosition::kLatest means "from consume()"; an unreachable server fails consume()
// with kUnavailable. An empty ConsumeOptions::consumer_name becomes "<host>-<pid>-<n>" with n
// counting the process's consumers: two unnamed consumers in one process must not share a Redis
// pending-entries list (destroying one would hand back the other's messages).
// receive():
//   1. redeliveries, at most every scan period = min(visibility timeout / 4, 1 s): per stream
//      XPENDING <stream> <group> IDLE <vt> - + <n> (anyone's entries idle longer than the
//      visibility timeout), then XCLAIM <stream> <group> <me> <vt> <ids...>; the min-idle argument
//      makes a race with another consumer's claim safe. delivery = XPENDING's count + 1. Nil or
//      missing entries in XCLAIM's reply (deleted entries) are skipped.
//   2. new messages: XREADGROUP GROUP <group> <me> COUNT <n> BLOCK <ms> STREAMS <streams...> > ...
//      BLOCK never exceeds the remaining timeout nor the time to the next scan, so a waiting consumer
//      picks timed-out messages up at most one scan period late. COUNT applies per stream; entries
//      beyond max_messages are kept in the Consumer and returned by the next receive() (dropped
//      from that buffer once older than the visibility timeout: Redis then redelivers them).
//   max_inflight: the Consumer counts its deliveries per partition in memory (acks go through the
//   Queue, which it does not see); when a partition reaches the limit its true count is read back
//   (XPENDING <stream> <group> summary, this consumer's line) at most every 100 ms, and while it
//   stays at the limit the partition is neither read nor claimed from. Approximate: a receive may
//   overshoot by up to max_messages, and a consumer whose every partition is paused re-checks
//   every 100 ms.
//   Every command of a receive() (connecting included) must end within its timeout + 500 ms, or the
//   connection counts as stalled and is dropped (what its lost reply delivered comes back after the
//   visibility timeout): a stalled Redis cannot hold receive() beyond what the caller asked.
//   A lost connection (or LOADING, BUSY, ...) is retried inside receive() with backoff from 50 ms
//   doubling to 2 s and shows as no messages; NOGROUP recreates the groups; other errors (WRONGTYPE,
//   NOAUTH, NOPERM, ...) fail receive().
//   Destroying the Consumer hands its pending entries back: XPENDING <stream> <group> - + 1000 <me>
//   page by page, then per entry XCLAIM <stream> <group> <me> <its idle> <id> IDLE <1e11 ms> JUSTID
//   (pipelined): JUSTID keeps the delivery count, an idle time of ~3 years makes the entry due for
//   anyone's next scan, and min-idle = the idle time just read skips an entry another consumer
//   claimed meanwhile. (Redis resets an IDLE larger than the Unix time to 0, hence not larger.)
//   The hand-back gets at most 1 s (connecting included); what it cannot hand back in that time
//   comes back after the visibility timeout.
//
// Queue operations (a pool of connections, see below):
//   ack:   XACK <stream> <group> <ids...>, one per (stream, group), pipelined; returns the sum.
//          A malformed id -> kNotFound and nothing is acknowledged. XACK counts 0 both for an entry
//          acknowledged before (ok, as mqd) and for an id that names no entry (kNotFound, as mqd's
//          404): when a batch counts fewer than it holds, XRANGE <stream> <id> <id> per id of it
//          (pipelined) tells them apart; the known ids are acknowledged by then.
//   nack:  XPENDING <stream> <group> <id> <id> 1 (kConflict when not pending, which also covers a
//          missing group), then XCLAIM <stream> <group> <owner> <idle> <id> IDLE <i> JUSTID with
//          i = 1e11 ms for delay 0 (due now for every consumer) and max(0, vt - delay) otherwise,
//          vt being the visibility timeout of the latest consumer of that topic and group created
//          through this Queue, else RedisQueueOptions::visibility_timeout. Limitation: a delayed
//          nack is due after `delay` only for consumers with that visibility timeout, and a delay
//          longer than it acts as the visibility timeout.
//   touch: the same XPENDING, then XCLAIM <stream> <group> <owner> <idle> <id> JUSTID, which resets
//          the idle time without counting a delivery.
//   Both return kConflict when the XCLAIM claims nothing (another consumer took the entry between
//   the two commands).
//   read:  one Lua script (kReadScript): GET the counter (the next offset), find the start entry —
//          by offset, bisecting the entry ids (kSearchFunctions); by time, the first entry at or
//          after the id "<ms>-0", exact since produce lets Redis make the ids from its clock (`*`)
//          and Redis never lets them go back — then XRANGE from it until `limit` entries with an
//          offset. Entries without one (other clients') are skipped. Atomic, so the page, the log
//          start and the next offset agree.
//   seek:  one Lua script (kSeekScript): the same search, then XGROUP SETID to the id just before
//          the target entry (earliest: 0, latest or past the end: $), or XGROUP CREATE when the
//          group does not exist. The pending-entries list is left as it is (see queue.h).
//   Both refuse, naming the backend, to search by offset among entry ids too large for Lua's
//   doubles (kInvalidArgument) and to step over more than kForeignEntryBudget entries of other
//   clients in one call (kConflict: Redis serves nobody else while a script runs); read refuses a page whose
//   offsets do not grow (kCorruption: the counter key was deleted, or another client wrote `offset` fields),
//   which the search assumes.
//
// Connections. The Queue keeps a mutex-protected stack of idle connections (at most 16), creates
// one when the stack is empty, drops one after an I/O error, and checks a pooled one with a
// zero-wait poll before reuse (a server restart leaves it readable at EOF). Connections use
// RedisQueueOptions::connect_timeout, RedisQueueOptions::request_timeout as the command timeout,
// AUTH [username] password and SELECT db when configured.
//
// Errors and retries. A call that fails before any byte of its command was sent (the server cannot
// be reached, SCRIPT LOAD failing before a produce, a receive() out of time) is
// kUnavailable: nothing happened, retrying is safe. Once the command went out, a failure of the
// connection or a timeout waiting for the reply is kIOError: Redis may have carried it out (a
// produce retried then may be stored twice).
#include <hiredis/hiredis.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <cstdint>
#include <deque>
#include <limits>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "client/queue_backends.h"
#include "client/redis/redis_connection.h"
#include "common/decimal.h"
#include "common/message_rules.h"
#include "mq/options.h"
#include "mq/topic.h"

namespace mq::detail {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Past receive()'s timeout, how long a command may still take before the connection counts as
// stalled (dropped, and receive() returns): the answer of a healthy but busy Redis.
constexpr milliseconds kReceiveGrace{500};
// How long destroying a Consumer may spend handing its messages back; what does not make it comes
// back after the visibility timeout.
constexpr milliseconds kHandBackTimeout{1000};
constexpr milliseconds kReconnectMin{50};
constexpr milliseconds kReconnectMax{2000};
constexpr milliseconds kPausedRecheck{100};
constexpr milliseconds kMaxScanPeriod{1000};
// An idle time that makes an entry due for every consumer's scan, yet below the Unix time in ms
// (Redis replaces a larger IDLE by 0).
constexpr long long kDueNowIdleMs = 100'000'000'000;
constexpr std::size_t kPoolMax = 16;
constexpr std::size_t kHandBackPage = 1000;
// The offset of an entry that has no `offset` field (written by a foreign producer).

// KEYS[1] stream, KEYS[2] counter; ARGV[1] the message count n, ARGV[2] the deduplication window
// in ms (> 0), then per message: the payload, "1" or "0" (has a key), the key (empty when none), "1"
// or "0" (has a dedup id), the dedup id, the header count h, then h name/value pairs. A dedup id is
// remembered as the string key "<stream>:dedup:<id>" = "<offset> <entry id>" for the window; a
// message whose id is remembered (or repeats one earlier in the batch) is not added. Everything
// that can fail is checked before the first write (Redis does not undo a script's writes when it
// fails half-way). Returns {{offsets}, {entry ids}, {duplicate indexes}}. The dedup keys are not
// declared in KEYS: the script is for a single Redis, not Redis Cluster.
constexpr const char* kProduceScript = R"lua(
local t = redis.call('TYPE', KEYS[1]).ok
if t ~= 'stream' and t ~= 'none' then
  return redis.error_reply('WRONGTYPE ' .. KEYS[1] .. ' is not a stream')
end
local n = tonumber(ARGV[1])
local window = ARGV[2]
local next = redis.call('INCRBY', KEYS[2], 0)
local first = next
-- Pass 1, reading only: where each message starts in ARGV, and which are duplicates.
local starts, stored, earlier, seen = {}, {}, {}, {}
local i = 3
for m = 1, n do
  starts[m] = i
  if ARGV[i + 3] == '1' then
    local id = ARGV[i + 4]
    if seen[id] then
      earlier[m] = seen[id]
    else
      local value = redis.call('GET', KEYS[1] .. ':dedup:' .. id)
      if value then
        local space = string.find(value, ' ', 1, true)
        if not space then
          return redis.error_reply('ERR ' .. KEYS[1] .. ':dedup:' .. id .. ' is not "<offset> <entry id>"')
        end
        stored[m] = {string.sub(value, 1, space - 1), string.sub(value, space + 1)}
      else
        seen[id] = m
      end
    end
  end
  i = i + 6 + 2 * tonumber(ARGV[i + 5])
end
-- Pass 2: add the new ones.
local offsets, ids, dups = {}, {}, {}
for m = 1, n do
  local i = starts[m]
  if stored[m] then
    offsets[m] = stored[m][1]
    ids[m] = stored[m][2]
    dups[#dups + 1] = tostring(m - 1)
  elseif earlier[m] then
    offsets[m] = offsets[earlier[m]]
    ids[m] = ids[earlier[m]]
    dups[#dups + 1] = tostring(m - 1)
  else
    local offset = string.format('%d', next)
    next = next + 1
    local add = {'XADD', KEYS[1], '*', 'offset', offset, 'payload', ARGV[i]}
    if ARGV[i + 1] == '1' then
      add[#add + 1] = 'key'
      add[#add + 1] = ARGV[i + 2]
    end
    for j = 0, tonumber(ARGV[i + 5]) - 1 do
      add[#add + 1] = 'header:' .. ARGV[i + 6 + 2 * j]
      add[#add + 1] = ARGV[i + 7 + 2 * j]
    end
    if ARGV[i + 3] == '1' then
      add[#add + 1] = 'dedup_id'
      add[#add + 1] = ARGV[i + 4]
    end
    offsets[m] = offset
    ids[m] = redis.call(unpack(add))
    if ARGV[i + 3] == '1' then
      redis.call('SET', KEYS[1] .. ':dedup:' .. ARGV[i + 4], offset .. ' ' .. ids[m], 'PX', window)
    end
  end
end
if next > first then redis.call('INCRBY', KEYS[2], next - first) end
return {offsets, ids, dups}
)lua";

// The error codes the read and seek scripts answer with when they cannot serve a call faithfully;
// read_error() turns them into a Status.
constexpr std::string_view kOffsetOrderError = "MQOFFSETORDER";  // -> kCorruption
constexpr std::string_view kIdRangeError = "MQIDRANGE";          // -> kInvalidArgument
constexpr std::string_view kForeignError = "MQFOREIGN";          // -> kConflict
// The entries without an `offset` field (other clients') one read or seek steps over at most:
// Redis runs one script at a time, so a stream made mostly of them must not make a script step
// over hundreds of thousands (seconds during which Redis serves nobody else).
constexpr int kForeignEntryBudget = 10000;

// What the read and seek scripts share: finding entries by offset or by time. Offsets are decimal
// strings throughout (Lua's numbers are doubles: exact only to 2^53). The produce script makes the
// `offset` fields grow with the entry ids, so "the first entry whose offset is at least n" is found
// by bisecting the entry ids: first over their milliseconds, then over the sequence numbers within
// one millisecond (a batch shares one). Entries without an `offset` (other clients') are stepped
// over, at most kForeignEntryBudget per call (ARGV[#ARGV]). Each probe is an XRANGE of a few
// entries: some 60 probes for a stream of any length.
constexpr const char* kSearchFunctions = R"lua(
local foreign_left = tonumber(ARGV[#ARGV])
local function step_over(key, count)
  foreign_left = foreign_left - count
  if foreign_left < 0 then
    error(redis.error_reply('MQFOREIGN the redis backend cannot read or seek stream ' .. key ..
      ' past more than ' .. ARGV[#ARGV] .. ' entries without an offset field (written by other clients) in one call'))
  end
end
local function number_of(text)
  if type(text) ~= 'string' or not string.match(text, '^%d+$') then return nil end
  local n = string.gsub(text, '^0+(%d)', '%1')
  if #n > 20 or (#n == 20 and n > '18446744073709551615') then return nil end
  return n
end
local function less(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local function offset_of(entry)
  local fields = entry[2]
  local offset = nil
  for i = 1, #fields - 1, 2 do
    if fields[i] == 'offset' then offset = number_of(fields[i + 1]) end
  end
  return offset
end
local function exact(digits)
  return not less('9007199254740990', digits)
end
local function split(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function decrement(digits)
  local i = #digits
  while string.sub(digits, i, i) == '0' do i = i - 1 end
  local r = string.sub(digits, 1, i - 1) .. string.char(string.byte(digits, i) - 1) .. string.rep('9', #digits - i)
  return (string.gsub(r, '^0+(%d)', '%1'))
end
local function id_before(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  if seq ~= '0' then return ms .. '-' .. decrement(seq) end
  if ms == '0' then return '0-0' end
  return decrement(ms) .. '-18446744073709551615'
end
-- The first entry with an offset at or after id `from` and, when `before` is given, before it.
local function at_or_after(key, from, before)
  local to = before and ('(' .. before) or '+'
  while true do
    local entries = redis.call('XRANGE', key, from, to, 'COUNT', 16)
    if #entries == 0 then return nil end
    for i, entry in ipairs(entries) do
      local offset = offset_of(entry)
      if offset then
        step_over(key, i - 1)
        return entry, offset
      end
    end
    step_over(key, #entries)
    from = '(' .. entries[#entries][1]
  end
end
-- The first entry with an offset of at least n, after `first` (whose offset is below n). Each probe
-- looks only between its midpoint and the upper bound, and one that finds an offset below n moves
-- the lower bound up to the entry it found: no entry is stepped over twice, so a run of other
-- clients' entries costs its length once, not once per probe.
local function find_offset(key, n, first)
  local too_big = redis.error_reply('MQIDRANGE the redis backend cannot search stream ' .. key ..
    ' by offset: its entry ids go beyond 2^53 (milliseconds or sequence numbers)')
  local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)[1]
  if not exact(string.match(last[1], '^%d+')) then return nil, nil, too_big end
  -- Entry lo_ms-lo_seq has an offset below n; from hi (first over milliseconds, then over sequence
  -- numbers within lo_ms) on, the first entry with an offset is `answer` (nil: none).
  local lo_ms, lo_seq = split(first[1])
  local hi_ms = split(last[1]) + 1
  local answer, answer_offset = nil, nil
  while hi_ms - lo_ms > 1 do
    local mid = math.floor((lo_ms + hi_ms) / 2)
    local entry, offset = at_or_after(key, string.format('%d-0', mid), string.format('%d-0', hi_ms))
    if entry and less(offset, n) then
      lo_ms, lo_seq = split(entry[1])
    else
      if entry then answer, answer_offset = entry, offset end
      hi_ms = mid
    end
  end
  local newest = redis.call('XREVRANGE', key, string.format('%d-18446744073709551615', lo_ms),
    string.format('%d-0', lo_ms), 'COUNT', 1)[1]
  if not exact(string.match(newest[1], '%d+$')) then return nil, nil, too_big end
  local _, newest_seq = split(newest[1])
  local hi_seq = newest_seq + 1
  while hi_seq - lo_seq > 1 do
    local mid = math.floor((lo_seq + hi_seq) / 2)
    local entry, offset = at_or_after(key, string.format('%d-%d', lo_ms, mid), string.format('%d-%d', lo_ms, hi_seq))
    if entry and less(offset, n) then
      local _, seq = split(entry[1])
      lo_seq = seq
    else
      if entry then answer, answer_offset = entry, offset end
      hi_seq = mid
    end
  end
  return answer, answer_offset
end
local function check_type(key)
  local t = redis.call('TYPE', key).ok
  if t ~= 'stream' and t ~= 'none' then return t, redis.error_reply('WRONGTYPE ' .. key .. ' is not a stream') end
  return t, nil
end
local function start_entry(key, mode, value, first, log_start)
  if mode == 'time' then return at_or_after(key, value .. '-0') end
  if first and less(log_start, value) then return find_offset(key, value, first) end
  return first, log_start
end
)lua";

// KEYS[1] stream, KEYS[2] counter; ARGV[1] "offset" or "time", ARGV[2] the offset or the time in
// ms, ARGV[3] the limit, ARGV[4] kForeignEntryBudget. Returns {log start, next offset, {entries with an
// offset, in order}}: the log start is the first entry's offset (the counter when none is left).
constexpr const char* kReadScript = R"lua(
local function out_of_order(key, id, offset, before)
  return redis.error_reply('MQOFFSETORDER the redis backend cannot find offsets in stream ' .. key ..
    ': its entry ' .. id .. ' has offset ' .. offset .. ' after offset ' .. before ..
    ' (offsets must grow with the entry ids: was ' .. key .. ':next-offset deleted, or did another client write offset fields?)')
end
local t, wrong = check_type(KEYS[1])
if wrong then return wrong end
local next_offset = number_of(redis.call('GET', KEYS[2])) or '0'
local first, log_start = at_or_after(KEYS[1], '-')
local entry, _, err = start_entry(KEYS[1], ARGV[1], ARGV[2], first, log_start)
if err then return err end
local page = {}
local limit = tonumber(ARGV[3])
local from = entry and entry[1]
local before = nil
while from and #page < limit do
  local batch = redis.call('XRANGE', KEYS[1], from, '+', 'COUNT', limit - #page)
  if #batch == 0 then break end
  for _, e in ipairs(batch) do
    local o = offset_of(e)
    if o then
      if before and not less(before, o) then return out_of_order(KEYS[1], e[1], o, before) end
      before = o
      page[#page + 1] = e
    else
      step_over(KEYS[1], 1)
    end
  end
  from = '(' .. batch[#batch][1]
end
return {log_start or next_offset, next_offset, page}
)lua";

// KEYS[1] stream, KEYS[2] counter; ARGV[1] the group, ARGV[2] "earliest", "latest", "offset" or
// "time", ARGV[3] the offset or the time in ms, ARGV[4] kForeignEntryBudget. XGROUP SETID to the id just
// before the target entry (earliest: 0, latest or no such entry: $), creating the group (XGROUP CREATE,
// MKSTREAM when there is no stream) if it does not exist. Returns the offset the group reads next.
constexpr const char* kSeekScript = R"lua(
local t, wrong = check_type(KEYS[1])
if wrong then return wrong end
local next_offset = number_of(redis.call('GET', KEYS[2])) or '0'
local id, position = '$', next_offset
-- latest needs no search (and so no budget: other clients' entries do not stop it)
local first, log_start = nil, nil
if ARGV[2] ~= 'latest' then first, log_start = at_or_after(KEYS[1], '-') end
if ARGV[2] == 'earliest' then
  id, position = '0', log_start or next_offset
elseif ARGV[2] ~= 'latest' then
  local entry, offset, err = start_entry(KEYS[1], ARGV[2], ARGV[3], first, log_start)
  if err then return err end
  if entry then id, position = id_before(entry[1]), offset end
end
if t == 'none' then
  redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], id, 'MKSTREAM')
else
  local set = redis.pcall('XGROUP', 'SETID', KEYS[1], ARGV[1], id)
  if type(set) == 'table' and set.err then
    if not string.find(set.err, 'NOGROUP', 1, true) then return set end
    redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], id)
  end
end
return position
)lua";

// The scripts this backend runs with EVALSHA (see RedisQueue::run_script).
enum class Script { kProduce, kRead, kSeek };
constexpr std::size_t kScripts = 3;

const std::string& script_source(Script script) {
  static const std::array<std::string, kScripts> sources{
      kProduceScript,
      std::string(kSearchFunctions) + kReadScript,
      std::string(kSearchFunctions) + kSeekScript,
  };
  return sources[static_cast<std::size_t>(script)];
}

// A refusal of the read or seek script ("MQOFFSETORDER <why>") as its Status; other errors as they are.
Status read_error(const Status& status) {
  const std::string_view code = redis_error_code(status);
  if (code != kOffsetOrderError && code != kIdRangeError && code != kForeignError) return status;
  const std::string& message = status.message();
  std::string why = message.substr(std::min(message.size(), message.find(code) + code.size() + 1));
  // An error raised by error() rather than returned ends with where: " script: <sha>, on ...".
  if (const auto where = why.rfind(" script: "); where != std::string::npos) why.resize(where);
  if (code == kOffsetOrderError) return Status::corruption(std::move(why));
  if (code == kForeignError) return Status::conflict(std::move(why));
  return Status::invalid_argument(std::move(why));
}

std::string stream_key(std::string_view topic, std::uint32_t partition) {
  return std::string(topic) + ":" + std::to_string(partition);
}
std::string counter_key(std::string_view topic, std::uint32_t partition) {
  return stream_key(topic, partition) + ":next-offset";
}

bool is_array(const redisReply* r) { return r != nullptr && r->type == REDIS_REPLY_ARRAY; }
std::string_view text_of(const redisReply* r) {
  if (r == nullptr || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS)) return {};
  return {r->str, r->len};
}
std::optional<std::uint64_t> parse_u64(std::string_view s) { return detail::parse_decimal(s); }
std::optional<long long> integer_of(const redisReply* r) {
  if (r != nullptr && r->type == REDIS_REPLY_INTEGER) return r->integer;
  auto v = parse_u64(text_of(r));
  if (!v || *v > static_cast<std::uint64_t>(std::numeric_limits<long long>::max())) return std::nullopt;
  return static_cast<long long>(*v);
}
// The <ms> of a well-formed entry id "<ms>-<seq>".
std::optional<std::uint64_t> entry_id_ms(std::string_view id) {
  const auto dash = id.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  auto ms = parse_u64(id.substr(0, dash));
  if (!ms || !parse_u64(id.substr(dash + 1))) return std::nullopt;
  return ms;
}

std::string dump_json(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A header's field in a stream entry: "header:<name>".
constexpr std::string_view kHeaderFieldPrefix = "header:";

// The message in a stream entry reply [id, [field, value, ...]]; nullopt for a nil (deleted) entry.
std::optional<ReceivedMessage> parse_entry(const redisReply* entry, const std::string& topic,
                                           const std::string& group, std::uint32_t partition) {
  if (!is_array(entry) || entry->elements < 2) return std::nullopt;
  const std::string_view id = text_of(entry->element[0]);
  const auto ms = entry_id_ms(id);
  if (!ms) return std::nullopt;
  ReceivedMessage m;
  m.topic = topic;
  m.group = group;
  m.partition = partition;
  m.id = std::string(id);
  // Ids another client chose may go beyond what a signed timestamp holds: the latest time there is.
  m.timestamp_ms = static_cast<std::int64_t>(
      std::min<std::uint64_t>(*ms, static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())));
  const redisReply* fields = entry->element[1];
  const redisReply* offset = nullptr;
  const redisReply* payload = nullptr;
  if (is_array(fields)) {
    for (std::size_t i = 0; i + 1 < fields->elements; i += 2) {
      const std::string_view name = text_of(fields->element[i]);
      if (name == "offset") offset = fields->element[i + 1];
      if (name == "payload") payload = fields->element[i + 1];
      if (name == "key") m.key = std::string(text_of(fields->element[i + 1]));
      if (name.starts_with(kHeaderFieldPrefix)) {
        m.headers.emplace_back(name.substr(kHeaderFieldPrefix.size()), text_of(fields->element[i + 1]));
      }
    }
  }
  const auto parsed_offset = offset != nullptr ? parse_u64(text_of(offset)) : std::nullopt;
  m.offset = parsed_offset.value_or(kNoOffset);
  if (offset != nullptr && payload != nullptr) {
    m.payload = std::string(text_of(payload));
  } else if (payload != nullptr) {
    auto valid = Payload::parse(text_of(payload));
    m.payload = valid.ok() ? valid->json() : dump_json(std::string(text_of(payload)));
  } else {
    nlohmann::json object = nlohmann::json::object();
    if (is_array(fields)) {
      for (std::size_t i = 0; i + 1 < fields->elements; i += 2) {
        object[std::string(text_of(fields->element[i]))] = std::string(text_of(fields->element[i + 1]));
      }
    }
    m.payload = dump_json(object);
  }
  return m;
}

std::atomic<std::uint64_t> unnamed_consumers{0};

class RedisConsumer final : public Consumer {
 public:
  RedisConsumer(RedisQueueOptions server, std::string topic, std::string group, std::string name,
                const std::vector<std::uint32_t>& partitions, milliseconds visibility_timeout,
                std::size_t max_inflight, StartPosition from)
      : server_(std::move(server)),
        topic_(std::move(topic)),
        group_(std::move(group)),
        name_(std::move(name)),
        vt_(visibility_timeout),
        scan_period_(std::clamp(visibility_timeout / 4, milliseconds(1), kMaxScanPeriod)),
        max_inflight_(max_inflight),
        from_(from) {
    for (auto p : partitions) streams_.push_back(Stream{p, stream_key(topic_, p)});
  }

  ~RedisConsumer() override { hand_back(); }

  // Connects and creates the groups; fails on anything, retryable or not.
  Status start() { return ensure_ready(); }

  Result<std::vector<ReceivedMessage>> receive(std::size_t max_messages, milliseconds timeout) override {
    if (max_messages == 0) return Status::invalid_argument("max_messages must be at least 1");
    const auto deadline = Clock::now() + std::max(timeout, milliseconds(0));
    // Every command of this call (and connecting) ends by then, so a stalled Redis cannot hold the
    // caller much longer than it asked for.
    io_deadline_ = deadline + kReceiveGrace;
    if (conn_) conn_->set_deadline(io_deadline_);
    for (bool first = true;; first = false) {
      auto now = Clock::now();
      if (!first && now >= deadline) return std::vector<ReceivedMessage>{};
      if (auto buffered = take_buffered(max_messages, now); !buffered.empty()) return buffered;
      if (now < next_connect_) {
        std::this_thread::sleep_until(std::min(next_connect_, deadline));  // backoff while Redis is down
        continue;
      }
      if (Status s = ensure_ready(); !s.ok()) {
        if (!connection_lost(s)) return s;
        failed();
        continue;
      }
      now = Clock::now();
      if (now >= next_scan_) {
        next_scan_ = now + scan_period_;
        auto claimed = claim_due(max_messages);
        if (!claimed.ok()) {
          if (auto s = handle_error(claimed.status()); !s.ok()) return s;
          continue;
        }
        if (!claimed->empty()) return claimed;
      }
      if (Status s = refresh_paused(); !s.ok()) {
        if (auto e = handle_error(s); !e.ok()) return e;
        continue;
      }
      now = Clock::now();
      const auto until = std::min(deadline, next_scan_);
      auto block = std::chrono::ceil<milliseconds>(until - now);
      if (block < milliseconds(0)) block = milliseconds(0);
      auto read = read_new(max_messages, block);
      if (!read.ok()) {
        if (auto s = handle_error(read.status()); !s.ok()) return s;
        continue;
      }
      backoff_ = kReconnectMin;
      if (!read->empty()) return read;
    }
  }

 private:
  struct Stream {
    std::uint32_t partition;
    std::string key;
    std::size_t inflight = 0;  // this consumer's unacknowledged deliveries (approximate)
    Clock::time_point refreshed{};
  };

  bool paused(const Stream& s) const { return s.inflight >= max_inflight_; }

  // A blocking XREADGROUP waits up to a scan period for its answer: never time out before that.
  milliseconds command_timeout() const {
    return std::max(server_.request_timeout, kMaxScanPeriod + kReceiveGrace);
  }

  Status ensure_ready() {
    if (conn_ && !conn_->idle_and_healthy()) {  // broken, or closed by the server while idle
      conn_.reset();
      groups_ready_ = false;
    }
    if (!conn_) {
      auto c = RedisConnection::connect(server_, command_timeout(), io_deadline_);
      if (!c.ok()) return c.status();
      conn_ = std::move(c).value();
      groups_ready_ = false;
    }
    if (groups_ready_) return {};
    for (auto& s : streams_) {
      auto r = conn_->command(
          {"XGROUP", "CREATE", s.key, group_, from_ == StartPosition::kLatest ? "$" : "0", "MKSTREAM"});
      if (!r.ok() && redis_error_code(r.status()) != "BUSYGROUP") return r.status();
    }
    for (auto& s : streams_) {
      if (Status st = refresh_inflight(s); !st.ok()) return st;
    }
    groups_ready_ = true;
    ever_ready_ = true;
    next_scan_ = Clock::now();  // scan at once after (re)connecting
    return {};
  }

  // A retryable failure: drop the connection and wait before the next attempt.
  void failed() {
    conn_.reset();
    groups_ready_ = false;
    next_connect_ = Clock::now() + backoff_;
    backoff_ = std::min(backoff_ * 2, kReconnectMax);
  }

  // Whether `s` is a failure of the connection or of a server that may recover (LOADING, ...):
  // reading again is safe (what a lost reply delivered comes back after the visibility timeout).
  bool connection_lost(const Status& s) const {
    return s.code() == ErrorCode::kUnavailable || (conn_ && conn_->broken());
  }

  // Ok to go on (after recovering), or the error receive() must return.
  Status handle_error(const Status& s) {
    if (redis_error_code(s) == "NOGROUP") {  // the stream or group was deleted: recreate
      groups_ready_ = false;
      return {};
    }
    if (connection_lost(s)) {
      failed();
      return {};
    }
    return s;
  }

  // This consumer's pending count on `s`, from XPENDING's summary form.
  Status refresh_inflight(Stream& s) {
    auto r = conn_->command({"XPENDING", s.key, group_});
    if (!r.ok()) return r.status();
    s.inflight = 0;
    s.refreshed = Clock::now();
    const redisReply* reply = r->get();
    if (!is_array(reply) || reply->elements < 4 || !is_array(reply->element[3])) return {};
    const redisReply* consumers = reply->element[3];
    for (std::size_t i = 0; i < consumers->elements; ++i) {
      const redisReply* c = consumers->element[i];
      if (is_array(c) && c->elements >= 2 && text_of(c->element[0]) == name_) {
        s.inflight = static_cast<std::size_t>(integer_of(c->element[1]).value_or(0));
      }
    }
    return {};
  }

  Status refresh_paused() {
    const auto now = Clock::now();
    for (auto& s : streams_) {
      if (paused(s) && now - s.refreshed >= kPausedRecheck) {
        if (Status st = refresh_inflight(s); !st.ok()) return st;
      }
    }
    return {};
  }

  std::vector<ReceivedMessage> take_buffered(std::size_t max, Clock::time_point now) {
    std::vector<ReceivedMessage> out;
    // Older than the visibility timeout: Redis redelivers them, so they are stale here.
    while (!buffer_.empty() && now - buffer_.front().first >= vt_) buffer_.pop_front();
    while (!buffer_.empty() && out.size() < max) {
      out.push_back(std::move(buffer_.front().second));
      buffer_.pop_front();
    }
    return out;
  }

  Result<std::vector<ReceivedMessage>> claim_due(std::size_t max) {
    std::vector<ReceivedMessage> out;
    const std::string vt_ms = std::to_string(vt_.count());
    for (auto& s : streams_) {
      if (out.size() >= max) break;
      if (paused(s)) continue;
      const std::size_t n = std::min(max - out.size(), max_inflight_ - s.inflight);
      auto pending = conn_->command({"XPENDING", s.key, group_, "IDLE", vt_ms, "-", "+", std::to_string(n)});
      if (!pending.ok()) return pending.status();
      const redisReply* list = pending->get();
      if (!is_array(list) || list->elements == 0) continue;
      std::vector<std::string> claim{"XCLAIM", s.key, group_, name_, vt_ms};
      std::map<std::string, long long, std::less<>> deliveries;
      for (std::size_t i = 0; i < list->elements; ++i) {
        const redisReply* e = list->element[i];
        if (!is_array(e) || e->elements < 4) continue;
        std::string id(text_of(e->element[0]));
        deliveries[id] = integer_of(e->element[3]).value_or(0);
        claim.push_back(std::move(id));
      }
      if (claim.size() == 5) continue;
      auto claimed = conn_->command(claim);
      if (!claimed.ok()) return claimed.status();
      const redisReply* entries = claimed->get();
      if (!is_array(entries)) continue;
      for (std::size_t i = 0; i < entries->elements; ++i) {
        auto m = parse_entry(entries->element[i], topic_, group_, s.partition);
        if (!m) continue;  // deleted meanwhile
        auto it = deliveries.find(m->id);
        const long long before = it != deliveries.end() ? it->second : 0;
        m->delivery = static_cast<std::uint32_t>(std::clamp<long long>(before + 1, 1, UINT32_MAX));
        out.push_back(std::move(*m));
        ++s.inflight;
      }
    }
    return out;
  }

  Result<std::vector<ReceivedMessage>> read_new(std::size_t max, milliseconds block) {
    std::vector<Stream*> active;
    std::size_t count = max;
    for (auto& s : streams_) {
      if (paused(s)) continue;
      active.push_back(&s);
      count = std::min(count, max_inflight_ - s.inflight);
    }
    if (active.empty()) {  // every partition is at max_inflight: re-check soon
      std::this_thread::sleep_for(std::min(block, kPausedRecheck));
      return std::vector<ReceivedMessage>{};
    }
    std::vector<std::string> args{"XREADGROUP", "GROUP", group_, name_, "COUNT", std::to_string(count)};
    if (block > milliseconds(0)) {
      args.push_back("BLOCK");
      args.push_back(std::to_string(block.count()));
    }
    args.push_back("STREAMS");
    for (auto* s : active) args.push_back(s->key);
    for (std::size_t i = 0; i < active.size(); ++i) args.push_back(">");
    auto r = conn_->command(args);
    if (!r.ok()) return r.status();
    std::vector<ReceivedMessage> out;
    const redisReply* streams = r->get();
    if (!is_array(streams)) return out;  // nil: nothing within BLOCK
    const auto now = Clock::now();
    for (std::size_t i = 0; i < streams->elements; ++i) {
      const redisReply* st = streams->element[i];
      if (!is_array(st) || st->elements < 2 || !is_array(st->element[1])) continue;
      const std::string_view key = text_of(st->element[0]);
      auto it = std::find_if(active.begin(), active.end(), [&](Stream* s) { return s->key == key; });
      if (it == active.end()) continue;
      const redisReply* entries = st->element[1];
      for (std::size_t j = 0; j < entries->elements; ++j) {
        auto m = parse_entry(entries->element[j], topic_, group_, (*it)->partition);
        if (!m) continue;
        ++(*it)->inflight;
        if (out.size() < max) {
          out.push_back(std::move(*m));
        } else {
          buffer_.emplace_back(now, std::move(*m));
        }
      }
    }
    return out;
  }

  // Makes this consumer's pending entries due at once for every consumer of the group, within
  // kHandBackTimeout (a stalled Redis must not hold up the destructor).
  void hand_back() {
    if (!ever_ready_) return;
    const auto deadline = Clock::now() + kHandBackTimeout;
    if (!conn_ || !conn_->idle_and_healthy()) {
      conn_.reset();
      auto c = RedisConnection::connect(server_, command_timeout(), deadline);
      if (!c.ok()) return;  // Redis is down: the entries come back after the visibility timeout
      conn_ = std::move(c).value();
    }
    conn_->set_deadline(deadline);
    const std::string due = std::to_string(kDueNowIdleMs);
    for (auto& s : streams_) {
      std::string start = "-";
      for (;;) {
        auto r =
            conn_->command({"XPENDING", s.key, group_, start, "+", std::to_string(kHandBackPage), name_});
        if (!r.ok() || !is_array(r->get()) || r->get()->elements == 0) break;
        const redisReply* list = r->get();
        std::vector<std::vector<std::string>> claims;
        for (std::size_t i = 0; i < list->elements; ++i) {
          const redisReply* e = list->element[i];
          if (!is_array(e) || e->elements < 4) continue;
          const std::string id(text_of(e->element[0]));
          const std::string idle = std::to_string(integer_of(e->element[2]).value_or(0));
          claims.push_back({"XCLAIM", s.key, group_, name_, idle, id, "IDLE", due, "JUSTID"});
          start = "(" + id;
        }
        if (claims.empty() || !conn_->pipeline(claims).ok()) break;
        if (list->elements < kHandBackPage) break;
      }
    }
  }

  const RedisQueueOptions server_;
  const std::string topic_;
  const std::string group_;
  const std::string name_;
  std::vector<Stream> streams_;
  const milliseconds vt_;
  const milliseconds scan_period_;
  const std::size_t max_inflight_;
  const StartPosition from_;

  std::unique_ptr<RedisConnection> conn_;
  std::optional<Clock::time_point> io_deadline_;  // of the receive() in progress; none before the first
  bool groups_ready_ = false;
  bool ever_ready_ = false;  // the groups were created once: there may be entries to hand back
  Clock::time_point next_scan_{};
  Clock::time_point next_connect_{};
  milliseconds backoff_ = kReconnectMin;
  std::deque<std::pair<Clock::time_point, ReceivedMessage>> buffer_;  // read beyond max_messages
};

class RedisQueue final : public Queue {
 public:
  explicit RedisQueue(RedisQueueOptions options)
      : options_(std::move(options)), batcher_(options_.producer, *this) {}

  Result<ProduceResult> produce(std::string_view topic, std::span<const Message> messages,
                                std::optional<std::uint32_t> partition) override {
    if (!is_valid_name(topic)) return invalid_name("topic", topic);
    if (messages.empty()) return Status::invalid_argument("nothing to produce: no messages");
    std::uint32_t p = 0;
    if (partition) {
      if (*partition >= options_.partitions) return partition_not_found(topic, *partition);
      p = *partition;
    } else if (auto key = partition_key(messages)) {
      p = partition_for_key(*key, options_.partitions);
    } else {
      p = round_robin_.fetch_add(1, std::memory_order_relaxed) % options_.partitions;
    }
    std::vector<std::string> args{"EVALSHA",
                                  "",
                                  "2",
                                  stream_key(topic, p),
                                  counter_key(topic, p),
                                  std::to_string(messages.size()),
                                  std::to_string(options_.dedup_window.count())};
    args.reserve(args.size() + 6 * messages.size());
    for (const auto& m : messages) {
      if (m.delay || m.deliver_at_ms) {
        return Status::invalid_argument(
            "the redis backend cannot delay messages (delay, deliver_at_ms): Redis Streams deliver every "
            "entry to a group in order as soon as it is added");
      }
      if (auto s = check_message_options(m, now_ms()); !s.ok()) return s;
      args.push_back(m.payload.json());
      args.push_back(m.key ? "1" : "0");
      args.push_back(m.key.value_or(""));
      // A window of 0 (or less) turns deduplication off, as StoreOptions::dedup_window does.
      const bool deduplicate = m.dedup_id && options_.dedup_window.count() > 0;
      args.push_back(deduplicate ? "1" : "0");
      args.push_back(m.dedup_id.value_or(""));
      args.push_back(std::to_string(m.headers.size()));
      for (const auto& [name, value] : m.headers) {
        args.push_back(name);
        args.push_back(value);
      }
    }
    auto conn = lease();
    if (!conn.ok()) return conn.status();
    auto reply = run_script(*conn->connection, Script::kProduce, args);
    if (!reply.ok()) return reply.status();
    const redisReply* r = reply->get();
    if (!is_array(r) || r->elements != 3 || !is_array(r->element[0]) || !is_array(r->element[1]) ||
        !is_array(r->element[2]) || r->element[0]->elements != messages.size() ||
        r->element[1]->elements != messages.size()) {
      return Status::io_error("unexpected reply from Redis to the produce script");
    }
    ProduceResult result;
    result.partition = p;
    for (std::size_t i = 0; i < messages.size(); ++i) {
      auto offset = parse_u64(text_of(r->element[0]->element[i]));
      if (!offset) return Status::io_error("unexpected offset from the produce script");
      result.offsets.push_back(*offset);
      result.ids.emplace_back(text_of(r->element[1]->element[i]));
    }
    for (std::size_t i = 0; i < r->element[2]->elements; ++i) {
      auto index = parse_u64(text_of(r->element[2]->element[i]));
      if (!index || *index >= messages.size())
        return Status::io_error("unexpected duplicate from the produce script");
      result.duplicates.push_back(static_cast<std::size_t>(*index));
    }
    result.first_offset = result.offsets.front();
    return result;
  }

  Result<std::unique_ptr<Consumer>> consume(std::string_view topic, const ConsumeOptions& options) override {
    if (!is_valid_name(topic)) return invalid_name("topic", topic);
    if (!is_valid_name(options.group)) return invalid_name("group", options.group);
    std::vector<std::uint32_t> partitions;
    if (options.partitions.empty()) {
      for (std::uint32_t p = 0; p < options_.partitions; ++p) partitions.push_back(p);
    } else {
      for (auto p : options.partitions) {
        if (p >= options_.partitions) return partition_not_found(topic, p);
        if (std::find(partitions.begin(), partitions.end(), p) == partitions.end()) partitions.push_back(p);
      }
    }
    const milliseconds vt = options.visibility_timeout.value_or(options_.visibility_timeout);
    if (vt <= milliseconds(0)) return Status::invalid_argument("the visibility timeout must be positive");
    if (options.max_inflight == 0) return Status::invalid_argument("max_inflight must be at least 1");
    if (options.ordering == Ordering::kKey) {
      return Status::invalid_argument(
          "the redis backend cannot order by key (ordering=key): a Redis consumer group hands any "
          "pending entry to any consumer");
    }
    std::string name = options.consumer_name;
    if (name.empty()) name = default_client_name() + "-" + std::to_string(++unnamed_consumers);
    {
      std::lock_guard lock(mutex_);
      visibility_timeouts_[vt_key(topic, options.group)] = vt;
    }
    auto consumer =
        std::make_unique<RedisConsumer>(options_, std::string(topic), options.group, std::move(name),
                                        partitions, vt, options.max_inflight, options.from);
    if (Status s = consumer->start(); !s.ok()) return s;
    return std::unique_ptr<Consumer>(std::move(consumer));
  }

  Result<std::size_t> ack(std::span<const ReceivedMessage> messages) override {
    // (stream, group) -> ids
    std::map<std::pair<std::string, std::string>, std::vector<std::string>> batches;
    for (const auto& m : messages) {
      if (Status s = check_target(m); !s.ok()) return s;
      batches[{stream_key(m.topic, m.partition), m.group}].push_back(m.id);
    }
    if (batches.empty()) return std::size_t{0};
    std::vector<std::vector<std::string>> commands;
    for (auto& [target, ids] : batches) {
      std::vector<std::string> c{"XACK", target.first, target.second};
      c.insert(c.end(), ids.begin(), ids.end());
      commands.push_back(std::move(c));
    }
    auto conn = lease();
    if (!conn.ok()) return conn.status();
    auto replies = conn->connection->pipeline(commands);
    if (!replies.ok()) return replies.status();
    std::size_t acked = 0;
    std::vector<std::string> streams_to_check;  // of ids that XACK did not count
    std::vector<std::string> ids_to_check;
    auto batch = batches.begin();
    for (const auto& r : *replies) {
      if (r->type == REDIS_REPLY_ERROR) return status_from_redis_error(std::string_view(r->str, r->len));
      const auto n = static_cast<std::size_t>(std::max<long long>(0, integer_of(r.get()).value_or(0)));
      acked += n;
      if (n < batch->second.size()) {
        for (const auto& id : batch->second) {
          streams_to_check.push_back(batch->first.first);
          ids_to_check.push_back(id);
        }
      }
      ++batch;
    }
    if (!ids_to_check.empty()) {
      if (Status s = check_entries_exist(*conn->connection, streams_to_check, ids_to_check); !s.ok())
        return s;
    }
    return acked;
  }

  Status nack(const ReceivedMessage& message, milliseconds delay) override {
    if (Status s = check_target(message); !s.ok()) return s;
    long long idle = kDueNowIdleMs;
    if (delay > milliseconds(0)) {
      idle = std::max<long long>(0, (visibility_timeout_of(message.topic, message.group) - delay).count());
    }
    return reclaim(message, {"IDLE", std::to_string(idle), "JUSTID"}, "nack");
  }

  Status touch(const ReceivedMessage& message) override {
    if (Status s = check_target(message); !s.ok()) return s;
    return reclaim(message, {"JUSTID"}, "touch");
  }

  Result<ReadPage> read(std::string_view topic, std::uint32_t partition, const ReadFrom& from,
                        std::size_t limit) override {
    if (!is_valid_name(topic)) return invalid_name("topic", topic);
    if (Status s = check_read_arguments(from, limit); !s.ok()) return s;
    if (partition >= options_.partitions) return partition_not_found(topic, partition);
    const bool by_time = from.timestamp_ms.has_value();
    std::vector<std::string> args{
        "EVALSHA",
        "",
        "2",
        stream_key(topic, partition),
        counter_key(topic, partition),
        by_time ? "time" : "offset",
        by_time ? std::to_string(*from.timestamp_ms) : std::to_string(from.offset.value_or(0)),
        std::to_string(limit),
        std::to_string(kForeignEntryBudget)};
    auto conn = lease();
    if (!conn.ok()) return conn.status();
    auto reply = run_script(*conn->connection, Script::kRead, args);
    if (!reply.ok()) return read_error(reply.status());
    const redisReply* r = reply->get();
    if (!is_array(r) || r->elements != 3 || !is_array(r->element[2])) {
      return Status::io_error("unexpected reply from Redis to the read script");
    }
    auto log_start = parse_u64(text_of(r->element[0]));
    auto next = parse_u64(text_of(r->element[1]));
    if (!log_start || !next) return Status::io_error("unexpected offsets from the read script");
    ReadPage page{*log_start, *next, {}};
    const std::string topic_name(topic);
    const redisReply* entries = r->element[2];
    for (std::size_t i = 0; i < entries->elements; ++i) {
      auto m = parse_entry(entries->element[i], topic_name, "", partition);
      if (!m) return Status::io_error("unexpected entry from the read script");
      m->delivery = 0;  // read, not delivered
      page.messages.push_back(std::move(*m));
    }
    return page;
  }

  Result<std::uint64_t> seek(std::string_view topic, std::uint32_t partition, std::string_view group,
                             const SeekTarget& target) override {
    if (!is_valid_name(topic)) return invalid_name("topic", topic);
    if (!is_valid_name(group)) return invalid_name("group", group);
    if (Status s = check_seek_target(target); !s.ok()) return s;
    if (partition >= options_.partitions) return partition_not_found(topic, partition);
    std::string mode = "offset";
    std::string value = "0";
    if (target.offset) {
      value = std::to_string(*target.offset);
    } else if (target.timestamp_ms) {
      mode = "time";
      value = std::to_string(*target.timestamp_ms);
    } else {
      mode = *target.position == SeekTarget::Position::kEarliest ? "earliest" : "latest";
    }
    std::vector<std::string> args{
        "EVALSHA",          "",   "2",   stream_key(topic, partition),       counter_key(topic, partition),
        std::string(group), mode, value, std::to_string(kForeignEntryBudget)};
    auto conn = lease();
    if (!conn.ok()) return conn.status();
    auto reply = run_script(*conn->connection, Script::kSeek, args);
    if (!reply.ok()) return read_error(reply.status());
    auto position = parse_u64(text_of(reply->get()));
    if (!position) return Status::io_error("unexpected reply from Redis to the seek script");
    return *position;
  }

  Result<std::uint64_t> redrive(std::string_view, std::uint32_t, std::optional<std::uint64_t>) override {
    return Status::invalid_argument(
        "the redis backend keeps no dead letters (messages are retried until acknowledged): nothing to "
        "redrive");
  }

  Result<bool> delete_group(std::string_view topic, std::string_view group) override {
    if (!is_valid_name(topic)) return invalid_name("topic", topic);
    if (!is_valid_name(group)) return invalid_name("group", group);
    auto conn = lease();
    if (!conn.ok()) return conn.status();
    bool deleted = false;
    for (std::uint32_t partition = 0; partition < options_.partitions; ++partition) {
      // A stream nobody produced to has no groups: Redis refuses XGROUP on a missing key.
      auto exists = conn->connection->command({"EXISTS", stream_key(topic, partition)});
      if (!exists.ok()) return exists.status();
      if (integer_of(exists->get()).value_or(0) == 0) continue;
      auto reply =
          conn->connection->command({"XGROUP", "DESTROY", stream_key(topic, partition), std::string(group)});
      if (!reply.ok()) return reply.status();
      deleted = deleted || integer_of(reply->get()).value_or(0) == 1;
    }
    return deleted;
  }

  Result<std::vector<TopicStats>> stats(std::optional<std::string_view>) override {
    return Status::invalid_argument(
        "the redis backend keeps no statistics of topics and groups (see /stats of mqd)");
  }

  std::string_view backend_name() const override { return "redis"; }

 private:
  // A connection taken from the pool; back into it when destroyed unless broken.
  struct Lease {
    RedisQueue* queue;
    std::unique_ptr<RedisConnection> connection;
    Lease(RedisQueue* q, std::unique_ptr<RedisConnection> c) : queue(q), connection(std::move(c)) {}
    Lease(Lease&& other) noexcept : queue(other.queue), connection(std::move(other.connection)) {}
    Lease& operator=(Lease&&) = delete;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() {
      if (connection && !connection->broken()) queue->give_back(std::move(connection));
    }
  };

  Result<Lease> lease() {
    {
      std::lock_guard lock(mutex_);
      while (!pool_.empty()) {
        auto c = std::move(pool_.back());
        pool_.pop_back();
        if (c->idle_and_healthy()) return Lease(this, std::move(c));
      }
    }
    auto c = RedisConnection::connect(options_, options_.request_timeout);
    if (!c.ok()) return c.status();
    return Lease(this, std::move(c).value());
  }

  void give_back(std::unique_ptr<RedisConnection> c) {
    std::lock_guard lock(mutex_);
    if (pool_.size() < kPoolMax) pool_.push_back(std::move(c));
  }

  // EVALSHA `args` (args[1] is filled with the SHA1 of `script`), loading the script when needed.
  Result<ReplyPtr> run_script(RedisConnection& conn, Script script, std::vector<std::string>& args) {
    const auto index = static_cast<std::size_t>(script);
    std::string sha;
    {
      std::lock_guard lock(mutex_);
      sha = script_shas_[index];
    }
    for (int attempt = 0;; ++attempt) {
      if (sha.empty()) {
        auto loaded = conn.command({"SCRIPT", "LOAD", script_source(script)});
        if (!loaded.ok() && conn.broken()) {  // nothing of the call itself was sent
          return Status::unavailable(loaded.status().message());
        }
        if (!loaded.ok()) return loaded.status();
        sha = std::string(text_of(loaded->get()));
        std::lock_guard lock(mutex_);
        script_shas_[index] = sha;
      }
      args[1] = sha;
      auto r = conn.command(args);
      if (!r.ok() && redis_error_code(r.status()) == "NOSCRIPT" && attempt == 0) {
        sha.clear();  // Redis restarted or SCRIPT FLUSH: load it again
        continue;
      }
      return r;
    }
  }

  // XPENDING for the message's id, then XCLAIM to its owner with `extra` options.
  Status reclaim(const ReceivedMessage& message, std::vector<std::string> extra, std::string_view what) {
    const std::string key = stream_key(message.topic, message.partition);
    auto conn = lease();
    if (!conn.ok()) return conn.status();
    RedisConnection& c = *conn->connection;
    auto pending = c.command({"XPENDING", key, message.group, message.id, message.id, "1"});
    if (!pending.ok()) {
      if (redis_error_code(pending.status()) == "NOGROUP") return not_in_flight(message, what);
      return pending.status();
    }
    const redisReply* list = pending->get();
    if (!is_array(list) || list->elements == 0 || !is_array(list->element[0]) ||
        list->element[0]->elements < 4) {
      return not_in_flight(message, what);
    }
    const redisReply* e = list->element[0];
    std::vector<std::string> claim{"XCLAIM",
                                   key,
                                   message.group,
                                   std::string(text_of(e->element[1])),
                                   std::to_string(integer_of(e->element[2]).value_or(0)),
                                   message.id};
    claim.insert(claim.end(), extra.begin(), extra.end());
    auto claimed = c.command(claim);
    if (!claimed.ok()) return claimed.status();
    if (!is_array(claimed->get()) || claimed->get()->elements == 0) return not_in_flight(message, what);
    return {};
  }

  // XACK counts a message that exists but was acknowledged already like one that never existed:
  // tell them apart (queue.h promises kNotFound for the second, as mqd answers 404). Only called
  // when XACK counted fewer than it was given, so an ordinary ack costs nothing more.
  static Status check_entries_exist(RedisConnection& c, const std::vector<std::string>& streams,
                                    const std::vector<std::string>& ids) {
    std::vector<std::vector<std::string>> ranges;
    for (std::size_t i = 0; i < ids.size(); ++i) ranges.push_back({"XRANGE", streams[i], ids[i], ids[i]});
    auto replies = c.pipeline(ranges);
    if (!replies.ok()) return replies.status();
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const redisReply* r = (*replies)[i].get();
      if (r->type == REDIS_REPLY_ERROR) return status_from_redis_error(std::string_view(r->str, r->len));
      if (is_array(r) && r->elements > 0) continue;
      return Status::not_found("cannot acknowledge " + ids[i] + ": stream " + streams[i] +
                               " has no such entry (the other ids of this call have been acknowledged)");
    }
    return {};
  }

  static Status not_in_flight(const ReceivedMessage& m, std::string_view what) {
    return Status::conflict("cannot " + std::string(what) + " message " + m.id + " of " + m.topic + "/" +
                            std::to_string(m.partition) + " in group " + m.group + ": it is not in flight");
  }

  Status check_target(const ReceivedMessage& m) const {
    if (!is_valid_name(m.topic)) return invalid_name("topic", m.topic);
    if (!is_valid_name(m.group)) return invalid_name("group", m.group);
    if (m.partition >= options_.partitions) return partition_not_found(m.topic, m.partition);
    if (!entry_id_ms(m.id)) return Status::not_found("\"" + m.id + "\" is not a Redis stream entry id");
    return {};
  }

  milliseconds visibility_timeout_of(std::string_view topic, std::string_view group) {
    std::lock_guard lock(mutex_);
    auto it = visibility_timeouts_.find(vt_key(topic, group));
    return it != visibility_timeouts_.end() ? it->second : options_.visibility_timeout;
  }

  static std::string vt_key(std::string_view topic, std::string_view group) {
    return std::string(topic) + "/" + std::string(group);
  }
  static Status invalid_name(std::string_view what, std::string_view name) {
    return Status::invalid_argument("invalid " + std::string(what) + " name \"" + std::string(name) + "\"");
  }
  ProduceBatcher& batcher() override { return batcher_; }

  Result<std::uint32_t> key_partition(std::string_view topic, std::string_view key) override {
    if (!is_valid_name(topic)) return invalid_name("topic", topic);
    return partition_for_key(key, options_.partitions);
  }

  Status partition_not_found(std::string_view topic, std::uint32_t p) const {
    return Status::not_found("topic " + std::string(topic) + " has no partition " + std::to_string(p) +
                             " (it has " + std::to_string(options_.partitions) + ")");
  }

  const RedisQueueOptions options_;
  std::atomic<std::uint32_t> round_robin_{0};
  std::mutex mutex_;
  std::vector<std::unique_ptr<RedisConnection>> pool_;  // idle connections; guarded by mutex_
  std::array<std::string, kScripts> script_shas_;       // by Script; guarded by mutex_
  // "<topic>/<group>" -> the visibility timeout of the latest consumer made here; guarded by mutex_
  std::map<std::string, milliseconds, std::less<>> visibility_timeouts_;
  ProduceBatcher batcher_;  // last: destroyed first, while what it sends through still stands
};

}  // namespace

Result<std::unique_ptr<Queue>> make_redis_queue(RedisQueueOptions options) {
  if (options.host.empty()) return Status::invalid_argument("RedisQueueOptions::host is empty");
  if (options.port == 0) return Status::invalid_argument("RedisQueueOptions::port is 0");
  if (options.partitions == 0 || options.partitions > 65536) {
    return Status::invalid_argument("RedisQueueOptions::partitions must be in [1, 65536]");
  }
  if (options.connect_timeout <= milliseconds(0)) {
    return Status::invalid_argument("RedisQueueOptions::connect_timeout must be positive");
  }
  if (options.request_timeout <= milliseconds(0)) {
    return Status::invalid_argument("RedisQueueOptions::request_timeout must be positive");
  }
  if (options.visibility_timeout <= milliseconds(0)) {
    return Status::invalid_argument("RedisQueueOptions::visibility_timeout must be positive");
  }
  if (auto s = ProduceBatcher::check(options.producer); !s.ok()) return s;
  return std::unique_ptr<Queue>(std::make_unique<RedisQueue>(std::move(options)));
}

}  // namespace mq::detail

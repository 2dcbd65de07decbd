#include "groups/redriver.h"

#include <simdjson.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "common/names.h"
#include "storage/file_replace.h"
#include "storage/internal_access.h"
#include "storage/record_format.h"

namespace mq::detail {
namespace {

// Letters are read this many at a time (a run is at most one read).
constexpr std::size_t kReadMessages = 1000;
constexpr std::size_t kReadBytes = 8 << 20;

std::string file_name(std::uint32_t partition) { return "partition-" + std::to_string(partition) + ".json"; }

// A dead letter as it goes back: the message as it was stored before it was dead-lettered, and
// where to.
struct Letter {
  Message message;
  std::string topic;
  std::uint32_t partition = 0;
};

class LetterReader {
 public:
  explicit LetterReader(std::uint32_t dead_letter_partition) : partition_(dead_letter_partition) {}

  // nullopt for a message without a readable source (produced to the dead-letter topic by hand).
  std::optional<Letter> read(const StoredMessage& stored) {
    auto fields = records_.produced_fields(stored.line);
    if (!fields || !fields->source_json) return std::nullopt;
    simdjson::dom::element source;
    std::string_view topic;
    std::uint64_t partition = 0;
    if (parser_.parse(*fields->source_json).get(source) || source["topic"].get_string().get(topic) ||
        source["partition"].get_uint64().get(partition) ||
        partition > std::numeric_limits<std::uint32_t>::max() || !is_valid_name(topic))
      return std::nullopt;
    Letter letter{
        Message{PayloadInternal::from_minified_json(std::move(fields->payload_json)), std::move(fields->key)},
        std::string(topic), static_cast<std::uint32_t>(partition)};
    letter.message.headers = std::move(fields->headers);
    // The dead letter of a dead letter goes back as the dead letter it was, source and all.
    simdjson::dom::element earlier;
    if (!source["source"].get(earlier))
      letter.message.source = PayloadInternal::from_minified_json(simdjson::minify(earlier));
    letter.message.dedup_id = Redriver::marker(partition_, stored.offset);
    return letter;
  }

 private:
  const std::uint32_t partition_;
  RecordValidator records_;
  simdjson::dom::parser parser_;
};

}  // namespace

Redriver::Redriver(FileSystem& fs, std::string dir, std::uint32_t partition, Partition& letters, bool durable,
                   ResolveSource resolve, Append append, std::optional<Replication> replication)
    : fs_(fs),
      dir_(std::move(dir)),
      partition_(partition),
      letters_(letters),
      durable_(durable),
      resolve_(std::move(resolve)),
      append_(std::move(append)),
      replication_(std::move(replication)) {}

std::string Redriver::position_record(std::uint64_t position) {
  return "{\"position\":" + std::to_string(position) + "}";
}

std::optional<std::uint64_t> Redriver::position_of(std::string_view record) {
  simdjson::dom::parser parser;
  simdjson::dom::object object;
  std::uint64_t position = 0;
  if (parser.parse(record.data(), record.size()).get(object) || object.size() != 1 ||
      object["position"].get_uint64().get(position))
    return std::nullopt;
  return position;
}

std::string Redriver::marker(std::uint32_t partition, std::uint64_t letter_offset) {
  return std::string(kRedriveDedupIdPrefix) + std::to_string(partition) + ":" + std::to_string(letter_offset);
}

Result<std::uint64_t> Redriver::redrive(std::optional<std::uint64_t> limit) {
  std::optional<StateTicket> ticket;
  Result<std::uint64_t> redriven = std::uint64_t{0};
  {
    std::lock_guard lock(mutex_);
    // Refused before anything is done when the position could not be confirmed now.
    if (replication_) {
      if (auto s = replication_->writable(); !s.ok()) return s;
    }
    redriven = redrive_locked(limit, ticket);
    // No run went: the position as it is, which an earlier call may have moved and failed to
    // confirm. (Not loaded: a run's outcome is unknown, the next call settles it first.)
    if (replication_ && !ticket && redriven.ok() && loaded_) {
      auto published = publish_locked();
      if (!published.ok()) return published.status();
      ticket = *published;
    }
  }
  // Waited for outside the lock: a follower's apply takes it (replace_position).
  if (!ticket) return redriven;
  const Status confirmed = replication_->confirm(*ticket);
  // Letters went back whose position is not confirmed: that is the answer, whatever stopped the
  // call (a plain error would say nothing was done).
  if (!confirmed.ok()) return confirmed;
  return redriven;
}

Result<StateTicket> Redriver::publish_locked() {
  auto ticket = replication_->publish(position_);
  if (ticket.ok()) return ticket;
  return Status::unconfirmed(
      "the redrive position moved on this broker but was not handed to its followers (" +
      ticket.status().message() + "); retry the redrive");
}

Status Redriver::replace_position(std::uint64_t position) {
  std::lock_guard lock(mutex_);
  loaded_ = false;  // read again should the write fail part-way
  if (auto s = save_locked(position, std::nullopt); !s.ok()) return s;
  position_ = position;
  loaded_ = true;
  return {};
}

std::optional<std::uint64_t> Redriver::loaded_position() {
  std::unique_lock lock(mutex_, std::try_to_lock);
  if (!lock.owns_lock() || !loaded_) return std::nullopt;
  return position_;
}

Result<std::uint64_t> Redriver::stored_position(FileSystem& fs, const std::string& dir,
                                                std::uint32_t partition) {
  const std::string path = dir + "/" + file_name(partition);
  if (!fs.exists(path)) return std::uint64_t{0};
  auto text = read_whole_file(fs, path);
  if (!text.ok()) return text.status();
  simdjson::dom::parser parser;
  simdjson::dom::element state;
  std::uint64_t position = 0;
  if (parser.parse(*text).get(state) || state["position"].get_uint64().get(position))
    return Status::corruption(path + " is not a valid redrive position");
  return position;
}

Result<std::uint64_t> Redriver::redrive_locked(std::optional<std::uint64_t> limit,
                                               std::optional<StateTicket>& ticket) {
  if (!loaded_) {
    if (auto s = load_locked(); !s.ok()) return s;
    loaded_ = true;
  }
  std::uint64_t remaining = limit.value_or(std::numeric_limits<std::uint64_t>::max());
  std::uint64_t redriven = 0;
  LetterReader reader(partition_);
  for (bool first_run = true; remaining > 0; first_run = false) {
    // Stopped leading meanwhile, or too few in sync: what went so far is the answer.
    if (replication_ && !first_run && !replication_->writable().ok()) break;
    const std::uint64_t from = std::max(position_, letters_.log_start_offset());
    if (from >= letters_.next_offset()) break;
    auto batch = letters_.read(
        from, static_cast<std::size_t>(std::min<std::uint64_t>(remaining, kReadMessages)), kReadBytes);
    if (!batch.ok()) {
      if (batch.status().code() == ErrorCode::kNotFound && from < letters_.log_start_offset()) continue;
      return batch.status();  // (retention deleted `from` meanwhile: the next read starts past it)
    }
    // One run: the letters from `from` on that go to the same source partition, and any without a
    // source among them (stepped over).
    std::vector<Message> run;
    std::optional<std::uint64_t> first;  // the run's first letter that goes back
    std::string topic;
    std::uint32_t partition = 0;
    std::uint64_t end = from;
    for (const StoredMessage& stored : *batch) {
      if (run.size() == remaining) break;
      auto letter = reader.read(stored);
      if (letter) {
        if (!first) {
          first = stored.offset;
          topic = letter->topic;
          partition = letter->partition;
        } else if (letter->topic != topic || letter->partition != partition) {
          break;
        }
        run.push_back(std::move(letter->message));
      }
      end = stored.offset + 1;
    }
    if (run.empty()) {  // only letters without a source
      if (auto s = save_locked(end, std::nullopt); !s.ok()) return s;
      position_ = end;
      if (replication_) {
        auto published = publish_locked();
        if (!published.ok()) return published.status();
        ticket = *published;
      }
      continue;
    }
    auto source = resolve_(topic, partition);
    if (!source.ok()) return source.status();
    // Where the run will land: the source log's own end (a read limit hides the newest lines).
    const Pending pending{end, topic, partition, (*source)->log_end_offset(), *first};
    if (auto s = save_locked(position_, pending); !s.ok()) return s;
    auto appended = append_(**source, run);
    // The new position is written only once the run is as durable as it (with FSYNC=interval an
    // append returns before its sync: a power cut must not leave the position past letters the
    // source lost).
    Status stored = appended.ok() && durable_ ? (*source)->sync() : appended.status();
    if (!stored.ok()) {
      // Stored or not (a failed fdatasync leaves it open): the next call (or the next start)
      // settles the pending run from the file, counting it only once the source syncs.
      loaded_ = false;
      return stored;
    }
    if (auto s = save_locked(end, std::nullopt); !s.ok()) {
      loaded_ = false;  // the file still says pending: the next call finds the run appended
      return s;
    }
    position_ = end;
    if (replication_) {
      auto published = publish_locked();
      if (!published.ok()) return published.status();
      ticket = *published;
    }
    // A duplicate is a message whose marker the source holds already: this letter went back before.
    redriven += run.size() - appended->duplicates.size();
    remaining -= std::min<std::uint64_t>(remaining, run.size());
  }
  return redriven;
}

Status Redriver::settle() {
  std::lock_guard lock(mutex_);
  if (loaded_) return {};
  if (auto s = load_locked(); !s.ok()) return s;
  loaded_ = true;
  return {};
}

Status Redriver::load_locked() {
  const std::string path = dir_ + "/" + file_name(partition_);
  position_ = 0;
  if (!fs_.exists(path)) return {};
  auto text = read_whole_file(fs_, path);
  if (!text.ok()) return text.status();
  simdjson::dom::parser parser;
  simdjson::dom::element state;
  simdjson::dom::element pending_json;
  Pending pending;
  std::string_view topic;
  std::uint64_t partition = 0;
  // Replaced whole (by rename): anything but what save_locked writes is damage, not a torn write.
  const Status corrupt = Status::corruption(path + " is not a valid redrive position");
  if (parser.parse(*text).get(state) || state["position"].get_uint64().get(position_)) return corrupt;
  if (state["pending"].get(pending_json)) return {};
  if (pending_json["to"].get_uint64().get(pending.to) || pending_json["topic"].get_string().get(topic) ||
      pending_json["partition"].get_uint64().get(partition) ||
      pending_json["from"].get_uint64().get(pending.from) ||
      pending_json["first"].get_uint64().get(pending.first) ||
      partition > std::numeric_limits<std::uint32_t>::max())
    return corrupt;
  pending.topic = std::string(topic);
  pending.partition = static_cast<std::uint32_t>(partition);
  return settle_locked(pending);
}

Status Redriver::settle_locked(const Pending& pending) {
  auto source = resolve_(pending.topic, pending.partition);
  if (!source.ok()) return source.status();
  Partition& log = **source;
  const std::string wanted = marker(partition_, pending.first);
  // Appended at or after `from`, if at all. Retention may have deleted some of what came after
  // `from` meanwhile: then the run may be among what went, and counts as appended (at most once).
  bool appended = log.log_start_offset() > pending.from;
  std::optional<std::uint64_t> found;  // where the run's first message is
  // The whole stored log, past any read limit: a run stored above a replica's high watermark is stored.
  for (std::uint64_t offset = pending.from; !appended && offset < log.log_end_offset();) {
    offset = std::max(offset, log.log_start_offset());
    auto batch = log.read_past_limit(offset, kReadMessages, kReadBytes);
    if (!batch.ok()) {
      if (batch.status().code() == ErrorCode::kNotFound && offset < log.log_start_offset()) {
        appended = true;
        break;
      }
      return batch.status();
    }
    if (batch->empty()) break;
    for (const StoredMessage& stored : *batch) {
      auto options = parse_record_options(stored.line);
      if (options && options->dedup_id == wanted) {
        appended = true;
        found = stored.offset;
        break;
      }
      offset = stored.offset + 1;
    }
  }
  if (found && *found >= log.next_offset()) {
    // Replicated: stored here, above the source's high watermark (its in-sync replicas do not all
    // hold it yet): a failover of the source may still lose it. Pending until they do, or until a
    // new leader's log (without it) says it was not stored.
    return Status::unavailable("the redrive run at " + pending.topic + "/" +
                               std::to_string(pending.partition) + " offset " + std::to_string(*found) +
                               " is not confirmed by its partition's replicas yet; retry");
  }
  if (appended) {
    // Found in the page cache is not found on disk: after a failed fdatasync the run stays pending
    // until the source syncs (a partition whose sync failed refuses until recovery has read it).
    if (auto s = log.sync(); !s.ok()) return s;
    position_ = pending.to;
  }
  return save_locked(position_, std::nullopt);
}

Status Redriver::save_locked(std::uint64_t position, const std::optional<Pending>& pending) {
  if (auto s = fs_.create_directories(dir_); !s.ok()) return s;
  std::string text = "{\"position\":" + std::to_string(position);
  if (pending) {
    text += ",\"pending\":{\"to\":" + std::to_string(pending->to) + ",\"topic\":";
    append_json_string(text, pending->topic);
    text += ",\"partition\":" + std::to_string(pending->partition) +
            ",\"from\":" + std::to_string(pending->from) + ",\"first\":" + std::to_string(pending->first) +
            "}";
  }
  text += "}\n";
  return replace_file(fs_, dir_, file_name(partition_), text, durable_);
}

}  // namespace mq::detail

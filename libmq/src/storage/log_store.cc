#include "mq/log_store.h"
#include "common/names.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "storage/segmented_log.h"

namespace mq {
namespace {

constexpr std::string_view kLogPrefix = "partition-";
constexpr std::string_view kLogSuffix = ".log";

// The N of "partition-N.log" (the active segment) or "partition-N.<first offset>.log" (a sealed one);
// nullopt for any other name.
std::optional<std::uint32_t> partition_of_log_name(std::string_view name) {
  if (!name.starts_with(kLogPrefix) || !name.ends_with(kLogSuffix)) return std::nullopt;
  name.remove_prefix(kLogPrefix.size());
  name.remove_suffix(kLogSuffix.size());
  if (const auto dot = name.find('.'); dot != std::string_view::npos) {
    if (!detail::sealed_first_offset(std::string(kLogPrefix) + std::string(name) + std::string(kLogSuffix),
                                     std::string(kLogPrefix) + std::string(name.substr(0, dot)), kLogSuffix))
      return std::nullopt;
    name = name.substr(0, dot);
  }
  std::uint32_t n = 0;
  auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), n);
  if (name.empty() || ec != std::errc() || end != name.data() + name.size()) return std::nullopt;
  return n;
}

// An exclusive lock on <data_dir>/.lock for the life of the store, so that a second process (another
// mqd, an in-process Broker) given the same directory stops at once instead of writing messages
// the first never sees and confirming offsets twice. flock() locks die with the process, so a
// crash leaves nothing to clean up.
class DataDirLock {
 public:
  static Result<std::unique_ptr<DataDirLock>> acquire(const std::string& data_dir) {
    const std::string path = data_dir + "/.lock";
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
      return Status::io_error("DATA_DIR '" + data_dir + "': cannot open " + path + ": " +
                              std::strerror(errno));
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int error = errno;
      char holder[32] = {};
      const ssize_t n = ::pread(fd, holder, sizeof holder - 1, 0);
      ::close(fd);
      std::string pid = n > 0 ? std::string(holder, static_cast<std::size_t>(n)) : "unknown";
      while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
      if (error == EWOULDBLOCK) {
        return Status::io_error("DATA_DIR '" + data_dir + "' is in use by another process (pid " + pid +
                                "): one process owns a data directory at a time");
      }
      return Status::io_error("DATA_DIR '" + data_dir + "': cannot lock " + path + ": " +
                              std::strerror(error));
    }
    // Our pid, for the message a second opener prints. Best effort: the lock is what counts.
    const std::string pid = std::to_string(::getpid()) + "\n";
    if (::ftruncate(fd, 0) == 0) (void)!::pwrite(fd, pid.data(), pid.size(), 0);
    return std::unique_ptr<DataDirLock>(new DataDirLock(fd));
  }
  ~DataDirLock() { ::close(fd_); }  // releases the lock
  DataDirLock(const DataDirLock&) = delete;
  DataDirLock& operator=(const DataDirLock&) = delete;

 private:
  explicit DataDirLock(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace

struct LogStore::State {
  StoreOptions options;
  std::shared_ptr<FileSystem> fs;
  std::unique_ptr<DataDirLock> dir_lock;  // released last, after every file is closed

  std::mutex mutex;
  // Keyed by (topic, partition). Partitions are never removed before the store closes.
  std::map<std::pair<std::string, std::uint32_t>, std::unique_ptr<Partition>, std::less<>>
      partitions;  // GUARDED_BY(mutex)

  // FsyncMode::kInterval: one thread syncs every partition that has unsynced bytes each period.
  std::thread syncer;
  std::condition_variable syncer_cv;
  bool stopping = false;  // GUARDED_BY(mutex)

  std::vector<Partition*> open_partitions() {
    std::lock_guard lock(mutex);
    std::vector<Partition*> out;
    for (auto& [key, p] : partitions) out.push_back(p.get());
    return out;
  }

  void run_syncer() {
    std::unique_lock lock(mutex);
    while (!stopping) {
      syncer_cv.wait_for(lock, options.fsync_interval, [&] { return stopping; });
      if (stopping) break;
      lock.unlock();
      for (Partition* p : open_partitions()) (void)p->log_->sync(/*only_if_behind=*/true);
      lock.lock();
    }
  }
};

LogStore::LogStore(std::unique_ptr<State> state) : state_(std::move(state)) {
  if (state_->options.fsync == FsyncMode::kInterval) {
    state_->syncer = std::thread([s = state_.get()] { s->run_syncer(); });
  }
}

LogStore::~LogStore() {
  {
    std::lock_guard lock(state_->mutex);
    state_->stopping = true;
  }
  state_->syncer_cv.notify_all();
  if (state_->syncer.joinable()) state_->syncer.join();
  state_->partitions.clear();  // each partition syncs what it has written as it closes
}

Result<std::unique_ptr<LogStore>> LogStore::open(StoreOptions options) {
  auto state = std::make_unique<State>();
  state->fs = options.file_system ? options.file_system : make_posix_file_system();
  if (options.data_dir.empty()) return Status::invalid_argument("DATA_DIR must not be empty");
  if (options.index_interval_bytes == 0) options.index_interval_bytes = 1;
  while (options.data_dir.size() > 1 && options.data_dir.back() == '/') options.data_dir.pop_back();
  if (auto s = state->fs->create_directories(options.data_dir); !s.ok()) {
    return Status::io_error("DATA_DIR '" + options.data_dir + "' cannot be created: " + s.message());
  }
  auto lock = DataDirLock::acquire(options.data_dir);
  if (!lock.ok()) return lock.status();
  state->dir_lock = std::move(lock.value());
  // Prove the directory is writable now rather than at the first produce.
  const std::string probe = options.data_dir + "/.write-test";
  auto file = state->fs->open(probe);
  Status writable = file.ok() ? (*file)->append("ok") : file.status();
  (void)state->fs->remove(probe);
  if (!writable.ok()) {
    return Status::io_error("DATA_DIR '" + options.data_dir + "' is not writable: " + writable.message());
  }
  state->options = std::move(options);
  return std::unique_ptr<LogStore>(new LogStore(std::move(state)));
}

std::string LogStore::log_path(const std::string& data_dir, std::string_view topic, std::uint32_t index) {
  return data_dir + "/" + std::string(topic) + "/partition-" + std::to_string(index) + ".log";
}

Result<Partition*> LogStore::partition(std::string_view topic, std::uint32_t index) {
  return partition(topic, index, TopicSettings{});
}

Result<Partition*> LogStore::partition(std::string_view topic, std::uint32_t index,
                                       const TopicSettings& settings) {
  if (!is_valid_name(topic)) {
    return detail::invalid_name("topic name", topic);
  }
  // Opening holds the store's lock: it happens once per partition, and two callers must not
  // recover the same files at once.
  std::lock_guard lock(state_->mutex);
  if (state_->stopping) return Status::shutting_down("the log store is closing");
  auto key = std::pair(std::string(topic), index);
  if (auto it = state_->partitions.find(key); it != state_->partitions.end()) return it->second.get();

  StoreOptions options = state_->options;
  options.segment_bytes = settings.segment_bytes.value_or(options.segment_bytes);
  auto impl = detail::SegmentedLog::open(*state_->fs, options, options.data_dir + "/" + std::string(topic),
                                         "partition-" + std::to_string(index), std::string(topic), index);
  if (!impl.ok()) return impl.status();
  auto partition = std::unique_ptr<Partition>(new Partition(std::move(impl.value())));
  Partition* raw = partition.get();
  state_->partitions.emplace(std::move(key), std::move(partition));
  return raw;
}

Result<std::uint32_t> LogStore::partitions_on_disk(std::string_view topic) const {
  if (!is_valid_name(topic)) return detail::invalid_name("topic name", topic);
  auto names = state_->fs->list_directory(state_->options.data_dir + "/" + std::string(topic));
  if (!names.ok()) return names.status();
  std::uint32_t count = 0;
  for (const auto& name : *names) {
    if (auto n = partition_of_log_name(name)) count = std::max(count, *n + 1);
  }
  return count;
}

Result<std::vector<std::string>> LogStore::topics_on_disk() const {
  std::vector<std::string> topics;
  auto names = state_->fs->list_directory(state_->options.data_dir);
  if (!names.ok()) return names.status();
  for (const auto& name : *names) {
    if (!is_valid_name(name)) continue;
    auto partitions = partitions_on_disk(name);
    if (!partitions.ok()) return partitions.status();
    if (*partitions > 0) topics.push_back(name);
  }
  std::sort(topics.begin(), topics.end());
  return topics;
}

Status LogStore::sync_all() {
  Status first_error;
  for (Partition* p : state_->open_partitions()) {
    if (auto s = p->sync(); !s.ok() && first_error.ok()) first_error = s;
  }
  return first_error;
}

void LogStore::interrupt_waiters() {
  for (Partition* p : state_->open_partitions()) p->interrupt_waiters();
}

const StoreOptions& LogStore::options() const { return state_->options; }

}  // namespace mq

#include "storage/bounded_file_system.h"

#include <atomic>
#include <shared_mutex>
#include <vector>

namespace mq::detail {

// A file that opens its descriptor on use. Operations share `use_mutex_`; closing the descriptor
// takes it exclusively, so a descriptor is never closed under an operation.
class BoundedFileSystem::PooledFile final : public File {
 public:
  PooledFile(std::shared_ptr<BoundedFileSystem> owner, std::string path, std::unique_ptr<File> opened)
      : owner_(std::move(owner)), path_(std::move(path)), inner_(std::move(opened)) {}
  ~PooledFile() override { owner_->forget(this); }

  Status append(std::string_view data) override {
    return use([&](File& f) {
      auto result = f.append(data);
      ++changes_;  // after: a sync that reads it must come after the write
      return result;
    });
  }
  Status sync() override {
    return use([&](File& f) {
      const std::uint64_t covered = changes_.load();
      // After a failed fdatasync the next one on the same descriptor reports success, the failed
      // pages possibly gone: the first failure is this file's answer from then on.
      if (Status failed = sync_failure(); !failed.ok()) return failed;
      Status s = f.sync();
      if (s.ok()) {
        raise_synced(covered);
      } else {
        remember_sync_failure(s);
      }
      return s;
    });
  }
  Status read(std::uint64_t position, std::size_t length, std::string& out) const override {
    return use([&](File& f) { return f.read(position, length, out); });
  }
  Result<std::uint64_t> size() const override {
    return use([&](File& f) { return f.size(); });
  }
  Status truncate(std::uint64_t length) override {
    return use([&](File& f) {
      auto result = f.truncate(length);
      ++changes_;  // after: a sync that reads it must come after the write
      return result;
    });
  }
  Status write_at(std::uint64_t position, std::string_view data) override {
    return use([&](File& f) {
      auto result = f.write_at(position, data);
      ++changes_;  // after: a sync that reads it must come after the write
      return result;
    });
  }
  bool preallocate(std::uint64_t length) override {
    auto done = use([&](File& f) -> Result<bool> {
      auto result = f.preallocate(length);
      ++changes_;  // after: a sync that reads it must come after the write
      return result;
    });
    return done.ok() && *done;
  }

  // Closes the descriptor if no operation uses it and what it wrote is synced (an index need not
  // be). False when it stays open.
  bool try_close() {
    std::unique_lock lock(use_mutex_, std::try_to_lock);
    if (!lock.owns_lock() || !inner_) return false;
    // An index is a shortcut that every open checks and rebuilds when wrong: losing its unsynced
    // bytes (or a write error on them) costs nothing, so it is closed without a sync. Closing any
    // other unsynced descriptor could lose a write error with it (a later descriptor's fsync does
    // not report it): sync_for_close() first.
    if (dirty()) return false;
    inner_.reset();
    return true;
  }
  bool dirty() const { return synced_.load() != changes_.load() && !path_.ends_with(".index"); }
  // Syncs what was written through the open descriptor, for try_close(); false when the sync
  // failed: the file then stays open and dirty, and every later sync() reports the failure.
  bool sync_for_close() {
    std::shared_lock lock(use_mutex_);
    if (!inner_ || !sync_failure().ok()) return !inner_;
    const std::uint64_t covered = changes_.load();
    if (synced_.load() == covered) return true;
    if (Status s = inner_->sync(); !s.ok()) {
      remember_sync_failure(s);
      return false;
    }
    raise_synced(covered);
    return true;
  }

 private:
  template <typename Op>
  auto use(Op op) const -> decltype(op(std::declval<File&>())) {
    while (true) {
      {
        std::shared_lock lock(use_mutex_);
        if (inner_) {
          owner_->touched(const_cast<PooledFile*>(this), /*newly_open=*/false);
          return op(*inner_);
        }
      }
      {
        std::unique_lock lock(use_mutex_);
        if (!inner_) {
          auto file = owner_->base_->open(path_);
          if (!file.ok()) return file.status();
          inner_ = std::move(file.value());
        }
      }
      owner_->touched(const_cast<PooledFile*>(this), /*newly_open=*/true);
    }
  }
  Status sync_failure() const {
    std::lock_guard lock(failure_mutex_);
    return sync_failure_;
  }
  void remember_sync_failure(const Status& status) {
    std::lock_guard lock(failure_mutex_);
    if (sync_failure_.ok()) sync_failure_ = status;
  }
  void raise_synced(std::uint64_t covered) {
    std::uint64_t seen = synced_.load();
    while (seen < covered && !synced_.compare_exchange_weak(seen, covered)) {
    }
  }

  const std::shared_ptr<BoundedFileSystem> owner_;
  const std::string path_;
  mutable std::shared_mutex use_mutex_;
  mutable std::unique_ptr<File> inner_;            // GUARDED_BY(use_mutex_): null while closed
  mutable std::atomic<std::uint64_t> changes_{0};  // appends and truncates so far
  std::atomic<std::uint64_t> synced_{0};           // changes_ covered by the last successful sync
  mutable std::mutex failure_mutex_;
  Status sync_failure_;  // GUARDED_BY(failure_mutex_): the first failed sync, reported by every later one

 public:
  std::list<PooledFile*>::iterator lru_position;  // in owner_->open_, while open; GUARDED_BY(owner_->mutex_)
  bool listed = false;                            // GUARDED_BY(owner_->mutex_)
  bool syncing_to_close = false;                  // GUARDED_BY(owner_->mutex_)
};

std::shared_ptr<BoundedFileSystem> BoundedFileSystem::make(std::shared_ptr<FileSystem> base,
                                                           std::size_t max_open) {
  return std::shared_ptr<BoundedFileSystem>(
      new BoundedFileSystem(std::move(base), std::max<std::size_t>(2, max_open)));
}

namespace {
std::string parent_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? std::string(".") : path.substr(0, slash == 0 ? 1 : slash);
}
}  // namespace

std::vector<std::string> BoundedFileSystem::parent_of_each(std::initializer_list<std::string> paths) {
  std::vector<std::string> directories;
  for (const auto& path : paths) directories.push_back(parent_of(path));
  return directories;
}

std::vector<std::string> BoundedFileSystem::directories_on_the_way_to(const std::string& path) {
  std::vector<std::string> directories;
  for (std::string p = path; !p.empty() && p != "/" && p != "."; p = parent_of(p)) {
    directories.push_back(p);
    directories.push_back(parent_of(p));
  }
  return directories;
}

void BoundedFileSystem::count_change(const std::vector<std::string>& directories, int under_way) {
  std::lock_guard lock(mutex_);
  for (const auto& directory : directories) {
    DirectoryState& state = directories_[directory];
    state.synced = false;
    ++state.changes;
    state.changing += under_way;
  }
}

Status BoundedFileSystem::create_directories(const std::string& path) {
  if (base_->exists(path)) return base_->create_directories(path);  // creates nothing: no new entry
  const ChangeOfEntries change(*this, directories_on_the_way_to(path));
  return base_->create_directories(path);
}

Status BoundedFileSystem::sync_directory(const std::string& path) {
  std::uint64_t changes_before = 0;
  bool changing = false;
  {
    std::lock_guard lock(mutex_);
    const DirectoryState& state = directories_[path];
    if (state.synced) return {};
    changes_before = state.changes;
    changing = state.changing > 0;
  }
  Status s = base_->sync_directory(path);
  if (s.ok() && !changing) {
    // Marked synced only if no change of its entries was under way when this sync began, nor
    // began since: a file another thread created while this sync ran may have missed it, and
    // that thread's own sync_directory must not be skipped (nor that of a thread that saw the
    // new entry and took it for an old one). A change that had ended before is covered.
    std::lock_guard lock(mutex_);
    DirectoryState& state = directories_[path];
    if (state.changes == changes_before) state.synced = true;
  }
  return s;
}

Status BoundedFileSystem::remove(const std::string& path) {
  const ChangeOfEntries change(*this, parent_of_each({path}));
  return base_->remove(path);
}

Status BoundedFileSystem::rename(const std::string& from, const std::string& to) {
  const ChangeOfEntries change(*this, parent_of_each({from, to}));
  return base_->rename(from, to);
}

Result<std::unique_ptr<File>> BoundedFileSystem::open(const std::string& path) {
  // Open now, so that an unopenable path fails here as with any FileSystem. Only a file that does
  // not exist yet makes a new entry.
  auto file = [&] {
    const ChangeOfEntries change(*this,
                                 base_->exists(path) ? std::vector<std::string>{} : parent_of_each({path}));
    return base_->open(path);
  }();
  if (!file.ok()) return file.status();
  auto pooled = std::make_unique<PooledFile>(shared_from_this(), path, std::move(file.value()));
  touched(pooled.get(), /*newly_open=*/true);
  return std::unique_ptr<File>(std::move(pooled));
}

void BoundedFileSystem::touched(PooledFile* file, bool newly_open) {
  // Closing happens under mutex_, so that a file cannot be destroyed (forget() waits for mutex_)
  // while it is being closed. A dirty file (group journals are written unsynced between
  // checkpoints of the broker's shared acknowledgement log) is synced first with mutex_ released
  // and `syncing_to_close` set, which forget() waits for.
  std::unique_lock lock(mutex_);
  if (file->listed) {
    open_.splice(open_.begin(), open_, file->lru_position);
  } else if (newly_open) {
    open_.push_front(file);
    file->lru_position = open_.begin();
    file->listed = true;
  }
  // From the least recently used on; a busy file stays open and is passed over.
  PooledFile* dirty_victim = nullptr;
  auto candidate = open_.end();
  while (open_.size() > max_open_ && candidate != open_.begin()) {
    --candidate;
    PooledFile* victim = *candidate;
    if (victim == file || victim->syncing_to_close) continue;
    if (victim->try_close()) {
      victim->listed = false;
      candidate = open_.erase(candidate);
    } else if (dirty_victim == nullptr && victim->dirty()) {
      dirty_victim = victim;
    }
  }
  if (open_.size() <= max_open_ || dirty_victim == nullptr) return;
  dirty_victim->syncing_to_close = true;
  lock.unlock();
  const bool synced = dirty_victim->sync_for_close();
  lock.lock();
  dirty_victim->syncing_to_close = false;
  sync_done_.notify_all();
  if (synced && dirty_victim->listed && dirty_victim->try_close()) {
    dirty_victim->listed = false;
    open_.erase(dirty_victim->lru_position);
  }
}

void BoundedFileSystem::forget(PooledFile* file) {
  std::unique_lock lock(mutex_);
  sync_done_.wait(lock, [&] { return !file->syncing_to_close; });
  if (file->listed) open_.erase(file->lru_position);
  file->listed = false;
}

std::size_t BoundedFileSystem::open_count() const {
  std::lock_guard lock(mutex_);
  return open_.size();
}

}  // namespace mq::detail

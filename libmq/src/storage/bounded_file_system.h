// A FileSystem whose files share a bounded number of open descriptors: each file is opened when
// used and, when more than `max_open` are open, the least recently used idle one is closed (synced
// first if it has unsynced writes, so that a write error can never be lost with its descriptor). A
// broker opens one acknowledgement journal per group and partition; with this, the number of open
// files stays fixed however many groups there are.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "mq/file_system.h"

namespace mq::detail {

class BoundedFileSystem final : public FileSystem, public std::enable_shared_from_this<BoundedFileSystem> {
 public:
  // Files come from `base`; at most `max_open` (>= 2) descriptors stay open between uses.
  static std::shared_ptr<BoundedFileSystem> make(std::shared_ptr<FileSystem> base, std::size_t max_open);

  Result<std::unique_ptr<File>> open(const std::string& path) override;
  Status create_directories(const std::string& path) override;
  // Skipped when this file system synced `path` before and created, renamed or removed nothing in
  // it since: opening thousands of group journals at start must not sync the same parents again
  // and again.
  Status sync_directory(const std::string& path) override;
  Result<std::vector<std::string>> list_directory(const std::string& path) override {
    return base_->list_directory(path);
  }
  bool exists(const std::string& path) override { return base_->exists(path); }
  Result<std::uint64_t> file_size(const std::string& path) override { return base_->file_size(path); }
  Status remove(const std::string& path) override;
  Status rename(const std::string& from, const std::string& to) override;

  // Descriptors open right now (for tests).
  std::size_t open_count() const;

 private:
  class PooledFile;
  friend class PooledFile;
  BoundedFileSystem(std::shared_ptr<FileSystem> base, std::size_t max_open)
      : base_(std::move(base)), max_open_(max_open) {}

  // `file` just opened its descriptor (or used it): it becomes the most recent; closes idle ones
  // beyond the bound. A file with unsynced writes is synced before it is closed, with mutex_
  // released, at most one per call, so that callers reopening many files sync them in parallel.
  void touched(PooledFile* file, bool newly_open);
  void forget(PooledFile* file);
  // A change of the entries of `directories` (a file created, renamed or removed; a directory
  // made) begins or has ended: their next sync_directory is not skipped, and a sync that runs
  // meanwhile may or may not cover the change, so it does not mark them synced (sync_directory).
  // `under_way` is +1 when the change begins, -1 when it has ended.
  void count_change(const std::vector<std::string>& directories, int under_way);
  // Begins a change of the entries of `directories`, and ends it however the change ends.
  class ChangeOfEntries {
   public:
    ChangeOfEntries(BoundedFileSystem& files, std::vector<std::string> directories)
        : files_(files), directories_(std::move(directories)) {
      files_.count_change(directories_, +1);
    }
    ~ChangeOfEntries() { files_.count_change(directories_, -1); }
    ChangeOfEntries(const ChangeOfEntries&) = delete;
    ChangeOfEntries& operator=(const ChangeOfEntries&) = delete;

   private:
    BoundedFileSystem& files_;
    const std::vector<std::string> directories_;
  };
  static std::vector<std::string> parent_of_each(std::initializer_list<std::string> paths);
  // Every directory creating `path` may add an entry to: each on the way and its parent.
  static std::vector<std::string> directories_on_the_way_to(const std::string& path);

  const std::shared_ptr<FileSystem> base_;
  const std::size_t max_open_;
  mutable std::mutex mutex_;
  std::condition_variable sync_done_;  // a file being synced to be closed is no longer (forget waits)
  std::list<PooledFile*> open_;        // GUARDED_BY(mutex_): files holding a descriptor, most recent first
  struct DirectoryState {
    bool synced = false;        // synced with no change of its entries since
    std::uint64_t changes = 0;  // count_change calls so far
    int changing = 0;           // changes begun and not ended
  };
  std::map<std::string, DirectoryState> directories_;  // GUARDED_BY(mutex_): those used so far
};

}  // namespace mq::detail

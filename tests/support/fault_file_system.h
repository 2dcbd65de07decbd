// A FileSystem over the real one that remembers, per file, how many bytes were synced and how many
// syncs happened, and can simulate a power cut: every file loses what was written after its last
// sync (optionally keeping a random part of it, as a page cache flushed halfway would), and every
// later operation fails as if the machine were gone.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>

#include "mq/file_system.h"

namespace mq::testing {

class FaultFileSystem : public FileSystem {
 public:
  // What one path has seen. Shared by every File opened on the path.
  struct Tracker {
    std::mutex mutex;
    std::uint64_t synced_bytes = 0;  // GUARDED_BY(mutex): the file's size at its last sync
    std::uint64_t syncs = 0;         // GUARDED_BY(mutex)
    std::uint64_t appends = 0;       // GUARDED_BY(mutex)
    File* real = nullptr;            // GUARDED_BY(mutex): the open file, if any
  };

  // `sync_latency` makes every sync take at least that long, like a disk whose cache flush is slow;
  // zero leaves syncs as fast as this machine's disk makes them.
  explicit FaultFileSystem(std::chrono::microseconds sync_latency = {})
      : real_(make_posix_file_system()), sync_latency_(sync_latency) {}

  Result<std::unique_ptr<File>> open(const std::string& path) override {
    if (cut()) return Status::io_error("power is off");
    auto file = real_->open(path);
    if (!file.ok()) return file.status();
    auto tracker = tracker_for(path);
    {
      std::lock_guard lock(tracker->mutex);
      auto size = (*file)->size();
      tracker->synced_bytes = size.ok() ? *size : 0;  // what was there before counts as durable
      tracker->real = file->get();
    }
    return std::unique_ptr<File>(std::make_unique<TrackedFile>(this, std::move(file.value()), tracker));
  }
  Status create_directories(const std::string& path) override {
    return cut() ? Status::io_error("power is off") : real_->create_directories(path);
  }
  Status sync_directory(const std::string& path) override {
    return cut() ? Status::io_error("power is off") : real_->sync_directory(path);
  }
  Result<std::vector<std::string>> list_directory(const std::string& path) override {
    return real_->list_directory(path);
  }
  bool exists(const std::string& path) override { return real_->exists(path); }
  // Not through open(): that would count the file's unsynced bytes as durable.
  Result<std::uint64_t> file_size(const std::string& path) override {
    if (cut()) return Status::io_error("power is off");
    return real_->file_size(path);
  }
  Status remove(const std::string& path) override {
    return cut() ? Status::io_error("power is off") : real_->remove(path);
  }
  Status rename(const std::string& from, const std::string& to) override {
    return cut() ? Status::io_error("power is off") : real_->rename(from, to);
  }

  // Cuts the power: each file keeps its synced bytes plus, when `seed` is non-zero, a random prefix
  // of its unsynced bytes. Every later operation fails.
  void power_cut(unsigned seed = 0) {
    std::lock_guard lock(mutex_);
    cut_ = true;  // first: appends that start later fail; those under way finish before their cut
    std::mt19937_64 random(seed);
    for (auto& [path, tracker] : trackers_) {
      std::lock_guard file_lock(tracker->mutex);
      if (tracker->real == nullptr) continue;
      auto size = tracker->real->size();
      if (!size.ok()) continue;
      std::uint64_t keep = tracker->synced_bytes;
      if (seed != 0 && *size > keep) keep += random() % (*size - keep + 1);
      (void)tracker->real->truncate(keep);
    }
  }

  std::shared_ptr<Tracker> tracker_for(const std::string& path) {
    std::lock_guard lock(mutex_);
    auto& tracker = trackers_[path];
    if (!tracker) tracker = std::make_shared<Tracker>();
    return tracker;
  }

  std::uint64_t synced_bytes(const std::string& path) {
    auto t = tracker_for(path);
    std::lock_guard lock(t->mutex);
    return t->synced_bytes;
  }
  // The next sync of any file fails (as an fdatasync that reports EIO would), without syncing.
  void fail_next_sync() { fail_next_sync_ = true; }

  // A disk with `bytes` free from now on, shared by every file: an append that does not fit writes
  // the part that fits and fails with kNoSpace (ENOSPC after a short write). nullopt: no limit.
  void set_space_left(std::optional<std::uint64_t> bytes) {
    std::lock_guard lock(space_mutex_);
    space_left_ = bytes;
  }

  // Holds every sync at its start until release_syncs(); wait_for_held_sync() blocks (bounded)
  // until one is being held.
  void hold_syncs() {
    std::lock_guard lock(gate_mutex_);
    holding_ = true;
  }
  void release_syncs() {
    std::lock_guard lock(gate_mutex_);
    holding_ = false;
    gate_cv_.notify_all();
  }
  bool wait_for_held_sync(std::chrono::milliseconds timeout) {
    std::unique_lock lock(gate_mutex_);
    return gate_cv_.wait_for(lock, timeout, [&] { return held_ > 0; });
  }

  std::uint64_t syncs(const std::string& path) {
    auto t = tracker_for(path);
    std::lock_guard lock(t->mutex);
    return t->syncs;
  }

 private:
  class TrackedFile : public File {
   public:
    TrackedFile(FaultFileSystem* fs, std::unique_ptr<File> real, std::shared_ptr<Tracker> tracker)
        : fs_(fs), real_(std::move(real)), tracker_(std::move(tracker)) {}
    ~TrackedFile() override {
      std::lock_guard lock(tracker_->mutex);
      if (tracker_->real == real_.get()) tracker_->real = nullptr;
    }
    Status append(std::string_view data) override {
      std::lock_guard lock(tracker_->mutex);
      if (fs_->cut()) return Status::io_error("power is off");
      ++tracker_->appends;
      const std::size_t fits = fs_->take_space(data.size());
      if (fits < data.size()) {
        (void)real_->append(data.substr(0, fits));
        return Status::no_space("no space left on device (injected)");
      }
      return real_->append(data);
    }
    Status sync() override {
      fs_->pass_gate();
      if (fs_->fail_next_sync_.exchange(false))
        return Status::io_error("fdatasync: Input/output error (injected)");
      // A slow disk; outside the lock so that observers are not held up by it.
      if (fs_->sync_latency_.count() > 0) std::this_thread::sleep_for(fs_->sync_latency_);
      std::lock_guard lock(tracker_->mutex);
      if (fs_->cut()) return Status::io_error("power is off");
      auto status = real_->sync();
      if (status.ok()) {
        ++tracker_->syncs;
        auto size = real_->size();
        if (size.ok()) tracker_->synced_bytes = *size;
      }
      return status;
    }
    Status read(std::uint64_t position, std::size_t length, std::string& out) const override {
      return real_->read(position, length, out);
    }
    Result<std::uint64_t> size() const override { return real_->size(); }
    Status truncate(std::uint64_t length) override {
      std::lock_guard lock(tracker_->mutex);
      if (fs_->cut()) return Status::io_error("power is off");
      return real_->truncate(length);
    }

   private:
    FaultFileSystem* fs_;
    std::unique_ptr<File> real_;
    std::shared_ptr<Tracker> tracker_;
  };

  void pass_gate() {
    std::unique_lock lock(gate_mutex_);
    ++held_;
    gate_cv_.notify_all();
    gate_cv_.wait(lock, [&] { return !holding_; });
    --held_;
  }

  // How much of a write of `wanted` bytes fits on the disk; takes it.
  std::size_t take_space(std::size_t wanted) {
    std::lock_guard lock(space_mutex_);
    if (!space_left_) return wanted;
    const auto fits = static_cast<std::size_t>(std::min<std::uint64_t>(*space_left_, wanted));
    *space_left_ -= fits;
    return fits;
  }

  // Atomic rather than under mutex_: files check it while holding their tracker's lock.
  bool cut() const { return cut_.load(); }

  std::shared_ptr<FileSystem> real_;
  const std::chrono::microseconds sync_latency_;
  std::mutex mutex_;
  std::atomic<bool> cut_{false};
  std::atomic<bool> fail_next_sync_{false};
  std::mutex space_mutex_;
  std::optional<std::uint64_t> space_left_;  // GUARDED_BY(space_mutex_)
  std::mutex gate_mutex_;
  std::condition_variable gate_cv_;
  bool holding_ = false;  // GUARDED_BY(gate_mutex_)
  int held_ = 0;          // GUARDED_BY(gate_mutex_): syncs waiting at the gate
  std::map<std::string, std::shared_ptr<Tracker>> trackers_;  // GUARDED_BY(mutex_)
};

}  // namespace mq::testing

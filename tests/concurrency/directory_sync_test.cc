// The broker's file system skips a directory sync when nothing changed in the directory since the
// last one (bounded_file_system.h). Fetch threads of a replicated broker create journals in one
// group directory at the same time, so one thread's sync can run while another creates a file: that
// sync must not mark the directory synced, or the creator's own sync is skipped and the new entry
// may not survive a power cut.
#include <doctest/doctest.h>

#include <atomic>
#include <functional>
#include <future>
#include <thread>

#include "forwarding_file_system.h"
#include "storage/bounded_file_system.h"
#include "temp_dir.h"

using namespace mq;
using namespace mq::testing;

namespace {

// Counts directory syncs; the first one waits, once it has begun, until the test lets it finish.
class HeldDirectorySyncs : public ForwardingFileSystem {
 public:
  Status sync_directory(const std::string& path) override {
    if (syncs_.fetch_add(1) == 0) {
      began_.set_value();
      release_.get_future().wait();
    }
    return ForwardingFileSystem::sync_directory(path);
  }
  int syncs() const { return syncs_.load(); }
  void wait_until_first_sync_began() { began_future_.wait(); }
  void release_first_sync() { release_.set_value(); }

 private:
  std::atomic<int> syncs_{0};
  std::promise<void> began_;
  std::shared_future<void> began_future_ = began_.get_future().share();
  std::promise<void> release_;
};

// Syncs `dir` on another thread, runs `change` while that sync is under way, then syncs `dir`
// again as the changing thread would: that second sync must reach the disk.
void change_during_a_sync(const TempDir& dir, const std::function<void(FileSystem&)>& change) {
  auto base = std::make_shared<HeldDirectorySyncs>();
  auto files = detail::BoundedFileSystem::make(base, 4);
  std::thread syncer([&] { CHECK(files->sync_directory(dir.path()).ok()); });
  base->wait_until_first_sync_began();
  change(*files);
  base->release_first_sync();
  syncer.join();
  REQUIRE(files->sync_directory(dir.path()).ok());
  CHECK(base->syncs() == 2);
  // Nothing changed since: now the sync is skipped.
  REQUIRE(files->sync_directory(dir.path()).ok());
  CHECK(base->syncs() == 2);
}

}  // namespace

TEST_CASE("A directory sync that ran while another thread created a file does not cover that file") {
  TempDir dir;
  change_during_a_sync(dir, [&](FileSystem& files) { CHECK(files.open(dir / "new.log").ok()); });
}

TEST_CASE("A directory sync that ran while another thread renamed or removed a file does not cover it") {
  TempDir dir;
  {
    auto made = make_posix_file_system()->open(dir / "a.log");
    REQUIRE(made.ok());
  }
  change_during_a_sync(dir,
                       [&](FileSystem& files) { CHECK(files.rename(dir / "a.log", dir / "b.log").ok()); });
  change_during_a_sync(dir, [&](FileSystem& files) { CHECK(files.remove(dir / "b.log").ok()); });
}

TEST_CASE("A directory sync that ran while another thread made a subdirectory does not cover it") {
  TempDir dir;
  change_during_a_sync(dir,
                       [&](FileSystem& files) { CHECK(files.create_directories(dir / "groups/g").ok()); });
}

namespace {

// Counts directory syncs; the first create_directories waits before making the directories and
// again after.
class HeldDirectoryCreation : public ForwardingFileSystem {
 public:
  Status create_directories(const std::string& path) override {
    if (held_.exchange(true)) return ForwardingFileSystem::create_directories(path);
    began_.set_value();
    make_.get_future().wait();
    Status made = ForwardingFileSystem::create_directories(path);
    made_.set_value();
    finish_.get_future().wait();
    return made;
  }
  Status sync_directory(const std::string& path) override {
    ++syncs_;
    return ForwardingFileSystem::sync_directory(path);
  }
  int syncs() const { return syncs_.load(); }

  std::promise<void> began_, make_, made_, finish_;

 private:
  std::atomic<bool> held_{false};
  std::atomic<int> syncs_{0};
};

}  // namespace

TEST_CASE("A directory sync that began while another thread was making an entry does not cover it") {
  // Thread A makes groups/g; a sync of groups runs after A began but before the directory exists;
  // then a thread that finds groups/g (made by A, whose change has not ended) syncs groups: that
  // sync must reach the disk, since the earlier one may have missed the entry.
  TempDir dir;
  REQUIRE(make_posix_file_system()->create_directories(dir / "groups").ok());
  auto base = std::make_shared<HeldDirectoryCreation>();
  auto files = detail::BoundedFileSystem::make(base, 4);
  auto began = base->began_.get_future();
  auto made = base->made_.get_future();
  std::thread maker([&] { CHECK(files->create_directories(dir / "groups/g").ok()); });
  began.wait();
  CHECK(files->sync_directory(dir / "groups").ok());
  CHECK(base->syncs() == 1);
  base->make_.set_value();
  made.wait();
  // The other thread: groups/g exists already, so it changes nothing, and syncs its parent.
  CHECK(files->create_directories(dir / "groups/g").ok());
  CHECK(files->sync_directory(dir / "groups").ok());
  CHECK(base->syncs() == 2);
  base->finish_.set_value();
  maker.join();
}

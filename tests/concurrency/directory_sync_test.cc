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
  change_during_a_sync(dir, [&](FileSystem& files) { REQUIRE(files.open(dir / "new.log").ok()); });
}

TEST_CASE("A directory sync that ran while another thread renamed or removed a file does not cover it") {
  TempDir dir;
  {
    auto made = make_posix_file_system()->open(dir / "a.log");
    REQUIRE(made.ok());
  }
  change_during_a_sync(dir,
                       [&](FileSystem& files) { REQUIRE(files.rename(dir / "a.log", dir / "b.log").ok()); });
  change_during_a_sync(dir, [&](FileSystem& files) { REQUIRE(files.remove(dir / "b.log").ok()); });
}

TEST_CASE("A directory sync that ran while another thread made a subdirectory does not cover it") {
  TempDir dir;
  change_during_a_sync(dir,
                       [&](FileSystem& files) { REQUIRE(files.create_directories(dir / "groups/g").ok()); });
}

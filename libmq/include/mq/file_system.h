// The file layer under LogStore. The real one is POSIX; tests substitute one that counts syncs or
// simulates a power cut by dropping every byte that was written but not synced.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mq/export.h"
#include "mq/status.h"

namespace mq {

// One open file that is appended to and read at positions. append() is called by one thread at a
// time; sync() may run concurrently with append() (it must cover at least every append that
// returned before it started); read() may run concurrently with both and with each other.
class MQ_EXPORT File {
 public:
  virtual ~File() = default;
  // Writes all of `data` at the end of the file (a write(2) loop: after a crash a prefix may remain).
  virtual Status append(std::string_view data) = 0;
  // Makes everything appended so far durable (fdatasync).
  virtual Status sync() = 0;
  // Reads up to `length` bytes at `position` into `out` (resized to what was read; short at the end).
  virtual Status read(std::uint64_t position, std::size_t length, std::string& out) const = 0;
  // The current size in bytes.
  virtual Result<std::uint64_t> size() const = 0;
  // Cuts the file to `length` bytes; later appends go on from there.
  virtual Status truncate(std::uint64_t length) = 0;
  // Writes all of `data` at `position`, like append() (one thread at a time, a prefix may remain
  // after a crash). Partition logs write this way, so that they can write into preallocated space.
  // The default appends when `position` is the file's size and refuses any other position.
  virtual Status write_at(std::uint64_t position, std::string_view data);
  // Makes the file at least `length` bytes long, the new bytes reading as zero (fallocate(2)), so
  // that writes below `length` change no file size and an fdatasync after them need not commit
  // one (libmq/docs/log_format.md "Preallocated space"). append() still writes at the file's end,
  // after the zeros. False when nothing was done (the file system cannot, or has no room); the
  // default does nothing.
  virtual bool preallocate(std::uint64_t length);
};

// Creates and finds files. Thread-safe.
class MQ_EXPORT FileSystem {
 public:
  virtual ~FileSystem() = default;
  // Opens `path` for reading and appending, creating it when missing.
  virtual Result<std::unique_ptr<File>> open(const std::string& path) = 0;
  // Creates `path` and its missing parents.
  virtual Status create_directories(const std::string& path) = 0;
  // Makes the entries of directory `path` (files created or renamed in it) durable.
  virtual Status sync_directory(const std::string& path) = 0;
  // The names in directory `path` (not "." or ".."); empty when it does not exist.
  virtual Result<std::vector<std::string>> list_directory(const std::string& path) = 0;
  // True when `path` exists.
  virtual bool exists(const std::string& path) = 0;
  // The size in bytes of the file `path` (a kNotFound error when it is missing). Opening a partition asks it
  // of every sealed segment: the default opens the file; a real file system answers with one stat(2).
  virtual Result<std::uint64_t> file_size(const std::string& path);
  // Removes the file `path`; ok when it did not exist.
  virtual Status remove(const std::string& path) = 0;
  // Atomically replaces `to` with `from` (rename(2)); sync the directory to make it durable.
  virtual Status rename(const std::string& from, const std::string& to) = 0;
};

// The real file system (open with O_APPEND, write, pread, fdatasync). Stateless.
MQ_EXPORT std::shared_ptr<FileSystem> make_posix_file_system();

}  // namespace mq

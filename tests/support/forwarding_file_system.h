// A FileSystem and a File that hand every call to real ones: a test derives from them and
// overrides only what it watches or breaks. FileSystem::file_size is left to its default (open and
// size), so that a derived file system sees those opens too.
#pragma once

#include <memory>
#include <string>
#include <utility>

#include "mq/file_system.h"

namespace mq::testing {

class ForwardingFile : public File {
 public:
  explicit ForwardingFile(std::unique_ptr<File> real) : real_(std::move(real)) {}
  Status append(std::string_view data) override { return real_->append(data); }
  Status sync() override { return real_->sync(); }
  Status read(std::uint64_t position, std::size_t length, std::string& out) const override {
    return real_->read(position, length, out);
  }
  Result<std::uint64_t> size() const override { return real_->size(); }
  Status truncate(std::uint64_t length) override { return real_->truncate(length); }
  Status write_at(std::uint64_t position, std::string_view data) override {
    return real_->write_at(position, data);
  }
  bool preallocate(std::uint64_t length) override { return real_->preallocate(length); }

 protected:
  std::unique_ptr<File> real_;
};

class ForwardingFileSystem : public FileSystem {
 public:
  explicit ForwardingFileSystem(std::shared_ptr<FileSystem> real = make_posix_file_system())
      : real_(std::move(real)) {}
  Result<std::unique_ptr<File>> open(const std::string& path) override { return real_->open(path); }
  Status create_directories(const std::string& path) override { return real_->create_directories(path); }
  Status sync_directory(const std::string& path) override { return real_->sync_directory(path); }
  Result<std::vector<std::string>> list_directory(const std::string& path) override {
    return real_->list_directory(path);
  }
  bool exists(const std::string& path) override { return real_->exists(path); }
  Status remove(const std::string& path) override { return real_->remove(path); }
  Status rename(const std::string& from, const std::string& to) override { return real_->rename(from, to); }

 protected:
  std::shared_ptr<FileSystem> real_;
};

}  // namespace mq::testing

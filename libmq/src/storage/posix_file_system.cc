#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>

#include "mq/file_system.h"

namespace mq {
namespace {

Status errno_status(const std::string& what, const std::string& path) {
  return Status::io_error(what + " " + path + ": " + std::strerror(errno));
}

class PosixFile final : public File {
 public:
  PosixFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~PosixFile() override { ::close(fd_); }

  Status append(std::string_view data) override {
    if (appending_) return write_all(data, std::nullopt);
    // No longer O_APPEND (write_at into preallocated space): the end is the file's size.
    auto end = size();
    if (!end.ok()) return end.status();
    return write_all(data, *end);
  }

  Status write_at(std::uint64_t position, std::string_view data) override {
    if (appending_) {
      auto end = size();
      if (!end.ok()) return end.status();
      if (position == *end) return write_all(data, std::nullopt);
      // Below the end (into preallocated space): pwrite(2) on an O_APPEND descriptor would append.
      if (auto s = stop_appending(); !s.ok()) return s;
    }
    return write_all(data, position);
  }

  bool preallocate(std::uint64_t length) override {
    auto end = size();
    if (!end.ok()) return false;
    if (length <= *end) return true;
    if (::fallocate(fd_, 0, static_cast<off_t>(*end), static_cast<off_t>(length - *end)) != 0) {
      // ext4 keeps what it could allocate before running out of space (the file grew): give it
      // back, so that a full disk stays recoverable and the size stays the records' size.
      (void)::ftruncate(fd_, static_cast<off_t>(*end));
      return false;
    }
    return true;
  }

  Status sync() override {
    while (::fdatasync(fd_) != 0) {
      if (errno != EINTR) return errno_status("fdatasync", path_);
    }
    return {};
  }

  Status read(std::uint64_t position, std::size_t length, std::string& out) const override {
    out.resize(length);
    std::size_t got = 0;
    while (got < length) {
      const ssize_t n = ::pread(fd_, out.data() + got, length - got, static_cast<off_t>(position + got));
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno_status("read", path_);
      }
      if (n == 0) break;
      got += static_cast<std::size_t>(n);
    }
    out.resize(got);
    return {};
  }

  Result<std::uint64_t> size() const override {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) return errno_status("stat", path_);
    return static_cast<std::uint64_t>(st.st_size);
  }

  Status truncate(std::uint64_t length) override {
    if (::ftruncate(fd_, static_cast<off_t>(length)) != 0) return errno_status("truncate", path_);
    return {};
  }

 private:
  // write(2) at the end (O_APPEND) when `position` is nullopt, else pwrite(2) at it, until all of
  // `data` is written.
  Status write_all(std::string_view data, std::optional<std::uint64_t> position) {
    while (!data.empty()) {
      const ssize_t n = position ? ::pwrite(fd_, data.data(), data.size(), static_cast<off_t>(*position))
                                 : ::write(fd_, data.data(), data.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        // A full disk is a state that passes, not a broken file: the caller cuts off what part of
        // the write landed and tries again later.
        if (errno == ENOSPC || errno == EDQUOT) {
          return Status::no_space(std::string("no space left on device: write ") + path_ + ": " +
                                  std::strerror(errno));
        }
        return errno_status("write", path_);
      }
      data.remove_prefix(static_cast<std::size_t>(n));
      if (position) *position += static_cast<std::uint64_t>(n);
    }
    return {};
  }

  Status stop_appending() {
    const int flags = ::fcntl(fd_, F_GETFL);
    if (flags < 0 || ::fcntl(fd_, F_SETFL, flags & ~O_APPEND) != 0) return errno_status("fcntl", path_);
    appending_ = false;
    return {};
  }

  int fd_;
  std::string path_;
  // O_APPEND is set (until the first write_at below the end). Used by the one writing thread only.
  bool appending_ = true;
};

class PosixFileSystem final : public FileSystem {
 public:
  Result<std::unique_ptr<File>> open(const std::string& path) override {
    // O_APPEND: every write lands at the current end, also after a truncate.
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return errno_status("open", path);
    return std::unique_ptr<File>(std::make_unique<PosixFile>(fd, path));
  }

  Status create_directories(const std::string& path) override {
    for (std::size_t slash = path.find('/', 1);; slash = path.find('/', slash + 1)) {
      const std::string prefix = path.substr(0, slash);
      if (!prefix.empty() && ::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
        return errno_status("mkdir", prefix);
      }
      if (slash == std::string::npos) break;
    }
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return errno_status("stat", path);
    if (!S_ISDIR(st.st_mode)) return Status::io_error(path + " is not a directory");
    return {};
  }

  Status sync_directory(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return errno_status("open directory", path);
    Status status;
    if (::fsync(fd) != 0) status = errno_status("fsync directory", path);
    ::close(fd);
    return status;
  }

  Result<std::vector<std::string>> list_directory(const std::string& path) override {
    std::vector<std::string> names;
    DIR* dir = ::opendir(path.c_str());
    if (dir == nullptr) {
      if (errno == ENOENT) return names;
      return errno_status("opendir", path);
    }
    while (const dirent* entry = ::readdir(dir)) {
      const std::string_view name = entry->d_name;
      if (name != "." && name != "..") names.emplace_back(name);
    }
    ::closedir(dir);
    return names;
  }

  bool exists(const std::string& path) override {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0;
  }

  Result<std::uint64_t> file_size(const std::string& path) override {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      if (errno == ENOENT) return Status::not_found(path + " does not exist");
      return errno_status("stat", path);
    }
    return static_cast<std::uint64_t>(st.st_size);
  }

  Status remove(const std::string& path) override {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return errno_status("unlink", path);
    return {};
  }

  Status rename(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) return errno_status("rename " + from + " to", to);
    return {};
  }
};

}  // namespace

Status File::write_at(std::uint64_t position, std::string_view data) {
  auto end = size();
  if (!end.ok()) return end.status();
  if (position != *end) {
    return Status::invalid_argument("this file can only be written at its end (" + std::to_string(*end) +
                                    "), not at " + std::to_string(position));
  }
  return append(data);
}

bool File::preallocate(std::uint64_t) { return false; }

Result<std::uint64_t> FileSystem::file_size(const std::string& path) {
  if (!exists(path)) return Status::not_found(path + " does not exist");
  auto file = open(path);
  if (!file.ok()) return file.status();
  return (*file)->size();
}

std::shared_ptr<FileSystem> make_posix_file_system() { return std::make_shared<PosixFileSystem>(); }

}  // namespace mq

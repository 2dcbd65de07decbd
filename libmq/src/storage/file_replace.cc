#include "storage/file_replace.h"

namespace mq::detail {

Status replace_file(FileSystem& fs, const std::string& dir, const std::string& name, std::string_view content,
                    bool durable) {
  const std::string path = dir + "/" + name;
  const std::string temp = path + ".tmp";
  if (auto s = fs.remove(temp); !s.ok()) return s;  // a crash's leftover would be appended to
  {
    auto file = fs.open(temp);
    if (!file.ok()) return file.status();
    if (auto s = (*file)->append(content); !s.ok()) return s;
    if (durable) {
      if (auto s = (*file)->sync(); !s.ok()) return s;
    }
  }
  if (auto s = fs.rename(temp, path); !s.ok()) return s;
  if (durable) return fs.sync_directory(dir);
  return {};
}

Result<std::string> read_whole_file(FileSystem& fs, const std::string& path) {
  auto file = fs.open(path);
  if (!file.ok()) return file.status();
  auto size = (*file)->size();
  if (!size.ok()) return size.status();
  std::string text;
  if (auto s = (*file)->read(0, static_cast<std::size_t>(*size), text); !s.ok()) return s;
  return text;
}

}  // namespace mq::detail

// Small state files (a segmented log's meta, a group's snapshot, a redrive position) replaced whole
// and read whole.
#pragma once

#include <string>
#include <string_view>

#include "mq/file_system.h"
#include "mq/status.h"

namespace mq::detail {

// Replaces the file `dir`/`name` with `content` atomically: a temporary file beside it is written
// (and synced when `durable`), renamed over it, and the directory synced (when `durable`). After a
// crash at any step the file holds the old content or the new, never a mix.
Status replace_file(FileSystem& fs, const std::string& dir, const std::string& name, std::string_view content,
                    bool durable);

// The whole content of the file at `path`.
Result<std::string> read_whole_file(FileSystem& fs, const std::string& path);

}  // namespace mq::detail

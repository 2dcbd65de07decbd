#include "open_file_limit.h"

#include <sys/resource.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace mqd {

void raise_open_file_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == limit.rlim_max) return;
  const rlim_t soft = limit.rlim_cur;
  limit.rlim_cur = limit.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    std::fprintf(stderr, "mqd: cannot raise the open file limit from %llu to %llu: %s\n",
                 static_cast<unsigned long long>(soft), static_cast<unsigned long long>(limit.rlim_max),
                 std::strerror(errno));
  }
}

}  // namespace mqd

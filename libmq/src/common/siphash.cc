#include "common/siphash.h"

#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace mq::detail {

namespace {

// /dev/urandom, for a kernel or a seccomp filter that refuses getrandom (ENOSYS, EPERM).
bool fill_from_urandom(char* out, std::size_t size) {
  const int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  std::size_t filled = 0;
  while (filled < size) {
    const ssize_t n = ::read(fd, out + filled, size - filled);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    filled += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return filled == size;
}

}  // namespace

SipKey random_sip_key() {
  SipKey key;
  char* out = reinterpret_cast<char*>(&key);
  std::size_t filled = 0;
  while (filled < sizeof key) {
    const ssize_t n = ::getrandom(out + filled, sizeof key - filled, 0);
    if (n >= 0) {
      filled += static_cast<std::size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    const int error = errno;
    if ((error == ENOSYS || error == EPERM) && fill_from_urandom(out, sizeof key)) return key;
    throw std::system_error(error, std::generic_category(), "getrandom for the dedup window's hash key");
  }
  return key;
}

}  // namespace mq::detail

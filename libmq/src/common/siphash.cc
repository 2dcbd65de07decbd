#include "common/siphash.h"

#include <sys/random.h>

#include <cerrno>
#include <system_error>

namespace mq::detail {

SipKey random_sip_key() {
  SipKey key;
  char* out = reinterpret_cast<char*>(&key);
  std::size_t filled = 0;
  while (filled < sizeof key) {
    const ssize_t n = ::getrandom(out + filled, sizeof key - filled, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), "getrandom");
    }
    filled += static_cast<std::size_t>(n);
  }
  return key;
}

}  // namespace mq::detail

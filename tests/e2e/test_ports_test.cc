// The tests' port choosers (tests/support/mqd_process.h, free_port.py, free_port.mjs) keep ctest's
// parallel test processes off each other's ports: a port one process handed out is reserved, and the
// other two languages' choosers see it so.
#include <doctest/doctest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "mqd_process.h"

namespace {

using mq::testing::free_port;

// What `command` prints on stdout, trimmed of its final newline.
std::string output_of(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::array<char, 256> buffer{};
  while (std::fgets(buffer.data(), buffer.size(), pipe) != nullptr) out += buffer.data();
  CHECK(::pclose(pipe) == 0);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// A port of the choosers' range that no process reserves now (this one held it a moment to see).
int unheld_port() {
  const auto [low, high] = mq::testing::detail::server_port_range();
  for (int port = low; port <= high; ++port) {
    const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    const bool free = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    if (free) return port;
  }
  FAIL("no unheld port between " << low << " and " << high);
  return -1;
}

const std::string kSupport =
    (std::filesystem::path(__FILE__).parent_path().parent_path() / "support").string();

}  // namespace

TEST_CASE("A port handed out to one test process is reserved against the C++, Python and Node choosers") {
  const int port = free_port();
  CHECK(port > 0);
  // Outside the ephemeral range, where outgoing connections would take it.
  int ephemeral_low = 0, ephemeral_high = 0;
  std::ifstream("/proc/sys/net/ipv4/ip_local_port_range") >> ephemeral_low >> ephemeral_high;
  CHECK((port < ephemeral_low || port > ephemeral_high));
  CHECK(mq::testing::detail::port_bindable(port));  // the server's own bind is not hindered
  CHECK_FALSE(mq::testing::detail::reserve_among_test_processes(port));

  const std::string p = std::to_string(port);
  CHECK(output_of("python3 -c 'import sys; sys.path.insert(0, \"" + kSupport +
                  "\"); import free_port; print(free_port._reserve_among_test_processes(" + p + "))'") ==
        "False");
  CHECK(output_of("node --input-type=module -e 'import { reserveAmongTestProcesses } from \"" + kSupport +
                  "/free_port.mjs\"; console.log(await reserveAmongTestProcesses(" + p + "))'") == "false");
  // And a port nobody holds they reserve (so the checks above are not always false).
  const int unheld = unheld_port();
  const std::string u = std::to_string(unheld);
  CHECK(output_of("python3 -c 'import sys; sys.path.insert(0, \"" + kSupport +
                  "\"); import free_port; print(free_port._reserve_among_test_processes(" + u + "))'") ==
        "True");
  CHECK(output_of("node --input-type=module -e 'import { reserveAmongTestProcesses } from \"" + kSupport +
                  "/free_port.mjs\"; console.log(await reserveAmongTestProcesses(" + u + "))'") == "true");
}

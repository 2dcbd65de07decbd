// The tests' port choosers (tests/support/mqd_process.h, free_port.py, free_port.mjs) keep ctest's
// parallel test processes off each other's ports: a port one process handed out is reserved, and the
// other two languages' choosers see it so.
#include <doctest/doctest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
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

// A port of the choosers' range that no process holds now (this one held it a moment to see),
// searched from a random one: two copies of this test run at once (ctest's entry and the case in
// asan.mqd_tests), and from the same start they would look at the same ports.
int unheld_port() {
  const auto [low, high] = mq::testing::detail::server_port_range().value_or(std::pair{20000, 30000});
  const int count = high - low + 1;
  std::mt19937 random{std::random_device{}()};
  const int first = std::uniform_int_distribution<int>(0, count - 1)(random);
  for (int i = 0; i < count; ++i) {
    const int port = low + (first + i) % count;
    const int reservation = mq::testing::detail::reserve_among_test_processes(port);
    if (reservation < 0) continue;
    ::close(reservation);
    return port;
  }
  FAIL("no unheld port between " << low << " and " << high);
  return -1;
}

const std::string kSupport =
    (std::filesystem::path(__FILE__).parent_path().parent_path() / "support").string();

// Whether free_port.py's reservation of `port` succeeds in a process of its own: "True" or "False".
std::string python_reserves(int port) {
  return output_of("python3 -c 'import sys; sys.path.insert(0, \"" + kSupport +
                   "\"); import free_port; print(free_port._reserve_among_test_processes(" +
                   std::to_string(port) + ") is not None)'");
}

// The same for free_port.mjs: "true" or "false".
std::string node_reserves(int port) {
  return output_of("node --input-type=module -e 'import { reserveAmongTestProcesses } from \"" + kSupport +
                   "/free_port.mjs\"; console.log((await reserveAmongTestProcesses(" + std::to_string(port) +
                   ")) !== null)'");
}

}  // namespace

TEST_CASE("A port handed out to one test process is reserved against the C++, Python and Node choosers") {
  const int port = free_port();
  CHECK(port > 0);
  // Outside the ephemeral range, where outgoing connections would take it, unless the range leaves
  // too few ports outside it (then the kernel picks one: see free_port).
  int ephemeral_low = 0, ephemeral_high = 0;
  std::ifstream("/proc/sys/net/ipv4/ip_local_port_range") >> ephemeral_low >> ephemeral_high;
  if (mq::testing::detail::server_port_range()) {
    CHECK((port < ephemeral_low || port > ephemeral_high));
  } else {
    MESSAGE("ip_local_port_range " << ephemeral_low << " " << ephemeral_high
                                   << ": ports come from the kernel");
  }
  CHECK(mq::testing::detail::bind_and_close(port) == port);  // the server's own bind is not hindered
  CHECK(mq::testing::detail::reserve_among_test_processes(port) == -1);

  CHECK(python_reserves(port) == "False");
  CHECK(node_reserves(port) == "false");
  // And a port nobody holds they reserve (so the checks above are not always false).
  const int unheld = unheld_port();
  CHECK(python_reserves(unheld) == "True");
  CHECK(node_reserves(unheld) == "true");
}

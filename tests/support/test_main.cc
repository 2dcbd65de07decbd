// doctest's main, compiled once per build tree and linked into every test program.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <csignal>

int main(int argc, char** argv) {
  // Tests talk to servers that may close a connection first (a refused request body, say): a write
  // to it must fail with EPIPE, not kill the test program.
  std::signal(SIGPIPE, SIG_IGN);
  doctest::Context context(argc, argv);
  return context.run();
}

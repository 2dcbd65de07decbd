// mqd's Connection over a socket pair: where a request head ends, what is refused (431), which
// header lines are dropped (Range), and that bytes of a pipelined request are kept.
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <string>

#include "connection.h"

using mqd::Connection;
using mqd::Head;
using mqd::Io;

namespace {

// A Connection on one end of a socket pair; the test writes the client's bytes into the other.
struct Pair {
  std::shared_ptr<std::atomic<std::size_t>> open = std::make_shared<std::atomic<std::size_t>>(0);
  int client = -1;
  std::unique_ptr<Connection> server;
  Pair() {
    int fds[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
    client = fds[0];
    server = std::make_unique<Connection>(fds[1], nullptr, open);
  }
  ~Pair() {
    server.reset();
    ::close(client);
  }
  // Sends `bytes` and reads everything there is into the connection.
  void arrive(const std::string& bytes) {
    REQUIRE(::send(client, bytes.data(), bytes.size(), 0) == static_cast<ssize_t>(bytes.size()));
    while (server->read_some(16 * 1024) == Io::kDone) {
    }
  }
  std::string take_all() {
    std::string out(server->unread().size(), '\0');
    server->take(out.data(), out.size());
    return out;
  }
};

}  // namespace

TEST_CASE("AHeadIsCompleteOnlyAtItsEmptyLineWhateverTheReadsAre") {
  Pair pair;
  CHECK(*pair.open == 1);
  pair.arrive("GET /topics HTTP/1.1\r\nHo");
  CHECK(pair.server->scan_head() == Head::kIncomplete);
  pair.arrive("st: x\r\n\r");
  CHECK(pair.server->scan_head() == Head::kIncomplete);
  pair.arrive("\n");
  CHECK(pair.server->scan_head() == Head::kComplete);
  CHECK(pair.server->unread() == "GET /topics HTTP/1.1\r\nHost: x\r\n\r\n");
}

TEST_CASE("EmptyLinesBeforeARequestLineAreSkipped") {
  Pair pair;
  pair.arrive("\r\n\r\nGET / HTTP/1.1\r\n\r\n");
  CHECK(pair.server->scan_head() == Head::kComplete);
  CHECK(pair.server->unread() == "GET / HTTP/1.1\r\n\r\n");
}

TEST_CASE("RangeAndIfRangeLinesAreDroppedFromTheHeadOnly") {
  Pair pair;
  const std::string body = "Range: bytes=0-1\r\n";  // a body that looks like a header stays
  pair.arrive(
      "POST /produce HTTP/1.1\r\nRange: bytes=0-1\r\nX-A: 1\r\nrange: 5-6\r\nIF-RANGE: x\r\n"
      "X-B: a\nRange: bytes=1-2\r\nX-Range: kept\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body);
  CHECK(pair.server->scan_head() == Head::kComplete);
  CHECK(pair.take_all() == "POST /produce HTTP/1.1\r\nX-A: 1\r\nX-B: a\nX-Range: kept\r\nContent-Length: " +
                               std::to_string(body.size()) + "\r\n\r\n" + body);
}

TEST_CASE("APipelinedHeadStaysUnreadBehindTheFirst") {
  Pair pair;
  const std::string first = "GET /healthz HTTP/1.1\r\n\r\n";
  pair.arrive(first + "GET /topics HTTP/1.1\r\n\r\nGET /st");
  CHECK(pair.server->scan_head() == Head::kComplete);
  std::string head(first.size(), '\0');
  CHECK(pair.server->take(head.data(), head.size()) == first.size());
  CHECK(head == first);
  CHECK(pair.server->scan_head() == Head::kComplete);
  CHECK(pair.server->unread().starts_with("GET /topics"));
  std::string second(24, '\0');
  pair.server->take(second.data(), second.size());
  CHECK(pair.server->scan_head() == Head::kIncomplete);
  CHECK(pair.server->unread() == "GET /st");
}

TEST_CASE("AHeadPast64KiBOrWithMoreThan100FieldsIsRefused") {
  SUBCASE("size, without an end") {
    Pair pair;
    pair.arrive("GET / HTTP/1.1\r\nX: " + std::string(Connection::kMaxHeadBytes, 'a'));
    CHECK(pair.server->scan_head() == Head::kTooLarge);
  }
  SUBCASE("size, with an end") {
    Pair pair;
    pair.arrive("GET / HTTP/1.1\r\nX: " + std::string(Connection::kMaxHeadBytes, 'a') + "\r\n\r\n");
    CHECK(pair.server->scan_head() == Head::kTooLarge);
  }
  SUBCASE("fields") {
    std::string head = "GET / HTTP/1.1\r\n";
    for (std::size_t i = 0; i < Connection::kMaxHeaderFields; ++i) head += "X: y\r\n";
    Pair at_limit;
    at_limit.arrive(head + "\r\n");
    CHECK(at_limit.server->scan_head() == Head::kComplete);
    Pair over;
    over.arrive(head + "X: y\r\n\r\n");
    CHECK(over.server->scan_head() == Head::kTooManyFields);
  }
  const std::string answer = Connection::refusal(Head::kTooLarge);
  CHECK(answer.starts_with("HTTP/1.1 431 "));
  CHECK(answer.find("\r\nConnection: close\r\n") != std::string::npos);
  CHECK(answer.ends_with("\r\n\r\n{\"error\":\"request headers larger than 64 KiB\"}"));
}

TEST_CASE("AClosedPeerReadsAsClosedAndTheCountDropsWithTheConnection") {
  auto pair = std::make_unique<Pair>();
  auto open = pair->open;
  CHECK(pair->server->read_some(100) == Io::kWantRead);
  ::shutdown(pair->client, SHUT_WR);
  CHECK(pair->server->read_some(100) == Io::kClosed);
  pair.reset();
  CHECK(*open == 0);
}

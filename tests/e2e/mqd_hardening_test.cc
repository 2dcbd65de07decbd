// Issue 10's server defects against a real mqd: what produce accepts survives restarts, no byte
// sequence ends the process, auth comes first, refused requests leave no state, one process owns
// a DATA_DIR, configuration mistakes stop mqd with one line, and a full disk answers 507.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "http_helpers.h"
#include "running_mqd.h"
#include "store_helpers.h"

using namespace mq::testing;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

// Sends `bytes` as they are on a new connection and returns everything the server answers before
// it closes the connection or goes quiet for a second.
std::string raw_exchange(int port, const std::string& bytes) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  timeval timeout{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  REQUIRE(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size()));
  std::string answer;
  char buffer[4096];
  while (true) {
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) break;
    answer.append(buffer, static_cast<std::size_t>(n));
    if (answer.find("\r\n\r\n") != std::string::npos) {
      // One whole answer with a Content-Length body is enough.
      const auto head_end = answer.find("\r\n\r\n") + 4;
      const auto length_at = answer.find("Content-Length: ");
      if (length_at != std::string::npos && length_at < head_end) {
        const auto length = std::stoul(answer.substr(length_at + 16));
        if (answer.size() >= head_end + length) break;
      }
    }
  }
  ::close(fd);
  return answer;
}

int status_of(const std::string& answer) { return answer.size() > 12 ? std::stoi(answer.substr(9, 3)) : 0; }

json body_of(const std::string& answer) { return json::parse(answer.substr(answer.find("\r\n\r\n") + 4)); }

std::size_t open_descriptors(pid_t pid) {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd"))
    ++n;
  return n;
}

// Runs mqd with `env` (PORT and DATA_DIR filled in) until it exits; its stderr lines.
std::vector<std::string> refused_start(std::map<std::string, std::string> env, int* exit_code = nullptr) {
  TempDir dir;
  if (!env.contains("PORT")) env["PORT"] = std::to_string(free_port());
  if (!env.contains("DATA_DIR")) env["DATA_DIR"] = dir / "data";
  const std::string log = dir / "stderr.txt";
  MqdProcess mqd(env, log);
  auto status = mqd.wait_exit();
  REQUIRE_MESSAGE(status, "mqd should have stopped at start");
  CHECK(WIFEXITED(*status));
  if (exit_code) *exit_code = WEXITSTATUS(*status);
  CHECK(WEXITSTATUS(*status) != 0);
  return split_lines(file_contents(log));
}

json consume_all(int port, const std::string& group, std::size_t expected, int partition = 0) {
  SseStream stream(port, "/consume?topic=events&partition=" + std::to_string(partition) + "&group=" + group);
  json events = json::array();
  while (events.size() < expected) {
    auto event = stream.next();
    if (!event) break;
    events.push_back(event->data);
  }
  return events;
}

}  // namespace

TEST_CASE("A payload with integers beyond 64 bits is kept across clean and hard restarts") {
  RunningMqd mqd(RunningMqd::Env{{"FSYNC", "always"}});
  const std::string big = "123456789012345678901234567890";
  auto first =
      http_post(mqd.port(), "/produce?topic=events&partition=0", "{\"payload\":{\"big\":" + big + "}}");
  REQUIRE(first.status == 200);
  REQUIRE(http_post(mqd.port(), "/produce?topic=events&partition=0", R"({"payload":"after"})").status == 200);
  for (int signal : {SIGTERM, SIGKILL}) {
    CAPTURE(signal);
    mqd.restart(signal);
    CHECK(mqd.stderr_text().find("dropped") == std::string::npos);
    const json events = consume_all(mqd.port(), "g" + std::to_string(signal), 2);
    REQUIRE(events.size() == 2);
    CHECK(events[0]["offset"] == 0);
    CHECK(events[1]["payload"] == "after");
  }
  // Offsets go on where they were: none is reused.
  CHECK(http_post(mqd.port(), "/produce?topic=events&partition=0", R"({"payload":3})").json()["offset"] == 2);
}

TEST_CASE("No byte sequence in a path or query ends mqd, and every error body is valid JSON") {
  RunningMqd mqd;
  const std::vector<std::pair<std::string, int>> requests = {
      {"GET /%FF HTTP/1.1\r\nHost: x\r\n\r\n", 404},
      {"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n", 404},
      {"GET /consume?topic=%FF&partition=0&group=g HTTP/1.1\r\nHost: x\r\n\r\n", 400},
      {"GET /consume?topic=events&partition=0&group=%C3%28 HTTP/1.1\r\nHost: x\r\n\r\n", 400},
      {"GET /consume?topic=events&partition=%FF&group=g HTTP/1.1\r\nHost: x\r\n\r\n", 400},
      {"POST /produce?topic=%80 HTTP/1.1\r\nHost: x\r\nContent-Length: 14\r\n\r\n{\"payload\":1}\n", 400},
      {"GET /stats?topic=%FF%FF HTTP/1.1\r\nHost: x\r\n\r\n", 400},
  };
  for (const auto& entry : requests) {
    const auto& request = entry.first;  // not a structured binding: CAPTURE captures it
    const auto& expected = entry.second;
    CAPTURE(request);
    const std::string answer = raw_exchange(mqd.port(), request);
    CHECK(status_of(answer) == expected);
    CHECK_NOTHROW(body_of(answer).at("error").get<std::string>());
  }
  CHECK(http_get(mqd.port(), "/healthz").status == 200);
}

TEST_CASE("Without the token every route but /healthz answers 401, whatever the method") {
  RunningMqd mqd(RunningMqd::Env{{"AUTH_TOKEN", "s3cret"}});
  CHECK(status_of(raw_exchange(mqd.port(),
                               "PUT /produce HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")) == 401);
  CHECK(http_get(mqd.port(), "/produce").status == 401);
  CHECK(http_get(mqd.port(), "/nowhere").status == 401);
  const httplib::Headers token{{"Authorization", "Bearer s3cret"}};
  CHECK(http_get(mqd.port(), "/produce", token).status == 405);
  CHECK(http_get(mqd.port(), "/nowhere", token).status == 404);
  CHECK(http_get(mqd.port(), "/healthz").status == 200);
}

TEST_CASE("HEAD /consume and refused requests create no group and hold no descriptors") {
  RunningMqd mqd;
  REQUIRE(http_post(mqd.port(), "/produce?topic=events&partition=0", R"({"payload":1})").status == 200);
  httplib::Client client("127.0.0.1", mqd.port());
  auto head = client.Head("/consume?topic=events&partition=0&group=viahead");
  REQUIRE(head);
  CHECK(head->status == 405);

  const pid_t pid = mqd.pid();
  REQUIRE(pid > 0);
  const std::size_t before = open_descriptors(pid);
  for (int i = 0; i < 100; ++i) {
    const std::string query = "?topic=events&partition=0&group=bogus" + std::to_string(i);
    CHECK(http_post(mqd.port(), "/nack" + query, R"({"id":"0-0"})").status == 409);
    CHECK(http_post(mqd.port(), "/touch" + query, R"({"id":"0-0"})").status == 409);
    CHECK(http_post(mqd.port(), "/ack" + query, R"({"id":"not-an-id"})").status == 404);
    CHECK(http_post(mqd.port(), "/ack" + query, R"({"id":"0-99"})").status == 404);
  }
  const json stats = http_get(mqd.port(), "/stats?topic=events").json();
  for (const auto& partition : stats["topics"][0]["partitions"]) CHECK(partition["groups"].empty());
  CHECK_FALSE(fs::exists(mqd.data_dir() + "/events/groups"));
  // Real groups do not add descriptors beyond the journals' bound (256), however many there are.
  for (int i = 0; i < 300; ++i) {
    CHECK(http_post(mqd.port(), "/ack?topic=events&partition=0&group=real" + std::to_string(i),
                    R"({"id":"0-0"})")
              .status == 200);
  }
  CHECK(open_descriptors(pid) < before + 256 + 20);
}

TEST_CASE("A partition number too large for any topic is a 404, a malformed one a 400") {
  RunningMqd mqd;
  CHECK(http_get(mqd.port(), "/consume?topic=events&partition=4294967296&group=g").status == 404);
  CHECK(http_post(mqd.port(), "/produce?topic=events&partition=99999999999999999999999", R"({"payload":1})")
            .status == 404);
  CHECK(http_post(mqd.port(), "/ack?topic=events&partition=4294967296&group=g", R"({"id":"0-0"})").status ==
        404);
  CHECK(http_get(mqd.port(), "/consume?topic=events&partition=-1&group=g").status == 400);
  CHECK(http_get(mqd.port(), "/consume?topic=events&partition=1x&group=g").status == 400);
}

TEST_CASE("Configuration mistakes stop mqd at start with one line naming the variable") {
  auto lines = refused_start({{"AUTH_TOKEN", ""}});
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].find("AUTH_TOKEN") != std::string::npos);

  lines = refused_start({{"TOPICS", std::string(126, 'x') + ":1"}, {"MAX_DELIVERIES", "1"}});
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].find("TOPICS") != std::string::npos);
  CHECK(lines[0].find("-dlq") != std::string::npos);
}

TEST_CASE("mqd --help and --version print and exit without starting a server") {
  TempDir dir;
  for (const std::string arg : {"--help", "--version"}) {
    CAPTURE(arg);
    const std::string out = dir / "stdout.txt";
    const int port = free_port();
    MqdProcess mqd({arg}, {{"PORT", std::to_string(port)}, {"DATA_DIR", dir / "data"}}, dir / "stderr.txt",
                   out);
    auto status = mqd.wait_exit();
    REQUIRE(status);
    CHECK(WIFEXITED(*status));
    CHECK(WEXITSTATUS(*status) == 0);
    const std::string text = file_contents(out);
    if (arg == "--help") {
      CHECK(text.find("usage: mqd") != std::string::npos);
      CHECK(text.find("DATA_DIR") != std::string::npos);
      CHECK(text.find("TLS_CERT_FILE") != std::string::npos);
    } else {
      CHECK(text.starts_with("mqd "));
    }
    CHECK_FALSE(fs::exists(dir / "data"));
  }
}

TEST_CASE("A second mqd stops at start: on a busy port with the reason, on a busy DATA_DIR with the holder") {
  RunningMqd first;
  CHECK(first.stderr_text().find("warning: listening on all interfaces with auth off") != std::string::npos);
  TempDir other;
  auto lines = refused_start({{"PORT", std::to_string(first.port())}, {"DATA_DIR", other / "data"}});
  std::string all;
  for (const auto& line : lines) all += line + "\n";
  CHECK(all.find("cannot listen") != std::string::npos);
  CHECK(all.find("Address already in use") != std::string::npos);
  // "listening" is said once the port is bound, never before: scripts take it as the sign to connect.
  CHECK(all.find("listening on") == std::string::npos);

  lines = refused_start({{"DATA_DIR", first.data_dir()}});
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].find(first.data_dir()) != std::string::npos);
  CHECK(lines[0].find("pid ") != std::string::npos);
  // The first goes on undisturbed.
  CHECK(http_post(first.port(), "/produce?topic=events&partition=0", R"({"payload":1})").status == 200);
}

TEST_CASE("A full disk answers 507, keeps nothing of the refused produce and recovers without a restart") {
  TempDir dir;
  const std::string mount_point = dir / "small";
  fs::create_directories(mount_point);
  if (::mount("tmpfs", mount_point.c_str(), "tmpfs", 0, "size=4m") != 0) {
    // Not silent: the report shows it. The FileSystem seam tests (unit) cover the same paths.
    MESSAGE("SKIPPED: cannot mount a tmpfs here (" << std::strerror(errno) << "); run the tests as root");
    return;
  }
  struct Unmount {
    std::string path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{mount_point};
  // A filler the test removes later, so that space comes back without touching mqd's files.
  {
    std::ofstream filler(mount_point + "/filler");
    filler << std::string(1 << 20, 'f');
  }
  RunningMqd mqd(RunningMqd::Env{{"FSYNC", "always"}}, mount_point + "/data");
  // A consumer that was there before the disk filled up.
  SseStream early(mqd.port(), "/consume?topic=events&partition=0&group=early");
  const std::string payload = "{\"payload\":\"" + std::string(60000, 'p') + "\"}";
  int stored = 0;
  HttpAnswer refused;
  for (int i = 0; i < 200; ++i) {
    auto answer = http_post(mqd.port(), "/produce?topic=events&partition=0", payload);
    if (answer.status != 200) {
      refused = answer;
      break;
    }
    ++stored;
  }
  REQUIRE(refused.status == 507);
  CHECK(refused.json()["error"].get<std::string>().find("no space left on device") != std::string::npos);
  REQUIRE(stored > 10);
  // Stored messages stay readable and consumable, by the groups there were and by new ones.
  auto delivered = early.next();
  REQUIRE(delivered);
  CHECK(consume_all(mqd.port(), "reader", 3).size() == 3);
  fs::remove(mount_point + "/filler");
  CHECK(http_post(mqd.port(), "/ack?topic=events&partition=0&group=early", json{{"id", delivered->id}}.dump())
            .json()["acked"] == 1);
  auto again = http_post(mqd.port(), "/produce?topic=events&partition=0", R"({"payload":"after"})");
  REQUIRE(again.status == 200);
  CHECK(again.json()["offset"] == stored);  // no gap where the refused one was
  mqd.restart(SIGKILL);
  CHECK(mqd.stderr_text().find("dropped") == std::string::npos);
  const auto stats = http_get(mqd.port(), "/stats?topic=events").json();
  CHECK(stats["topics"][0]["partitions"][0]["next_offset"] == stored + 1);
}

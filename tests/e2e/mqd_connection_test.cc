// mqd's connections under hostile and unlucky clients: slow heads and bodies (slowloris), huge
// headers, Range amplification, pipelining, idle keep-alive connections, and HTTPS.
#include <doctest/doctest.h>
#include <httplib.h>
#include <sys/resource.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "mqd_process.h"
#include "store_helpers.h"
#include "temp_dir.h"

using namespace mq::testing;
using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

namespace {

using Env = std::map<std::string, std::string>;

// A real mqd with its pid at hand (for /proc), on a free port, listening before this returns.
class Mqd {
 public:
  explicit Mqd(Env env = {}) : port_(free_port()) {
    std::map<std::string, std::string> all = {{"PORT", std::to_string(port_)},
                                              {"DATA_DIR", dir_ / "data"},
                                              {"FSYNC", "never"},
                                              {"TOPICS", "events:4"}};
    for (auto& [k, v] : env) all[k] = v;
    process_ = std::make_unique<MqdProcess>(all, dir_ / "stderr.txt");
    REQUIRE_MESSAGE(process_->wait_until_listening(port_), "mqd did not start: " << stderr_text());
  }
  int port() const { return port_; }
  pid_t pid() const { return process_->pid(); }
  std::string stderr_text() const { return file_contents(dir_ / "stderr.txt"); }
  std::optional<int> stop() { return process_->stop(SIGTERM); }

 private:
  TempDir dir_;
  int port_;
  std::unique_ptr<MqdProcess> process_;
};

// A field of /proc/<pid>/status, e.g. VmRSS in kB.
long proc_status_kb(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with(field + ":")) return std::stol(line.substr(field.size() + 1));
  }
  return -1;
}

std::size_t thread_count(pid_t pid) {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& entry :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
    ++n;
  }
  return n;
}

// The test opens more sockets than the default soft limit of 1024: raises it to the hard limit and
// returns that.
std::size_t raise_own_file_limit() {
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &limit);
  return static_cast<std::size_t>(limit.rlim_cur);
}

int connect_to(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool send_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// Reads until the server closes the connection (or resets it, or `timeout` passes); the bytes read.
std::string read_until_closed(int fd, milliseconds timeout, bool* closed = nullptr) {
  const auto deadline = Clock::now() + timeout;
  std::string out;
  char buffer[16384];
  while (true) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    pollfd p{fd, POLLIN, 0};
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) break;
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) {
      if (closed) *closed = true;
      break;
    }
    out.append(buffer, static_cast<std::size_t>(n));
  }
  return out;
}

// Waits until the server has closed `fd` (end of stream or reset), discarding what it sends.
bool await_closed(int fd, milliseconds timeout) {
  bool closed = false;
  read_until_closed(fd, timeout, &closed);
  return closed;
}

struct RawAnswer {
  int status = 0;
  std::string head;
  std::string body;
};

// Splits HTTP/1.1 answers with Content-Length bodies, as they came one after another.
std::vector<RawAnswer> split_answers(std::string bytes) {
  std::vector<RawAnswer> answers;
  while (true) {
    const auto head_end = bytes.find("\r\n\r\n");
    if (head_end == std::string::npos || !bytes.starts_with("HTTP/1.1 ")) return answers;
    RawAnswer answer;
    answer.head = bytes.substr(0, head_end);
    answer.status = std::stoi(bytes.substr(9, 3));
    std::size_t length = 0;
    const auto at = answer.head.find("Content-Length: ");
    if (at != std::string::npos) length = std::stoul(answer.head.substr(at + 16));
    answer.body = bytes.substr(head_end + 4, length);
    bytes.erase(0, head_end + 4 + length);
    answers.push_back(std::move(answer));
  }
}

// Reads until `count` whole answers have come (or the connection closes, or `timeout` passes).
std::string read_answers(int fd, std::size_t count, milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::string bytes;
  char buffer[16384];
  while (split_answers(bytes).size() < count) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    pollfd p{fd, POLLIN, 0};
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) break;
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) break;
    bytes.append(buffer, static_cast<std::size_t>(n));
  }
  return bytes;
}

std::string produce_request(const std::string& body, bool close = false) {
  return "POST /produce?topic=events&partition=0 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
         std::string(close ? "Connection: close\r\n" : "") +
         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

// One produce on a fresh connection: the status and how long it took.
std::pair<int, milliseconds> timed_produce(int port) {
  const auto start = Clock::now();
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(seconds(5));
  client.set_read_timeout(seconds(10));
  auto result = client.Post("/produce?topic=events&partition=0", R"({"payload": 1})", "application/json");
  return {result ? result->status : 0, std::chrono::duration_cast<milliseconds>(Clock::now() - start)};
}

}  // namespace

TEST_CASE("SlowHeadersOnManyConnectionsHoldNoThreadsDelayNoProduceAndAreCutAfterRequestTimeout") {
  // 1,100 connections, as in the report (mqd raises its own limit the same way), unless the hard
  // limit of open files is too low for that here.
  const std::size_t file_limit = raise_own_file_limit();
  const int kSlow = static_cast<int>(std::min<std::size_t>(1100, file_limit > 300 ? file_limit - 200 : 100));
  if (kSlow < 1100) {
    MESSAGE("only " << kSlow << " slow connections: the hard limit of open files is " << file_limit);
  }
  // The default MAX_CONNECTIONS (1024), fewer than the slow connections: those still sending their
  // head are not counted against it, so the produce below is neither kept waiting nor refused.
  Mqd mqd(Env{{"REQUEST_TIMEOUT_MS", "1500"}});
  const std::size_t threads_before = thread_count(mqd.pid());
  std::vector<int> slow;
  const auto opened = Clock::now();
  for (int i = 0; i < kSlow; ++i) {
    const int fd = connect_to(mqd.port());
    REQUIRE(fd >= 0);
    REQUIRE(send_all(fd, "GET /topics HTTP/1.1\r\nHost: x\r\n"));
    slow.push_back(fd);
  }
  // One header line per connection every 250 ms (the attack's own pace), while produces from fresh
  // connections are timed.
  std::vector<milliseconds> latencies;
  std::size_t most_threads = 0;
  for (int round = 0; round < 3; ++round) {
    for (int fd : slow) send_all(fd, "X-Slow: " + std::to_string(round) + "\r\n");
    most_threads = std::max(most_threads, thread_count(mqd.pid()));
    auto [status, took] = timed_produce(mqd.port());
    CHECK(status == 200);
    latencies.push_back(took);
    std::this_thread::sleep_for(milliseconds(250));  // the attacker's pace, not a wait for an event
  }
  for (auto took : latencies) CHECK(took < milliseconds(1000));
  MESSAGE("produce latency with " << kSlow << " slow connections open: " << latencies[0].count() << ", "
                                  << latencies[1].count() << ", " << latencies[2].count()
                                  << " ms; mqd threads " << threads_before << " -> " << most_threads);
  CHECK(most_threads < threads_before + 16);  // slow clients hold no worker threads
  // Every slow connection is closed by mqd once REQUEST_TIMEOUT_MS has passed since its first byte.
  std::size_t closed = 0;
  for (int fd : slow) {
    const auto left =
        std::chrono::duration_cast<milliseconds>(opened + milliseconds(1500 + 3000) - Clock::now());
    if (await_closed(fd, std::max(left, milliseconds(1)))) ++closed;
    ::close(fd);
  }
  CHECK(closed == slow.size());
  CHECK(timed_produce(mqd.port()).first == 200);
}

TEST_CASE("ABodyTrickledSlowerThanRequestTimeoutIsCut") {
  Mqd mqd(Env{{"REQUEST_TIMEOUT_MS", "1000"}});
  const int fd = connect_to(mqd.port());
  REQUIRE(fd >= 0);
  const auto start = Clock::now();
  REQUIRE(send_all(fd,
                   "POST /produce?topic=events&partition=0 HTTP/1.1\r\nHost: x\r\nContent-Length: "
                   "100\r\n\r\n{\"payload\": "));
  // One byte every 100 ms: each recv() gets something, yet the whole body is late.
  bool closed = false;
  while (!closed && Clock::now() - start < seconds(5)) {
    send_all(fd, " ");
    closed = await_closed(fd, milliseconds(100));
  }
  const auto took = Clock::now() - start;
  ::close(fd);
  CHECK(closed);
  CHECK(took >= milliseconds(900));
  CHECK(took < milliseconds(2500));
  CHECK(timed_produce(mqd.port()).first == 200);
}

TEST_CASE("AHundredMegabytesOfHeadersGet431OrACloseWithoutGrowingMemory") {
  Mqd mqd;
  REQUIRE(timed_produce(mqd.port()).first == 200);  // warm: a worker exists
  const long rss_before = proc_status_kb(mqd.pid(), "VmRSS");
  const long peak_before = proc_status_kb(mqd.pid(), "VmHWM");
  const int fd = connect_to(mqd.port());
  REQUIRE(fd >= 0);
  std::string line = "X-Filler: " + std::string(1000, 'a') + "\r\n";
  std::string chunk;
  while (chunk.size() < (1 << 20)) chunk += line;
  REQUIRE(send_all(fd, "GET /stats HTTP/1.1\r\nHost: x\r\n"));
  std::size_t sent = 0;
  while (sent < (100u << 20) && send_all(fd, chunk)) sent += chunk.size();
  const std::string answer = read_until_closed(fd, seconds(5));
  ::close(fd);
  if (!answer.empty()) {
    CHECK(answer.starts_with("HTTP/1.1 431 "));
    CHECK(answer.find("Connection: close") != std::string::npos);
    const auto answers = split_answers(answer);
    REQUIRE(answers.size() == 1);
    CHECK(json::parse(answers[0].body)["error"] == "request headers larger than 64 KiB");
  }
  const long rss_after = proc_status_kb(mqd.pid(), "VmRSS");
  const long peak_after = proc_status_kb(mqd.pid(), "VmHWM");
  MESSAGE("headers sent before mqd refused: " << sent << " bytes; VmRSS " << rss_before << " -> " << rss_after
                                              << " kB, VmHWM " << peak_before << " -> " << peak_after
                                              << " kB");
  CHECK(sent < (100u << 20));  // refused early, not read to the end
  CHECK(rss_after - rss_before < 4096);
  CHECK(peak_after - peak_before < 4096);
  CHECK(timed_produce(mqd.port()).first == 200);
}

TEST_CASE("MoreThanAHundredHeaderLinesGet431") {
  Mqd mqd;
  auto request_with = [](int fields) {
    std::string request = "GET /healthz HTTP/1.1\r\nHost: x\r\n";
    for (int i = 1; i < fields; ++i) request += "X-Field-" + std::to_string(i) + ": y\r\n";
    return request + "\r\n";
  };
  for (const auto& entry : std::vector<std::pair<int, int>>{{100, 200}, {101, 431}, {1000, 431}}) {
    const auto& fields = entry.first;  // not a structured binding: CAPTURE captures it
    const auto& status = entry.second;
    CAPTURE(fields);
    const int fd = connect_to(mqd.port());
    REQUIRE(send_all(fd, request_with(fields)));
    const auto answers = split_answers(read_answers(fd, 1, seconds(5)));
    ::close(fd);
    REQUIRE(answers.size() == 1);
    CHECK(answers[0].status == status);
    if (status == 431) CHECK(json::parse(answers[0].body)["error"] == "more than 100 request headers");
  }
}

TEST_CASE("ThousandsOfRangesAreIgnoredOnStatsAndMetrics") {
  Mqd mqd;
  REQUIRE(timed_produce(mqd.port()).first == 200);
  std::string ranges = "bytes=0-0";
  for (int i = 1; i < 3000; ++i) ranges += "," + std::to_string(i) + "-" + std::to_string(i);
  for (const char* path : {"/stats", "/metrics", "/topics", "/healthz"}) {
    CAPTURE(path);
    httplib::Client client("127.0.0.1", mqd.port());
    auto plain = client.Get(path);
    REQUIRE(plain);
    for (const std::string& range : {ranges, std::string("bytes=0-9")}) {
      auto ranged = client.Get(path, {{"Range", range}, {"If-Range", "x"}});
      REQUIRE(ranged);
      CHECK(ranged->status == 200);
      CHECK(ranged->body.size() == plain->body.size());
      CHECK(ranged->get_header_value("Content-Range").empty());
    }
  }
}

TEST_CASE("PipelinedRequestsInOneWriteAreAllAnsweredInOrder") {
  Mqd mqd;
  const std::string produce = produce_request(R"({"payload": {"n": 1}})");
  const std::string topics = "GET /topics HTTP/1.1\r\nHost: x\r\n\r\n";
  const std::string healthz_close = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  SUBCASE("two") {
    const int fd = connect_to(mqd.port());
    REQUIRE(send_all(fd, produce + "GET /topics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    const auto answers = split_answers(read_until_closed(fd, seconds(5)));
    ::close(fd);
    REQUIRE(answers.size() == 2);
    CHECK(answers[0].status == 200);
    CHECK(json::parse(answers[0].body).contains("offset"));
    CHECK(answers[1].status == 200);
    CHECK(json::parse(answers[1].body).contains("topics"));
  }
  SUBCASE("three, then more on the same connection") {
    const int fd = connect_to(mqd.port());
    REQUIRE(send_all(fd, produce + topics + produce));
    // The third answer arrives although nothing more was sent.
    std::string bytes = read_answers(fd, 3, seconds(5));
    REQUIRE(split_answers(bytes).size() == 3);
    REQUIRE(send_all(fd, healthz_close));
    bytes += read_until_closed(fd, seconds(5));
    ::close(fd);
    const auto answers = split_answers(bytes);
    REQUIRE(answers.size() == 4);
    CHECK(json::parse(answers[0].body)["offset"] == 0);
    CHECK(json::parse(answers[1].body).contains("topics"));
    CHECK(json::parse(answers[2].body)["offset"] == 1);
    CHECK(json::parse(answers[3].body) == json{{"status", "ok"}});
  }
}

TEST_CASE("IdleKeepAliveConnectionsHoldNoThreads") {
  Mqd mqd;
  REQUIRE(timed_produce(mqd.port()).first == 200);
  const std::size_t threads_before = thread_count(mqd.pid());
  std::vector<int> idle;
  for (int i = 0; i < 300; ++i) {
    const int fd = connect_to(mqd.port());
    REQUIRE(fd >= 0);
    REQUIRE(send_all(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
    const auto answers = split_answers(read_answers(fd, 1, seconds(5)));
    REQUIRE(answers.size() == 1);
    CHECK(answers[0].status == 200);
    idle.push_back(fd);  // kept open: an idle keep-alive connection
  }
  const std::size_t threads_idle = thread_count(mqd.pid());
  auto [status, took] = timed_produce(mqd.port());
  MESSAGE("mqd threads: " << threads_before << " before, " << threads_idle << " with 300 idle connections; "
                          << "produce " << took.count() << " ms");
  CHECK(status == 200);
  CHECK(took < milliseconds(1000));
  CHECK(threads_idle < threads_before + 8);
  for (int fd : idle) ::close(fd);
}

namespace {

// A self-signed certificate for 127.0.0.1, made with the openssl command.
struct TestCertificate {
  TempDir dir;
  std::string cert = dir / "c.pem";
  std::string key = dir / "k.pem";
  TestCertificate() {
    const std::string command =
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 -addext "
        "subjectAltName=IP:127.0.0.1 -keyout " +
        key + " -out " + cert + " 2>/dev/null";
    REQUIRE(std::system(command.c_str()) == 0);
  }
};

std::unique_ptr<httplib::SSLClient> https_client(int port, const std::string& ca) {
  auto client = std::make_unique<httplib::SSLClient>("127.0.0.1", port);
  client->set_ca_cert_path(ca.c_str());
  client->enable_server_certificate_verification(true);
  client->set_read_timeout(seconds(30));
  return client;
}

}  // namespace

TEST_CASE("WithTlsFilesMqdServesProduceConsumeAndAckOverHttpsOnly") {
  TestCertificate certificate;
  Mqd mqd(Env{{"TLS_CERT_FILE", certificate.cert},
              {"TLS_KEY_FILE", certificate.key},
              {"HEARTBEAT_MS", "200"},
              {"REQUEST_TIMEOUT_MS", "1000"}});
  auto client = https_client(mqd.port(), certificate.cert);
  auto produced =
      client->Post("/produce?topic=events&partition=0", R"({"payload": {"secret": 1}})", "application/json");
  REQUIRE(produced);
  CHECK(produced->status == 200);
  // Keep-alive over TLS: a second request on the same connection.
  auto topics = client->Get("/topics");
  REQUIRE(topics);
  CHECK(topics->status == 200);

  // The event stream, over its own TLS connection.
  std::mutex mutex;
  std::condition_variable changed;
  std::string stream_bytes;
  std::atomic<bool> closing{false};
  auto stream_client = https_client(mqd.port(), certificate.cert);
  std::thread reader([&] {
    stream_client->Get("/consume?topic=events&partition=0&group=g",
                       [&](const char* data, std::size_t length) {
                         std::lock_guard lock(mutex);
                         stream_bytes.append(data, length);
                         changed.notify_all();
                         return !closing.load();
                       });
  });
  std::string id;
  {
    std::unique_lock lock(mutex);
    changed.wait_for(lock, seconds(10), [&] { return stream_bytes.find("\n\n") != std::string::npos; });
    const auto at = stream_bytes.find("id: ");
    if (at != std::string::npos) id = stream_bytes.substr(at + 4, stream_bytes.find('\n', at) - at - 4);
    CHECK(stream_bytes.find("\"secret\":1") != std::string::npos);
    // Heartbeats keep coming over the idle stream.
    CHECK(changed.wait_for(lock, seconds(10),
                           [&] { return stream_bytes.find(": keepalive") != std::string::npos; }));
  }
  REQUIRE(!id.empty());
  auto acked =
      client->Post("/ack?topic=events&partition=0&group=g", json{{"id", id}}.dump(), "application/json");
  REQUIRE(acked);
  CHECK(acked->status == 200);
  CHECK(json::parse(acked->body) == json{{"acked", 1}});
  closing = true;
  stream_client->stop();
  reader.join();

  // Plain HTTP to the TLS port fails cleanly: a 400 or a closed connection, never a 200.
  httplib::Client plain("127.0.0.1", mqd.port());
  plain.set_read_timeout(seconds(5));
  auto refused = plain.Get("/healthz");
  if (refused) {
    CHECK(refused->status == 400);
    CHECK(json::parse(refused->body)["error"].is_string());
  }
  // A client that does not trust the certificate is refused by its own verification.
  httplib::SSLClient untrusting("127.0.0.1", mqd.port());
  untrusting.enable_server_certificate_verification(true);
  untrusting.set_ca_cert_path("/dev/null");
  CHECK(!untrusting.Get("/healthz"));
  // Still serving.
  auto health = client->Get("/healthz");
  REQUIRE(health);
  CHECK(health->status == 200);
  CHECK(mqd.stop() == 0);
}

TEST_CASE("AHalfDoneTlsHandshakeIsCutAfterRequestTimeout") {
  TestCertificate certificate;
  Mqd mqd(Env{{"TLS_CERT_FILE", certificate.cert},
              {"TLS_KEY_FILE", certificate.key},
              {"REQUEST_TIMEOUT_MS", "1000"}});
  const int fd = connect_to(mqd.port());
  REQUIRE(fd >= 0);
  const auto start = Clock::now();
  // The start of a ClientHello record that announces 512 bytes and never sends them.
  REQUIRE(send_all(fd, std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11)));
  CHECK(await_closed(fd, seconds(5)));
  const auto took = Clock::now() - start;
  ::close(fd);
  CHECK(took >= milliseconds(900));
  CHECK(took < milliseconds(2500));
  // A silent connection is cut the same way.
  const int silent = connect_to(mqd.port());
  CHECK(await_closed(silent, seconds(5)));
  ::close(silent);
  auto client = https_client(mqd.port(), certificate.cert);
  auto health = client->Get("/healthz");
  REQUIRE(health);
  CHECK(health->status == 200);
}

TEST_CASE("MissingOrInvalidTlsFilesStopMqdAtStartNamingTheVariable") {
  TestCertificate certificate;
  TempDir dir;
  const std::string garbage = dir / "garbage.pem";
  std::ofstream(garbage) << "not a certificate\n";
  const std::vector<std::pair<std::map<std::string, std::string>, std::string>> cases = {
      {{{"TLS_CERT_FILE", certificate.cert}}, "TLS_KEY_FILE"},
      {{{"TLS_KEY_FILE", certificate.key}}, "TLS_CERT_FILE"},
      {{{"TLS_CERT_FILE", dir / "missing.pem"}, {"TLS_KEY_FILE", certificate.key}}, "TLS_CERT_FILE"},
      {{{"TLS_CERT_FILE", certificate.cert}, {"TLS_KEY_FILE", dir / "missing.pem"}}, "TLS_KEY_FILE"},
      {{{"TLS_CERT_FILE", garbage}, {"TLS_KEY_FILE", certificate.key}}, "TLS_CERT_FILE"},
      {{{"TLS_CERT_FILE", certificate.cert}, {"TLS_KEY_FILE", garbage}}, "TLS_KEY_FILE"},
      {{{"TLS_CERT_FILE", certificate.key}, {"TLS_KEY_FILE", certificate.key}}, "TLS_CERT_FILE"},
      {{{"REQUEST_TIMEOUT_MS", "0"}}, "REQUEST_TIMEOUT_MS"},
  };
  for (const auto& entry : cases) {
    const auto& vars = entry.first;  // not a structured binding: CAPTURE captures it
    const auto& named = entry.second;
    CAPTURE(named);
    const std::string log = dir / "stderr.txt";
    std::map<std::string, std::string> env = {{"PORT", std::to_string(free_port())},
                                              {"DATA_DIR", dir / "data"}};
    for (const auto& [k, v] : vars) env[k] = v;
    MqdProcess mqd(env, log);
    auto status = mqd.wait_exit();
    REQUIRE(status);
    CHECK(WIFEXITED(*status));
    CHECK(WEXITSTATUS(*status) != 0);
    const auto lines = split_lines(file_contents(log));
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].find(named) != std::string::npos);
  }
}

// mqd the way containers and orchestrators run it: as PID 1 of its own PID namespace (docker run,
// a Kubernetes pod) stopped by SIGTERM from outside (docker stop), and with BROKER_INDEX=auto taking
// its index from a StatefulSet pod's host name.
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>

#include "http_helpers.h"
#include "mqd_process.h"
#include "running_mqd.h"
#include "temp_dir.h"

using namespace mq::testing;
using namespace std::chrono_literals;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The first child of `parent` (from /proc), waiting for it to appear: unshare --fork starts it.
pid_t first_child(pid_t parent) {
  const std::string path =
      "/proc/" + std::to_string(parent) + "/task/" + std::to_string(parent) + "/children";
  std::istringstream children(read_file(path));
  pid_t child = 0;
  children >> child;
  return child;
}

std::optional<std::string> host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return std::nullopt;
  return std::string(name);
}

}  // namespace

TEST_CASE("MqdAsPid1OfAContainerTakesItsIndexFromThePodNameAndStopsCleanlyOnSigterm") {
  // unshare gives mqd its own PID namespace (it is PID 1 there, as in a container) and its own host
  // name "mq-1", as a StatefulSet's second pod has. Needs root, as CI runs.
  TempDir dir;
  const int port = free_port();
  const char* mqd = std::getenv("MQD_PATH");
  REQUIRE(mqd != nullptr);
  ServerProcess container("/usr/bin/unshare",
                          {"--pid", "--fork", "--uts", "/bin/sh", "-c", "hostname mq-1 && exec \"$MQD\""},
                          {{"MQD", mqd},
                           {"PATH", "/usr/sbin:/usr/bin:/sbin:/bin"},
                           {"PORT", std::to_string(port)},
                           {"DATA_DIR", dir / "data"},
                           {"TOPICS", "events:4"},
                           {"BROKER_INDEX", "auto"},
                           {"BROKER_COUNT", "2"}},
                          dir / "stderr");
  REQUIRE_MESSAGE(
      container.wait_until_listening(port),
      "mqd did not start in a PID and UTS namespace (unshare needs root): " << read_file(dir / "stderr"));
  const auto topics = http_get(port, "/topics").json();
  CHECK(topics["broker"]["index"] == 1);  // from the host name mq-1
  CHECK(topics["broker"]["count"] == 2);
  CHECK(http_post(port, "/produce?topic=events&partition=1", R"({"payload": "kept"})").status == 200);

  const pid_t child = first_child(container.pid());
  REQUIRE(child > 0);
  const std::string status = read_file("/proc/" + std::to_string(child) + "/status");
  CHECK_MESSAGE(status.find("NSpid:\t" + std::to_string(child) + "\t1\n") != std::string::npos,
                "mqd is not PID 1 in its namespace: " << status);
  // docker stop: SIGTERM to the container's PID 1, from outside its namespace.
  REQUIRE(::kill(child, SIGTERM) == 0);
  const auto exit_status = container.wait_exit(10s);  // docker's grace period before SIGKILL
  REQUIRE_MESSAGE(exit_status.has_value(), "mqd as PID 1 ignored SIGTERM");
  CHECK(WIFEXITED(*exit_status));
  CHECK(WEXITSTATUS(*exit_status) == 0);
  CHECK(read_file(dir / "stderr").find("mqd: stopped") != std::string::npos);

  // The message survived the stop: a plain mqd on the same data serves it.
  RunningMqd again({{"BROKER_INDEX", "1"}, {"BROKER_COUNT", "2"}, {"TOPICS", "events:4"}}, dir / "data");
  CHECK(http_get(again.port(), "/stats?topic=events").json()["topics"][0]["partitions"][0]["next_offset"] ==
        1);
}

TEST_CASE("BrokerIndexAutoOnAHostWithoutAnOrdinalStopsWithTheVariableNamed") {
  // This machine's own host name decides: an ordinal below BROKER_COUNT is taken, anything else
  // refused. Either way the outcome is checked.
  TempDir dir;
  const int port = free_port();
  MqdProcess mqd({{"PORT", std::to_string(port)},
                  {"DATA_DIR", dir / "data"},
                  {"BROKER_INDEX", "auto"},
                  {"BROKER_COUNT", "65536"}},
                 dir / "stderr");
  const auto name = host_name();
  REQUIRE(name.has_value());
  const std::string label = name->substr(0, name->find('.'));
  const auto dash = label.rfind('-');
  const bool has_ordinal = dash != std::string::npos && dash + 1 < label.size() &&
                           label.find_first_not_of("0123456789", dash + 1) == std::string::npos &&
                           label.size() - dash <= 6;
  if (has_ordinal) {
    REQUIRE(mqd.wait_until_listening(port));
    CHECK(http_get(port, "/topics").json()["broker"]["index"] == std::stoi(label.substr(dash + 1)));
  } else {
    const auto status = mqd.wait_exit(10s);
    REQUIRE(status.has_value());
    CHECK(WEXITSTATUS(*status) == 1);
    const std::string errors = read_file(dir / "stderr");
    CHECK(errors.find("BROKER_INDEX") != std::string::npos);
    CHECK(errors.find(*name) != std::string::npos);
  }
}

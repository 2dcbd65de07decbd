// A port for a server under test, as tests/support/mqd_process.h chooses it: free a moment ago and
// outside the kernel's ephemeral range, from which any test's outgoing connection could take it
// before the server binds it. Random first candidate, so tests running in parallel rarely meet.
import fs from "node:fs";
import net from "node:net";

function serverPortRange() {
  let [low, high] = [32768, 60999];
  try {
    [low, high] = fs.readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/).map(Number);
  } catch {
    // not Linux: the defaults
  }
  return low - 1 >= 10000 ? [Math.max(1024, low - 20000), low - 1] : [Math.min(high + 1, 65535), 65535];
}

// Node listens with SO_REUSEADDR (libuv always sets it), so a port with connections in TIME_WAIT
// passes: the servers these tests start (mqd, etcd) set it too and bind such a port as well.
function bindable(port) {
  return new Promise((done) => {
    const server = net.createServer();
    server.unref();
    server.once("error", () => done(false));
    server.listen({ port, host: "0.0.0.0", exclusive: true }, () => server.close(() => done(true)));
  });
}

const handedOut = new Set();

export async function freePort() {
  const [low, high] = serverPortRange();
  const count = high - low + 1;
  const first = Math.floor(Math.random() * count);
  for (let i = 0; i < count; i++) {
    const port = low + ((first + i) % count);
    if (handedOut.has(port)) continue;
    handedOut.add(port);  // before the await: two concurrent calls must not both take it
    if (await bindable(port)) return port;
  }
  throw new Error(`freePort: no free port between ${low} and ${high}`);
}

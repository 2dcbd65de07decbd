// A TCP port for a server under test, chosen as tests/support/mqd_process.h's free_port() chooses it
// (keep the three in step): outside the kernel's ephemeral range, from which any test's outgoing
// connection could take it before the server binds it; reserved against every other test process by
// holding the same UDP port for the rest of this one; bindable now. Random first candidate, so that
// tests running in parallel rarely try the same ones.
import dgram from "node:dgram";
import fs from "node:fs";
import net from "node:net";

function serverPortRange() {
  const [wanted, enough] = [20000, 2000];
  let [low, high] = [32768, 60999];
  try {
    [low, high] = fs.readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/).map(Number);
  } catch {
    // not Linux: the defaults
  }
  const [below, above] = [low - 1024, 65535 - high];
  if (Math.max(below, above) < enough) {
    throw new Error(`freePort: net.ipv4.ip_local_port_range (${low} ${high}) leaves fewer than 2,000 ports ` +
                    "above 1023 for test servers; narrow it");
  }
  return below >= above ? [Math.max(1024, low - wanted), low - 1] : [high + 1, Math.min(65535, high + wanted)];
}

// The UDP socket stays bound (and unref'd, so it keeps no test alive) until the process ends.
// Exported for tests/e2e/test_ports_test.cc, which checks that the three choosers exclude each other.
export function reserveAmongTestProcesses(port) {
  return new Promise((done) => {
    const holder = dgram.createSocket({ type: "udp4", reuseAddr: false });
    holder.once("error", () => { holder.close(); done(false); });
    holder.bind({ port, address: "0.0.0.0", exclusive: true }, () => { holder.unref(); done(true); });
  });
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

const tried = new Set();

export async function freePort() {
  const [low, high] = serverPortRange();
  const count = high - low + 1;
  const first = Math.floor(Math.random() * count);
  for (let i = 0; i < count; i++) {
    const port = low + ((first + i) % count);
    if (tried.has(port)) continue;
    tried.add(port);  // before the awaits: two concurrent calls must not both take it
    if ((await reserveAmongTestProcesses(port)) && (await bindable(port))) return port;
  }
  throw new Error(`freePort: no free port between ${low} and ${high}`);
}

// A TCP port for a server under test, chosen as tests/support/mqd_process.h's free_port() chooses it
// (keep the three in step): outside the kernel's ephemeral range, from which any test's outgoing
// connection could take it before the server binds it (where the range leaves fewer than 2,000 ports
// outside it, the kernel picks them, and a warning says so); reserved against every other test
// process by holding the same UDP port (which therefore cannot serve UDP) for the rest of this one;
// bindable now. Random first candidate, so that tests running in parallel rarely try the same ones.
import dgram from "node:dgram";
import fs from "node:fs";
import net from "node:net";

// Nothing when both gaps beside the ephemeral range are under 2,000 ports (e.g. 1024-65535).
function serverPortRange() {
  const [wanted, enough] = [20000, 2000];
  let [low, high] = [32768, 60999];
  try {
    [low, high] = fs.readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/).map(Number);
  } catch {
    // not Linux: the defaults
  }
  const [below, above] = [low - 1024, 65535 - high];
  if (Math.max(below, above) < enough) return null;
  return below >= above ? [Math.max(1024, low - wanted), low - 1] : [high + 1, Math.min(65535, high + wanted)];
}

// Binds UDP `port` and resolves to the socket (null if it is held already), which stays bound, and
// unref'd so that it keeps no test alive, until the process ends or the caller closes it.
// Exported for tests/e2e/test_ports_test.cc, which checks that the three choosers exclude each other.
export function reserveAmongTestProcesses(port) {
  return new Promise((done) => {
    const holder = dgram.createSocket({ type: "udp4", reuseAddr: false });
    holder.once("error", () => { holder.close(); done(null); });
    holder.bind({ port, address: "0.0.0.0", exclusive: true }, () => { holder.unref(); done(holder); });
  });
}

// The port listened on (0: one the kernel picks), or 0. Node listens with SO_REUSEADDR (libuv always
// sets it), so a port with connections in TIME_WAIT passes: the servers these tests start (mqd,
// etcd) set it too and bind such a port as well.
function listenAndClose(port) {
  return new Promise((done) => {
    const server = net.createServer();
    server.unref();
    server.once("error", () => done(0));
    server.listen({ port, host: "0.0.0.0", exclusive: true }, () => {
      const bound = server.address().port;
      server.close(() => done(bound));
    });
  });
}

const tried = new Set();

export async function freePort() {
  const range = serverPortRange();
  if (range === null) {
    if (tried.size === 0) {
      console.error("freePort: net.ipv4.ip_local_port_range leaves fewer than 2,000 ports above 1023 outside it: " +
                    "test servers take ports the kernel picks, which outgoing connections may take first");
    }
    for (let attempt = 0; attempt < 1000; attempt++) {
      const port = await listenAndClose(0);
      if (port === 0) throw new Error("freePort: cannot bind a TCP port");
      if (tried.has(port)) continue;
      tried.add(port);
      if (await reserveAmongTestProcesses(port)) return port;
    }
    throw new Error("freePort: the kernel keeps picking ports held already");
  }
  const [low, high] = range;
  const count = high - low + 1;
  const first = Math.floor(Math.random() * count);
  for (let i = 0; i < count; i++) {
    const port = low + ((first + i) % count);
    if (tried.has(port)) continue;
    tried.add(port);  // before the awaits: two concurrent calls must not both take it
    const reservation = await reserveAmongTestProcesses(port);
    if (reservation === null) continue;
    if ((await listenAndClose(port)) === port) return port;
    reservation.close();
  }
  throw new Error(`freePort: no free port between ${low} and ${high}`);
}

// Real HAProxy (Debian's package; scripts/test installs it) running the example a user
// copies, packaging/examples/haproxy.cfg, in front of iorelay nodes started with
// admin.mjs. Shared by haproxy.test.mjs (nodes that share nothing) and
// cluster-haproxy.test.mjs (nodes sharing rooms through a private Redis).
//
// The HAProxy config is the example file with small, checked substitutions (the frontend
// on a loopback port, the two servers on the nodes' ports, no chroot/user/group/daemon,
// syslog to stderr, the stats socket in a temp dir, a maxconn an unprivileged test can
// afford); see proxyConfig. HAProxy runs in the foreground (-db), is ready once both
// servers are UP and /healthz answers through it, and is killed by pid in stop().
//
// Which node serves a client: each node's namespace "/" greets every socket with an event
// named after the node (`greet = "node1"`, see nodeConfig), the same name HAProxy's
// `server` line and cookie use. Nothing here sleeps: every wait is for an answer, an
// event or a server state, bounded.
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { waitForMetric } from "./admin.mjs";
import { freePort, repoRoot } from "./spawn.mjs";
import { workerClient, within } from "./workers.mjs";

const WAIT_MS = 5000;
/** The example a user copies to /etc/haproxy/haproxy.cfg. */
export const EXAMPLE = join(repoRoot, "packaging", "examples", "haproxy.cfg");
/** The example's `server` names (= cookie values), in order, and the nodes' greetings. */
export const NODES = ["node1", "node2"];
/** Clients opened at most while waiting for both nodes to have enough of them. */
const SPREAD_TRIES = 16;

/** HAProxy's binary (Debian puts it in /usr/sbin, not on a normal user's PATH), or null. */
function findHaproxy() {
  for (const candidate of ["haproxy", "/usr/sbin/haproxy"]) {
    const run = spawnSync(candidate, ["-v"], { encoding: "utf8" });
    if (run.status === 0) return candidate;
  }
  return null;
}
export const haproxyBin = findHaproxy();

/** The `skip` option of a suite that needs HAProxy. */
export const skipWithoutHaproxy = haproxyBin
  ? false
  : "haproxy is not installed (scripts/test installs Debian's: apt-get install -y haproxy)";

/**
 * A node's config: "/" lets clients join any room, relays to the sender's rooms and
 * greets each socket with `name`; HAProxy (on loopback, 127.0.0.1) is a trusted proxy, as
 * the example tells a node to set. `extra.server` and `extra.namespace` are TOML lines
 * added to `[server]` and to `[namespaces."/"]`; `extra.tables` is appended (such as a
 * `[cluster]` table).
 */
export function nodeConfig(name, extra = {}) {
  return `
[server]
trusted_proxies = ["127.0.0.1/32"]
${extra.server ?? ""}

[namespaces."/"]
join = "any"
route = "rooms"
echo = false
presence = false
greet = "${name}"
${extra.namespace ?? ""}

[namespaces."/".limits]
events_per_second = 1000
burst = 1000

${extra.tables ?? ""}
`;
}

/**
 * The example file made runnable by an unprivileged test beside other tests. Each
 * substitution must match exactly once, so that a change to the example that the tests
 * would silently stop covering fails here instead.
 */
export function proxyConfig(example, { port, dir, servers }) {
  const substitutions = [
    // The frontend on a loopback port instead of every interface's :80.
    [/^(\s*)bind :80$/m, `$1bind 127.0.0.1:${port}`],
    // The two iorelay nodes started by the test instead of 10.0.0.11/12.
    [/ 10\.0\.0\.11:3000 /, ` ${servers[0]} `],
    [/ 10\.0\.0\.12:3000 /, ` ${servers[1]} `],
    // Needs root, or the Debian service's directories.
    [/^\s*chroot \S+\n/m, ""],
    [/^\s*user haproxy\n/m, ""],
    [/^\s*group haproxy\n/m, ""],
    // -db keeps it in the foreground anyway.
    [/^\s*daemon\n/m, ""],
    // The request log to HAProxy's stderr (shown when a test fails), not syslog.
    [/^(\s*)log \/dev\/log (\S+)$/m, "$1log stderr format raw $2"],
    [/stats socket \/run\/haproxy\/admin\.sock /, `stats socket ${join(dir, "admin.sock")} `],
    // HAProxy raises its file descriptor limit to fit maxconn (and fails when it
    // cannot, as an unprivileged user may not).
    [/^(\s*)maxconn \d+$/m, "$1maxconn 1000"],
  ];
  let text = example;
  for (const [re, replacement] of substitutions) {
    const hits = text.match(new RegExp(re.source, `${re.flags}g`))?.length ?? 0;
    assert.equal(hits, 1, `${EXAMPLE}: expected one line matching ${re}, found ${hits}; update the tests with the example`);
    text = text.replace(re, replacement);
  }
  return text;
}

/** Send one command to HAProxy's stats socket; resolves with the answer. */
function statsCommand(socketPath, command) {
  return within(
    new Promise((resolve, reject) => {
      const sock = net.connect(socketPath);
      let out = "";
      sock.setEncoding("utf8");
      sock.on("connect", () => sock.write(`${command}\n`));
      sock.on("data", (chunk) => {
        out += chunk;
      });
      sock.on("end", () => resolve(out));
      sock.on("error", reject);
    }),
    WAIT_MS,
    `HAProxy's answer to "${command}"`,
  );
}

/** `show stat` as rows { pxname, svname, status, hrsp_4xx, … } (numbers stay strings). */
async function showStat(socketPath) {
  const [header, ...lines] = (await statsCommand(socketPath, "show stat")).trim().split("\n");
  const names = header.replace(/^# /, "").split(",");
  return lines.map((line) => Object.fromEntries(line.split(",").map((v, i) => [names[i], v])));
}

/**
 * Start HAProxy with the example made runnable (proxyConfig) in front of `backends`
 * (daemons from startDaemon, in NODES order). Resolves once both servers are UP and
 * /healthz answers 200 through it, to
 * { url, port, pid, logs(), stat(), server(name), waitForServer(name, status), stop() }.
 * A port taken between freePort and HAProxy's bind is retried with another.
 */
export async function startProxy(backends) {
  const example = readFileSync(EXAMPLE, "utf8");
  for (let attempt = 1; ; attempt++) {
    const dir = mkdtempSync(join(tmpdir(), "iorelay-haproxy-test-"));
    const port = await freePort();
    const cfg = join(dir, "haproxy.cfg");
    writeFileSync(cfg, proxyConfig(example, { port, dir, servers: backends.map((n) => n.publicAddr) }));
    const child = spawn(haproxyBin, ["-db", "-f", cfg], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.setEncoding("utf8").on("data", (c) => (output += c));
    child.stderr.setEncoding("utf8").on("data", (c) => (output += c));
    const exit = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
    const running = () => child.exitCode === null && child.signalCode === null;
    const socketPath = join(dir, "admin.sock");
    const p = {
      url: `http://127.0.0.1:${port}`,
      port,
      pid: child.pid,
      logs: () => output,
      stat: () => showStat(socketPath),
      /** The `show stat` row of server `name` in the iorelay backend. */
      async server(name) {
        const row = (await p.stat()).find((r) => r.pxname === "iorelay_nodes" && r.svname === name);
        assert.ok(row, `no server ${name} in HAProxy's backend iorelay_nodes`);
        return row;
      },
      /** Ask `show stat` until server `name` has `status` (UP, DOWN); resolves with its row. */
      async waitForServer(name, status, ms = 10000) {
        const deadline = Date.now() + ms;
        for (;;) {
          const row = await p.server(name);
          if (row.status === status) return row;
          if (Date.now() > deadline) {
            throw new Error(`HAProxy's server ${name} is ${row.status} (check: ${row.check_status}), not ${status}, after ${ms}ms`);
          }
          // A polling interval, not a guess: the loop ends as soon as the state is there.
          await new Promise((r) => setTimeout(r, 50));
        }
      },
      async stop() {
        if (running()) {
          process.kill(child.pid, "SIGKILL");
          await exit;
        }
        rmSync(dir, { recursive: true, force: true });
      },
    };
    try {
      await ready(p, exit);
      return p;
    } catch (err) {
      await p.stop();
      if (attempt < 3 && /cannot bind|Address already in use/i.test(output)) continue;
      throw new Error(`${err.message}\nHAProxy's output:\n${output || "(nothing)"}`);
    }
  }
}

/** Resolve once both servers are UP and /healthz answers 200 through the frontend. */
async function ready(p, exit) {
  const died = exit.then(({ code, signal }) => {
    throw new Error(`haproxy exited early (code ${code}, signal ${signal})`);
  });
  const probe = async () => {
    const deadline = Date.now() + 10000;
    for (;;) {
      try {
        const rows = await p.stat();
        const up = NODES.every((n) => rows.find((r) => r.pxname === "iorelay_nodes" && r.svname === n)?.status === "UP");
        if (up) {
          const res = await fetch(`${p.url}/healthz`, { signal: AbortSignal.timeout(WAIT_MS) });
          await res.text();
          if (res.status === 200) return;
        }
      } catch {
        // Not listening yet (no stats socket, connection refused): ask again.
      }
      if (Date.now() > deadline) throw new Error("haproxy was not ready within 10 s");
      // A polling interval, not a guess: the loop ends as soon as HAProxy answers.
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  await Promise.race([probe(), died]);
}

/**
 * Wrap a test body: on failure, print HAProxy's request log and the nodes' logs.
 * `state()` returns { proxy, nodes } as they are at that moment.
 */
export function withProxyLogs(state, fn) {
  return async (t) => {
    try {
      await fn(t);
    } catch (err) {
      const { proxy, nodes } = state();
      t.diagnostic(`HAProxy's log:\n${proxy?.logs() || "(not started)"}`);
      nodes.forEach((n, i) => t.diagnostic(`${NODES[i]}'s log:\n${n.logs() || "(nothing)"}`));
      throw err;
    }
  };
}

/**
 * The node that greeted `socket` in the events it recorded from index `from` on (its
 * greeting arrives right after CONNECT; after a reconnection, pass the count of events
 * recorded before it to learn the new node).
 */
export function servedBy(socket, from = 0) {
  let look;
  return within(
    new Promise((resolve) => {
      look = () => {
        const hit = socket.got.slice(from).find(([name]) => NODES.includes(name));
        if (hit) resolve(hit[0]);
      };
      socket.watchers.add(look);
      look();
    }),
    WAIT_MS,
    `the greeting of client ${socket.sid}`,
  ).finally(() => socket.watchers.delete(look));
}

/**
 * A connected client through HAProxy at `url` (opts to io()), pushed onto `sockets` for
 * the test's cleanup, with `node` = the node serving it.
 */
export async function proxyClient(url, sockets, opts = {}) {
  const socket = await workerClient(url, sockets, opts);
  socket.node = await servedBy(socket);
  return socket;
}

/**
 * Open clients with `open()` (resolving to a client with `node`) one after another until
 * each node serves at least `each` of them. Resolves to { node1: [...], node2: [...] };
 * fails if HAProxy keeps choosing one node.
 */
export async function spread(open, each) {
  const byNode = Object.fromEntries(NODES.map((n) => [n, []]));
  for (let i = 0; i < SPREAD_TRIES && NODES.some((n) => byNode[n].length < each); i++) {
    const c = await open();
    byNode[c.node].push(c);
  }
  const counts = NODES.map((n) => `${n}: ${byNode[n].length}`).join(", ");
  assert.ok(NODES.every((n) => byNode[n].length >= each), `HAProxy did not give each node ${each} of ${SPREAD_TRIES} clients (${counts})`);
  return byNode;
}

/**
 * The IORELAY cookie in a client's cookie jar. In Node, engine.io-client keeps a jar
 * (`_cookieJar`: Set-Cookie of polling responses in, Cookie on every later request and on
 * the WebSocket upgrade) only with `withCredentials: true`.
 */
export function stickyCookie(socket) {
  const jar = socket.io.engine._cookieJar;
  if (!jar) return undefined;
  for (const [name, cookie] of jar.cookies) if (name === "IORELAY") return cookie.value;
  return undefined;
}

/** Every client still connected on the transport `transport`. */
export function assertStillConnected(clients, transport) {
  for (const c of clients) {
    assert.equal(c.connected, true, `client ${c.sid} on ${c.node} was disconnected`);
    assert.equal(c.io.engine.transport.name, transport, `client ${c.sid} on ${c.node} transport`);
  }
}

/** No 4xx from any node through `proxy` (a request on the wrong node answers 400). */
export async function assertNo4xx(proxy) {
  const rows = (await proxy.stat()).filter((r) => r.pxname === "iorelay_nodes");
  for (const r of rows) assert.equal(r.hrsp_4xx, "0", `HAProxy counted 4xx responses from ${r.svname}`);
}

/**
 * Each node's `iorelay_connections` on "/" (transport `transport`, or all) reaches the
 * number of clients `byNode` has for it; `nodes` in NODES order.
 */
export async function assertNodeConnections(nodes, byNode, transport) {
  for (const [i, name] of NODES.entries()) {
    const want = byNode[name].length;
    const labels = transport ? { namespace: "/", transport } : { namespace: "/" };
    await waitForMetric(nodes[i], "iorelay_connections", labels, (v) => v === want, WAIT_MS, `${name}'s connections`);
  }
}

/**
 * One HTTP request to base URL `to` on a new connection (as socket.io-client makes each
 * polling request); resolves to { status, headers, body }. `from` picks the loopback
 * address it comes from.
 */
export function request(to, method, path, body, headers = {}, { from } = {}) {
  return within(
    new Promise((resolve, reject) => {
      const req = http.request(`${to}${path}`, { method, headers, agent: false, localAddress: from }, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c) => (text += c));
        res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: text }));
        res.on("error", reject);
      });
      req.on("error", reject);
      req.end(body);
    }),
    WAIT_MS,
    `${method} ${to}${path}`,
  );
}

// HAProxy in front of several iorelay nodes (the book's production chapter), with the
// example a user copies: packaging/examples/haproxy.cfg. Real HAProxy (Debian's package;
// scripts/test installs it) in front of two separate iorelay processes, each with one
// worker. The nodes share nothing (that is Redis's job), so this is about routing:
//
// - WebSocket-only clients through HAProxy connect, exchange events with clients on the
//   same node, and `balance leastconn` gives both nodes clients;
// - polling-only clients keep their session across many requests because HAProxy pins
//   each one to its node with the IORELAY cookie (socket.io-client in Node keeps cookies
//   only with `withCredentials: true`); without the cookie their requests land on the
//   other node, which answers 400 "Session ID unknown";
// - the default transport (polling, then the upgrade to WebSocket) upgrades;
// - a node that dies is marked DOWN by the /healthz check and new clients (one with the
//   dead node's cookie included) all go to the other node;
// - the nodes (trusted_proxies = HAProxy's loopback address) see a client's own address
//   from HAProxy's X-Forwarded-For, not the one it claims in its own header; straight
//   from an untrusted peer, the header is ignored.
//
// Which node serves a client: each node's namespace "/" greets every socket with an event
// named after the node (`greet = "node1"`), the same name HAProxy's `server` line and
// cookie use. The nodes' admin listeners (/metrics) and HAProxy's stats socket
// (`show stat`: server state, responses by status class) confirm it from the other side.
//
// The HAProxy config is the example file with small, checked substitutions (the frontend
// on a loopback port, the two servers on the nodes' ports, no chroot/user/group/daemon,
// syslog to stderr, the stats socket in the temp dir, a maxconn an unprivileged test can
// afford); see proxyConfig. HAProxy runs in the foreground (-db), is ready once both
// servers are UP and /healthz answers through it, and is killed by pid after each test.
//
// Each test starts its own two nodes and HAProxy (the counters start at zero, and one
// test kills a node). Nothing sleeps: every wait is for an event, an ack, a response, a
// metric or a server state, bounded.
import { describe, it, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startDaemon, stopDaemon, waitForMetric } from "../lib/admin.mjs";
import { freePort, repoRoot } from "../lib/spawn.mjs";
import { workerClient, within, received, ask } from "../lib/workers.mjs";

const WAIT_MS = 5000;
/** The example a user copies to /etc/haproxy/haproxy.cfg. */
const EXAMPLE = join(repoRoot, "packaging", "examples", "haproxy.cfg");
/** The example's `server` names (= cookie values), in order, and the nodes' greetings. */
const NODES = ["node1", "node2"];
/** Clients opened at most while waiting for both nodes to have enough of them. */
const SPREAD_TRIES = 16;
/** Polling round trips per client: every one is a few more requests that must stick. */
const ROUNDS = 5;

/** HAProxy's binary (Debian puts it in /usr/sbin, not on a normal user's PATH), or null. */
function findHaproxy() {
  for (const candidate of ["haproxy", "/usr/sbin/haproxy"]) {
    const run = spawnSync(candidate, ["-v"], { encoding: "utf8" });
    if (run.status === 0) return candidate;
  }
  return null;
}
const haproxyBin = findHaproxy();

let nodes = [];
let proxy;
const sockets = [];

afterEach(async () => {
  while (sockets.length) sockets.pop().disconnect();
  await proxy?.stop();
  proxy = undefined;
  for (const node of nodes) await stopDaemon(node);
  nodes = [];
});

/**
 * A node's config: "/" lets clients join any room and greets each socket with `name`;
 * HAProxy (on loopback, 127.0.0.1) is a trusted proxy, as the example tells a node to set.
 */
function nodeConfig(name) {
  return `
[server]
trusted_proxies = ["127.0.0.1/32"]

[namespaces."/"]
join = "any"
route = "rooms"
echo = false
presence = false
greet = "${name}"

[namespaces."/".limits]
events_per_second = 1000
burst = 1000
`;
}

/**
 * The example file made runnable by an unprivileged test beside other tests. Each
 * substitution must match exactly once, so that a change to the example that this test
 * would silently stop covering fails here instead.
 */
function proxyConfig(example, { port, dir, servers }) {
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
    assert.equal(hits, 1, `${EXAMPLE}: expected one line matching ${re}, found ${hits}; update this test with the example`);
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
 * Start HAProxy with the example made runnable (proxyConfig) in front of `nodes`.
 * Resolves once both servers are UP and /healthz answers 200 through it, to
 * { url, port, pid, logs(), stat(), server(name), waitForServer(name, status), stop() }.
 * A port taken between freePort and HAProxy's bind is retried with another.
 */
async function startProxy(backends) {
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

/** Two nodes and HAProxy in front of them. */
async function startCluster() {
  // The engine at debug: its "session opened … client=…" line says where a client is.
  const env = { IORELAY_LOG__LEVEL: "info,iorelay::engine=debug" };
  for (const name of NODES) nodes.push(await startDaemon(nodeConfig(name), { env }));
  proxy = await startProxy(nodes);
}

/** Wrap a test body: on failure, print HAProxy's request log and the nodes' logs. */
function logs(fn) {
  return async (t) => {
    try {
      await fn(t);
    } catch (err) {
      t.diagnostic(`HAProxy's log:\n${proxy?.logs() || "(not started)"}`);
      nodes.forEach((n, i) => t.diagnostic(`${NODES[i]}'s log:\n${n.logs() || "(nothing)"}`));
      throw err;
    }
  };
}

/** The node that greeted `socket` (its greeting arrives right after CONNECT). */
function servedBy(socket) {
  let look;
  return within(
    new Promise((resolve) => {
      look = () => {
        const hit = socket.got.find(([name]) => NODES.includes(name));
        if (hit) resolve(hit[0]);
      };
      socket.watchers.add(look);
      look();
    }),
    WAIT_MS,
    `the greeting of client ${socket.sid}`,
  ).finally(() => socket.watchers.delete(look));
}

/** A connected client through HAProxy (opts to io()), with `node` = the node serving it. */
async function client(opts = {}) {
  const socket = await workerClient(proxy.url, sockets, opts);
  socket.node = await servedBy(socket);
  return socket;
}

/**
 * Open clients one after another until each node serves at least `each` of them.
 * Resolves to { node1: [...], node2: [...] }; fails if HAProxy keeps choosing one node.
 */
async function spread(each, opts) {
  const byNode = Object.fromEntries(NODES.map((n) => [n, []]));
  for (let i = 0; i < SPREAD_TRIES && NODES.some((n) => byNode[n].length < each); i++) {
    const c = await client(opts);
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
function stickyCookie(socket) {
  const jar = socket.io.engine._cookieJar;
  if (!jar) return undefined;
  for (const [name, cookie] of jar.cookies) if (name === "IORELAY") return cookie.value;
  return undefined;
}

/**
 * The clients of one node join `room` (the acks count only that node's members: the
 * nodes share no rooms), then each sends `rounds` messages that every other one
 * receives, each acked.
 */
async function exchange(group, room, rounds) {
  for (const [i, c] of group.entries()) {
    const reply = await ask(c, "$join", room);
    assert.deepEqual(reply, { ok: true, room, count: i + 1 }, `$join ${room} on ${c.node}`);
  }
  for (let r = 0; r < rounds; r++) {
    for (const sender of group) {
      const token = `${sender.sid}/${r}`;
      const arrivals = group.filter((c) => c !== sender).map((c) => received(c, "msg", (m) => m?.token === token));
      assert.deepEqual(await ask(sender, "msg", { token }), { ok: true }, `msg ${token} on ${sender.node}`);
      await Promise.all(arrivals);
    }
  }
}

/** Every client still connected on the transport `transport`. */
function assertStillConnected(clients, transport) {
  for (const c of clients) {
    assert.equal(c.connected, true, `client ${c.sid} on ${c.node} was disconnected`);
    assert.equal(c.io.engine.transport.name, transport, `client ${c.sid} on ${c.node} transport`);
  }
}

/** No 4xx from any node through HAProxy (a request on the wrong node answers 400). */
async function assertNo4xx() {
  const rows = (await proxy.stat()).filter((r) => r.pxname === "iorelay_nodes");
  for (const r of rows) assert.equal(r.hrsp_4xx, "0", `HAProxy counted 4xx responses from ${r.svname}`);
}

/** Each node's `iorelay_connections` on "/" (transport `transport`, or all) reaches `want`. */
async function assertNodeConnections(byNode, transport) {
  for (const [i, name] of NODES.entries()) {
    const want = byNode[name].length;
    const labels = transport ? { namespace: "/", transport } : { namespace: "/" };
    await waitForMetric(nodes[i], "iorelay_connections", labels, (v) => v === want, WAIT_MS, `${name}'s connections`);
  }
}

/** Resolve once `socket` runs on WebSocket (after the upgrade), or reject. */
function upgraded(socket) {
  const engine = socket.io.engine;
  if (engine.transport.name === "websocket") return Promise.resolve();
  return within(
    new Promise((resolve, reject) => {
      engine.once("upgrade", resolve);
      engine.once("upgradeError", (err) => reject(new Error(`upgrade of ${socket.sid} on ${socket.node} failed: ${err.message}`)));
    }),
    WAIT_MS,
    `the upgrade of ${socket.sid} on ${socket.node}`,
  );
}

/**
 * One HTTP request through HAProxy on a new connection (as socket.io-client makes each
 * polling request); resolves to { status, headers, body }. `to` sends it to another
 * base URL (a node, bypassing HAProxy); `from` picks the loopback address it comes from.
 */
function request(method, path, body, headers = {}, { to = proxy.url, from } = {}) {
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
    `${method} ${path} through HAProxy`,
  );
}

describe(
  "HAProxy (packaging/examples/haproxy.cfg) in front of two iorelay nodes",
  { skip: haproxyBin ? false : "haproxy is not installed (scripts/test installs Debian's: apt-get install -y haproxy)" },
  () => {
    beforeEach(startCluster);

    it("accepts the example as it ships (haproxy -c)", () => {
      const run = spawnSync(haproxyBin, ["-c", "-f", EXAMPLE], { encoding: "utf8" });
      assert.equal(run.status, 0, `haproxy -c -f ${EXAMPLE}:\n${run.stdout}${run.stderr}`);
    });

    it("WebSocket clients connect through it, exchange events on each node, and both nodes get clients", logs(async () => {
      const byNode = await spread(2, { transports: ["websocket"] });
      for (const name of NODES) await exchange(byNode[name], "lobby", 2);
      assertStillConnected(Object.values(byNode).flat(), "websocket");
      // The nodes see the clients HAProxy says it sent them.
      await assertNodeConnections(byNode, "websocket");
      for (const name of NODES) {
        const row = await proxy.server(name);
        assert.ok(Number(row.stot) >= byNode[name].length, `HAProxy sent ${row.stot} connections to ${name}`);
      }
      await assertNo4xx();
    }));

    it("polling clients stick to their node (IORELAY cookie) across many requests", logs(async (t) => {
      const byNode = await spread(2, { transports: ["polling"], withCredentials: true });
      const all = Object.values(byNode).flat();
      for (const c of all) assert.equal(stickyCookie(c), c.node, `the IORELAY cookie of a client served by ${c.node}`);
      for (const name of NODES) await exchange(byNode[name], "lobby", ROUNDS);
      assertStillConnected(all, "polling");
      await assertNodeConnections(byNode, "polling");
      // HAProxy logs each finished request: many polling requests, each on its own TCP
      // connection, reached the nodes (about 20 per client).
      const polls = proxy.logs().split("\n").filter((l) => l.includes("transport=polling")).length;
      t.diagnostic(`${polls} polling requests through HAProxy`);
      assert.ok(polls >= 10 * all.length, `only ${polls} polling requests went through HAProxy`);
      // Every request reached the node that knows its session: no "Session ID unknown".
      await assertNo4xx();
    }));

    it("a polling request that reaches the other node fails with 400 (why the cookie is there)", logs(async () => {
      // Without the cookie HAProxy balances each request on its own, so a polling
      // client's requests after the handshake land on either node (which one depends on
      // the load at that moment). Here the requests name the node with the cookie, so the
      // wrong one is reached every time.
      const hs = await request("GET", "/socket.io/?EIO=4&transport=polling");
      assert.equal(hs.status, 200, `handshake: ${hs.body}`);
      const sid = JSON.parse(hs.body.slice(1)).sid;
      // HAProxy inserted its cookie, naming the node that answered.
      const setCookie = hs.headers["set-cookie"] ?? [];
      assert.equal(setCookie.length, 1, `Set-Cookie: ${JSON.stringify(setCookie)}`);
      const m = /^IORELAY=(node[12]); path=\/; HttpOnly$/.exec(setCookie[0]);
      assert.ok(m, `Set-Cookie: ${setCookie[0]}`);
      const owner = m[1];
      const other = NODES.find((n) => n !== owner);
      const path = `/socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(sid)}`;

      const wrong = await request("POST", path, "40", { cookie: `IORELAY=${other}` });
      assert.equal(wrong.status, 400, `the CONNECT on ${other}: ${wrong.body}`);
      assert.deepEqual(JSON.parse(wrong.body), { code: 1, message: "Session ID unknown" });
      assert.equal(wrong.headers["set-cookie"], undefined, "HAProxy keeps a valid cookie as it is");

      const right = await request("POST", path, "40", { cookie: `IORELAY=${owner}` });
      assert.equal(right.status, 200, `the CONNECT on ${owner}: ${right.body}`);
      const poll = await request("GET", path, undefined, { cookie: `IORELAY=${owner}` });
      assert.equal(poll.status, 200, `the poll on ${owner}: ${poll.body}`);
      assert.match(poll.body, /^40\{"sid":/, "the CONNECT's answer");
      assert.equal((await proxy.server(other)).hrsp_4xx, "1");
      assert.equal((await proxy.server(owner)).hrsp_4xx, "0");
    }));

    it("the default transport (polling, then WebSocket) upgrades through it", logs(async () => {
      const byNode = await spread(2, { withCredentials: true });
      const all = Object.values(byNode).flat();
      await Promise.all(all.map(upgraded));
      for (const name of NODES) await exchange(byNode[name], "lobby", 2);
      assertStillConnected(all, "websocket");
      await assertNodeConnections(byNode, "websocket");
      await assertNo4xx();
    }));

    it("the nodes see the client's address from HAProxy's X-Forwarded-For, never one the client claims", logs(async () => {
      // The client connects from 127.0.0.2 and claims to be 203.0.113.9; HAProxy (from
      // 127.0.0.1, which the nodes trust) appends the address it saw.
      const spoofed = { "x-forwarded-for": "203.0.113.9" };
      const handshake = "/socket.io/?EIO=4&transport=polling";
      const hs = await request("GET", handshake, undefined, spoofed, { from: "127.0.0.2" });
      assert.equal(hs.status, 200, hs.body);
      const sid = JSON.parse(hs.body.slice(1)).sid;
      const served = /^IORELAY=(node[12]);/.exec(hs.headers["set-cookie"]?.[0] ?? "");
      assert.ok(served, `Set-Cookie: ${hs.headers["set-cookie"]}`);
      const node = nodes[NODES.indexOf(served[1])];
      const opened = (s) => new RegExp(`session opened.*sid=${s}.*client=(\\S+) remote=(\\S+)`);
      const line = await node.waitForLog(opened(sid));
      assert.equal(line[1], "127.0.0.2", `the client's address through HAProxy: ${line[0]}`);
      assert.match(line[2], /^127\.0\.0\.1:/, "while the peer is HAProxy");
      // Straight to a node from an address it does not trust: the header is ignored.
      const direct = await request("GET", handshake, undefined, spoofed, { to: node.url, from: "127.0.0.2" });
      assert.equal(direct.status, 200, direct.body);
      const directLine = await node.waitForLog(opened(JSON.parse(direct.body.slice(1)).sid));
      assert.equal(directLine[1], "127.0.0.2", `a spoofed header from an untrusted peer: ${directLine[0]}`);
    }));

    it("a node that dies is marked DOWN by the health check and new clients go to the other", logs(async (t) => {
      const byNode = await spread(1, { transports: ["websocket"] });
      const [survivor, victim] = NODES;
      const orphan = byNode[victim][0];
      const killedAt = Date.now();
      await stopDaemon(nodes[1]);
      assert.ok(["transport close", "transport error"].includes(await within(orphan.gone, WAIT_MS, "the orphan's disconnect")));
      await proxy.waitForServer(victim, "DOWN");
      t.diagnostic(`${victim} marked DOWN ${Date.now() - killedAt} ms after it was killed`);
      assert.equal((await proxy.server(survivor)).status, "UP");

      const fresh = [
        await client({ transports: ["websocket"] }),
        await client({ transports: ["websocket"] }),
        await client({ transports: ["polling"], withCredentials: true }),
        await client({ withCredentials: true }),
        // A browser that still holds the dead node's cookie: redispatched, and given a
        // new cookie for the live node.
        await client({ transports: ["polling"], withCredentials: true, extraHeaders: { cookie: `IORELAY=${victim}` } }),
      ];
      for (const c of fresh) assert.equal(c.node, survivor, `a new client went to ${c.node}`);
      for (const c of fresh.slice(2)) assert.equal(stickyCookie(c), survivor);
      // HAProxy's request log says so too: "--DI" = the cookie named a DOWN server, a new
      // one was inserted.
      assert.match(proxy.logs(), new RegExp(`iorelay_nodes/${survivor} .* --DI .*"GET /socket\\.io/\\?EIO=4&transport=polling&`));
      await exchange([byNode[survivor][0], ...fresh], "after-failover", 1);
    }));
  },
);

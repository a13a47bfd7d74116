// HAProxy in front of several iorelay nodes (the book's production chapter), with the
// example a user copies: packaging/examples/haproxy.cfg. Real HAProxy (Debian's package;
// scripts/test installs it) in front of two separate iorelay processes, each with one
// worker. The nodes share nothing (cluster-haproxy.test.mjs adds Redis), so this is about
// routing:
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
// afford); see proxyConfig in lib/haproxy.mjs, which starts it. HAProxy runs in the foreground (-db), is ready once both
// servers are UP and /healthz answers through it, and is killed by pid after each test.
//
// Each test starts its own two nodes and HAProxy (the counters start at zero, and one
// test kills a node). Nothing sleeps: every wait is for an event, an ack, a response, a
// metric or a server state, bounded.
import { describe, it, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { startDaemon, stopDaemon } from "../lib/admin.mjs";
import {
  EXAMPLE,
  NODES,
  haproxyBin,
  skipWithoutHaproxy,
  nodeConfig,
  startProxy,
  withProxyLogs,
  proxyClient,
  spread as spreadWith,
  stickyCookie,
  assertStillConnected,
  assertNo4xx as assertNo4xxAt,
  assertNodeConnections as assertNodeConnectionsOf,
  request as requestTo,
} from "../lib/haproxy.mjs";
import { within, ask, received } from "../lib/workers.mjs";

const WAIT_MS = 5000;
/** Polling round trips per client: every one is a few more requests that must stick. */
const ROUNDS = 5;

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

/** Two nodes and HAProxy in front of them. */
async function startCluster() {
  // The engine at debug: its "session opened … client=…" line says where a client is.
  const env = { IORELAY_LOG__LEVEL: "info,iorelay::engine=debug" };
  for (const name of NODES) nodes.push(await startDaemon(nodeConfig(name), { env }));
  proxy = await startProxy(nodes);
}

/** Wrap a test body: on failure, print HAProxy's request log and the nodes' logs. */
const logs = (fn) => withProxyLogs(() => ({ proxy, nodes }), fn);

/** A connected client through HAProxy (opts to io()), with `node` = the node serving it. */
const client = (opts = {}) => proxyClient(proxy.url, sockets, opts);

/** Open clients until each node serves at least `each` of them: { node1: [...], node2: [...] }. */
const spread = (each, opts) => spreadWith(() => client(opts), each);

const assertNo4xx = () => assertNo4xxAt(proxy);
const assertNodeConnections = (byNode, transport) => assertNodeConnectionsOf(nodes, byNode, transport);

/** One HTTP request through HAProxy (or, with `to`, straight to a node). */
const request = (method, path, body, headers = {}, { to = proxy.url, from } = {}) =>
  requestTo(to, method, path, body, headers, { from });

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

describe(
  "HAProxy (packaging/examples/haproxy.cfg) in front of two iorelay nodes",
  { skip: skipWithoutHaproxy },
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

// The book's deployment (chapter 6), tested end to end: HAProxy running the shipped
// example (packaging/examples/haproxy.cfg, made runnable by lib/haproxy.mjs) in front of
// two iorelay nodes of two workers each, which share their rooms through one private
// Redis (`[cluster] adapter = "redis"`, lib/redis.mjs: redis-server on a Unix socket).
//
// - clients that HAProxy gave to different nodes share a room: events with binary
//   arguments go both ways, and the server API's emit on either node reaches the room's
//   members (and the whole namespace's clients) on both nodes, but no one outside;
// - polling-only clients stay on their node (the IORELAY cookie: no request reaches a
//   node that does not hold its session) and still talk with the clients on the other;
// - a node killed with SIGKILL: its clients (reconnection on) come back through HAProxy
//   on the other node, `$join` again and talk with the rest; the survivors notice nothing.
//   With `adapter = "redis"` they are new sockets (recovered = false), although "/"
//   offers recovery: pub/sub keeps no events for another node to replay. With
//   `adapter = "redis-streams"` they come back as the same sockets, in their rooms, with
//   the events sent while they were away (sessions and events are kept in Redis).
//
// Which node serves a client: its greeting (`greet = "node1"` / "node2", the names of
// HAProxy's servers and cookie values). Nothing sleeps: every wait is for an event, an
// ack, a log line, a metric or a server state, bounded.
import { describe, it, before, after, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { startDaemon, stopDaemon, waitForMetric } from "../lib/admin.mjs";
import {
  NODES,
  skipWithoutHaproxy,
  nodeConfig,
  startProxy,
  withProxyLogs,
  proxyClient,
  servedBy,
  spread as spreadWith,
  stickyCookie,
  assertStillConnected,
  assertNo4xx,
  assertNodeConnections,
} from "../lib/haproxy.mjs";
import { startRedis } from "../lib/redis.mjs";
import { freshRoom } from "../lib/clients.mjs";
import { TEST_TOKEN } from "../lib/spawn.mjs";
import { within, ask } from "../lib/workers.mjs";

const WAIT_MS = 5000;
/** Polling round trips per client: every one is a few more requests that must stick. */
const ROUNDS = 3;
/** Reconnection without jitter or a long backoff, so that a failover is quick. */
const RECONNECTING = { reconnection: true, reconnectionDelay: 300, reconnectionDelayMax: 300, randomizationFactor: 0 };

let redis;
let nodes = [];
let proxy;
const sockets = [];

before(async () => {
  redis = await startRedis();
});

after(async () => {
  await redis?.stop();
});

async function stopAll() {
  while (sockets.length) sockets.pop().disconnect();
  await proxy?.stop();
  proxy = undefined;
  for (const node of nodes) await stopDaemon(node);
  nodes = [];
}

afterEach(stopAll);

/** Wait until Redis keeps the session of `pid` with `room` among its rooms. */
async function waitForSession(pid, room) {
  const { createClient } = await import("redis");
  const client = createClient({ socket: { path: redis.path } });
  await client.connect();
  try {
    for (;;) {
      const kept = await client.get(`sio:session:${pid}`);
      if (kept && Buffer.from(kept, "base64").includes(Buffer.from(room))) return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  } finally {
    await client.quit();
  }
}

/**
 * A node of the book's deployment: two workers (one per core here), the cluster on the
 * test's Redis, and recovery offered on "/" (so that a client sends its pid when it
 * reconnects, and what the other node makes of it is seen).
 */
function clusterNodeConfig(name, adapter) {
  return nodeConfig(name, {
    server: "workers = 2",
    namespace: 'recovery = { max_disconnection = "2m" }',
    tables: `[cluster]\nadapter = "${adapter}"\nurl = "${redis.url}"\n`,
  });
}

/** Two clustered nodes, each subscribed on Redis, and HAProxy in front of them. */
async function startCluster(adapter = "redis") {
  for (const name of NODES) {
    const node = await startDaemon(clusterNodeConfig(name, adapter));
    nodes.push(node);
    await node.waitForLog(adapter === "redis" ? /cluster: subscribed on Redis/ : /cluster: reading the Redis stream/);
  }
  proxy = await startProxy(nodes);
}

const logs = (fn) => withProxyLogs(() => ({ proxy, nodes }), fn);
const client = (opts = {}) => proxyClient(proxy.url, sockets, opts);
const spread = (each, opts) => spreadWith(() => client(opts), each);

/** `$join room` acked (counts are per node with pub/sub: not asserted). */
async function joinRoom(c, room) {
  const reply = await ask(c, "$join", room);
  assert.equal(reply?.ok, true, `$join ${room} by ${c.sid} on ${c.node}: ${JSON.stringify(reply)}`);
  assert.equal(reply.room, room);
}

/** The arguments of the first recorded event `name` whose first argument satisfies `pred`. */
function arrival(socket, name, pred) {
  let look;
  return within(
    new Promise((resolve) => {
      look = () => {
        const hit = socket.got.find(([n, first]) => n === name && pred(first));
        if (hit) resolve(hit.slice(1));
      };
      socket.watchers.add(look);
      look();
    }),
    WAIT_MS,
    `${name} at ${socket.sid} on ${socket.node}`,
  )
    .catch((err) => {
      err.message += `; it got ${JSON.stringify(socket.got)}`;
      throw err;
    })
    .finally(() => socket.watchers.delete(look));
}

/** The bytes of a received binary argument (Buffer or ArrayBuffer), as an array. */
const bytes = (bin) => [...new Uint8Array(bin)];

/**
 * `sender` emits "msg" { token } with a binary argument to its rooms; every one of
 * `receivers` gets both arguments intact. Acked by the relay.
 */
async function talk(sender, receivers, label) {
  const token = `${label}:${sender.sid}`;
  const payload = Buffer.from(token);
  const arrivals = receivers.map((c) => arrival(c, "msg", (m) => m?.token === token));
  assert.deepEqual(await ask(sender, "msg", { token }, payload), { ok: true }, `msg ${token} from ${sender.node}`);
  for (const [i, [first, bin]] of (await Promise.all(arrivals)).entries()) {
    assert.deepEqual(first, { token });
    assert.deepEqual(bytes(bin), [...payload], `the binary argument of ${token} at ${receivers[i].sid} on ${receivers[i].node}`);
  }
}

/** POST /api/v1/emit on `node`'s admin listener; resolves to the parsed answer. */
async function apiEmit(node, body) {
  const res = await fetch(`${node.adminUrl}/api/v1/emit`, {
    method: "POST",
    headers: { authorization: `Bearer ${TEST_TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(WAIT_MS),
  });
  const answer = await res.json();
  assert.equal(res.status, 200, JSON.stringify(answer));
  assert.equal(answer.ok, true, JSON.stringify(answer));
  return answer;
}

describe(
  "HAProxy (packaging/examples/haproxy.cfg) in front of two iorelay nodes sharing rooms through Redis",
  { skip: skipWithoutHaproxy },
  () => {
    beforeEach(() => startCluster());

    it("clients on different nodes share a room both ways with binary arguments, and the server API's emit reaches both nodes", logs(async () => {
      const byNode = await spread(2, { transports: ["websocket"] });
      const [a, outsideA] = byNode.node1;
      const [b, outsideB] = byNode.node2;
      const room = freshRoom("across");
      await joinRoom(a, room);
      await joinRoom(b, room);

      // node1 → Redis → node2, and back.
      await talk(a, [b], "a-to-b");
      await talk(b, [a], "b-to-a");

      // The server API of either node, into the room: its members on both nodes.
      for (const [i, origin] of nodes.entries()) {
        const token = `api-${NODES[i]}`;
        const arrivals = [a, b].map((c) => arrival(c, "news", (m) => m?.token === token));
        await apiEmit(origin, { event: "news", args: [{ token }], rooms: [room], binary: [Buffer.from([i, 7, 255]).toString("base64")] });
        for (const [first, bin] of await Promise.all(arrivals)) {
          assert.deepEqual(first, { token });
          assert.deepEqual(bytes(bin), [i, 7, 255]);
        }
      }

      // And to the whole namespace: every client on both nodes.
      const everyone = [a, b, outsideA, outsideB];
      const all = everyone.map((c) => arrival(c, "notice", (m) => m === "all"));
      await apiEmit(nodes[1], { event: "notice", args: ["all"] });
      await Promise.all(all);
      // Each node had handled the room's events before the namespace-wide one (a and b
      // got them), so an outsider that was sent one would have it by now.
      for (const c of [outsideA, outsideB]) {
        assert.deepEqual(c.got.filter(([n]) => n === "msg" || n === "news"), [], `${c.sid} on ${c.node} is not in ${room}`);
      }
      assertStillConnected(everyone, "websocket");
      await assertNodeConnections(nodes, byNode, "websocket");
    }));

    it("polling clients stay on their node (IORELAY cookie) and still reach the clients on the other", logs(async (t) => {
      const byNode = await spread(2, { transports: ["polling"], withCredentials: true });
      const all = Object.values(byNode).flat();
      for (const c of all) assert.equal(stickyCookie(c), c.node, `the IORELAY cookie of a client served by ${c.node}`);
      const room = freshRoom("polling");
      for (const c of all) await joinRoom(c, room);
      for (let r = 0; r < ROUNDS; r++) {
        for (const sender of all) await talk(sender, all.filter((c) => c !== sender), `round${r}`);
      }
      const token = "api-to-pollers";
      const arrivals = all.map((c) => arrival(c, "news", (m) => m?.token === token));
      await apiEmit(nodes[0], { event: "news", args: [{ token }], rooms: [room], binary: [Buffer.from("p").toString("base64")] });
      await Promise.all(arrivals);

      assertStillConnected(all, "polling");
      for (const c of all) assert.equal(stickyCookie(c), c.node, `the IORELAY cookie of ${c.sid} after the exchange`);
      await assertNodeConnections(nodes, byNode, "polling");
      const polls = proxy.logs().split("\n").filter((l) => l.includes("transport=polling")).length;
      t.diagnostic(`${polls} polling requests through HAProxy`);
      // Every request reached the node that holds its session: no "Session ID unknown".
      await assertNo4xx(proxy);
    }));

    it("a node killed: its clients reconnect through HAProxy to the other node, join again and talk with the rest (not recovered)", logs(async (t) => {
      const ws = await spread(2, { transports: ["websocket"], ...RECONNECTING });
      const polling = await spread(1, { transports: ["polling"], withCredentials: true, ...RECONNECTING });
      const [survivorNode, victimNode] = NODES;
      const survivors = [...ws[survivorNode], ...polling[survivorNode]];
      const orphans = [...ws[victimNode], ...polling[victimNode]];
      const everyone = [...survivors, ...orphans];
      const room = freshRoom("failover");
      for (const c of everyone) await joinRoom(c, room);
      // The cluster works before the kill: across the nodes, both ways.
      await talk(orphans[0], everyone.filter((c) => c !== orphans[0]), "before");
      await talk(survivors[0], everyone.filter((c) => c !== survivors[0]), "before");

      // From here on, each orphan's events (the greeting of the node it comes back to)
      // and its next connect.
      const marks = new Map(orphans.map((c) => [c, c.got.length]));
      const survivorMarks = new Map(survivors.map((c) => [c, c.got.length]));
      const reconnected = orphans.map(
        (c) => within(new Promise((resolve) => c.once("connect", resolve)), 10000, `the reconnection of ${c.sid} (was on ${victimNode})`),
      );
      const victim = nodes[NODES.indexOf(victimNode)];
      const killedAt = Date.now();
      // SIGKILL by pid: the master; its workers die with it (they are started with a
      // parent-death signal), and stopDaemon kills any that is left after the test.
      process.kill(victim.pid, "SIGKILL");
      await within(victim.exit, WAIT_MS, `${victimNode}'s exit`);
      await Promise.all(reconnected);
      t.diagnostic(`${orphans.length} clients reconnected ${Date.now() - killedAt} ms after ${victimNode} was killed`);

      const survivorAt = nodes[NODES.indexOf(survivorNode)];
      for (const c of orphans) {
        c.node = await servedBy(c, marks.get(c));
        assert.equal(c.node, survivorNode, `${c.sid} came back on ${c.node}`);
        // Pub/sub keeps nothing for another node: the events of the killed node's sockets
        // lived in its memory only, so the survivor does not know the pid the client
        // sends and opens a new socket (the streams adapter does: the last case).
        assert.equal(c.recovered, false, `${c.sid} was recovered on ${c.node}`);
        assert.notEqual(c.id, c.sid, "a new socket id");
        c.sid = c.id;
      }
      await waitForMetric(survivorAt, "iorelay_recovery_total", { namespace: "/", result: "unknown_pid" }, (v) => v === orphans.length, WAIT_MS, `${survivorNode}'s refused recoveries`);
      // A polling orphan now carries the survivor's cookie.
      for (const c of polling[victimNode]) assert.equal(stickyCookie(c), survivorNode, `the IORELAY cookie of ${c.sid} after the failover`);
      // The survivors noticed nothing: same sockets, no second greeting.
      for (const c of survivors) {
        assert.equal(c.connected, true, `${c.sid} on ${survivorNode} was disconnected`);
        assert.equal(c.id, c.sid, `${c.sid} on ${survivorNode} reconnected`);
      }

      // Not recovered, so not in the room either: the page joins again, as after any
      // reconnect that was not recovered.
      for (const c of orphans) await joinRoom(c, room);
      for (const sender of [...orphans, survivors[0]]) await talk(sender, everyone.filter((c) => c !== sender), "after");
      for (const c of survivors) {
        const greetings = c.got.slice(survivorMarks.get(c)).filter(([n]) => NODES.includes(n));
        assert.deepEqual(greetings, [], `${c.sid} was greeted again`);
      }
      await proxy.waitForServer(victimNode, "DOWN");
      assert.equal((await proxy.server(survivorNode)).status, "UP");
    }));

    it("with the streams adapter, a node killed: its clients come back on the other node as the same sockets, in their room, with the events they missed", logs(async (t) => {
      await stopAll();
      await startCluster("redis-streams");
      const slow = { ...RECONNECTING, reconnectionDelay: 1500, reconnectionDelayMax: 1500 };
      const ws = await spread(1, { transports: ["websocket"], ...slow });
      const polling = await spread(1, { transports: ["polling"], withCredentials: true, ...slow });
      const [survivorNode, victimNode] = NODES;
      const survivors = [...ws[survivorNode], ...polling[survivorNode]];
      const orphans = [...ws[victimNode], ...polling[victimNode]];
      const everyone = [...survivors, ...orphans];
      const room = freshRoom("recover");
      for (const c of everyone) await joinRoom(c, room);
      await talk(orphans[0], everyone.filter((c) => c !== orphans[0]), "before");
      await talk(survivors[0], everyone.filter((c) => c !== survivors[0]), "before");
      // The victim keeps its sockets' sessions in Redis, rooms included, within a second.
      for (const c of orphans) {
        await within(waitForSession(c._pid, room), WAIT_MS, `the session of ${c.sid} in Redis`);
      }
      const reconnected = orphans.map(
        (c) => within(new Promise((resolve) => c.once("connect", resolve)), 15000, `the reconnection of ${c.sid}`),
      );
      const marks = new Map(orphans.map((c) => [c, c.got.length]));
      const victim = nodes[NODES.indexOf(victimNode)];
      process.kill(victim.pid, "SIGKILL");
      await within(victim.exit, WAIT_MS, `${victimNode}'s exit`);
      // Sent while the orphans are away (they wait 1.5 s before reconnecting).
      const missed = [];
      for (let i = 0; i < 3; i++) {
        const token = `missed${i}`;
        missed.push(token);
        assert.deepEqual(await ask(survivors[0], "msg", { token }, Buffer.from(token)), { ok: true });
      }
      await Promise.all(reconnected);
      const survivorAt = nodes[NODES.indexOf(survivorNode)];
      for (const c of orphans) {
        c.node = await servedBy(c, marks.get(c));
        assert.equal(c.node, survivorNode);
        assert.equal(c.recovered, true, `${c.sid} was not recovered on ${c.node}`);
        assert.equal(c.id, c.sid, "the same socket id");
        // Each missed event exactly once, in order, with its binary argument.
        const got = c.got.slice(marks.get(c)).filter(([n, first]) => n === "msg" && missed.includes(first?.token));
        await within(
          (async () => {
            while (c.got.slice(marks.get(c)).filter(([n, first]) => n === "msg" && missed.includes(first?.token)).length < missed.length) {
              await new Promise((resolve) => {
                c.watchers.add(resolve);
              });
            }
          })(),
          WAIT_MS,
          `the missed events at ${c.sid}; it got ${JSON.stringify(got)}`,
        );
        const replayed = c.got.slice(marks.get(c)).filter(([n, first]) => n === "msg" && missed.includes(first?.token));
        assert.deepEqual(replayed.map(([, first]) => first.token), missed, `${c.sid} got the missed events once each, in order`);
        for (const [, first, bin] of replayed) assert.deepEqual(bytes(bin), [...Buffer.from(first.token)]);
      }
      await waitForMetric(survivorAt, "iorelay_recovery_total", { namespace: "/", result: "recovered" }, (v) => v === orphans.length, WAIT_MS, `${survivorNode}'s recoveries`);
      // Still in the room, without joining again: they talk with the rest.
      for (const sender of [...orphans, survivors[0]]) await talk(sender, everyone.filter((c) => c !== sender), "after");
    }));
  },
);

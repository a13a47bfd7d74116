// Cluster-wide presence between iorelay nodes: two iorelay nodes of two workers each
// (or one of a single process) and a private Redis (lib/redis.mjs), with either adapter.
// The namespace's own announcements (`announce`, `"room": null`) span the nodes too. A
// worker that dies: its member leaves on the other node, and its successor is told the
// other node's members. A client's join on one node
// is announced (`$presence`, cluster-wide count) to the room's members on the other;
// `$members`, `$rooms` and the server API's room listings count each member once; the
// room webhooks of both nodes go to one receiver, `room.occupied` once for the cluster.
// A node killed with SIGKILL leaves after the heartbeat deadline (its member's leave
// announced, and reported once); restarted, it is a new node and rejoins; stopped with
// SIGTERM, it says goodbye. Hostile messages on the presence channel (not msgpack,
// another version, an oversized node id, a list that is a number) are dropped and
// counted, and the honest nodes go on. Nothing sleeps: every wait is for an event, a log line, a
// webhook or an answer, bounded.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { createClient } from "redis";
import { encode } from "notepack.io";
import { startDaemon, stopDaemon, withLogs, waitForMetric, workerSlots } from "../lib/admin.mjs";
import { workerOf } from "../lib/workers.mjs";
import { startRedis } from "../lib/redis.mjs";
import { openClient, connected, join, ack, freshRoom } from "../lib/clients.mjs";
import { TEST_TOKEN } from "../lib/spawn.mjs";

const WAIT_MS = 5000;
// Longer than the heartbeat deadline below (1s), with room for a loaded machine.
const DEADLINE_WAIT_MS = 15000;

let redis;
let hooks;
const nodes = [];
const sockets = [];

before(async () => {
  redis = await startRedis();
  hooks = await receiver();
});

after(async () => {
  if (hooks) await hooks.close();
  if (redis) await redis.stop();
});

afterEach(async () => {
  for (const s of sockets.splice(0)) s.disconnect();
  for (const n of nodes.splice(0)) await stopDaemon(n);
  hooks.events.length = 0;
});

const logs = (fn) => withLogs(() => nodes[0], fn);

/** A webhook receiver: every event of every request, and a wait for one. */
async function receiver() {
  const events = [];
  const waiters = new Set();
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      events.push(...JSON.parse(Buffer.concat(chunks).toString("utf8")).events);
      res.writeHead(200).end("ok");
      for (const w of waiters) w();
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return {
    events,
    url: `http://127.0.0.1:${server.address().port}/hooks`,
    /** Wait until `pred` holds of the events so far. */
    until(pred, what, ms = WAIT_MS) {
      return new Promise((resolve, reject) => {
        const look = () => {
          if (pred(events)) {
            waiters.delete(look);
            clearTimeout(timer);
            resolve();
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(look);
          reject(new Error(`no webhook ${what} within ${ms} ms; got ${JSON.stringify(events)}`));
        }, ms);
        waiters.add(look);
        look();
      });
    },
    async close() {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

function config(adapter, workers) {
  return `
[server]
workers = ${workers}
shutdown_timeout = "1s"

[cluster]
adapter = "${adapter}"
url = "${redis.url}"
heartbeat_interval = "100ms"
heartbeat_timeout = "1s"

[namespaces."/"]
join = "any"
presence = true
announce = true
members = "all"

[webhooks]
url = "${hooks.url}"
secret = "presence-secret-0123456789"
linger = "20ms"
`;
}

/** An iorelay node of the cluster, once its gateway is subscribed. */
async function startNode(adapter, workers = 2) {
  const node = await startDaemon(config(adapter, workers));
  nodes.push(node);
  await node.waitForLog(/cluster: subscribed on Redis/);
  return node;
}

function client(node) {
  return openClient(node.url, sockets, { transports: ["websocket"] });
}

async function api(node, path) {
  const res = await fetch(`${node.adminUrl}${path}`, {
    headers: { authorization: `Bearer ${TEST_TOKEN}` },
    signal: AbortSignal.timeout(WAIT_MS),
  });
  return res.json();
}

/** The count of `room` in the server API's room listing of `node` (0: not listed). */
async function apiCount(node, room) {
  const body = await api(node, "/api/v1/rooms?namespace=/");
  return body.namespaces["/"].find((r) => r.room === room)?.count ?? 0;
}

/** Ask `node`'s API until the room's count is `want` (presence travels asynchronously). */
async function untilCount(node, room, want, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const got = await apiCount(node, room);
    if (got === want) return;
    if (Date.now() > deadline) throw new Error(`room ${room} counts ${got} on ${node.url}, not ${want}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Ask `$rooms` of `socket` until `room` counts `want`: the worker that serves it (and
 * answers its `$join`) has heard of the other node's members by then.
 */
async function untilSeen(socket, room, want, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    // A refusal (the socket's event rate, under load) is asked again after a pause.
    const reply = await ack(socket, "$rooms");
    const got = reply.rooms?.find((r) => r.room === room)?.count ?? 0;
    if (got === want) return;
    if (Date.now() > deadline) throw new Error(`room ${room} counts ${got} for ${socket.id}, not ${want}: ${JSON.stringify(reply)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A `$presence` of `id` doing `action` in `room` (null: the namespace). */
const presenceOf = (id, action, room) => (p) => p.id === id && p.action === action && p.room === room;

for (const adapter of ["redis", "redis-streams"]) {
  describe(`cluster presence (${adapter})`, () => {
    const spans = (workersOfB) => logs(async () => {
      const a = await startNode(adapter);
      const b = await startNode(adapter, workersOfB);
      await Promise.all([a.waitForLog(/another iorelay node heard/), b.waitForLog(/another iorelay node heard/)]);
      await waitForMetric(b, "iorelay_cluster_nodes", {}, (v) => v === 1, WAIT_MS, "B hears one other node");
      // onB first: B announces onA's arrival only to the sockets it has by then.
      const onB = client(b);
      await connected(onB);
      const onA = client(a);
      await connected(onA);
      const room = freshRoom("presence");

      assert.equal((await join(onB, room)).count, 1);
      await untilSeen(onA, room, 1);
      assert.equal((await join(onA, room)).count, 2, "A counts B's member");
      const [announced] = await onB.inbox.next("$presence", presenceOf(onA.id, "join", room));
      assert.equal(announced.count, 2);
      // The namespace announces onA's connection on B too.
      await onB.inbox.next("$presence", presenceOf(onA.id, "join", null));

      const members = await ack(onB, "$members", room);
      assert.deepEqual(members.members.map((m) => m.id).sort(), [onA.id, onB.id].sort());
      const rooms = await ack(onB, "$rooms");
      assert.deepEqual(rooms.rooms.find((r) => r.room === room), { room, count: 2 });
      for (const node of [a, b]) {
        await untilCount(node, room, 2);
        const listed = await api(node, `/api/v1/rooms/${room}/members?namespace=/`);
        assert.deepEqual(listed.members.map((m) => m.id).sort(), [onA.id, onB.id].sort());
      }

      const mine = (e) => e.room === room;
      await hooks.until((ev) => ev.filter((e) => mine(e) && e.event === "member.joined").length === 2, "two joins");
      const occupied = hooks.events.filter((e) => mine(e) && e.event === "room.occupied");
      assert.equal(occupied.length, 1, "room.occupied once for the cluster");
      assert.equal(occupied[0].socket, onB.id);
    });

    it("spans two nodes: $presence, $members, $rooms, the API and the webhooks count each member once", spans(2));
    it("takes in a single-process node (workers = 1) the same way", spans(1));

    it("drops hostile presence messages, counted, and goes on", logs(async () => {
      const a = await startNode(adapter);
      const b = await startNode(adapter);
      await Promise.all([a.waitForLog(/another iorelay node heard/), b.waitForLog(/another iorelay node heard/)]);
      const pub = createClient({ socket: { path: redis.path } });
      pub.on("error", () => {});
      await pub.connect();
      try {
        const channel = "socket.io-iorelay#presence#";
        await pub.publish(channel, Buffer.from([0xc1, 0x00, 0xff]));
        await pub.publish(channel, encode({ v: 9, node: "x", seq: 1, body: "beat" }));
        await pub.publish(channel, encode({ v: 1, node: "y".repeat(600), seq: 1, body: "beat" }));
        await pub.publish(channel, encode({ v: 1, node: "z", seq: 1, body: { snapshot: 4294967295 } }));
      } finally {
        await pub.quit().catch(() => {});
      }
      for (const node of [a, b]) {
        await waitForMetric(node, "iorelay_cluster_dropped_total", { reason: "presence_malformed" }, (v) => v >= 4, WAIT_MS, "hostile presence messages counted");
      }
      // The honest nodes still hear each other.
      const onA = client(a);
      const onB = client(b);
      await Promise.all([connected(onA), connected(onB)]);
      const room = freshRoom("presence");
      await join(onB, room);
      await untilSeen(onA, room, 1);
      assert.equal((await join(onA, room)).count, 2);
    }));

    it("a worker that dies: its member leaves on the other node, its successor knows the other node's", logs(async () => {
      const b = await startNode(adapter);
      const a = await startNode(adapter);
      await Promise.all([a.waitForLog(/another iorelay node heard/), b.waitForLog(/another iorelay node heard/)]);
      const room = freshRoom("presence");
      const onB = client(b);
      await connected(onB);
      await join(onB, room);
      const onA = client(a);
      await connected(onA);
      await untilSeen(onA, room, 1);
      await join(onA, room);
      await onB.inbox.next("$presence", presenceOf(onA.id, "join", room));
      const victim = workerOf(onA.io.engine.id);
      const killed = onA.id;
      const slot = workerSlots(a).find((w) => w.worker === victim);
      assert.ok(slot, `worker ${victim} of node A found`);
      const mark = a.mark();
      process.kill(slot.pid, "SIGKILL");
      const [left] = await onB.inbox.next("$presence", presenceOf(killed, "leave", room));
      assert.equal(left.count, 1);
      // The restarted worker learns B's member from the master: a client it serves sees it.
      await a.waitForLog(new RegExp(`worker serving worker=${victim}`), { from: mark, ms: 10000 });
      for (let i = 0; i < 60; i++) {
        const c = client(a);
        await connected(c);
        if (workerOf(c.io.engine.id) === victim) {
          await untilSeen(c, room, 1);
          return;
        }
        c.disconnect();
      }
      assert.fail(`no connection landed on the restarted worker ${victim}`);
    }));

    it("drops a killed node after the deadline, takes it back restarted, and hears a goodbye", logs(async () => {
      const b = await startNode(adapter);
      let a = await startNode(adapter);
      await Promise.all([a.waitForLog(/another iorelay node heard/), b.waitForLog(/another iorelay node heard/)]);
      const room = freshRoom("presence");
      const onB = client(b);
      await connected(onB);
      await join(onB, room);
      let onA = client(a);
      await connected(onA);
      await untilSeen(onA, room, 1);
      assert.equal((await join(onA, room)).count, 2);
      await onB.inbox.next("$presence", presenceOf(onA.id, "join", room));

      // SIGKILL: no goodbye; B drops A's member after the deadline.
      const killed = onA.id;
      await stopDaemon(a);
      nodes.splice(nodes.indexOf(a), 1);
      const [left] = await onB.inbox.next("$presence", presenceOf(killed, "leave", room), DEADLINE_WAIT_MS);
      assert.equal(left.count, 1);
      // The namespace's connections too (announce): onB alone is left.
      const [gone] = await onB.inbox.next("$presence", presenceOf(killed, "leave", null));
      assert.equal(gone.count, 1);
      const mine = (e) => e.room === room && e.socket === killed && e.event === "member.left";
      await hooks.until((ev) => ev.some(mine), "member.left of the dead node's member");
      assert.equal(hooks.events.filter(mine).length, 1, "reported once");
      await untilCount(b, room, 1);

      // Back, under a new node id: its members count again, the old id's do not.
      a = await startNode(adapter);
      onA = client(a);
      await connected(onA);
      await untilSeen(onA, room, 1);
      assert.equal((await join(onA, room)).count, 2);
      const [back] = await onB.inbox.next("$presence", presenceOf(onA.id, "join", room));
      assert.equal(back.count, 2);
      await untilCount(b, room, 2);

      // SIGTERM: A says goodbye, and its member leaves B's room at once.
      // Its id read now: a client's `id` is gone once it is disconnected.
      const leaving = onA.id;
      const mark = b.mark();
      a.signal("SIGTERM");
      await b.waitForLog(/a node said goodbye/, { from: mark });
      const [bye] = await onB.inbox.next("$presence", presenceOf(leaving, "leave", room));
      assert.equal(bye.count, 1);
      await a.waitExit(DEADLINE_WAIT_MS);
    }));
  });
}

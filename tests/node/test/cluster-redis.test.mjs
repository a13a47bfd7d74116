// A cluster through Redis in the format of @socket.io/redis-adapter 8.x, with the npm
// packages as the other side: @socket.io/redis-emitter pushes into iorelay rooms, and a
// Node socket.io 4.8 server with the Redis adapter shares one cluster with an iorelay
// node of two workers (broadcasts both ways, fetchSockets, socketsJoin,
// disconnectSockets, serverSideEmit, the server API's emit). Redis is a private
// redis-server on a Unix socket (lib/redis.mjs). Nothing sleeps: every wait is for an
// event, a log line or an answer, bounded.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { createClient } from "redis";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-adapter";
import { Emitter } from "@socket.io/redis-emitter";
import { encode } from "notepack.io";
import { startDaemon, stopDaemon, withLogs, waitForMetric } from "../lib/admin.mjs";
import { startRedis } from "../lib/redis.mjs";
import { openClient, connected, join, freshRoom } from "../lib/clients.mjs";
import { TEST_TOKEN } from "../lib/spawn.mjs";

const WAIT_MS = 5000;

let redis;
let daemon;
const sockets = [];
const closers = [];

before(async () => {
  redis = await startRedis();
});

after(async () => {
  if (redis) await redis.stop();
});

afterEach(async () => {
  for (const s of sockets.splice(0)) s.disconnect();
  for (const close of closers.splice(0).reverse()) await close();
  if (daemon) await stopDaemon(daemon);
  daemon = undefined;
});

const logs = (fn) => withLogs(() => daemon, fn);

function config(workers = 2) {
  return `
[server]
workers = ${workers}
shutdown_timeout = "1s"

[cluster]
adapter = "redis"
url = "${redis.url}"

[namespaces."/"]
join = "any"
presence = false

[namespaces."/chat"]
join = "any"
presence = false
`;
}

/** iorelay, clustered, once its gateway is subscribed. */
async function startNode(workers = 2, opts = {}) {
  daemon = await startDaemon(config(workers), opts);
  await daemon.waitForLog(/cluster: subscribed on Redis/);
  return daemon;
}

async function redisClient() {
  const client = createClient({ socket: { path: redis.path } });
  client.on("error", () => {});
  await client.connect();
  closers.push(() => client.quit().catch(() => {}));
  return client;
}

function client(url, opts = {}) {
  return openClient(url, sockets, { transports: ["websocket"], ...opts });
}

/** A Node socket.io server with the Redis adapter, on 127.0.0.1:0. */
async function startNodeServer() {
  const pub = await redisClient();
  const sub = pub.duplicate();
  sub.on("error", () => {});
  await sub.connect();
  closers.push(() => sub.quit().catch(() => {}));
  const http = createServer();
  const io = new Server(http, { adapter: createAdapter(pub, sub) });
  io.on("connection", (socket) => {
    socket.on("join", (room, cb) => {
      socket.join(room);
      cb?.();
    });
    socket.on("say", (room, ...args) => socket.to(room).emit("said", ...args));
  });
  await new Promise((r) => http.listen(0, "127.0.0.1", r));
  closers.push(() => new Promise((r) => io.close(() => r())));
  const url = `http://127.0.0.1:${http.address().port}`;
  // The adapter subscribes asynchronously: the server counts itself once it has.
  const deadline = Date.now() + WAIT_MS;
  while ((await io.of("/").adapter.serverCount()) < 2) {
    if (Date.now() > deadline) throw new Error("the Node server and iorelay do not see each other on Redis");
    await new Promise((r) => setTimeout(r, 20));
  }
  return { io, url };
}

async function api(path, body) {
  const res = await fetch(`${daemon.adminUrl}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${TEST_TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(WAIT_MS),
  });
  return { status: res.status, body: await res.json() };
}

describe("cluster: @socket.io/redis-emitter into iorelay", () => {
  it("reaches a room, all but a room, a namespace, with binary arguments", logs(async () => {
    await startNode();
    const inRoom = client(daemon.url);
    const outside = client(daemon.url);
    const onChat = client(`${daemon.url}/chat`);
    await Promise.all([connected(inRoom), connected(outside), connected(onChat)]);
    const room = freshRoom("news");
    await join(inRoom, room);
    const emitter = new Emitter(await redisClient());

    emitter.to(room).emit("news", 1, { text: "hi" }, Buffer.from([1, 2, 3]));
    const [n, obj, bin] = await inRoom.inbox.next("news");
    assert.equal(n, 1);
    assert.deepEqual(obj, { text: "hi" });
    assert.deepEqual([...new Uint8Array(bin)], [1, 2, 3]);

    emitter.except(room).emit("others", "x");
    assert.deepEqual(await outside.inbox.next("others"), ["x"]);

    emitter.emit("everyone", { nested: { b: Buffer.from("zz") } });
    const [[a], [b]] = await Promise.all([inRoom.inbox.next("everyone"), outside.inbox.next("everyone")]);
    assert.equal(Buffer.from(a.nested.b).toString(), "zz");
    assert.equal(Buffer.from(b.nested.b).toString(), "zz");

    emitter.of("/chat").emit("chat-only", 7);
    assert.deepEqual(await onChat.inbox.next("chat-only"), [7]);
    // By now every earlier emit arrived: none went where it was not sent.
    assert.deepEqual(outside.inbox.all("news"), []);
    assert.deepEqual(inRoom.inbox.all("others"), []);
    assert.deepEqual(inRoom.inbox.all("chat-only"), []);

    // A socket id names that socket, and no client may join a room of that name to
    // overhear it.
    const refused = await outside.timeout(WAIT_MS).emitWithAck("$join", inRoom.id);
    assert.equal(refused.ok, false);
    assert.match(refused.error, /named after a connected socket/);
    emitter.to(inRoom.id).emit("to-one", "direct");
    assert.deepEqual(await inRoom.inbox.next("to-one"), ["direct"]);
    emitter.emit("after-direct", 1);
    await outside.inbox.next("after-direct");
    assert.deepEqual(outside.inbox.all("to-one"), []);
  }));
});

describe("cluster: hostile messages on Redis", () => {
  it("garbage, a reserved event name and a nested bomb are dropped and counted; the honest emit after them arrives", logs(async () => {
    await startNode();
    const room = freshRoom("hostile");
    const honest = client(daemon.url);
    await connected(honest);
    await join(honest, room);
    const pub = await redisClient();
    const channel = `socket.io#/#${room}#`;
    // Not msgpack; a packet that is not an event; a reserved event name; 5,000 nested lists.
    await pub.publish(channel, Buffer.from([0xc1, 0xff, 0x00]));
    await pub.publish(channel, encode(["evil", { type: 0, data: {}, nsp: "/" }, { rooms: [room], except: [] }]));
    await pub.publish(channel, encode(["evil", { type: 2, data: ["disconnect"], nsp: "/" }, { rooms: [room], except: [] }]));
    await pub.publish(channel, Buffer.concat([Buffer.from([0x93, 0xa4]), Buffer.from("evil"), Buffer.alloc(5000, 0x91), Buffer.from([0xc0])]));
    await pub.publish("socket.io-request#/#", Buffer.from('{"type":2,"uid":"evil","opts":{"rooms":"not a list"}}'));
    await waitForMetric(daemon, "iorelay_cluster_dropped_total", { reason: "malformed" }, (v) => v >= 5, WAIT_MS, "malformed messages counted");
    const emitter = new Emitter(pub);
    emitter.to(room).emit("honest", 1);
    assert.deepEqual(await honest.inbox.next("honest"), [1]);
    assert.ok(honest.connected, "the honest client is still connected");
    assert.deepEqual(honest.inbox.names().filter((n) => n !== "honest"), []);
  }));
});

describe("cluster: a Node socket.io server with @socket.io/redis-adapter and iorelay", () => {
  it("broadcasts flow both ways, and the server API's emit reaches Node's clients", logs(async () => {
    await startNode();
    const node = await startNodeServer();
    const room = freshRoom("mixed");
    const onNode = client(node.url);
    const onRelay = client(daemon.url);
    await Promise.all([connected(onNode), connected(onRelay)]);
    await onNode.timeout(WAIT_MS).emitWithAck("join", room);
    await join(onRelay, room);

    // iorelay's client → its rooms → the Node server's members of the room.
    onRelay.emit("chat", "from relay", Buffer.from([9]));
    const [text, bin] = await onNode.inbox.next("chat");
    assert.equal(text, "from relay");
    assert.deepEqual([...new Uint8Array(bin)], [9]);

    // The Node server's broadcast → iorelay's members of the room.
    onNode.emit("say", room, "from node", { n: 1 });
    assert.deepEqual(await onRelay.inbox.next("said"), ["from node", { n: 1 }]);

    // Node's io.emit reaches iorelay's clients too.
    node.io.emit("hello-all", 42);
    assert.deepEqual(await onRelay.inbox.next("hello-all"), [42]);

    // The server API on iorelay reaches the Node server's clients.
    const res = await api("/api/v1/emit", { event: "from-api", args: ["x"], rooms: [room] });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(await onNode.inbox.next("from-api"), ["x"]);
  }));

  it("a Node server's broadcast with acks is answered by iorelay's clients, binaries included", logs(async () => {
    await startNode();
    const node = await startNodeServer();
    const room = freshRoom("acks");
    // Two clients in the room (the two workers, as the kernel spreads them), one outside.
    const members = [client(daemon.url), client(daemon.url), client(daemon.url)];
    await Promise.all(members.map((c) => connected(c)));
    const outside = members.pop();
    for (const c of members) await join(c, room);
    for (const c of [...members, outside]) {
      c.on("question", (n, bin, answer) => answer({ id: c.id, n: n + 1, bin }));
    }
    const onNode = client(node.url);
    await connected(onNode);
    await onNode.timeout(WAIT_MS).emitWithAck("join", room);
    onNode.on("question", (n, bin, answer) => answer({ id: "node", n: n + 1, bin }));

    const answers = await node.io.to(room).timeout(WAIT_MS).emitWithAck("question", 41, Buffer.from([5, 6]));
    const byId = Object.fromEntries(answers.map((a) => [a.id, a]));
    assert.deepEqual(Object.keys(byId).sort(), [...members.map((c) => c.id), "node"].sort(), JSON.stringify(answers));
    for (const c of members) {
      assert.equal(byId[c.id].n, 42);
      assert.deepEqual([...new Uint8Array(byId[c.id].bin)], [5, 6], "the binary went there and back");
    }
    // Nobody in the room: the count of 0 from iorelay completes it at once.
    const none = await node.io.to(freshRoom("empty")).timeout(WAIT_MS).emitWithAck("question", 1, Buffer.from([]));
    assert.deepEqual(none, []);
  }));

  it("fetchSockets, socketsJoin, serverSideEmit and disconnectSockets act on iorelay's sockets", logs(async () => {
    await startNode();
    const node = await startNodeServer();
    const room = freshRoom("fetch");
    const onRelay = client(daemon.url);
    await connected(onRelay);
    await join(onRelay, room);

    const all = await node.io.fetchSockets();
    const mine = all.find((s) => s.id === onRelay.id);
    assert.ok(mine, `fetchSockets lists iorelay's socket: ${JSON.stringify(all.map((s) => s.id))}`);
    assert.ok(mine.rooms.has(room), `with its room: ${[...mine.rooms]}`);
    assert.ok(mine.rooms.has(onRelay.id), "and its own id, as a Node socket has");
    assert.match(mine.handshake.address, /127\.0\.0\.1/);
    const inRoom = await node.io.in(room).fetchSockets();
    assert.deepEqual(inRoom.map((s) => s.id), [onRelay.id]);

    const rooms = await node.io.of("/").adapter.allRooms();
    assert.ok(rooms.has(room), `allRooms has ${room}: ${[...rooms]}`);

    const other = freshRoom("joined-by-node");
    node.io.in(onRelay.id).socketsJoin(other);
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const again = await node.io.in(other).fetchSockets();
      if (again.some((s) => s.id === onRelay.id)) break;
      if (Date.now() > deadline) throw new Error("socketsJoin did not put iorelay's socket in the room");
      await new Promise((r) => setTimeout(r, 20));
    }
    node.io.to(other).emit("in-other", 1);
    assert.deepEqual(await onRelay.inbox.next("in-other"), [1]);

    const answers = await node.io.serverSideEmitWithAck("who");
    assert.equal(answers.length, 1);
    assert.equal(answers[0].server, "iorelay");

    const gone = new Promise((r) => onRelay.once("disconnect", r));
    node.io.in(room).disconnectSockets();
    assert.equal(await gone, "io server disconnect");
  }));
});

describe("cluster: Redis goes away and comes back", () => {
  it("local delivery goes on, /readyz and metrics say degraded, and every channel is subscribed again", logs(async () => {
    await startNode(2, { env: { IORELAY_LOG__LEVEL: "info,iorelay::cluster=debug" } });
    // An idle subscription is checked with a PING (every 5 s): it stays subscribed.
    await daemon.waitForLog(/Redis answered a ping/, { ms: 15000 });
    await waitForMetric(daemon, "iorelay_cluster_reconnects_total", {}, (v) => v === 0, WAIT_MS, "no reconnect before the outage");
    const room = freshRoom("outage");
    const a = client(daemon.url);
    const b = client(daemon.url);
    await Promise.all([connected(a), connected(b)]);
    await join(a, room);
    await join(b, room);

    await redis.kill();
    await waitForMetric(daemon, "iorelay_cluster_up", {}, (v) => v === 0, WAIT_MS, "cluster down");
    const ready = await fetch(`${daemon.adminUrl}/readyz`);
    assert.equal(ready.status, 200);
    assert.match(await ready.text(), /cluster degraded/);
    // The host's own delivery does not need Redis.
    a.emit("during", "outage");
    assert.deepEqual(await b.inbox.next("during"), ["outage"]);
    await waitForMetric(daemon, "iorelay_cluster_publish_failures_total", {}, (v) => v >= 1, WAIT_MS, "publish failures counted");

    await redis.restart();
    await waitForMetric(daemon, "iorelay_cluster_up", {}, (v) => v === 1, 15000, "cluster up again");
    await waitForMetric(daemon, "iorelay_cluster_reconnects_total", {}, (v) => v >= 1, WAIT_MS, "reconnect counted");
    assert.equal(await (await fetch(`${daemon.adminUrl}/readyz`)).text(), "ok\n");

    // In again: an emitter reaches the room, on the channel subscribed anew.
    const emitter = new Emitter(await redisClient());
    emitter.to(room).emit("after", 1);
    assert.deepEqual(await a.inbox.next("after"), [1]);
    // Out again: a client's event is published (the workers' connections came back).
    const watcher = await redisClient();
    const sub = watcher.duplicate();
    sub.on("error", () => {});
    await sub.connect();
    closers.push(() => sub.quit().catch(() => {}));
    const published = new Promise((resolve) => sub.pSubscribe("socket.io#/#*", (msg, channel) => resolve(channel), true));
    // The subscription is in place once PUBSUB NUMPAT counts it.
    const deadline = Date.now() + WAIT_MS;
    while (Number(await watcher.sendCommand(["PUBSUB", "NUMPAT"])) < 2) {
      if (Date.now() > deadline) throw new Error("the watcher did not subscribe");
      await new Promise((r) => setTimeout(r, 20));
    }
    // A worker's connection may fail once more before it reconnects: emit until one
    // gets through (each emit is delivered locally either way).
    let channel;
    for (let i = 0; !channel && Date.now() < deadline + WAIT_MS; i++) {
      a.emit("out", i);
      await b.inbox.next("out");
      channel = await Promise.race([published, new Promise((r) => setTimeout(() => r(undefined), 100))]);
    }
    assert.equal(String(channel), `socket.io#/#${room}#`);
  }));
});

describe("cluster: two iorelay nodes", () => {
  it("a room spans both: clients' events and API emits reach the members on the other node", logs(async () => {
    await startNode(1);
    const first = daemon;
    const second = await startDaemon(config(2));
    closers.push(() => stopDaemon(second));
    await second.waitForLog(/cluster: subscribed on Redis/);
    const room = freshRoom("two-nodes");
    const a = client(first.url);
    const b = client(second.url);
    await Promise.all([connected(a), connected(b)]);
    await join(a, room);
    await join(b, room);
    a.emit("hi", "from first", Buffer.from([7]));
    const [text, bin] = await b.inbox.next("hi");
    assert.equal(text, "from first");
    assert.deepEqual([...new Uint8Array(bin)], [7]);
    b.emit("hi", "from second");
    assert.deepEqual(await a.inbox.next("hi"), ["from second"]);
    const res = await api("/api/v1/emit", { event: "api", args: [1], rooms: [room] });
    assert.equal(res.status, 200);
    assert.deepEqual(await b.inbox.next("api"), [1]);
    assert.deepEqual(await a.inbox.next("api"), [1]);
    // Each got it once: by the time a later event arrived, no copy had.
    b.emit("hi", "last");
    await a.inbox.next("hi", (t) => t === "last");
    assert.equal(a.inbox.all("api").length, 1);
    assert.equal(b.inbox.all("hi").length, 1);
  }));
});

describe("cluster: the server API answers for the whole cluster", () => {
  it("rooms, members and sockets include the other nodes' (a Node server's too); a socket elsewhere is moved and disconnected there", logs(async () => {
    await startNode(1);
    const first = daemon;
    const second = await startDaemon(config(2));
    closers.push(() => stopDaemon(second));
    await second.waitForLog(/cluster: subscribed on Redis/);
    const node = await startNodeServer();
    const room = freshRoom("listed");
    const here = client(first.url);
    const there = client(second.url, { auth: { user: "bea" } });
    const onNode = client(node.url);
    await Promise.all([connected(here), connected(there), connected(onNode)]);
    await join(here, room);
    await join(there, room);
    await onNode.timeout(WAIT_MS).emitWithAck("join", room);

    const get = async (path) => {
      const res = await fetch(`${first.adminUrl}${path}`, {
        headers: { authorization: `Bearer ${TEST_TOKEN}` },
        signal: AbortSignal.timeout(3 * WAIT_MS),
      });
      return { status: res.status, body: await res.json() };
    };
    // The other iorelay node's members come by presence, which is eventually consistent:
    // asked until they are in (the Node server's are fetched at each request).
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const rooms = await get("/api/v1/rooms?namespace=/");
      assert.equal(rooms.status, 200);
      const listed = rooms.body.namespaces["/"].find((r) => r.room === room);
      if (listed?.count === 3) break;
      assert.ok(Date.now() < deadline, `the room counts ${JSON.stringify(listed)}, not 3`);
      await new Promise((r) => setTimeout(r, 20));
    }

    const members = await get(`/api/v1/rooms/${room}/members?namespace=/`);
    assert.deepEqual(members.body.members.map((m) => m.id).sort(), [here.id, there.id, onNode.id].sort());

    const listed = await get("/api/v1/sockets?namespace=/");
    const byId = new Map(listed.body.sockets.map((s) => [s.id, s]));
    assert.equal(byId.get(there.id)?.transport, "websocket");
    assert.equal(byId.get(onNode.id)?.transport, "unknown");
    assert.ok(byId.get(onNode.id).rooms.includes(room));

    // A socket on the second node, moved through the first one's API.
    const other = freshRoom("moved");
    const moved = await api(`/api/v1/sockets/${there.id}/join`, { namespace: "/", room: other });
    assert.equal(moved.status, 200, JSON.stringify(moved.body));
    assert.equal(moved.body.count, 1);
    node.io.to(other).emit("in-moved", 1);
    assert.deepEqual(await there.inbox.next("in-moved"), [1]);

    // And the Node server's socket, disconnected through it.
    const gone = new Promise((r) => onNode.once("disconnect", r));
    const kicked = await api(`/api/v1/sockets/${onNode.id}/disconnect`, { namespace: "/" });
    assert.equal(kicked.status, 200, JSON.stringify(kicked.body));
    assert.equal(await gone, "io server disconnect");
  }));
});

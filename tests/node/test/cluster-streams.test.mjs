// A cluster through a Redis stream in the format of @socket.io/redis-streams-adapter
// 0.3.x: a Node socket.io 4.8 server with the streams adapter and iorelay nodes share one
// cluster (broadcasts both ways, fetchSockets, socketsJoin, socketsLeave,
// disconnectSockets, serverSideEmit on iorelay's sockets, the server API's emit and
// listings), and what a client emits while Redis is away reaches the other node, in
// order, once it is back. Redis is a private redis-server on a Unix socket
// (lib/redis.mjs). Nothing sleeps: every wait is for an event, a log line, a metric or an
// answer, bounded.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { createClient } from "redis";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-streams-adapter";
import { startDaemon, stopDaemon, withLogs, waitForMetric } from "../lib/admin.mjs";
import { startRedis } from "../lib/redis.mjs";
import { openClient, connected, join, freshRoom } from "../lib/clients.mjs";
import { TEST_TOKEN } from "../lib/spawn.mjs";
import notepack from "notepack.io";

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
adapter = "redis-streams"
url = "${redis.url}"
block_time = "1s"

[namespaces."/"]
join = "any"
presence = false

[namespaces."/chat"]
join = "any"
presence = false

[namespaces."/rec"]
join = "any"
presence = false
recovery = { max_disconnection = "2m" }
`;
}

/** An iorelay node, clustered, once its gateway listens and reads the stream. */
async function startNode(workers = 2) {
  const node = await startDaemon(config(workers));
  await node.waitForLog(/cluster: subscribed on Redis/);
  await node.waitForLog(/cluster: reading the Redis stream/);
  return node;
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

/** A Node socket.io server with the streams adapter, on 127.0.0.1:0, that sees `nodes` servers. */
async function startNodeServer(nodes = 2) {
  const redisForNode = await redisClient();
  const http = createServer();
  const io = new Server(http, { adapter: createAdapter(redisForNode, { blockTimeInMs: 1000 }) });
  io.on("connection", (socket) => {
    socket.on("join", (room, cb) => {
      socket.join(room);
      cb?.();
    });
    socket.on("say", (room, ...args) => socket.to(room).emit("said", ...args));
  });
  await new Promise((r) => http.listen(0, "127.0.0.1", r));
  // The adapter's own clients are duplicates of ours: closing the server closes them.
  closers.push(() => new Promise((r) => io.close(() => r())));
  const url = `http://127.0.0.1:${http.address().port}`;
  // The adapter subscribes asynchronously: the server counts itself once it has.
  const deadline = Date.now() + WAIT_MS;
  while ((await io.of("/").adapter.serverCount()) < nodes) {
    if (Date.now() > deadline) throw new Error("the Node server and iorelay do not see each other on Redis");
    await new Promise((r) => setTimeout(r, 20));
  }
  return { io, url };
}

async function api(node, path, body) {
  const res = await fetch(`${node.adminUrl}${path}`, {
    method: body ? "POST" : "GET",
    headers: { authorization: `Bearer ${TEST_TOKEN}`, "content-type": "application/json" },
    body: body && JSON.stringify(body),
    signal: AbortSignal.timeout(3 * WAIT_MS),
  });
  return { status: res.status, body: await res.json() };
}

/** Poll `check` until it is true (each try is an answer from the cluster), bounded. */
async function until(check, what) {
  const deadline = Date.now() + WAIT_MS;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not in time: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("cluster-streams: a Node socket.io server with @socket.io/redis-streams-adapter and iorelay", () => {
  it("broadcasts flow both ways with binaries, and the server API's emit reaches Node's clients", logs(async () => {
    daemon = await startNode();
    const node = await startNodeServer();
    const room = freshRoom("mixed");
    const onNode = client(node.url);
    const onRelay = client(daemon.url);
    const onChat = client(`${daemon.url}/chat`);
    await Promise.all([connected(onNode), connected(onRelay), connected(onChat)]);
    await onNode.timeout(WAIT_MS).emitWithAck("join", room);
    await join(onRelay, room);

    // iorelay's client → the stream → the Node server's members of the room.
    onRelay.emit("chat", "from relay", Buffer.from([9]), { deep: { b: Buffer.from("zz") } });
    const [text, bin, obj] = await onNode.inbox.next("chat");
    assert.equal(text, "from relay");
    assert.deepEqual([...new Uint8Array(bin)], [9]);
    assert.equal(Buffer.from(obj.deep.b).toString(), "zz");
    onRelay.emit("chat", "plain", { n: 1 });
    assert.deepEqual(await onNode.inbox.next("chat", (t) => t === "plain"), ["plain", { n: 1 }]);

    // The Node server's broadcasts → iorelay's members of the room, in their namespace.
    onNode.emit("say", room, "from node", Buffer.from([1, 2]));
    const [said, saidBin] = await onRelay.inbox.next("said");
    assert.equal(said, "from node");
    assert.deepEqual([...new Uint8Array(saidBin)], [1, 2]);
    node.io.emit("hello-all", 42);
    assert.deepEqual(await onRelay.inbox.next("hello-all"), [42]);
    node.io.of("/chat").emit("chat-only", 7);
    assert.deepEqual(await onChat.inbox.next("chat-only"), [7]);
    node.io.except(room).emit("not-the-room", 1);
    node.io.to(room).emit("marker", 1);
    // The stream keeps the Node server's order: by the marker, the one before arrived.
    assert.deepEqual(await onRelay.inbox.next("marker"), [1]);
    assert.deepEqual(onRelay.inbox.all("not-the-room"), []);
    assert.deepEqual(onRelay.inbox.all("chat-only"), []);

    // The server API on iorelay reaches the Node server's clients.
    const res = await api(daemon, "/api/v1/emit", { event: "from-api", args: ["x"], rooms: [room] });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(await onNode.inbox.next("from-api"), ["x"]);
  }));

  it("a Node server's broadcast with acks is answered by iorelay's clients", logs(async () => {
    daemon = await startNode();
    const node = await startNodeServer();
    const room = freshRoom("acks");
    const members = [client(daemon.url), client(daemon.url)];
    await Promise.all(members.map((c) => connected(c)));
    for (const c of members) {
      await join(c, room);
      c.on("question", (n, answer) => answer({ id: c.id, n: n + 1, bin: Buffer.from([n]) }));
    }
    const answers = await node.io.to(room).timeout(WAIT_MS).emitWithAck("question", 9);
    assert.deepEqual(answers.map((a) => a.id).sort(), members.map((c) => c.id).sort(), JSON.stringify(answers));
    for (const a of answers) {
      assert.equal(a.n, 10);
      assert.deepEqual([...new Uint8Array(a.bin)], [9]);
    }
  }));

  it("fetchSockets, socketsJoin, socketsLeave, serverSideEmit and disconnectSockets act on iorelay's sockets", logs(async () => {
    daemon = await startNode();
    const node = await startNodeServer();
    const room = freshRoom("fetch");
    const onRelay = client(daemon.url, { auth: { user: "ann" } });
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

    const other = freshRoom("joined-by-node");
    node.io.in(onRelay.id).socketsJoin(other);
    await until(async () => (await node.io.in(other).fetchSockets()).some((s) => s.id === onRelay.id), "socketsJoin");
    node.io.to(other).emit("in-other", 1);
    assert.deepEqual(await onRelay.inbox.next("in-other"), [1]);
    node.io.in(onRelay.id).socketsLeave(other);
    await until(async () => (await node.io.in(other).fetchSockets()).length === 0, "socketsLeave");

    const answers = await node.io.serverSideEmitWithAck("who");
    assert.equal(answers.length, 1);
    assert.equal(answers[0].server, "iorelay");

    // A broadcast with acks to everyone reaches iorelay's client, whose answer is
    // Node's.
    onRelay.on("ping-all", (n, answer) => answer(n + 1));
    const acked = await node.io.timeout(WAIT_MS).emitWithAck("ping-all", 1);
    assert.deepEqual(acked, [2]);

    const gone = new Promise((r) => onRelay.once("disconnect", r));
    node.io.in(room).disconnectSockets();
    assert.equal(await gone, "io server disconnect");
  }));

  it("the server API lists the Node server's and another iorelay's sockets, and moves and disconnects them there", logs(async () => {
    daemon = await startNode(1);
    const second = await startNode(2);
    closers.push(() => stopDaemon(second));
    const node = await startNodeServer(3);
    const room = freshRoom("listed");
    const here = client(daemon.url);
    const there = client(second.url, { auth: { user: "bea" } });
    const onNode = client(node.url);
    await Promise.all([connected(here), connected(there), connected(onNode)]);
    await join(here, room);
    await join(there, room);
    await onNode.timeout(WAIT_MS).emitWithAck("join", room);

    const rooms = await api(daemon, "/api/v1/rooms?namespace=/");
    assert.equal(rooms.status, 200);
    assert.deepEqual(rooms.body.namespaces["/"].find((r) => r.room === room), { room, count: 3 });
    const members = await api(daemon, `/api/v1/rooms/${room}/members?namespace=/`);
    assert.deepEqual(members.body.members.map((m) => m.id).sort(), [here.id, there.id, onNode.id].sort());
    const listed = await api(daemon, "/api/v1/sockets?namespace=/");
    const byId = new Map(listed.body.sockets.map((s) => [s.id, s]));
    assert.equal(byId.get(there.id)?.transport, "websocket");
    assert.equal(byId.get(onNode.id)?.transport, "unknown");

    // A socket on the second node, moved through the first one's API.
    const other = freshRoom("moved");
    const moved = await api(daemon, `/api/v1/sockets/${there.id}/join`, { namespace: "/", room: other });
    assert.equal(moved.status, 200, JSON.stringify(moved.body));
    assert.equal(moved.body.count, 1);
    await until(async () => (await node.io.in(other).fetchSockets()).some((s) => s.id === there.id), "the move");
    node.io.to(other).emit("in-moved", 1);
    assert.deepEqual(await there.inbox.next("in-moved"), [1]);

    // A socket nobody holds is not found.
    const nobody = await api(daemon, "/api/v1/sockets/nobody-has-it/join", { namespace: "/", room: other });
    assert.equal(nobody.status, 404, JSON.stringify(nobody.body));

    // And the Node server's socket, disconnected through it.
    const gone = new Promise((r) => onNode.once("disconnect", r));
    const kicked = await api(daemon, `/api/v1/sockets/${onNode.id}/disconnect`, { namespace: "/" });
    assert.equal(kicked.status, 200, JSON.stringify(kicked.body));
    assert.equal(await gone, "io server disconnect");
  }));
});

describe("cluster-streams: Redis goes away and comes back", () => {
  it("what a client emits during the outage reaches the other node and a Node server, in order, once it is back", logs(async () => {
    daemon = await startNode(2);
    const second = await startNode(1);
    closers.push(() => stopDaemon(second));
    const node = await startNodeServer(3);
    const room = freshRoom("outage");
    const sender = client(daemon.url);
    const receiver = client(second.url);
    const onNode = client(node.url);
    await Promise.all([connected(sender), connected(receiver), connected(onNode)]);
    await join(sender, room);
    await join(receiver, room);
    await onNode.timeout(WAIT_MS).emitWithAck("join", room);

    // Each emit is acknowledged by the relay once accepted: the order is the client's.
    const tick = (phase, i) => sender.timeout(WAIT_MS).emitWithAck("tick", phase, i);
    await tick("before", 0);
    await receiver.inbox.next("tick");
    await onNode.inbox.next("tick");

    await redis.kill();
    await waitForMetric(daemon, "iorelay_cluster_up", {}, (v) => v === 0, WAIT_MS, "first node sees Redis down");
    await waitForMetric(second, "iorelay_cluster_up", {}, (v) => v === 0, WAIT_MS, "second node sees Redis down");
    const during = 40;
    for (let i = 0; i < during; i++) await tick("during", i);
    await waitForMetric(daemon, "iorelay_cluster_held", {}, (v) => v >= 1, WAIT_MS, "the writes are held");
    assert.equal(receiver.inbox.all("tick").length, 1, "nothing crossed while Redis was away");

    await redis.restart();
    for (let i = 0; i < 5; i++) await tick("after", i);

    const expected = [["before", 0]];
    for (let i = 0; i < during; i++) expected.push(["during", i]);
    for (let i = 0; i < 5; i++) expected.push(["after", i]);
    await receiver.inbox.next("tick", (phase, i) => phase === "after" && i === 4, 20000);
    assert.deepEqual(receiver.inbox.all("tick"), expected);
    await onNode.inbox.next("tick", (phase, i) => phase === "after" && i === 4, 20000);
    assert.deepEqual(onNode.inbox.all("tick"), expected);
    await waitForMetric(daemon, "iorelay_cluster_held", {}, (v) => v === 0, WAIT_MS, "nothing held any more");
    assert.equal(
      (await waitForMetric(daemon, "iorelay_cluster_dropped_total", { reason: "publish_queue" }, () => true)).value("iorelay_cluster_dropped_total", { reason: "publish_queue" }),
      0,
    );
  }));

  it("a node whose Redis came back empty reads the new stream from its start", logs(async () => {
    daemon = await startNode(1);
    const second = await startNode(1);
    closers.push(() => stopDaemon(second));
    const room = freshRoom("empty");
    const sender = client(daemon.url);
    const receiver = client(second.url);
    await Promise.all([connected(sender), connected(receiver)]);
    await join(sender, room);
    await join(receiver, room);
    sender.emit("n", 0);
    await receiver.inbox.next("n");

    // Nothing is written meanwhile: the second node finds no stream where it had read
    // one, and starts before everything, so the first entry of the new stream counts.
    const mark = second.mark();
    await redis.kill();
    await waitForMetric(second, "iorelay_cluster_up", {}, (v) => v === 0, WAIT_MS, "Redis seen down");
    await redis.restart();
    await second.waitForLog(/lost the entries already read/, { from: mark, ms: 15000 });
    await second.waitForLog(/cluster: reading the Redis stream/, { from: mark, ms: 15000 });
    for (let i = 1; i <= 3; i++) sender.emit("n", i);
    await receiver.inbox.next("n", (i) => i === 3, 15000);
    assert.deepEqual(receiver.inbox.all("n"), [[0], [1], [2], [3]]);
  }));
});

describe("cluster-streams: sessions in Redis are input like any other", () => {
  it("garbage, a Node server's session, one with more rooms than a client could join and one of another namespace restore nothing; the Node server's stays", logs(async () => {
    daemon = await startNode();
    const redisConn = await redisClient();
    const session = (pid, extra) => Buffer.from(notepack.encode({ sid: "s", pid, rooms: ["s"], data: {}, ...extra })).toString("base64");
    const ours = (nsp, rooms) => ({ iorelay: { nsp, user: null, since: Date.now(), node: "elsewhere" }, rooms });
    const kept = {
      "hostile-1": "not base64 at all!",
      "hostile-2": Buffer.from([0xc1, 0xff, 0x00, 0x93]).toString("base64"),
      "node-session": session("node-session", {}),
      "too-many-rooms": session("too-many-rooms", ours("/rec", Array.from({ length: 5000 }, (_, i) => `r${i}`))),
      "other-namespace": session("other-namespace", ours("/chat", ["s"])),
      "another-pid": session("not-this-one", ours("/rec", ["s"])),
    };
    for (const [pid, value] of Object.entries(kept)) await redisConn.set(`sio:session:${pid}`, value);
    for (const pid of Object.keys(kept)) {
      const c = client(`${daemon.url}/rec`, { auth: { pid, offset: "" } });
      await connected(c);
      assert.equal(c.recovered, false, `${pid} restored something`);
      assert.notEqual(c.id, "s");
      c.disconnect();
    }
    // Only the session with impossible rooms was taken (and refused); the rest are left
    // for whoever may own them.
    assert.equal(await redisConn.get("sio:session:too-many-rooms"), null);
    for (const pid of ["hostile-1", "hostile-2", "node-session", "other-namespace", "another-pid"]) {
      assert.equal(await redisConn.get(`sio:session:${pid}`), kept[pid], `${pid} left in Redis`);
    }
    await waitForMetric(daemon, "iorelay_recovery_total", { namespace: "/rec", result: "unknown_pid" }, (v) => v === 5, WAIT_MS, "pids that name no session of /rec");
    await waitForMetric(daemon, "iorelay_recovery_total", { namespace: "/rec", result: "not_kept" }, (v) => v === 1, WAIT_MS, "the refused session");
  }));
});

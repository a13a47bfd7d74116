// Room history (issue 14, part 1): a namespace with `history` keeps the last events
// relayed to each room (and its broadcasts to all); `$join {room, history}` and
// `$history {room, since, limit}` answer from it through the ack, oldest first, each
// event with its offset; binary arguments come back as binary; the store is bounded by
// size, ttl and server.history_budget, counted in /metrics, and survives a reload.
//
// Every wait is bounded; events are acked by the relay, so "the relay handled it" is
// known without sleeping.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { startDaemon, stopDaemon, scrape, withLogs, bothWorkersLinked, workerSlots, waitForStatus } from "../lib/admin.mjs";
import { workerClient } from "../lib/workers.mjs";
import { TEST_TOKEN } from "../lib/spawn.mjs";
import { openClient, connected, ack, join, freshRoom } from "../lib/clients.mjs";

const CONFIG = `
[server]
workers = 1

[log]
level = "info"

[namespaces."/h"]
route = "rooms"
history = { size = 3, ttl = "10m" }
meta = ["user"]

[namespaces."/all"]
route = "namespace"
history = { size = 10 }

[namespaces."/none"]
route = "rooms"
`;

let daemon;
const sockets = [];

before(async () => {
  daemon = await startDaemon(CONFIG);
});

after(async () => {
  await stopDaemon(daemon);
});

afterEach(() => {
  while (sockets.length) sockets.pop().disconnect();
});

const logs = (fn) => withLogs(() => daemon, fn);

async function client(nsp, name) {
  const socket = openClient(`${daemon.url}${nsp}`, sockets, { auth: name ? { name } : {} });
  await connected(socket);
  return socket;
}

/** GET /api/v1/rooms/ROOM/history?QUERY with the test token: { status, body }. */
async function apiHistory(room, query) {
  const res = await fetch(`${daemon.adminUrl}/api/v1/rooms/${encodeURIComponent(room)}/history?${query}`, {
    headers: { Authorization: `Bearer ${TEST_TOKEN}` },
  });
  return { status: res.status, body: await res.json() };
}

describe("room history", () => {
  it("a late joiner gets the room's latest events, oldest first, with offsets", logs(async () => {
    const room = freshRoom("h");
    const sender = await client("/h", "ann");
    await join(sender, room);
    for (let i = 1; i <= 5; i++) assert.deepEqual(await ack(sender, "msg", `m${i}`, i), { ok: true });

    const late = await client("/h", "bob");
    const reply = await ack(late, "$join", { room, history: 10 });
    assert.equal(reply.ok, true);
    assert.equal(reply.room, room);
    assert.equal(reply.count, 2);
    // size = 3: the latest three; each as delivered, the metadata argument included.
    assert.deepEqual(
      reply.events.map((e) => [e.event, e.args]),
      [3, 4, 5].map((i) => ["msg", [`m${i}`, i, { user: "ann" }]]),
    );
    for (const e of reply.events) {
      assert.match(e.offset, /^\d+-[0-9a-z]+$/);
      assert.ok(Math.abs(e.time - Date.now()) < 60_000, `time ${e.time}`);
    }
    assert.equal(new Set(reply.events.map((e) => e.offset)).size, 3);

    // Fewer when asked for fewer; a plain $join is answered as before.
    const two = await ack(late, "$join", { room, history: 2 });
    assert.deepEqual(two.events.map((e) => e.args[0]), ["m4", "m5"]);
    const plain = await ack(late, "$join", room);
    assert.deepEqual(plain, { ok: true, room, count: 2 });

    // $history since a position: only what it has not seen; the reply's position is the next since.
    const since = await ack(late, "$history", { room, since: reply.events[1].offset });
    assert.deepEqual(since.events.map((e) => e.args[0]), ["m5"]);
    assert.equal(since.position, reply.events[2].offset);
    assert.deepEqual(await ack(sender, "msg", "m6", 6), { ok: true });
    await late.inbox.next("msg", (v) => v === "m6");
    const next = await ack(late, "$history", { room, since: since.position });
    assert.deepEqual(next.events.map((e) => e.args[0]), ["m6"]);
    const limited = await ack(late, "$history", { room, limit: 1 });
    assert.deepEqual(limited.events.map((e) => e.args[0]), ["m6"]);

    // The server API lists the same events, with the same offsets.
    const api = await apiHistory(room, `namespace=${encodeURIComponent("/h")}`);
    assert.equal(api.status, 200);
    assert.deepEqual(api.body.events.map((e) => e.args[0]), ["m4", "m5", "m6"]);
    assert.deepEqual(api.body.events.slice(0, 2).map((e) => e.offset), reply.events.slice(1).map((e) => e.offset));
    const apiSince = await apiHistory(room, `namespace=%2Fh&since=${encodeURIComponent(since.position)}&limit=5`);
    assert.deepEqual(apiSince.body.events.map((e) => e.args[0]), ["m6"]);
    assert.equal((await apiHistory(room, "namespace=%2Fh&since=bogus")).status, 400);
    // Any count is a limit (history.size caps it), even one past 64 bits; a non-count is not.
    const huge = await apiHistory(room, "namespace=%2Fh&limit=125018243673632593747356181069824");
    assert.deepEqual(huge.body.events.map((e) => e.args[0]), ["m4", "m5", "m6"]);
    assert.equal((await apiHistory(room, "namespace=%2Fh&limit=-1")).status, 400);
    assert.equal((await apiHistory(room, "namespace=%2Fnone")).status, 404);
  }));

  it("binary arguments come back as binary, placeholders renumbered across events", logs(async () => {
    const room = freshRoom("bin");
    const sender = await client("/h", "ann");
    await join(sender, room);
    assert.deepEqual(await ack(sender, "file", Buffer.from([1, 2, 3])), { ok: true });
    assert.deepEqual(await ack(sender, "file", { nested: Buffer.from([4, 5]) }), { ok: true });
    const late = await client("/h", "bob");
    const reply = await ack(late, "$join", { room, history: 3 });
    assert.equal(reply.events.length, 2);
    assert.deepEqual([...reply.events[0].args[0]], [1, 2, 3]);
    assert.deepEqual([...reply.events[1].args[0].nested], [4, 5]);
    // The server API gives each event its own attachments, as base64.
    const api = await apiHistory(room, "namespace=%2Fh");
    assert.deepEqual(api.body.events.map((e) => e.binary), [["AQID"], ["BAU="]]);
    assert.deepEqual(api.body.events[1].args[0], { nested: { _placeholder: true, num: 0 } });
  }));

  it("keeps the namespace's broadcasts to all, asked with no room", logs(async () => {
    const a = await client("/all");
    assert.deepEqual(await ack(a, "news", "one"), { ok: true });
    assert.deepEqual(await ack(a, "news", "two"), { ok: true });
    const b = await client("/all");
    const reply = await ack(b, "$history");
    assert.deepEqual(reply.events.slice(-2).map((e) => e.args[0]), ["one", "two"]);
  }));

  it("refuses rooms the socket is not in, namespaces without history and bad asks", logs(async () => {
    const room = freshRoom("priv");
    const member = await client("/h");
    await join(member, room);
    assert.deepEqual(await ack(member, "msg", "secret"), { ok: true });
    const outsider = await client("/h");
    assert.deepEqual(await ack(outsider, "$history", { room }), { ok: false, error: "join the room first" });
    assert.deepEqual(await ack(outsider, "$history", { room, since: "not a position" }), {
      ok: false,
      error: "bad history request",
    });
    assert.deepEqual(await ack(outsider, "$join", { room, history: -1 }), { ok: false, error: "bad history request" });
    const plain = await client("/none");
    assert.deepEqual(await ack(plain, "$history", { room }), { ok: false, error: "this namespace keeps no history" });
    assert.deepEqual(await ack(plain, "$join", { room, history: 5 }), {
      ok: false,
      error: "this namespace keeps no history",
    });
    // Joining without asking for history works in any namespace.
    assert.equal((await ack(plain, "$join", { room })).ok, true);
  }));

  it("is counted in /metrics and survives a reload", logs(async () => {
    const room = freshRoom("kept");
    const sender = await client("/h");
    await join(sender, room);
    assert.deepEqual(await ack(sender, "msg", "before reload"), { ok: true });
    const m = await scrape(daemon);
    assert.ok(m.value("iorelay_history_events") >= 1);
    assert.ok(m.value("iorelay_history_bytes") > 0);
    assert.equal(m.value("iorelay_history_evicted_total"), 0);

    const from = daemon.mark();
    daemon.writeConfig(CONFIG.replace('size = 3, ttl = "10m"', 'size = 5, ttl = "10m"'));
    daemon.signal("SIGHUP");
    await daemon.waitForLog(/configuration reloaded/, { from });
    const late = await client("/h");
    const reply = await ack(late, "$join", { room, history: 5 });
    assert.deepEqual(reply.events.map((e) => e.args[0]), ["before reload"]);
  }));
});

describe("history budget", () => {
  let small;
  const smallSockets = [];
  before(async () => {
    small = await startDaemon(`
[server]
workers = 1
history_budget = "2KB"
[namespaces."/"]
history = { size = 1000 }
`);
  });
  after(async () => {
    while (smallSockets.length) smallSockets.pop().disconnect();
    await stopDaemon(small);
  });

  it("drops the oldest events of the host first, and counts them", async () => {
    const sender = openClient(small.url, smallSockets);
    await connected(sender);
    const rooms = [freshRoom("a"), freshRoom("b")];
    for (const room of rooms) await join(sender, room);
    const payload = "x".repeat(200);
    for (let i = 0; i < 20; i++) {
      // Both rooms get each event (route = "rooms", the sender is in both).
      assert.deepEqual(await ack(sender, "msg", i, payload), { ok: true });
    }
    const m = await scrape(small);
    assert.ok(m.value("iorelay_history_bytes") <= 2000, `bytes ${m.value("iorelay_history_bytes")}`);
    assert.ok(m.value("iorelay_history_evicted_total") > 0);
    const reply = await ack(sender, "$history", { room: rooms[0] });
    const kept = reply.events.map((e) => e.args[0]);
    assert.ok(kept.length > 0 && kept.length < 20, `kept ${kept}`);
    assert.equal(kept[kept.length - 1], 19, "the newest stay");
  });
});

describe("history on two workers", () => {
  let pair;
  const pairSockets = [];
  before(async () => {
    pair = await startDaemon(`
[server]
workers = 2
[namespaces."/"]
history = { size = 10 }
`);
    await bothWorkersLinked(pair);
  });
  after(async () => {
    while (pairSockets.length) pairSockets.pop().disconnect();
    await stopDaemon(pair);
  });

  it("every worker keeps the host's events under the same offsets; the API lists each once", async () => {
    const clients = [];
    for (let i = 0; i < 60; i++) {
      clients.push(await workerClient(pair.url, pairSockets, { transports: ["websocket"] }));
      if (new Set(clients.map((c) => c.worker)).size === 2 && clients.length >= 2) break;
    }
    const byWorker = new Map(clients.map((c) => [c.worker, c]));
    assert.equal(byWorker.size, 2, "clients landed on both workers");
    const [a, b] = [...byWorker.values()];
    const room = freshRoom("pair");
    for (const c of [a, b]) assert.equal((await ack(c, "$join", room)).ok, true);
    // Each worker's client sends; each event is relayed across the bus to the other.
    const arrivedAtB = new Promise((resolve) => b.on("msg", (v) => v === "from-a" && resolve()));
    assert.deepEqual(await ack(a, "msg", "from-a"), { ok: true });
    await arrivedAtB;
    const arrivedAtA = new Promise((resolve) => a.on("msg", (v) => v === "from-b" && resolve()));
    assert.deepEqual(await ack(b, "msg", "from-b"), { ok: true });
    await arrivedAtA;
    const fromA = await ack(a, "$history", { room });
    const fromB = await ack(b, "$history", { room });
    assert.deepEqual(fromA.events.map((e) => e.args[0]).sort(), ["from-a", "from-b"]);
    assert.deepEqual(
      fromA.events.map((e) => e.offset).sort(),
      fromB.events.map((e) => e.offset).sort(),
      "the same events under the same offsets on both workers",
    );
    // A position from one worker means the same on the other.
    const seenA = fromA.events.find((e) => e.args[0] === "from-a").offset;
    const rest = await ack(b, "$history", { room, since: seenA });
    assert.deepEqual(rest.events.map((e) => e.args[0]), ["from-b"]);
    // A server API emit is recorded once, under the master's id, on every worker.
    const res = await fetch(`${pair.adminUrl}/api/v1/emit`, {
      method: "POST",
      headers: { Authorization: `Bearer ${TEST_TOKEN}`, "Content-Type": "application/json" },
      body: JSON.stringify({ event: "msg", args: ["from-api"], rooms: [room] }),
    });
    assert.equal(res.status, 200);
    const listed = await fetch(`${pair.adminUrl}/api/v1/rooms/${room}/history`, {
      headers: { Authorization: `Bearer ${TEST_TOKEN}` },
    }).then((r) => r.json());
    assert.deepEqual(listed.events.map((e) => e.args[0]).sort(), ["from-a", "from-api", "from-b"]);
  });

  it("a worker killed and restarted is handed the host's history by the others", async () => {
    const writer = await workerClient(pair.url, pairSockets, { transports: ["websocket"] });
    const room = freshRoom("restart");
    assert.equal((await ack(writer, "$join", room)).ok, true);
    for (const n of [1, 2, 3]) assert.deepEqual(await ack(writer, "msg", `m${n}`), { ok: true });
    // Kill the worker the writer is NOT on; its replacement starts with nothing of its own.
    const victim = 1 - writer.worker;
    const slots = workerSlots(pair);
    const old = slots.find((w) => w.worker === victim).pid;
    process.kill(old, "SIGKILL");
    await waitForStatus(pair, (st) => st.workers?.length === 2 && st.workers.every((w) => w.peers === 1 && w.pid !== old), 15000, "the replacement linked");
    // A reader on the replacement sees the events from before it started, in order.
    let reader;
    for (let i = 0; i < 60 && !reader; i++) {
      const c = await workerClient(pair.url, pairSockets, { transports: ["websocket"] });
      if (c.worker === victim) reader = c;
      else c.disconnect();
    }
    assert.ok(reader, "a client on the restarted worker");
    const reply = await ack(reader, "$join", { room, history: 10 });
    assert.equal(reply.ok, true, JSON.stringify(reply));
    assert.deepEqual(reply.events.map((e) => e.args[0]), ["m1", "m2", "m3"]);
  });
});

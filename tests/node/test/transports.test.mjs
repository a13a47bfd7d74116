// Transports, payloads and multiplexing, as the unmodified socket.io client sees them.
//
// One relay for the whole file. Every test uses its own rooms, so tests cannot see each
// other's traffic, and closes its clients in afterEach. Nothing here sleeps: each step waits
// for the event or ack it needs, and "did not arrive" is proved with a marker event sent
// after the one under test (per-sender order is preserved, so once the marker is in, the
// earlier event would have been too).
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { Manager } from "socket.io-client";
import { startRelay } from "../lib/relay.mjs";
import { WAIT_MS, freshRoom, attachInbox, openClient, connected, ack, ackAll, join, barrier, relayLogs } from "../lib/clients.mjs";

const CONFIG = `
[namespaces."/"]
join = "any"
route = "rooms"
presence = true

# "marker" reaches every socket of the namespace, sender included: the ordering barrier.
[namespaces."/".events.marker]
route = "namespace"
echo = true

# Answers through the ack with the event's own arguments and delivers to no one.
[namespaces."/".events.echoback]
route = "discard"
ack = "echo"

[namespaces."/a"]
[namespaces."/a".events.marker]
route = "namespace"
echo = true

[namespaces."/b"]
[namespaces."/b".events.marker]
route = "namespace"
echo = true
`;

let relay;
const sockets = [];
const managers = [];

/** A new client socket on its own connection (unless opts.forceNew is false). */
function client(nsp = "/", opts = {}) {
  return openClient(relay.url + nsp, sockets, opts);
}

/** Wrap a test body so that a failure also prints the relay's log lines from that test. */
const withLogs = relayLogs(() => relay);

/** Two clients in one fresh room; `a` emits an event with an ack; `b` receives it. */
async function joinBroadcastAck(a, b) {
  const room = freshRoom("tx");
  assert.deepEqual(await join(a, room), { ok: true, room, count: 1 });
  assert.deepEqual(await join(b, room), { ok: true, room, count: 2 });
  const payload = { text: `hello over ${a.io.engine.transport.name}`, n: 42 };
  const got = b.inbox.next("chat");
  assert.deepEqual(await ack(a, "chat", payload), { ok: true });
  assert.deepEqual(await got, [payload]);
}

before(async () => {
  relay = await startRelay(CONFIG);
});

afterEach(() => {
  while (sockets.length) sockets.pop().disconnect();
  while (managers.length) managers.pop().engine?.close();
});

after(async () => {
  while (sockets.length) sockets.pop().disconnect();
  await relay?.stop();
});

describe("transports", () => {
  it("websocket only: join, broadcast, ack", withLogs(async () => {
    const a = await connected(client("/", { transports: ["websocket"] }));
    const b = await connected(client("/", { transports: ["websocket"] }));
    assert.equal(a.io.engine.transport.name, "websocket");
    await joinBroadcastAck(a, b);
    assert.equal(b.io.engine.transport.name, "websocket");
  }));

  it("polling only: join, broadcast, ack", withLogs(async () => {
    const a = await connected(client("/", { transports: ["polling"] }));
    const b = await connected(client("/", { transports: ["polling"] }));
    assert.equal(a.io.engine.transport.name, "polling");
    await joinBroadcastAck(a, b);
    assert.equal(a.io.engine.transport.name, "polling");
    assert.equal(b.io.engine.transport.name, "polling");
  }));

  it("polling then upgrade to websocket: join, broadcast, ack after the upgrade", withLogs(async () => {
    const upgradedTo = (socket) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("no engine upgrade within 10s")), 10000);
        // The Manager opens its engine synchronously in io(), so the listener is in place
        // before any probe can finish.
        socket.io.engine.once("upgrade", (transport) => {
          clearTimeout(timer);
          resolve(transport.name);
        });
      });
    const a = client("/", { transports: ["polling", "websocket"] });
    const b = client("/", { transports: ["polling", "websocket"] });
    const upA = upgradedTo(a);
    const upB = upgradedTo(b);
    await Promise.all([connected(a), connected(b)]);
    assert.equal(await upA, "websocket");
    assert.equal(await upB, "websocket");
    assert.equal(a.io.engine.transport.name, "websocket");
    await joinBroadcastAck(a, b);
  }));
});

describe("payloads are relayed verbatim", () => {
  for (const transport of ["websocket", "polling"]) {
    describe(`over ${transport}`, () => {
      let a, b, room;
      const setup = async () => {
        a = await connected(client("/", { transports: [transport] }));
        b = await connected(client("/", { transports: [transport] }));
        room = freshRoom("payload");
        await join(a, room);
        await join(b, room);
      };
      const relayed = async (event, ...args) => {
        const got = b.inbox.next(event);
        assert.deepEqual(await ack(a, event, ...args), { ok: true });
        return got;
      };

      it("JSON arguments of every kind", withLogs(async () => {
        await setup();
        const args = [
          "text",
          0,
          -12.5,
          true,
          false,
          null,
          { nested: { list: [1, "two", { three: 3 }], empty: {}, none: null } },
          [],
          "ünïcödé ✓ 😀 \"quotes\" \\ back\nslash",
        ];
        assert.deepEqual(await relayed("json", ...args), args);
      }));

      it("a Buffer argument", withLogs(async () => {
        await setup();
        const buf = Buffer.from([0, 1, 2, 127, 128, 254, 255]);
        const [got] = await relayed("bin", buf);
        assert.ok(Buffer.isBuffer(got), `expected a Buffer, got ${typeof got}: ${JSON.stringify(got)}`);
        assert.deepEqual(got, buf);
      }));

      it("a Buffer nested in an object, next to JSON", withLogs(async () => {
        await setup();
        const arg = { name: "photo.png", meta: { size: 5, tags: ["a", "b"] }, data: Buffer.from("hello") };
        const got = await relayed("file", "before", arg, 7);
        assert.deepEqual(got, ["before", arg, 7]);
        assert.ok(Buffer.isBuffer(got[1].data));
      }));

      it("several Buffers across arguments, arrays and objects, including an empty and a large one", withLogs(async () => {
        await setup();
        const large = Buffer.alloc(40000);
        for (let i = 0; i < large.length; i += 1) large[i] = (i * 31 + 7) & 0xff;
        const args = [
          Buffer.from("first"),
          { second: Buffer.from("second"), list: [Buffer.from([9, 8, 7]), "not binary", Buffer.alloc(0)] },
          [large, { deep: { deeper: Buffer.from("fourth") } }],
        ];
        assert.deepEqual(await relayed("many", ...args), args);
      }));

      it("an ack carrying binary arguments (events rule ack = \"echo\")", withLogs(async () => {
        await setup();
        const args = [Buffer.from([1, 2, 3]), { inner: Buffer.from("inner"), n: 1 }, "plain"];
        const reply = await ackAll(a, "echoback", ...args);
        assert.deepEqual(reply, args);
        assert.ok(Buffer.isBuffer(reply[0]) && Buffer.isBuffer(reply[1].inner));
        // route "discard": nobody else got it.
        await barrier(a, [a, b]);
        assert.deepEqual(b.inbox.all("echoback"), []);
        assert.deepEqual(a.inbox.all("echoback"), []);
      }));
    });
  }
});

describe("namespaces", () => {
  it("two namespaces share one connection (same Manager, same engine id)", withLogs(async () => {
    // No forceNew: io() multiplexes both namespaces over one Manager, as in the book.
    const a = client("/a", { forceNew: false });
    const b = client("/b", { forceNew: false });
    await Promise.all([connected(a), connected(b)]);
    assert.equal(a.io, b.io, "both sockets should use the same Manager");
    assert.ok(a.io.engine.id, "engine id is set");
    assert.equal(a.io.engine.id, b.io.engine.id);

    // Both namespaces carry traffic independently over that connection.
    const peerA = await connected(client("/a"));
    const peerB = await connected(client("/b"));
    const roomA = freshRoom("nsa");
    const roomB = freshRoom("nsb");
    await join(a, roomA);
    await join(peerA, roomA);
    await join(b, roomB);
    await join(peerB, roomB);
    const gotA = peerA.inbox.next("hi");
    const gotB = peerB.inbox.next("hi");
    assert.deepEqual(await ack(a, "hi", "from /a"), { ok: true });
    assert.deepEqual(await ack(b, "hi", "from /b"), { ok: true });
    assert.deepEqual(await gotA, ["from /a"]);
    assert.deepEqual(await gotB, ["from /b"]);
    // Rooms are per namespace: /b's room is not in /a's list.
    const listA = await ack(a, "$rooms");
    assert.equal(listA.ok, true);
    assert.ok(listA.rooms.some((r) => r.room === roomA), `${roomA} missing from ${JSON.stringify(listA)}`);
    assert.ok(!listA.rooms.some((r) => r.room === roomB), `${roomB} (of /b) listed in /a: ${JSON.stringify(listA)}`);
  }));

  it("an unknown namespace gets CONNECT_ERROR while another namespace on the same Manager keeps working", withLogs(async () => {
    const manager = new Manager(relay.url, { reconnection: false });
    managers.push(manager);
    const good = attachInbox(manager.socket("/a"));
    sockets.push(good);
    await connected(good);
    const engineId = manager.engine.id;

    const bad = manager.socket("/no-such-namespace");
    sockets.push(bad);
    const err = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no connect_error for the unknown namespace")), WAIT_MS);
      bad.once("connect", () => {
        clearTimeout(timer);
        reject(new Error("the unknown namespace connected"));
      });
      bad.once("connect_error", (e) => {
        clearTimeout(timer);
        resolve(e);
      });
    });
    assert.equal(err.message, "Invalid namespace");
    assert.equal(bad.connected, false);

    // Same connection, still usable.
    assert.equal(good.connected, true);
    assert.equal(manager.engine.id, engineId);
    const peer = await connected(client("/a"));
    const room = freshRoom("after-error");
    await join(good, room);
    await join(peer, room);
    const got = peer.inbox.next("still");
    assert.deepEqual(await ack(good, "still", "alive"), { ok: true });
    assert.deepEqual(await got, ["alive"]);
  }));

  it("the CONNECT auth payload gives the member's user in $members", withLogs(async () => {
    const alice = await connected(client("/", { auth: { name: "alice", extra: "ignored" } }));
    const anon = await connected(client("/"));
    const room = freshRoom("members");
    await join(alice, room);
    await join(anon, room);
    const reply = await ack(anon, "$members", room);
    assert.equal(reply.ok, true, JSON.stringify(reply));
    assert.equal(reply.room, room);
    const byId = (x, y) => (x.id < y.id ? -1 : 1);
    assert.deepEqual(
      [...reply.members].sort(byId),
      [
        { id: alice.id, user: "alice" },
        { id: anon.id, user: null },
      ].sort(byId),
    );
  }));
});

// What the seed apps need from the relay, with the official socket.io-client against the
// real binary (one worker and two):
//
// - `announce = true`: the other sockets of the namespace get `$presence` with
//   "room": null, "join"/"leave" and the namespace's host-wide connection count, a
//   client on the other worker included (right-now's "someone connected");
// - `welcome = { event, args }`: each socket gets it right after connecting, before
//   anything relayed, next to `greet` (which carries the socket's own auth payload);
// - `meta = [...]`: the relay appends {"id","user","ip","time","origin"} to each relayed
//   event, text and binary, with ip from a trusted proxy's X-Forwarded-For; a per-event
//   `meta` overrides the namespace's; acks and `$` control replies carry none;
// - a reload (SIGHUP) that turns announce on: sockets connected before it count;
// - a worker killed with SIGKILL: the survivor announces its sockets' leaves.
//
// Every wait is for an event, an ack or a log line, bounded.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { bothWorkersLinked, startDaemon, stopDaemon, withLogs, workerSlots } from "../lib/admin.mjs";
import { TEST_TOKEN } from "../lib/spawn.mjs";
import { ack, connected, openClient, WAIT_MS } from "../lib/clients.mjs";
import { workerOf } from "../lib/workers.mjs";

const APP = "http://app.example:8080";
const CLIENT_IP = "203.0.113.7";

/** A daemon config with `workers` and the namespaces under test. */
function config(workers, { announce = true } = {}) {
  return `
[server]
workers = ${workers}
allowed_origins = ${JSON.stringify([APP])}
trusted_proxies = ["127.0.0.1/32"]

[namespaces."/live"]
route = "namespace"
announce = true
welcome = { event = "message", args = ["hello", { n = 1, list = [true, "x"] }] }
greet = "you"
meta = ["id", "user", "ip", "time", "origin"]

[namespaces."/live".events.view]
meta = ["ip", "time"]

[namespaces."/live".events.quiet]
meta = []

[namespaces."/live".events.back]
route = "sender"
ack = "echo"

[namespaces."/plain"]
route = "namespace"

[namespaces."/later"]
route = "namespace"
announce = ${announce}
`;
}

/** Send SIGHUP and wait for the daemon to say it applied the config. */
async function reload(daemon, text) {
  const from = daemon.mark();
  daemon.writeConfig(text);
  daemon.signal("SIGHUP");
  await daemon.waitForLog(/INFO.*configuration reloaded/, { from });
}

/** A connected client of `nsp` as user `name`, from CLIENT_IP through the proxy. */
async function live(daemon, sockets, name, opts = {}) {
  const socket = openClient(`${daemon.url}${opts.nsp ?? "/live"}`, sockets, {
    auth: { name },
    extraHeaders: { origin: APP, "x-forwarded-for": CLIENT_IP },
    ...opts,
  });
  await connected(socket);
  return socket;
}

/** The next namespace `$presence` with `action` about socket `id`. */
function announced(socket, action, id) {
  return socket.inbox.next("$presence", (p) => p?.room === null && p.action === action && p.id === id);
}

function closeAll(sockets) {
  for (const s of sockets.splice(0)) s.close();
}

describe("one worker", () => {
  let daemon;
  const sockets = [];
  const logs = (fn) => withLogs(() => daemon, fn);

  before(async () => {
    daemon = await startDaemon(config(1));
  });

  after(async () => {
    closeAll(sockets);
    await stopDaemon(daemon);
  });

  it("announces connections and leaves to the others with the live count", logs(async () => {
    const a = await live(daemon, sockets, "Ann");
    const b = await live(daemon, sockets, "Bob");
    const joined = await announced(a, "join", b.id);
    assert.deepEqual(joined, [{ room: null, action: "join", id: b.id, user: "Bob", count: 2 }]);
    assert.equal(b.inbox.all("$presence").filter(([p]) => p.id === b.id).length, 0, "not to itself");
    const bId = b.id;
    b.close();
    const left = await announced(a, "leave", bId);
    assert.deepEqual(left, [{ room: null, action: "leave", id: bId, user: "Bob", count: 1 }]);
    // Not a room: $rooms does not list the relay's own.
    assert.deepEqual(await ack(a, "$rooms"), { ok: true, rooms: [] });
    // Nor does the server API, and a backend cannot put a socket in it.
    const api = async (method, path, body) => {
      const res = await fetch(`${daemon.adminUrl}/api/v1${path}`, {
        method,
        headers: { authorization: `Bearer ${TEST_TOKEN}`, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(WAIT_MS),
      });
      return { status: res.status, body: await res.json() };
    };
    const rooms = await api("GET", "/rooms?namespace=%2Flive");
    assert.equal(rooms.status, 200, JSON.stringify(rooms.body));
    assert.equal(JSON.stringify(rooms.body).includes("$"), false, JSON.stringify(rooms.body));
    const joined$ = await api("POST", `/sockets/${a.id}/join`, { namespace: "/live", room: "$namespace" });
    assert.equal(joined$.status, 400, JSON.stringify(joined$.body));
    a.close();
  }));

  it("greets each socket with the welcome first, then greet, before anything relayed", logs(async () => {
    const a = await live(daemon, sockets, "Ann");
    const [hello, extra] = await a.inbox.next("message");
    assert.equal(hello, "hello");
    assert.deepEqual(extra, { n: 1, list: [true, "x"] });
    await a.inbox.next("you");
    const names = a.inbox.names();
    assert.equal(names[0], "message", `the welcome first: ${names}`);
    // A namespace without welcome sends none.
    const p = await live(daemon, sockets, "Pat", { nsp: "/plain" });
    assert.deepEqual(await ack(p, "ping", 1), { ok: true });
    assert.deepEqual(p.inbox.names(), []);
    a.close();
    p.close();
  }));

  it("appends the sender's metadata to text and binary events, per-event meta overriding", logs(async () => {
    const a = await live(daemon, sockets, "Ann");
    const b = await live(daemon, sockets, "Bob");
    const before = Date.now();
    assert.deepEqual(await ack(a, "hit", "/page", { x: 1 }), { ok: true });
    const [url, data, meta] = await b.inbox.next("hit");
    const after = Date.now();
    assert.equal(url, "/page");
    assert.deepEqual(data, { x: 1 });
    assert.deepEqual(Object.keys(meta), ["id", "user", "ip", "time", "origin"]);
    assert.equal(meta.id, a.id);
    assert.equal(meta.user, "Ann");
    assert.equal(meta.ip, CLIENT_IP, "the client behind the trusted proxy");
    assert.equal(meta.origin, APP);
    assert.ok(meta.time >= before - 1000 && meta.time <= after + 1000, `time ${meta.time} near ${before}..${after}`);

    // Binary: the attachments stay where they were, the object comes after them.
    a.emit("blob", Buffer.from([1, 2, 3]), { name: "f" }, Buffer.from([4]));
    const [one, named, two, bmeta] = await b.inbox.next("blob");
    assert.deepEqual([...one], [1, 2, 3]);
    assert.deepEqual(named, { name: "f" });
    assert.deepEqual([...two], [4]);
    assert.equal(bmeta.id, a.id);
    assert.equal(bmeta.ip, CLIENT_IP);

    a.emit("view", "/x");
    const [, vmeta] = await b.inbox.next("view");
    assert.deepEqual(Object.keys(vmeta), ["ip", "time"], "the event's meta, not the namespace's");
    a.emit("quiet", "/y");
    assert.deepEqual(await b.inbox.next("quiet"), ["/y"], "meta = [] appends nothing");

    // Acks are the relay's own: no metadata in them.
    assert.deepEqual(await ack(a, "back", "z"), "z");
    const [echoed, echoMeta] = await a.inbox.next("back");
    assert.equal(echoed, "z");
    assert.equal(echoMeta.id, a.id, "the relayed copy carries it");
    a.close();
    b.close();
  }));

  it("a reload that turns announce on counts the sockets connected before it", logs(async () => {
    await reload(daemon, config(1, { announce: false }));
    const a = await live(daemon, sockets, "Ann", { nsp: "/later" });
    const b = await live(daemon, sockets, "Bob", { nsp: "/later" });
    // Nothing announced with announce off: an event b sent after connecting reaches a
    // alone.
    assert.deepEqual(await ack(b, "m", 1), { ok: true });
    await a.inbox.next("m");
    assert.deepEqual(a.inbox.all("$presence"), []);
    await reload(daemon, config(1));
    const c = await live(daemon, sockets, "Cid", { nsp: "/later" });
    assert.deepEqual(await announced(a, "join", c.id), [{ room: null, action: "join", id: c.id, user: "Cid", count: 3 }]);
    a.close();
    b.close();
    c.close();
  }));
});

describe("two workers", () => {
  let daemon;
  const sockets = [];
  const logs = (fn) => withLogs(() => daemon, fn);

  before(async () => {
    daemon = await startDaemon(config(2));
    await bothWorkersLinked(daemon);
  });

  after(async () => {
    closeAll(sockets);
    await stopDaemon(daemon);
  });

  // WebSocket only: a connection then stays on the worker that accepted it (a polling
  // session's upgrade may pass through the other worker, which the kill below would cut).
  const live2 = (d, list, name) => live(d, list, name, { transports: ["websocket"] });

  it("counts and announces across workers, relays metadata from the other worker, announces a dead worker's sockets as gone", logs(async () => {
    // Connections spread over both workers; keep connecting until one is on the other.
    const first = await live2(daemon, sockets, "Ann");
    const firstWorker = workerOf(first.io.engine.id);
    const open = [first];
    let other;
    for (let i = 0; i < 32 && !other; i++) {
      const s = await live2(daemon, sockets, `Bob${i}`);
      open.push(s);
      if (workerOf(s.io.engine.id) !== firstWorker) other = s;
    }
    assert.ok(other, "a connection on the other worker within 32 tries");
    const [joined] = await announced(first, "join", other.id);
    assert.ok(joined.count >= 2 && joined.count <= open.length, JSON.stringify(joined));

    // Metadata of an event from the other worker; and an event each way, so that each
    // worker has applied everything the other one published before it (a link is in order).
    other.emit("hit", "/across");
    const [, meta] = await first.inbox.next("hit", (u) => u === "/across");
    assert.equal(meta.id, other.id);
    assert.equal(meta.ip, CLIENT_IP);
    assert.equal(meta.user, other.auth.name);
    first.emit("hit", "/back");
    await other.inbox.next("hit", (u) => u === "/back");

    // Now the count is exact on either worker: every socket of the host.
    const third = await live2(daemon, sockets, "Cid");
    open.push(third);
    const [seen] = await announced(first, "join", third.id);
    const [seenThere] = await announced(other, "join", third.id);
    assert.equal(seen.count, open.length, JSON.stringify(seen));
    assert.equal(seenThere.count, open.length);

    third.emit("hit", "/sync");
    await Promise.all([first, other].map((s) => s.inbox.next("hit", (u) => u === "/sync")));
    const otherId = other.id;
    other.close();
    const [left] = await announced(first, "leave", otherId);
    assert.equal(left.count, open.length - 1, JSON.stringify(left));
    open.splice(open.indexOf(other), 1);

    // A worker that dies says nothing: the survivor announces the leaves of its sockets.
    const victimWorker = 1 - firstWorker;
    let victim;
    for (let i = 0; i < 32 && !victim; i++) {
      const s = await live2(daemon, sockets, `Dee${i}`);
      open.push(s);
      if (workerOf(s.io.engine.id) === victimWorker) victim = s;
    }
    assert.ok(victim, "a connection on the other worker within 32 tries");
    victim.emit("hit", "/last");
    await first.inbox.next("hit", (u) => u === "/last");
    const onVictim = open.filter((s) => workerOf(s.io.engine.id) === victimWorker);
    const victimIds = onVictim.map((s) => s.id);
    const slot = workerSlots(daemon).find((w) => w.worker === victimWorker);
    assert.ok(slot, JSON.stringify(workerSlots(daemon)));
    process.kill(slot.pid, "SIGKILL");
    const leaves = await Promise.all(victimIds.map((id) => announced(first, "leave", id)));
    const survivors = open.length - onVictim.length;
    const last = Math.min(...leaves.map(([p]) => p.count));
    assert.equal(last, survivors, JSON.stringify(leaves));
  }));
});

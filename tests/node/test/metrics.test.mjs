// The admin listener: /healthz, /readyz, and /metrics as Prometheus scrapes it. The
// exposition must pass `promtool check metrics` (Debian's `prometheus` package; the
// test fails, not skips, without it), and the numbers must add up to what the clients
// did: sessions accepted by transport and closed, sockets connected per namespace,
// events received, delivered and refused, rooms, bytes. No label may carry a room or a
// socket id (unbounded sets).
//
// One daemon for the file; counters only grow, so each test reads a baseline and checks
// the difference, and uses its own namespace where the counter is per namespace.
// Nothing sleeps: a value that lands just after what the client can observe (a
// session's close, a room emptied by a disconnect) is waited for by scraping again.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { io } from "socket.io-client";
import { startDaemon, withLogs, scrape, waitForMetric, get } from "../lib/admin.mjs";

const WAIT_MS = 5000;

const CONFIG = `
# Connections and transports.
[namespaces."/"]

# Events: to the other members of the sender's rooms, no echo, no presence (so that
# every delivered copy is one of the test's events).
[namespaces."/chat"]
join = "any"
route = "rooms"
echo = false
presence = false

# Rate limiting: one event a second, accepted events go nowhere.
[namespaces."/rate"]
route = "discard"
[namespaces."/rate".limits]
events_per_second = 1
burst = 1
`;

let daemon;
const sockets = [];
// Every room name and socket id the tests used, to look for in label values.
const roomsUsed = new Set();
const idsUsed = new Set();

const logs = (fn) => withLogs(() => daemon, fn);

before(async () => {
  daemon = await startDaemon(CONFIG);
});

afterEach(() => {
  while (sockets.length) sockets.pop().disconnect();
});

after(async () => {
  while (sockets.length) sockets.pop().disconnect();
  await daemon?.stop();
});

/** Run `promtool check metrics` on an exposition; fails with promtool's complaints. */
function assertPromtoolClean(text, what) {
  const run = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
  if (run.error?.code === "ENOENT") {
    assert.fail(
      "promtool is not installed (it is not on PATH). It comes with Debian's prometheus package: " +
        "apt-get install -y --no-install-recommends prometheus",
    );
  }
  if (run.error) throw run.error;
  const said = `${run.stdout}${run.stderr}`.trim();
  assert.equal(run.status, 0, `promtool check metrics failed on ${what} (exit ${run.status}):\n${said}\n--- exposition:\n${text}`);
  assert.equal(said, "", `promtool check metrics complained about ${what}:\n${said}\n--- exposition:\n${text}`);
}

/** A connected client socket; its engine id and socket id are remembered. */
async function connect(nsp, opts = {}) {
  const socket = io(`${daemon.url}${nsp}`, { forceNew: true, reconnection: false, timeout: WAIT_MS, ...opts });
  sockets.push(socket);
  await new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", (err) => reject(new Error(`connect_error on ${nsp}: ${err.message}`)));
  });
  idsUsed.add(socket.id);
  idsUsed.add(socket.io.engine.id);
  return socket;
}

/** Resolve when the socket is told it is disconnected. */
function disconnected(socket) {
  return new Promise((resolve) => {
    if (!socket.connected) resolve();
    else socket.once("disconnect", resolve);
  });
}

function ack(socket, event, ...args) {
  return socket.timeout(WAIT_MS).emitWithAck(event, ...args);
}

async function join(socket, room) {
  roomsUsed.add(room);
  const reply = await ack(socket, "$join", room);
  assert.equal(reply.ok, true, `$join ${room}: ${JSON.stringify(reply)}`);
  return reply;
}

/** Differences between two scrapes, for one metric and label set. */
function delta(before, after, name, labels = {}) {
  return after.value(name, labels) - before.value(name, labels);
}

describe("admin listener", () => {
  it("/healthz and /readyz answer 200 while serving; unknown paths 404", logs(async () => {
    for (const path of ["/healthz", "/readyz"]) {
      const res = await get(daemon.adminUrl + path);
      assert.equal(res.status, 200, `admin ${path}: ${res.status} ${res.text}`);
    }
    assert.equal((await get(`${daemon.url}/healthz`)).status, 200, "public /healthz");
    assert.equal((await get(`${daemon.adminUrl}/no-such-thing`)).status, 404);
  }));

  it("/metrics is Prometheus text that promtool accepts", logs(async () => {
    const res = await get(`${daemon.adminUrl}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") || "", /^text\/plain; version=0\.0\.4/);
    assertPromtoolClean(res.text, "a fresh daemon's /metrics");
    const m = await scrape(daemon);
    assert.equal(m.value("iorelay_config_reloads_total"), 0);
    assert.equal(m.value("iorelay_config_reload_failures_total"), 0);
    assert.equal(m.value("iorelay_connections"), 0, "connections before any client");
  }));
});

describe("metrics add up", () => {
  it("5 connects and disconnects: accepted by transport, sessions closed, connections back to 0", logs(async () => {
    const before = await scrape(daemon);
    // Handshake transports: websocket ×2, polling ×3 (one of which upgrades to websocket).
    const ws = await Promise.all([1, 2].map(() => connect("/", { transports: ["websocket"] })));
    const polling = await Promise.all([1, 2].map(() => connect("/", { transports: ["polling"] })));
    const upgrading = await connect("/", { transports: ["polling", "websocket"], upgrade: true });
    if (upgrading.io.engine.transport.name !== "websocket") {
      await new Promise((resolve) => upgrading.io.engine.once("upgrade", resolve));
    }
    const all = [...ws, ...polling, upgrading];

    // The upgrade moves the socket from polling to websocket once the server has it.
    const during = await waitForMetric(
      daemon, "iorelay_connections", { namespace: "/", transport: "websocket" }, (v) => v === 3, WAIT_MS,
      "sockets on / counted under websocket after the upgrade",
    );
    assert.equal(during.value("iorelay_connections", { namespace: "/", transport: "polling" }), 2);
    assert.equal(delta(before, during, "iorelay_connections_accepted_total", { transport: "websocket" }), 2);
    assert.equal(delta(before, during, "iorelay_connections_accepted_total", { transport: "polling" }), 3);
    assert.equal(during.value("iorelay_engine_sessions", { transport: "websocket" }), 3);
    assert.equal(during.value("iorelay_engine_sessions", { transport: "polling" }), 2);

    for (const s of all) s.disconnect();
    const after = await waitForMetric(
      daemon, "iorelay_engine_sessions_closed_total", {}, (v) => v - before.value("iorelay_engine_sessions_closed_total") >= 5,
      WAIT_MS, "sessions closed after 5 disconnects",
    );
    assert.equal(delta(before, after, "iorelay_engine_sessions_closed_total"), 5, "closed sessions, all reasons");
    assert.equal(delta(before, after, "iorelay_engine_sessions_closed_total", { reason: "client_close" }), 5);
    const settled = await waitForMetric(daemon, "iorelay_connections", { namespace: "/" }, (v) => v === 0, WAIT_MS, "connections on /");
    for (const transport of ["websocket", "polling"]) {
      assert.equal(settled.value("iorelay_connections", { namespace: "/", transport }), 0, `connections on / over ${transport}`);
      assert.equal(settled.value("iorelay_engine_sessions", { transport }), 0, `open sessions over ${transport}`);
      assert.ok(delta(before, settled, "iorelay_received_bytes_total", { transport }) > 0, `bytes received over ${transport}`);
      assert.ok(delta(before, settled, "iorelay_sent_bytes_total", { transport }) > 0, `bytes sent over ${transport}`);
    }
  }));

  it("events: received (joins included) and delivered copies match what the clients sent", logs(async () => {
    const [a, b] = await Promise.all([connect("/chat", { transports: ["websocket"] }), connect("/chat", { transports: ["polling"] })]);
    const room = `metrics-events-${process.pid}`;
    const before = await scrape(daemon);
    await join(a, room);
    await join(b, room);
    const got = [];
    const three = new Promise((resolve) => {
      b.on("tick", (n) => {
        got.push(n);
        if (got.length === 3) resolve();
      });
    });
    for (const n of [1, 2, 3]) assert.deepEqual(await ack(a, "tick", n), { ok: true });
    await three;
    const after = await scrape(daemon);
    assert.deepEqual(got, [1, 2, 3]);
    assert.equal(delta(before, after, "iorelay_events_received_total", { namespace: "/chat" }), 2 + 3, "2 $join + 3 events");
    assert.equal(delta(before, after, "iorelay_events_delivered_total", { namespace: "/chat" }), 3, "one copy of each event, to b");
    assert.equal(delta(before, after, "iorelay_events_refused_total", { namespace: "/chat" }), 0);
    assert.equal(after.value("iorelay_connections", { namespace: "/chat" }), 2);
  }));

  it("rooms follow joins, leaves and disconnects", logs(async () => {
    const [a, b] = await Promise.all([connect("/chat"), connect("/chat")]);
    const [r1, r2] = [`metrics-rooms-1-${process.pid}`, `metrics-rooms-2-${process.pid}`];
    const rooms = async () => (await scrape(daemon)).value("iorelay_rooms", { namespace: "/chat" });
    assert.equal(await rooms(), 0, "rooms on /chat before any join");
    await join(a, r1);
    assert.equal(await rooms(), 1, "after a joins r1");
    await join(a, r2);
    assert.equal(await rooms(), 2, "after a joins r2");
    await join(b, r1);
    assert.equal(await rooms(), 2, "after b joins r1 too");
    assert.deepEqual(await ack(a, "$leave", r2), { ok: true, room: r2, count: 0 });
    assert.equal(await rooms(), 1, "after a leaves r2, its only member");
    assert.deepEqual(await ack(a, "$leave", r1), { ok: true, room: r1, count: 1 });
    assert.equal(await rooms(), 1, "after a leaves r1, b still in it");
    const gone = disconnected(b);
    b.disconnect();
    await gone;
    await waitForMetric(daemon, "iorelay_rooms", { namespace: "/chat" }, (v) => v === 0, WAIT_MS, "rooms after the last member disconnected");
  }));

  it("refusals by the rate limit are counted under reason rate_limited", logs(async () => {
    const a = await connect("/rate");
    const before = await scrape(daemon);
    // events_per_second = 1, burst = 1: of five back-to-back events most are refused.
    const replies = await Promise.all([1, 2, 3, 4, 5].map((n) => ack(a, "tick", n)));
    const refused = replies.filter((r) => r.ok === false);
    const accepted = replies.filter((r) => r.ok === true);
    assert.equal(refused.length + accepted.length, 5, JSON.stringify(replies));
    assert.ok(refused.length >= 3, `expected at least 3 refusals: ${JSON.stringify(replies)}`);
    for (const r of refused) assert.equal(r.error, "rate limit exceeded", JSON.stringify(r));
    const after = await scrape(daemon);
    assert.equal(
      delta(before, after, "iorelay_events_refused_total", { namespace: "/rate", reason: "rate_limited" }),
      refused.length,
      `refusals counted vs acks ${JSON.stringify(replies)}`,
    );
    assert.equal(delta(before, after, "iorelay_events_refused_total", { namespace: "/rate" }), refused.length, "refusals under other reasons");
    assert.equal(delta(before, after, "iorelay_events_received_total", { namespace: "/rate" }), 5, "received, refused ones included");
    assert.equal(delta(before, after, "iorelay_events_delivered_total", { namespace: "/rate" }), 0, "route discard delivers nothing");
  }));

  it("no label names a room or a socket, and the exposition still passes promtool", logs(async () => {
    // Clients in rooms right now, so that per-room or per-socket series would show.
    const [a, b] = await Promise.all([connect("/chat"), connect("/", { transports: ["polling"] })]);
    await join(a, `metrics-labels-${process.pid}`);
    await join(b, `metrics-labels-root-${process.pid}`);
    const m = await scrape(daemon);
    const forbidden = new Set(["room", "rooms", "sid", "socket", "socket_id", "id", "user", "client", "ip", "addr", "remote"]);
    for (const s of m.samples) {
      for (const [k, v] of Object.entries(s.labels)) {
        assert.ok(!forbidden.has(k), `${s.name} has a "${k}" label`);
        assert.ok(!roomsUsed.has(v), `${s.name}{${k}="${v}"}: a room name as a label value`);
        assert.ok(!idsUsed.has(v), `${s.name}{${k}="${v}"}: a socket or session id as a label value`);
      }
    }
    assertPromtoolClean(m.text, "/metrics after traffic");
  }));
});

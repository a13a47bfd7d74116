// Attacks on the relay's bounds (issue 13): what one hostile client can make the relay do
// or keep, measured where the bound shows (deliveries counted at a witness, sessions and
// refusals from /metrics), with an honest socket.io-client beside the attacker that keeps
// working.
//
// The attacker speaks raw Engine.IO (tests/node/lib/raw.mjs) where socket.io-client cannot
// express the attack. Nothing sleeps and hopes: every step waits for a frame, an event or
// a metric value, bounded by WAIT_MS.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { connect as tcpConnect } from "node:net";
import { request as httpRequest } from "node:http";
import { io } from "socket.io-client";
import { startDaemon, stopDaemon, scrape, waitForMetric, runCli } from "../lib/admin.mjs";
import { TEST_TOKEN } from "../lib/spawn.mjs";
import { rawEngineIO, withTimeout } from "../lib/raw.mjs";

const WAIT_MS = 5000;

const CONFIG = `
[server]
workers = 1

[engine]
# Long, so that a stalled upgrade cannot end by its own timeout within a test.
upgrade_timeout = "60s"

# Item 1: one event a second, three in a burst, every event to the whole namespace.
[namespaces."/r"]
route = "namespace"
echo = false
presence = false
[namespaces."/r".limits]
events_per_second = 1
burst = 3

# Item 3: binary events up to 64 KB (the default), ten attachments at most.
[namespaces."/b"]
route = "namespace"
echo = false
presence = false
[namespaces."/b".limits]
max_attachments = 10

# Item 9: the default depth limit (32).
[namespaces."/d"]
route = "namespace"
echo = false
presence = false
`;

let daemon;
let raw;
const sockets = [];

before(async () => {
  daemon = await startDaemon(CONFIG);
  raw = rawEngineIO({ base: () => `${daemon.url}/socket.io/`, waitMs: WAIT_MS, handshake: {} });
});

after(async () => {
  await stopDaemon(daemon);
});

afterEach(() => {
  while (sockets.length) sockets.pop().disconnect();
  raw.terminateAll();
});

/** A connected socket.io-client on `nsp`. */
async function honest(nsp) {
  const socket = io(daemon.url + nsp, { forceNew: true, reconnection: false });
  sockets.push(socket);
  await withTimeout(
    new Promise((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("connect_error", reject);
    }),
    WAIT_MS,
    `connect to ${nsp}`,
  );
  return socket;
}

/** Resolve with the arguments of the next `event` on `socket` matching `pred`. */
function nextEvent(socket, event, pred = () => true) {
  return withTimeout(
    new Promise((resolve) => {
      const listener = (...args) => {
        if (!pred(...args)) return;
        socket.off(event, listener);
        resolve(args);
      };
      socket.on(event, listener);
    }),
    WAIT_MS,
    `event ${event}`,
  );
}

/** A raw WebSocket session (its OPEN packet consumed). */
async function rawWs() {
  const peer = new raw.Peer(`${daemon.url.replace(/^http/, "ws")}/socket.io/?EIO=4&transport=websocket`);
  const open = await peer.nextPacket("the OPEN packet");
  assert.match(open, /^0\{/);
  return peer;
}

/** The next Socket.IO packet (text, "4" stripped) from `peer`, pings answered. */
async function nextSio(peer, what) {
  const frame = await peer.nextPacket(what);
  assert.equal(typeof frame, "string", `${what}: ${frame}`);
  assert.equal(frame[0], "4", `${what}: ${frame}`);
  return frame.slice(1);
}

/**
 * The reply to a CONNECT to `nsp` (CONNECT or CONNECT_ERROR, "4" stripped); the events
 * before it (refusals of earlier events) are skipped.
 */
async function connectReply(peer, nsp, what) {
  for (;;) {
    const packet = await nextSio(peer, what);
    if (packet.startsWith(`0${nsp},`) || packet.startsWith(`4${nsp},`)) return packet;
  }
}

describe("item 1: reconnecting a namespace does not refill its rate limit", () => {
  it("bounds the deliveries of a CONNECT, EVENT, DISCONNECT loop", async () => {
    const witness = await honest("/r");
    const sender = await honest("/r");
    const seen = [];
    witness.on("x", (v) => seen.push(v));
    const before = (await scrape(daemon)).value("iorelay_events_refused_total", { namespace: "/r", reason: "rate_limited" });

    const attacker = await rawWs();
    const started = Date.now();
    const LOOPS = 20;
    let refusedConnects = 0;
    for (let i = 0; i < LOOPS; i++) {
      attacker.send("40/r,");
      const reply = await connectReply(attacker, "/r", `CONNECT reply ${i}`);
      if (reply.startsWith("4/r,")) {
        assert.deepEqual(JSON.parse(reply.slice(4)), { message: "rate limit exceeded" });
        refusedConnects++;
        continue;
      }
      assert.match(reply, /^0\/r,\{/, `CONNECT reply ${i}`);
      attacker.send(`42/r,["x",${i}]`);
      attacker.send("41/r,");
    }
    // Everything the attacker sent was handled before this CONNECT's reply.
    attacker.send("40/r,");
    await connectReply(attacker, "/r", "the last CONNECT reply");
    const elapsed = (Date.now() - started) / 1000;
    // The honest sender has its own budget: its event arrives after the attacker's.
    sender.emit("x", "honest");
    await nextEvent(witness, "x", (v) => v === "honest");

    const fromAttacker = seen.filter((v) => v !== "honest").length;
    // Burst 3 plus one a second (CONNECTs have a bucket of the same size of their own).
    const bound = 3 + Math.ceil(elapsed) + 1;
    assert.ok(fromAttacker <= bound, `${fromAttacker} of ${LOOPS} attacker events delivered in ${elapsed}s (bound ${bound})`);
    assert.ok(refusedConnects > 0, "no CONNECT was refused");
    await waitForMetric(
      daemon,
      "iorelay_events_refused_total",
      { namespace: "/r", reason: "rate_limited" },
      (v) => v > before,
      WAIT_MS,
      "rate-limited refusals",
    );
  });
});

describe("item 1: an address's connections share one event budget", () => {
  let guarded;
  before(async () => {
    guarded = await startDaemon(`
[server]
workers = 1
trusted_proxies = ["127.0.0.1/32"]
events_per_ip_per_second = 2
event_burst_per_ip = 5
[namespaces."/r"]
route = "namespace"
echo = false
presence = false
[namespaces."/r".limits]
events_per_second = 100
burst = 100
`);
  });
  after(async () => {
    await stopDaemon(guarded);
  });

  /** A socket.io-client on /r as the client address `ip` (through the trusted proxy). */
  async function clientAs(ip) {
    const socket = io(`${guarded.url}/r`, {
      forceNew: true,
      reconnection: false,
      transports: ["websocket"],
      extraHeaders: { "X-Forwarded-For": ip },
    });
    sockets.push(socket);
    await withTimeout(
      new Promise((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("connect_error", reject);
      }),
      WAIT_MS,
      `connect as ${ip}`,
    );
    return socket;
  }

  it("bounds what many connections from one address deliver, not others' events", async () => {
    const witness = await clientAs("10.0.1.1");
    const seen = [];
    witness.on("x", (v) => seen.push(v));
    const attackers = [];
    for (let i = 0; i < 10; i++) attackers.push(await clientAs("10.0.1.9"));
    const before = (await scrape(guarded)).value("iorelay_events_refused_total", { namespace: "/r", reason: "ip_rate_limited" });
    const started = Date.now();
    // Each connection stays far within its own socket limit (5 of a burst of 100).
    const replies = await Promise.all(
      attackers.flatMap((socket, c) =>
        [0, 1, 2, 3, 4].map((n) => socket.timeout(WAIT_MS).emitWithAck("x", `${c}.${n}`)),
      ),
    );
    const elapsed = (Date.now() - started) / 1000;
    const refused = replies.filter((r) => r && r.ok === false);
    assert.ok(refused.length > 0, "no event was refused");
    for (const r of refused) assert.equal(r.error, "rate limit exceeded");
    // Another address has a budget of its own: its event arrives after every attacker event.
    const honestSender = await clientAs("10.0.1.2");
    honestSender.emit("x", "honest");
    await nextEvent(witness, "x", (v) => v === "honest");
    const fromAttacker = seen.filter((v) => v !== "honest").length;
    const bound = 5 + Math.ceil(elapsed * 2) + 1;
    assert.ok(fromAttacker <= bound, `${fromAttacker} of 50 events from one address delivered in ${elapsed}s (bound ${bound})`);
    assert.equal(fromAttacker, 50 - refused.length, "every event not refused was delivered");
    const after = (await scrape(guarded)).value("iorelay_events_refused_total", { namespace: "/r", reason: "ip_rate_limited" });
    assert.equal(after - before, refused.length);
  });
});

describe("item 9: deep JSON is not relayed", () => {
  it("refuses an event nested deeper than max_depth and relays one at the limit", async () => {
    const witness = await honest("/d");
    const sender = await honest("/d");
    const seen = [];
    witness.on("x", (v) => seen.push(v));
    const attacker = await rawWs();
    attacker.send("40/d,");
    assert.match(await nextSio(attacker, "CONNECT reply"), /^0\/d,\{/);

    const deep = `${"[".repeat(10000)}${"]".repeat(10000)}`;
    attacker.send(`42/d,["x",${deep}]`);
    const reply = await nextSio(attacker, "the refusal");
    assert.equal(reply.slice(0, 5), "2/d,[");
    assert.deepEqual(JSON.parse(reply.slice(4)), ["$error", { event: "x", error: "event nested too deeply" }]);

    // At the limit: the arguments array is level 1, so 31 more levels pass.
    let atLimit = "end";
    for (let i = 0; i < 31; i++) atLimit = [atLimit];
    sender.emit("x", atLimit);
    await nextEvent(witness, "x");
    assert.equal(seen.length, 1, "only the honest event reached the witness");
    assert.deepEqual(seen[0], atLimit);
    const metrics = await scrape(daemon);
    assert.ok(metrics.value("iorelay_events_refused_total", { namespace: "/d", reason: "too_deep" }) >= 1);
  });
});

describe("item 4: a stalled upgrade ends with its session", () => {
  it("closes the probing WebSocket when the polling session closes", async () => {
    const witness = await honest("/d");
    const sessions = () => scrape(daemon).then((m) => m.value("iorelay_engine_sessions"));
    const baseline = await sessions();
    const sid = await raw.openPollingSession();
    const ws = new raw.Peer(
      `${daemon.url.replace(/^http/, "ws")}/socket.io/?EIO=4&transport=websocket&sid=${encodeURIComponent(sid)}`,
    );
    await ws.opened;
    ws.send("2probe");
    assert.equal(await ws.next("the probe answer"), "3probe");
    const closed = await raw.push(sid, "1");
    assert.equal(closed.status, 200);
    // The attacker keeps probing; the server must end the WebSocket all the same.
    const prober = setInterval(() => {
      if (!ws.closed) ws.send("2probe");
    }, 50);
    try {
      await ws.waitClosed(WAIT_MS);
    } finally {
      clearInterval(prober);
    }
    await waitForMetric(daemon, "iorelay_engine_sessions", {}, (v) => v <= baseline, WAIT_MS, "sessions");
    assert.ok((await sessions()) <= baseline);
    // The honest client beside it still works.
    const echo = await honest("/d");
    echo.emit("x", "still here");
    assert.deepEqual(await nextEvent(witness, "x"), ["still here"]);
  });
});

/** The daemon's resident memory, in KiB (workers = 1: one process). */
function rssKib(pid) {
  const line = readFileSync(`/proc/${pid}/status`, "utf8").match(/^VmRSS:\s+(\d+) kB/m);
  assert.ok(line, `no VmRSS for pid ${pid}`);
  return Number(line[1]);
}

/** A binary event announcing `n` attachments on `nsp`. */
function announce(nsp, n) {
  const placeholders = Array.from({ length: n }, (_, i) => `{"_placeholder":true,"num":${i}}`).join(",");
  return `45${n}-${nsp},["x",${placeholders}]`;
}

/** An open polling session and its sid, on `daemon`'s /socket.io/. */
async function pollingSid(target) {
  const res = await fetch(`${target.url}/socket.io/?EIO=4&transport=polling`);
  const body = await res.text();
  assert.equal(res.status, 200, body);
  return JSON.parse(body.slice(1)).sid;
}

/**
 * A polling POST on its own TCP connection that sends its headers (Content-Length
 * `length`) and `first` bytes of the body, then stalls. `response` resolves with the
 * status line's code once the server answers or closes (null when it closes silently).
 */
function stalledPost(target, sid, length, first) {
  const socket = tcpConnect(Number(new URL(target.url).port), "127.0.0.1");
  let text = "";
  socket.setEncoding("utf8");
  socket.on("data", (d) => (text += d));
  socket.on("error", () => {});
  const written = new Promise((resolve) => socket.once("connect", resolve)).then(
    () =>
      new Promise((resolve) =>
        socket.write(
          `POST /socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(sid)} HTTP/1.1\r\n` +
            `Host: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: ${length}\r\n\r\n${"4".repeat(first)}`,
          resolve,
        ),
      ),
  );
  const closed = new Promise((resolve) => socket.once("close", resolve));
  const response = closed.then(() => {
    const m = text.match(/^HTTP\/1\.1 (\d+)/);
    return m ? Number(m[1]) : null;
  });
  return { written, response, answered: () => text.length > 0, destroy: () => socket.destroy() };
}

describe("item 3: memory a single client can pin", () => {
  it("drops the attachments of a binary packet as soon as they exceed max_event_size", async () => {
    const witness = await honest("/b");
    const received = async () =>
      (await scrape(daemon)).value("iorelay_received_bytes_total", { transport: "websocket" });
    const ATTACKERS = 6;
    const PART = 900_000;
    const peers = [];
    for (let i = 0; i < ATTACKERS; i++) {
      const peer = await rawWs();
      peer.send("40/b,");
      assert.match(await connectReply(peer, "/b", "CONNECT reply"), /^0\/b,\{/);
      peers.push(peer);
    }
    const baseline = rssKib(daemon.pid);
    const bytesBefore = await received();
    // Ten attachments announced, nine sent (8 MB per attacker), never the last.
    for (const peer of peers) {
      peer.send(announce("/b", 10));
      for (let i = 0; i < 9; i++) peer.send(Buffer.alloc(PART, i + 1));
    }
    const sent = ATTACKERS * 9 * PART;
    await waitForMetric(daemon, "iorelay_received_bytes_total", { transport: "websocket" }, (v) => v >= bytesBefore + sent, 20000, "the attachments read");
    const grown = (rssKib(daemon.pid) - baseline) * 1024;
    console.log(`RSS grew by ${grown} bytes while ${sent} bytes of incomplete packets were sent`);
    assert.ok(grown < sent / 2, `RSS grew by ${grown} bytes for ${sent} bytes of incomplete packets`);
    // The last attachment completes the packet, refused as too large.
    peers[0].send(Buffer.from([1]));
    const refusal = await nextSio(peers[0], "the refusal");
    assert.deepEqual(JSON.parse(refusal.slice(4)), ["$error", { event: "x", error: "event too large" }]);
    // An honest binary event beside them still goes through.
    const sender = await honest("/b");
    sender.emit("x", Buffer.from([1, 2, 3]));
    const [got] = await nextEvent(witness, "x");
    assert.deepEqual(Buffer.from(got), Buffer.from([1, 2, 3]));
  });

  it("refuses a CONNECT whose auth payload is over max_auth_size", async () => {
    const attacker = await rawWs();
    attacker.send(`40/b,${JSON.stringify({ pad: "x".repeat(20_000) })}`);
    const reply = await connectReply(attacker, "/b", "the CONNECT reply");
    assert.equal(reply.slice(0, 4), "4/b,", `CONNECT_ERROR expected, got ${reply.slice(0, 80)}`);
    assert.deepEqual(JSON.parse(reply.slice(4)), { message: "auth payload too large" });
    // A token-sized auth is fine.
    const socket = io(daemon.url + "/b", { forceNew: true, reconnection: false, auth: { token: "t".repeat(2000) } });
    sockets.push(socket);
    await withTimeout(new Promise((resolve, reject) => { socket.once("connect", resolve); socket.once("connect_error", reject); }), WAIT_MS, "an honest connect");
  });

  it("refuses a second POST while one is still being read, with 400, and ends the session", async () => {
    const sid = await pollingSid(daemon);
    const slow = stalledPost(daemon, sid, 100_000, 10);
    await slow.written;
    // A round trip on another connection, so that the server has taken up the stalled
    // POST first (nothing on the wire says when it has).
    await pollingSid(daemon);
    const overlap = await fetch(`${daemon.url}/socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(sid)}`, {
      method: "POST",
      body: "40",
    });
    assert.equal(overlap.status, 400, `the overlapping POST answered ${overlap.status}`);
    const next = await fetch(`${daemon.url}/socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(sid)}`);
    assert.equal(next.status, 400, "the session must be gone");
    slow.destroy();
  });
});

describe("item 3: deadlines (attachment_timeout, body_timeout)", () => {
  let quick;
  before(async () => {
    quick = await startDaemon(`
[server]
workers = 1
[engine]
attachment_timeout = "1s"
body_timeout = "1s"
pending_budget = "2MB"
[namespaces."/"]
route = "namespace"
[namespaces."/".limits]
max_event_size = "1MB"
`);
  });
  after(async () => {
    await stopDaemon(quick);
  });

  it("closes a connection whose binary packet never gets its last attachment", async () => {
    const quickRaw = rawEngineIO({ base: () => `${quick.url}/socket.io/`, waitMs: WAIT_MS, handshake: {} });
    try {
      const peer = new quickRaw.Peer(`${quick.url.replace(/^http/, "ws")}/socket.io/?EIO=4&transport=websocket`);
      assert.match(await peer.nextPacket("OPEN"), /^0\{/);
      peer.send("40");
      assert.match(await peer.nextPacket("CONNECT reply"), /^40\{/);
      peer.send(announce("", 2).replace("-,", "-"));
      peer.send(Buffer.alloc(1000));
      await peer.waitClosed(WAIT_MS, { pong: true });
    } finally {
      quickRaw.terminateAll();
    }
  });

  it("keeps the worker's incomplete binary packets within pending_budget", async () => {
    const quickRaw = rawEngineIO({ base: () => `${quick.url}/socket.io/`, waitMs: WAIT_MS, handshake: {} });
    try {
      const witness = io(quick.url, { forceNew: true, reconnection: false });
      sockets.push(witness);
      await withTimeout(new Promise((resolve) => witness.once("connect", resolve)), WAIT_MS, "the witness");
      const before = await scrape(quick);
      const peers = [];
      for (let i = 0; i < 3; i++) {
        const peer = new quickRaw.Peer(`${quick.url.replace(/^http/, "ws")}/socket.io/?EIO=4&transport=websocket`);
        assert.match(await peer.nextPacket("OPEN"), /^0\{/);
        peer.send("40");
        assert.match(await peer.nextPacket("CONNECT reply"), /^40\{/);
        peers.push(peer);
      }
      // Each holds 900 KB of a two-attachment packet: the third would pass 2 MB.
      for (const peer of peers) {
        peer.send(announce("", 2).replace("-,", "-"));
        peer.send(Buffer.alloc(900_000, 7));
      }
      // Whichever the server reads last is over the budget (the three race).
      await Promise.any(peers.map((p) => p.waitClosed(WAIT_MS, { pong: true })));
      const open = peers.filter((p) => !p.closed);
      assert.equal(open.length, 2, "the two within the budget stay");
      await waitForMetric(quick, "iorelay_events_refused_total", { namespace: "/", reason: "memory_budget" },
        (v) => v > before.value("iorelay_events_refused_total", { namespace: "/", reason: "memory_budget" }),
        WAIT_MS, "the refusal counted");
      // An honest binary event still gets through once one attacker has finished.
      open[0].send(Buffer.alloc(10));
      const sender = io(quick.url, { forceNew: true, reconnection: false });
      sockets.push(sender);
      await withTimeout(new Promise((resolve) => sender.once("connect", resolve)), WAIT_MS, "the sender");
      const got = nextEvent(witness, "y");
      sender.emit("y", Buffer.alloc(1000, 1));
      assert.equal(Buffer.from((await got)[0]).length, 1000);
    } finally {
      quickRaw.terminateAll();
    }
  });

  it("ends a polling POST whose body does not arrive within body_timeout", async () => {
    const sid = await pollingSid(quick);
    const slow = stalledPost(quick, sid, 100_000, 10);
    await slow.written;
    try {
      await withTimeout(slow.response, WAIT_MS, "the server to end the stalled POST");
    } finally {
      slow.destroy();
    }
    const next = await fetch(`${quick.url}/socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(sid)}`);
    assert.equal(next.status, 400, "the session must be gone");
  });
});

describe("item 2: handshake flood", () => {
  let guarded;
  before(async () => {
    guarded = await startDaemon(`
[server]
workers = 1
trusted_proxies = ["127.0.0.1/32"]
max_connections_per_ip = 5
handshakes_per_ip_per_second = 1
handshake_burst_per_ip = 10
[namespaces."/"]
`);
  });
  after(async () => {
    await stopDaemon(guarded);
  });

  /** A polling handshake as the client `ip` (through the trusted proxy); its status and sid. */
  async function handshakeAs(ip) {
    const res = await fetch(`${guarded.url}/socket.io/?EIO=4&transport=polling`, {
      headers: { "X-Forwarded-For": ip },
    });
    const body = await res.text();
    return { status: res.status, sid: res.status === 200 ? JSON.parse(body.slice(1)).sid : null, body };
  }

  it("caps the sessions of one client address; other addresses still connect", async () => {
    const before = await scrape(guarded);
    const logMark = guarded.logs().length;
    const started = Date.now();
    const statuses = [];
    for (let i = 0; i < 40; i++) statuses.push((await handshakeAs("10.0.0.1")).status);
    assert.equal(statuses.filter((s) => s === 200).length, 5, `statuses ${statuses}`);
    assert.ok(statuses.every((s) => s === 200 || s === 503), `statuses ${statuses}`);
    const after = await scrape(guarded);
    const refused = after.value("iorelay_connections_refused_total", { reason: "ip_sessions" }) -
      before.value("iorelay_connections_refused_total", { reason: "ip_sessions" });
    assert.equal(refused, 35);
    assert.ok(after.value("iorelay_engine_sessions") - before.value("iorelay_engine_sessions") <= 5);
    // The refusals do not flood the log: at most one line a second.
    const seconds = Math.ceil((Date.now() - started) / 1000);
    const lines = guarded.logs().slice(logMark).split("\n").filter((l) => l.includes("connection refused"));
    assert.ok(lines.length >= 1, "the refusals are logged");
    assert.ok(lines.length <= seconds + 1, `${lines.length} refusal log lines in ${seconds}s:\n${lines.join("\n")}`);
    assert.match(lines[0], /reason="?ip_sessions/);
    // An honest client from another address connects and talks.
    const socket = io(guarded.url, {
      forceNew: true,
      reconnection: false,
      extraHeaders: { "X-Forwarded-For": "10.0.0.2" },
    });
    sockets.push(socket);
    await withTimeout(new Promise((resolve, reject) => { socket.once("connect", resolve); socket.once("connect_error", reject); }), WAIT_MS, "an honest connect");
  });

  it("rate-limits the handshakes of one client address", async () => {
    const before = await scrape(guarded);
    const started = Date.now();
    let accepted = 0;
    for (let i = 0; i < 30; i++) {
      const { status, sid } = await handshakeAs("10.0.0.3");
      if (status !== 200) continue;
      accepted++;
      // Closed at once: only the rate can refuse the next one.
      const closed = await fetch(`${guarded.url}/socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(sid)}`, {
        method: "POST",
        body: "1",
        headers: { "X-Forwarded-For": "10.0.0.3" },
      });
      assert.equal(closed.status, 200);
    }
    const elapsed = (Date.now() - started) / 1000;
    assert.ok(accepted <= 10 + Math.ceil(elapsed) + 1, `${accepted} handshakes accepted in ${elapsed}s`);
    const after = await scrape(guarded);
    assert.ok(
      after.value("iorelay_connections_refused_total", { reason: "ip_rate" }) >
        before.value("iorelay_connections_refused_total", { reason: "ip_rate" }),
    );
  });
});

describe("item 11: $members and $rooms are policies", () => {
  // /m the defaults (members of joined rooms, every room listed); /ma members = "all";
  // /mn members = "none"; /rj rooms = "joined".
  const listing = (m = "") => `
[server]
workers = 1
[namespaces."/m"]
${m}
[namespaces."/ma"]
members = "all"
[namespaces."/mn"]
members = "none"
[namespaces."/rj"]
rooms = "joined"
`;
  let lister;
  const own = [];
  before(async () => {
    lister = await startDaemon(listing());
  });
  after(async () => {
    await stopDaemon(lister);
  });
  afterEach(() => {
    while (own.length) own.pop().disconnect();
  });

  async function client(nsp, name) {
    const socket = io(lister.url + nsp, { forceNew: true, reconnection: false, auth: { name } });
    own.push(socket);
    await withTimeout(
      new Promise((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("connect_error", reject);
      }),
      WAIT_MS,
      `connect to ${nsp}`,
    );
    return socket;
  }
  const ask = (socket, event, ...args) => socket.timeout(WAIT_MS).emitWithAck(event, ...args);
  const refusals = async () =>
    (await scrape(lister)).value("iorelay_events_refused_total", { reason: "listing_forbidden" });
  const notMember = { ok: false, error: "only members of a room may list its members" };
  const disabled = { ok: false, error: "listing is not allowed in this namespace" };

  it("lists members to a room's members only by default, to anyone with \"all\", to nobody with \"none\"", async () => {
    const before = await refusals();
    for (const nsp of ["/m", "/ma", "/mn"]) {
      const alice = await client(nsp, "alice");
      const eve = await client(nsp, "eve");
      assert.equal((await ask(alice, "$join", "secret")).ok, true);
      const asMember = await ask(alice, "$members", "secret");
      const asStranger = await ask(eve, "$members", "secret");
      const listed = { ok: true, room: "secret", members: [{ id: alice.id, user: "alice" }] };
      if (nsp === "/m") {
        assert.deepEqual(asMember, listed, nsp);
        assert.deepEqual(asStranger, notMember, nsp);
        // Without an ack request the refusal comes back as $error, as for $join.
        const error = nextEvent(eve, "$error");
        eve.emit("$members", "secret");
        assert.deepEqual((await error)[0], { event: "$members", error: notMember.error });
      } else if (nsp === "/ma") {
        assert.deepEqual(asMember, listed, nsp);
        assert.deepEqual(asStranger, listed, nsp);
      } else {
        assert.deepEqual(asMember, disabled, nsp);
        assert.deepEqual(asStranger, disabled, nsp);
      }
    }
    // /m: one acked and one unacked refusal; /mn: two.
    assert.equal((await refusals()) - before, 4);
  });

  it("lists only the client's own rooms with rooms = \"joined\", every room by default", async () => {
    for (const nsp of ["/m", "/rj"]) {
      const alice = await client(nsp, "alice");
      const bob = await client(nsp, "bob");
      for (const room of ["a-room", "b-room"]) assert.equal((await ask(alice, "$join", room)).ok, true);
      assert.equal((await ask(bob, "$join", "b-room")).ok, true);
      assert.equal((await ask(bob, "$join", "c-room")).ok, true);
      const rooms = await ask(alice, "$rooms");
      assert.equal(rooms.ok, true, nsp);
      if (nsp === "/m") {
        // Every room, bob's own too (earlier tests' rooms may still be leaving).
        const ours = rooms.rooms.filter((r) => r.room.endsWith("-room"));
        assert.deepEqual(ours, [{ room: "a-room", count: 1 }, { room: "b-room", count: 2 }, { room: "c-room", count: 1 }]);
      } else {
        assert.deepEqual(rooms.rooms, [{ room: "a-room", count: 1 }, { room: "b-room", count: 2 }]);
      }
    }
  });

  it("follows a reload", async () => {
    const alice = await client("/m", "alice");
    const eve = await client("/m", "eve");
    assert.equal((await ask(alice, "$join", "secret")).ok, true);
    assert.deepEqual(await ask(eve, "$members", "secret"), notMember);
    assert.equal((await ask(eve, "$rooms")).ok, true);
    const from = lister.mark();
    lister.writeConfig(listing(`members = "all"\nrooms = "none"`));
    lister.signal("SIGHUP");
    await lister.waitForLog(/INFO.*configuration reloaded/, { from });
    // The same connected sockets, under the new policy.
    assert.deepEqual(await ask(eve, "$members", "secret"), {
      ok: true,
      room: "secret",
      members: [{ id: alice.id, user: "alice" }],
    });
    assert.deepEqual(await ask(eve, "$rooms"), disabled);
  });
});

describe("item 10: the admin listener checks Host (DNS rebinding)", () => {
  let admin;
  before(async () => {
    admin = await startDaemon(`
[server]
workers = 1
[admin]
allowed_hosts = ["relay.internal"]
[namespaces."/"]
`);
  });
  after(async () => {
    await stopDaemon(admin);
  });

  /** GET `path` on the admin listener with `host` as the Host header; { status, body }. */
  function getAs(host, path, headers = {}) {
    const { hostname, port } = new URL(admin.adminUrl);
    return withTimeout(
      new Promise((resolve, reject) => {
        const req = httpRequest({ hostname, port, path, method: "GET", setHost: false, headers: { host, ...headers } }, (res) => {
          let body = "";
          res.setEncoding("utf8");
          res.on("data", (chunk) => (body += chunk));
          res.on("end", () => resolve({ status: res.statusCode, body }));
        });
        req.on("error", reject);
        req.end();
      }),
      WAIT_MS,
      `GET ${path} as ${host}`,
    );
  }
  const auth = { authorization: `Bearer ${TEST_TOKEN}` };
  const refusedOn = async (route) =>
    (await scrape(admin)).value("iorelay_admin_host_refused_total", { route });

  it("refuses a foreign Host on every route, with 421, counted", async () => {
    const api = (await scrape(admin)).value("iorelay_api_requests_total", { route: "status", status: "421" });
    const port = new URL(admin.adminUrl).port;
    for (const host of ["evil.example", `evil.example:${port}`, "127.0.0.1.evil.example", "localhost.evil.example:1"]) {
      for (const path of ["/healthz", "/readyz", "/metrics", "/nowhere"]) {
        const res = await getAs(host, path);
        assert.equal(res.status, 421, `${host} ${path}: ${res.status} ${res.body}`);
        assert.doesNotMatch(res.body, /iorelay_/, "no metrics to a rebound page");
      }
      // The API refuses it before the token is even looked at, a valid token or not.
      const status = await getAs(host, "/api/v1/status", auth);
      assert.equal(status.status, 421, `${host} /api/v1/status`);
      assert.equal(JSON.parse(status.body).ok, false);
    }
    for (const route of ["healthz", "readyz", "metrics", "other", "api"]) {
      assert.equal(await refusedOn(route), 4, route);
    }
    const after = (await scrape(admin)).value("iorelay_api_requests_total", { route: "status", status: "421" });
    assert.equal(after - api, 4);
  });

  it("answers scrapers and monitors by address, localhost and the configured name", async () => {
    const port = new URL(admin.adminUrl).port;
    for (const host of [`127.0.0.1:${port}`, "127.0.0.1", `[::1]:${port}`, `localhost:${port}`, "relay.internal", `RELAY.internal:${port}`]) {
      // promtool/Prometheus and monit ask /metrics and /healthz with the address as Host.
      const metrics = await getAs(host, "/metrics");
      assert.equal(metrics.status, 200, `${host} /metrics`);
      assert.match(metrics.body, /iorelay_/);
      assert.equal((await getAs(host, "/healthz")).status, 200, `${host} /healthz`);
      assert.equal((await getAs(host, "/readyz")).status, 200, `${host} /readyz`);
      assert.equal((await getAs(host, "/api/v1/status", auth)).status, 200, `${host} /api/v1/status`);
    }
  });

  it("lets the ops commands through (they send the listener's address)", async () => {
    const { code, stdout, stderr } = await runCli(["status", "--admin", admin.adminAddr, "--json"]);
    assert.equal(code, 0, `iorelay status: ${stdout}${stderr}`);
  });

  it("takes allowed_hosts from a reload", async () => {
    const from = admin.mark();
    admin.writeConfig(`
[server]
workers = 1
[admin]
allowed_hosts = ["other.internal"]
[namespaces."/"]
`);
    admin.signal("SIGHUP");
    await admin.waitForLog(/INFO.*configuration reloaded/, { from });
    assert.equal((await getAs("relay.internal", "/healthz")).status, 421);
    assert.equal((await getAs("other.internal", "/healthz")).status, 200);
  });
});

describe("item 7: $presence storms stay within write_queue", () => {
  // A small write_queue, so that a member that stops reading is soon "behind"; a long
  // room name and generous rate limits, so that the storm (about 15 MB of $presence to
  // the member) outgrows what the kernel buffers for a paused reader (a few MB) while
  // every attacker stays within its own limits.
  let storm;
  before(async () => {
    storm = await startDaemon(`
[server]
workers = 1
# The attackers all connect from 127.0.0.1: their address's event budget is lifted, so
# that only each socket's own limit applies.
events_per_ip_per_second = 1000000
event_burst_per_ip = 1000000
[engine]
write_queue = 16
[namespaces."/p"]
presence = true
[namespaces."/p".limits]
max_room_name = 1024
events_per_second = 2000
burst = 4000
`);
  });
  after(async () => {
    await stopDaemon(storm);
  });

  const ATTACKERS = 4;
  const PAIRS = 1900; // $join + $leave: 3800 events each, within the burst of 4000
  const ROOM = "stage-".padEnd(1000, "x");
  // 15,000 events through a debug build on a shared machine take a while.
  const STORM_MS = 60000;

  async function attacker(i) {
    const socket = io(`${storm.url}/p`, { forceNew: true, reconnection: false, transports: ["websocket"], auth: { name: `attacker${i}` } });
    sockets.push(socket);
    await withTimeout(new Promise((resolve, reject) => { socket.once("connect", resolve); socket.once("connect_error", reject); }), WAIT_MS, "attacker connect");
    return socket;
  }

  it("keeps a member that reads slowly connected and gives it the final count", { timeout: 120000 }, async () => {
    const dropped = async (reason) => (await scrape(storm)).value("iorelay_messages_dropped_total", { reason });
    const slowBefore = await dropped("slow_consumer");
    const supersededBefore = await dropped("superseded");

    // The honest member: a raw WebSocket client that joins the room, then stops reading.
    const member = new raw.Peer(`${storm.url.replace(/^http/, "ws")}/socket.io/?EIO=4&transport=websocket`);
    assert.match(await member.nextPacket("the OPEN packet"), /^0\{/);
    member.send("40/p,");
    assert.match(await member.nextPacket("CONNECT reply"), /^40\/p,\{/);
    member.send(`42/p,1${JSON.stringify(["$join", ROOM])}`);
    assert.match(await member.nextPacket("$join ack"), /^43\/p,1\[\{"ok":true/);
    member.ws._socket.pause();

    const attackers = await Promise.all(Array.from({ length: ATTACKERS }, (_, i) => attacker(i)));
    await Promise.all(
      attackers.map(async (socket) => {
        for (let n = 0; n < PAIRS; n++) {
          socket.emit("$join", ROOM);
          socket.emit("$leave", ROOM);
        }
        // In order: this ack comes after every event above was handled.
        const last = await socket.timeout(STORM_MS).emitWithAck("$leave", ROOM);
        assert.equal(last.ok, true, JSON.stringify(last));
      }),
    );
    // The member fell behind (presence was superseded for it) but was not dropped.
    assert.equal(await dropped("slow_consumer"), slowBefore, "a member was disconnected as a slow consumer");
    assert.equal(member.closed, false);
    assert.ok((await dropped("superseded")) > supersededBefore, "the storm never got the member behind: the test proves nothing");

    // The storm is over; one more join sets the final count.
    const honest = io(`${storm.url}/p`, { forceNew: true, reconnection: false, auth: { name: "honest" } });
    sockets.push(honest);
    await withTimeout(new Promise((resolve) => honest.once("connect", resolve)), WAIT_MS, "honest connect");
    const joined = await honest.timeout(WAIT_MS).emitWithAck("$join", ROOM);
    assert.deepEqual(joined, { ok: true, room: ROOM, count: 2 });

    // Reading again, the member gets the latest count, the honest join.
    member.ws._socket.resume();
    let presence;
    for (;;) {
      const packet = await member.nextPacket("the final $presence");
      if (!packet.startsWith('42/p,["$presence",')) continue;
      presence = JSON.parse(packet.slice(5))[1];
      if (presence.id === honest.id) break;
    }
    assert.deepEqual(presence, { room: ROOM, action: "join", id: honest.id, user: "honest", count: 2 });
    assert.equal(member.closed, false);
    assert.equal(await dropped("slow_consumer"), slowBefore);
  });
});

/**
 * A raw WebSocket client that joins `/` and then never reads again: the kernel's buffers
 * fill, and the rest waits in the daemon. `closed` resolves when the daemon closes it.
 */
async function unreadWs(target) {
  const sock = tcpConnect(Number(target.publicAddr.split(":")[1]), "127.0.0.1");
  sock.on("error", () => {});
  const closed = new Promise((resolve) => sock.once("close", resolve));
  let head = "";
  await withTimeout(
    new Promise((resolve, reject) => {
      sock.once("connect", () =>
        sock.write(
          "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        ),
      );
      const onData = (chunk) => {
        head += chunk.toString("latin1");
        // The 101 and the OPEN frame behind it.
        if (/^HTTP\/1\.1 101/.test(head) && head.includes("\r\n\r\n") && head.includes('"sid"')) {
          sock.off("data", onData);
          resolve();
        }
      };
      sock.on("data", onData);
      sock.once("close", () => reject(new Error(`closed during the handshake: ${head}`)));
    }),
    WAIT_MS,
    "a raw WebSocket",
  );
  // CONNECT to "/" as a masked text frame (mask 0: the payload as is), then stop reading.
  sock.write(Buffer.concat([Buffer.from([0x81, 0x82, 0, 0, 0, 0]), Buffer.from("40")]));
  sock.pause();
  return { sock, closed };
}

describe("item 3: a worker-wide budget for what clients queue (engine.outbound_budget)", () => {
  let target;
  before(async () => {
    target = await startDaemon(`
[server]
workers = 1
[engine]
outbound_budget = "8MB"
[namespaces."/"]
route = "namespace"
echo = false
presence = false
[namespaces."/".limits]
max_event_size = "1MB"
events_per_second = 100000
burst = 100000
`);
  });
  after(async () => {
    await stopDaemon(target);
  });

  it("closes the clients that do not read once the worker holds the budget; a reader keeps receiving", async () => {
    const reader = io(target.url, { forceNew: true, reconnection: false });
    const publisher = io(target.url, { forceNew: true, reconnection: false });
    sockets.push(reader, publisher);
    for (const s of [reader, publisher]) {
      await withTimeout(new Promise((resolve) => s.once("connect", resolve)), WAIT_MS, "an honest client");
    }
    const before = await scrape(target);
    const label = { reason: "memory_budget" };
    const closedBefore = before.value("iorelay_engine_sessions_closed_total", label) ?? 0;
    const stalled = [];
    for (let i = 0; i < 20; i++) stalled.push(await unreadWs(target));
    const rssBefore = rssKib(target.pid);
    // 20 clients that never read × a per-session budget of 4 MB would be 80 MB held;
    // the worker's budget is 8 MB. Each event is paced by the reader getting it, so the
    // reader's own output never waits.
    const payload = "x".repeat(200_000);
    let received = 0;
    for (let i = 0; i < 60; i++) {
      const got = nextEvent(reader, "big");
      publisher.emit("big", i, payload);
      const [n, text] = await got;
      assert.equal(n, i);
      assert.equal(text.length, payload.length);
      received++;
    }
    assert.equal(received, 60, "the reader got every event");
    const after = await scrape(target);
    const closed = (after.value("iorelay_engine_sessions_closed_total", label) ?? 0) - closedBefore;
    assert.ok(closed > 0, "clients that do not read were closed as memory_budget");
    const grownKib = rssKib(target.pid) - rssBefore;
    assert.ok(grownKib < 40 * 1024, `RSS grew ${grownKib} KiB for an 8 MB budget`);
    for (const s of stalled) s.sock.destroy();
    assert.ok(reader.connected && publisher.connected, "the honest clients stay");
  });
});

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
import { io } from "socket.io-client";
import { startDaemon, stopDaemon, scrape, waitForMetric } from "../lib/admin.mjs";
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

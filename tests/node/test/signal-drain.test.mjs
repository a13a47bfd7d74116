// SIGTERM drains, SIGINT stops. On SIGTERM the admin /healthz and /readyz turn 503, the
// public listener stops accepting, every client's transport is closed the Engine.IO way
// (so socket.io clients see "transport close" and reconnect by themselves, unlike "io
// server disconnect", which would tell them not to), and the daemon exits 0 once the
// drain is over or `server.shutdown_timeout` has passed. SIGINT does the same without
// waiting for the drain.
//
// Real signals: each test starts its own daemon. To observe the drain without racing it,
// a test holds it open with an HTTP request in flight on the public listener (a POST
// whose body the daemon is waiting for: it finishes requests in flight before it closes
// a connection, and waits for its connections) and lets it go when it has seen enough.
// Nothing sleeps: every step waits for an event, a log line or the exit.
import { describe, it, afterEach } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { io } from "socket.io-client";
import { startDaemon, withLogs, get } from "../lib/admin.mjs";

const WAIT_MS = 5000;
// The reasons socket.io-client gives when the transport went away under it (rather than
// "io server disconnect", after which it would not reconnect).
const TRANSPORT_REASONS = ["transport close", "transport error"];

let daemon;
const sockets = [];
const holders = [];

afterEach(async () => {
  while (sockets.length) sockets.pop().disconnect();
  while (holders.length) holders.pop().destroy();
  await daemon?.stop();
  daemon = undefined;
});

const logs = (fn) => withLogs(() => daemon, fn);

/** A connected socket.io client on "/"; records its disconnect reason. */
async function client(opts) {
  const socket = io(`${daemon.url}/`, { forceNew: true, timeout: WAIT_MS, ...opts });
  sockets.push(socket);
  socket.gone = new Promise((resolve) => socket.once("disconnect", (reason) => resolve(reason)));
  await new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", (err) => reject(new Error(`connect_error: ${err.message}`)));
  });
  return socket;
}

/** Resolve with `promise`'s value, or reject naming `what` after `ms`. */
function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms}ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * An HTTP request in flight on the public listener, known to be in the daemon's hands: a
 * polling POST of an Engine.IO session sent with `Expect: 100-continue`, whose body we
 * hold back until the daemon asks for it ("100 Continue" means its handler is reading
 * the body). `release()` sends the body and resolves with everything the daemon wrote
 * once it closes the connection; `closed` resolves at that close too.
 */
async function requestInFlight() {
  const handshake = await get(`${daemon.url}/socket.io/?EIO=4&transport=polling`);
  assert.equal(handshake.status, 200, `handshake: ${handshake.text}`);
  const { sid } = JSON.parse(handshake.text.slice(1));
  const port = Number(daemon.publicAddr.split(":")[1]);
  const sock = net.connect(port, "127.0.0.1");
  holders.push(sock);
  await new Promise((resolve, reject) => {
    sock.once("connect", resolve);
    sock.once("error", reject);
  });
  let response = "";
  let onData = () => {};
  sock.setEncoding("utf8");
  sock.on("data", (chunk) => {
    response += chunk;
    onData();
  });
  sock.on("error", () => {});
  const closed = new Promise((resolve) => sock.once("close", () => resolve(response)));
  const continued = new Promise((resolve) => {
    onData = () => {
      if (/^HTTP\/1\.1 100 /.test(response)) resolve();
    };
  });
  sock.write(
    `POST /socket.io/?EIO=4&transport=polling&sid=${sid} HTTP/1.1\r\n` +
      "Host: 127.0.0.1\r\nContent-Type: text/plain;charset=UTF-8\r\n" +
      "Content-Length: 1\r\nExpect: 100-continue\r\n\r\n",
  );
  await within(continued, WAIT_MS, "100 Continue for the held-back POST body");
  return {
    closed,
    release() {
      sock.write("6"); // an Engine.IO NOOP packet
      return closed;
    },
  };
}

/** Whether a new TCP connection to `addr` is refused. */
function refused(addr) {
  const [host, port] = addr.split(":");
  return new Promise((resolve) => {
    const sock = net.connect(Number(port), host);
    sock.once("connect", () => {
      sock.destroy();
      resolve(false);
    });
    sock.once("error", (err) => resolve(err.code === "ECONNREFUSED"));
  });
}

describe("SIGTERM", () => {
  it("drains: health 503, clients told by transport close (and reconnect), exit 0 once drained", logs(async () => {
    daemon = await startDaemon(`
[server]
shutdown_timeout = "30s"
`);
    const ws = await client({ transports: ["websocket"], reconnection: false });
    const polling = await client({ transports: ["polling"], reconnection: false });
    // Default transports (polling, then the upgrade) and reconnection on, as in a browser.
    const browser = await client({ reconnectionDelay: 50, reconnectionDelayMax: 200 });
    const reconnecting = new Promise((resolve) => browser.io.once("reconnect_attempt", resolve));
    for (const path of ["/healthz", "/readyz"]) {
      assert.equal((await get(daemon.adminUrl + path)).status, 200, `admin ${path} before SIGTERM`);
    }
    const inFlight = await requestInFlight();

    const from = daemon.mark();
    const sentAt = Date.now();
    daemon.signal("SIGTERM");

    const reasons = await within(
      Promise.all([ws, polling, browser].map((s) => s.gone)),
      WAIT_MS,
      "disconnect after SIGTERM",
    );
    const [wsReason, pollingReason, browserReason] = reasons;
    assert.ok(TRANSPORT_REASONS.includes(wsReason), `websocket client: disconnect reason ${wsReason}`);
    assert.ok(TRANSPORT_REASONS.includes(pollingReason), `polling client: disconnect reason ${pollingReason}`);
    assert.ok(TRANSPORT_REASONS.includes(browserReason), `reconnecting client: disconnect reason ${browserReason}`);
    // So the client tries again by itself (a server-side disconnect would stop it).
    await within(reconnecting, WAIT_MS, "reconnect_attempt of the reconnecting client");

    // The request in flight holds the drain open: the daemon is still up, unhealthy.
    assert.equal(daemon.running(), true, `exited before the drain was over:\n${daemon.logs().slice(from)}`);
    for (const path of ["/healthz", "/readyz"]) {
      assert.equal((await get(daemon.adminUrl + path)).status, 503, `admin ${path} during the drain`);
    }
    // The public listener no longer accepts (it is closed before the transports are).
    await daemon.waitForLog(/closing client transports/, { from });
    assert.equal(await refused(daemon.publicAddr), true, "the public listener still accepts during the drain");

    // Let the last request finish: it is answered, then the connection closes and the
    // drain is over.
    const releasedAt = Date.now();
    const response = await within(inFlight.release(), WAIT_MS, "the request in flight");
    const final = response.replace(/^HTTP\/1\.1 100 [^\r]*\r\n\r\n/, "");
    assert.match(final, /^HTTP\/1\.1 \d{3} /, `the request in flight was not answered: ${JSON.stringify(response)}`);
    const { code, signal, at } = await daemon.waitExit(WAIT_MS);
    assert.deepEqual({ code, signal }, { code: 0, signal: null }, "exit status after SIGTERM");
    assert.ok(at - releasedAt < WAIT_MS, `exited ${at - releasedAt}ms after the drain was over`);
    assert.ok(at - sentAt < 30000, "exited after shutdown_timeout although the drain finished");
    assert.match(daemon.logs().slice(from), /drain finished.*drained=true/);
  }));

  it("a client that never finishes holds the daemon no longer than shutdown_timeout (as reloaded)", logs(async () => {
    // Started with a long timeout, reloaded to a short one: the drain uses the one in force.
    daemon = await startDaemon(`
[server]
shutdown_timeout = "60s"
`);
    const from = daemon.mark();
    daemon.writeConfig(`
[server]
shutdown_timeout = "2s"
`);
    daemon.signal("SIGHUP");
    await daemon.waitForLog(/configuration reloaded.*server\.shutdown_timeout/, { from });

    const ws = await client({ transports: ["websocket"], reconnection: false });
    await requestInFlight(); // never finished
    const sentAt = Date.now();
    daemon.signal("SIGTERM");
    assert.ok(TRANSPORT_REASONS.includes(await within(ws.gone, WAIT_MS, "disconnect")));
    assert.equal((await get(daemon.adminUrl + "/healthz")).status, 503, "admin /healthz during the drain");

    const { code, signal, at } = await daemon.waitExit(2000 + 8000);
    assert.deepEqual({ code, signal }, { code: 0, signal: null }, "exit status after SIGTERM");
    // It did wait (for the stuck request) and gave up at the timeout.
    assert.ok(at - sentAt >= 1500, `exited after ${at - sentAt}ms, before shutdown_timeout = 2s`);
    assert.match(daemon.logs().slice(from), /drain finished.*drained=false/);
  }));
});

describe("SIGINT", () => {
  it("stops at once: clients' transports closed, exit 0 without waiting for the drain", logs(async () => {
    daemon = await startDaemon(`
[server]
shutdown_timeout = "30s"
`);
    const ws = await client({ transports: ["websocket"], reconnection: false });
    const polling = await client({ transports: ["polling"], reconnection: false });
    await requestInFlight(); // would hold a drain for 30s
    const sentAt = Date.now();
    daemon.signal("SIGINT");
    const { code, signal, at } = await daemon.waitExit(WAIT_MS);
    assert.deepEqual({ code, signal }, { code: 0, signal: null }, "exit status after SIGINT");
    assert.ok(at - sentAt < WAIT_MS, `took ${at - sentAt}ms`);
    for (const [name, s] of [["websocket", ws], ["polling", polling]]) {
      const reason = await within(s.gone, WAIT_MS, `${name} client disconnect`);
      assert.ok(TRANSPORT_REASONS.includes(reason), `${name} client: disconnect reason ${reason}`);
    }
  }));

  it("during a SIGTERM drain, SIGINT stops at once", logs(async () => {
    daemon = await startDaemon(`
[server]
shutdown_timeout = "30s"
`);
    await requestInFlight(); // holds the drain for 30s
    const from = daemon.mark();
    daemon.signal("SIGTERM");
    await daemon.waitForLog(/closing client transports/, { from });
    assert.equal((await get(daemon.adminUrl + "/healthz")).status, 503, "not draining yet");
    const sentAt = Date.now();
    daemon.signal("SIGINT");
    const { code, signal, at } = await daemon.waitExit(WAIT_MS);
    assert.deepEqual({ code, signal }, { code: 0, signal: null }, "exit status after SIGINT");
    assert.ok(at - sentAt < WAIT_MS, `took ${at - sentAt}ms`);
  }));
});

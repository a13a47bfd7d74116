// Which pages may connect (server.allowed_origins) and where a client is
// (server.trusted_proxies), against the real binary:
//
// - raw HTTP and WebSocket requests: a listed origin's polling answers carry CORS headers
//   with credentials and its OPTIONS preflight is answered; any other origin gets
//   403 {"code":4,"message":"Forbidden"} on the handshake, the WebSocket (new or an
//   upgrade) and the preflight, counted in iorelay_origin_refused_total; a request
//   without Origin (not a browser) and one from the server's own origin pass unlisted;
// - the official socket.io-client in Node with `extraHeaders: { origin }` over each
//   transport: connects from a listed origin, connect_error from another;
// - a reload (SIGHUP) changes both keys for the next request;
// - with two workers, each checks origins and answers with CORS, on requests forwarded
//   to a session's owner too, and a reload reaches both;
// - X-Forwarded-For names the client only when the peer is a trusted proxy, as the
//   engine's "session opened" log line shows (client=…); a request from 127.0.0.2
//   reaches the same loopback listener as an untrusted peer;
// - Chromium: a page served from one loopback port connects to the relay on another
//   when its origin is listed (polling with credentials and a preflight, then the
//   upgrade), and gets connect_error when it is not.
//
// Every wait is for an answer, an event, a log line or a metric, bounded.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import WebSocket from "ws";
import { apiStatus, bothWorkersLinked, scrape, startDaemon, stopDaemon, waitForMetric, withLogs } from "../lib/admin.mjs";
import { ack, connected, openClient, WAIT_MS } from "../lib/clients.mjs";
import { workerOf } from "../lib/workers.mjs";

const APP = "http://app.example:8080";
const OTHER = "https://other.example";
const EVIL = "http://evil.example";
const FORBIDDEN = { code: 4, message: "Forbidden" };
const REFUSED = "iorelay_origin_refused_total";

/** A daemon config with these two keys. */
function config({ origins, proxies = [] }) {
  return `
[server]
allowed_origins = ${JSON.stringify(origins)}
trusted_proxies = ${JSON.stringify(proxies)}
`;
}

/** The engine at debug, for its "session opened sid=… client=…" line. */
const DEBUG_ENGINE = { env: { IORELAY_LOG__LEVEL: "info,iorelay::engine=debug" } };

/**
 * One HTTP request to `base` (a daemon's url) without a pooled connection; resolves to
 * { status, headers, body }. `localAddress` picks the loopback address it comes from.
 */
function request(base, method, path, { headers = {}, body, localAddress } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(`${base}${path}`, { method, headers, agent: false, localAddress }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (text += c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: text }));
      res.on("error", reject);
    });
    req.setTimeout(WAIT_MS, () => req.destroy(new Error(`${method} ${path}: no answer within ${WAIT_MS}ms`)));
    req.on("error", reject);
    req.end(body);
  });
}

const HANDSHAKE = "/socket.io/?EIO=4&transport=polling";

/** A polling handshake; resolves to { res, sid } (sid null unless it opened). */
async function handshake(base, opts) {
  const res = await request(base, "GET", HANDSHAKE, opts);
  const sid = res.status === 200 ? JSON.parse(res.body.slice(1)).sid : null;
  return { res, sid };
}

/** Assert a refusal in the Engine.IO error form, without CORS headers. */
function assertForbidden(res, what) {
  assert.equal(res.status, 403, `${what}: ${res.status} ${res.body}`);
  assert.match(res.headers["content-type"], /^application\/json/, what);
  assert.deepEqual(JSON.parse(res.body), FORBIDDEN, what);
  assert.equal(res.headers["access-control-allow-origin"], undefined, `${what}: no CORS for a refused origin`);
}

/** Assert the CORS headers naming `origin`, with credentials. */
function assertCors(res, origin, what) {
  assert.equal(res.headers["access-control-allow-origin"], origin, `${what}: ${JSON.stringify(res.headers)}`);
  assert.equal(res.headers["access-control-allow-credentials"], "true", what);
  assert.match(res.headers.vary ?? "", /\bOrigin\b/, `${what}: Vary`);
}

/**
 * Open a WebSocket to `url` with `origin`; resolves to { status } when the server
 * refuses the upgrade, or { ws } once it is open (the caller closes it); `ws.first` is
 * its first message.
 */
function websocket(url, origin) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers: origin ? { origin } : {} });
    // Listened for from the start: the server's first message may come in the same read
    // as the 101, and be emitted before a listener added after "open".
    ws.first = new Promise((resolveFirst) => ws.once("message", (data) => resolveFirst(String(data))));
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`WebSocket ${url}: neither open nor refused within ${WAIT_MS}ms`));
    }, WAIT_MS);
    ws.on("unexpected-response", (_req, res) => {
      clearTimeout(timer);
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (body += c));
      res.on("end", () => {
        ws.terminate();
        resolve({ status: res.statusCode, headers: res.headers, body });
      });
    });
    ws.on("open", () => {
      clearTimeout(timer);
      resolve({ ws });
    });
    ws.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** The client address the engine logged for session `sid` ("session opened … client=…"). */
async function loggedClient(daemon, sid) {
  const m = await daemon.waitForLog(new RegExp(`session opened.*sid=${sid.replace(/[-]/g, "\\-")}.*client=(\\S+)`));
  return m[1];
}

/** Write `text` as `daemon`'s config, SIGHUP, and wait until it is in force. */
async function reload(daemon, text) {
  const from = daemon.mark();
  daemon.writeConfig(text);
  daemon.signal("SIGHUP");
  await daemon.waitForLog(/INFO.*configuration reloaded/, { from });
}

describe("server.allowed_origins and server.trusted_proxies", () => {
  let daemon;
  const sockets = [];
  const logs = (fn) => withLogs(() => daemon, fn);

  before(async () => {
    daemon = await startDaemon(config({ origins: [APP] }), DEBUG_ENGINE);
  });

  after(async () => {
    while (sockets.length) sockets.pop().disconnect();
    await stopDaemon(daemon);
  });

  it("answers a listed origin's polling requests with CORS headers, credentials allowed", logs(async () => {
    const { res, sid } = await handshake(daemon.url, { headers: { origin: APP } });
    assert.equal(res.status, 200, res.body);
    assertCors(res, APP, "the handshake");
    const path = `${HANDSHAKE}&sid=${encodeURIComponent(sid)}`;
    const post = await request(daemon.url, "POST", path, { headers: { origin: APP, "content-type": "text/plain;charset=UTF-8" }, body: "40" });
    assert.equal(post.status, 200, post.body);
    assertCors(post, APP, "the POST");
    const poll = await request(daemon.url, "GET", path, { headers: { origin: APP } });
    assert.equal(poll.status, 200, poll.body);
    assert.match(poll.body, /^40\{"sid":/, "the CONNECT's answer");
    assertCors(poll, APP, "the poll");
    // An error answer is readable by the page too.
    const unknown = await request(daemon.url, "GET", `${HANDSHAKE}&sid=nosuchsession`, { headers: { origin: APP } });
    assert.equal(unknown.status, 400, unknown.body);
    assert.deepEqual(JSON.parse(unknown.body), { code: 1, message: "Session ID unknown" });
    assertCors(unknown, APP, "the 400");
    // Without Origin: allowed, and nothing to name in CORS headers.
    const plain = await handshake(daemon.url);
    assert.equal(plain.res.status, 200, plain.res.body);
    assert.equal(plain.res.headers["access-control-allow-origin"], undefined);
  }));

  it("answers a listed origin's OPTIONS preflight, and refuses another's", logs(async () => {
    const asked = { "access-control-request-method": "POST", "access-control-request-headers": "content-type,x-app" };
    const ok = await request(daemon.url, "OPTIONS", HANDSHAKE, { headers: { origin: APP, ...asked } });
    assert.equal(ok.status, 204, ok.body);
    assertCors(ok, APP, "the preflight");
    assert.match(ok.headers["access-control-allow-methods"], /\bPOST\b/);
    assert.match(ok.headers["access-control-allow-methods"], /\bGET\b/);
    assert.equal(ok.headers["access-control-allow-headers"], "content-type,x-app");
    const refused = await request(daemon.url, "OPTIONS", HANDSHAKE, { headers: { origin: EVIL, ...asked } });
    assertForbidden(refused, "a refused origin's preflight");
  }));

  it("refuses another origin's handshake over polling and WebSocket with 403 code 4, counted and logged", logs(async () => {
    const before = (await scrape(daemon)).value(REFUSED);
    const from = daemon.mark();
    const { res, sid } = await handshake(daemon.url, { headers: { origin: EVIL } });
    assertForbidden(res, "a polling handshake");
    assert.equal(sid, null);
    const ws = await websocket(`${daemon.url.replace("http", "ws")}/socket.io/?EIO=4&transport=websocket`, EVIL);
    assert.equal(ws.status, 403, "a WebSocket handshake");
    assert.deepEqual(JSON.parse(ws.body), FORBIDDEN);
    // An opaque origin (a sandboxed frame, a file:// page) is not listed either.
    assertForbidden((await handshake(daemon.url, { headers: { origin: "null" } })).res, "Origin: null");
    await waitForMetric(daemon, REFUSED, {}, (v) => v === before + 3);
    const line = await daemon.waitForLog(/origin not allowed.*/, { from });
    assert.match(line[0], /evil\.example/, "the log names the origin");
    assert.match(line[0], /client=127\.0\.0\.1/, "and the client");
  }));

  it("refuses a WebSocket upgrade of a session from another origin, accepts the listed one's", logs(async () => {
    // Sessions opened without Origin, as a non-browser client does.
    const base = `${daemon.url.replace("http", "ws")}/socket.io/?EIO=4&transport=websocket&sid=`;
    const { sid } = await handshake(daemon.url);
    const refused = await websocket(base + encodeURIComponent(sid), EVIL);
    assert.equal(refused.status, 403, "the upgrade from another origin");
    assert.deepEqual(JSON.parse(refused.body), FORBIDDEN);
    const { ws } = await websocket(base + encodeURIComponent(sid), APP);
    assert.ok(ws, "the upgrade from the listed origin opens");
    const probe = new Promise((resolve) => ws.once("message", (data) => resolve(String(data))));
    ws.send("2probe");
    assert.equal(await probe, "3probe", "the upgrade's probe is answered");
    ws.close();
  }));

  for (const transports of [["polling"], ["websocket"], ["polling", "websocket"]]) {
    it(`the official client over ${transports.join(" then ")}: connects from the listed origin, connect_error from another`, logs(async () => {
      const good = openClient(`${daemon.url}/`, sockets, { transports, extraHeaders: { origin: APP } });
      await connected(good);
      const reply = await ack(good, "$rooms");
      assert.equal(reply.ok, true, JSON.stringify(reply));
      if (transports.length === 2 && good.io.engine.transport.name !== "websocket") {
        await new Promise((resolve) => good.io.engine.once("upgrade", resolve));
      }
      const bad = openClient(`${daemon.url}/`, sockets, { transports, extraHeaders: { origin: EVIL } });
      await assert.rejects(connected(bad), /connect_error/);
    }));
  }

  it("lets the server's own origin in unlisted; another port or name of it is another origin", logs(async () => {
    const port = new URL(daemon.url).port;
    const own = await handshake(daemon.url, { headers: { origin: daemon.url } });
    assert.equal(own.res.status, 200, own.res.body);
    assertCors(own.res, daemon.url, "same-origin");
    // The test profile is production-like: no loopback wildcard.
    assertForbidden((await handshake(daemon.url, { headers: { origin: "http://127.0.0.1:1" } })).res, "another port");
    assertForbidden((await handshake(daemon.url, { headers: { origin: `http://localhost:${port}` } })).res, "another name");
  }));

  it("a reload changes the allowed origins for the next request", logs(async () => {
    await reload(daemon, config({ origins: [OTHER, "loopback"] }));
    assertForbidden((await handshake(daemon.url, { headers: { origin: APP } })).res, "no longer listed");
    for (const origin of [OTHER, "http://localhost:5173"]) {
      const { res } = await handshake(daemon.url, { headers: { origin } });
      assert.equal(res.status, 200, `${origin}: ${res.body}`);
      assertCors(res, origin, origin);
    }
    await reload(daemon, config({ origins: [APP] }));
    assertForbidden((await handshake(daemon.url, { headers: { origin: OTHER } })).res, "back to the first list");
  }));

  it("believes X-Forwarded-For only from a trusted proxy, the rightmost untrusted address", logs(async () => {
    const spoofed = { "x-forwarded-for": "203.0.113.9" };
    // Nobody trusted (the default): the peer is the client, whatever the header says.
    let { sid } = await handshake(daemon.url, { headers: spoofed });
    assert.equal(await loggedClient(daemon, sid), "127.0.0.1");

    await reload(daemon, config({ origins: [APP], proxies: ["127.0.0.1/32", "10.0.0.0/8"] }));
    ({ sid } = await handshake(daemon.url, { headers: spoofed }));
    assert.equal(await loggedClient(daemon, sid), "203.0.113.9", "from the trusted proxy");
    // The client's own claim (leftmost) is ignored; trusted hops are skipped.
    ({ sid } = await handshake(daemon.url, { headers: { "x-forwarded-for": "198.51.100.1, 203.0.113.9, 10.1.2.3" } }));
    assert.equal(await loggedClient(daemon, sid), "203.0.113.9", "rightmost untrusted");
    // Garbage ends the walk at the last trusted address.
    ({ sid } = await handshake(daemon.url, { headers: { "x-forwarded-for": "203.0.113.9, not-an-ip" } }));
    assert.equal(await loggedClient(daemon, sid), "127.0.0.1", "garbage");
    // A peer that is not a trusted proxy (127.0.0.2 is loopback too) is its own client.
    ({ sid } = await handshake(daemon.url, { headers: spoofed, localAddress: "127.0.0.2" }));
    assert.equal(await loggedClient(daemon, sid), "127.0.0.2", "an untrusted peer's header is ignored");
    // A WebSocket handshake resolves it the same way.
    const ws = await websocket(`${daemon.url.replace("http", "ws")}/socket.io/?EIO=4&transport=websocket`, undefined);
    const open = await ws.ws.first;
    ws.ws.close();
    assert.equal(await loggedClient(daemon, JSON.parse(open.slice(1)).sid), "127.0.0.1", "WebSocket, no header");
  }));
});

describe("in a multi-worker daemon", () => {
  let daemon;
  const logs = (fn) => withLogs(() => daemon, fn);

  before(async () => {
    daemon = await startDaemon(`${config({ origins: [APP] })}workers = 2\n`);
    await bothWorkersLinked(daemon);
  });

  after(async () => {
    await stopDaemon(daemon);
  });

  it("every worker checks origins and answers with CORS, forwarded requests included; a reload reaches them all", logs(async () => {
    // Each request on a new connection: the kernel spreads them over both workers, and one
    // that lands on the worker not owning its session is forwarded to the owner.
    const owners = new Set();
    for (let i = 0; i < 8 || (owners.size < 2 && i < 32); i++) {
      const { res, sid } = await handshake(daemon.url, { headers: { origin: APP } });
      assert.equal(res.status, 200, res.body);
      assertCors(res, APP, "a handshake");
      owners.add(workerOf(sid));
      const path = `${HANDSHAKE}&sid=${encodeURIComponent(sid)}`;
      const post = await request(daemon.url, "POST", path, { headers: { origin: APP }, body: "40" });
      assert.equal(post.status, 200, post.body);
      assertCors(post, APP, "a POST");
      const poll = await request(daemon.url, "GET", path, { headers: { origin: APP } });
      assert.match(poll.body, /^40\{"sid":/);
      assertCors(poll, APP, "a poll");
      assertForbidden(await request(daemon.url, "GET", path, { headers: { origin: EVIL } }), "another origin's poll");
    }
    assert.deepEqual([...owners].sort(), [0, 1], "both workers opened sessions");
    await reload(daemon, config({ origins: [OTHER] }) + "workers = 2\n");
    // The master hands the config to each worker on its control channel, then logs; a
    // status report travels the same channel behind it, so once both workers answered
    // it, both have applied the config.
    assert.equal((await apiStatus(daemon)).workers.length, 2);
    for (let i = 0; i < 8; i++) {
      assertForbidden((await handshake(daemon.url, { headers: { origin: APP } })).res, "after the reload");
      assert.equal((await handshake(daemon.url, { headers: { origin: OTHER } })).res.status, 200);
    }
  }));
});

// ---------------------------------------------------------------------------------------
// Chromium: two pages on two loopback ports (two origins), the relay on a third.

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const NO_CHROMIUM = `${CHROMIUM} is missing: apt-get update && apt-get install -y chromium (.ci/run does this on CI)`;

/**
 * A page that loads the relay's client bundle and connects to the relay with
 * credentials and an extra header (so the browser sends a preflight), then reports into
 * window.result: { connected, transport, rooms } or { error }.
 */
function pageHtml(relayUrl) {
  return `<!doctype html>
<meta charset="utf-8"><title>origin test</title>
<script src="${relayUrl}/socket.io/socket.io.min.js"></script>
<script>
  window.result = null;
  const socket = io(${JSON.stringify(relayUrl)}, {
    withCredentials: true, extraHeaders: { "x-app": "1" }, reconnection: false, timeout: 8000,
  });
  socket.on("connect_error", (err) => { window.result = { error: String(err && err.message) }; });
  socket.on("connect", () => {
    const report = () => socket.timeout(5000).emit("$rooms", (err, reply) => {
      window.result = err ? { error: String(err) } : { connected: true, transport: socket.io.engine.transport.name, rooms: reply };
    });
    if (socket.io.engine.transport.name === "websocket") report();
    else socket.io.engine.once("upgrade", report);
  });
</script>`;
}

/** A static server on a free loopback port answering every GET with `html()`. */
function pageServer(html) {
  return new Promise((resolve, reject) => {
    const server = http.createServer((req, res) => {
      if (req.url === "/favicon.ico") {
        res.writeHead(204).end();
        return;
      }
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(html());
    });
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => resolve({ server, url: `http://127.0.0.1:${server.address().port}` }));
  });
}

describe("Chromium: a page on another loopback port", () => {
  let daemon;
  let context;
  let profileDir;
  let relayUrl;
  const servers = [];
  const logs = (fn) => withLogs(() => daemon, fn);

  before(async () => {
    assert.ok(existsSync(CHROMIUM), NO_CHROMIUM);
    // The pages' ports first: the relay's config lists one of them.
    for (let i = 0; i < 2; i++) servers.push(await pageServer(() => pageHtml(relayUrl)));
    daemon = await startDaemon(config({ origins: [servers[0].url] }));
    relayUrl = daemon.url;
    const { chromium } = await import("playwright-core");
    profileDir = mkdtempSync(join(tmpdir(), "iorelay-chromium-"));
    context = await chromium.launchPersistentContext(profileDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      timeout: 30000,
    });
    context.setDefaultTimeout(10000);
  });

  after(async () => {
    if (context) await context.close().catch(() => {});
    await stopDaemon(daemon);
    for (const { server } of servers) server.close();
    if (profileDir) rmSync(profileDir, { recursive: true, force: true });
  });

  /** Open `url` in a new tab and wait for the page's result. */
  async function visit(url) {
    const page = await context.newPage();
    try {
      await page.goto(url, { waitUntil: "load" });
      const handle = await page.waitForFunction(() => window.result, null, { timeout: 10000 });
      return await handle.jsonValue();
    } finally {
      await page.close();
    }
  }

  it("connects from the listed origin: polling with credentials and a preflight, then the upgrade", logs(async () => {
    const result = await visit(`${servers[0].url}/`);
    assert.deepEqual(result, { connected: true, transport: "websocket", rooms: { ok: true, rooms: [] } });
  }));

  it("gets connect_error from an origin that is not listed, and the refusal is counted", logs(async () => {
    const before = (await scrape(daemon)).value(REFUSED);
    const result = await visit(`${servers[1].url}/`);
    assert.ok(result.error, `the page connected: ${JSON.stringify(result)}`);
    assert.equal(result.connected, undefined);
    await waitForMetric(daemon, REFUSED, {}, (v) => v > before);
  }));
});

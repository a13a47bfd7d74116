// Hostile input: every byte that comes from the network is bounded, and a peer that breaks
// the rules is answered in the protocol's own error form (an engine.io JSON error body, a
// WebSocket close code, a refusal ack) without harming the other clients of the relay.
//
// Each describe starts its own relay with small limits so that the tests are fast. Nothing
// here sleeps and hopes: every step waits for the response, frame, event or log line it
// needs, bounded by WAIT_MS. Where a test needs to know that the relay is still fine for
// everybody else, two "witness" socket.io clients in one room exchange an event.
//
// Tests marked `todo` reproduce a daemon bug (the todo text says which); they run and
// report, but do not fail the suite until the bug is fixed and the mark removed.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { connect as tcpConnect } from "node:net";
import { existsSync, readFileSync } from "node:fs";
import WebSocket from "ws";
import { io } from "socket.io-client";
import { startRelay } from "../lib/relay.mjs";

const WAIT_MS = 5000;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Resolve once `check()` returns a truthy value (re-checked every 20 ms), else reject. */
async function waitUntil(check, what, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = check();
    if (value) return value;
    if (Date.now() >= deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Wait for a relay log line that mentions `sid` and matches `pattern`; returns the line. */
function loggedFor(relay, sid, pattern) {
  return waitUntil(
    () => relay.logs().split("\n").find((l) => l.includes(`sid=${sid}`) && pattern.test(l)),
    `a log line for sid ${sid} matching ${pattern}\nlog so far:\n${relay.logs()}`,
  );
}

/** The official engine.io error body for `code`. */
const ENGINE_ERRORS = {
  0: "Transport unknown",
  1: "Session ID unknown",
  2: "Bad handshake method",
  3: "Bad request",
  5: "Unsupported protocol version",
};

/**
 * Assert an engine.io error response: `status`, JSON content type, `{"code":N,"message":M}`
 * (M the official message for N unless given).
 */
function assertEngineError(res, status, code, what, message = ENGINE_ERRORS[code]) {
  assert.equal(res.status, status, `${what}: status ${res.status}, body ${res.body}`);
  assert.match(res.contentType || "", /application\/json/, `${what}: content-type ${res.contentType}`);
  const body = JSON.parse(res.body);
  assert.deepEqual(Object.keys(body).sort(), ["code", "message"], `${what}: body ${res.body}`);
  assert.equal(body.code, code, `${what}: body ${res.body}`);
  assert.equal(body.message, message, `${what}: body ${res.body}`);
}

/** fetch, bounded, resolving { status, contentType, body } (body as text). */
async function http(url, init = {}) {
  const what = `${init.method || "GET"} ${url.slice(0, 120)}`;
  const res = await withTimeout(fetch(url, init), WAIT_MS, what).catch((err) => {
    throw new Error(`${what}: ${err.message}${err.cause ? ` (${err.cause.code || err.cause.message})` : ""}`);
  });
  return { status: res.status, contentType: res.headers.get("content-type"), body: await res.text() };
}

/**
 * A request written on its own TCP connection, the whole body at once, then the response
 * read. Unlike fetch, it never stops reading because the server answered before
 * the body was consumed. Resolves { status, contentType, body }.
 */
function rawHttp(port, { method = "POST", path, body, chunked = false }) {
  return withTimeout(
    new Promise((resolve, reject) => {
      const socket = tcpConnect(port, "127.0.0.1");
      const chunks = [];
      const finish = () => {
        const text = Buffer.concat(chunks).toString("utf8");
        const split = text.indexOf("\r\n\r\n");
        if (split < 0) {
          reject(new Error(`no HTTP response to ${method} ${path} (got ${JSON.stringify(text.slice(0, 200))})`));
          return;
        }
        const head = text.slice(0, split).split("\r\n");
        const status = Number(head[0].split(" ")[1]);
        const headers = Object.fromEntries(
          head.slice(1).map((h) => [h.slice(0, h.indexOf(":")).toLowerCase(), h.slice(h.indexOf(":") + 1).trim()]),
        );
        let rest = text.slice(split + 4);
        if (headers["content-length"] !== undefined) rest = rest.slice(0, Number(headers["content-length"]));
        resolve({ status, contentType: headers["content-type"], body: rest });
      };
      socket.on("data", (d) => chunks.push(d));
      socket.on("end", () => socket.end());
      socket.on("close", finish);
      // A reset after the response arrived still leaves the response to parse.
      socket.on("error", () => {});
      const payload = Buffer.from(body);
      const headers = [`${method} ${path} HTTP/1.1`, "Host: 127.0.0.1", "Connection: close"];
      headers.push(chunked ? "Transfer-Encoding: chunked" : `Content-Length: ${payload.length}`);
      socket.write(`${headers.join("\r\n")}\r\n\r\n`);
      if (chunked) {
        for (let i = 0; i < payload.length; i += 4096) {
          const part = payload.subarray(i, i + 4096);
          socket.write(`${part.length.toString(16)}\r\n`);
          socket.write(part);
          socket.write("\r\n");
        }
        socket.write("0\r\n\r\n");
      } else {
        socket.write(payload);
      }
    }),
    WAIT_MS,
    `the response to a raw ${method} ${path}`,
  );
}

/** Encode Engine.IO messages (strings, or Buffers for binary) as one polling body. */
function pollingBody(messages) {
  return messages.map((m) => (typeof m === "string" ? `4${m}` : `b${Buffer.from(m).toString("base64")}`)).join("\x1e");
}

/**
 * A raw Engine.IO long-polling session. `next()` polls (one GET at a time, as the protocol
 * requires) and queues every packet of each response.
 */
class PollingPeer {
  constructor(relay) {
    this.relay = relay;
    this.base = `${relay.url}/socket.io/?EIO=4&transport=polling`;
    this.packets = [];
  }

  async open() {
    const res = await http(this.base);
    assert.equal(res.status, 200, `polling handshake: ${res.body}`);
    assert.equal(res.body[0], "0", `polling handshake: ${res.body}`);
    this.sid = JSON.parse(res.body.slice(1)).sid;
    this.url = `${this.base}&sid=${encodeURIComponent(this.sid)}`;
    return this;
  }

  /** POST Socket.IO messages (strings) or binary attachments (Buffers). */
  post(messages) {
    return http(this.url, { method: "POST", body: pollingBody(messages) });
  }

  get() {
    return http(this.url);
  }

  /** The next Engine.IO packet the server sends; pings are answered and skipped. */
  async next(what = "a packet") {
    const deadline = Date.now() + WAIT_MS;
    while (this.packets.length === 0) {
      if (Date.now() >= deadline) throw new Error(`timed out waiting for ${what}`);
      const res = await this.get();
      if (res.status !== 200) throw new Error(`GET answered ${res.status} ${res.body} while waiting for ${what}`);
      for (const p of res.body.split("\x1e")) {
        if (p === "2") await http(this.url, { method: "POST", body: "3" });
        else this.packets.push(p);
      }
    }
    return this.packets.shift();
  }

  /** CONNECT to "/" and return the Socket.IO socket id. */
  async connect() {
    const res = await this.post(["0"]);
    assert.deepEqual([res.status, res.body], [200, "ok"], "POST CONNECT");
    const reply = await this.next("the CONNECT reply");
    assert.match(reply, /^40\{/, `CONNECT reply: ${reply}`);
    return JSON.parse(reply.slice(2)).sid;
  }

  /** Assert the session is over: the next GET is a CLOSE packet or "Session ID unknown". */
  async assertClosed(what) {
    const res = await this.get();
    if (res.status === 200) {
      assert.ok(res.body.split("\x1e").includes("1"), `${what}: session still open, GET answered ${res.body}`);
      assertEngineError(await this.get(), 400, 1, `${what}: GET after the CLOSE packet`);
    } else {
      assertEngineError(res, 400, 1, `${what}: GET after the session should have closed`);
    }
  }
}

/**
 * A raw WebSocket session that queues every frame (text as strings, binary as Buffers) so
 * that frames sent back to back are never lost between two waits.
 */
class WsPeer {
  constructor(relay) {
    this.ws = new WebSocket(`${relay.url.replace(/^http/, "ws")}/socket.io/?EIO=4&transport=websocket`, {
      perMessageDeflate: false,
    });
    this.frames = [];
    this.waiters = [];
    this.closeCode = null;
    this.ws.on("message", (data, isBinary) => {
      this.frames.push(isBinary ? Buffer.from(data) : data.toString("utf8"));
      this.wake();
    });
    this.ws.on("error", (err) => (this.error = err));
    this.ws.on("close", (code) => {
      this.closeCode = code;
      this.wake();
    });
  }

  wake() {
    for (const w of this.waiters.splice(0)) w();
  }

  async wait(ready, what) {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const value = ready();
      if (value !== undefined) return value;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${WAIT_MS} ms waiting for ${what}; frames: ${JSON.stringify(this.frames)}`);
      await withTimeout(new Promise((r) => this.waiters.push(r)), left, what).catch(() => {});
    }
  }

  /** The next queued frame matching `pred` (others stay queued); pings are answered. */
  next(pred = () => true, what = "a frame") {
    return this.wait(() => {
      for (;;) {
        const i = this.frames.indexOf("2");
        if (i < 0) break;
        this.frames.splice(i, 1);
        this.send("3");
      }
      const i = this.frames.findIndex(pred);
      if (i >= 0) return this.frames.splice(i, 1)[0];
      if (this.closeCode !== null) throw new Error(`websocket closed (${this.closeCode}) while waiting for ${what}`);
      return undefined;
    }, what);
  }

  async open() {
    const hello = await this.next((f) => typeof f === "string" && f.startsWith("0"), "the OPEN packet");
    this.sid = JSON.parse(hello.slice(1)).sid;
    return this;
  }

  async connect() {
    this.send("40");
    const reply = await this.next((f) => typeof f === "string" && f.startsWith("40"), "the CONNECT reply");
    return JSON.parse(reply.slice(2)).sid;
  }

  /** Socket.IO messages go out as "4"-prefixed text frames, Buffers as binary frames. */
  sendMessages(messages) {
    for (const m of messages) this.send(typeof m === "string" ? `4${m}` : m);
  }

  send(data) {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(data);
  }

  /** Resolves with the close code once the server has closed the connection. */
  closed(what = "the server to close the websocket") {
    return this.wait(() => (this.closeCode === null ? undefined : this.closeCode), what);
  }

  terminate() {
    this.ws.terminate();
  }
}

/** Socket.IO clients and raw peers made by a test, closed after it. */
const cleanup = [];
afterEach(() => {
  while (cleanup.length) {
    const c = cleanup.pop();
    if (typeof c.disconnect === "function") c.disconnect();
    else c.terminate();
  }
});

function client(relay, nsp = "/", opts = {}) {
  const socket = io(relay.url + nsp, { forceNew: true, reconnection: false, ...opts });
  cleanup.push(socket);
  return socket;
}

function connected(socket) {
  if (socket.connected) return Promise.resolve(socket);
  return withTimeout(
    new Promise((resolve, reject) => {
      socket.once("connect", () => resolve(socket));
      socket.once("connect_error", (err) => reject(new Error(`connect_error on ${socket.nsp}: ${err.message}`)));
    }),
    WAIT_MS,
    `connect to ${socket.nsp}`,
  );
}

function ack(socket, event, ...args) {
  return socket.timeout(WAIT_MS).emitWithAck(event, ...args);
}

/** Resolve with the arguments of the next `event` on `socket` that satisfies `pred`. */
function nextEvent(socket, event, pred = () => true, ms = WAIT_MS) {
  return withTimeout(
    new Promise((resolve) => {
      const listener = (...args) => {
        if (!pred(...args)) return;
        socket.off(event, listener);
        resolve(args);
      };
      socket.on(event, listener);
    }),
    ms,
    `"${event}" on ${socket.id}`,
  );
}

async function join(socket, room) {
  const reply = await ack(socket, "$join", room);
  assert.equal(reply?.ok, true, `$join ${room} refused: ${JSON.stringify(reply)}`);
  return reply;
}

function assertRefused(reply, what) {
  assert.equal(typeof reply, "object", `${what}: ack is not an object: ${JSON.stringify(reply)}`);
  assert.equal(reply?.ok, false, `${what}: expected ok:false, got ${JSON.stringify(reply)}`);
  assert.equal(typeof reply.error, "string", `${what}: no error text in ${JSON.stringify(reply)}`);
  assert.ok(reply.error.length > 0, `${what}: empty error text`);
}

let seq = 0;
const fresh = (prefix) => `${prefix}-${process.pid}-${++seq}`;

/**
 * Two socket.io clients in one room, connected for a whole describe: `check()` proves that
 * the relay still serves them (an event goes from one to the other, with its ack).
 */
function witnesses(getRelay) {
  const w = { sockets: [] };
  before(async () => {
    const relay = getRelay();
    const room = fresh("witness");
    w.sockets = [0, 1].map(() => io(relay.url, { forceNew: true, reconnection: false }));
    await Promise.all(w.sockets.map(connected));
    for (const s of w.sockets) await join(s, room);
  });
  after(() => {
    for (const s of w.sockets) s.disconnect();
  });
  w.check = async () => {
    const [a, b] = w.sockets;
    assert.ok(a.connected && b.connected, "a witness client was disconnected");
    const token = fresh("alive");
    const got = nextEvent(b, "alive", (t) => t === token);
    assert.deepEqual(await ack(a, "alive", token), { ok: true });
    await got;
  };
  return w;
}

/** Wrap a test body so that a failure also prints the relay's log lines from that test. */
function withLogs(getRelay, fn) {
  return async (t) => {
    const mark = getRelay().logs().length;
    try {
      await fn(t);
    } catch (err) {
      t.diagnostic(`relay log during this test:\n${getRelay().logs().slice(mark) || "(nothing)"}`);
      throw err;
    }
  };
}

// ---------------------------------------------------------------------------------------
// 1-3, 6: one relay with small limits
// ---------------------------------------------------------------------------------------

const MAX_PAYLOAD = 16000; // "16KB": a 10 KB room name still fits in one message
const MAX_EVENT = 2000; // "2KB"
const MAX_ATTACHMENTS = 2;

const SMALL = `
[engine]
max_payload = "16KB"
write_queue = 8

[namespaces."/"]
join = "any"
route = "rooms"
presence = true

[namespaces."/".limits]
max_event_size = "2KB"
max_attachments = ${MAX_ATTACHMENTS}
events_per_second = 1000
burst = 1000

[namespaces."/pattern"]
join = { pattern = "^[a-z]+$" }
# $members of rooms the client is not in, within the join pattern.
members = "all"
# Every namespace's max_event_size must fit in max_payload (the default is 64KB).
[namespaces."/pattern".limits]
max_event_size = "2KB"
max_attachments = ${MAX_ATTACHMENTS}
`;

describe("hostile input against small limits", () => {
  let relay;
  const getRelay = () => relay;
  before(async () => {
    relay = await startRelay(SMALL);
  });
  after(async () => {
    await relay?.stop();
  });
  const witness = witnesses(getRelay);

  describe("1. polling POST bodies over max_payload", () => {
    /** A polling socket.io client in a room with a WebSocket partner; returns both. */
    async function victimAndPartner() {
      const room = fresh("victim");
      const victim = client(relay, "/", { transports: ["polling"] });
      const partner = client(relay, "/", { transports: ["websocket"] });
      await Promise.all([connected(victim), connected(partner)]);
      await join(victim, room);
      await join(partner, room);
      return { victim, partner, sid: victim.io.engine.id, room };
    }

    /** The session survives: a valid POST is acted on, the client's own GETs and POSTs work. */
    async function assertSurvives({ victim, partner, sid }) {
      const url = `${relay.url}/socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(sid)}`;
      const token = fresh("injected");
      const injected = nextEvent(partner, "injected", (t) => t === token);
      const res = await http(url, { method: "POST", body: pollingBody([`2${JSON.stringify(["injected", token])}`]) });
      assert.deepEqual([res.status, res.body], [200, "ok"], "a valid POST after the refused one");
      await injected;

      const news = nextEvent(victim, "news", (t) => t === token);
      assert.deepEqual(await ack(partner, "news", token), { ok: true });
      await news;
      assert.deepEqual(await ack(victim, "reply", token), { ok: true });
      assert.equal(victim.connected, true, "the victim was disconnected");
      assert.equal(victim.io.engine.id, sid, "the victim had to open a new session");
    }

    it("with a Content-Length: 413 and the engine.io JSON body; the session survives", withLogs(getRelay, async () => {
      const pair = await victimAndPartner();
      const url = `${relay.url}/socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(pair.sid)}`;
      for (const size of [MAX_PAYLOAD + 1, 4 * MAX_PAYLOAD]) {
        const res = await http(url, { method: "POST", body: `4${"x".repeat(size - 1)}` });
        assertEngineError(res, 413, 3, `POST of ${size} bytes`, "Payload too large");
      }
      await loggedFor(relay, pair.sid, /over max_payload/);
      await assertSurvives(pair);
      await witness.check();
    }));

    it("chunked (no Content-Length): 413 and the engine.io JSON body; the session survives", withLogs(getRelay, async () => {
      const pair = await victimAndPartner();
      const path = `/socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(pair.sid)}`;
      for (const size of [MAX_PAYLOAD + 1, 4 * MAX_PAYLOAD]) {
        const res = await rawHttp(relay.port, { path, body: `4${"x".repeat(size - 1)}`, chunked: true });
        assertEngineError(res, 413, 3, `chunked POST of ${size} bytes`, "Payload too large");
      }
      await loggedFor(relay, pair.sid, /over max_payload/);
      await assertSurvives(pair);
      await witness.check();
    }));

    it("a body exactly at max_payload is accepted", withLogs(getRelay, async () => {
      const peer = await new PollingPeer(relay).open();
      await peer.connect();
      // "421" + ["$rooms","<pad>"] padded to exactly max_payload bytes; control events are
      // not subject to max_event_size, so the ack proves the body was read whole.
      const head = '421["$rooms","';
      const body = `${head}${"p".repeat(MAX_PAYLOAD - head.length - 2)}"]`;
      assert.equal(Buffer.byteLength(body), MAX_PAYLOAD);
      const res = await http(peer.url, { method: "POST", body });
      assert.deepEqual([res.status, res.body], [200, "ok"]);
      assert.match(await peer.next("the $rooms ack"), /^431\[\{"ok":true,"rooms":/);
    }));

    it("fetch streaming a body over max_payload gets to read the 413", withLogs(getRelay, async () => {
      const pair = await victimAndPartner();
      const url = `${relay.url}/socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(pair.sid)}`;
      const data = new TextEncoder().encode(`4${"x".repeat(4 * MAX_PAYLOAD)}`);
      // Whether the reset wins the race varies: several rounds make the outcome reliable.
      for (let round = 0; round < 5; round += 1) {
        // A Content-Length body larger than the socket buffers take before the server closes.
        const big = await http(url, { method: "POST", body: `4${"x".repeat(8_000_000)}` });
        assertEngineError(big, 413, 3, `round ${round}: POST of 8 MB with a Content-Length`, "Payload too large");
        // A streamed body: fetch sends it chunked.
        const stream = new ReadableStream({
          start(controller) {
            for (let i = 0; i < data.length; i += 4096) controller.enqueue(data.subarray(i, i + 4096));
            controller.close();
          },
        });
        const chunked = await http(url, { method: "POST", body: stream, duplex: "half" });
        assertEngineError(chunked, 413, 3, `round ${round}: chunked POST streamed by fetch`, "Payload too large");
      }
      await assertSurvives(pair);
    }));
  });

  describe("2. WebSocket messages over max_payload", () => {
    for (const [kind, message] of [
      ["text", () => `4${"x".repeat(MAX_PAYLOAD)}`],
      ["binary", () => Buffer.alloc(MAX_PAYLOAD + 1, 7)],
    ]) {
      it(`a ${kind} message of max_payload + 1 bytes: closed with 1009, others unaffected`, withLogs(getRelay, async () => {
        const peer = await new WsPeer(relay).open();
        cleanup.push(peer);
        await peer.connect();
        const bytes = Buffer.byteLength(message());
        assert.equal(bytes, MAX_PAYLOAD + 1);
        peer.send(message());
        assert.equal(await peer.closed(), 1009, "close code for a message over max_payload");
        await loggedFor(relay, peer.sid, /over max_payload/);
        await witness.check();
      }));
    }

    it("a message of exactly max_payload bytes is accepted", withLogs(getRelay, async () => {
      const peer = await new WsPeer(relay).open();
      cleanup.push(peer);
      await peer.connect();
      const head = '421["$rooms","';
      const frame = `${head}${"p".repeat(MAX_PAYLOAD - head.length - 2)}"]`;
      assert.equal(Buffer.byteLength(frame), MAX_PAYLOAD);
      peer.send(frame);
      const reply = await peer.next((f) => typeof f === "string" && f.startsWith("431"), "the $rooms ack");
      assert.match(reply, /^431\[\{"ok":true,"rooms":/);
      assert.equal(peer.closeCode, null);
    }));

    it("a socket.io client emitting over max_payload is disconnected; a client sharing its room is not", withLogs(getRelay, async () => {
      const room = fresh("big");
      const [big, other] = [client(relay, "/", { transports: ["websocket"] }), client(relay)];
      await Promise.all([connected(big), connected(other)]);
      await join(big, room);
      await join(other, room);
      const [sid, bigId] = [big.io.engine.id, big.id];
      const gone = nextEvent(big, "disconnect");
      const left = nextEvent(other, "$presence", (p) => p.room === room && p.action === "leave");
      big.emit("huge", "x".repeat(MAX_PAYLOAD));
      const [reason] = await gone;
      assert.equal(reason, "transport close");
      await loggedFor(relay, sid, /over max_payload/);
      assert.deepEqual(await left, [{ room, action: "leave", id: bigId, user: null, count: 1 }]);
      assert.equal((await ack(other, "$rooms")).ok, true);
      await witness.check();
    }));
  });

  describe("3. malformed Socket.IO packets close only that connection", () => {
    const placeholder = (n) => `{"_placeholder":true,"num":${n}}`;
    // [what, messages after CONNECT, the reason the relay logs]
    const CASES = [
      ["an unknown packet type digit", ["9[\"chat\"]"], /unknown packet type/],
      ["an unknown packet type 7", ["7"], /unknown packet type/],
      ["an empty Socket.IO packet", [""], /empty packet/],
      ["invalid JSON", ['2["chat",'], /JSON/i],
      ["trailing bytes after the JSON", ['2["chat"]xyz'], /trailing characters/],
      ["junk between the ack id and the JSON", ['21x["chat"]'], /JSON/],
      ["an EVENT that is not an array", ["2{}"], /not an array/],
      ["an EVENT with a non-string name", ['2[1,"x"]'], /event name not a string/],
      ["an EVENT with no name", ["2[]"], /empty array/],
      ["an absurd attachment count", [`59999999999999999999-["chat",${placeholder(0)}]`], /attachment/],
      ["an attachment count beyond 64 bits", [`5${"9".repeat(40)}-["chat",${placeholder(0)}]`], /attachment/],
      // The header alone is refused; the attachments are not sent (see the close-code test).
      [
        "more attachments than limits.max_attachments",
        [`5${MAX_ATTACHMENTS + 1}-["chat",${[0, 1, 2].map(placeholder).join(",")}]`],
        /attachment/,
      ],
      ["a placeholder beyond the announced count", [`51-["chat",${placeholder(5)}]`], /placeholder/],
      ["a binary frame when none is expected", [Buffer.from([1, 2, 3])], /binary/i],
      ["text while attachments are pending", [`51-["chat",${placeholder(0)}]`, '2["chat"]'], /attachment/],
      ["the reserved event name \"connect\"", ['2["connect"]'], /reserved/],
      ["the reserved event name \"disconnect\"", ['2["disconnect",1]'], /reserved/],
      ["the reserved event name \"newListener\"", ['2["newListener"]'], /reserved/],
      ["an ack id that overflows 64 bits", [`2${"9".repeat(30)}["chat"]`], /64 bits/],
      ["a CONNECT_ERROR from the client", ['4{"message":"x"}'], /CONNECT_ERROR/],
    ];

    for (const transport of ["websocket", "polling"]) {
      describe(`over ${transport}`, () => {
        for (const [what, messages, reason] of CASES) {
          it(what, withLogs(getRelay, async () => {
            // A bystander on its own connection, in a room with a partner: it must not notice.
            const room = fresh("bystander");
            const [bystander, partner] = [client(relay), client(relay)];
            await Promise.all([connected(bystander), connected(partner)]);
            await join(bystander, room);
            await join(partner, room);

            if (transport === "websocket") {
              const peer = await new WsPeer(relay).open();
              cleanup.push(peer);
              await peer.connect();
              peer.sendMessages(messages);
              assert.equal(await peer.closed(), 1002, "close code for a protocol error");
              const line = await loggedFor(relay, peer.sid, /protocol violation, closing connection/);
              assert.match(line, reason);
            } else {
              const peer = await new PollingPeer(relay).open();
              await peer.connect();
              const res = await peer.post(messages);
              assert.ok(
                (res.status === 200 && res.body === "ok") || res.status === 400,
                `POST answered ${res.status} ${res.body}`,
              );
              if (res.status === 400) assertEngineError(res, 400, 3, "POST of a malformed packet");
              await peer.assertClosed(what);
              const line = await loggedFor(relay, peer.sid, /protocol violation, closing connection/);
              assert.match(line, reason);
            }

            const token = fresh("after");
            const got = nextEvent(partner, "after", (t) => t === token);
            assert.deepEqual(await ack(bystander, "after", token), { ok: true });
            await got;
            await witness.check();
          }));
        }
      });
    }
  });

  it("the close code reaches a client that was still sending", withLogs(getRelay, async () => {
    const codes = { 1002: [], 1009: [] };
    for (let round = 0; round < 10; round += 1) {
      for (const [want, bad] of [[1002, "49"], [1009, `4${"x".repeat(MAX_PAYLOAD)}`]]) {
        const peer = await new WsPeer(relay).open();
        cleanup.push(peer);
        await peer.connect();
        peer.send(bad);
        // What a busy client has in flight when the relay gives up on it.
        for (let i = 0; i < 20; i += 1) peer.send(`42["more","${"y".repeat(1000)}"]`);
        codes[want].push(await peer.closed());
      }
    }
    assert.deepEqual(codes, { 1002: Array(10).fill(1002), 1009: Array(10).fill(1009) });
  }));

  describe("6. room names and event sizes", () => {
    it("$join refuses non-string, empty, over-long and reserved names, and stays usable", withLogs(getRelay, async () => {
      const [a] = [client(relay)];
      await connected(a);
      const refused = [
        ["a number", [42]],
        ["null", [null]],
        ["an object without a room", [{ name: "x" }]],
        ["an object whose room is not a string", [{ room: 42 }]],
        ["an object with a reserved room", [{ room: "$secret" }]],
        ["a history that is not a count", [{ room: "x", history: "all" }]],
        ["an array", [["x"]]],
        ["no argument", []],
        ["an empty string", [""]],
        ["a 10 KB name", ["r".repeat(10000)]],
        ["129 bytes (max_room_name 128)", ["r".repeat(129)]],
        ["130 bytes in 65 characters", ["é".repeat(65)]],
        ["a name starting with $", ["$secret"]],
        ["the name $", ["$"]],
      ];
      for (const [what, args] of refused) {
        assertRefused(await ack(a, "$join", ...args), `$join with ${what}`);
      }
      const rooms = await ack(a, "$rooms");
      assert.equal(rooms.ok, true);
      const names = new Set(refused.map(([, args]) => args[0]).filter((r) => typeof r === "string"));
      for (const r of rooms.rooms) assert.ok(!names.has(r.room), `a refused room is listed: ${r.room.slice(0, 40)}`);
      // The boundaries themselves are fine.
      const exact = `${fresh("e")}-`.padEnd(128, "r");
      assert.deepEqual(await ack(a, "$join", exact), { ok: true, room: exact, count: 1 });
      const wide = "é".repeat(64);
      assert.deepEqual(await ack(a, "$join", wide), { ok: true, room: wide, count: 1 });
      await ack(a, "$leave", wide);
      // $leave and $members check names the same way.
      assertRefused(await ack(a, "$leave", "r".repeat(10000)), "$leave with a 10 KB name");
      assertRefused(await ack(a, "$leave", 42), "$leave with a number");
      assertRefused(await ack(a, "$members", "$secret"), "$members of a $ name");
      assertRefused(await ack(a, "$members", ""), "$members of an empty name");
      assert.equal(a.connected, true);
      await witness.check();
    }));

    it("$join and $members of a room the namespace pattern forbids are refused", withLogs(getRelay, async () => {
      const [a, b] = [client(relay, "/pattern"), client(relay, "/pattern")];
      await Promise.all([connected(a), connected(b)]);
      await join(a, "lower");
      assertRefused(await ack(b, "$join", "Upper"), "$join Upper under ^[a-z]+$");
      assertRefused(await ack(b, "$members", "Upper"), "$members Upper under ^[a-z]+$");
      assertRefused(await ack(b, "$members", "with-dash"), "$members with-dash under ^[a-z]+$");
      const members = await ack(b, "$members", "lower");
      assert.equal(members.ok, true, JSON.stringify(members));
      assert.deepEqual(members.members.map((m) => m.id), [a.id]);
    }));

    it("an event exactly at max_event_size passes; one byte over is refused", withLogs(getRelay, async () => {
      const room = fresh("size");
      const [a, b] = [client(relay), client(relay)];
      await Promise.all([connected(a), connected(b)]);
      await join(a, room);
      await join(b, room);
      const sizedAtB = [];
      b.on("sized", (v) => sizedAtB.push(v));
      // The size is the packet's JSON payload (the array of name and arguments) plus the
      // attachments' bytes.
      const textArg = (n) => "x".repeat(n - JSON.stringify(["sized", ""]).length);
      const wideArg = (n) => "é".repeat((n - JSON.stringify(["sized", ""]).length) / 2);
      const binArg = (n) => Buffer.alloc(n - JSON.stringify(["sized", { _placeholder: true, num: 0 }]).length, 1);
      for (const [kind, arg, size] of [
        ["text", textArg, (v) => Buffer.byteLength(JSON.stringify(["sized", v]))],
        ["multi-byte text", wideArg, (v) => Buffer.byteLength(JSON.stringify(["sized", v]))],
        ["binary", binArg, (v) => JSON.stringify(["sized", { _placeholder: true, num: 0 }]).length + v.length],
      ]) {
        const at = arg(MAX_EVENT);
        assert.equal(size(at), MAX_EVENT, `${kind}: the test builds an event of exactly max_event_size`);
        const got = nextEvent(b, "sized");
        assert.deepEqual(await ack(a, "sized", at), { ok: true }, `${kind} event of exactly max_event_size`);
        assert.deepEqual(await got, [at]);

        const over = Buffer.isBuffer(at) ? Buffer.alloc(at.length + 1, 1) : `${at}x`;
        assert.equal(size(over), MAX_EVENT + 1);
        assertRefused(await ack(a, "sized", over), `${kind} event of max_event_size + 1`);
      }
      // Refused without an ack: $error, and the sender stays connected.
      const error = nextEvent(a, "$error");
      a.emit("sized", `${textArg(MAX_EVENT)}x`);
      const [body] = await error;
      assert.equal(body.event, "sized");
      assert.equal(a.connected, true);
      // None of the refused events reached b: a later event from a arrives after just the
      // three accepted ones (one sender's events arrive in order).
      const later = nextEvent(b, "later");
      assert.deepEqual(await ack(a, "later"), { ok: true });
      await later;
      assert.equal(sizedAtB.length, 3, "a refused event was delivered");
      await witness.check();
    }));
  });
});

describe("limits of one namespace hold when another namespace's are larger", () => {
  let relay;
  const getRelay = () => relay;
  before(async () => {
    relay = await startRelay(`
[namespaces."/"]
[namespaces."/".limits]
max_attachments = 2
events_per_second = 1000
burst = 1000

[namespaces."/roomy"]
[namespaces."/roomy".limits]
max_attachments = 10
events_per_second = 1000
burst = 1000
`);
  });
  after(async () => {
    await relay?.stop();
  });

  it("max_attachments", withLogs(getRelay, async () => {
    const three = [Buffer.from([1]), Buffer.from([2]), Buffer.from([3])];
    // Where 10 are allowed, 3 pass: the test's events are fine in themselves.
    const roomy = fresh("roomy");
    const [c, d] = [client(relay, "/roomy"), client(relay, "/roomy")];
    await Promise.all([connected(c), connected(d)]);
    await join(c, roomy);
    await join(d, roomy);
    const got = nextEvent(d, "bin");
    assert.deepEqual(await ack(c, "bin", ...three), { ok: true });
    assert.equal((await got).length, 3);

    // Where 2 are allowed, 3 must not be relayed: either the connection is closed (as when
    // no namespace allows more) or the event is refused.
    const room = fresh("strict");
    const [a, b] = [client(relay), client(relay)];
    await Promise.all([connected(a), connected(b)]);
    await join(a, room);
    await join(b, room);
    const delivered = [];
    b.on("bin", (...args) => delivered.push(args));
    const reply = await ack(a, "bin", ...three).catch((err) => `no ack: ${err.message}`);
    assert.notDeepEqual(reply, { ok: true }, "an event with 3 attachments was accepted on a namespace with max_attachments = 2");
    assert.deepEqual(delivered, []);
  }));
});

// ---------------------------------------------------------------------------------------
// 4. Engine.IO level
// ---------------------------------------------------------------------------------------

describe("4. hostile Engine.IO requests", () => {
  let relay;
  const getRelay = () => relay;
  before(async () => {
    // The default max_payload (1MB), so that bodies of many packets fit.
    relay = await startRelay(`
[engine]
write_queue = 8
[namespaces."/".limits]
events_per_second = 1000
burst = 1000
`);
  });
  after(async () => {
    await relay?.stop();
  });
  const witness = witnesses(getRelay);
  const base = () => `${relay.url}/socket.io/`;

  it("invalid UTF-8 in a polling body: 400 code 3, the session is closed", withLogs(getRelay, async () => {
    const peer = await new PollingPeer(relay).open();
    await peer.connect();
    const body = Buffer.from([0x34, 0x32, 0x5b, 0x22, 0xff, 0xfe, 0x22, 0x5d]); // 42["\xff\xfe"]
    const res = await http(peer.url, { method: "POST", body });
    assertEngineError(res, 400, 3, "POST of invalid UTF-8");
    await peer.assertClosed("after invalid UTF-8");
    await loggedFor(relay, peer.sid, /malformed polling payload.*UTF-8/);
    await witness.check();
  }));

  it("invalid UTF-8 in a WebSocket text frame: closed with 1007 and logged", withLogs(getRelay, async () => {
    const peer = await new WsPeer(relay).open();
    cleanup.push(peer);
    await peer.connect();
    // A text frame whose bytes are not UTF-8 (ws sends a Buffer as text without checking).
    peer.ws.send(Buffer.from([0x34, 0x32, 0x5b, 0x22, 0xff, 0xfe, 0x22, 0x5d]), { binary: false });
    assert.equal(await peer.closed(), 1007);
    await loggedFor(relay, peer.sid, /UTF-8|utf-8|utf8/);
    await witness.check();
  }));

  it("an unknown Engine.IO packet type: 400 code 3 over polling, 1002 over WebSocket", withLogs(getRelay, async () => {
    const polling = await new PollingPeer(relay).open();
    assertEngineError(await http(polling.url, { method: "POST", body: "9" }), 400, 3, "POST of packet type 9");
    await polling.assertClosed("after packet type 9");
    await loggedFor(relay, polling.sid, /malformed polling payload/);

    const ws = await new WsPeer(relay).open();
    cleanup.push(ws);
    ws.send("9");
    assert.equal(await ws.closed(), 1002);
    await loggedFor(relay, ws.sid, /malformed engine\.io packet/);
    await witness.check();
  }));

  it("a POST of 10 000 tiny packets is answered at once and the session goes on", withLogs(getRelay, async () => {
    const peer = await new PollingPeer(relay).open();
    const started = Date.now();
    const res = await http(peer.url, { method: "POST", body: Array(10000).fill("6").join("\x1e") });
    assert.deepEqual([res.status, res.body], [200, "ok"]);
    assert.ok(Date.now() - started < WAIT_MS, "10 000 NOOPs took too long");
    const sid = await peer.connect();
    assert.equal(typeof sid, "string");
    await witness.check();
  }));

  it("a POST of 100 000 tiny packets is refused with 400 code 3 without stalling anyone", withLogs(getRelay, async () => {
    const peer = await new PollingPeer(relay).open();
    await peer.connect();
    const res = await http(peer.url, { method: "POST", body: Array(100000).fill("6").join("\x1e") });
    assertEngineError(res, 400, 3, "POST of 100 000 packets");
    await peer.assertClosed("after 100 000 packets");
    await loggedFor(relay, peer.sid, /more than \d+ packets/);
    await witness.check();
  }));

  it("a POST of empty parts is refused with 400 code 3", withLogs(getRelay, async () => {
    const peer = await new PollingPeer(relay).open();
    const res = await http(peer.url, { method: "POST", body: "\x1e".repeat(50000) });
    assertEngineError(res, 400, 3, "POST of 50 000 separators");
    await peer.assertClosed("after a body of separators");
    await witness.check();
  }));

  it("a made-up sid: 400 {code 1, Session ID unknown} for GET, POST and WebSocket", withLogs(getRelay, async () => {
    for (const sid of ["AAAAAAAAAAAAAAAAAAAAAA", "", "x".repeat(5000), "../../etc/passwd", "%00%ff"]) {
      const url = `${base()}?EIO=4&transport=polling&sid=${sid}`;
      if (sid === "") {
        // An empty sid is a sid nobody has: the relay must not take it for a handshake.
        const res = await http(url);
        assert.equal(res.status, 400, `GET with an empty sid: ${res.status} ${res.body}`);
        continue;
      }
      assertEngineError(await http(url), 400, 1, `GET with sid ${sid.slice(0, 30)}`);
      assertEngineError(await http(url, { method: "POST", body: "40" }), 400, 1, `POST with sid ${sid.slice(0, 30)}`);
    }
    const ws = new WebSocket(`${base().replace(/^http/, "ws")}?EIO=4&transport=websocket&sid=AAAAAAAAAAAAAAAAAAAAAA`);
    const status = await withTimeout(
      new Promise((resolve) => {
        ws.on("unexpected-response", (_req, res) => resolve(res.statusCode));
        ws.on("open", () => resolve("open"));
        ws.on("error", () => {});
      }),
      WAIT_MS,
      "the answer to a WebSocket with a made-up sid",
    );
    ws.terminate();
    assert.equal(status, 400);
    await witness.check();
  }));

  it("the official handshake errors: flashsocket (0), POST (2), EIO=3 (5), websocket without upgrade (3)", withLogs(getRelay, async () => {
    assertEngineError(await http(`${base()}?EIO=4&transport=flashsocket`), 400, 0, "transport=flashsocket");
    assertEngineError(await http(`${base()}?EIO=4`), 400, 0, "no transport");
    assertEngineError(await http(`${base()}?EIO=4&transport=polling`, { method: "POST", body: "40" }), 400, 2, "POST handshake");
    assertEngineError(await http(`${base()}?EIO=4&transport=polling`, { method: "PUT", body: "40" }), 400, 2, "PUT handshake");
    assertEngineError(await http(`${base()}?EIO=3&transport=polling`), 400, 5, "EIO=3");
    assertEngineError(await http(`${base()}?EIO=4000000000000000000000&transport=polling`), 400, 5, "EIO huge");
    assertEngineError(await http(`${base()}?transport=polling`), 400, 5, "no EIO");
    assertEngineError(await http(`${base()}?EIO=4&transport=websocket`), 400, 3, "websocket without upgrade headers");
    await witness.check();
  }));

  it("concurrent GETs: one ends with a CLOSE packet, the others 400, and the session is gone", withLogs(getRelay, async () => {
    const peer = await new PollingPeer(relay).open();
    await peer.connect();
    // Three GETs at once: the protocol allows one. Whichever the relay takes first is ended
    // with a CLOSE packet; the others are refused with 400 (their bodies: the next test).
    const answers = await Promise.all([0, 1, 2].map((i) => http(`${peer.url}&t=${i}`)));
    const ok = answers.filter((a) => a.status === 200);
    assert.equal(ok.length, 1, `want exactly one 200: ${JSON.stringify(answers)}`);
    assert.equal(ok[0].body, "1", `the held GET ends with a CLOSE packet: ${JSON.stringify(answers)}`);
    for (const a of answers.filter((x) => x.status !== 200)) {
      assert.equal(a.status, 400, `an overlapping GET: ${JSON.stringify(a)}`);
    }
    assertEngineError(await peer.get(), 400, 1, "a GET after the session was closed");
    await loggedFor(relay, peer.sid, /concurrent polling GETs/);
    await witness.check();
  }));

  // What the official server (socket.io 4.8.1) answers to the same three GETs, every time:
  // the held one 200 "1"; the one that overlaps it 400 with an empty body (engine.io's
  // "overlap from client" error writes no JSON); the last, arriving after that closed the
  // session, 400 "Session ID unknown".
  it("concurrent GETs get the reference's answers: the overlap an empty 400, a later GET code 1", {
    todo: 'iorelay answers the overlapping GET 400 {"code":3,"message":"Bad request"}',
  }, withLogs(getRelay, async () => {
    const peer = await new PollingPeer(relay).open();
    await peer.connect();
    const answers = await Promise.all([0, 1, 2].map((i) => http(`${peer.url}&t=${i}`)));
    const got = answers.map((a) => [a.status, a.body]).sort();
    assert.deepEqual(got, [
      [200, "1"],
      [400, ""],
      [400, JSON.stringify({ code: 1, message: ENGINE_ERRORS[1] })],
    ]);
  }));
});

// ---------------------------------------------------------------------------------------
// 5. Slow consumers
// ---------------------------------------------------------------------------------------

describe("5. a slow consumer", () => {
  const EVENTS = 500;
  // 500 events of this size are 15 MB: far more than the kernel buffers a paused reader's
  // connection (a few MB), so the slow reader's queue has to fill.
  const EVENT_BYTES = 30000;
  let relay;
  const getRelay = () => relay;
  before(async () => {
    relay = await startRelay(
      `
[engine]
max_payload = "64KB"
write_queue = 8

[namespaces."/"]
presence = true

[namespaces."/".limits]
max_event_size = "64KB"
events_per_second = 100000
burst = 100000
`,
      // The slow-consumer drop is logged at debug.
      { env: { IORELAY_LOG__LEVEL: "info,iorelay=debug" } },
    );
  });
  after(async () => {
    await relay?.stop();
  });

  /**
   * A raw WebSocket subscriber in `room` that stops reading, a socket.io-client subscriber
   * that counts, and a socket.io-client publisher in the same room.
   */
  async function setUp(room) {
    const slow = await new WsPeer(relay).open();
    cleanup.push(slow);
    const slowId = await slow.connect();
    slow.send(`420${JSON.stringify(["$join", room])}`);
    const joined = await slow.next((f) => typeof f === "string" && f.startsWith("430"), "the $join ack");
    assert.deepEqual(JSON.parse(joined.slice(3)), [{ ok: true, room, count: 1 }]);

    const fast = client(relay, "/", { transports: ["websocket"] });
    const publisher = client(relay, "/", { transports: ["websocket"] });
    await Promise.all([connected(fast), connected(publisher)]);
    await join(fast, room);
    await join(publisher, room);
    const received = [];
    fast.on("tick", (i, pad) => received.push([i, pad.length]));
    return { slow, slowId, fast, publisher, received };
  }

  /** The socket ids listed by $members of `room`. */
  async function memberIds(socket, room) {
    const reply = await ack(socket, "$members", room);
    assert.equal(reply.ok, true, JSON.stringify(reply));
    return reply.members.map((m) => m.id).sort();
  }

  it("is dropped; the publisher and a fast subscriber are not held up", withLogs(getRelay, async () => {
    const room = fresh("feed");
    const { slow, slowId, fast, publisher, received } = await setUp(room);
    const slowLeft = nextEvent(fast, "$presence", (p) => p.room === room && p.action === "leave" && p.id === slowId, 30000);
    slowLeft.catch(() => {});

    slow.ws._socket.pause();
    const pad = "x".repeat(EVENT_BYTES);
    // Each event waits for the previous one's ack: a publisher that takes its answers.
    for (let i = 0; i < EVENTS; i += 1) {
      const reply = await ack(publisher, "tick", i, pad);
      assert.deepEqual(reply, { ok: true }, `ack of event ${i}`);
    }
    await waitUntil(() => received.length >= EVENTS, `${EVENTS} events at the fast subscriber (has ${received.length})`);
    assert.deepEqual(
      received.map(([i]) => i),
      Array.from({ length: EVENTS }, (_, i) => i),
      "the fast subscriber got every event once, in order",
    );
    assert.ok(received.every(([, len]) => len === EVENT_BYTES), "an event arrived truncated");

    // The relay gave up on the slow one: its leave is announced and it is no member any more.
    const [left] = await slowLeft;
    assert.deepEqual(left, { room, action: "leave", id: slowId, user: null, count: 2 });
    assert.deepEqual(await memberIds(fast, room), [fast.id, publisher.id].sort());
    await loggedFor(relay, slow.sid, /slow consumer/);
    assert.ok(fast.connected && publisher.connected);

    // Once it reads again it finds its connection closed by the server.
    slow.ws._socket.resume();
    const code = await withTimeout(
      new Promise((resolve) => (slow.closeCode !== null ? resolve(slow.closeCode) : slow.ws.once("close", resolve))),
      WAIT_MS,
      "the slow subscriber's connection to end once it reads again",
    );
    assert.ok([1000, 1001, 1006, 1008, 1011, 1013].includes(code), `close code ${code}`);
    const ticks = slow.frames.filter((f) => typeof f === "string" && f.startsWith('42["tick"')).length;
    assert.ok(ticks < EVENTS, `the dropped subscriber still got all ${ticks} events`);
  }));

  it("releases the dropped consumer's connection while it stays paused", {
    skip: existsSync("/proc/net/tcp") ? false : "needs Linux /proc/net/tcp",
  }, withLogs(getRelay, async () => {
    const room = fresh("stuck");
    const { slow, slowId, fast, publisher } = await setUp(room);
    const slowLeft = nextEvent(fast, "$presence", (p) => p.room === room && p.action === "leave" && p.id === slowId, 30000);
    slowLeft.catch(() => {});
    slow.ws._socket.pause();
    const pad = "x".repeat(EVENT_BYTES);
    for (let i = 0; i < EVENTS; i += 1) assert.deepEqual(await ack(publisher, "tick", i, pad), { ok: true });
    await slowLeft;

    // The relay's end of the slow connection: local port = relay port, remote port = the
    // slow client's. Held while its inode is not 0 (an orphaned socket being torn down by
    // the kernel has inode 0 and no longer belongs to the relay).
    const hex = (p) => p.toString(16).toUpperCase().padStart(4, "0");
    const local = `:${hex(relay.port)}`;
    const heldFrom = (peerPort) => () =>
      readFileSync("/proc/net/tcp", "utf8")
        .split("\n")
        .map((l) => l.trim().split(/\s+/))
        .some((f) => f[1]?.endsWith(local) && f[2]?.endsWith(`:${hex(peerPort)}`) && f[9] !== "0");
    const held = heldFrom(slow.ws._socket.localPort);
    // The same look-up finds the fast subscriber's live connection.
    assert.ok(heldFrom(fast.io.engine.transport.ws._socket.localPort)(), "the /proc/net/tcp look-up finds nothing");
    // Bounded: a close grace of a second or two is fine; holding it indefinitely is not.
    await waitUntil(() => !held(), "the relay to let go of the slow connection", 5000);
  }));

  it("a burst bigger than write_queue drops nobody who keeps reading", withLogs(getRelay, async () => {
    const room = fresh("burst");
    const fast = client(relay, "/", { transports: ["websocket"] });
    const publisher = client(relay, "/", { transports: ["websocket"] });
    await Promise.all([connected(fast), connected(publisher)]);
    await join(fast, room);
    await join(publisher, room);
    const received = [];
    fast.on("tick", (i) => received.push(i));
    const replies = await Promise.all(
      Array.from({ length: EVENTS }, (_, i) => ack(publisher, "tick", i, "x".repeat(1000)).catch((e) => e.message)),
    );
    assert.deepEqual(replies.filter((r) => r?.ok !== true).slice(0, 3), [], "acks that did not come back");
    await waitUntil(() => received.length >= EVENTS, `${EVENTS} events at the fast subscriber (has ${received.length})`);
    assert.deepEqual(received, Array.from({ length: EVENTS }, (_, i) => i));
  }));
});

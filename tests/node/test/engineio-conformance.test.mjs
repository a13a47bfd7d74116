// Engine.IO v4 conformance: our own reproduction of every check in the official
// `docs/engine.io-protocol/v4-test-suite` (socketio/socket.io), run against the real binary
// started with config/conformance.toml. That config serves a bare Engine.IO echo at
// /engine.io/ (every message packet comes straight back) with pingInterval 300 ms,
// pingTimeout 200 ms and maxPayload 1000000.
//
// Where the official suite asserts timing (a ping after pingInterval, a session gone after
// pingInterval + pingTimeout) we wait for the event itself, bounded generously. Where the
// official suite tolerates several answers, we pin the one the official Node server gives
// (TEST_REFERENCE_SERVER runs this file against it, see lib/relay.mjs); a test marked
// `todo` is one where iorelay still answers otherwise. The exact expectations are listed in
// tests/node/CONFORMANCE.md. The raw HTTP and WebSocket helpers are in lib/raw.mjs (shared
// with socketio-conformance).
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { connect as tcpConnect } from "node:net";
import { startConformanceServer } from "../lib/relay.mjs";
import { rawEngineIO, withTimeout } from "../lib/raw.mjs";

const PING_INTERVAL = 300;
const PING_TIMEOUT = 200;
const MAX_PAYLOAD = 1000000;
const HANDSHAKE_KEYS = ["maxPayload", "pingInterval", "pingTimeout", "sid", "upgrades"];

// Bound for anything the server should do "soon"; far above every protocol timer above, so a
// slow machine does not fail a test, yet a missing behaviour fails with a clear message
// instead of the runner's global timeout.
const WAIT_MS = 3000;

let relay;
let base;
let wsBase;
const { http, poll, push, openPollingSession, rawPoll, Peer, assertHandshake, openWsSession, terminateAll } = rawEngineIO({
  base: () => base,
  waitMs: WAIT_MS,
  handshake: { keys: HANDSHAKE_KEYS, pingInterval: PING_INTERVAL, pingTimeout: PING_TIMEOUT, maxPayload: MAX_PAYLOAD },
  openWhat: "the open packet",
});

before(async () => {
  relay = await startConformanceServer();
  base = `${relay.url}/engine.io/`;
  wsBase = base.replace(/^http/, "ws");
});

after(async () => {
  await relay?.stop();
});

afterEach(() => terminateAll());

/** Upgrades a polling session to WebSocket, as the official client does. */
async function upgrade(sid) {
  const peer = new Peer(`${wsBase}?EIO=4&transport=websocket&sid=${sid}`);
  await peer.opened;
  peer.send("2probe");
  assert.equal(await peer.next("3probe"), "3probe");
  peer.send("5");
  return peer;
}

describe("Engine.IO v4 conformance (/engine.io/ echo)", () => {
  describe("handshake over HTTP long-polling", () => {
    it("opens a session with the configured timers and a websocket upgrade", async () => {
      const { status, body } = await http("EIO=4&transport=polling");
      assert.equal(status, 200);
      assertHandshake(body, ["websocket"]);
    });

    it("answers 400 to a missing or invalid EIO", async () => {
      assert.equal((await http("transport=polling")).status, 400);
      assert.equal((await http("EIO=abc&transport=polling")).status, 400);
    });

    it("answers 400 to a missing or unknown transport", async () => {
      assert.equal((await http("EIO=4")).status, 400);
      assert.equal((await http("EIO=4&transport=abc")).status, 400);
    });

    it("answers 400 to a handshake that is not a GET", async () => {
      assert.equal((await http("EIO=4&transport=polling", { method: "POST" })).status, 400);
      assert.equal((await http("EIO=4&transport=polling", { method: "PUT" })).status, 400);
    });
  });

  describe("handshake over WebSocket", () => {
    it("opens a session with no upgrades", async () => {
      await openWsSession();
    });

    it("closes a WebSocket with a missing or invalid EIO", async () => {
      await new Peer(`${wsBase}?transport=websocket`).waitClosed();
      await new Peer(`${wsBase}?EIO=abc&transport=websocket`).waitClosed();
    });

    it("closes a WebSocket with a missing or unknown transport", async () => {
      await new Peer(`${wsBase}?EIO=4`).waitClosed();
      await new Peer(`${wsBase}?EIO=4&transport=abc`).waitClosed();
    });
  });

  describe("messages over HTTP long-polling", () => {
    it("echoes a payload of one text packet", async () => {
      const sid = await openPollingSession();
      assert.deepEqual(await push(sid, "4hello"), { status: 200, body: "ok" });
      assert.deepEqual(await poll(sid), { status: 200, body: "4hello" });
    });

    it("echoes a payload of several text packets in one poll", async () => {
      const sid = await openPollingSession();
      const payload = "4test1\x1e4test2\x1e4test3";
      assert.deepEqual(await push(sid, payload), { status: 200, body: "ok" });
      assert.deepEqual(await poll(sid), { status: 200, body: payload });
    });

    it("echoes a payload mixing a text and a base64 binary packet", async () => {
      const sid = await openPollingSession();
      const payload = "4hello\x1ebAQIDBA==";
      assert.deepEqual(await push(sid, payload), { status: 200, body: "ok" });
      assert.deepEqual(await poll(sid), { status: 200, body: payload });
    });

    it("closes the session on a payload that is not a packet", async () => {
      const sid = await openPollingSession();
      await push(sid, "abc").catch(() => {}); // what it answers is the next test's subject
      assert.equal((await poll(sid)).status, 400, "the session must be gone");
    });

    // The official suite writes "expect 400" for this POST inside a try/catch that also
    // swallows its own assertion; the Node server answers 200 "ok" and closes the session.
    it("answers 200 ok to the POST of a payload that is not a packet, as the reference does", {
      todo: 'iorelay answers 400 {"code":3,"message":"Bad request"} (the session ends all the same)',
    }, async () => {
      const sid = await openPollingSession();
      assert.deepEqual(await push(sid, "abc"), { status: 200, body: "ok" });
    });

    it("closes the session on a second concurrent poll", async () => {
      const sid = await openPollingSession();
      // The second GET leaves once the first is written; whichever of the two the server
      // takes first is the pending poll, ended with a close packet, and the other is the
      // overlap, refused with 400 (the reference's status; its body is empty, see hostile).
      const first = rawPoll(sid);
      await first.sent;
      const second = rawPoll(sid, "&t=burst");
      const answers = await withTimeout(Promise.all([first.response, second.response]), WAIT_MS, "both polls");
      const [held, overlap] = answers[0].status === 200 ? answers : [...answers].reverse();
      assert.deepEqual(held, { status: 200, body: "1" }, "the pending poll is ended with a close packet");
      assert.equal(overlap.status, 400, `the overlapping poll answered ${JSON.stringify(overlap)}`);
      assert.equal((await poll(sid)).status, 400, "the session must be gone");
    });

    // Not in the official suite: the reference refuses a POST while another POST of the
    // session is still being read ("data request overlap": 400, and the session closes).
    it("refuses a POST while another POST's body is still being read, and closes the session", async () => {
      const sid = await openPollingSession();
      const url = new URL(`${base}?EIO=4&transport=polling&sid=${sid}`);
      const slow = tcpConnect(Number(url.port), url.hostname);
      slow.on("error", () => {});
      try {
        await new Promise((resolve) => slow.once("connect", resolve));
        // Headers and the first bytes of a body that never completes.
        await new Promise((resolve) =>
          slow.write(
            `POST ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\n` +
              "Content-Type: text/plain;charset=UTF-8\r\nContent-Length: 1000\r\n\r\n4hel",
            resolve,
          ),
        );
        // Nothing on the wire says when the server has begun reading that body; a full
        // request/response on another connection after it was written and accepted lets
        // the server's accept loop reach it first (see "Arrival order" in CONFORMANCE.md).
        await openPollingSession();
        const overlap = await push(sid, "4hello");
        assert.equal(overlap.status, 400, `the overlapping POST answered ${JSON.stringify(overlap)}`);
        assert.equal((await poll(sid)).status, 400, "the session must be gone");
      } finally {
        slow.destroy();
      }
    });

    it("closes the session when the client aborts its pending poll", {
      todo: "iorelay misses some aborts made right after the request is written (2 in 40 in a loop here): the session then ends by ping timeout",
    }, async () => {
      const sid = await openPollingSession();
      const pending = rawPoll(sid);
      await pending.sent;
      pending.abort();
      // The reference closes the session as soon as it sees the connection gone. Waiting for
      // that log line, rather than polling, also keeps a server that still held the dead
      // poll from passing for the wrong reason (by answering our GET as an overlap).
      const line = await relay.logLine(new RegExp(`session closed.*sid=${sid}`), WAIT_MS);
      assert.match(line, /reason="?transport_error/, "closed because its poll was abandoned");
      assert.equal((await poll(sid)).status, 400, "the session must be gone");
    });
  });

  describe("messages over WebSocket", () => {
    it("echoes a text packet", async () => {
      const peer = await openWsSession();
      peer.send("4hello");
      assert.equal(await peer.next("the echo"), "4hello");
    });

    it("echoes a binary packet as a binary frame", async () => {
      const peer = await openWsSession();
      peer.send(Uint8Array.from([1, 2, 3, 4]));
      assert.deepEqual(await peer.next("the echo"), Buffer.from([1, 2, 3, 4]));
    });

    it("closes the connection on a frame that is not a packet", async () => {
      const peer = await openWsSession();
      peer.send("abc");
      await peer.waitClosed();
    });
  });

  describe("heartbeat over HTTP long-polling", () => {
    it("sends a ping every pingInterval while the client answers pongs", async () => {
      const sid = await openPollingSession();
      for (let i = 0; i < 3; i++) {
        assert.deepEqual(await poll(sid), { status: 200, body: "2" }, `ping ${i + 1}`);
        assert.deepEqual(await push(sid, "3"), { status: 200, body: "ok" }, `pong ${i + 1}`);
      }
    });

    it("closes a session that does not answer the ping within pingTimeout", async () => {
      const sid = await openPollingSession();
      // Polling on, never ponging: the first poll gets the ping, the next is held until the
      // ping timeout ends it with a close packet, and the session is gone.
      assert.deepEqual(await poll(sid), { status: 200, body: "2" }, "the ping");
      assert.deepEqual(await poll(sid), { status: 200, body: "1" }, "the held poll, ended by the ping timeout");
      assert.equal((await poll(sid)).status, 400, "the session must be gone");
    });
  });

  describe("heartbeat over WebSocket", () => {
    it("sends a ping every pingInterval while the client answers pongs", async () => {
      const peer = await openWsSession();
      for (let i = 0; i < 3; i++) {
        assert.equal(await peer.next(`ping ${i + 1}`), "2");
        peer.send("3");
      }
    });

    it("closes a connection that does not answer the ping within pingTimeout", async () => {
      const peer = new Peer(`${wsBase}?EIO=4&transport=websocket`);
      await peer.waitClosed();
    });
  });

  describe("close", () => {
    it("over polling: a close packet ends the pending poll with a noop and the session", async () => {
      const sid = await openPollingSession();
      // The close leaves once the poll is written, so the server has the poll first (the
      // official suite waits 5 ms instead). Should the close overtake it, iorelay still
      // answers that poll the noop: it keeps a session closed over polling listed for a
      // moment, for a GET sent alongside the close.
      const pending = rawPoll(sid);
      await pending.sent;
      const closing = await push(sid, "1");
      assert.equal(closing.status, 200, `POST "1" answered ${closing.status}`);
      const ended = await withTimeout(pending.response, WAIT_MS, "the pending poll");
      assert.deepEqual(ended, { status: 200, body: "6" });
      assert.equal((await poll(sid)).status, 400, "the session must be gone");
    });

    it("over WebSocket: a close packet closes the connection", async () => {
      const peer = await openWsSession();
      peer.send("1");
      await peer.waitClosed();
    });
  });

  describe("upgrade from polling to WebSocket", () => {
    it("answers the probe, ends the poll with a noop, then carries messages", async () => {
      const sid = await openPollingSession();
      const peer = new Peer(`${wsBase}?EIO=4&transport=websocket&sid=${sid}`);
      await peer.opened;
      peer.send("2probe");
      assert.equal(await peer.next("3probe"), "3probe");
      assert.deepEqual(await poll(sid), { status: 200, body: "6" }, "a poll during the upgrade gets a noop");
      peer.send("5");
      peer.send("4hello");
      assert.equal(await peer.next("the echo over WebSocket"), "4hello");
    });

    it("refuses polling requests for an upgraded session", async () => {
      const sid = await openPollingSession();
      const peer = await upgrade(sid);
      assert.equal((await poll(sid)).status, 400);
      peer.send("4hello");
      assert.equal(await peer.next("the echo over WebSocket"), "4hello");
    });

    it("refuses a second WebSocket for an upgraded session", async () => {
      const sid = await openPollingSession();
      const peer = await upgrade(sid);
      const second = new Peer(`${wsBase}?EIO=4&transport=websocket&sid=${sid}`);
      await second.waitClosed();
      // The official suite sets no "error" listener on this socket, so a refused handshake
      // (HTTP 400) is an uncaught error there: accept the WebSocket, then close it.
      assert.ok(second.wasOpen, `second WebSocket refused at the handshake (${second.error?.message})`);
      peer.send("4hello");
      assert.equal(await peer.next("the echo over WebSocket"), "4hello");
    });
  });
});

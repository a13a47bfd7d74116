// Socket.IO v5 conformance: our own reproduction of every check in the official
// `docs/socket.io-protocol/v5-test-suite` (socketio/socket.io), run against the real binary
// started with config/conformance.toml. That config makes iorelay the suite's reference
// server: namespaces "/" and "/custom" only; on each namespace connect the server emits
// "auth" with the client's CONNECT payload ({} when none) as its first event; on "/" a
// "message" comes back to its sender as "message-back" and "message-with-ack" is acked with
// its own arguments; pingInterval 300 ms, pingTimeout 200 ms, maxPayload 1000000,
// connectTimeout 1000 ms, no connection-state recovery.
//
// The suite talks raw Engine.IO/Socket.IO frames over a WebSocket (and plain HTTP for the
// Engine.IO part), so do we (helpers in lib/raw.mjs). Where it asserts timing we wait for
// the event, bounded generously. Where the official suite tolerates several answers, we pin
// the one the official Node server gives (TEST_REFERENCE_SERVER runs this file against it,
// see lib/relay.mjs). The exact expectations are listed in tests/node/CONFORMANCE.md.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { startConformanceServer } from "../lib/relay.mjs";
import { rawEngineIO, withTimeout } from "../lib/raw.mjs";

const PING_INTERVAL = 300;
const PING_TIMEOUT = 200;
const MAX_PAYLOAD = 1000000;
const HANDSHAKE_KEYS = ["maxPayload", "pingInterval", "pingTimeout", "sid", "upgrades"];

// Bound for anything the server should do "soon": far above every protocol timer (the
// longest is connectTimeout, 1000 ms), so slowness does not fail a test but a missing
// behaviour fails with a clear message rather than the runner's global timeout.
const WAIT_MS = 3000;

let relay;
let base;
let wsBase;
const { http, poll, push, openPollingSession, rawPoll, Peer, assertHandshake, openWsSession, terminateAll } = rawEngineIO({
  base: () => base,
  waitMs: WAIT_MS,
  handshake: { keys: HANDSHAKE_KEYS, pingInterval: PING_INTERVAL, pingTimeout: PING_TIMEOUT, maxPayload: MAX_PAYLOAD },
  openWhat: "the Engine.IO open packet",
});

before(async () => {
  relay = await startConformanceServer();
  base = `${relay.url}/socket.io/`;
  wsBase = base.replace(/^http/, "ws");
});

after(async () => {
  await relay?.stop();
});

afterEach(() => terminateAll());

/**
 * Checks a CONNECT reply: `40` + namespace prefix + a payload whose only key is a
 * non-empty string sid (no "pid": connection-state recovery is off).
 */
function assertConnected(frame, nspPrefix = "") {
  const head = `40${nspPrefix}`;
  assert.equal(typeof frame, "string");
  assert.ok(frame.startsWith(head), `expected ${head}{"sid":…}, got ${JSON.stringify(frame)}`);
  const payload = JSON.parse(frame.slice(head.length));
  assert.deepEqual(Object.keys(payload), ["sid"], `CONNECT payload ${frame.slice(head.length)}`);
  assert.equal(typeof payload.sid, "string");
  assert.ok(payload.sid.length > 0);
}

/** Connects `/` over WebSocket; consumes the open packet, the CONNECT reply and "auth". */
async function connectMain() {
  const peer = await openWsSession();
  peer.send("40");
  assertConnected(await peer.next("the CONNECT reply"));
  assert.equal(await peer.next('the "auth" event'), '42["auth",{}]');
  return peer;
}

describe("Socket.IO v5 conformance (/socket.io/, namespaces / and /custom)", () => {
  describe("Engine.IO handshake over HTTP long-polling", () => {
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

  describe("Engine.IO handshake over WebSocket", () => {
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

  describe("Engine.IO heartbeat", () => {
    it("over polling: pings every pingInterval while the client answers pongs", async () => {
      const sid = await openPollingSession();
      for (let i = 0; i < 3; i++) {
        assert.deepEqual(await poll(sid), { status: 200, body: "2" }, `ping ${i + 1}`);
        assert.equal((await push(sid, "3")).status, 200, `pong ${i + 1}`);
      }
    });

    it("over polling: closes a session that does not answer the ping", async () => {
      const sid = await openPollingSession();
      // Never ponging: the first poll gets the ping, the next is held until the ping
      // timeout ends it with a close packet, and the session is gone.
      assert.deepEqual(await poll(sid), { status: 200, body: "2" }, "the ping");
      assert.deepEqual(await poll(sid), { status: 200, body: "1" }, "the held poll, ended by the ping timeout");
      assert.equal((await poll(sid)).status, 400, "the session must be gone");
    });

    it("over WebSocket: pings every pingInterval while the client answers pongs", async () => {
      const peer = await openWsSession();
      for (let i = 0; i < 3; i++) {
        assert.equal(await peer.next(`ping ${i + 1}`), "2");
        peer.send("3");
      }
    });

    it("over WebSocket: closes a connection that does not answer the ping", async () => {
      await new Peer(`${wsBase}?EIO=4&transport=websocket`).waitClosed();
    });
  });

  describe("Engine.IO close", () => {
    it("over polling: a close packet ends the pending poll with a noop and the session", async () => {
      const sid = await openPollingSession();
      // The close leaves once the poll is written (the official suite waits 5 ms instead);
      // see engineio-conformance for why the order the server reads them in is safe.
      const pending = rawPoll(sid);
      await pending.sent;
      assert.equal((await push(sid, "1")).status, 200);
      assert.deepEqual(await withTimeout(pending.response, WAIT_MS, "the pending poll"), { status: 200, body: "6" });
      assert.equal((await poll(sid)).status, 400, "the session must be gone");
    });

    it("over WebSocket: a close packet closes the connection", async () => {
      const peer = await openWsSession();
      peer.send("1");
      await peer.waitClosed();
    });
  });

  describe("Engine.IO upgrade", () => {
    // The suite sends "2probe" and "5" back to back, without waiting for "3probe".
    async function upgradeEagerly(sid) {
      const peer = new Peer(`${wsBase}?EIO=4&transport=websocket&sid=${sid}`);
      await peer.opened;
      peer.send("2probe");
      peer.send("5");
      assert.equal(await peer.next("3probe"), "3probe");
      return peer;
    }

    it("answers the probe and completes the upgrade", async () => {
      const sid = await openPollingSession();
      const peer = new Peer(`${wsBase}?EIO=4&transport=websocket&sid=${sid}`);
      await peer.opened;
      peer.send("2probe");
      assert.equal(await peer.next("3probe"), "3probe");
      peer.send("5");
      // Beyond the suite, which stops here: the upgraded transport carries Socket.IO.
      peer.send("40");
      assertConnected(await peer.nextPacket("the CONNECT reply over WebSocket"));
    });

    it("refuses polling requests for an upgraded session", async () => {
      const sid = await openPollingSession();
      await upgradeEagerly(sid);
      assert.equal((await poll(sid)).status, 400);
    });

    it("refuses a second WebSocket for an upgraded session", async () => {
      const sid = await openPollingSession();
      await upgradeEagerly(sid);
      const second = new Peer(`${wsBase}?EIO=4&transport=websocket&sid=${sid}`);
      await second.waitClosed();
      // The official suite sets no "error" listener on this socket, so a refused handshake
      // (HTTP 400) is an uncaught error there: accept the WebSocket, then close it.
      assert.ok(second.wasOpen, `second WebSocket refused at the handshake (${second.error?.message})`);
    });
  });

  describe("Socket.IO connect", () => {
    it("connects the main namespace and emits auth {}", async () => {
      await connectMain();
    });

    it("connects the main namespace with a payload and emits it back as auth", async () => {
      const peer = await openWsSession();
      peer.send('40{"token":"123"}');
      assertConnected(await peer.next("the CONNECT reply"));
      assert.equal(await peer.next('the "auth" event'), '42["auth",{"token":"123"}]');
    });

    it("connects /custom and emits auth {}", async () => {
      const peer = await openWsSession();
      peer.send("40/custom,");
      assertConnected(await peer.next("the CONNECT reply"), "/custom,");
      assert.equal(await peer.next('the "auth" event'), '42/custom,["auth",{}]');
    });

    it("connects /custom with a payload and emits it back as auth", async () => {
      const peer = await openWsSession();
      peer.send('40/custom,{"token":"abc"}');
      assertConnected(await peer.next("the CONNECT reply"), "/custom,");
      assert.equal(await peer.next('the "auth" event'), '42/custom,["auth",{"token":"abc"}]');
    });

    it("refuses an unknown namespace with CONNECT_ERROR Invalid namespace", async () => {
      const peer = await openWsSession();
      peer.send("40/random");
      assert.equal(await peer.next("the CONNECT_ERROR"), '44/random,{"message":"Invalid namespace"}');
    });

    it("closes the connection on an invalid first packet", async () => {
      const peer = await openWsSession();
      peer.send("4abc");
      await peer.waitClosed();
    });

    it("closes the connection when no CONNECT arrives", async () => {
      // As in the suite: no pong either, so a ping timeout may close it first.
      const peer = new Peer(`${wsBase}?EIO=4&transport=websocket`);
      await peer.waitClosed();
    });

    it("closes the connection when no CONNECT arrives within connectTimeout, pongs or not", async () => {
      // Beyond the suite: answering every ping rules out the ping timeout, so only the
      // 1000 ms connect timeout can close this one.
      const peer = await openWsSession();
      await peer.waitClosed(WAIT_MS, { pong: true });
      assert.ok(
        peer.frames.every((f) => f === "2"),
        `nothing but pings before the close, got ${JSON.stringify(peer.frames)}`,
      );
    });
  });

  describe("Socket.IO disconnect", () => {
    it("a DISCONNECT from / gets no answer and the Engine.IO session lives on", async () => {
      const peer = await connectMain();
      peer.send("41");
      assert.equal(await peer.next("the next ping"), "2", "the next frame after 41 is the next ping");
    });

    it("connects then disconnects /custom while / keeps working", async () => {
      const peer = await connectMain();
      assert.equal(await peer.next("the first ping"), "2");
      peer.send("3");
      peer.send("40/custom");
      assertConnected(await peer.next("the /custom CONNECT reply"), "/custom,");
      assert.equal(await peer.next('the /custom "auth" event'), '42/custom,["auth",{}]');
      peer.send("41/custom");
      peer.send('42["message","message to main namespace"]');
      assert.equal(await peer.next("message-back"), '42["message-back","message to main namespace"]');
    });
  });

  describe("Socket.IO messages", () => {
    it("sends message back as message-back with the same arguments", async () => {
      const peer = await connectMain();
      peer.send('42["message",1,"2",{"3":[true]}]');
      assert.equal(await peer.next("message-back"), '42["message-back",1,"2",{"3":[true]}]');
    });

    it("sends a message with binary attachments back with its attachments", async () => {
      const peer = await connectMain();
      peer.send('452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
      peer.send(Uint8Array.from([1, 2, 3]));
      peer.send(Uint8Array.from([4, 5, 6]));
      assert.equal(
        await peer.nextPacket("the BINARY_EVENT header"),
        '452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
      );
      assert.deepEqual(await peer.nextPacket("attachment 0"), Buffer.from([1, 2, 3]));
      assert.deepEqual(await peer.nextPacket("attachment 1"), Buffer.from([4, 5, 6]));
    });

    it("acks message-with-ack with the same arguments", async () => {
      const peer = await connectMain();
      peer.send('42456["message-with-ack",1,"2",{"3":[false]}]');
      assert.equal(await peer.next("the ACK"), '43456[1,"2",{"3":[false]}]');
    });

    it("acks message-with-ack with binary attachments as a BINARY_ACK", async () => {
      const peer = await connectMain();
      peer.send('452-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
      peer.send(Uint8Array.from([1, 2, 3]));
      peer.send(Uint8Array.from([4, 5, 6]));
      assert.equal(
        await peer.nextPacket("the BINARY_ACK header"),
        '462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
      );
      assert.deepEqual(await peer.nextPacket("attachment 0"), Buffer.from([1, 2, 3]));
      assert.deepEqual(await peer.nextPacket("attachment 1"), Buffer.from([4, 5, 6]));
    });

    it("closes the connection on an unknown packet type", async () => {
      const peer = await connectMain();
      peer.send("4abc");
      await peer.waitClosed();
    });

    it("closes the connection on an EVENT whose payload is not an array", async () => {
      const peer = await connectMain();
      peer.send("42{}");
      await peer.waitClosed();
    });

    it("closes the connection on an EVENT with an invalid ack id", async () => {
      const peer = await connectMain();
      peer.send('42abc["message-with-ack",1,"2",{"3":[false]}]');
      await peer.waitClosed();
    });
  });
});

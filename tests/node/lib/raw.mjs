// Raw Engine.IO / Socket.IO over the wire, for the conformance tests (engineio-conformance,
// socketio-conformance) that reproduce the official protocol test suites: plain HTTP
// requests on the polling transport, a GET poll on its own connection, and a WebSocket
// peer that queues every frame. No socket.io-client here: the tests write and read the
// packets themselves.
//
// rawEngineIO() binds the helpers to one endpoint (its base URL is known only once the
// relay listens, hence a function), one bound for "soon" and the handshake the server is
// configured to send. Every wait is for an event on the wire (or, through the server's
// logLine, in its log), bounded; nothing here pauses and hopes.
import assert from "node:assert/strict";
import { request as httpRequest } from "node:http";
import WebSocket from "ws";

/** `promise`, or a rejection naming `what` after `ms`. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Helpers for the Engine.IO endpoint at `base()` (an http:// URL ending in "/"):
 *
 *   waitMs                       the bound for anything the server should do "soon"
 *   handshake                    { keys, pingInterval, pingTimeout, maxPayload } the open
 *                                packet must carry
 *   openWhat                     what openWsSession calls the open packet when it waits
 *
 * Returns { http, poll, push, openPollingSession, rawPoll, Peer, assertHandshake,
 * openWsSession, terminateAll }; terminateAll() closes every Peer opened so far (for
 * afterEach).
 */
export function rawEngineIO({ base, waitMs, handshake, openWhat = "the open packet" }) {
  const peers = new Set();
  const wsBase = () => base().replace(/^http/, "ws");

  /** GET or POST on the polling transport; resolves { status, body } (body as text). */
  async function http(query, init = {}) {
    const res = await withTimeout(fetch(`${base()}?${query}`, init), waitMs, `${init.method || "GET"} ?${query}`);
    return { status: res.status, body: await res.text() };
  }

  const poll = (sid, extra = "") => http(`EIO=4&transport=polling&sid=${sid}${extra}`);
  const push = (sid, body) => http(`EIO=4&transport=polling&sid=${sid}`, { method: "POST", body });

  /** Opens a polling session and returns its sid. */
  async function openPollingSession() {
    const { status, body } = await http("EIO=4&transport=polling");
    assert.equal(status, 200, `handshake failed: ${body}`);
    return JSON.parse(body.slice(1)).sid;
  }

  /**
   * A GET poll sent on its own connection through node:http, so that the test knows when
   * the request has left the client and can abort it by destroying the socket.
   */
  function rawPoll(sid, extra = "") {
    const req = httpRequest(`${base()}?EIO=4&transport=polling&sid=${sid}${extra}`, { agent: false });
    const sent = new Promise((resolve, reject) => {
      req.on("finish", resolve);
      req.on("error", reject);
    });
    const response = new Promise((resolve, reject) => {
      req.on("response", (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk) => (body += chunk));
        res.on("end", () => resolve({ status: res.statusCode, body }));
        res.on("error", reject);
      });
      req.on("error", reject);
    });
    response.catch(() => {}); // an aborted poll rejects; only tests that await it care
    req.end();
    return { sent, response, abort: () => req.destroy() };
  }

  /**
   * A WebSocket client that queues every frame, so that frames sent back to back by the
   * server (a CONNECT reply and the "auth" event, say) are never lost between two waits.
   * Text frames come out as strings, binary frames as Buffers, so a text/binary mix-up
   * fails deepEqual.
   */
  class Peer {
    constructor(url) {
      this.ws = new WebSocket(url, { perMessageDeflate: false });
      this.frames = [];
      this.waiters = [];
      this.closed = false;
      this.wasOpen = false;
      this.ws.on("open", () => (this.wasOpen = true));
      this.ws.on("message", (data, isBinary) => {
        this.frames.push(isBinary ? Buffer.from(data) : data.toString("utf8"));
        this.wake();
      });
      // A refused handshake (HTTP 400 instead of 101) surfaces as "error" then "close".
      this.ws.on("error", (err) => (this.error = err));
      this.ws.on("close", (code) => {
        this.closed = true;
        this.closeCode = code;
        this.wake();
      });
      this.opened = new Promise((resolve, reject) => {
        this.ws.once("open", resolve);
        this.ws.once("close", () => reject(new Error(`websocket closed before opening (${this.error?.message})`)));
      });
      this.opened.catch(() => {});
      peers.add(this);
    }

    wake() {
      for (const w of this.waiters.splice(0)) w();
    }

    /** The next frame, whatever it is. */
    async next(what = "a frame", ms = waitMs) {
      const deadline = Date.now() + ms;
      while (this.frames.length === 0) {
        if (this.closed) throw new Error(`websocket closed (code ${this.closeCode}) while waiting for ${what}`);
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
        await withTimeout(new Promise((r) => this.waiters.push(r)), left, what).catch(() => {});
      }
      return this.frames.shift();
    }

    /**
     * The next frame that is not an Engine.IO ping, answering pings on the way, as the
     * official Socket.IO suite's packet collector skips "2".
     */
    async nextPacket(what) {
      for (;;) {
        const frame = await this.next(what);
        if (frame !== "2") return frame;
        this.send("3");
      }
    }

    /**
     * Resolves once the server has closed the connection (we never close first). With
     * `pong`, queued pings are answered meanwhile, so the session stays alive until the
     * server ends it for another reason.
     */
    async waitClosed(ms = waitMs, { pong = false } = {}) {
      const deadline = Date.now() + ms;
      while (!this.closed) {
        const left = deadline - Date.now();
        if (left <= 0) {
          throw new Error(`websocket still open after ${ms} ms; frames so far: ${JSON.stringify(this.frames)}`);
        }
        await withTimeout(new Promise((r) => this.waiters.push(r)), left, "close").catch(() => {});
        if (pong) {
          const pings = this.frames.filter((f) => f === "2").length;
          this.frames = this.frames.filter((f) => f !== "2");
          for (let i = 0; i < pings && !this.closed; i++) this.send("3");
        }
      }
    }

    send(data) {
      this.ws.send(data);
    }

    terminate() {
      this.ws.terminate();
    }
  }

  /** Checks an open packet (as text) against `handshake`; returns its parsed value. */
  function assertHandshake(text, upgrades) {
    assert.equal(typeof text, "string", "the open packet must be a text frame");
    assert.equal(text[0], "0", `expected an open packet, got ${JSON.stringify(text)}`);
    const value = JSON.parse(text.slice(1));
    assert.deepEqual(Object.keys(value).sort(), handshake.keys, "the open packet has exactly these keys");
    assert.equal(typeof value.sid, "string");
    assert.ok(value.sid.length > 0, "sid is not empty");
    assert.deepEqual(value.upgrades, upgrades);
    assert.equal(value.pingInterval, handshake.pingInterval);
    assert.equal(value.pingTimeout, handshake.pingTimeout);
    assert.equal(value.maxPayload, handshake.maxPayload);
    return value;
  }

  /** Opens a WebSocket-only session and consumes its open packet. */
  async function openWsSession() {
    const peer = new Peer(`${wsBase()}?EIO=4&transport=websocket`);
    assertHandshake(await peer.next(openWhat), []);
    return peer;
  }

  function terminateAll() {
    for (const peer of peers) peer.terminate();
    peers.clear();
  }

  return { http, poll, push, openPollingSession, rawPoll, Peer, assertHandshake, openWsSession, terminateAll };
}

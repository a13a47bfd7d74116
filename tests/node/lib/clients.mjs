// socket.io-client helpers for the tests that drive a relay (started with relay.mjs) the
// way applications do: relay, transports, chat-book. Every socket gets an inbox that
// records each event it receives, so a test can wait for one that came early; every wait
// (connect, ack, event) is bounded by WAIT_MS. Nothing here sleeps.
import assert from "node:assert/strict";
import { io } from "socket.io-client";

export const WAIT_MS = 5000;

let roomSeq = 0;
/** A room name no other test uses (lowercase letters only when `letters`). */
export function freshRoom(prefix = "room", letters = false) {
  roomSeq += 1;
  if (letters) {
    let n = roomSeq;
    let s = "";
    do {
      s += String.fromCharCode(97 + (n % 26));
      n = Math.floor(n / 26);
    } while (n > 0);
    return `${prefix}${s}`;
  }
  return `${prefix}-${process.pid}-${roomSeq}`;
}

/** Record every event a socket receives, so a test can wait for one that came early. */
export function attachInbox(socket) {
  const seen = [];
  const waiters = new Set();
  socket.onAny((event, ...args) => {
    const entry = { event, args, taken: false };
    seen.push(entry);
    for (const w of waiters) {
      if (!entry.taken && w.event === event && w.pred(...args)) {
        entry.taken = true;
        waiters.delete(w);
        clearTimeout(w.timer);
        w.resolve(args);
      }
    }
  });
  socket.inbox = {
    /** Names of every event received so far, in order. */
    names: () => seen.map((e) => e.event),
    /** Argument lists of every `event` received so far. */
    all: (event) => seen.filter((e) => e.event === event).map((e) => e.args),
    /** The next not yet taken `event` whose arguments satisfy `pred`. */
    next(event, pred = () => true, ms = WAIT_MS) {
      const hit = seen.find((e) => !e.taken && e.event === event && pred(...e.args));
      if (hit) {
        hit.taken = true;
        return Promise.resolve(hit.args);
      }
      return new Promise((resolve, reject) => {
        const w = { event, pred, resolve };
        w.timer = setTimeout(() => {
          waiters.delete(w);
          const got = seen.map((e) => `${e.event} ${JSON.stringify(e.args)}`).join("; ") || "nothing";
          reject(new Error(`socket ${socket.nsp} ${socket.id}: timed out after ${ms}ms waiting for "${event}"; received: ${got}`));
        }, ms);
        waiters.add(w);
      });
    },
  };
  return socket;
}

/**
 * A new client socket for `url` (a namespace URL) on its own connection (unless
 * opts.forceNew is false), with an inbox; pushed onto `sockets` for the test's cleanup.
 */
export function openClient(url, sockets, opts = {}) {
  const socket = io(url, { forceNew: true, reconnection: false, ...opts });
  sockets.push(socket);
  return attachInbox(socket);
}

/** Resolve once `socket` is connected; reject on connect_error or timeout. */
export function connected(socket, ms = WAIT_MS) {
  if (socket.connected) return Promise.resolve(socket);
  return new Promise((resolve, reject) => {
    const done = (err) => {
      clearTimeout(timer);
      socket.off("connect", onConnect);
      socket.off("connect_error", onError);
      if (err) reject(err);
      else resolve(socket);
    };
    const onConnect = () => done();
    const onError = (err) => done(new Error(`connect_error on ${socket.nsp}: ${err.message}`));
    const timer = setTimeout(() => done(new Error(`connect to ${socket.nsp} timed out after ${ms}ms`)), ms);
    socket.on("connect", onConnect);
    socket.on("connect_error", onError);
  });
}

/** Emit with an ack request and resolve with the ack's first argument. */
export function ack(socket, event, ...args) {
  return socket.timeout(WAIT_MS).emitWithAck(event, ...args);
}

/** Emit with an ack request and resolve with all of the ack's arguments. */
export function ackAll(socket, event, ...args) {
  return new Promise((resolve, reject) => {
    socket.timeout(WAIT_MS).emit(event, ...args, (err, ...ackArgs) => (err ? reject(err) : resolve(ackArgs)));
  });
}

/** `$join` `room`; fails the test unless the ack says ok. Resolves with the ack. */
export async function join(socket, room) {
  const reply = await ack(socket, "$join", room);
  assert.equal(reply?.ok, true, `$join ${room} refused: ${JSON.stringify(reply)}`);
  return reply;
}

let markerSeq = 0;
/**
 * `sender` emits a marker that reaches every socket of its namespace; wait for all
 * `receivers`. Needs a "marker" event routed to the namespace with echo, acked ok.
 */
export async function barrier(sender, receivers) {
  markerSeq += 1;
  const token = `marker-${markerSeq}`;
  const arrivals = receivers.map((r) => r.inbox.next("marker", (t) => t === token));
  assert.deepEqual(await ack(sender, "marker", token), { ok: true });
  await Promise.all(arrivals);
}

/**
 * withLogs(fn) for the relay `relay()` returns: wraps a test body so that a failure also
 * prints the relay's log lines from that test.
 */
export function relayLogs(relay) {
  return (fn) => async (t) => {
    const mark = relay().logs().length;
    try {
      await fn(t);
    } catch (err) {
      t.diagnostic(`relay log during this test:\n${relay().logs().slice(mark) || "(nothing)"}`);
      throw err;
    }
  };
}

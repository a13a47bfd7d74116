// socket.io-client helpers for the tests of daemons started with admin.mjs, most with
// several workers (workers, worker-heartbeat, privileges, socket-activation). A client records every event it receives and knows which
// worker owns its session: multi-worker Engine.IO session ids are 23 characters and the
// first names the owner ('A' = worker 0, 'B' = worker 1 …). Nothing here sleeps: every
// wait is for an event or an ack, bounded.
import { io } from "socket.io-client";

const WAIT_MS = 5000;
// The characters that name workers 0..63 at the front of a multi-worker session id.
export const WORKER_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/** The worker that owns a multi-worker session id (-1 for any other id). */
export function workerOf(engineId) {
  return typeof engineId === "string" && engineId.length === 23 ? WORKER_CHARS.indexOf(engineId[0]) : -1;
}

/** Resolve with `promise`'s value, or reject naming `what` after `ms`. */
export function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms}ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * A connected socket.io client on `${url}/` (its own Manager, no reconnection; `opts` go
 * to io(), opts.timeout defaults to 5 s and bounds the connect, plus 1 s), pushed onto
 * `sockets` for the test's cleanup. Records every event it receives (`socket.got`:
 * [name, ...args]) and its disconnect reason (`socket.gone`); `worker` is the worker
 * owning its session, `sid` its socket id (kept after a disconnect).
 */
export async function workerClient(url, sockets, opts = {}) {
  const timeout = opts.timeout ?? WAIT_MS;
  const socket = io(`${url}/`, { forceNew: true, reconnection: false, timeout, ...opts });
  sockets.push(socket);
  socket.got = [];
  socket.watchers = new Set();
  socket.onAny((...event) => {
    socket.got.push(event);
    for (const w of socket.watchers) w();
  });
  socket.gone = new Promise((resolve) => socket.once("disconnect", (reason) => resolve(reason)));
  await within(
    new Promise((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("connect_error", (err) => reject(new Error(`connect_error: ${err.message}`)));
    }),
    timeout + 1000,
    "connect",
  );
  socket.worker = workerOf(socket.io.engine.id);
  // socket.io-client forgets `id` on disconnect; the relay's member id stays known here.
  socket.sid = socket.id;
  return socket;
}

/** Resolve with the first recorded event `name` whose first argument satisfies `pred`. */
export function received(socket, name, pred = () => true, ms = WAIT_MS) {
  let look;
  return within(
    new Promise((resolve) => {
      look = () => {
        const hit = socket.got.find(([n, arg]) => n === name && pred(arg));
        if (hit) resolve(hit[1]);
      };
      socket.watchers.add(look);
      look();
    }),
    ms,
    `${name} at client ${socket.sid} (worker ${socket.worker})`,
  )
    .catch((err) => {
      err.message += `; it got ${JSON.stringify(socket.got)}`;
      throw err;
    })
    .finally(() => socket.watchers.delete(look));
}

/** Emit with an ack request; resolves with the ack. */
export function ask(socket, event, ...args) {
  return socket.timeout(WAIT_MS).emitWithAck(event, ...args);
}

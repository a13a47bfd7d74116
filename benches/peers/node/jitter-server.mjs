// The Node side of benches/jitter: the official socket.io server relaying a publisher's
// numbered messages the way iorelay's jitter config does, with or without socket.io's
// connection state recovery. On 127.0.0.1:$PORT (0 = any free port; the line printed on
// stdout names it) under /socket.io/, namespace $NAMESPACE (default /jitter).
//
// - ROUTE=namespace (default): `msg` goes to every other socket of the namespace
//   (`socket.broadcast.emit`), as iorelay's `route = "namespace"`, `echo = false`.
// - ROUTE=room: `$join` room (ack {ok, room, count}); `msg` goes to the other members of
//   the sender's rooms (`socket.to(rooms).emit`), as iorelay's `route = "rooms"`.
// - `msg` with an ack request is acked {ok:true} once it has been handed to the adapter.
// - RECOVERY_MS > 0 turns on `connectionStateRecovery` with that
//   maxDisconnectionDuration: every broadcast then carries its offset as its last
//   argument, and a client back within that time gets its id, rooms and missed events.
//
// Ping settings are socket.io's defaults (25 s + 20 s), as iorelay's. No per-message
// logging: the harness counts what arrives.

import { createServer } from "node:http";
import { Server } from "socket.io";

const port = Number(process.env.PORT ?? 0);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`PORT=${process.env.PORT}: not a port number`);
  process.exit(64);
}
const route = process.env.ROUTE ?? "namespace";
if (route !== "namespace" && route !== "room") {
  console.error(`ROUTE=${route}: expected namespace or room`);
  process.exit(64);
}
const recoveryMs = Number(process.env.RECOVERY_MS ?? 0);
if (!Number.isFinite(recoveryMs) || recoveryMs < 0) {
  console.error(`RECOVERY_MS=${process.env.RECOVERY_MS}: not a duration in ms`);
  process.exit(64);
}
const nsName = process.env.NAMESPACE ?? "/jitter";

const httpServer = createServer();
const io = new Server(httpServer, {
  path: "/socket.io/",
  serveClient: false,
  maxHttpBufferSize: 1e6,
  ...(recoveryMs > 0 ? { connectionStateRecovery: { maxDisconnectionDuration: recoveryMs } } : {}),
});
const nsp = io.of(nsName);

// The callback the client asked for, if any: socket.io passes it as the last argument.
function takeAck(args) {
  return typeof args.at(-1) === "function" ? args.pop() : undefined;
}

nsp.on("connection", (socket) => {
  socket.on("$join", (room, ack) => {
    if (typeof room === "string") socket.join(room);
    if (typeof ack === "function") {
      ack({ ok: typeof room === "string", room, count: nsp.adapter.rooms.get(room)?.size ?? 0 });
    }
  });

  socket.on("msg", (...args) => {
    const ack = takeAck(args);
    if (route === "namespace") {
      socket.broadcast.emit("msg", ...args);
    } else {
      // Every socket is in the room named by its own id; that one is not a target, and
      // `to([])` would mean the whole namespace.
      const targets = [...socket.rooms].filter((room) => room !== socket.id);
      if (targets.length > 0) socket.to(targets).emit("msg", ...args);
    }
    ack?.({ ok: true });
  });
});

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    io.close();
    process.exit(0);
  });
}

httpServer.listen(port, "127.0.0.1", () => {
  const recovery = recoveryMs > 0 ? `recovery ${recoveryMs} ms` : "no recovery";
  console.log(`node socket.io jitter server listening on http://127.0.0.1:${httpServer.address().port}/socket.io/ (${nsName}, route ${route}, ${recovery})`);
});

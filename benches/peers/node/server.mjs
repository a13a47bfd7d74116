// The Node peer of iorelay's load generator: the small relay protocol of
// benches/peers/README.md on the official socket.io server, on 127.0.0.1:$PORT
// (default 3991) under /socket.io/.
//
// - `$join` room (ack) -> join, ack {ok:true, room, count}.
// - `msg` any args -> to every room the sender joined, sender excluded; ack {ok:true}.
// - `echo` args (ack) -> ack with the same args.
//
// With REDIS set (a Unix socket path, or a redis:// URL), the server joins a cluster
// through @socket.io/redis-adapter (as the lock file pins it): `msg` then reaches the
// room's members on every server of the cluster (benches/cluster). Without it, the
// in-memory adapter. REDIS_KEY is the adapter's channel prefix (default "socket.io").
//
// No per-message logging; settings follow iorelay's defaults.

import { createServer } from "node:http";
import { Server } from "socket.io";

const port = Number(process.env.PORT ?? 3991);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`PORT=${process.env.PORT}: not a port number`);
  process.exit(64);
}

/** The adapter option for REDIS, or undefined (in-memory) without it. */
async function redisAdapter(where) {
  if (!where) return undefined;
  // Loaded only when asked for, so that the plain peer needs no Redis packages.
  const { createClient } = await import("redis");
  const { createAdapter } = await import("@socket.io/redis-adapter");
  const pub = createClient(where.startsWith("/") ? { socket: { path: where } } : { url: where });
  const sub = pub.duplicate();
  for (const [name, client] of [["pub", pub], ["sub", sub]]) {
    client.on("error", (err) => console.error(`redis ${name}: ${err.message}`));
  }
  await Promise.all([pub.connect(), sub.connect()]);
  const key = process.env.REDIS_KEY || "socket.io";
  return { adapter: createAdapter(pub, sub, { key }), clients: [pub, sub] };
}

const redis = await redisAdapter(process.env.REDIS);
const httpServer = createServer();
const io = new Server(httpServer, {
  path: "/socket.io/",
  serveClient: false,
  pingInterval: 25_000,
  pingTimeout: 20_000,
  maxHttpBufferSize: 1e6,
  ...(redis ? { adapter: redis.adapter } : {}),
});
const rooms = io.of("/").adapter.rooms;

// The callback the client asked for, if any: socket.io passes it as the last argument.
function takeAck(args) {
  return typeof args.at(-1) === "function" ? args.pop() : undefined;
}

io.on("connection", (socket) => {
  socket.on("$join", (room, ack) => {
    socket.join(room);
    if (typeof ack === "function") {
      ack({ ok: true, room, count: rooms.get(room)?.size ?? 0 });
    }
  });

  socket.on("msg", (...args) => {
    const ack = takeAck(args);
    // Every socket is in the room named by its own id; that one is not a target.
    const targets = [...socket.rooms].filter((room) => room !== socket.id);
    // `to([])` would mean the whole namespace: a socket in no room reaches nobody.
    if (targets.length > 0) {
      socket.to(targets).emit("msg", ...args);
    }
    ack?.({ ok: true });
  });

  socket.on("echo", (...args) => {
    const ack = takeAck(args);
    ack?.(...args);
  });
});

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    io.close();
    for (const client of redis?.clients ?? []) client.disconnect().catch(() => {});
    process.exit(0);
  });
}

httpServer.listen(port, "127.0.0.1", () => {
  const through = redis ? ` (cluster through Redis at ${process.env.REDIS})` : "";
  console.log(`node socket.io peer listening on http://127.0.0.1:${httpServer.address().port}/socket.io/${through}`);
});

// The Node peer of iorelay's load generator: the small relay protocol of
// benches/peers/README.md on the official socket.io server, on 127.0.0.1:$PORT
// (default 3991) under /socket.io/.
//
// - `$join` room (ack) -> join, ack {ok:true, room, count}.
// - `msg` any args -> to every room the sender joined, sender excluded; ack {ok:true}.
// - `echo` args (ack) -> ack with the same args.
//
// No per-message logging; settings follow iorelay's defaults.

import { createServer } from "node:http";
import { Server } from "socket.io";

const port = Number(process.env.PORT ?? 3991);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`PORT=${process.env.PORT}: not a port number`);
  process.exit(64);
}

const httpServer = createServer();
const io = new Server(httpServer, {
  path: "/socket.io/",
  serveClient: false,
  pingInterval: 25_000,
  pingTimeout: 20_000,
  maxHttpBufferSize: 1e6,
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
    process.exit(0);
  });
}

httpServer.listen(port, "127.0.0.1", () => {
  console.log(`node socket.io peer listening on http://127.0.0.1:${httpServer.address().port}/socket.io/`);
});

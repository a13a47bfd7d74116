// The official Node server configured as config/conformance.toml configures iorelay: the
// reference the conformance suites (test/engineio-conformance, test/socketio-conformance)
// pin their expectations to. A bare Engine.IO echo at /engine.io/ and a Socket.IO server at
// /socket.io/ with namespaces "/" and "/custom" ("auth" greeting, "message" back as
// "message-back", "message-with-ack" acked with its own arguments); pingInterval 300 ms,
// pingTimeout 200 ms, maxPayload 1000000, connectTimeout 1000 ms.
//
// socket.io is not a dependency of these tests: install the major the client uses into a
// scratch directory and point NODE_PATH at it (CommonJS, so that NODE_PATH applies):
//
//   npm install --prefix /tmp/ref socket.io@4.8.1
//   TEST_REFERENCE_SERVER=/tmp/ref/node_modules node --test test/engineio-conformance.test.mjs
//
// lib/relay.mjs (startConformanceServer) starts this file with NODE_PATH set from
// TEST_REFERENCE_SERVER. Like iorelay, it listens on 127.0.0.1:0 and writes a
// "listening public=ADDR" line, then one line per Engine.IO session event in iorelay's
// shape ("session opened sid=…", "session closed sid=… reason=…"), so that a test waits
// on the same log lines whichever server it talks to.
"use strict";

const http = require("node:http");
const { Server: EngineServer } = require("engine.io");
const { Server } = require("socket.io");

const TIMERS = { pingInterval: 300, pingTimeout: 200, maxHttpBufferSize: 1000000 };

// engine.io's close reasons, in iorelay's names (src/engine/session.rs, CloseReason).
const REASONS = {
  "transport close": "client_close",
  "transport error": "transport_error",
  "ping timeout": "ping_timeout",
  "parse error": "protocol_error",
  "forced close": "server_close",
};

function logSessions(engine, label) {
  engine.on("connection", (socket) => {
    console.error(`session opened sid=${socket.id} server=${label}`);
    socket.on("close", (reason) => {
      console.error(`session closed sid=${socket.id} reason=${REASONS[reason] || reason} (${reason})`);
    });
  });
}

const server = http.createServer();

const echo = new EngineServer({ ...TIMERS, path: "/engine.io/" });
echo.on("connection", (socket) => socket.on("message", (data) => socket.send(data)));
logSessions(echo, "engine.io");

const io = new Server({ ...TIMERS, connectTimeout: 1000, serveClient: false });
for (const name of ["/", "/custom"]) {
  io.of(name).on("connection", (socket) => {
    socket.emit("auth", socket.handshake.auth);
    if (name !== "/") return;
    socket.on("message", (...args) => socket.emit("message-back", ...args));
    socket.on("message-with-ack", (...args) => {
      const ack = args.pop();
      ack(...args);
    });
  });
}

// Both share one HTTP server: each engine answers its own path, anything else is a 404.
io.attach(server);
echo.attach(server, { path: "/engine.io/" });
logSessions(io.engine, "socket.io");

server.listen(0, "127.0.0.1", () => {
  const { address, port } = server.address();
  console.error(`listening public=${address}:${port}`);
});

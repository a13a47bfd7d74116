// systemd socket activation: when the service manager passes a listening socket
// (LISTEN_FDS/LISTEN_PID, named "public" with FileDescriptorName=), iorelay serves on it
// instead of binding `server.listen`, says so (`activated=true` in the "listening" line,
// `socket_activated` in the status), and still binds its admin listener from the config
// when no "admin" socket is passed. With workers, the master hands the passed socket to
// every worker.
//
// `systemd-socket-activate -l ADDR --fdname=public CMD` plays the service manager: it
// listens on ADDR and, on the first connection, execs CMD in place (same pid) with the
// socket as fd 3; that first connection waits in the socket's backlog and is served by
// iorelay. It passes no environment but what -E names, so the test's IORELAY_* settings
// go through -E.
//
// The port: bound to 0 by node, closed, then given to systemd-socket-activate (the one
// moment where another process could take it; loopback only).
import { describe, it, afterEach } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { spawnSync } from "node:child_process";
import { startDaemon, stopDaemon, withLogs, workerPids, cliStatus, get } from "../lib/admin.mjs";
import { workerClient } from "../lib/workers.mjs";
import { freePort } from "../lib/spawn.mjs";

const WAIT_MS = 5000;

let daemon;
let starting;
const sockets = [];
const raw = [];

afterEach(async () => {
  while (sockets.length) sockets.pop().disconnect();
  while (raw.length) raw.pop().destroy();
  // A start still pending stops its own process when it gives up.
  daemon = daemon ?? (await starting?.catch(() => undefined));
  await stopDaemon(daemon);
  daemon = undefined;
  starting = undefined;
});

const logs = (fn) => withLogs(() => daemon, fn);

/** The path of systemd-socket-activate, or a failure saying how to get it. */
function socketActivate() {
  const which = spawnSync("which", ["systemd-socket-activate"], { encoding: "utf8" });
  const path = which.stdout?.trim();
  if (which.status !== 0 || !path) {
    assert.fail(
      "systemd-socket-activate is not on PATH; it comes with systemd (Debian: apt-get install -y systemd). " +
        "This test needs it to pass a listening socket the way systemd does.",
    );
  }
  return path;
}

/**
 * Connect to 127.0.0.1:port, retrying while nothing listens yet (bounded): the wrapper
 * takes a moment to bind. Resolves to the connected socket.
 */
async function connectWhenListening(port, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const sock = net.connect(port, "127.0.0.1");
    raw.push(sock);
    const err = await new Promise((resolve) => {
      sock.once("connect", () => resolve(null));
      sock.once("error", resolve);
    });
    if (!err) return sock;
    if (err.code !== "ECONNREFUSED" || Date.now() > deadline) {
      throw new Error(`nothing listens on 127.0.0.1:${port} after ${ms}ms: ${err.message}`);
    }
    // A polling interval, not a guess: the loop ends as soon as the port accepts.
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** One HTTP/1.1 GET on a raw connection; resolves to the whole answer once it closes. */
function getOn(sock, path) {
  return new Promise((resolve, reject) => {
    let answer = "";
    const timer = setTimeout(() => reject(new Error(`GET ${path}: no answer within ${WAIT_MS}ms`)), WAIT_MS);
    sock.setEncoding("utf8");
    sock.on("data", (c) => (answer += c));
    sock.once("close", () => {
      clearTimeout(timer);
      resolve(answer);
    });
    sock.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
  });
}

/** A connected socket.io client on "/". */
async function client(url, opts = {}) {
  return workerClient(url, sockets, opts);
}

describe("systemd socket activation", () => {
  for (const workers of [1, 2]) {
    it(`serves on the passed "public" socket, binds admin from the config (workers = ${workers})`, logs(async () => {
      const activate = socketActivate();
      const port = await freePort();
      starting = startDaemon(`
[server]
workers = ${workers}
`, {
        wrapper: (env) => [
          activate,
          "-l",
          `127.0.0.1:${port}`,
          "--fdname=public",
          ...Object.entries(env)
            .filter(([k]) => k.startsWith("IORELAY_") || k === "NO_COLOR")
            .flatMap(([k, v]) => ["-E", `${k}=${v}`]),
        ],
      });
      // Nothing runs iorelay until the first connection comes in; this one is served by
      // iorelay once it runs (the wrapper never accepts it).
      const first = await connectWhenListening(port);
      daemon = await starting;
      const answer = await getOn(first, "/healthz");
      assert.match(answer, /^HTTP\/1\.1 200 /, `the first connection's answer: ${JSON.stringify(answer)}`);

      assert.match(daemon.logs(), /listening.*activated=true/, "the listening line says activated=true");
      assert.equal(daemon.publicAddr, `127.0.0.1:${port}`, "the public listener is the passed socket");
      assert.notEqual(daemon.adminAddr, daemon.publicAddr);
      assert.match(daemon.logs(), /Execing .*iorelay/, "started by systemd-socket-activate");

      // The admin listener was bound from the config (127.0.0.1:0 there, so a fresh port).
      assert.equal((await get(`${daemon.adminUrl}/healthz`)).status, 200);
      const status = await cliStatus(daemon);
      assert.equal(status.about.socket_activated, true, "status says socket_activated");
      assert.equal(status.pid, daemon.pid, "systemd-socket-activate exec'd iorelay in place");
      if (workers > 1) {
        assert.equal(workerPids(daemon).length, workers);
        assert.equal(status.workers.length, workers);
      }

      // socket.io clients on that port, over both transports.
      const ws = await client(`http://127.0.0.1:${port}`, { transports: ["websocket"] });
      const polling = await client(`http://127.0.0.1:${port}`, { transports: ["polling"] });
      for (const c of [ws, polling]) {
        assert.equal((await c.timeout(WAIT_MS).emitWithAck("$join", "activated")).ok, true);
      }
      const got = new Promise((resolve) => polling.once("hello", resolve));
      assert.deepEqual(await ws.timeout(WAIT_MS).emitWithAck("hello", "over the passed socket"), { ok: true });
      let timer;
      const arrived = await Promise.race([
        got,
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error("hello: nothing within 5000ms")), WAIT_MS);
        }),
      ]).finally(() => clearTimeout(timer));
      assert.equal(arrived, "over the passed socket");
    }));
  }
});

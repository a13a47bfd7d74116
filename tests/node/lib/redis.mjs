// A private Redis for one test file: `redis-server` on a Unix socket in a fresh temp dir
// (no TCP port at all, so it never meets the machine's own Redis on 6379), persisting
// nothing. Readiness is a PING answered on the socket; stop() kills it by PID and
// removes the dir; restart() starts it again on the same socket (a Redis outage).
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, chmodSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

const READY_MS = 10000;

function ping(path) {
  return new Promise((resolve) => {
    const sock = connect(path);
    let got = "";
    sock.on("connect", () => sock.write("PING\r\n"));
    sock.on("data", (d) => {
      got += d;
      if (got.includes("\r\n")) {
        sock.destroy();
        resolve(got.startsWith("+PONG"));
      }
    });
    sock.on("error", () => resolve(false));
  });
}

/**
 * Start a private redis-server. Resolves to { path, url, pid, stop(), kill(),
 * restart() }: `url` is the `redis+unix://` URL iorelay takes, `path` the socket node's
 * clients take (`{ socket: { path } }`).
 */
export async function startRedis() {
  const dir = mkdtempSync(join(tmpdir(), "iorelay-redis-"));
  // The daemon under test runs as `nobody` when the tests run as root.
  chmodSync(dir, 0o755);
  const path = join(dir, "redis.sock");
  let child;
  const launch = async () => {
    child = spawn("redis-server", [
      "--port", "0",
      "--unixsocket", path,
      "--unixsocketperm", "777",
      "--save", "",
      "--appendonly", "no",
      "--dir", dir,
    ], { stdio: ["ignore", "ignore", "pipe"] });
    let log = "";
    child.stderr.on("data", (d) => (log += d));
    const deadline = Date.now() + READY_MS;
    while (!(await ping(path))) {
      if (child.exitCode !== null) throw new Error(`redis-server exited: ${log}`);
      if (Date.now() > deadline) throw new Error(`redis-server not ready in ${READY_MS}ms: ${log}`);
      // Polling a socket that is about to appear; the loop ends as soon as it answers.
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  await launch();
  const exited = () => new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r() : child.once("exit", r)));
  const redis = {
    path,
    url: `redis+unix://${path}`,
    get pid() {
      return child.pid;
    },
    /** SIGKILL the server (an outage); restart() brings it back on the same socket. */
    async kill() {
      child.kill("SIGKILL");
      await exited();
      rmSync(path, { force: true });
    },
    async restart() {
      await launch();
    },
    async stop() {
      child.kill("SIGKILL");
      await exited();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return redis;
}

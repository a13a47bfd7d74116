// A private Redis for one test file: `redis-server` on a Unix socket in a fresh temp dir
// (no TCP port at all, so it never meets the machine's own Redis on 6379), persisting
// nothing. Readiness is a PING answered on the socket; stop() kills it by PID and
// removes the dir; restart() starts it again on the same socket (a Redis outage).
//
// With `tls` (the files of lib/certs.mjs) it listens for TLS on a free loopback port
// instead (`--port 0 --tls-port P`), asking clients for a certificate when
// `tls.authClients`; readiness is then a PING answered over TLS, the server verified
// against the CA. With `password` it requires that password (`--requirepass`), and
// readiness sends AUTH first.
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, chmodSync, readFileSync } from "node:fs";
import { connect } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./spawn.mjs";

const READY_MS = 10000;

/**
 * Why this machine's redis-server cannot serve TLS, or null when it can (Debian's is
 * built with it; a build without it refuses the `tls-port` option).
 */
export function redisTlsMissing() {
  // Redis reads its options in order and stops at the first it does not know: a build
  // with TLS gets past `tls-port` and refuses the made-up option after it.
  const out = spawnSync("redis-server", ["--port", "0", "--tls-port", "0", "--iorelay-probe", "x"], { encoding: "utf8", timeout: 10000 });
  if (out.error) return `redis-server cannot run: ${out.error.message}`;
  const text = `${out.stdout}${out.stderr}`;
  return /iorelay-probe/.test(text) ? null : `redis-server has no TLS support: ${text.trim()}`;
}

/** A RESP command. */
function command(...args) {
  return `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("")}`;
}

/** Whether a TLS Redis on `port` answers AUTH (when `password`) and PING. */
function pingTls(port, tls, password) {
  const sock = tlsConnect({
    host: "127.0.0.1",
    port,
    ca: readFileSync(tls.ca),
    ...(tls.clientCert ? { cert: readFileSync(tls.clientCert), key: readFileSync(tls.clientKey) } : {}),
  });
  return answers(sock, "secureConnect", password);
}

/**
 * Whether `sock`, once `ready` fires, answers AUTH (when `password`) with +OK and PING
 * with +PONG; false on an error answer, a socket error or 2 s of silence.
 */
function answers(sock, ready, password) {
  return new Promise((resolve) => {
    const done = (ok) => {
      sock.destroy();
      resolve(ok);
    };
    let got = "";
    sock.setTimeout(2000, () => done(false));
    sock.on(ready, () => sock.write(`${password ? command("AUTH", password) : ""}${command("PING")}`));
    sock.on("data", (d) => {
      got += d;
      if (got.startsWith("-") || got.includes("\r\n-")) done(false);
      else if (got.endsWith("+PONG\r\n")) done(true);
    });
    sock.on("error", () => done(false));
  });
}

/** Whether a Redis on the Unix socket `path` answers AUTH (when `password`) and PING. */
function ping(path, password) {
  return answers(connect(path), "connect", password);
}

/**
 * Start a private redis-server. Resolves to { path, url, pid, stop(), kill(),
 * restart() }: `url` is the `redis+unix://` URL iorelay takes, `path` the socket node's
 * clients take (`{ socket: { path } }`).
 *
 * opts.tls = { cert, key, ca, authClients, clientCert, clientKey } (paths; the client
 * pair is what readiness presents when `authClients`): TLS on a free loopback port
 * instead of the socket; `url` is then `rediss://127.0.0.1:PORT` and `port` the port
 * (no `path`). opts.password: the password clients must give.
 */
export async function startRedis(opts = {}) {
  const dir = mkdtempSync(join(tmpdir(), "iorelay-redis-"));
  // The daemon under test runs as `nobody` when the tests run as root.
  chmodSync(dir, 0o755);
  const { tls, password } = opts;
  const path = tls ? undefined : join(dir, "redis.sock");
  const port = tls ? await freePort() : undefined;
  const listen = tls
    ? [
        "--tls-port", String(port),
        "--bind", "127.0.0.1",
        "--tls-cert-file", tls.cert,
        "--tls-key-file", tls.key,
        "--tls-ca-cert-file", tls.ca,
        "--tls-auth-clients", tls.authClients ? "yes" : "no",
      ]
    : ["--unixsocket", path, "--unixsocketperm", "777"];
  const ready = tls ? () => pingTls(port, tls, password) : () => ping(path, password);
  let child;
  const launch = async () => {
    child = spawn("redis-server", [
      "--port", "0",
      ...listen,
      ...(password ? ["--requirepass", password] : []),
      "--save", "",
      "--appendonly", "no",
      "--dir", dir,
    ], { stdio: ["ignore", "pipe", "pipe"] });
    let log = "";
    child.stdout.on("data", (d) => (log += d));
    child.stderr.on("data", (d) => (log += d));
    const deadline = Date.now() + READY_MS;
    while (!(await ready())) {
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
    port,
    url: tls ? `rediss://127.0.0.1:${port}` : `redis+unix://${path}`,
    get pid() {
      return child.pid;
    },
    /** SIGKILL the server (an outage); restart() brings it back on the same socket. */
    async kill() {
      child.kill("SIGKILL");
      await exited();
      if (path) rmSync(path, { force: true });
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

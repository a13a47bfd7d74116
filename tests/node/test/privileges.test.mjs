// Started as root, iorelay binds its listeners and then drops to `server.user` (and its
// group) with the supplementary groups cleared and no_new_privs set, before any relay
// code runs; with workers, the master does so before it starts them, so they never hold
// root either. Root without `server.user` is refused (exit 78, naming the key): a relay
// never serves as root.
//
// Only meaningful as root (CI runs as root): as anyone else there is nothing to drop,
// and these tests are skipped, saying so.
//
// Checked in /proc for every thread (`/proc/PID/task/*/status`) of the master and of every
// worker, after the daemon has done some work (clients served, a status report, a
// reload), so that threads started late are covered too.
import { describe, it, afterEach } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, readFileSync, readdirSync, rmSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  startDaemon,
  stopDaemon,
  withLogs,
  workerPids,
  cliStatus,
  bothWorkersLinked,
  iorelayBin,
} from "../lib/admin.mjs";
import { workerClient } from "../lib/workers.mjs";

const WAIT_MS = 5000;
const uid = process.getuid?.();
const ROOT_ONLY =
  uid === 0
    ? false
    : `not running as root (uid ${uid}): iorelay drops privileges only when started as root, ` +
      "so there is nothing to check here; CI runs these tests as root";

let daemon;
const sockets = [];
const dirs = [];
const children = [];

afterEach(async () => {
  while (sockets.length) sockets.pop().disconnect();
  await stopDaemon(daemon);
  daemon = undefined;
  for (const child of children.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
  while (dirs.length) rmSync(dirs.pop(), { recursive: true, force: true });
});

const logs = (fn) => withLogs(() => daemon, fn);

/** nobody's uid and primary gid from /etc/passwd. */
function nobody() {
  const line = readFileSync("/etc/passwd", "utf8")
    .split("\n")
    .find((l) => l.startsWith("nobody:"));
  assert.ok(line, "no user nobody in /etc/passwd");
  const [, , u, g] = line.split(":");
  return { uid: Number(u), gid: Number(g) };
}

/** Every thread's /proc status of process `pid`, parsed: [{ tid, fields }]. */
function threads(pid) {
  return readdirSync(`/proc/${pid}/task`).map((tid) => {
    const fields = {};
    for (const line of readFileSync(`/proc/${pid}/task/${tid}/status`, "utf8").split("\n")) {
      const at = line.indexOf(":");
      if (at > 0) fields[line.slice(0, at)] = line.slice(at + 1).trim();
    }
    return { tid: Number(tid), fields };
  });
}

/** A connected WebSocket client. */
async function client(url) {
  return workerClient(url, sockets, { transports: ["websocket"] });
}

describe("privileges (as root)", () => {
  it("with server.user = nobody and 2 workers, every thread of the master and the workers runs as nobody with no capabilities", { skip: ROOT_ONLY }, logs(async () => {
    const { uid: nobodyUid, gid: nobodyGid } = nobody();
    assert.equal(nobodyUid, 65534, "nobody's uid");
    assert.equal(nobodyGid, 65534, "nobody's group (nogroup)");
    daemon = await startDaemon(`
[server]
user = "nobody"
workers = 2
`);
    assert.match(daemon.logs(), /dropped privileges user=nobody uid=65534 gid=65534/);
    await bothWorkersLinked(daemon);

    // Some work first, so that threads started on demand exist too.
    for (let i = 0; i < 4; i++) {
      const c = await client(daemon.url);
      assert.equal((await c.timeout(WAIT_MS).emitWithAck("$join", "room")).ok, true);
    }
    await cliStatus(daemon);
    const from = daemon.mark();
    daemon.signal("SIGHUP");
    await daemon.waitForLog(/configuration reloaded/, { from });
    await cliStatus(daemon);

    const workers = workerPids(daemon);
    assert.equal(workers.length, 2, `worker children: ${workers}`);
    const expectedUid = Array(4).fill(nobodyUid).join(" ");
    const expectedGid = Array(4).fill(nobodyGid).join(" ");
    for (const [role, pid] of [["master", daemon.pid], ...workers.map((w) => ["worker", w])]) {
      const tasks = threads(pid);
      assert.ok(tasks.length >= 1, `${role} ${pid} has threads`);
      for (const { tid, fields } of tasks) {
        const where = `${role} ${pid} thread ${tid}`;
        const ids = (k) => fields[k].split(/\s+/).join(" ");
        assert.equal(ids("Uid"), expectedUid, `${where}: Uid (real, effective, saved, fs)`);
        assert.equal(ids("Gid"), expectedGid, `${where}: Gid (real, effective, saved, fs)`);
        assert.equal(fields.Groups, "", `${where}: supplementary groups`);
        for (const cap of ["CapEff", "CapPrm", "CapAmb"]) {
          assert.equal(BigInt(`0x${fields[cap]}`), 0n, `${where}: ${cap} = ${fields[cap]}`);
        }
        assert.equal(fields.NoNewPrivs, "1", `${where}: NoNewPrivs`);
      }
    }
  }));

  for (const workers of [2, 1]) {
    it(`without server.user it refuses to start as root (workers = ${workers}): exit 78, naming server.user`, { skip: ROOT_ONLY }, async (t) => {
      // The harness sets server.user for root (IORELAY_SERVER__USER and the test profile);
      // here neither applies: no IORELAY_* variable from this environment, and the
      // production profile, which has no file beside this config.
      const dir = mkdtempSync(join(tmpdir(), "iorelay-nouser-test-"));
      dirs.push(dir);
      chmodSync(dir, 0o755);
      const configFile = join(dir, "iorelay.toml");
      writeFileSync(configFile, `
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
workers = ${workers}
`);
      const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("IORELAY_")));
      Object.assign(env, { IORELAY_ENV: "production", NO_COLOR: "1" });
      for (const name of ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"]) delete env[name];
      const child = spawn(iorelayBin, ["--config", configFile], { env, stdio: ["ignore", "pipe", "pipe"] });
      children.push(child);
      let output = "";
      child.stdout.setEncoding("utf8").on("data", (c) => (output += c));
      child.stderr.setEncoding("utf8").on("data", (c) => (output += c));
      const exit = await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`iorelay did not exit within ${WAIT_MS}ms; output:\n${output}`)), WAIT_MS);
        child.once("exit", (code, signal) => {
          clearTimeout(timer);
          resolve({ code, signal });
        });
      });
      // stdout/stderr may still hold the last lines.
      await new Promise((resolve) => (child.stderr.closed ? resolve() : child.stderr.once("close", resolve)));
      t.diagnostic(`output: ${output.trim()}`);
      assert.deepEqual(exit, { code: 78, signal: null }, `exit status; output:\n${output}`);
      assert.match(output, /server\.user/, "the message names server.user");
      assert.doesNotMatch(output, /listening/, "it never served");
    });
  }
});

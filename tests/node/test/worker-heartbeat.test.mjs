// The master pings every worker each second over its control channel; a worker that has
// not answered for 5 s is killed (SIGKILL) and replaced like any dead worker. Here a
// worker is frozen with SIGSTOP, as a worker stuck in a loop would look to the master:
// it is killed between 4 s and ~7 s later (5 s after its last answer, which came at most
// 1 s before the freeze, noticed at the next 1 s tick), a replacement serves, and in the
// meantime the other worker alone accepts and serves new clients. When the master was
// frozen too (the whole service stopped, a paused machine), the silence is not the
// workers' fault: it keeps them; and stopping a daemon whose workers are stopped resumes
// them so that they stop gracefully.
//
// Real signals and seconds of waiting: this file has its own daemon. Nothing sleeps:
// every wait is for a log line, an event, a process state or a status, bounded.
import { describe, it, afterEach } from "node:test";
import assert from "node:assert/strict";
import { startDaemon, stopDaemon, withLogs, workerSlots, processState, alive, waitForStatus, waitForMetric, bothWorkersLinked } from "../lib/admin.mjs";
import { workerClient, within, received, ask } from "../lib/workers.mjs";

const WAIT_MS = 5000;
// The master's heartbeat: a ping every second, a worker silent for 5 s is killed.
const HEARTBEAT_MS = 1000;
const DEADLINE_MS = 5000;

let daemon;
const sockets = [];

afterEach(async () => {
  while (sockets.length) sockets.pop().disconnect();
  await stopDaemon(daemon);
  daemon = undefined;
});

const logs = (fn) => withLogs(() => daemon, fn);

/** A connected WebSocket client on "/"; `worker` owns its session, `got` its events. */
async function client(timeout = WAIT_MS) {
  return workerClient(daemon.url, sockets, { transports: ["websocket"], timeout });
}

/**
 * A client served by `worker`: each worker has its own SO_REUSEPORT socket and the kernel
 * hashes each new connection to one, so retrying lands on `worker` quickly.
 */
async function clientOn(worker) {
  for (let attempt = 0; attempt < 60; attempt++) {
    const c = await client();
    if (c.worker === worker) return c;
    c.disconnect();
  }
  throw new Error(`no client landed on worker ${worker} in 60 tries`);
}

/** SIGSTOP every pid and wait until each is stopped. */
async function freeze(pids) {
  for (const pid of pids) process.kill(pid, "SIGSTOP");
  const deadline = Date.now() + WAIT_MS;
  while (!pids.every((pid) => processState(pid) === "T")) {
    assert.ok(Date.now() < deadline, `not all of ${pids} stopped`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** The time of a log line ("2026-01-02T03:04:05.123456Z  INFO …"), in ms. */
function logTime(line) {
  const stamp = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d{1,3})?\d*Z/m.exec(line);
  assert.ok(stamp, `no timestamp in ${JSON.stringify(line)}`);
  return Date.parse(`${stamp[1]}${stamp[2] ?? ""}Z`);
}

describe("worker heartbeat", () => {
  it("a worker frozen with SIGSTOP is killed with SIGKILL within ~6 s and replaced", logs(async (t) => {
    daemon = await startDaemon(`
[server]
workers = 2
shutdown_timeout = "1s"

[namespaces."/"]
join = "any"
presence = true
`);
    const before = await bothWorkersLinked(daemon);
    const victimPid = before.workers.find((w) => w.worker === 1).pid;
    const survivorPid = before.workers.find((w) => w.worker === 0).pid;
    const onVictim = await clientOn(1);
    const onSurvivor = await clientOn(0);
    for (const c of [onVictim, onSurvivor]) assert.equal((await ask(c, "$join", "hall")).ok, true);

    const from = daemon.mark();
    const stoppedAt = Date.now();
    await freeze([victimPid]);

    // Meanwhile the other worker serves new connections. The kernel still hashes some
    // to the frozen worker's socket (each worker has its own SO_REUSEPORT socket); those
    // wait in its backlog for the replacement, so a client with a short connect timeout
    // simply tries again and lands on worker 0.
    let meanwhile;
    for (let attempt = 0; attempt < 60 && !meanwhile; attempt++) {
      const c = await client(300).catch(() => undefined);
      if (c?.worker === 0) meanwhile = c;
      else c?.disconnect();
    }
    assert.ok(meanwhile, "a new client on worker 0 while worker 1 is frozen");
    assert.equal((await ask(meanwhile, "$join", "hall")).ok, true);
    await received(onSurvivor, "$presence", (p) => p?.action === "join" && p.id === meanwhile.sid);

    // The master gives up on it 5 s after its last answer and kills it.
    const [killLine] = await daemon.waitForLog(
      new RegExp(`^.*worker missed its heartbeats; killing it worker=1 pid=${victimPid}.*$`, "m"),
      { from, ms: DEADLINE_MS + 4 * HEARTBEAT_MS + 5000 },
    );
    const killedAfter = logTime(killLine) - stoppedAt;
    t.diagnostic(`killed ${killedAfter}ms after SIGSTOP`);
    assert.ok(killedAfter >= DEADLINE_MS - HEARTBEAT_MS, `killed ${killedAfter}ms after the freeze: before the 5 s deadline`);
    // Generous upper bound: a loaded CI machine delays the master's ticks too.
    assert.ok(killedAfter <= DEADLINE_MS + 4 * HEARTBEAT_MS, `killed ${killedAfter}ms after the freeze`);
    const [exitLine] = await daemon.waitForLog(new RegExp(`^.*worker exited worker=1 pid=${victimPid}.*$`, "m"), { from });
    assert.match(exitLine, /signal=9/, "killed with SIGKILL");
    const exitedAt = logTime(exitLine);

    // A replacement serves within 2 s; the master and the other worker are the same.
    const after = await waitForStatus(
      daemon,
      (s) => s.workers?.length === 2 && s.workers.some((w) => w.worker === 1 && w.pid !== victimPid),
      WAIT_MS,
      "replacement worker 1",
    );
    const newPid = after.workers.find((w) => w.worker === 1).pid;
    const [servingLine] = await daemon.waitForLog(new RegExp(`^.*worker serving worker=1 pid=${newPid}.*$`, "m"), { from });
    t.diagnostic(`replacement serving ${logTime(servingLine) - exitedAt}ms after the kill`);
    assert.ok(logTime(servingLine) - exitedAt <= 2000, `replacement serving ${logTime(servingLine) - exitedAt}ms after the kill`);
    assert.equal(after.pid, daemon.pid);
    assert.equal(after.workers.find((w) => w.worker === 0).pid, survivorPid);
    assert.equal(alive(victimPid), false, "the frozen worker is gone");

    // Its client lost its connection and left the room, told on the other worker.
    assert.ok(["transport close", "transport error"].includes(await within(onVictim.gone, WAIT_MS, "disconnect")));
    await received(onSurvivor, "$presence", (p) => p?.action === "leave" && p.id === onVictim.sid && p.count === 2);
    await received(meanwhile, "$presence", (p) => p?.action === "leave" && p.id === onVictim.sid);

    const metrics = await waitForMetric(daemon, "iorelay_worker_restarts_total", {}, (v) => v === 1, WAIT_MS, "restarts");
    assert.equal(metrics.value("iorelay_worker_restarts_total"), 1);
  }));

  it("the whole daemon frozen and resumed (a paused machine, systemctl kill -STOP) keeps its workers", logs(async (t) => {
    daemon = await startDaemon(`
[server]
workers = 2
shutdown_timeout = "1s"
`);
    const before = await bothWorkersLinked(daemon);
    const pids = [daemon.pid, ...before.workers.map((w) => w.pid)];
    const from = daemon.mark();
    await freeze(pids);
    // The freeze itself is the scenario: longer than the 5 s heartbeat deadline.
    await new Promise((r) => setTimeout(r, DEADLINE_MS + 1500));
    for (const pid of pids) process.kill(pid, "SIGCONT");

    // The master notices that it was paused itself, and its workers are not to blame.
    const [line] = await daemon.waitForLog(/^.*the master was paused; workers get a fresh heartbeat deadline.*$/m, { from, ms: WAIT_MS });
    t.diagnostic(line);
    // Both workers still serve clients, with the same pids, a few heartbeats later.
    for (const worker of [0, 1]) {
      const c = await clientOn(worker);
      assert.equal((await ask(c, "$join", "after")).ok, true);
    }
    const after = await bothWorkersLinked(daemon);
    assert.deepEqual(after.workers.map((w) => w.pid).sort(), before.workers.map((w) => w.pid).sort());
    assert.doesNotMatch(daemon.logs().slice(from), /worker missed its heartbeats/);
    const metrics = await waitForMetric(daemon, "iorelay_worker_restarts_total", {}, (v) => v === 0, WAIT_MS, "restarts");
    assert.equal(metrics.value("iorelay_worker_restarts_total"), 0);
  }));

  it("SIGTERM while the workers are stopped resumes them for a graceful stop", logs(async () => {
    // As `systemctl stop` after `systemctl kill -s STOP`: systemd resumes only the main
    // process (KillMode=mixed), so the master must resume its workers to stop them.
    daemon = await startDaemon(`
[server]
workers = 2
shutdown_timeout = "3s"
`);
    const status = await bothWorkersLinked(daemon);
    const pids = status.workers.map((w) => w.pid);
    await freeze(pids);
    const from = daemon.mark();
    daemon.signal("SIGTERM");
    await daemon.waitExit(WAIT_MS + 5000);
    const log = daemon.logs().slice(from);
    assert.doesNotMatch(log, /workers did not stop in time/);
    for (const pid of pids) assert.match(log, new RegExp(`worker exited worker=\\d pid=${pid} code=0`));
  }));
});

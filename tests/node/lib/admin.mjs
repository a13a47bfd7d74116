// The daemon as an operator sees it: start the real binary and keep hold of the process
// (signal it, rewrite its config file, wait for its log lines and its exit status), and
// reach its admin listener (/healthz, /readyz, /metrics).
//
// relay.mjs starts a relay for tests of the relay model and hides the process; this file
// is for the tests of the daemon itself (signals, drain, metrics). Like relay.mjs it takes
// the binary, the temp config and the environment from spawn.mjs, binds 127.0.0.1:0 for
// both listeners and learns the addresses from the "listening" log line
// (`public=ADDR admin=ADDR`), so tests never race for ports. Nothing here sleeps: every
// wait is for a log line, an event, an exit or a metric value, with a deadline.
import { spawn, execFile, spawnSync } from "node:child_process";
import { writeFileSync, rmSync, readFileSync } from "node:fs";
import { iorelayBin as bin, prepareConfig, relayEnv, TEST_TOKEN } from "./spawn.mjs";

/** The iorelay binary under test. */
export { iorelayBin } from "./spawn.mjs";

const START_MS = 20000;
const WAIT_MS = 10000;

/**
 * Start iorelay with `configToml` as its --config file (rewritable with writeConfig, so
 * SIGHUP reloads it). Resolves once it listens, to:
 *
 *   url, adminUrl          http://ADDR of the public and admin listeners
 *   pid, configFile
 *   logs()                 all of stderr so far; mark() its length, for "from here on"
 *   waitForLog(re, {from, ms})  the first match of `re` in stderr after offset `from`
 *   writeConfig(text)      replace the config file (keeps its permissions)
 *   signal(name)           send a signal to the daemon process
 *   exit                   promise of { code, signal, at } (at = Date.now() on exit)
 *   waitExit(ms)           the exit, or a rejection with the log after `ms`
 *   stop()                 SIGKILL if still running, remove the temp dir
 *                          (stopDaemon below also kills the worker processes)
 *
 * opts.env adds environment variables; opts.args adds command-line arguments;
 * opts.wrapper, a function of the environment, returns [command, ...args] to run the
 * daemon under (such as systemd-socket-activate, which execs it in place, so `pid` is
 * the daemon's all the same).
 *
 * As root (CI) it runs as `nobody` (server.user), which must be able to re-read the
 * config on SIGHUP: the temp dir and file are made world-readable.
 */
export async function startDaemon(configToml = "", opts = {}) {
  const { dir, configFile, asRoot } = prepareConfig("iorelay-daemon-test-", configToml);
  const env = relayEnv(asRoot, opts.env);
  // No inherited systemd variables: this daemon is not under a service manager.
  for (const name of ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"]) {
    if (!(opts.env && name in opts.env)) delete env[name];
  }
  const argv = ["--config", configFile, ...(opts.args || [])];
  const [command, ...args] = opts.wrapper ? [...opts.wrapper(env), bin, ...argv] : [bin, ...argv];
  const child = spawn(command, args, {
    env,
    stdio: ["ignore", "ignore", "pipe"],
  });
  let output = "";
  let closed = false;
  const waiters = new Set();
  const check = () => {
    for (const w of waiters) {
      const m = output.slice(w.from).match(w.re);
      if (m) {
        waiters.delete(w);
        clearTimeout(w.timer);
        w.resolve(m);
      } else if (closed) {
        waiters.delete(w);
        clearTimeout(w.timer);
        w.reject(new Error(`iorelay's stderr closed without a line matching ${w.re}; log:\n${output}`));
      }
    }
  };
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk) => {
    output += chunk;
    check();
  });
  child.stderr.on("close", () => {
    closed = true;
    check();
  });
  const exit = new Promise((resolveExit) => {
    child.on("exit", (code, signal) => resolveExit({ code, signal, at: Date.now() }));
  });
  const running = () => child.exitCode === null && child.signalCode === null;

  const waitForLog = (re, { from = 0, ms = WAIT_MS } = {}) =>
    new Promise((resolveLog, reject) => {
      const w = { re, from, resolve: resolveLog, reject };
      w.timer = setTimeout(() => {
        waiters.delete(w);
        reject(new Error(`timed out after ${ms}ms waiting for a log line matching ${re}; log since offset ${from}:\n${output.slice(from) || "(nothing)"}`));
      }, ms);
      waiters.add(w);
      check();
    });

  const daemon = {
    pid: child.pid,
    configFile,
    logs: () => output,
    mark: () => output.length,
    waitForLog,
    writeConfig: (text) => writeFileSync(configFile, text),
    signal: (name) => process.kill(child.pid, name),
    running,
    exit,
    async waitExit(ms = WAIT_MS) {
      let timer;
      const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`iorelay (pid ${child.pid}) did not exit within ${ms}ms; log:\n${output}`)), ms);
      });
      try {
        return await Promise.race([exit, timeout]);
      } finally {
        clearTimeout(timer);
      }
    },
    async stop() {
      for (const w of waiters) clearTimeout(w.timer);
      waiters.clear();
      if (running()) {
        process.kill(child.pid, "SIGKILL");
        await exit;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };

  let listening;
  try {
    listening = await Promise.race([
      waitForLog(/listening.*public=([\d.]+:\d+).*admin=([\d.]+:\d+)/, { ms: START_MS }),
      exit.then(({ code, signal }) => {
        throw new Error(`iorelay exited early (code ${code}, signal ${signal}):\n${output}`);
      }),
    ]);
  } catch (err) {
    await daemon.stop();
    throw err;
  }
  daemon.url = `http://${listening[1]}`;
  daemon.adminUrl = `http://${listening[2]}`;
  daemon.publicAddr = listening[1];
  daemon.adminAddr = listening[2];
  return daemon;
}

/**
 * Wrap a test body so that a failure also prints the daemon's log lines from that test.
 * `daemon` is a function returning the daemon (it may be started inside the test).
 */
export function withLogs(daemon, fn) {
  return async (t) => {
    const d0 = daemon();
    const mark = d0 ? d0.mark() : 0;
    try {
      await fn(t);
    } catch (err) {
      const d = daemon();
      t.diagnostic(`iorelay log during this test:\n${d ? d.logs().slice(d === d0 ? mark : 0) || "(nothing)" : "(not started)"}`);
      throw err;
    }
  };
}

/**
 * GET a URL; resolves to { status, text, headers }. A server API URL (/api/v1/) gets the
 * test profile's bearer token.
 */
export async function get(url) {
  const headers = url.includes("/api/v1/") ? { authorization: `Bearer ${TEST_TOKEN}` } : {};
  const res = await fetch(url, { headers, signal: AbortSignal.timeout(WAIT_MS) });
  return { status: res.status, text: await res.text(), headers: res.headers };
}

/**
 * Parse the Prometheus text exposition into samples { name, labels, value }. Comment
 * lines (# HELP, # TYPE) are skipped; label values are unescaped.
 */
export function parseExposition(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/);
    if (!m) throw new Error(`unparsable exposition line: ${JSON.stringify(line)}`);
    const labels = {};
    if (m[2]) {
      for (const [, k, v] of m[2].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
        labels[k] = v.replace(/\\(["\\n])/g, (_, c) => (c === "n" ? "\n" : c));
      }
    }
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

/**
 * The sum of the samples named `name` whose labels include every pair of `labels`
 * (0 when there is none: a labelled family has no samples until first used).
 */
export function metric(samples, name, labels = {}) {
  return samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}

/** Scrape the admin listener's /metrics: { text, samples, value(name, labels) }. */
export async function scrape(daemon) {
  const res = await get(`${daemon.adminUrl}/metrics`);
  if (res.status !== 200) throw new Error(`GET /metrics answered ${res.status}: ${res.text}`);
  const samples = parseExposition(res.text);
  return { text: res.text, samples, value: (name, labels) => metric(samples, name, labels) };
}

/**
 * Scrape until `metric(name, labels)` satisfies `pred` (some updates land just after the
 * event a test can observe, e.g. a session's close after the client's disconnect).
 * Resolves with that scrape; rejects with the last value after `ms`.
 */
export async function waitForMetric(daemon, name, labels, pred, ms = WAIT_MS, what = "") {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await scrape(daemon);
    if (pred(last.value(name, labels))) return last;
    if (Date.now() > deadline) {
      throw new Error(
        `${what || "metric"}: ${name}${JSON.stringify(labels)} = ${last.value(name, labels)} never satisfied ${pred} within ${ms}ms; exposition:\n${last.text}`,
      );
    }
    // A polling interval, not a guess: the loop ends as soon as the value is there.
    await new Promise((r) => setTimeout(r, 10));
  }
}

// ---------------------------------------------------------------------------------------
// Multi-worker daemons: the master's worker processes, the ops CLI, cleanup.

/** The command line of process `pid` (NUL-separated arguments), or null if it is gone. */
function cmdline(pid) {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8");
  } catch {
    return null;
  }
}

/** The state letter of process `pid` (R, S, T for stopped, Z, …), or null if it is gone. */
export function processState(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // "pid (comm) S ...": the state follows the last ')'.
    return stat.slice(stat.lastIndexOf(")") + 2)[0];
  } catch {
    return null;
  }
}

/**
 * Whether process `pid` is alive: it exists and is not a zombie (a dead worker orphaned
 * by its master may wait as a zombie until init reaps it).
 */
export function alive(pid) {
  const state = processState(pid);
  return state !== null && state !== "Z";
}

/** The pids of the live children of `pid` (`ps --ppid`). */
export function childPids(pid) {
  const run = spawnSync("ps", ["--ppid", String(pid), "-o", "pid=,stat="], { encoding: "utf8" });
  if (run.error) throw run.error;
  return run.stdout
    .split("\n")
    .map((l) => l.trim().split(/\s+/))
    .filter(([p, stat]) => p && !stat?.startsWith("Z"))
    .map(([p]) => Number(p));
}

// Every worker process a test has seen, by daemon: pid → its command line (which names
// the daemon's bus, so that a recycled pid is never mistaken for one of ours).
const seenWorkers = new WeakMap();

/**
 * The master's worker processes now (children running `__worker`), as pids. Remembered,
 * so that stopDaemon kills them even if the master is gone by then.
 */
export function workerPids(daemon) {
  const seen = seenWorkers.get(daemon) ?? new Map();
  seenWorkers.set(daemon, seen);
  const pids = [];
  for (const pid of childPids(daemon.pid)) {
    const line = cmdline(pid);
    if (line?.split("\0")[1] !== "__worker") continue;
    seen.set(pid, line);
    pids.push(pid);
  }
  return pids.sort((a, b) => a - b);
}

/**
 * The master's worker processes now, as [{ worker, pid }] by slot (`__worker ID …`).
 * Remembered like workerPids.
 */
export function workerSlots(daemon) {
  return workerPids(daemon)
    .map((pid) => ({ worker: Number(cmdline(pid)?.split("\0")[2]), pid }))
    .sort((a, b) => a.worker - b.worker);
}

/**
 * Stop a daemon and every worker process of it: the current children of the master
 * (looked up before the master goes), and any worker seen earlier that is still alive
 * with the same command line. All by pid, SIGKILL.
 */
export async function stopDaemon(daemon) {
  if (!daemon) return;
  if (daemon.running()) workerPids(daemon);
  const seen = seenWorkers.get(daemon) ?? new Map();
  await daemon.stop();
  for (const [pid, line] of seen) {
    if (alive(pid) && cmdline(pid) === line) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // Gone in between.
      }
    }
  }
}

/**
 * Run the iorelay binary with `args` (an ops subcommand: status, reload, rooms …), with
 * the test profile's server API token in IORELAY_TOKEN (and `env` on top). Resolves to
 * { code, stdout, stderr }; bounded by `ms`.
 */
export function runCli(args, ms = WAIT_MS, env = {}) {
  return new Promise((resolveRun) => {
    const full = { ...process.env, NO_COLOR: "1", IORELAY_TOKEN: TEST_TOKEN, ...env };
    execFile(bin, args, { timeout: ms, encoding: "utf8", env: full }, (err, stdout, stderr) => {
      resolveRun({ code: err ? (err.code ?? err.signal) : 0, stdout, stderr });
    });
  });
}

/** `iorelay status --admin ADDR --json`, parsed (it fails the test when the CLI does). */
export async function cliStatus(daemon) {
  const run = await runCli(["status", "--admin", daemon.adminAddr, "--json"]);
  if (run.code !== 0) {
    throw new Error(`iorelay status --admin ${daemon.adminAddr} --json exited ${run.code}: ${run.stderr}${run.stdout}`);
  }
  return JSON.parse(run.stdout);
}

/** GET /api/v1/status on the admin listener (what `iorelay status` asks), parsed. */
export async function apiStatus(daemon) {
  const res = await get(`${daemon.adminUrl}/api/v1/status`);
  if (res.status !== 200) throw new Error(`GET /api/v1/status answered ${res.status}: ${res.text}`);
  return JSON.parse(res.text);
}

/** Wait until the status lists two workers linked to each other; resolves with it. */
export function bothWorkersLinked(daemon) {
  return waitForStatus(daemon, (s) => s.workers?.length === 2 && s.workers.every((w) => w.peers === 1), WAIT_MS, "both workers linked");
}

/**
 * Ask the status API until `pred(status)` holds; resolves with that status, rejects with
 * the last one after `ms`.
 */
export async function waitForStatus(daemon, pred, ms = WAIT_MS, what = "status") {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await apiStatus(daemon);
    if (pred(last)) return last;
    if (Date.now() > deadline) {
      throw new Error(`${what}: not reached within ${ms}ms; last status:\n${JSON.stringify(last, null, 2)}`);
    }
    // A polling interval, not a guess: the loop ends as soon as the state is there.
    await new Promise((r) => setTimeout(r, 20));
  }
}

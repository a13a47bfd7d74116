// The servers of benches/jitter.mjs, started on 127.0.0.1 and stopped by pid: iorelay
// (2 workers, the namespace /jitter with recovery, from a config written here, checked
// with `iorelay check-config` first) and the Node socket.io server
// (peers/node/jitter-server.mjs, without or with connectionStateRecovery). Each comes
// back as { url, pid, cpu(), logs(), stop() }; `notePid(pid, tag)` records what the
// wrapper must kill should node die first.
import { spawn, spawnSync } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { startDaemon, stopDaemon, workerPids, waitForStatus } from "../tests/node/lib/admin.mjs";
import { iorelayBin, prepareConfig, relayEnv } from "../tests/node/lib/spawn.mjs";

export const NAMESPACE = "/jitter";
export const ROOM = "jitter";
/** Both servers keep a disconnected client's session for 2 minutes. */
export const RECOVERY_MS = 2 * 60 * 1000;
const here = dirname(fileURLToPath(import.meta.url));

/**
 * CPU seconds (user + system) of a server: the process, its reaped children (a killed
 * iorelay worker's time moves to the master's cutime/cstime) and its live children
 * (`kids`, iorelay's workers).
 */
export function cpuSeconds(pid, kids = []) {
  const ticks = (p, reaped) => {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      // Fields 14-17 of proc(5): utime, stime, cutime, cstime (f[0] is field 3).
      return Number(f[11]) + Number(f[12]) + (reaped ? Number(f[13]) + Number(f[14]) : 0);
    } catch {
      return 0;
    }
  };
  // USER_HZ is 100 on Linux.
  return (ticks(pid, true) + kids.reduce((sum, k) => sum + ticks(k, false), 0)) / 100;
}

/** iorelay's config for the run: 2 workers, /jitter relaying to the namespace or a room. */
export function iorelayConfig(o) {
  const eps = Math.max(50, Math.ceil(o.rate * 2));
  return `
[server]
workers = 2
shutdown_timeout = "2s"
# Each client sends an X-Forwarded-For of its own, so that the reconnect storm after a
# worker kill does not meet the per-address handshake limits.
trusted_proxies = ["127.0.0.1"]
events_per_ip_per_second = ${Math.max(1000, eps)}
event_burst_per_ip = ${Math.max(2000, eps * 2)}

[namespaces."${NAMESPACE}"]
join = "${o.route === "room" ? "any" : "none"}"
route = "${o.route === "room" ? "rooms" : "namespace"}"
echo = false
presence = false
${o.iorelayRecovery ? 'recovery = { max_disconnection = "2m" }' : ""}

[namespaces."${NAMESPACE}".limits]
# The publisher sends --rate events per second.
events_per_second = ${eps}
burst = ${eps * 2}
`;
}

/** `iorelay check-config` on the config: null when accepted, else its complaint. */
export function iorelayRefuses(config) {
  const { dir, configFile, asRoot } = prepareConfig("iorelay-jitter-check-", config);
  try {
    const run = spawnSync(iorelayBin, ["check-config", "--config", configFile], { env: relayEnv(asRoot), encoding: "utf8", timeout: 30000 });
    if (run.error) throw run.error;
    return run.status === 0 ? null : { status: run.status, text: `${run.stderr}${run.stdout}`.trim() };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function startIorelay(o, notePid) {
  const daemon = await startDaemon(iorelayConfig(o), { env: { IORELAY_LOG__LEVEL: "warn,iorelay=info" } });
  // Its config file's path (a fresh temp dir) is in its command line: a unique tag.
  notePid(daemon.pid, daemon.configFile);
  await waitForStatus(daemon, (s) => s.workers?.length === 2 && s.workers.every((w) => w.peers === 1), 20000, "both workers linked");
  return {
    url: daemon.url,
    pid: daemon.pid,
    daemon,
    cpu: () => cpuSeconds(daemon.pid, workerPids(daemon)),
    stop: () => stopDaemon(daemon),
    logs: () => daemon.logs(),
  };
}

export async function startNode(o, recovery, notePid) {
  const script = join(here, "peers", "node", "jitter-server.mjs");
  // The tag argument (ignored by the script) makes its command line unique for the pid file.
  const tag = `jitter-${process.pid}-${Date.now()}`;
  const child = spawn(process.execPath, [script, tag], {
    env: { ...process.env, PORT: "0", ROUTE: o.route, NAMESPACE, RECOVERY_MS: recovery ? String(RECOVERY_MS) : "0" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  notePid(child.pid, tag);
  let output = "";
  const exited = new Promise((r) => child.on("exit", r));
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`jitter-server.mjs did not listen within 20 s:\n${output}`)), 20000);
    const onData = (chunk) => {
      output += chunk;
      const m = output.match(/listening on (http:\/\/127\.0\.0\.1:\d+)\//);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    };
    child.stdout.setEncoding("utf8").on("data", onData);
    child.stderr.setEncoding("utf8").on("data", onData);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`jitter-server.mjs exited (code ${code}, signal ${signal}):\n${output}`));
    });
  });
  return {
    url,
    pid: child.pid,
    cpu: () => cpuSeconds(child.pid),
    logs: () => output,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGKILL");
        await exited;
      }
    },
  };
}

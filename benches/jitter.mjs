// The jitter run (benches/jitter is the entry point; see "Delivery under network cuts" in
// benches/README.md): how many broadcast messages reach clients whose TCP connections are
// cut now and then, on iorelay with connection state recovery, and on the official Node
// socket.io 4.8 server without and with its `connectionStateRecovery`, in one run.
//
// For each server in turn, one Node process (this one):
//   - starts the server on 127.0.0.1 (iorelay with 2 workers from a config written here;
//     Node from benches/peers/node/jitter-server.mjs);
//   - gives each of N socket.io-client 4.8 clients a TCP proxy of its own (net module,
//     127.0.0.1:0) in front of the server. At random times the proxy cuts the client:
//     both sides of every connection it carries are destroyed, and for 1–5 s (random)
//     every new connection from that client is reset at once, so the client really is
//     offline that long; then its own reconnection brings it back (with `auth.pid` and
//     `auth.offset` when the server gave it a pid);
//   - a publisher, connected straight to the server (no proxy), emits `msg` with numbers
//     1..rate×duration at a fixed rate, each with an ack; the server relays it to every
//     other socket of the namespace (or of a room, --route room);
//   - for iorelay, one worker (not the publisher's) is killed with SIGKILL mid-run; the
//     master restarts it and its clients reconnect (through their proxies);
//   - after the window, waits for every client to be back and for deliveries to stop,
//     then counts per client by message number (the offset argument that recovery
//     appends is ignored): received, missing (of the messages the server acked),
//     duplicates, out of order, reconnects and whether each was recovered.
//
// Prints a table and writes two CSV files: a row per server, and a row per client and
// server. Exit status: 1 when
// iorelay with recovery delivered less than every acked message to every client, or
// delivered one twice or out of order; 2 when the run itself failed. Node's figures are
// reported, never a failure. While the recovery key is not in iorelay's config yet,
// `check-config` refuses it and iorelay is skipped with that reason.
import { createRequire } from "node:module";
import { appendFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { workerSlots, waitForStatus } from "../tests/node/lib/admin.mjs";
import { iorelayBin } from "../tests/node/lib/spawn.mjs";
import { workerOf } from "../tests/node/lib/workers.mjs";
import { CutProxy } from "./jitter-proxy.mjs";
import { NAMESPACE, ROOM, iorelayConfig, iorelayRefuses, startIorelay, startNode } from "./jitter-servers.mjs";
import { summarize, printTable, writeCsv, fmt } from "./jitter-report.mjs";

const require = createRequire(new URL("../tests/node/package.json", import.meta.url));
const { io } = require("socket.io-client");
const clientVersion = require("socket.io-client/package.json").version;
const serverVersion = (() => {
  try {
    return createRequire(new URL("./peers/node/package.json", import.meta.url))("socket.io/package.json").version;
  } catch {
    return "?";
  }
})();
const here = dirname(fileURLToPath(import.meta.url));

// ---------------------------------------------------------------- options
const argv = process.argv.slice(2);
const KNOWN = new Set(["ci", "debug", "no-kill", "no-iorelay-recovery", "servers", "clients", "duration", "rate", "cuts", "outage-min", "outage-max", "transport", "route", "kill-at", "seed", "drain", "csv", "pidfile"]);
for (const a of argv) {
  if (a.startsWith("--") && !KNOWN.has(a.slice(2))) {
    console.error(`jitter: unknown option ${a} (see the head of benches/jitter)`);
    process.exit(64);
  }
}
const opt = (name, dflt) => {
  const i = argv.indexOf(`--${name}`);
  if (i < 0) return dflt;
  const v = argv[i + 1];
  if (typeof dflt !== "number") return v;
  const n = Number(v);
  if (v === undefined || !Number.isFinite(n)) {
    console.error(`jitter: --${name} needs a number, not ${v}`);
    process.exit(64);
  }
  return n;
};
const flag = (name) => argv.includes(`--${name}`);
const ci = flag("ci");
const o = {
  servers: opt("servers", "iorelay,node,node-recovery").split(","),
  clients: opt("clients", ci ? 50 : 200),
  duration: opt("duration", ci ? 20 : 60),
  rate: opt("rate", 100),
  cuts: opt("cuts", 3),
  outageMin: opt("outage-min", 1),
  outageMax: opt("outage-max", 5),
  transport: opt("transport", "websocket"),
  route: opt("route", "namespace"),
  kill: !flag("no-kill"),
  killAt: opt("kill-at", -1),
  iorelayRecovery: !flag("no-iorelay-recovery"),
  seed: opt("seed", Math.floor(Math.random() * 2 ** 31)),
  drain: opt("drain", 30),
  csv: opt("csv", ""),
  pidfile: opt("pidfile", ""),
};
const SERVERS = ["iorelay", "node", "node-recovery"];
const bad = [];
if (o.servers.some((s) => !SERVERS.includes(s))) bad.push(`--servers: each of ${SERVERS.join(", ")}`);
if (!["websocket", "polling"].includes(o.transport)) bad.push("--transport: websocket or polling");
if (!["namespace", "room"].includes(o.route)) bad.push("--route: namespace or room");
if (!(o.clients >= 1 && o.rate > 0 && o.duration >= 10)) bad.push("--clients ≥ 1, --rate > 0, --duration ≥ 10");
if (!(o.outageMin > 0 && o.outageMax >= o.outageMin)) bad.push("0 < --outage-min ≤ --outage-max");
if (bad.length) {
  console.error(`jitter: ${bad.join("; ")}`);
  process.exit(64);
}
if (o.killAt < 0) o.killAt = o.duration / 2;

const TOTAL = Math.round(o.rate * o.duration);
// A client's connect (socket.io's default) or $join ack that takes longer fails.
const ACK_MS = 20_000;
// How long the publisher waits for the ack of one message. Generous: a server that falls
// behind acks late, and that shows in the ack latency, not as messages left out.
const PUB_ACK_MS = Math.max(30, o.drain) * 1000;

const log = (...a) => console.error(`[${new Date().toISOString().slice(11, 19)}]`, ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => Date.now();
async function until(pred, ms, every = 100) {
  const deadline = now() + ms;
  while (!(await pred())) {
    if (now() > deadline) return false;
    await sleep(every);
  }
  return true;
}

/** mulberry32: a small seeded generator, so that --seed repeats a run's cut schedule. */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Each client's cuts: [{ at, ms }] in seconds after the window opens and the outage's
 * length in ms. `cuts` start times spread at random over [1, duration − 6] (the longest
 * outage ends before the window does), each at least the previous outage plus 1 s after
 * it (a cut that would go past the end is dropped). The same seed gives every server the
 * same schedule.
 */
function cutSchedule(rand) {
  const lo = 1;
  const hi = Math.max(lo + 1, o.duration - o.outageMax - 1);
  const starts = Array.from({ length: o.cuts }, () => lo + rand() * (hi - lo)).sort((a, b) => a - b);
  const out = [];
  let free = lo;
  for (const s of starts) {
    const at = Math.max(s, free);
    if (at > hi) break;
    const ms = Math.round((o.outageMin + rand() * (o.outageMax - o.outageMin)) * 1000);
    out.push({ at, ms });
    free = at + ms / 1000 + 1;
  }
  return out;
}

// ---------------------------------------------------------------- process bookkeeping
// The wrapper (benches/jitter) kills what is named here if this process dies first.
function notePid(pid, tag) {
  if (o.pidfile) appendFileSync(o.pidfile, `${pid} ${tag}\n`);
}

// ---------------------------------------------------------------- clients
/** A client's own address for X-Forwarded-For (iorelay trusts 127.0.0.1 as a proxy). */
const addressOf = (i) => `10.2.${(i >> 8) & 255}.${i & 255}`;

class Client {
  constructor(i, url, schedule) {
    this.i = i;
    this.schedule = schedule;
    this.got = new Uint8Array(TOTAL + 1);
    this.unique = 0;
    this.dups = 0;
    this.outOfOrder = 0;
    this.malformed = 0;
    this.maxSeen = 0;
    this.connects = 0;
    this.recovered = 0;
    this.notRecovered = 0;
    this.reasons = {};
    this.offlineMs = 0;
    this.downAt = 0;
    this.connected = false;
    this.joined = false;
    this.lastAt = 0;
    const socket = io(`${url}${NAMESPACE}`, {
      forceNew: true,
      transports: [o.transport],
      extraHeaders: { "x-forwarded-for": addressOf(i) },
      timeout: ACK_MS,
    });
    this.socket = socket;
    socket.on("connect", () => {
      this.connected = true;
      this.worker = workerOf(socket.io.engine.id);
      if (this.connects > 0) {
        this.offlineMs += now() - this.downAt;
        if (socket.recovered) this.recovered++;
        else this.notRecovered++;
      }
      this.connects++;
      // A recovered socket is back in its rooms; any other joins again.
      if (o.route === "room" && !socket.recovered) this.join();
      else this.joined = true;
    });
    socket.on("disconnect", (reason) => {
      // socket.io-client also says "disconnect" when its transport closes between the
      // Engine.IO open and the namespace's CONNECT answer: only a connected socket's
      // disconnect is one here, so that the reasons add up to the reconnects.
      if (this.connected && !closing) this.reasons[reason] = (this.reasons[reason] ?? 0) + 1;
      if (this.connected) this.downAt = now();
      this.connected = false;
      this.joined = false;
    });
    // The number is the first argument; with recovery the server appends its offset.
    socket.on("msg", (n) => {
      this.lastAt = now();
      lastDelivery = this.lastAt;
      if (!Number.isInteger(n) || n < 1 || n > TOTAL) {
        this.malformed++;
        return;
      }
      if (this.got[n]) {
        this.dups++;
        return;
      }
      this.got[n] = 1;
      this.unique++;
      if (n < this.maxSeen) this.outOfOrder++;
      else this.maxSeen = n;
    });
  }

  join() {
    const sid = this.socket.id;
    this.socket
      .timeout(ACK_MS)
      .emitWithAck("$join", ROOM)
      .then((ack) => {
        if (ack?.ok && this.socket.connected && this.socket.id === sid) this.joined = true;
      })
      .catch(() => {});
  }

  close() {
    this.socket.io.reconnection(false);
    this.socket.disconnect();
  }
}
let closing = false;
let lastDelivery = 0;

/** The publisher: straight to the server, numbered `msg` events with acks. */
async function publisher(url) {
  const socket = io(`${url}${NAMESPACE}`, {
    forceNew: true,
    transports: ["websocket"],
    extraHeaders: { "x-forwarded-for": "10.3.0.1" },
    timeout: ACK_MS,
  });
  const pub = { socket, disconnects: 0, status: new Uint8Array(TOTAL + 1), pending: 0, ackMs: [] };
  socket.on("disconnect", () => pub.disconnects++);
  await new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", (err) => reject(new Error(`publisher: ${err.message}`)));
  });
  pub.worker = workerOf(socket.io.engine.id);
  if (o.route === "room") {
    const ack = await socket.timeout(ACK_MS).emitWithAck("$join", ROOM);
    if (!ack?.ok) throw new Error(`publisher: $join answered ${JSON.stringify(ack)}`);
  }
  return pub;
}

// status per message: 0 not sent, 1 pending, 2 acked ok, 3 refused, 4 no ack in time.
const OK = 2;
async function publish(pub, t0) {
  let sent = 0;
  while (sent < TOTAL) {
    const due = Math.min(TOTAL, Math.floor(((now() - t0) * o.rate) / 1000) + 1);
    while (sent < due) {
      const n = ++sent;
      pub.status[n] = 1;
      pub.pending++;
      const t = performance.now();
      pub.socket
        .timeout(PUB_ACK_MS)
        .emitWithAck("msg", n)
        .then((ack) => {
          pub.status[n] = ack?.ok ? OK : 3;
          pub.ackMs.push(performance.now() - t);
        })
        .catch(() => (pub.status[n] = 4))
        .finally(() => pub.pending--);
    }
    await sleep(Math.max(1, Math.ceil(1000 / o.rate)));
  }
}

// ---------------------------------------------------------------- one server
async function runServer(name) {
  log(`${name}: starting`);
  const server = name === "iorelay" ? await startIorelay(o, notePid) : await startNode(o, name === "node-recovery", notePid);
  current = server;
  const lag = monitorEventLoopDelay({ resolution: 20 });
  const proxies = [];
  const clients = [];
  const timers = new Set();
  const r = { name, kill: null, load: [loadavg()[0]] };
  try {
    const rand = rng(o.seed);
    const upstream = Number(new URL(server.url).port);
    for (let i = 0; i < o.clients; i++) {
      const p = new CutProxy(upstream);
      await p.listen();
      proxies.push(p);
      clients.push(new Client(i, `http://127.0.0.1:${p.port}`, cutSchedule(rand)));
    }
    if (!(await until(() => clients.every((c) => c.connected && c.joined), 60000))) {
      throw new Error(`only ${clients.filter((c) => c.joined).length}/${o.clients} clients connected in 60 s`);
    }
    const pub = await publisher(server.url);
    log(`${name}: ${o.clients} clients and the publisher connected; ${TOTAL} messages at ${o.rate}/s for ${o.duration} s`);

    lag.enable();
    const cpu0 = server.cpu();
    const t0 = now();
    for (const [i, c] of clients.entries()) {
      for (const cut of c.schedule) {
        const t = setTimeout(() => {
          timers.delete(t);
          proxies[i].cut(cut.ms);
        }, cut.at * 1000);
        timers.add(t);
      }
    }
    let killing = Promise.resolve();
    if (name === "iorelay" && o.kill) {
      killing = sleep(o.killAt * 1000).then(() => killWorker(server, pub, clients, r));
    }
    // A line every 5 s: how the run goes (and whether the server still keeps up).
    const progress = setInterval(() => {
      const up = clients.filter((c) => c.connected).length;
      const acked = pub.status.reduce((s, x) => s + (x === OK ? 1 : 0), 0);
      log(`${name}: ${((now() - t0) / 1000).toFixed(0)} s: ${up}/${o.clients} clients connected, ${acked} acked, ${pub.pending} awaiting an ack`);
    }, 5000);
    try {
      await publish(pub, t0);
      await killing;
    } finally {
      clearInterval(progress);
    }
    await until(() => pub.pending === 0, PUB_ACK_MS + 2000);
    const windowS = (now() - t0) / 1000;
    r.serverCpuPct = (100 * (server.cpu() - cpu0)) / windowS;
    log(`${name}: published for ${windowS.toFixed(1)} s; waiting for every client to be back and deliveries to stop`);

    // Done when everybody is back and has everything, or when everybody is back and
    // nothing arrived for 3 s (a server without recovery never sends what was missed).
    const acked = [];
    for (let n = 1; n <= TOTAL; n++) if (pub.status[n] === OK) acked.push(n);
    const complete = (c) => c.unique >= acked.length && acked.every((n) => c.got[n]);
    const drained = await until(
      () => clients.every((c) => c.connected && c.joined) && (clients.every(complete) || now() - lastDelivery > 3000),
      o.drain * 1000,
      200,
    );
    lag.disable();
    r.drained = drained;
    r.windowS = windowS;
    const ackMs = pub.ackMs.sort((a, b) => a - b);
    const q = (p) => (ackMs.length ? ackMs[Math.min(ackMs.length - 1, Math.floor(p * ackMs.length))] : undefined);
    r.pub = {
      sent: TOTAL,
      acked: acked.length,
      refused: pub.status.filter((s) => s === 3).length,
      noAck: pub.status.filter((s) => s === 4).length,
      disconnects: pub.disconnects,
      worker: pub.worker,
      ackP50: q(0.5),
      ackP99: q(0.99),
      ackMax: ackMs.at(-1),
    };
    r.load = [r.load[0], loadavg()[0]];
    r.lagMaxMs = lag.max / 1e6;
    r.lagP99Ms = lag.percentile(99) / 1e6;
    r.clients = clients.map((c, i) => {
      let got = 0;
      for (const n of acked) got += c.got[n];
      return {
        client: c.i,
        received: got,
        missing: acked.length - got,
        unconfirmed: c.unique - got,
        duplicates: c.dups,
        outOfOrder: c.outOfOrder,
        malformed: c.malformed,
        cuts: proxies[i].cuts,
        refused: proxies[i].refused,
        reconnects: c.connects - 1,
        recovered: c.recovered,
        notRecovered: c.notRecovered,
        offlineS: c.offlineMs / 1000,
        connected: c.connected,
        reasons: c.reasons,
        killed: r.kill?.victims.has(c.i) ?? false,
      };
    });
    pub.socket.disconnect();
    return r;
  } finally {
    closing = true;
    for (const t of timers) clearTimeout(t);
    for (const c of clients) c.close();
    for (const p of proxies) p.close();
    closing = false;
    lastDelivery = 0;
    await server.stop();
    current = null;
  }
}

/** SIGKILL the worker that does not own the publisher's session; note who was on it. */
async function killWorker(server, pub, clients, r) {
  const slots = workerSlots(server.daemon);
  const slot = slots.find((w) => w.worker !== pub.worker) ?? slots.at(-1);
  if (!slot) {
    log("iorelay: no worker to kill");
    return;
  }
  const victims = new Set(clients.filter((c) => c.connected && c.worker === slot.worker).map((c) => c.i));
  process.kill(slot.pid, "SIGKILL");
  const t = now();
  r.kill = { slot: slot.worker, pid: slot.pid, victims, at: o.killAt };
  log(`iorelay: kill -9 worker ${slot.worker} (pid ${slot.pid}) with ${victims.size} clients on it`);
  try {
    await waitForStatus(server.daemon, (s) => s.workers?.length === 2 && s.workers.every((w) => w.peers === 1 && w.pid !== slot.pid), 30000, "worker restarted");
    r.kill.backS = (now() - t) / 1000;
  } catch (err) {
    log(`iorelay: ${err.message.split("\n")[0]}`);
  }
}

// ---------------------------------------------------------------- main
let running = null;
// The server of the current round, so that Ctrl-C stops it (by pid) before exiting.
let current = null;
for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]]) {
  process.on(signal, () => {
    Promise.resolve(current?.stop())
      .catch(() => {})
      .finally(() => process.exit(code));
  });
}

async function main() {
  const stamp = new Date().toISOString().replace(/\.\d+Z$/, "Z");
  if (!o.csv) o.csv = join(here, "results", `jitter-${stamp.replaceAll(":", "")}.csv`);
  const skipped = [];
  const order = o.servers.filter((s, i) => o.servers.indexOf(s) === i);
  if (order.includes("iorelay")) {
    const refused = iorelayRefuses(iorelayConfig(o));
    if (refused) {
      // Until recovery is in iorelay's config, check-config refuses the key: skip, say why.
      if (!/recovery/.test(refused.text)) throw new Error(`iorelay check-config refused the jitter config (exit ${refused.status}):\n${refused.text}`);
      const why = `this iorelay (${iorelayBin}) refuses the recovery config (check-config exit ${refused.status}): ${refused.text.split("\n").slice(1).join(" ").trim() || refused.text}`;
      log(`iorelay: SKIPPED — ${why}`);
      skipped.push(["iorelay", why]);
    }
  }
  const results = [];
  for (const name of order) {
    if (skipped.some(([s]) => s === name)) continue;
    running = name;
    results.push(await runServer(name));
  }
  running = null;
  const sums = results.map(summarize);
  printTable(o, sums, skipped, { client: clientVersion, server: serverVersion });
  writeCsv(o, sums, results, skipped, stamp);

  const io = sums.find((s) => s.server === "iorelay");
  if (io && o.iorelayRecovery) {
    const why = [];
    if (io.missing) why.push(`${io.missing} deliveries missing (${fmt(io.deliveredPct, 3)}%)`);
    if (io.duplicates) why.push(`${io.duplicates} duplicates`);
    if (io.outOfOrder) why.push(`${io.outOfOrder} out of order`);
    if (io.malformed) why.push(`${io.malformed} malformed`);
    if (why.length) {
      console.log(`\njitter: FAILED: iorelay with recovery: ${why.join(", ")}`);
      return 1;
    }
    console.log("\njitter: passed: iorelay with recovery delivered every acked message once, in order, to every client");
  }
  return 0;
}

main()
  .then((code) => process.exit(code))
  .catch((err) => {
    console.error(`jitter: ${running ? `${running}: ` : ""}${err.stack || err}`);
    process.exit(2);
  });

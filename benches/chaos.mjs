// The chaos run and the soak (benches/chaos is the entry point; see benches/README.md).
//
// One Node process drives N socket.io-client clients (the official client, with its own
// reconnection) against a 2-worker iorelay, each client in one room of a namespace with
// presence on, and counts per client exactly which numbered messages it received.
//
// chaos (default): during a fixed window the clients emit `msg` (sender, seq) at a fixed
// total rate, each with an ack; meanwhile worker slot 1 is SIGKILLed every few seconds,
// the master gets bursts of SIGHUP, and one client address floods polling handshakes.
// Then it checks (exit status 1 if any fails):
//   - every client that stayed connected through the window (they are all on worker 0,
//     which is never killed) received every message the relay acked from another member
//     of its room during the window, and none twice;
//   - only clients of the killed slot ever disconnected, and every client is connected
//     again at the end (socket.io-client's reconnection, nothing done here);
//   - no ghosts: each room's member list (GET /api/v1/rooms/R/members, and `$members`
//     asked by a member) is exactly the clients connected in it, within the heartbeat
//     deadline plus one Engine.IO ping interval and timeout;
//   - RSS (master + workers, /proc) returns near its baseline once the clients are gone.
//
// soak (--soak): a steady mixed load without faults: polling-only, websocket-only and
// upgrading clients, a few replaced every second (each with a new room), events at a fixed
// rate; RSS and open fds of master and workers sampled into a CSV every --sample seconds.
//
// Most chaos clients open a WebSocket directly (--upgrade-share of them start with polling
// and upgrade). The strict checks hold for the WebSocket-only ones: an upgrading client
// owned by worker 0 whose requests or upgrade landed on worker 1 is forwarded or spliced
// through worker 1 (src/http/forward.rs) and loses its transport when worker 1 dies; those
// disconnects are counted and shown, not failed.
//
// The honest clients come through 127.0.0.1 as a trusted proxy with an X-Forwarded-For of
// their own (10 clients per address), so the flood's address (203.0.113.66) is the only
// one the per-address handshake limits (src/engine/admission.rs) refuse.
import { createRequire } from "node:module";
import { readFileSync, readdirSync, writeFileSync, appendFileSync } from "node:fs";
import http from "node:http";
import {
  startDaemon,
  stopDaemon,
  workerSlots,
  workerPids,
  waitForStatus,
  get,
  scrape,
} from "../tests/node/lib/admin.mjs";
import { workerOf } from "../tests/node/lib/workers.mjs";

const require = createRequire(new URL("../tests/node/package.json", import.meta.url));
const { io } = require("socket.io-client");

// ---------------------------------------------------------------- options
const argv = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = argv.indexOf(`--${name}`);
  if (i < 0) return dflt;
  const v = argv[i + 1];
  return typeof dflt === "number" ? Number(v) : v;
};
const flag = (name) => argv.includes(`--${name}`);
const ci = flag("ci");
const soak = flag("soak");
const o = {
  clients: opt("clients", ci ? 200 : soak ? 300 : 1000),
  duration: opt("duration", ci ? 35 : soak ? 1800 : 60),
  rate: opt("rate", soak ? 100 : 200),
  roomSize: opt("room-size", 20),
  killEvery: opt("kill-every", 5),
  hupEvery: opt("hup-every", 7),
  hupBurst: opt("hup-burst", 10),
  flood: opt("flood", 8),
  upgradeShare: opt("upgrade-share", 0.25),
  // Checks the checks: every K-th delivery is ignored as if never received, so the run
  // must fail with about 1/K of the expected deliveries reported lost.
  dropEvery: opt("drop-every", 0),
  churn: opt("churn", 5),
  sample: opt("sample", 30),
  csv: opt("csv", ""),
  pidfile: opt("pidfile", ""),
};
const rooms = Math.max(1, Math.ceil(o.clients / o.roomSize));
// Engine.IO ping interval and timeout for the run: short, so that the ghost check's
// deadline (and the flood's abandoned sessions) are seconds, not the default 45 s.
const PING_INTERVAL_S = 5;
const PING_TIMEOUT_S = 5;
// src/daemon/heartbeat.rs HEARTBEAT_DEADLINE: a worker silent this long is replaced.
const HEARTBEAT_DEADLINE_S = 5;
const KILL_SLOT = 1;
const FLOOD_IP = "203.0.113.66";

const config = `
[server]
workers = 2
shutdown_timeout = "2s"
trusted_proxies = ["127.0.0.1"]

[engine]
ping_interval = "${PING_INTERVAL_S}s"
ping_timeout = "${PING_TIMEOUT_S}s"

[namespaces."/"]
join = "any"
route = "rooms"
echo = false
presence = true
`;

const log = (...a) => console.error(`[${new Date().toISOString().slice(11, 19)}]`, ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => Date.now();

/** Wait until `pred()` is true (checked every `every` ms) or `ms` passed; returns pred(). */
async function until(pred, ms, every = 100) {
  const deadline = now() + ms;
  while (!(await pred())) {
    if (now() > deadline) return false;
    await sleep(every);
  }
  return true;
}

// ---------------------------------------------------------------- /proc
function rssKib(pid) {
  try {
    const m = readFileSync(`/proc/${pid}/status`, "utf8").match(/^VmRSS:\s+(\d+)/m);
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}
function fdCount(pid) {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return 0;
  }
}
/** { master, workers, total } RSS in KiB, and the same for open fds. */
function sampleProc(daemon) {
  const workers = workerPids(daemon);
  const wRss = workers.reduce((s, p) => s + rssKib(p), 0);
  const wFds = workers.reduce((s, p) => s + fdCount(p), 0);
  const mRss = rssKib(daemon.pid);
  const mFds = fdCount(daemon.pid);
  return { mRss, wRss, rss: mRss + wRss, mFds, wFds, fds: mFds + wFds, workers: workers.length };
}

// ---------------------------------------------------------------- clients
const clients = [];
let windowOpen = false;
// Set once the run closes its clients itself: those disconnects are not counted.
let closing = false;
// Messages the clients emitted: key → { from, seq, room, status, t }.
const messages = new Map();
const key = (from, seq) => seq * 65536 + from;
let dupTotal = 0;
let presenceEvents = 0;
let trackMessages = !soak;
let delivered = 0;

function addressOf(i) {
  const group = Math.floor(i / 10);
  return `10.1.${(group >> 8) & 255}.${group & 255}`;
}

class Client {
  constructor(i, url, room, transports) {
    this.i = i;
    this.room = room;
    this.seq = 0;
    this.connected = false;
    this.joined = false;
    this.connects = 0;
    this.disconnects = [];
    this.got = new Set();
    this.upgrades = transports.length > 1;
    this.received = 0;
    const socket = io(`${url}/`, {
      forceNew: true,
      transports,
      extraHeaders: { "x-forwarded-for": addressOf(i) },
      timeout: 10000,
      reconnectionDelay: 500,
      reconnectionDelayMax: 2000,
    });
    this.socket = socket;
    socket.on("connect", () => {
      this.connected = true;
      this.connects++;
      this.sid = socket.id;
      this.worker = workerOf(socket.io.engine.id);
      socket
        .timeout(10000)
        .emitWithAck("$join", this.room)
        .then((ack) => {
          if (ack?.ok && socket.connected && socket.id === this.sid) this.joined = true;
        })
        .catch(() => {});
    });
    socket.on("disconnect", (reason) => {
      this.connected = false;
      this.joined = false;
      if (!closing) this.disconnects.push({ t: now(), worker: this.worker, reason, inWindow: windowOpen });
    });
    socket.on("msg", (from, seq) => {
      delivered++;
      if (!trackMessages || (o.dropEvery && delivered % o.dropEvery === 0)) return;
      const k = key(from, seq);
      if (this.got.has(k)) {
        dupTotal++;
        this.dups = (this.dups ?? 0) + 1;
      } else this.got.add(k);
    });
    socket.on("$presence", () => presenceEvents++);
  }

  /** Emit the next numbered message to the room, with an ack; only while joined. */
  send() {
    if (!this.joined || !this.socket.connected) return false;
    const seq = ++this.seq;
    const m = { from: this.i, seq, room: this.room, status: "pending", t: now(), inWindow: windowOpen };
    if (trackMessages) messages.set(key(this.i, seq), m);
    acks.pending++;
    this.socket
      .timeout(10000)
      .emitWithAck("msg", this.i, seq)
      .then((ack) => {
        m.status = ack?.ok ? "ok" : "refused";
        if (!ack?.ok) acks.refusedWhy[ack?.error] = (acks.refusedWhy[ack?.error] ?? 0) + 1;
      })
      .catch(() => {
        m.status = "unknown";
      })
      .finally(() => {
        acks.pending--;
        acks[m.status]++;
      });
    return true;
  }

  close() {
    this.socket.io.reconnection(false);
    this.socket.disconnect();
  }
}
const acks = { pending: 0, ok: 0, refused: 0, unknown: 0, refusedWhy: {} };

// ---------------------------------------------------------------- the faults
const faults = { kills: [], hups: 0, flood: { sent: 0, status: {}, errors: 0 } };
let faultsOn = false;

async function killLoop(daemon) {
  while (faultsOn) {
    // Kill the slot only once it is back and linked, then let it serve for a while:
    // killing a slot that is still restarting would only lengthen its backoff.
    try {
      await waitForStatus(daemon, (s) => s.workers?.length === 2 && s.workers.every((w) => w.peers === 1), 30000, "worker back");
    } catch (err) {
      log(`kill loop: ${err.message.split("\n")[0]}`);
    }
    await sleep(o.killEvery * 1000);
    if (!faultsOn) break;
    const slot = workerSlots(daemon).find((w) => w.worker === KILL_SLOT);
    if (!slot) continue;
    const victims = clients.filter((c) => c.connected && c.worker === KILL_SLOT).length;
    try {
      process.kill(slot.pid, "SIGKILL");
      faults.kills.push({ t: now(), pid: slot.pid, victims });
      log(`kill -9 worker ${KILL_SLOT} (pid ${slot.pid}) with ${victims} clients`);
    } catch {
      // Gone in between.
    }
  }
}

async function hupLoop(daemon) {
  while (faultsOn) {
    await sleep(o.hupEvery * 1000);
    if (!faultsOn) break;
    for (let i = 0; i < o.hupBurst; i++) {
      daemon.signal("SIGHUP");
      faults.hups++;
    }
  }
}

async function floodLoop(daemon) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: o.flood });
  const url = `${daemon.url}/socket.io/?EIO=4&transport=polling`;
  const one = () =>
    new Promise((resolve) => {
      const req = http.get(url, { agent, headers: { "x-forwarded-for": FLOOD_IP }, timeout: 2000 }, (res) => {
        faults.flood.status[res.statusCode] = (faults.flood.status[res.statusCode] ?? 0) + 1;
        res.resume();
        res.on("end", resolve);
        res.on("error", resolve);
      });
      req.on("timeout", () => req.destroy(new Error("timeout")));
      req.on("error", () => {
        faults.flood.errors++;
        resolve();
      });
    });
  const lane = async () => {
    while (faultsOn) {
      faults.flood.sent++;
      await one();
    }
  };
  await Promise.all(Array.from({ length: o.flood }, lane));
  agent.destroy();
}

// ---------------------------------------------------------------- load
/** Emit `rate` messages per second from random joined clients, until `stop()`. */
async function sendLoop(stop) {
  const tick = 50;
  const perTick = (o.rate * tick) / 1000;
  let owed = 0;
  let next = now();
  while (!stop()) {
    owed += perTick;
    let tries = 0;
    while (owed >= 1 && tries < 10 * perTick + 10) {
      tries++;
      const c = clients[Math.floor(Math.random() * clients.length)];
      if (c.send()) owed--;
    }
    owed = Math.min(owed, perTick); // no catch-up burst after a stall
    next += tick;
    await sleep(Math.max(0, next - now()));
  }
}

function startClients(url, count, transportsOf) {
  for (let i = 0; i < count; i++) {
    clients.push(new Client(i, url, `room-${i % rooms}`, transportsOf(i)));
  }
}

// ---------------------------------------------------------------- checks
function table(rows) {
  const w = Math.max(...rows.map(([k]) => k.length));
  for (const [k, v] of rows) console.log(`  ${k.padEnd(w)}  ${v}`);
}

async function roomMembers(daemon, room) {
  const res = await get(`${daemon.adminUrl}/api/v1/rooms/${encodeURIComponent(room)}/members`);
  if (res.status === 404) return [];
  if (res.status !== 200) throw new Error(`members of ${room}: ${res.status} ${res.text}`);
  return JSON.parse(res.text).members.map((m) => m.id);
}

/** Rooms whose member list (API, or $members through a member) differs from the clients. */
async function ghostCheck(daemon) {
  const want = new Map();
  for (let r = 0; r < rooms; r++) want.set(`room-${r}`, new Set());
  for (const c of clients) if (c.connected && c.joined) want.get(c.room).add(c.sid);
  const bad = [];
  for (const [room, ids] of want) {
    const api = await roomMembers(daemon, room);
    const asker = clients.find((c) => c.room === room && c.joined);
    let viaClient = null;
    if (asker) {
      try {
        const ack = await asker.socket.timeout(5000).emitWithAck("$members", room);
        viaClient = ack?.ok ? ack.members.map((m) => m.id) : null;
      } catch {
        viaClient = null;
      }
    }
    for (const [what, got] of [["api", api], ["$members", viaClient]]) {
      if (got === null) {
        if (what === "$members" && asker) bad.push({ room, what, error: "no answer" });
        continue;
      }
      const g = new Set(got);
      const ghosts = [...g].filter((id) => !ids.has(id));
      const missing = [...ids].filter((id) => !g.has(id));
      if (ghosts.length || missing.length || got.length !== g.size) bad.push({ room, what, ghosts, missing });
    }
  }
  return bad;
}

// ---------------------------------------------------------------- main
let daemon;
let stopping = false;
async function shutdown(code) {
  if (stopping) return;
  stopping = true;
  faultsOn = false;
  for (const c of clients) c.close();
  await stopDaemon(daemon).catch(() => {});
  process.exit(code);
}
process.on("SIGINT", () => shutdown(130));
process.on("SIGTERM", () => shutdown(143));

async function main() {
  daemon = await startDaemon(config, { env: { IORELAY_LOG__LEVEL: "warn,iorelay=info" } });
  if (o.pidfile) writeFileSync(o.pidfile, `${daemon.pid}\n`);
  log(`iorelay pid ${daemon.pid}: public ${daemon.url} admin ${daemon.adminUrl}`);
  await waitForStatus(daemon, (s) => s.workers?.length === 2 && s.workers.every((w) => w.peers === 1), 20000, "both workers linked");
  const base = sampleProc(daemon);
  log(`baseline RSS ${base.rss} KiB (${base.workers} workers), fds ${base.fds}`);
  return soak ? runSoak(base) : runChaos(base);
}

async function runChaos(base) {
  const failures = [];
  // Most clients open a WebSocket directly; every 1/upgradeShare-th starts with polling
  // and upgrades (the client's default). An upgrade may land on the other worker, which
  // then splices it through to the owner (src/http/forward.rs): such a client's TCP
  // connection dies with the worker that splices it, though its session lives on.
  const every = o.upgradeShare > 0 ? Math.round(1 / o.upgradeShare) : 0;
  startClients(daemon.url, o.clients, (i) => (every && i % every === 0 ? ["polling", "websocket"] : ["websocket"]));
  const ready = await until(() => clients.every((c) => c.joined), 120000, 100);
  if (!ready) throw new Error(`only ${clients.filter((c) => c.joined).length}/${o.clients} clients connected and joined in 120 s`);
  const before = { w0: clients.filter((c) => c.worker === 0).length, w1: clients.filter((c) => c.worker === 1).length };
  log(`${o.clients} clients joined ${rooms} rooms (worker 0: ${before.w0}, worker 1: ${before.w1})`);

  let peak = sampleProc(daemon);
  const sampler = setInterval(() => {
    const s = sampleProc(daemon);
    if (s.rss > peak.rss) peak = s;
  }, 1000);

  windowOpen = true;
  const t0 = now();
  faultsOn = true;
  const faultRuns = [killLoop(daemon), hupLoop(daemon), floodLoop(daemon)];
  await sendLoop(() => now() - t0 >= o.duration * 1000);
  faultsOn = false;
  windowOpen = false;
  const t1 = now();
  await Promise.all(faultRuns);
  log(`window closed after ${((t1 - t0) / 1000).toFixed(1)} s; waiting for acks and deliveries`);
  await until(() => acks.pending === 0, 15000);

  // Who stayed connected through the window, and what each should have.
  const survivors = clients.filter((c) => c.disconnects.length === 0);
  const notKilled = (c) => c.disconnects.filter((d) => d.worker !== KILL_SLOT).map((d) => ({ c: c.i, ...d }));
  const unexpected = clients.filter((c) => !c.upgrades).flatMap(notKilled);
  const spliced = clients.filter((c) => c.upgrades).flatMap(notKilled);
  const okByRoom = new Map();
  for (const m of messages.values()) {
    if (m.status !== "ok" || !m.inWindow) continue;
    if (!okByRoom.has(m.room)) okByRoom.set(m.room, []);
    okByRoom.get(m.room).push(m);
  }
  const survivorIds = new Set(survivors.map((c) => c.i));
  const missingOf = (c) => (okByRoom.get(c.room) ?? []).filter((m) => m.from !== c.i && !c.got.has(key(m.from, m.seq)));
  await until(() => survivors.every((c) => missingOf(c).length === 0), 15000);
  let expected = 0;
  let got = 0;
  const losses = [];
  for (const c of survivors) {
    const want = (okByRoom.get(c.room) ?? []).filter((m) => m.from !== c.i);
    expected += want.length;
    const miss = missingOf(c);
    got += want.length - miss.length;
    for (const m of miss) losses.push({ to: c.i, toWorker: c.worker, from: m.from, seq: m.seq, fromSurvivor: survivorIds.has(m.from) });
  }
  const lossFromSurvivors = losses.filter((l) => l.fromSurvivor).length;
  const survivorDups = survivors.reduce((s, c) => s + (c.dups ?? 0), 0);

  // Every client back by itself.
  const back = await until(() => clients.every((c) => c.connected && c.joined), 60000);
  const reconnected = clients.filter((c) => c.disconnects.length > 0);

  // No ghosts, within the heartbeat deadline plus one ping interval and timeout.
  const ghostDeadline = (HEARTBEAT_DEADLINE_S + PING_INTERVAL_S + PING_TIMEOUT_S + 5) * 1000;
  const gStart = now();
  let ghosts = await ghostCheck(daemon);
  while (ghosts.length && now() - gStart < ghostDeadline) {
    await sleep(500);
    ghosts = await ghostCheck(daemon);
  }
  const ghostSecs = (now() - gStart) / 1000;

  // Memory once everybody is gone: sessions back to 0 (the flood's abandoned ones expire
  // after ping interval + timeout), then the RSS. The bound: baseline + 50% + 20 MB.
  // Worker 0 served every client and every session the flood opened, and glibc keeps
  // part of what it freed (src/daemon/memory.rs trims only after a drop of 1000
  // sessions); a leak of a few KiB per connection over the run's thousands of
  // connections and reconnections, or of the killed worker's state, would exceed it.
  clearInterval(sampler);
  closing = true;
  for (const c of clients) c.close();
  const drained = await until(async () => {
    const s = await scrape(daemon);
    return s.value("iorelay_engine_sessions") === 0;
  }, 30000, 250);
  const bound = Math.round(base.rss * 1.5 + 20 * 1024);
  let after = sampleProc(daemon);
  await until(() => {
    after = sampleProc(daemon);
    return after.rss <= bound;
  }, 10000, 250);
  const metrics = await scrape(daemon);
  const reloads = (daemon.logs().match(/configuration reloaded/g) ?? []).length;

  // ---- the summary
  console.log(`\nchaos: ${o.clients} clients, ${rooms} rooms, ${o.rate} msg/s for ${o.duration} s, 2 workers`);
  table([
    ["clients on worker 0 / 1 at the start", `${before.w0} / ${before.w1}`],
    ["worker 1 kill -9", `${faults.kills.length} (clients on it each time: ${faults.kills.map((k) => k.victims).join(", ") || "-"})`],
    ["SIGHUP sent / reloads logged", `${faults.hups} / ${reloads}`],
    ["flood handshakes (by status)", `${faults.flood.sent}: ${JSON.stringify(faults.flood.status)}, errors ${faults.flood.errors}`],
    ["handshakes refused (metric, by reason)", JSON.stringify(Object.fromEntries(metrics.samples.filter((s) => s.name === "iorelay_connections_refused_total").map((s) => [s.labels.reason, s.value])))],
    ["messages emitted in the window", `${[...messages.values()].filter((m) => m.inWindow).length} (acked ok ${acks.ok}, refused ${acks.refused} ${JSON.stringify(acks.refusedWhy)}, no ack ${acks.unknown})`],
    ["surviving clients (no disconnect)", `${survivors.length}`],
    ["  expected deliveries to them", `${expected}`],
    ["  received", `${got}`],
    ["  lost (from surviving senders)", `${losses.length} (${lossFromSurvivors})`],
    ["  duplicates", `${survivorDups}`],
    ["duplicates, all clients", `${dupTotal}`],
    ["deliveries, all clients", `${delivered} ($presence ${presenceEvents})`],
    ["clients that reconnected", `${reconnected.length} (disconnects ${reconnected.reduce((s, c) => s + c.disconnects.length, 0)})`],
    ["disconnects not on the killed slot", `${unexpected.length} WebSocket-only, ${spliced.length} upgraded (of ${clients.filter((c) => c.upgrades).length} upgrading clients)`],
    ["disconnect reasons", JSON.stringify(clients.flatMap((c) => c.disconnects).reduce((h, d) => ((h[`${d.reason} (worker ${d.worker})`] = (h[`${d.reason} (worker ${d.worker})`] ?? 0) + 1), h), {}))],
    ["all clients connected at the end", back ? "yes" : `no: ${clients.filter((c) => !(c.connected && c.joined)).length} not`],
    ["rooms with ghosts/missing members", `${ghosts.length} (checked for ${ghostSecs.toFixed(1)} s)`],
    ["sessions back to 0 after the clients left", drained ? "yes" : "no"],
    ["RSS KiB baseline / peak / after (bound)", `${base.rss} / ${peak.rss} / ${after.rss} (${bound})`],
    ["fds baseline / peak / after", `${base.fds} / ${peak.fds} / ${after.fds}`],
  ]);

  if (faults.kills.length === 0) failures.push("no worker was killed");
  if (losses.length) failures.push(`${losses.length} messages lost to surviving clients, e.g. ${JSON.stringify(losses.slice(0, 5))}`);
  if (survivorDups || dupTotal) failures.push(`duplicates: ${survivorDups} to survivors, ${dupTotal} in all`);
  if (survivors.length === 0) failures.push("no client survived the window: nothing was checked for loss");
  if (unexpected.length) failures.push(`${unexpected.length} disconnects of clients not on the killed slot, e.g. ${JSON.stringify(unexpected.slice(0, 5))}`);
  if (!back) failures.push("not every client reconnected");
  if (ghosts.length) failures.push(`member lists wrong after ${ghostSecs.toFixed(1)} s: ${JSON.stringify(ghosts.slice(0, 3))}`);
  if (!drained) failures.push("sessions did not return to 0");
  if (after.rss > bound) failures.push(`RSS after ${after.rss} KiB > bound ${bound} KiB`);
  if (failures.length) {
    console.log("\nchaos: FAILED");
    for (const f of failures) console.log(`  - ${f}`);
  } else console.log("\nchaos: passed");
  return failures.length ? 1 : 0;
}

async function runSoak(base) {
  // A third each: polling only, WebSocket only, polling upgraded to WebSocket.
  const kinds = [["polling"], ["websocket"], ["polling", "websocket"]];
  let nextId = 0;
  const make = () => {
    const i = nextId++;
    return new Client(i % 60000, daemon.url, `room-${Math.floor(Math.random() * rooms)}`, kinds[i % 3]);
  };
  for (let i = 0; i < o.clients; i++) clients.push(make());
  await until(() => clients.every((c) => c.joined), 120000);
  log(`soak: ${o.clients} clients in ${rooms} rooms, churn ${o.churn}/s, ${o.rate} msg/s, ${o.duration} s`);
  const csv = o.csv;
  writeFileSync(csv, "elapsed_s,master_rss_kib,workers_rss_kib,total_rss_kib,master_fds,workers_fds,total_fds,sessions,clients_connected,delivered\n");
  const t0 = now();
  let churned = 0;
  const row = async () => {
    const s = sampleProc(daemon);
    let sessions = "";
    try {
      sessions = (await scrape(daemon)).value("iorelay_engine_sessions");
    } catch {
      // A scrape that fails leaves the column empty.
    }
    const line = [Math.round((now() - t0) / 1000), s.mRss, s.wRss, s.rss, s.mFds, s.wFds, s.fds, sessions, clients.filter((c) => c.connected).length, delivered];
    appendFileSync(csv, `${line.join(",")}\n`);
    log(`soak sample: ${line.join(",")}`);
    return s;
  };
  const samples = [await row()];
  let stopped = false;
  const churn = (async () => {
    while (!stopped) {
      await sleep(1000);
      for (let k = 0; k < o.churn; k++) {
        const j = Math.floor(Math.random() * clients.length);
        clients[j].close();
        clients[j] = make();
        churned++;
      }
    }
  })();
  const sampling = (async () => {
    while (!stopped) {
      await sleep(o.sample * 1000);
      if (!stopped) samples.push(await row());
    }
  })();
  await sendLoop(() => now() - t0 >= o.duration * 1000);
  stopped = true;
  await Promise.all([churn, sampling]);
  await until(() => acks.pending === 0, 15000);
  samples.push(await row());
  const rss = samples.map((s) => s.rss);
  const fds = samples.map((s) => s.fds);
  console.log(`\nsoak: ${o.clients} clients (polling, websocket, upgrade), ${rooms} rooms, churn ${o.churn}/s, ${o.rate} msg/s, ${o.duration} s, 2 workers`);
  table([
    ["samples", `${samples.length} (every ${o.sample} s, ${csv})`],
    ["clients replaced", `${churned}`],
    ["messages acked ok / refused / no ack", `${acks.ok} / ${acks.refused} ${JSON.stringify(acks.refusedWhy)} / ${acks.unknown}`],
    ["deliveries", `${delivered}`],
    ["RSS KiB first / last / max", `${rss[0]} / ${rss.at(-1)} / ${Math.max(...rss)}`],
    ["fds first / last / max", `${fds[0]} / ${fds.at(-1)} / ${Math.max(...fds)}`],
  ]);
  // And once the clients are gone (one more CSV row), against the baseline before any.
  for (const c of clients) c.close();
  await until(async () => (await scrape(daemon)).value("iorelay_engine_sessions") === 0, 30000, 250);
  const gone = await row();
  table([["after the clients left: RSS / fds (baseline)", `${gone.rss} / ${gone.fds} (${base.rss} / ${base.fds})`]]);
  return 0;
}

main()
  .then((code) => shutdown(code))
  .catch((err) => {
    console.error(`chaos: ${err.stack || err}`);
    if (daemon) console.error(`iorelay log (last 4000 chars):\n${daemon.logs().slice(-4000)}`);
    shutdown(2);
  });

// Room webhooks (`[webhooks]`): the relay POSTs room.occupied / room.vacated /
// member.joined / member.left in signed JSON batches to a real HTTP receiver (node:http on
// 127.0.0.1:0) that verifies every signature with node:crypto, exactly as the README tells
// a receiver to.
//
// - one process: the four events with their fields, a join through the server API, the
//   signature and headers;
// - two workers: a join on each worker, events once per host (the master sends, not each
//   worker), counts host-wide, the master's webhook metrics in /metrics;
// - a worker killed: its members leave, reported once (by the lowest-numbered survivor);
// - a receiver that answers 500 then 200: retried and delivered;
// - a receiver that is down: dropped after the retries, a log line and a metric, the
//   clients unaffected;
// - a slow receiver: the request times out (log line, metric);
// - reload: a new url and secret take effect live;
// - check-config: an https:// URL and a missing secret are refused with the key, the
//   secret is redacted.
//
// Nothing sleeps: every wait is for a request, an ack, a log line or a metric, bounded.
// Every process started is killed by pid (stopDaemon), every receiver closed.
import { describe, it, afterEach } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { createHmac, timingSafeEqual } from "node:crypto";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startDaemon, stopDaemon, withLogs, waitForMetric, waitForStatus, scrape, workerSlots, runCli } from "../lib/admin.mjs";
import { TEST_TOKEN } from "../lib/spawn.mjs";
import { workerClient, within, ask } from "../lib/workers.mjs";

const WAIT_MS = 5000;
const PLACEMENT_TRIES = 60;
const SECRET = "hook-secret-0123456789";

/** Wait until each of the `n` workers hears from every sibling over the bus. */
function linked(d, n) {
  return waitForStatus(d, (s) => s.workers?.length === n && s.workers.every((w) => w.peers === n - 1), 10000, `${n} workers linked`);
}

let daemon;
const sockets = [];
const receivers = [];

afterEach(async () => {
  while (sockets.length) sockets.pop().disconnect();
  await stopDaemon(daemon);
  daemon = undefined;
  while (receivers.length) await receivers.pop().close();
});

const logs = (fn) => withLogs(() => daemon, fn);

/**
 * A webhook receiver. `answer(n)` decides the n-th request (0-based): a status code, or
 * "hang" to never answer. Every request is recorded as { status, headers, body, json,
 * verified } where `verified` says whether the signature matches `secret` over
 * "<timestamp>.<body>". `events` is every event of every answered-2xx request, in order;
 * `next(pred)` waits for a request satisfying pred (also one that came earlier).
 */
async function receiver({ answer = () => 200, secret = SECRET } = {}) {
  const requests = [];
  const events = [];
  const waiters = new Set();
  const hanging = new Set();
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      const ts = req.headers["x-iorelay-timestamp"] ?? "";
      const sig = req.headers["x-iorelay-signature"] ?? "";
      const want = `sha256=${createHmac("sha256", r.secret).update(`${ts}.${body}`).digest("hex")}`;
      const verified = sig.length === want.length && timingSafeEqual(Buffer.from(sig), Buffer.from(want));
      const decided = answer(requests.length);
      const entry = { method: req.method, url: req.url, headers: req.headers, body, json: JSON.parse(body), verified, status: decided };
      requests.push(entry);
      if (decided === "hang") {
        hanging.add(res);
      } else {
        if (decided >= 200 && decided < 300) events.push(...entry.json.events);
        res.writeHead(decided, { "content-type": "text/plain" });
        res.end("thanks");
      }
      for (const w of waiters) w();
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const r = {
    secret,
    requests,
    events,
    url: `http://127.0.0.1:${server.address().port}/hooks/in`,
    /** Wait until pred() holds, re-checked on every request. */
    until(pred, what = "webhook requests") {
      let look;
      return within(
        new Promise((resolve) => {
          look = () => {
            const got = pred();
            if (got) resolve(got);
          };
          waiters.add(look);
          look();
        }),
        WAIT_MS,
        what,
      )
        .catch((err) => {
          err.message += `; requests: ${JSON.stringify(requests.map((q) => [q.status, q.json]))}`;
          throw err;
        })
        .finally(() => waiters.delete(look));
    },
    /** Wait for a delivered event matching pred. */
    event(pred, what) {
      return r.until(() => events.find(pred), what);
    },
    async close() {
      for (const res of hanging) res.destroy();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
  receivers.push(r);
  return r;
}

/** A loopback URL where nothing listens (a port bound, then released). */
async function deadUrl() {
  const s = net.createServer();
  await new Promise((resolve) => s.listen(0, "127.0.0.1", resolve));
  const port = s.address().port;
  await new Promise((resolve) => s.close(resolve));
  return `http://127.0.0.1:${port}/down`;
}

function config({ url, workers = 1, extra = "", secret = SECRET }) {
  return `
[server]
workers = ${workers}
shutdown_timeout = "1s"

[namespaces."/"]
join = "any"
route = "rooms"
echo = false

[namespaces."/".limits]
events_per_second = 1000
burst = 1000

[webhooks]
url = "${url}"
secret = "${secret}"
linger = "20ms"
backoff = "20ms"
backoff_max = "100ms"
${extra}
`;
}

const client = (opts = {}) => workerClient(daemon.url, sockets, { transports: ["websocket"], ...opts });

/** A client served by `worker` (the others opened on the way are disconnected). */
async function clientOn(worker) {
  for (let i = 0; i < PLACEMENT_TRIES; i++) {
    const c = await client();
    if (c.worker === worker) return c;
    c.disconnect();
  }
  throw new Error(`no connection landed on worker ${worker}`);
}

async function joinRoom(socket, room) {
  const reply = await ask(socket, "$join", room);
  assert.equal(reply?.ok, true, JSON.stringify(reply));
  return reply;
}

const is = (event, room, socket) => (e) => e.event === event && e.room === room && (!socket || e.socket === socket);
const count = (r, event, room) => r.events.filter((e) => e.event === event && e.room === room).length;

describe("webhooks", () => {
  it(
    "one process: the four events, signed, with their fields, and a join through the server API",
    logs(async () => {
      const r = await receiver();
      daemon = await startDaemon(config({ url: r.url }));
      const [a, b] = [await client({ auth: { name: "ann" } }), await client()];
      const before = Date.now();
      await joinRoom(a, "lobby");
      const occupied = await r.event(is("room.occupied", "lobby"), "room.occupied");
      const joined = await r.event(is("member.joined", "lobby", a.sid), "member.joined of a");
      assert.deepEqual(
        { ...joined, time: 0 },
        { event: "member.joined", namespace: "/", room: "lobby", socket: a.sid, user: "ann", count: 1, time: 0 },
      );
      assert.equal(occupied.count, 1);
      assert.ok(joined.time >= before - 1000 && joined.time <= Date.now() + 1000, `time ${joined.time}`);
      // room.occupied comes first, in the same batch or an earlier one.
      assert.ok(r.events.indexOf(occupied) < r.events.indexOf(joined));

      // A join through the server API fires too.
      const res = await fetch(`${daemon.adminUrl}/api/v1/sockets/${b.sid}/join`, {
        method: "POST",
        headers: { authorization: `Bearer ${TEST_TOKEN}`, "content-type": "application/json" },
        body: JSON.stringify({ room: "lobby" }),
      });
      assert.equal(res.status, 200, await res.text());
      const second = await r.event(is("member.joined", "lobby", b.sid), "member.joined of b (API)");
      assert.equal(second.count, 2);
      assert.equal(second.user, null);

      await ask(a, "$leave", "lobby");
      const left = await r.event(is("member.left", "lobby", a.sid), "member.left of a");
      assert.equal(left.count, 1);
      b.disconnect();
      await r.event(is("room.vacated", "lobby"), "room.vacated");
      const lastLeft = await r.event(is("member.left", "lobby", b.sid), "member.left of b (disconnect)");
      assert.equal(lastLeft.count, 0);
      assert.equal(count(r, "room.occupied", "lobby"), 1);
      assert.equal(count(r, "room.vacated", "lobby"), 1);

      for (const q of r.requests) {
        assert.equal(q.method, "POST");
        assert.equal(q.url, "/hooks/in");
        assert.equal(q.headers["content-type"], "application/json");
        assert.match(q.headers["x-iorelay-timestamp"], /^\d+$/);
        assert.ok(Math.abs(Number(q.headers["x-iorelay-timestamp"]) - Date.now() / 1000) < 300);
        assert.ok(q.verified, `signature of ${q.body} does not verify`);
        assert.deepEqual(Object.keys(q.json), ["events"]);
      }
      const m = await scrape(daemon);
      assert.ok(m.value("iorelay_webhook_deliveries_total", { outcome: "ok" }) >= 1);
      assert.equal(m.value("iorelay_webhook_events_total", { event: "room.occupied" }), 1);
    }),
  );

  it(
    "two workers: a join on each, events once per host with host-wide counts, metrics from the master",
    logs(async () => {
      const r = await receiver();
      daemon = await startDaemon(config({ url: r.url, workers: 2 }));
      // Counts are host-wide once the workers' bus links are up (both directions).
      await linked(daemon, 2);
      const [a, b] = [await clientOn(0), await clientOn(1)];
      await joinRoom(a, "shared");
      await r.event(is("member.joined", "shared", a.sid));
      await joinRoom(b, "shared");
      const jb = await r.event(is("member.joined", "shared", b.sid));
      assert.equal(jb.count, 2, "the count is host-wide");
      await ask(a, "$leave", "shared");
      await r.event(is("member.left", "shared", a.sid));
      await ask(b, "$leave", "shared");
      const lb = await r.event(is("member.left", "shared", b.sid));
      assert.equal(lb.count, 0);
      await r.event(is("room.vacated", "shared"));
      // A barrier per worker: each worker's events reach the receiver in order, so once
      // both sentinels are in, anything either worker sent before them is in too.
      await joinRoom(a, "sentinel-a");
      await joinRoom(b, "sentinel-b");
      await r.event(is("member.joined", "sentinel-a", a.sid));
      await r.event(is("member.joined", "sentinel-b", b.sid));
      assert.equal(count(r, "room.occupied", "shared"), 1);
      assert.equal(count(r, "member.joined", "shared"), 2);
      assert.equal(count(r, "member.left", "shared"), 2);
      assert.equal(count(r, "room.vacated", "shared"), 1);
      assert.ok(r.requests.every((q) => q.verified));
      await waitForMetric(daemon, "iorelay_webhook_events_total", { event: "member.joined" }, (v) => v === 4);
      await waitForMetric(daemon, "iorelay_webhook_deliveries_total", { outcome: "ok" }, (v) => v >= 1);
    }),
  );

  it(
    "a dead worker's members leave: member.left and room.vacated once, not once per survivor",
    logs(async () => {
      const r = await receiver();
      daemon = await startDaemon(config({ url: r.url, workers: 3 }));
      await linked(daemon, 3);
      const [a, b, doomed] = [await clientOn(0), await clientOn(1), await clientOn(2)];
      await joinRoom(a, "kept");
      await joinRoom(doomed, "kept");
      await joinRoom(doomed, "alone");
      await r.event(is("member.joined", "alone", doomed.sid));
      await r.event(is("member.joined", "kept", doomed.sid));
      const mark = daemon.mark();
      const victim = workerSlots(daemon).find((s) => s.worker === 2);
      process.kill(victim.pid, "SIGKILL");
      const gone = await r.event(is("member.left", "kept", doomed.sid), "member.left of the dead worker's member");
      assert.equal(gone.count, 1);
      await r.event(is("room.vacated", "alone"), "room.vacated of its room");
      // Both survivors have dropped the dead worker's members (the hook runs right after
      // this line); then a barrier per survivor, as above.
      await daemon.waitForLog(/peer link down.*node=0.*peer=2|node=0.*peer=2.*peer link down/, { from: mark });
      await daemon.waitForLog(/peer link down.*node=1.*peer=2|node=1.*peer=2.*peer link down/, { from: mark });
      await joinRoom(a, "sentinel-0");
      await joinRoom(b, "sentinel-1");
      await r.event(is("member.joined", "sentinel-0", a.sid));
      await r.event(is("member.joined", "sentinel-1", b.sid));
      assert.equal(count(r, "member.left", "kept"), 1);
      assert.equal(count(r, "member.left", "alone"), 1);
      assert.equal(count(r, "room.vacated", "alone"), 1);
      assert.equal(count(r, "room.vacated", "kept"), 0);
    }),
  );

  it(
    "a receiver that answers 500 then 200: the batch is retried and delivered",
    logs(async () => {
      const r = await receiver({ answer: (n) => (n === 0 ? 500 : 200) });
      daemon = await startDaemon(config({ url: r.url }));
      const a = await client();
      await joinRoom(a, "retry");
      await r.event(is("member.joined", "retry", a.sid));
      assert.equal(r.requests[0].status, 500);
      assert.equal(r.requests[1].status, 200);
      assert.equal(r.requests[1].body, r.requests[0].body, "the same batch again");
      assert.ok(r.requests[1].verified);
      await daemon.waitForLog(/webhook delivery failed.*receiver answered 500/);
      const m = await waitForMetric(daemon, "iorelay_webhook_deliveries_total", { outcome: "ok" }, (v) => v === 1);
      assert.equal(m.value("iorelay_webhook_deliveries_total", { outcome: "status" }), 1);
      assert.equal(m.value("iorelay_webhook_dropped_total", {}), 0);
    }),
  );

  it(
    "a receiver that is down: dropped after the retries with a log line and a metric, clients unaffected",
    logs(async () => {
      daemon = await startDaemon(config({ url: await deadUrl(), extra: "retries = 2" }));
      const [a, b] = [await client(), await client()];
      await joinRoom(a, "down");
      await joinRoom(b, "down");
      await daemon.waitForLog(/webhook batch dropped.*attempts=3/);
      const m = await waitForMetric(daemon, "iorelay_webhook_dropped_total", { reason: "retries_exhausted" }, (v) => v >= 2);
      assert.ok(m.value("iorelay_webhook_deliveries_total", { outcome: "error" }) >= 3);
      assert.equal(m.value("iorelay_webhook_deliveries_total", { outcome: "ok" }), 0);
      // The relay carries on.
      const got = new Promise((resolve) => b.once("chat", resolve));
      assert.deepEqual(await ask(a, "chat", "still here"), { ok: true });
      assert.equal(await within(got, WAIT_MS, "chat at b"), "still here");
    }),
  );

  it(
    "a slow receiver: the request times out, is counted and logged",
    logs(async () => {
      const r = await receiver({ answer: () => "hang" });
      daemon = await startDaemon(config({ url: r.url, extra: `retries = 1\ntimeout = "300ms"` }));
      const a = await client();
      await joinRoom(a, "slow");
      await r.until(() => r.requests.length >= 2, "the retry");
      await daemon.waitForLog(/webhook delivery failed.*no answer within/);
      await daemon.waitForLog(/webhook batch dropped/);
      await waitForMetric(daemon, "iorelay_webhook_deliveries_total", { outcome: "timeout" }, (v) => v === 2);
      await waitForMetric(daemon, "iorelay_webhook_dropped_total", { reason: "retries_exhausted" }, (v) => v >= 1);
      assert.deepEqual(await ask(a, "$rooms"), { ok: true, rooms: [{ room: "slow", count: 1 }] });
    }),
  );

  it(
    "reload: a new url, secret and event list take effect live",
    logs(async () => {
      const first = await receiver();
      const second = await receiver({ secret: "another-secret-987654" });
      daemon = await startDaemon(config({ url: first.url }));
      const a = await client();
      await joinRoom(a, "before");
      await first.event(is("member.joined", "before", a.sid));
      const mark = daemon.mark();
      daemon.writeConfig(config({ url: second.url, secret: second.secret, extra: `events = ["member.left"]` }));
      daemon.signal("SIGHUP");
      await daemon.waitForLog(/configuration reloaded/, { from: mark });
      await joinRoom(a, "after");
      await ask(a, "$leave", "after");
      const left = await second.event(is("member.left", "after", a.sid));
      assert.equal(left.count, 0);
      assert.ok(second.requests.every((q) => q.verified), "signed with the new secret");
      assert.deepEqual(second.events.map((e) => e.event), ["member.left"], "only the configured event");
      assert.equal(first.events.filter((e) => e.room === "after").length, 0);
    }),
  );

  it("check-config: https:// and a missing secret are refused by key, the secret is redacted", async () => {
    const dir = mkdtempSync(join(tmpdir(), "iorelay-webhooks-check-"));
    try {
      const file = join(dir, "iorelay.toml");
      writeFileSync(file, `[webhooks]\nurl = "https://hooks.example/in"\n`);
      let run = await runCli(["check-config", "--config", file]);
      assert.equal(run.code, 78, run.stderr);
      assert.match(run.stderr, /webhooks\.url.*https:\/\/ is not supported/);
      assert.match(run.stderr, /webhooks\.secret.*required/);
      writeFileSync(file, `[webhooks]\nurl = "http://127.0.0.1:9/in"\nsecret = "${SECRET}"\n`);
      run = await runCli(["check-config", "--config", file]);
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stdout, /secret = "<redacted>"/);
      assert.ok(!run.stdout.includes(SECRET));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

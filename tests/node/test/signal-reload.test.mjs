// SIGHUP: the daemon re-reads its --config file. A valid config takes effect live (the
// connected clients see the new policy, the log names the changed keys and warns about
// those that need a restart, iorelay_config_reloads_total counts it); an invalid one
// (bad TOML, a value that fails validation) is refused with an ERROR naming the file,
// the old config stays in force and iorelay_config_reload_failures_total counts it.
// Throughout, the same clients stay connected: same socket ids, no disconnect.
//
// Real signals, so this file has its own daemon (STYLE: each real-signal test in its
// own file). The tests share it and run in order: each one starts from the config the
// previous one left in force. Nothing sleeps: every step waits for a log line, an ack,
// an event or a metric value. "Not delivered" is proved with a marker that comes back
// to the sender only, sent after the event under test (a sender's packets keep their
// order, so once the marker is back an echo would be too).
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { Manager } from "socket.io-client";
import { startDaemon, withLogs, waitForMetric, scrape, get } from "../lib/admin.mjs";

const WAIT_MS = 5000;

/** The config file: `echo` for "/", `join` for "/locked", `rate` for "/rate", and the rest as given. */
function config({ echo, join, workers = 1, pingInterval = "25s", rate = 1000, extra = "" }) {
  return `
[server]
workers = ${workers}

[engine]
ping_interval = "${pingInterval}"

[namespaces."/"]
join = "any"
route = "rooms"
echo = ${echo}
presence = false

# Back to the sender only, whatever "echo" says: the ordering barrier.
[namespaces."/".events.marker]
route = "sender"

[namespaces."/locked"]
join = "${join}"

# Rate limits (the known bugs at the end of this file).
[namespaces."/rate"]
route = "discard"
[namespaces."/rate".limits]
events_per_second = ${rate}
burst = ${rate}
${extra}`;
}

const BEFORE = config({ echo: false, join: "none" });
// Policies of two namespaces, an engine setting and a restart-only key change at once.
const AFTER = config({ echo: true, join: "any", workers: 2, pingInterval: "20s" });
// What a partial or wrong application of a rejected file would show: BEFORE's policies.
const BAD_TOML = `${config({ echo: false, join: "none" })}\n[namespaces."/broken"\nroute = \n`;
const BAD_VALUE = config({ echo: false, join: "none", pingInterval: "0s" });

let daemon;
const clients = [];

/** Record every event a socket receives, so a test can wait for one that came early. */
function inbox(socket) {
  const seen = [];
  const waiters = new Set();
  socket.onAny((event, ...args) => {
    seen.push({ event, args });
    for (const w of waiters) {
      if (w.event === event && w.pred(...args)) {
        waiters.delete(w);
        clearTimeout(w.timer);
        w.resolve(args);
      }
    }
  });
  return {
    all: (event) => seen.filter((e) => e.event === event).map((e) => e.args),
    next(event, pred = () => true) {
      const hit = seen.find((e) => e.event === event && pred(...e.args));
      if (hit) return Promise.resolve(hit.args);
      return new Promise((resolve, reject) => {
        const w = { event, pred, resolve };
        w.timer = setTimeout(() => {
          waiters.delete(w);
          reject(new Error(`socket ${socket.nsp} ${socket.id}: no "${event}" within ${WAIT_MS}ms; got ${JSON.stringify(seen)}`));
        }, WAIT_MS);
        waiters.add(w);
      });
    },
  };
}

/**
 * One connection (no reconnection: a drop must show) with a socket on "/" and one on
 * "/locked", and a record of every disconnect and close it sees.
 */
async function connectClient(name, transports) {
  const manager = new Manager(daemon.url, { transports, reconnection: false, timeout: WAIT_MS });
  const root = manager.socket("/");
  const locked = manager.socket("/locked");
  const c = { name, manager, root, locked, inbox: inbox(root), drops: [], probes: 0 };
  for (const s of [root, locked]) {
    s.on("disconnect", (reason) => c.drops.push(`${s.nsp} disconnect: ${reason}`));
  }
  manager.on("close", (reason) => c.drops.push(`manager close: ${reason}`));
  manager.on("error", (err) => c.drops.push(`manager error: ${err.message}`));
  await Promise.all(
    [root, locked].map(
      (s) =>
        new Promise((resolve, reject) => {
          s.once("connect", resolve);
          s.once("connect_error", (err) => reject(new Error(`${name} ${s.nsp}: connect_error ${err.message}`)));
        }),
    ),
  );
  c.room = `reload-${name}-${process.pid}`;
  assert.deepEqual(await ack(root, "$join", c.room), { ok: true, room: c.room, count: 1 });
  c.ids = { root: root.id, locked: locked.id, engine: manager.engine.id };
  clients.push(c);
  return c;
}

function ack(socket, event, ...args) {
  return socket.timeout(WAIT_MS).emitWithAck(event, ...args);
}

/** Whether the sender gets its own event back on "/" (echo), proved with the marker. */
async function echoes(c) {
  c.probes += 1;
  const token = `${c.name}-${c.probes}`;
  const marker = c.inbox.next("marker", (t) => t === token);
  assert.deepEqual(await ack(c.root, "say", token), { ok: true }, `${c.name}: "say" refused`);
  assert.deepEqual(await ack(c.root, "marker", token), { ok: true }, `${c.name}: marker refused`);
  await marker;
  return c.inbox.all("say").some(([t]) => t === token);
}

/** Whether a $join on "/locked" is admitted (it is left again when it was). */
async function mayJoinLocked(c) {
  c.probes += 1;
  const room = `locked-${c.name}-${c.probes}`;
  const reply = await ack(c.locked, "$join", room);
  if (reply.ok) {
    assert.deepEqual(reply, { ok: true, room, count: 1 });
    await ack(c.locked, "$leave", room);
    return true;
  }
  assert.equal(typeof reply.error, "string", JSON.stringify(reply));
  return false;
}

/** The ping interval a new Engine.IO session is told, in ms. */
async function handshakePingInterval() {
  const res = await get(`${daemon.url}/socket.io/?EIO=4&transport=polling`);
  assert.equal(res.status, 200, res.text);
  assert.ok(res.text.startsWith("0{"), `not an OPEN packet: ${res.text}`);
  return JSON.parse(res.text.slice(1)).pingInterval;
}

/** Every client is still on its first connection, with the same ids, and answers. */
async function assertStillConnected() {
  for (const c of clients) {
    assert.deepEqual(c.drops, [], `${c.name}: the connection dropped`);
    assert.equal(c.root.connected && c.locked.connected, true, `${c.name}: not connected`);
    assert.deepEqual(
      { root: c.root.id, locked: c.locked.id, engine: c.manager.engine.id },
      c.ids,
      `${c.name}: reconnected (ids changed)`,
    );
    // Its room membership survived too.
    const reply = await ack(c.root, "$rooms");
    assert.equal(reply.ok, true, JSON.stringify(reply));
    assert.deepEqual(reply.rooms.find((r) => r.room === c.room), { room: c.room, count: 1 }, `${c.name}: lost its room`);
  }
}

/** Send SIGHUP and wait for the daemon's verdict; returns the log since the signal. */
async function reload(text, verdict) {
  const from = daemon.mark();
  daemon.writeConfig(text);
  daemon.signal("SIGHUP");
  await daemon.waitForLog(verdict, { from });
  return { from, log: () => daemon.logs().slice(from) };
}

const logs = (fn) => withLogs(() => daemon, fn);

describe("SIGHUP reload", () => {
  before(async () => {
    daemon = await startDaemon(BEFORE);
    await connectClient("ws", ["websocket"]);
    await connectClient("polling", ["polling"]);
  });

  after(async () => {
    for (const c of clients) c.manager.engine?.close();
    await daemon?.stop();
  });

  it("starts with the first config: no echo, $join refused on /locked, no reloads counted", logs(async () => {
    for (const c of clients) {
      assert.equal(await echoes(c), false, `${c.name}: echo before any reload`);
      assert.equal(await mayJoinLocked(c), false, `${c.name}: $join admitted under join = "none"`);
    }
    assert.equal(await handshakePingInterval(), 25000);
    const m = await scrape(daemon);
    assert.equal(m.value("iorelay_config_reloads_total"), 0);
    assert.equal(m.value("iorelay_config_reload_failures_total"), 0);
  }));

  it("a valid config takes effect live for connected clients; the log names the changed keys", logs(async () => {
    const r = await reload(AFTER, /INFO.*configuration reloaded.*/);
    const line = r.log().match(/INFO.*configuration reloaded.*/)[0];
    const changed = line.match(/changed=\[(.*?)\]/);
    assert.ok(changed, `no changed=[…] in ${line}`);
    const keys = changed[1].split(",").map((k) => k.trim().replace(/^"|"$/g, ""));
    assert.deepEqual(
      keys.sort(),
      ["engine.ping_interval", "namespaces./.echo", "namespaces./locked.join"],
      `changed keys in: ${line}`,
    );

    // The restart-only key is said to need a restart, at WARN, and is not listed as applied.
    await daemon.waitForLog(/WARN.*only after a restart.*key=server\.workers/, { from: r.from });
    assert.doesNotMatch(r.log(), /ERROR/);

    // The same connections see the new policies.
    for (const c of clients) {
      assert.equal(await echoes(c), true, `${c.name}: no echo after reloading echo = true`);
      assert.equal(await mayJoinLocked(c), true, `${c.name}: $join refused after reloading join = "any"`);
    }
    assert.equal(await handshakePingInterval(), 20000, "a new session is not told the reloaded ping_interval");

    const m = await waitForMetric(daemon, "iorelay_config_reloads_total", {}, (v) => v === 1);
    assert.equal(m.value("iorelay_config_reload_failures_total"), 0);
    await assertStillConnected();
  }));

  it("invalid TOML is refused: ERROR naming the file, the previous config stays", logs(async () => {
    const r = await reload(BAD_TOML, /ERROR.*reload rejected.*/);
    const line = r.log().match(/ERROR.*reload rejected.*/)[0];
    assert.ok(line.includes(daemon.configFile), `the ERROR line does not name ${daemon.configFile}: ${line}`);
    assert.match(line, /TOML|parse/i, `the ERROR line does not say what is wrong: ${line}`);
    assert.doesNotMatch(r.log(), /configuration reloaded/);

    // Still AFTER's policies, not the rejected file's.
    for (const c of clients) {
      assert.equal(await echoes(c), true, `${c.name}: echo stopped after a rejected reload`);
      assert.equal(await mayJoinLocked(c), true, `${c.name}: $join refused after a rejected reload`);
    }
    assert.equal(await handshakePingInterval(), 20000);

    const m = await waitForMetric(daemon, "iorelay_config_reload_failures_total", {}, (v) => v === 1);
    assert.equal(m.value("iorelay_config_reloads_total"), 1, "a rejected reload was counted as applied");
    await assertStillConnected();
  }));

  it("a value that fails validation is refused the same way, naming the key", logs(async () => {
    const r = await reload(BAD_VALUE, /ERROR.*reload rejected.*/);
    const line = r.log().match(/ERROR.*reload rejected.*/)[0];
    assert.ok(line.includes(daemon.configFile), `the ERROR line does not name ${daemon.configFile}: ${line}`);
    assert.match(line, /engine\.ping_interval/, `the ERROR line does not name the key: ${line}`);
    assert.doesNotMatch(r.log(), /configuration reloaded/);

    for (const c of clients) {
      assert.equal(await echoes(c), true, `${c.name}: echo stopped after a rejected reload`);
      assert.equal(await mayJoinLocked(c), true, `${c.name}: $join refused after a rejected reload`);
    }
    assert.equal(await handshakePingInterval(), 20000, "part of a rejected config was applied");

    const m = await waitForMetric(daemon, "iorelay_config_reload_failures_total", {}, (v) => v === 2);
    assert.equal(m.value("iorelay_config_reloads_total"), 1, "a rejected reload was counted as applied");
    await assertStillConnected();
  }));

  it("after the rejections a valid file is applied again", logs(async () => {
    await reload(BEFORE, /INFO.*configuration reloaded.*/);
    for (const c of clients) {
      assert.equal(await echoes(c), false, `${c.name}: still echoing after reloading echo = false`);
      assert.equal(await mayJoinLocked(c), false, `${c.name}: $join admitted after reloading join = "none"`);
    }
    assert.equal(await handshakePingInterval(), 25000);
    const m = await waitForMetric(daemon, "iorelay_config_reloads_total", {}, (v) => v === 2);
    assert.equal(m.value("iorelay_config_reload_failures_total"), 2);
    await assertStillConnected();
  }));

  it("a tightened rate limit applies to sockets already connected", logs(async () => {
    const socket = clients[0].manager.socket("/rate");
    await new Promise((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("connect_error", reject);
    });
    await reload(config({ echo: false, join: "none", rate: 1 }), /INFO.*configuration reloaded.*namespaces\.\/rate\.limits/);
    // events_per_second = 1, burst = 1 now: of five back-to-back events most are refused.
    const replies = await Promise.all([1, 2, 3, 4, 5].map((n) => ack(socket, "tick", n)));
    const refused = replies.filter((r) => r.ok === false).length;
    assert.ok(refused >= 3, `after tightening to 1/s, burst 1: ${JSON.stringify(replies)}`);
  }));

  it("removing a namespace does not leave its connected sockets unanswered", logs(async () => {
    const extra = '[namespaces."/gone"]\n';
    await reload(config({ echo: false, join: "none", extra }), /INFO.*configuration reloaded.*namespaces\.\/gone/);
    const socket = clients[0].manager.socket("/gone");
    await new Promise((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("connect_error", reject);
    });
    const dropped = new Promise((resolve) => socket.once("disconnect", (reason) => resolve({ disconnect: reason })));
    await reload(config({ echo: false, join: "none" }), /INFO.*configuration reloaded.*namespaces\.\/gone/);
    // Either told it is gone (a server DISCONNECT), or its events still get an answer.
    const answer = await Promise.race([
      dropped,
      socket.timeout(WAIT_MS).emitWithAck("$rooms").then((reply) => ({ reply }), (err) => ({ error: err.message })),
    ]);
    assert.equal(answer.error, undefined, `a socket of the removed namespace got no answer: ${JSON.stringify(answer)}`);
    if (answer.disconnect) {
      await waitForMetric(daemon, "iorelay_connections", { namespace: "/gone" }, (v) => v === 0, WAIT_MS, "sockets counted on the removed namespace");
    }
  }));
});

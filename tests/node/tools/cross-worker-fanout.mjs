// Rough measurement for the daemon issue: deliveries per second to one room whose
// members all sit on one worker, against the same room spread over two workers.
// Not a test and not the load generator (benches/ will have that): socket.io-client in
// one Node process is likely the bottleneck, so compare the two figures, not absolutes.
//
// Usage: node tools/cross-worker-fanout.mjs http://127.0.0.1:PORT [subscribers] [messages]
// against a daemon running with server.workers = 2.
import { io } from "socket.io-client";

const [url, subsArg, msgsArg] = process.argv.slice(2);
const SUBS = Number(subsArg || 50);
const MSGS = Number(msgsArg || 2000);
const workerOf = (s) => "ABCDEFGHIJKLMNOPQRSTUVWXYZ".indexOf(s.io.engine.id[0]);

async function connect() {
  const s = io(url, { transports: ["websocket"], forceNew: true, reconnection: false });
  await new Promise((r, j) => { s.once("connect", r); s.once("connect_error", j); });
  return s;
}

async function on(worker) {
  for (let i = 0; i < 100; i++) {
    const s = await connect();
    if (workerOf(s) === worker) return s;
    s.close();
  }
  throw new Error(`nothing landed on worker ${worker}`);
}

async function run(label, placement) {
  const room = `bench-${label}`;
  const pub = await on(0);
  const subs = [];
  for (let i = 0; i < SUBS; i++) subs.push(await on(placement(i)));
  for (const s of [pub, ...subs]) await s.emitWithAck("$join", room);
  let got = 0;
  const all = new Promise((resolve) => {
    for (const s of subs) s.on("tick", () => { if (++got === SUBS * MSGS) resolve(); });
  });
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < MSGS; i += 50) {
    const batch = [];
    for (let j = i; j < Math.min(i + 50, MSGS); j++) batch.push(pub.emitWithAck("tick", j));
    await Promise.all(batch);
  }
  await all;
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(JSON.stringify({ label, subscribers: SUBS, messages: MSGS, deliveries: got, seconds: +secs.toFixed(3), deliveries_per_s: Math.round(got / secs) }));
  for (const s of [pub, ...subs]) s.close();
}

await run("one-worker", () => 0);
await run("two-workers", (i) => i % 2);
process.exit(0);

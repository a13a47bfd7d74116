// The report of benches/jitter.mjs: per-server totals from the per-client counts, the
// table on stdout (a column per server) and the two CSV files (a row per server, and a
// row per client and server). What each figure means: benches/README.md, "Delivery
// under network cuts".
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";

export function summarize(r) {
  const cs = r.clients;
  const sum = (f) => cs.reduce((s, c) => s + f(c), 0);
  const expected = r.pub.acked * cs.length;
  const received = sum((c) => c.received);
  const pct = (c) => (r.pub.acked ? (100 * c.received) / r.pub.acked : 100);
  const reasons = {};
  for (const c of cs) for (const [k, v] of Object.entries(c.reasons)) reasons[k] = (reasons[k] ?? 0) + v;
  return {
    server: r.name,
    clients: cs.length,
    sent: r.pub.sent,
    acked: r.pub.acked,
    expected,
    received,
    deliveredPct: expected ? (100 * received) / expected : 100,
    clientsFull: cs.filter((c) => c.missing === 0).length,
    minClientPct: Math.min(...cs.map(pct)),
    missing: sum((c) => c.missing),
    duplicates: sum((c) => c.duplicates),
    outOfOrder: sum((c) => c.outOfOrder),
    malformed: sum((c) => c.malformed),
    unconfirmed: sum((c) => c.unconfirmed),
    cuts: sum((c) => c.cuts),
    refused: sum((c) => c.refused),
    reconnects: sum((c) => c.reconnects),
    recovered: sum((c) => c.recovered),
    notRecovered: sum((c) => c.notRecovered),
    offlineMeanS: sum((c) => c.offlineS) / cs.length,
    connectedAtEnd: cs.filter((c) => c.connected).length,
    reasons,
    kill: r.kill,
    killedMissing: r.kill ? cs.filter((c) => c.killed).reduce((s, c) => s + c.missing, 0) : 0,
    pub: r.pub,
    drained: r.drained,
    lagMaxMs: r.lagMaxMs,
    lagP99Ms: r.lagP99Ms,
    load: r.load,
    serverCpuPct: r.serverCpuPct,
  };
}

export const fmt = (x, d = 0) => (x === undefined || x === null ? "-" : typeof x === "number" ? x.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d }) : String(x));

export function printTable(o, sums, skipped, versions) {
  const rows = [
    ["messages sent / acked", (s) => `${fmt(s.sent)} / ${fmt(s.acked)}`],
    ["expected deliveries", (s) => fmt(s.expected)],
    ["delivered %", (s) => `${fmt(s.deliveredPct, 2)}%`],
    ["clients with 100%", (s) => `${s.clientsFull} / ${s.clients}`],
    ["worst client", (s) => `${fmt(s.minClientPct, 1)}%`],
    ["missing", (s) => fmt(s.missing)],
    ["duplicates", (s) => fmt(s.duplicates)],
    ["out of order", (s) => fmt(s.outOfOrder)],
    ["cuts (reconnects refused)", (s) => `${fmt(s.cuts)} (${fmt(s.refused)})`],
    ["reconnects", (s) => fmt(s.reconnects)],
    ["  recovered / not", (s) => `${fmt(s.recovered)} / ${fmt(s.notRecovered)}`],
    ["offline per client, mean", (s) => `${fmt(s.offlineMeanS, 1)} s`],
    ["worker kill -9 (its clients)", (s) => (s.kill ? `slot ${s.kill.slot} at ${fmt(s.kill.at)} s (${s.kill.victims.size}), back in ${fmt(s.kill.backS, 1)} s` : "-")],
    ["  missing on its clients", (s) => (s.kill ? fmt(s.killedMissing) : "-")],
    ["connected at the end", (s) => `${s.connectedAtEnd} / ${s.clients}${s.drained ? "" : " (drain timed out)"}`],
    ["publisher: no ack / refused / disconnects", (s) => `${s.pub.noAck} / ${s.pub.refused} / ${s.pub.disconnects}`],
    ["publish ack ms p50 / p99 / max", (s) => `${fmt(s.pub.ackP50, 1)} / ${fmt(s.pub.ackP99, 0)} / ${fmt(s.pub.ackMax, 0)}`],
    ["delivered but not acked; malformed", (s) => `${fmt(s.unconfirmed)}; ${fmt(s.malformed)}`],
    ["server CPU % in the window", (s) => fmt(s.serverCpuPct, 0)],
    ["harness event-loop delay p99 / max", (s) => `${fmt(s.lagP99Ms, 0)} / ${fmt(s.lagMaxMs, 0)} ms`],
    ["load average, start / end", (s) => `${fmt(s.load[0], 1)} / ${fmt(s.load[1], 1)}`],
  ];
  const cols = [["", ...rows.map(([k]) => k)], ...sums.map((s) => [label(o, s.server), ...rows.map(([, f]) => f(s))])];
  const widths = cols.map((col) => Math.max(...col.map((x) => x.length)));
  console.log(
    `\njitter: ${o.clients} clients (${o.transport}, route ${o.route}), ${o.rate} msg/s for ${o.duration} s, ` +
      `about ${o.cuts} cuts per client of ${o.outageMin}–${o.outageMax} s, seed ${o.seed}; socket.io-client ${versions.client}, ` +
      `node ${process.version} with socket.io ${versions.server}`,
  );
  if (sums.length === 0) console.log("  (no server ran)");
  for (let row = 0; sums.length && row <= rows.length; row++) {
    console.log(`  ${cols.map((col, j) => (j === 0 ? col[row].padEnd(widths[j]) : col[row].padStart(widths[j]))).join("  ")}`);
  }
  for (const [name, why] of skipped) console.log(`\n${label(o, name)}: skipped: ${why}`);
  for (const s of sums) console.log(`${label(o, s.server)} disconnect reasons: ${JSON.stringify(s.reasons)}`);
}

export function label(o, name) {
  if (name === "iorelay") return o.iorelayRecovery ? "iorelay" : "iorelay (no recovery)";
  return name === "node" ? "node" : "node + recovery";
}

export function writeCsv(o, sums, results, skipped, stamp) {
  mkdirSync(dirname(o.csv), { recursive: true });
  const head = "time,server,transport,route,clients,duration_s,rate,cuts_per_client,seed,sent,acked,expected,received,delivered_pct,clients_100pct,worst_client_pct,missing,duplicates,out_of_order,cuts,refused_connects,reconnects,recovered,not_recovered,offline_mean_s,killed_worker_clients,killed_worker_missing,ack_p50_ms,ack_p99_ms,ack_max_ms,server_cpu_pct,loadavg_start,loadavg_end,status";
  const lines = [head];
  const common = (server) => [stamp, label(o, server), o.transport, o.route, o.clients, o.duration, o.rate, o.cuts, o.seed];
  for (const s of sums) {
    lines.push([...common(s.server), s.sent, s.acked, s.expected, s.received, s.deliveredPct.toFixed(3), s.clientsFull, s.minClientPct.toFixed(2), s.missing, s.duplicates, s.outOfOrder, s.cuts, s.refused, s.reconnects, s.recovered, s.notRecovered, s.offlineMeanS.toFixed(2), s.kill ? s.kill.victims.size : "", s.kill ? s.killedMissing : "", ...[s.pub.ackP50, s.pub.ackP99, s.pub.ackMax, s.serverCpuPct].map((x) => x?.toFixed(1) ?? ""), ...s.load.map((x) => x.toFixed(2)), "ran"].join(","));
  }
  for (const [name, why] of skipped) lines.push([...common(name), ...Array(24).fill(""), `"skipped: ${why.replaceAll('"', "'")}"`].join(","));
  writeFileSync(o.csv, `${lines.join("\n")}\n`);
  const perClient = o.csv.replace(/\.csv$/, "") + "-clients.csv";
  const cl = ["server,client,received,missing,duplicates,out_of_order,cuts,refused_connects,reconnects,recovered,not_recovered,offline_s,on_killed_worker"];
  for (const r of results) {
    for (const c of r.clients) {
      cl.push([label(o, r.name), c.client, c.received, c.missing, c.duplicates, c.outOfOrder, c.cuts, c.refused, c.reconnects, c.recovered, c.notRecovered, c.offlineS.toFixed(2), c.killed ? 1 : 0].join(","));
    }
  }
  writeFileSync(perClient, `${cl.join("\n")}\n`);
  console.log(`\nCSV: ${o.csv} (per client: ${perClient})`);
}

// Memory after a connection peak: once the clients of a peak have gone, the daemon gives
// the memory they used back to the kernel (glibc keeps freed pages otherwise, and the
// RSS stays at the peak forever). The trimmer acts once the live sessions have fallen by
// 1000 below their peak and stopped falling (src/daemon/memory.rs), so this test holds
// 1100 WebSocket clients, reads the daemon's RSS, disconnects them all, and waits
// (bounded, by polling /proc) for the RSS to come back below half-way between the
// baseline and the peak.
//
// 1100 clients need 1100 descriptors in this process besides the daemon's; the test
// fails with a clear message when the limit is lower.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { io } from "socket.io-client";
import { startDaemon, stopDaemon, withLogs } from "../lib/admin.mjs";

const CLIENTS = 1100;
const WAIT_MS = 20000;

let daemon;

before(async () => {
  // Every client connects from 127.0.0.1: the per-address limits are lifted.
  daemon = await startDaemon(`
[server]
max_connections_per_ip = 100000
handshakes_per_ip_per_second = 100000
handshake_burst_per_ip = 100000
[namespaces."/"]
`);
});

after(async () => {
  await stopDaemon(daemon);
});

/** The resident set of `pid`, in KiB. */
function rssKib(pid) {
  const line = readFileSync(`/proc/${pid}/status`, "utf8").match(/^VmRSS:\s+(\d+) kB/m);
  assert.ok(line, `no VmRSS for pid ${pid}`);
  return Number(line[1]);
}

/** Poll until `pred()` holds or `ms` pass; the last value either way. */
async function pollUntil(read, pred, ms) {
  const until = Date.now() + ms;
  let value = read();
  while (!pred(value) && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 100));
    value = read();
  }
  return value;
}

describe("memory after a connection peak", () => {
  it(
    "goes back to the kernel once the clients have gone",
    withLogs(
      () => daemon,
      async () => {
        const limit = Number(execFileSync("sh", ["-c", "ulimit -n"], { encoding: "utf8" }).trim());
        assert.ok(
          !(limit < CLIENTS + 200),
          `this test opens ${CLIENTS} connections; the descriptor limit is ${limit} (raise it with ulimit -n)`,
        );
        // One process serves in the default config (server.workers = 1).
        const pid = daemon.pid;
        const baseline = rssKib(pid);
        const sockets = [];
        try {
          await Promise.all(
            Array.from({ length: CLIENTS }, () => {
              const socket = io(daemon.url, { forceNew: true, reconnection: false, transports: ["websocket"] });
              sockets.push(socket);
              return new Promise((resolve, reject) => {
                socket.once("connect", resolve);
                socket.once("connect_error", reject);
              });
            }),
          );
          const peak = rssKib(pid);
          assert.ok(peak - baseline > 2048, `${CLIENTS} connections should take more than 2 MiB (RSS ${baseline} → ${peak} KiB)`);
          for (const s of sockets) s.disconnect();
          sockets.length = 0;
          const goal = baseline + (peak - baseline) / 2;
          const after = await pollUntil(() => rssKib(pid), (rss) => rss < goal, WAIT_MS);
          assert.ok(
            after < goal,
            `RSS ${after} KiB ${WAIT_MS / 1000} s after the clients left; baseline ${baseline}, peak ${peak}: the freed memory was not given back`,
          );
        } finally {
          for (const s of sockets) s.disconnect();
        }
      },
    ),
  );
});

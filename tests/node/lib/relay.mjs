// Starts the real iorelay binary for a test and stops it again.
//
// The binary, its temp config dir and its environment come from spawn.mjs (shared with
// admin.mjs): TEST_IORELAY_BIN (set by `cargo test`, see tests/node_clients.rs) or
// target/debug/iorelay. It binds 127.0.0.1:0; we learn the port from its "listening" log
// line instead of guessing a free one, so tests never race for ports.
import { spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { iorelayBin as bin, prepareConfig, relayEnv, repoRoot } from "./spawn.mjs";

export { repoRoot };

/**
 * Start iorelay with the given TOML config text (or a path via opts.configFile).
 * Resolves to { url, port, pid, stop(), logs() } once it listens.
 */
export async function startRelay(configToml = "", opts = {}) {
  const { dir, configFile, asRoot } = prepareConfig("iorelay-test-", configToml, opts.configFile);
  const env = relayEnv(asRoot, opts.env);
  const child = spawn(bin, ["--config", configFile, ...(opts.args || [])], {
    env,
    stdio: ["ignore", "ignore", "pipe"],
  });
  let output = "";
  const addr = await new Promise((resolveAddr, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`iorelay did not listen in time:\n${output}`));
    }, 20000);
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      output += chunk;
      const m = output.match(/listening.*public=([\d.]+:\d+)/);
      if (m) {
        clearTimeout(timer);
        resolveAddr(m[1]);
      }
    });
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`iorelay exited early (code ${code}, signal ${signal}):\n${output}`));
    });
  });
  const port = Number(addr.split(":")[1]);
  const exited = new Promise((r) => child.on("exit", r));
  return {
    url: `http://${addr}`,
    port,
    pid: child.pid,
    logs: () => output,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        process.kill(child.pid, "SIGKILL");
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Resolve when `emitter` emits `event` (first argument list), or reject after `ms`. */
export function once(emitter, event, ms = 5000) {
  return new Promise((resolveOnce, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${event}`)), ms);
    emitter.once(event, (...args) => {
      clearTimeout(timer);
      resolveOnce(args);
    });
  });
}

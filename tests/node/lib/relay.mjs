// Starts the real iorelay binary for a test and stops it again.
//
// The binary, its temp config dir and its environment come from spawn.mjs (shared with
// admin.mjs): TEST_IORELAY_BIN (set by `cargo test`, see tests/node_clients.rs) or
// target/debug/iorelay. It binds 127.0.0.1:0; we learn the port from its "listening" log
// line instead of guessing a free one, so tests never race for ports.
import { spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { join } from "node:path";
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
  return listening(child, "iorelay", () => rmSync(dir, { recursive: true, force: true }));
}

/**
 * The server the conformance suites talk to: iorelay with config/conformance.toml, or,
 * when TEST_REFERENCE_SERVER names a node_modules directory holding socket.io, the
 * official Node server configured the same way (tools/reference-server.cjs). That is how
 * the outcomes the suites pin were taken from the reference; see CONFORMANCE.md.
 *
 * iorelay logs its engine at debug level here, so that a test can wait for the line
 * "session closed sid=… reason=…" that both servers write.
 */
export async function startConformanceServer() {
  const reference = process.env.TEST_REFERENCE_SERVER;
  if (!reference) {
    return startRelay("", {
      configFile: join(repoRoot, "config", "conformance.toml"),
      env: { IORELAY_LOG__LEVEL: "info,iorelay::engine=debug" },
    });
  }
  const child = spawn(process.execPath, [join(repoRoot, "tests", "node", "tools", "reference-server.cjs")], {
    env: { ...process.env, NODE_PATH: reference },
    stdio: ["ignore", "ignore", "pipe"],
  });
  const server = await listening(child, "the reference server", () => {});
  return { ...server, reference: true };
}

/**
 * Resolves to { url, port, pid, stop(), logs(), logLine() } once `child` writes its
 * "listening public=ADDR" line on stderr; `cleanup` runs after it is stopped.
 * `logLine(pattern, ms)` resolves to the first log line (written so far or later)
 * matching `pattern`, or rejects with the log after `ms`.
 */
async function listening(child, what, cleanup) {
  let output = "";
  const addr = await new Promise((resolveAddr, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${what} did not listen in time:\n${output}`));
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
      reject(new Error(`${what} exited early (code ${code}, signal ${signal}):\n${output}`));
    });
  });
  const port = Number(addr.split(":")[1]);
  const exited = new Promise((r) => child.on("exit", r));
  const logLine = (pattern, ms = 5000) =>
    new Promise((resolveLine, reject) => {
      const find = () => output.split("\n").find((l) => pattern.test(l));
      const check = () => {
        const line = find();
        if (line === undefined) return;
        clearTimeout(timer);
        child.stderr.off("data", check);
        resolveLine(line);
      };
      const timer = setTimeout(() => {
        child.stderr.off("data", check);
        reject(new Error(`no log line matching ${pattern} within ${ms} ms; log:\n${output}`));
      }, ms);
      // Listeners run in order: the one above has appended the chunk by now.
      child.stderr.on("data", check);
      check();
    });
  return {
    url: `http://${addr}`,
    port,
    pid: child.pid,
    logs: () => output,
    logLine,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        process.kill(child.pid, "SIGKILL");
        await exited;
      }
      cleanup();
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

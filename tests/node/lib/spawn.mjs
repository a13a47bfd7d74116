// What relay.mjs and admin.mjs share to start the real iorelay binary: where the binary
// is, a temp dir holding the config file, and the environment it runs with.
//
// The binary comes from TEST_IORELAY_BIN (set by `cargo test`, see tests/node_clients.rs) or
// target/debug/iorelay. Both listeners bind 127.0.0.1:0; the callers learn the addresses
// from the "listening" log line instead of guessing free ports, so tests never race for
// ports.
import { writeFileSync, mkdtempSync, chmodSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = resolve(here, "..", "..", "..");
/** The server API token of the test profile (config/test.toml, api.tokens). */
export const TEST_TOKEN = "iorelay-test-token-0123456789";

/** The iorelay binary under test. */
export const iorelayBin = process.env.TEST_IORELAY_BIN || join(repoRoot, "target", "debug", "iorelay");

/**
 * A new temp dir (named `prefix…`) with `configToml` written to iorelay.toml in it, unless
 * `configFile` names an existing config to use instead. Resolves to { dir, configFile,
 * asRoot }.
 *
 * As root (CI) the relay refuses to run without server.user and drops to it after
 * binding; it must still be able to re-read its config on SIGHUP: the temp dir and the
 * file written here are made world-readable.
 */
export function prepareConfig(prefix, configToml, configFile) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const written = !configFile;
  if (written) {
    configFile = join(dir, "iorelay.toml");
    writeFileSync(configFile, configToml);
  }
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    chmodSync(dir, 0o755);
    if (written) chmodSync(configFile, 0o644);
  }
  return { dir, configFile, asRoot };
}

/**
 * The environment for the binary: the test profile, both listeners on 127.0.0.1:0, plain
 * text logs at info, the server API token TEST_TOKEN, `nobody` as server.user when
 * running as root, then `extra` on top.
 */
export function relayEnv(asRoot, extra = {}) {
  return {
    ...process.env,
    IORELAY_ENV: "test",
    IORELAY_SERVER__LISTEN: "127.0.0.1:0",
    IORELAY_SERVER__ADMIN_LISTEN: "127.0.0.1:0",
    IORELAY_LOG__FORMAT: "text",
    // The lines the tests wait for ("listening", "configuration reloaded", the drain) are
    // logged at info.
    IORELAY_LOG__LEVEL: "info",
    // The config files the tests write have no test profile beside them.
    IORELAY_API__TOKENS: JSON.stringify([TEST_TOKEN]),
    NO_COLOR: "1",
    ...(asRoot ? { IORELAY_SERVER__USER: "nobody" } : {}),
    ...extra,
  };
}

/**
 * A loopback port that was free a moment ago, for what must be told a port rather than
 * bind port 0 itself (HAProxy refuses `bind ADDR:0`; systemd-socket-activate).
 */
export async function freePort() {
  const server = net.createServer();
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

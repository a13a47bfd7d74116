// The client bundle iorelay serves at /socket.io/socket.io.min.js (and socket.io.js) is the
// unmodified dist/socket.io.min.js of the socket.io-client version pinned in
// package-lock.json. Bumping the pinned version without running scripts/update-client-bundle
// fails here, and so does a stale node_modules (run `npm ci` in tests/node).
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { startRelay } from "../lib/relay.mjs";

const WAIT_MS = 5000;
const nodeDir = join(dirname(fileURLToPath(import.meta.url)), "..");
const readJson = (path) => JSON.parse(readFileSync(join(nodeDir, path), "utf8"));

const pinned = readJson("package-lock.json").packages["node_modules/socket.io-client"]?.version;
const installed = readJson("node_modules/socket.io-client/package.json").version;
const npmBundle = readFileSync(join(nodeDir, "node_modules/socket.io-client/dist/socket.io.min.js"));

const PATHS = ["/socket.io/socket.io.min.js", "/socket.io/socket.io.js"];

let relay;

before(async () => {
  relay = await startRelay("");
});

after(async () => {
  await relay?.stop();
});

/** GET `path`, bounded; resolves { status, headers, body } with the body as a Buffer. */
async function get(path, headers = {}) {
  const signal = AbortSignal.timeout(WAIT_MS);
  const res = await fetch(relay.url + path, { headers, signal });
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
}

/** The first line of the bundle's banner comment that names the version, for messages. */
const banner = (buf) => buf.subarray(0, 200).toString("utf8").match(/Socket\.IO v[\w.-]+/)?.[0] ?? "(no banner)";

describe("client bundle", () => {
  it("node_modules holds the socket.io-client version pinned in package-lock.json", () => {
    assert.equal(typeof pinned, "string", "package-lock.json pins no socket.io-client");
    assert.equal(installed, pinned, `node_modules has socket.io-client ${installed}, the lock pins ${pinned}: run \`npm ci\` in tests/node`);
    assert.equal(banner(npmBundle), `Socket.IO v${pinned}`);
  });

  it("/socket.io/socket.io.min.js is byte for byte the pinned package's dist/socket.io.min.js", async () => {
    const res = await get(PATHS[0]);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") || "", /^(application|text)\/javascript/);
    assert.ok(
      res.body.equals(npmBundle),
      `the served bundle (${res.body.length} bytes, ${banner(res.body)}) differs from socket.io-client ${pinned}'s ` +
        `dist/socket.io.min.js (${npmBundle.length} bytes, ${banner(npmBundle)}): run scripts/update-client-bundle`,
    );
    assert.equal(Number(res.headers.get("content-length")), npmBundle.length);
  });

  it("/socket.io/socket.io.js serves the same file", async () => {
    const [min, plain] = await Promise.all(PATHS.map((p) => get(p)));
    assert.equal(plain.status, 200);
    assert.match(plain.headers.get("content-type") || "", /^(application|text)\/javascript/);
    assert.ok(plain.body.equals(min.body), `socket.io.js (${plain.body.length} bytes) differs from socket.io.min.js (${min.body.length} bytes)`);
    assert.equal(plain.headers.get("etag"), min.headers.get("etag"));
  });

  for (const path of PATHS) {
    it(`${path}: If-None-Match with the returned ETag gets 304 and no body; another tag gets the file`, async () => {
      const first = await get(path);
      const etag = first.headers.get("etag");
      assert.ok(etag, "no ETag header");
      assert.match(etag, /^(W\/)?"[^"]*"$/, `malformed ETag ${etag}`);

      const again = await get(path, { "If-None-Match": etag });
      assert.equal(again.status, 304);
      assert.equal(again.body.length, 0, "a 304 has no body");
      assert.equal(again.headers.get("etag"), etag, "the 304 names the same ETag");

      const other = await get(path, { "If-None-Match": '"something-else"' });
      assert.equal(other.status, 200);
      assert.ok(other.body.equals(npmBundle));
    });
  }

  it("conditional GET follows RFC 9110: tag lists, weak comparison, and caching headers on the 304", async () => {
    const first = await get(PATHS[0]);
    const etag = first.headers.get("etag");
    for (const value of [`"other", ${etag}`, `W/${etag}`, "*"]) {
      const res = await get(PATHS[0], { "If-None-Match": value });
      assert.equal(res.status, 304, `If-None-Match: ${value}`);
    }
    const res = await get(PATHS[0], { "If-None-Match": etag });
    assert.equal(res.headers.get("cache-control"), first.headers.get("cache-control"), "Cache-Control on the 304");
  });
});

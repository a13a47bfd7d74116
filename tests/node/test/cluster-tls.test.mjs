// A cluster through a Redis that speaks TLS only (`rediss://`) and wants a password, as
// production Redis often does: a private redis-server on a free loopback TLS port
// (lib/redis.mjs) with certificates made now by openssl from a private CA
// (lib/certs.mjs). iorelay trusts that CA through `[cluster] ca_file` and reads the
// password from `password_file`; two nodes share a room, and @socket.io/redis-emitter
// (over TLS, with the password) reaches iorelay's clients. A wrong password and a CA that
// did not sign the server's certificate leave a node serving its own clients, degraded
// (/readyz, iorelay_cluster_up), with the reason in its log. With `tls-auth-clients yes`
// the node presents `client_cert_file`/`client_key_file`. Skipped, with the reason, where
// redis-server has no TLS or openssl does not run. Nothing sleeps: every wait is for a
// log line, an answer or a metric, bounded.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync, chmodSync, rmSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { createClient } from "redis";
import { Emitter } from "@socket.io/redis-emitter";
import { startDaemon, stopDaemon, withLogs, waitForMetric, runCli } from "../lib/admin.mjs";
import { startRedis, redisTlsMissing } from "../lib/redis.mjs";
import { makeCertificates, opensslMissing } from "../lib/certs.mjs";
import { openClient, connected, join as joinRoom, freshRoom } from "../lib/clients.mjs";
import { prepareConfig, relayEnv } from "../lib/spawn.mjs";

const WAIT_MS = 5000;
const skip = opensslMissing() ?? redisTlsMissing() ?? false;

let certs;
let redis;
const password = `tls-test-${randomBytes(8).toString("hex")}`;
let passwordFile;
let wrongPasswordFile;
let daemon;
const daemons = [];
const sockets = [];
const closers = [];

/** A file in the certificates' dir, readable by `nobody` (the daemon as root's tests). */
function secretFile(name, text) {
  const path = join(certs.dir, name);
  writeFileSync(path, text);
  chmodSync(path, 0o644);
  return path;
}

before(async () => {
  if (skip) return;
  certs = makeCertificates();
  passwordFile = secretFile("redis.password", `${password}\n`);
  wrongPasswordFile = secretFile("wrong.password", "not-the-password\n");
  redis = await startRedis({ tls: { cert: certs.server.cert, key: certs.server.key, ca: certs.ca }, password });
});

after(async () => {
  if (redis) await redis.stop();
  certs?.remove();
});

afterEach(async () => {
  for (const s of sockets.splice(0)) s.disconnect();
  for (const close of closers.splice(0).reverse()) await close();
  for (const d of daemons.splice(0)) await stopDaemon(d);
  daemon = undefined;
});

const logs = (fn) => withLogs(() => daemon, fn);

/** A node's config: `cluster` lines go under [cluster] after the adapter. */
function config({ workers = 1, url = redis.url, cluster = [] } = {}) {
  return `
[server]
workers = ${workers}
shutdown_timeout = "1s"

[cluster]
adapter = "redis"
url = "${url}"
${cluster.join("\n")}

[namespaces."/"]
join = "any"
presence = false
`;
}

/** The cluster lines of a node that trusts `ca` and gives the password of `file`. */
const trusting = (ca = certs.ca, file = passwordFile) => [`ca_file = "${ca}"`, `password_file = "${file}"`];

async function startNode(opts) {
  const d = await startDaemon(config(opts));
  daemons.push(d);
  daemon ??= d;
  return d;
}

function client(url) {
  return openClient(url, sockets, { transports: ["websocket"] });
}

/** The npm redis client over TLS with the password, verifying the server with the CA. */
async function redisClient(r = redis, tls = {}) {
  const c = createClient({ url: r.url, password, socket: { tls: true, ca: readFileSync(certs.ca), ...tls } });
  c.on("error", () => {});
  await c.connect();
  closers.push(() => c.quit().catch(() => {}));
  return c;
}

/** Two clients of `d` in one room talk: the node serves its own clients. */
async function servesLocally(d) {
  const room = freshRoom("local");
  const a = client(d.url);
  const b = client(d.url);
  await Promise.all([connected(a), connected(b)]);
  await joinRoom(a, room);
  await joinRoom(b, room);
  a.emit("local", "still served");
  assert.deepEqual(await b.inbox.next("local"), ["still served"]);
}

/** `d` is up but out of the cluster: /readyz says degraded, iorelay_cluster_up is 0. */
async function degraded(d) {
  await waitForMetric(d, "iorelay_cluster_up", {}, (v) => v === 0, WAIT_MS, "cluster down");
  const ready = await fetch(`${d.adminUrl}/readyz`, { signal: AbortSignal.timeout(WAIT_MS) });
  assert.equal(ready.status, 200);
  assert.match(await ready.text(), /cluster degraded/);
}

describe("cluster over TLS with a password", { skip }, () => {
  it("two nodes on rediss:// with ca_file and password_file share a room both ways; an emitter over TLS reaches them", logs(async () => {
    const first = await startNode({ workers: 2, cluster: trusting() });
    const second = await startNode({ workers: 1, cluster: trusting() });
    await first.waitForLog(/cluster: subscribed on Redis/);
    await second.waitForLog(/cluster: subscribed on Redis/);
    await waitForMetric(first, "iorelay_cluster_up", {}, (v) => v === 1, WAIT_MS, "first node up");
    const room = freshRoom("tls");
    const a = client(first.url);
    const b = client(second.url);
    await Promise.all([connected(a), connected(b)]);
    await joinRoom(a, room);
    await joinRoom(b, room);
    a.emit("hi", "from first", Buffer.from([7]));
    const [text, bin] = await b.inbox.next("hi");
    assert.equal(text, "from first");
    assert.deepEqual([...new Uint8Array(bin)], [7]);
    b.emit("hi", "from second");
    assert.deepEqual(await a.inbox.next("hi"), ["from second"]);

    const emitter = new Emitter(await redisClient());
    emitter.to(room).emit("pushed", { over: "tls" });
    assert.deepEqual(await a.inbox.next("pushed"), [{ over: "tls" }]);
    assert.deepEqual(await b.inbox.next("pushed"), [{ over: "tls" }]);
    // Nothing came twice: by the time a later event arrived, no copy had.
    emitter.to(room).emit("after", 1);
    await Promise.all([a.inbox.next("after"), b.inbox.next("after")]);
    assert.equal(a.inbox.all("pushed").length, 1);
    assert.equal(b.inbox.all("pushed").length, 1);
  }));

  it("a wrong password: the node serves its own clients, degraded, and logs that Redis refused it", logs(async () => {
    const d = await startNode({ workers: 2, cluster: trusting(certs.ca, wrongPasswordFile) });
    const line = await d.waitForLog(/cluster: cannot subscribe on Redis.*/);
    // The redis crate's words for Redis's WRONGPASS answer to AUTH.
    assert.match(line[0], /error=Password authentication failed - AuthenticationFailed/);
    await degraded(d);
    await servesLocally(d);
    assert.doesNotMatch(d.logs(), /not-the-password/, "the log never shows the password");
  }));

  it("a CA that did not sign the server's certificate: degraded, with the TLS error in the log", logs(async () => {
    const d = await startNode({ workers: 1, cluster: trusting(certs.otherCa) });
    const line = await d.waitForLog(/cluster: cannot subscribe on Redis.*/);
    // rustls's words: the chain does not lead to a CA of ca_file.
    assert.match(line[0], /error=invalid peer certificate: UnknownIssuer/);
    await degraded(d);
    await servesLocally(d);
  }));

  it("check-config names an unreadable or broken TLS file and exits 78; so does the daemon at start", async () => {
    const good = prepareConfig("iorelay-tls-check-", config({ cluster: [...trusting(), `client_cert_file = "${certs.client.cert}"`, `client_key_file = "${certs.client.key}"`] }));
    closers.push(() => rmSync(good.dir, { recursive: true, force: true }));
    const ok = await runCli(["check-config", "--config", good.configFile], WAIT_MS, { IORELAY_ENV: "test" });
    assert.equal(ok.code, 0, ok.stderr);
    assert.ok(ok.stdout.includes(`ca_file = "${certs.ca}"`), ok.stdout);
    const cases = [
      [[`ca_file = "${join(certs.dir, "missing.pem")}"`], /cluster\.ca_file: .*missing\.pem: No such file/],
      [[`ca_file = "${passwordFile}"`], /cluster\.ca_file: .*holds no certificate/],
      [[`ca_file = "${certs.ca}"`, `client_cert_file = "${certs.client.cert}"`, `client_key_file = "${certs.server.key}"`], /cluster\.client_key_file: .*unusable with cluster\.client_cert_file/],
    ];
    for (const [cluster, reason] of cases) {
      const { dir, configFile } = prepareConfig("iorelay-tls-check-", config({ cluster }));
      closers.push(() => rmSync(dir, { recursive: true, force: true }));
      const run = await runCli(["check-config", "--config", configFile], WAIT_MS, { IORELAY_ENV: "test" });
      assert.equal(run.code, 78, `${cluster}: ${run.stderr}`);
      assert.match(run.stderr, reason);
    }
    const { dir, configFile } = prepareConfig("iorelay-tls-check-", config({ url: "redis://127.0.0.1:6379", cluster: [`ca_file = "${certs.ca}"`] }));
    closers.push(() => rmSync(dir, { recursive: true, force: true }));
    const run = await runCli(["check-config", "--config", configFile], WAIT_MS, { IORELAY_ENV: "test" });
    assert.equal(run.code, 78, run.stderr);
    assert.match(run.stderr, /cluster\.ca_file: is for TLS: it needs a rediss:\/\/ cluster\.url/);

    // The daemon reads the files at start (as its user) and stops with the same reason,
    // as a configuration error (78: not restarted in a loop).
    const start = prepareConfig("iorelay-tls-start-", config({ cluster: [`ca_file = "${join(certs.dir, "missing.pem")}"`, `password_file = "${passwordFile}"`] }));
    closers.push(() => rmSync(start.dir, { recursive: true, force: true }));
    const started = await runCli(["--config", start.configFile], WAIT_MS, relayEnv(start.asRoot));
    assert.equal(started.code, 78, started.stderr);
    assert.match(started.stderr, /cannot start error=cluster\.ca_file .*missing\.pem: No such file/);
  });
});

describe("cluster over mutual TLS (tls-auth-clients yes)", { skip }, () => {
  let strict;
  before(async () => {
    if (skip) return;
    strict = await startRedis({
      tls: { cert: certs.server.cert, key: certs.server.key, ca: certs.ca, authClients: true, clientCert: certs.client.cert, clientKey: certs.client.key },
      password,
    });
  });
  after(async () => {
    if (strict) await strict.stop();
  });

  it("a node with client_cert_file and client_key_file joins and an emitter reaches its client; one without is refused, degraded", logs(async () => {
    const withCert = [...trusting(), `client_cert_file = "${certs.client.cert}"`, `client_key_file = "${certs.client.key}"`];
    const d = await startNode({ workers: 2, url: strict.url, cluster: withCert });
    await d.waitForLog(/cluster: subscribed on Redis/);
    const room = freshRoom("mtls");
    const a = client(d.url);
    await connected(a);
    await joinRoom(a, room);
    const emitter = new Emitter(await redisClient(strict, { cert: readFileSync(certs.client.cert), key: readFileSync(certs.client.key) }));
    emitter.to(room).emit("pushed", "mutual");
    assert.deepEqual(await a.inbox.next("pushed"), ["mutual"]);

    const without = await startNode({ workers: 1, url: strict.url, cluster: trusting() });
    const line = await without.waitForLog(/cluster: cannot subscribe on Redis.*/);
    // Redis's TLS alert, as rustls reports it.
    assert.match(line[0], /error=received fatal alert: CertificateRequired/);
    await degraded(without);
  }));
});

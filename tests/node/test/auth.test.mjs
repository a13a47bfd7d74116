// Who connects: `[namespaces."/x".auth]` against the official socket.io-client.
//
// Tokens are signed here with node:crypto (HS256 with createHmac; RS256, ES256 and EdDSA
// with crypto.sign) using the test-only keys of tests/fixtures/jwt, copied into the
// daemon's temp dir so that a daemon running as `nobody` (CI as root) can read them.
// Every refusal must reach the client as its `connect_error` with the relay's message,
// be logged with the reason and counted in iorelay_auth_refused_total; nothing else on
// the connection or in the namespace is affected. Nothing here sleeps.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { createHmac, createPrivateKey, sign } from "node:crypto";
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { io, Manager } from "socket.io-client";
import { startDaemon, stopDaemon, withLogs, scrape, waitForMetric } from "../lib/admin.mjs";
import { repoRoot } from "../lib/spawn.mjs";
import { WAIT_MS, attachInbox, connected, ack, freshRoom } from "../lib/clients.mjs";

const FIXTURES = join(repoRoot, "tests", "fixtures", "jwt");
const SECRET = "auth-suite-secret-of-at-least-32-bytes";
const ISSUER = "https://idp.test";
const AUDIENCE = "iorelay-tests";

let daemon;
let keyDir;
const sockets = [];
const managers = [];
const logs = (fn) => withLogs(() => daemon, fn);

function config(dir) {
  const key = (name) => JSON.stringify(join(dir, name));
  return `
[namespaces."/open"]
route = "namespace"
events.ping = { route = "discard" }

[namespaces."/hs"]
join = "claims"
[namespaces."/hs".auth]
required = true
[namespaces."/hs".auth.jwt]
secret = "${SECRET}"
issuer = "${ISSUER}"
audience = "${AUDIENCE}"
token_cookie = "io_token"
leeway = "5s"

[namespaces."/optional".auth.jwt]
secret = "${SECRET}"

[namespaces."/rs".auth.jwt]
algorithms = ["RS256"]
public_key_file = ${key("rsa-public.pem")}

[namespaces."/es".auth.jwt]
algorithms = ["ES256"]
public_key_file = ${key("ec-public.pem")}

[namespaces."/ed".auth.jwt]
algorithms = ["EdDSA"]
public_key_file = ${key("ed-public.pem")}

[namespaces."/jwks".auth.jwt]
algorithms = ["RS256", "ES256"]
jwks_file = ${key("jwks.json")}

[namespaces."/chat".auth]
required = true
user_from = { cookie = "nickname" }
`;
}

before(async () => {
  keyDir = mkdtempSync(join(tmpdir(), "iorelay-auth-keys-"));
  for (const name of ["rsa-public.pem", "ec-public.pem", "ed-public.pem", "jwks.json"]) {
    copyFileSync(join(FIXTURES, name), join(keyDir, name));
    chmodSync(join(keyDir, name), 0o644);
  }
  chmodSync(keyDir, 0o755);
  daemon = await startDaemon(config(keyDir));
});

afterEach(() => {
  while (sockets.length) sockets.pop().disconnect();
  while (managers.length) managers.pop().engine?.close();
});

after(async () => {
  while (sockets.length) sockets.pop().disconnect();
  await stopDaemon(daemon);
  if (keyDir) rmSync(keyDir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------
// Tokens

const b64 = (value) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");
const now = () => Math.floor(Date.now() / 1000);
const privateKey = (name) => createPrivateKey(readFileSync(join(FIXTURES, name)));

/** Claims valid for an hour for the /hs namespace, plus `extra`. */
function hsClaims(extra = {}) {
  return { sub: "u1", iss: ISSUER, aud: AUDIENCE, exp: now() + 3600, ...extra };
}

function hs256(claims, secret = SECRET, header = { alg: "HS256", typ: "JWT" }) {
  const input = `${b64(header)}.${b64(claims)}`;
  return `${input}.${createHmac("sha256", secret).update(input).digest("base64url")}`;
}

function signed(alg, claims, kid) {
  const header = { alg, typ: "JWT", ...(kid ? { kid } : {}) };
  const input = Buffer.from(`${b64(header)}.${b64(claims)}`);
  let signature;
  if (alg === "RS256") signature = sign("sha256", input, privateKey("rsa-private.pem"));
  else if (alg === "ES256") signature = sign("sha256", input, { key: privateKey("ec-private.pem"), dsaEncoding: "ieee-p1363" });
  else if (alg === "EdDSA") signature = sign(null, input, privateKey("ed-private.pem"));
  else throw new Error(`no signer for ${alg}`);
  return `${input}.${signature.toString("base64url")}`;
}

// ---------------------------------------------------------------------------------------
// Clients

function client(nsp, opts = {}) {
  const socket = attachInbox(io(`${daemon.url}${nsp}`, { forceNew: true, reconnection: false, timeout: WAIT_MS, ...opts }));
  sockets.push(socket);
  return socket;
}

/** Resolves with the connect_error's message; fails if the socket connects instead. */
function refusal(socket) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no connect_error on ${socket.nsp} within ${WAIT_MS}ms`)), WAIT_MS);
    socket.once("connect", () => {
      clearTimeout(timer);
      reject(new Error(`${socket.nsp} connected, but a refusal was expected`));
    });
    socket.once("connect_error", (err) => {
      clearTimeout(timer);
      resolve(err.message);
    });
  });
}

async function members(socket, room) {
  const reply = await ack(socket, "$members", room);
  assert.equal(reply.ok, true, `$members ${room}: ${JSON.stringify(reply)}`);
  return reply.members.map((m) => m.user).sort();
}

// ---------------------------------------------------------------------------------------

describe("a valid token", () => {
  it("in auth.token: the user from its claims, its join rooms at connect, announced with the user", logs(async () => {
    const room = freshRoom("team:red");
    const first = client("/hs", { auth: { token: hs256(hsClaims({ name: "Ann", join: [room], rooms: ["team:*"] })) } });
    await connected(first);
    assert.deepEqual(await members(first, room), ["Ann"], "in its join-claim room from the start");

    const second = client("/hs", { auth: { token: hs256(hsClaims({ sub: "bob-42", join: [room] })) } });
    const presence = first.inbox.next("$presence", (p) => p.action === "join" && p.room === room && p.user === "bob-42");
    await connected(second);
    const [announced] = await presence;
    assert.equal(announced.count, 2);
    assert.deepEqual(await members(second, room), ["Ann", "bob-42"], "no name claim: the subject");
  }));

  it("in a cookie of the handshake (token_cookie)", logs(async () => {
    const token = hs256(hsClaims({ name: "Cookie Carl", join: ["lobby"] }));
    const socket = client("/hs", { extraHeaders: { cookie: `theme=dark; io_token=${token}` } });
    await connected(socket);
    assert.ok((await members(socket, "lobby")).includes("Cookie Carl"));
  }));

  it("in the Authorization header, over WebSocket only as well as polling first", logs(async () => {
    const token = hs256(hsClaims({ name: "Bearer Bea", join: ["lobby"] }));
    for (const transports of [["polling", "websocket"], ["websocket"]]) {
      const socket = client("/hs", { transports, extraHeaders: { authorization: `Bearer ${token}` } });
      await connected(socket);
      assert.ok((await members(socket, "lobby")).includes("Bearer Bea"), transports.join("+"));
      socket.disconnect();
    }
  }));

  it("RS256, ES256 and EdDSA with a PEM public key; RS256 and ES256 from a JWKS by kid", logs(async () => {
    const claims = (name) => ({ name, exp: now() + 600 });
    for (const [nsp, alg, kid] of [
      ["/rs", "RS256"],
      ["/es", "ES256"],
      ["/ed", "EdDSA"],
      ["/jwks", "RS256", "rsa-1"],
      ["/jwks", "ES256", "ec-1"],
    ]) {
      const socket = client(nsp, { auth: { token: signed(alg, claims(`${alg} user`), kid) } });
      await connected(socket);
      assert.deepEqual(await ack(socket, "$join", `${nsp.slice(1)}-room`), { ok: true, room: `${nsp.slice(1)}-room`, count: 1 }, `${nsp} ${alg}`);
      assert.deepEqual(await members(socket, `${nsp.slice(1)}-room`), [`${alg} user`]);
      socket.disconnect();
    }
  }));

  it("join = \"claims\": $join only the rooms its patterns allow", logs(async () => {
    const socket = client("/hs", { auth: { token: hs256(hsClaims({ rooms: ["team:*", "lobby"] })) } });
    await connected(socket);
    assert.equal((await ack(socket, "$join", "team:blue")).ok, true);
    assert.equal((await ack(socket, "$join", "lobby")).ok, true);
    assert.deepEqual(await ack(socket, "$join", "lobby2"), { ok: false, error: "room not allowed" });
    assert.deepEqual(await ack(socket, "$join", "other"), { ok: false, error: "room not allowed" });
    const none = client("/hs", { auth: { token: hs256(hsClaims()) } });
    await connected(none);
    assert.deepEqual(await ack(none, "$join", "lobby"), { ok: false, error: "room not allowed" }, "no rooms claim: no room");
  }));
});

describe("bad tokens are refused with a clear error, a log line and a metric", () => {
  const forged = () => hs256(hsClaims(), "another-secret-another-secret-123");
  const rsaPublicPem = () => readFileSync(join(FIXTURES, "rsa-public.pem"), "utf8");
  const cases = [
    ["/hs", "expired", () => hs256(hsClaims({ exp: now() - 120 })), "token expired", "expired"],
    ["/hs", "not yet valid", () => hs256(hsClaims({ nbf: now() + 600 })), "token not yet valid", "not_yet_valid"],
    ["/hs", "forged", forged, "invalid token signature", "signature"],
    ["/hs", "alg none", () => `${b64({ alg: "none", typ: "JWT" })}.${b64(hsClaims())}.`, "token algorithm not allowed", "algorithm"],
    ["/rs", "HS256 signed with the RSA public key", () => hs256({ exp: now() + 600 }, rsaPublicPem()), "token algorithm not allowed", "algorithm"],
    ["/hs", "RS256 against the HS256 key", () => signed("RS256", hsClaims()), "token algorithm not allowed", "algorithm"],
    ["/hs", "garbage", () => "not-a-jwt", "malformed token", "malformed"],
    ["/hs", "garbage JSON in a JWT shape", () => `${b64("{nope")}.${b64("x")}.sig`, "malformed token", "malformed"],
    ["/hs", "the wrong issuer", () => hs256(hsClaims({ iss: "https://evil.test" })), "token issuer not accepted", "issuer"],
    ["/hs", "the wrong audience", () => hs256(hsClaims({ aud: "someone-else" })), "token audience not accepted", "audience"],
    ["/hs", "no exp", () => hs256({ iss: ISSUER, aud: AUDIENCE }), "invalid token claims", "claims"],
    ["/hs", "rooms not a list", () => hs256(hsClaims({ rooms: "team:*" })), "invalid token claims", "claims"],
    ["/jwks", "an unknown kid", () => signed("RS256", { exp: now() + 600 }, "gone"), "unknown token key", "key"],
    ["/optional", "a bad token where none is required", () => "a.b.c", "malformed token", "malformed"],
  ];
  for (const [nsp, what, token, message, reason] of cases) {
    it(`${what} (${nsp}) → "${message}", reason ${reason}`, logs(async () => {
      const before = (await scrape(daemon)).value("iorelay_auth_refused_total", { namespace: nsp, reason });
      const mark = daemon.mark();
      const socket = client(nsp, { auth: { token: token() } });
      assert.equal(await refusal(socket), message);
      await daemon.waitForLog(new RegExp(`connection refused by auth.*reason=${reason}`), { from: mark });
      await waitForMetric(daemon, "iorelay_auth_refused_total", { namespace: nsp, reason }, (v) => v === before + 1);
    }));
  }

  it("a token that is not a string, and no token where one is required", logs(async () => {
    assert.equal(await refusal(client("/hs", { auth: { token: 42 } })), "malformed token");
    assert.equal(await refusal(client("/hs")), "authentication required");
    assert.equal(await refusal(client("/hs", { extraHeaders: { authorization: "Basic dXNlcjpwYXNz" } })), "authentication required");
    await waitForMetric(daemon, "iorelay_auth_refused_total", { namespace: "/hs", reason: "missing" }, (v) => v >= 2);
  }));

  it("nothing else is affected: the connection's other namespace and the namespace's members carry on", logs(async () => {
    const room = freshRoom("team:calm");
    const member = client("/hs", { auth: { token: hs256(hsClaims({ name: "Stays", join: [room] })) } });
    await connected(member);

    // One connection: /open connects, /hs is refused on it, /open still works.
    const manager = new Manager(daemon.url, { reconnection: false, timeout: WAIT_MS });
    managers.push(manager);
    const open = attachInbox(manager.socket("/open"));
    sockets.push(open);
    await connected(open);
    const refused = attachInbox(manager.socket("/hs", { auth: { token: hs256(hsClaims({ exp: now() - 120 })) } }));
    sockets.push(refused);
    assert.equal(await refusal(refused), "token expired");
    assert.deepEqual(await ack(open, "ping"), { ok: true }, "the connection's other namespace still answers");
    assert.deepEqual(await members(member, room), ["Stays"], "the refused socket never became a member");
    assert.equal(member.connected, true);
  }));
});

describe("user_from: the nickname from a cookie (the book's shared session)", () => {
  it("names the member in $members and $presence, percent-decoded", logs(async () => {
    const room = freshRoom("chat");
    const ann = client("/chat", { extraHeaders: { cookie: `nickname=Ren%C3%A9; other=1` }, auth: { name: "ignored" } });
    await connected(ann);
    assert.equal((await ack(ann, "$join", room)).ok, true);
    const bob = client("/chat", { extraHeaders: { cookie: "nickname=Bob" } });
    await connected(bob);
    const presence = ann.inbox.next("$presence", (p) => p.room === room && p.action === "join");
    assert.equal((await ack(bob, "$join", room)).ok, true);
    assert.equal((await presence)[0].user, "Bob");
    assert.deepEqual(await members(bob, room), ["Bob", "René"]);
  }));

  it("no cookie or a garbage one is refused where required", logs(async () => {
    assert.equal(await refusal(client("/chat")), "authentication required");
    assert.equal(await refusal(client("/chat", { extraHeaders: { cookie: "nickname=" } })), "authentication required");
    assert.equal(await refusal(client("/chat", { extraHeaders: { cookie: "nickname=%FF%FE" } })), "invalid user cookie");
    assert.equal(await refusal(client("/chat", { extraHeaders: { cookie: ";;=;nickname" } })), "authentication required");
    await waitForMetric(daemon, "iorelay_auth_refused_total", { namespace: "/chat", reason: "cookie" }, (v) => v >= 1);
    await waitForMetric(daemon, "iorelay_auth_refused_total", { namespace: "/chat", reason: "missing" }, (v) => v >= 3);
  }));
});

// Last: these rewrite the daemon's config.
describe("keys are read at reload", () => {
  async function reload(text, verdict) {
    const from = daemon.mark();
    daemon.writeConfig(text);
    daemon.signal("SIGHUP");
    await daemon.waitForLog(verdict, { from });
  }

  it("a missing key file refuses the reload, naming the key; the old keys stay", logs(async () => {
    const broken = config(keyDir).replace(`secret = "${SECRET}"`, `secret_file = ${JSON.stringify(join(keyDir, "gone.secret"))}`);
    await reload(broken, /ERROR.*reload rejected.*auth\.jwt\.secret_file.*gone\.secret/);
    await connected(client("/hs", { auth: { token: hs256(hsClaims()) } }));
  }));

  it("a new secret applies to the next connections: the old secret's tokens are forged now", logs(async () => {
    const next = "the-next-secret-of-at-least-32-bytes!";
    const connectedBefore = client("/hs", { auth: { token: hs256(hsClaims({ join: ["lobby"] })) } });
    await connected(connectedBefore);
    await reload(config(keyDir).replace(`secret = "${SECRET}"`, `secret = "${next}"`), /configuration reloaded/);
    await connected(client("/hs", { auth: { token: hs256(hsClaims(), next) } }));
    assert.equal(await refusal(client("/hs", { auth: { token: hs256(hsClaims()) } })), "invalid token signature");
    assert.equal(connectedBefore.connected, true, "an admitted socket keeps its identity across a reload");
    assert.deepEqual((await ack(connectedBefore, "$rooms")).ok, true);
  }));
});

// The relay model: control events, routes, echo, presence, join policies, limits, greet.
//
// One relay for the whole file, one namespace per policy under test. Every test uses its
// own rooms and closes its clients in afterEach. Nothing here sleeps: each step waits for
// the event or ack it needs, and "was not delivered" is proved with a marker event sent by
// the same sender after the one under test and routed to the whole namespace: per-sender
// order is preserved, so once a socket has the marker it would already have the earlier
// event.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { startRelay } from "../lib/relay.mjs";
import { freshRoom, openClient, connected, ack, join, barrier, relayLogs } from "../lib/clients.mjs";

// The marker rule every namespace that needs the barrier carries.
const marker = (ns) => `
[namespaces."${ns}".events.marker]
route = "namespace"
echo = true
`;

const CONFIG = `
# Defaults, spelled out: join any, route rooms, echo off, presence on.
[namespaces."/"]
user_field = "name"
join = "any"
route = "rooms"
echo = false
presence = true
${marker("/")}
[namespaces."/".events.old-name]
rename = "new-name"

[namespaces."/echo"]
echo = true
${marker("/echo")}

[namespaces."/quiet"]
presence = false
${marker("/quiet")}

[namespaces."/locked"]
join = "none"

[namespaces."/pattern"]
join = { pattern = "^[a-z]+$" }

[namespaces."/readonly"]
route = "none"
${marker("/readonly")}

[namespaces."/pages"]
route = { room = "dashboard" }
${marker("/pages")}

[namespaces."/all"]
route = "namespace"
${marker("/all")}

[namespaces."/self"]
route = "sender"
${marker("/self")}

[namespaces."/discard"]
route = "discard"
${marker("/discard")}

[namespaces."/limits"]
[namespaces."/limits".limits]
max_rooms = 2
max_event_size = "1KB"

[namespaces."/rate"]
route = "namespace"
[namespaces."/rate".limits]
events_per_second = 1
burst = 1

[namespaces."/greet"]
greet = "hello"
`;

let relay;
const sockets = [];

/** A new client socket on its own connection. */
function client(nsp = "/", opts = {}) {
  return openClient(relay.url + nsp, sockets, opts);
}

/** Connect one client per entry of `auths` (undefined = no auth) to `nsp`. */
function connectAll(nsp, ...auths) {
  return Promise.all(auths.map((auth) => connected(client(nsp, auth === undefined ? {} : { auth }))));
}

/** Assert a refusal ack: `{ ok: false, error: "<non-empty text>" }` and nothing else. */
function assertRefused(reply, what) {
  assert.equal(typeof reply, "object", `${what}: ack is not an object: ${JSON.stringify(reply)}`);
  assert.equal(reply.ok, false, `${what}: expected ok:false, got ${JSON.stringify(reply)}`);
  assert.equal(typeof reply.error, "string", `${what}: no error text in ${JSON.stringify(reply)}`);
  assert.ok(reply.error.length > 0, `${what}: empty error text`);
  assert.deepEqual(Object.keys(reply).sort(), ["error", "ok"], `${what}: unexpected keys in ${JSON.stringify(reply)}`);
}

/** Wrap a test body so that a failure also prints the relay's log lines from that test. */
const withLogs = relayLogs(() => relay);

before(async () => {
  relay = await startRelay(CONFIG);
});

afterEach(() => {
  while (sockets.length) sockets.pop().disconnect();
});

after(async () => {
  while (sockets.length) sockets.pop().disconnect();
  await relay?.stop();
});

describe("control events", () => {
  it("$join and $leave answer with the room and its member count", withLogs(async () => {
    const [a, b] = await connectAll("/", { name: "ann" }, { name: "bob" });
    const room = freshRoom("count");
    assert.deepEqual(await ack(a, "$join", room), { ok: true, room, count: 1 });
    assert.deepEqual(await ack(b, "$join", room), { ok: true, room, count: 2 });
    assert.deepEqual(await ack(a, "$leave", room), { ok: true, room, count: 1 });
    assert.deepEqual(await ack(b, "$leave", room), { ok: true, room, count: 0 });
  }));

  it("$rooms lists the namespace's rooms with counts", withLogs(async () => {
    const [a, b, c] = await connectAll("/", { name: "ann" }, { name: "bob" }, { name: "cat" });
    const big = freshRoom("big");
    const small = freshRoom("small");
    await join(a, big);
    await join(b, big);
    await join(c, small);
    await join(a, small);

    const reply = await ack(c, "$rooms");
    assert.equal(reply.ok, true, JSON.stringify(reply));
    assert.ok(Array.isArray(reply.rooms), `rooms is not a list: ${JSON.stringify(reply)}`);
    const find = (r) => reply.rooms.find((x) => x.room === r);
    assert.deepEqual(find(big), { room: big, count: 2 });
    assert.deepEqual(find(small), { room: small, count: 2 });
    // The relay has no per-socket private rooms to show.
    for (const s of [a, b, c]) {
      assert.equal(find(s.id), undefined, `socket id ${s.id} listed as a room: ${JSON.stringify(reply)}`);
    }

    // A room whose last member left is gone.
    await ack(c, "$leave", small);
    await ack(a, "$leave", small);
    const after = await ack(c, "$rooms");
    assert.equal(after.ok, true);
    assert.equal(after.rooms.find((x) => x.room === small), undefined, `empty room still listed: ${JSON.stringify(after)}`);
    assert.deepEqual(after.rooms.find((x) => x.room === big), { room: big, count: 2 });
  }));

  it("$members lists ids (as the client sees socket.id) and users", withLogs(async () => {
    const [a, b] = await connectAll("/", { name: "ann" }, undefined);
    const room = freshRoom("members");
    await join(a, room);
    await join(b, room);
    const reply = await ack(b, "$members", room);
    assert.equal(reply.ok, true, JSON.stringify(reply));
    assert.equal(reply.room, room);
    const byId = (x, y) => (x.id < y.id ? -1 : 1);
    assert.deepEqual([...reply.members].sort(byId), [{ id: a.id, user: "ann" }, { id: b.id, user: null }].sort(byId));

    await ack(a, "$leave", room);
    const after = await ack(b, "$members", room);
    assert.deepEqual(after, { ok: true, room, members: [{ id: b.id, user: null }] });
  }));
});

describe("routes", () => {
  it("rooms (default): the others in the room get it, not the sender, not non-members", withLogs(async () => {
    const [a, b, c, outsider] = await connectAll("/", { name: "a" }, { name: "b" }, { name: "c" }, { name: "o" });
    const room = freshRoom("chat");
    await join(a, room);
    await join(b, room);
    await join(c, room);
    await join(outsider, freshRoom("elsewhere"));

    const gotB = b.inbox.next("chat");
    const gotC = c.inbox.next("chat");
    assert.deepEqual(await ack(a, "chat", { text: "hi" }, 2), { ok: true });
    assert.deepEqual(await gotB, [{ text: "hi" }, 2]);
    assert.deepEqual(await gotC, [{ text: "hi" }, 2]);

    await barrier(a, [a, b, c, outsider]);
    assert.deepEqual(a.inbox.all("chat"), [], "the sender got its own event with echo off");
    assert.deepEqual(outsider.inbox.all("chat"), [], "a non-member got the event");
    assert.equal(b.inbox.all("chat").length, 1, "delivered more than once");
  }));

  it("rooms: an event goes to every room the sender joined, once per receiver", withLogs(async () => {
    const [a, inOne, inTwo, inBoth] = await connectAll("/", {}, {}, {}, {});
    const one = freshRoom("one");
    const two = freshRoom("two");
    for (const [s, rooms] of [[a, [one, two]], [inOne, [one]], [inTwo, [two]], [inBoth, [one, two]]]) {
      for (const r of rooms) await join(s, r);
    }
    const waits = [inOne, inTwo, inBoth].map((s) => s.inbox.next("multi"));
    assert.deepEqual(await ack(a, "multi", "x"), { ok: true });
    for (const got of await Promise.all(waits)) assert.deepEqual(got, ["x"]);
    await barrier(a, [inBoth]);
    assert.equal(inBoth.inbox.all("multi").length, 1, "a member of both rooms got the event twice");
  }));

  it("rooms: refused when the sender joined no room", withLogs(async () => {
    const [a] = await connectAll("/", {});
    assertRefused(await ack(a, "chat", "nobody to hear"), "event with no room joined");
  }));

  it("echo on: the sender gets its own copy too", withLogs(async () => {
    const [a, b] = await connectAll("/echo", {}, {});
    const room = freshRoom("echo");
    await join(a, room);
    await join(b, room);
    const gotA = a.inbox.next("say");
    const gotB = b.inbox.next("say");
    assert.deepEqual(await ack(a, "say", "me too"), { ok: true });
    assert.deepEqual(await gotA, ["me too"]);
    assert.deepEqual(await gotB, ["me too"]);
    await barrier(a, [a]);
    assert.equal(a.inbox.all("say").length, 1);
  }));

  it("none: refused with an ack error, and with $error when no ack was asked", withLogs(async () => {
    const [a, b] = await connectAll("/readonly", {}, {});
    const room = freshRoom("ro");
    await join(a, room);
    await join(b, room);
    assertRefused(await ack(a, "post", "x"), "route none");

    const error = a.inbox.next("$error");
    a.emit("post", "y");
    const [body] = await error;
    assert.equal(body.event, "post", JSON.stringify(body));
    assert.equal(typeof body.error, "string");
    assert.ok(body.error.length > 0);
    assert.deepEqual(Object.keys(body).sort(), ["error", "event"]);

    await barrier(a, [b]);
    assert.deepEqual(b.inbox.all("post"), [], "a refused event was delivered");
  }));

  it("room (fan-in): every page's event reaches the dashboard room only", withLogs(async () => {
    const [dashboard, page1, page2] = await connectAll("/pages", {}, {}, {});
    await join(dashboard, "dashboard");
    const views = [];
    const got1 = dashboard.inbox.next("pageview", (v) => v.url === "/one");
    const got2 = dashboard.inbox.next("pageview", (v) => v.url === "/two");
    // Pages join nothing: the route names the room.
    views.push(ack(page1, "pageview", { url: "/one" }));
    views.push(ack(page2, "pageview", { url: "/two" }));
    for (const reply of await Promise.all(views)) assert.deepEqual(reply, { ok: true });
    assert.deepEqual(await got1, [{ url: "/one" }]);
    assert.deepEqual(await got2, [{ url: "/two" }]);

    await barrier(page1, [page1, page2]);
    await barrier(page2, [page1, page2]);
    assert.deepEqual(page1.inbox.all("pageview"), [], "a page got a page view");
    assert.deepEqual(page2.inbox.all("pageview"), [], "a page got a page view");
  }));

  it("namespace: every other socket of the namespace gets it, rooms or not", withLogs(async () => {
    const [a, b, c] = await connectAll("/all", {}, {}, {});
    await join(c, freshRoom("any"));
    const waits = [b, c].map((s) => s.inbox.next("news"));
    assert.deepEqual(await ack(a, "news", { headline: "x" }), { ok: true });
    for (const got of await Promise.all(waits)) assert.deepEqual(got, [{ headline: "x" }]);
    await barrier(a, [a]);
    assert.deepEqual(a.inbox.all("news"), [], "the sender got its own event with echo off");
  }));

  it("sender: only the sender gets it back", withLogs(async () => {
    const [a, b] = await connectAll("/self", {}, {});
    const room = freshRoom("self");
    await join(a, room);
    await join(b, room);
    const back = a.inbox.next("whoami");
    assert.deepEqual(await ack(a, "whoami", 1, "two"), { ok: true });
    assert.deepEqual(await back, [1, "two"]);
    await barrier(a, [b]);
    assert.deepEqual(b.inbox.all("whoami"), [], "another socket got a route-sender event");
  }));

  it("discard: accepted and acked, delivered to no one", withLogs(async () => {
    const [a, b] = await connectAll("/discard", {}, {});
    const room = freshRoom("void");
    await join(a, room);
    await join(b, room);
    assert.deepEqual(await ack(a, "void", 1), { ok: true });
    await barrier(a, [a, b]);
    assert.deepEqual(a.inbox.all("void"), []);
    assert.deepEqual(b.inbox.all("void"), []);
  }));

  it("an events rule renames the event on delivery", withLogs(async () => {
    const [a, b] = await connectAll("/", {}, {});
    const room = freshRoom("rename");
    await join(a, room);
    await join(b, room);
    const got = b.inbox.next("new-name");
    assert.deepEqual(await ack(a, "old-name", { v: 1 }, "two"), { ok: true });
    assert.deepEqual(await got, [{ v: 1 }, "two"]);
    await barrier(a, [b]);
    assert.deepEqual(b.inbox.all("old-name"), [], "delivered under the old name too");
  }));
});

describe("presence", () => {
  it("the other members get $presence join and leave with counts; not the one joining", withLogs(async () => {
    const [ann, bob] = await connectAll("/", { name: "ann" }, { name: "bob" });
    const room = freshRoom("presence");
    await join(ann, room);

    const joined = ann.inbox.next("$presence", (p) => p.room === room && p.action === "join");
    await join(bob, room);
    assert.deepEqual(await joined, [{ room, action: "join", id: bob.id, user: "bob", count: 2 }]);

    const left = ann.inbox.next("$presence", (p) => p.room === room && p.action === "leave");
    await ack(bob, "$leave", room);
    assert.deepEqual(await left, [{ room, action: "leave", id: bob.id, user: "bob", count: 1 }]);

    await barrier(bob, [bob]);
    assert.deepEqual(
      bob.inbox.all("$presence").filter(([p]) => p.id === bob.id),
      [],
      "the joining socket was told of its own join",
    );
  }));

  it("a disconnect counts as a leave, for every room the socket was in", withLogs(async () => {
    const [ann, cat] = await connectAll("/", { name: "ann" }, undefined);
    const r1 = freshRoom("gone");
    const r2 = freshRoom("gone");
    await join(ann, r1);
    await join(ann, r2);
    await join(cat, r1);
    await join(cat, r2);
    const catId = cat.id;
    const left1 = ann.inbox.next("$presence", (p) => p.room === r1 && p.action === "leave");
    const left2 = ann.inbox.next("$presence", (p) => p.room === r2 && p.action === "leave");
    cat.disconnect();
    assert.deepEqual(await left1, [{ room: r1, action: "leave", id: catId, user: null, count: 1 }]);
    assert.deepEqual(await left2, [{ room: r2, action: "leave", id: catId, user: null, count: 1 }]);
    assert.deepEqual(await ack(ann, "$members", r1), { ok: true, room: r1, members: [{ id: ann.id, user: "ann" }] });
  }));

  it("presence = false: no $presence", withLogs(async () => {
    const [ann, bob] = await connectAll("/quiet", { name: "ann" }, { name: "bob" });
    const room = freshRoom("quiet");
    await join(ann, room);
    assert.deepEqual(await ack(bob, "$join", room), { ok: true, room, count: 2 });
    await barrier(bob, [ann]);
    assert.deepEqual(ann.inbox.all("$presence"), []);
  }));
});

describe("join policies", () => {
  it("join = \"none\" refuses every $join", withLogs(async () => {
    const [a] = await connectAll("/locked", {});
    assertRefused(await ack(a, "$join", "lobby"), "$join under join none");
    const rooms = await ack(a, "$rooms");
    assert.equal(rooms.ok, true);
    assert.equal(rooms.rooms.find((r) => r.room === "lobby"), undefined, "refused join created the room");
  }));

  it("join = { pattern } admits matching names and refuses the rest", withLogs(async () => {
    const [a] = await connectAll("/pattern", {});
    const good = freshRoom("ok", true);
    assert.deepEqual(await ack(a, "$join", good), { ok: true, room: good, count: 1 });
    for (const bad of ["Upper", "with-dash", "digits1", "", `${good} `]) {
      assertRefused(await ack(a, "$join", bad), `$join ${JSON.stringify(bad)} under ^[a-z]+$`);
    }
  }));
});

describe("limits", () => {
  it("max_rooms: the join beyond the limit is refused; leaving makes room", withLogs(async () => {
    const [a] = await connectAll("/limits", {});
    const [r1, r2, r3] = [freshRoom("max"), freshRoom("max"), freshRoom("max")];
    await join(a, r1);
    await join(a, r2);
    assertRefused(await ack(a, "$join", r3), "third room with max_rooms = 2");
    await ack(a, "$leave", r1);
    assert.deepEqual(await ack(a, "$join", r3), { ok: true, room: r3, count: 1 });
  }));

  it("max_event_size: a larger event is refused (JSON and binary), a small one passes", withLogs(async () => {
    const [a, b] = await connectAll("/limits", {}, {});
    const room = freshRoom("size");
    await join(a, room);
    await join(b, room);
    assertRefused(await ack(a, "big", "x".repeat(4000)), "4000-char string with max_event_size 1KB");
    assertRefused(await ack(a, "big", Buffer.alloc(4000, 1)), "4000-byte Buffer with max_event_size 1KB");

    const error = a.inbox.next("$error");
    a.emit("big", "y".repeat(4000));
    const [body] = await error;
    assert.equal(body.event, "big");

    // Still connected and usable; the refused events were not delivered.
    const got = b.inbox.next("big");
    assert.deepEqual(await ack(a, "big", "small"), { ok: true });
    assert.deepEqual(await got, ["small"]);
    assert.equal(b.inbox.all("big").length, 1, "a refused event was delivered");
    assert.equal(a.connected, true);
  }));

  it("rate limit: events beyond the rate are refused, the connection stays", withLogs(async () => {
    const [a, b] = await connectAll("/rate", {}, {});
    // events_per_second = 1, burst = 1: of five back-to-back events the first passes and
    // at least three are refused (a fresh token takes a second).
    const replies = await Promise.all([0, 1, 2, 3, 4].map((i) => ack(a, "tick", i)));
    assert.deepEqual(replies[0], { ok: true }, `first reply: ${JSON.stringify(replies)}`);
    const refused = replies.filter((r) => r.ok === false);
    assert.ok(refused.length >= 3, `expected at least 3 refusals, got ${JSON.stringify(replies)}`);
    for (const r of refused) assertRefused(r, "rate-limited tick");
    const accepted = replies.filter((r) => r.ok === true).length;

    // Without an ack request the refusal comes back as $error.
    const error = a.inbox.next("$error");
    a.emit("tick", "no-ack-1");
    a.emit("tick", "no-ack-2");
    const [body] = await error;
    assert.equal(body.event, "tick");
    assert.equal(a.connected, true);

    // The accepted ones were delivered (the refused ones are not checked here: a marker
    // would itself be rate limited).
    for (let i = 0; i < accepted; i += 1) await b.inbox.next("tick");
  }));
});

describe("HTTP surface", () => {
  it("serves the demo page at /, the client bundle and /healthz", withLogs(async () => {
    const page = await fetch(relay.url + "/");
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-type") || "", /text\/html/);
    const html = await page.text();
    assert.ok(html.includes('src="/socket.io/socket.io.min.js"'), "the demo page does not load the bundle");
    assert.ok(!/(src|href)="(https?:)?\/\//i.test(html), "the demo page loads something from another host");

    for (const path of ["/socket.io/socket.io.min.js", "/socket.io/socket.io.js"]) {
      const res = await fetch(relay.url + path);
      assert.equal(res.status, 200, `GET ${path}`);
      assert.match(res.headers.get("content-type") || "", /javascript/, `content-type of ${path}`);
      assert.match(await res.text(), /Socket\.IO v4\./, `GET ${path} is not the socket.io client`);
    }

    assert.equal((await fetch(relay.url + "/healthz")).status, 200);
    assert.equal((await fetch(relay.url + "/no-such-page")).status, 404);
  }));
});

describe("greet", () => {
  it("right after connect the socket gets the greet event with its own auth payload", withLogs(async () => {
    const auth = { name: "zoe", room: "lobby", n: 3 };
    const greeted = client("/greet", { auth });
    const hello = greeted.inbox.next("hello");
    await connected(greeted);
    assert.deepEqual(await hello, [auth]);

    const anon = client("/greet");
    const anonHello = anon.inbox.next("hello");
    await connected(anon);
    assert.deepEqual(await anonHello, [{}]);
  }));

  it("namespaces without greet send nothing on connect", withLogs(async () => {
    const [a] = await connectAll("/echo", { name: "x" });
    await barrier(a, [a]);
    assert.deepEqual(a.inbox.names(), ["marker"], "something besides the marker arrived");
  }));
});

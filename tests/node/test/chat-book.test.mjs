// The book's chat (chapters 3–4) on iorelay: examples/chat/iorelay.toml, driven by Node
// socket.io clients that do what examples/chat/public/*.js do in the browser.
//
// Each "page" is one Manager (one connection) carrying /chat_infra and /chat_com, the way
// io("/chat_infra") + io("/chat_com") share a connection in a browser. Nothing here sleeps:
// every step waits for the event or ack it needs.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { get as httpGet } from "node:http";
import { join } from "node:path";
import { Manager } from "socket.io-client";
import { startRelay, repoRoot } from "../lib/relay.mjs";
import { WAIT_MS, attachInbox, connected, ack, relayLogs } from "../lib/clients.mjs";

const CONFIG_FILE = join(repoRoot, "examples", "chat", "iorelay.toml");
let relay;
const managers = [];
const sockets = [];
let roomSeq = 0;

/** A page URL with a room no other test uses, as the rooms page links to it. */
function chatUrl(room = "test") {
  roomSeq += 1;
  return `http://127.0.0.1:3000/index.html?room=${encodeURIComponent(`${room}${String(roomSeq).padStart(3, "0")}`)}`;
}

/** One connection with the given namespaces, each sending `auth`. */
function openConnection(nsps, auth) {
  const manager = new Manager(relay.url, { reconnection: false });
  managers.push(manager);
  return nsps.map((nsp) => {
    const socket = attachInbox(manager.socket(nsp, { auth }));
    sockets.push(socket);
    return socket;
  });
}

/**
 * What index.html?room=… does: connect both namespaces with the nickname, then join the
 * room from the URL in both.
 */
async function openChatPage(name, pageUrl) {
  const room = new URL(pageUrl).searchParams.get("room");
  const [infra, com] = openConnection(["/chat_infra", "/chat_com"], { name });
  await Promise.all([connected(infra), connected(com)]);
  const [infraJoin, comJoin] = await Promise.all([ack(infra, "$join", room), ack(com, "$join", room)]);
  assert.equal(infraJoin.ok, true, `${name}: /chat_infra $join ${room}: ${JSON.stringify(infraJoin)}`);
  assert.equal(comJoin.ok, true, `${name}: /chat_com $join ${room}: ${JSON.stringify(comJoin)}`);
  return { name, room, infra, com, infraJoin, comJoin, close: () => infra.io.engine.close() };
}

/** What the send button does. */
function sendMessage(page, text) {
  return ack(page.com, "message", { username: page.name, message: text, from: page.com.id });
}

/** What rooms.html does: connect /chat_infra only and ask for the rooms. */
async function openRoomsPage() {
  const [infra] = openConnection(["/chat_infra"], { name: "visitor" });
  await connected(infra);
  return {
    infra,
    async rooms() {
      const reply = await ack(infra, "$rooms");
      assert.equal(reply.ok, true, `$rooms: ${JSON.stringify(reply)}`);
      return Object.fromEntries(reply.rooms.map((r) => [r.room, r.count]));
    },
  };
}

/** GET `path` exactly as written (no URL normalization) and resolve with the status code. */
function rawGetStatus(port, path) {
  return new Promise((resolve, reject) => {
    const req = httpGet({ host: "127.0.0.1", port, path }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.setTimeout(WAIT_MS, () => req.destroy(new Error(`GET ${path} timed out`)));
    req.on("error", reject);
  });
}

/** The line chat.js prints for a $presence event. */
const presenceLine = (p) => `${p.user || "Someone"} ${p.action === "join" ? "has joined the room." : "has left the room."}`;

const withLogs = relayLogs(() => relay);

before(async () => {
  relay = await startRelay("", { configFile: CONFIG_FILE });
});

afterEach(() => {
  while (sockets.length) sockets.pop().disconnect();
  while (managers.length) managers.pop().engine?.close();
});

after(async () => {
  await relay?.stop();
});

describe("the book's chat on examples/chat/iorelay.toml", () => {
  it("the two namespaces share one connection and the page is greeted by name", withLogs(async () => {
    const [infra, com] = openConnection(["/chat_infra", "/chat_com"], { name: "Rohit" });
    const nameSet = infra.inbox.next("name_set");
    await Promise.all([connected(infra), connected(com)]);
    assert.equal(infra.io, com.io);
    assert.ok(infra.io.engine.id);
    assert.equal(infra.io.engine.id, com.io.engine.id);
    // greet = "name_set": the book's reply to set_name, with the nickname.
    assert.deepEqual(await nameSet, [{ name: "Rohit" }]);
    // Infrastructure is the relay's business: clients' own events on /chat_infra are refused.
    const refused = await ack(infra, "user_entered", { name: "fake" });
    assert.equal(refused.ok, false, JSON.stringify(refused));
  }));

  it("the nickname cookie is the shared session of both namespaces (auth.user_from)", withLogs(async () => {
    // What the pages do: the nickname in a cookie, sent with the handshake of the one
    // connection both namespaces share; no name in the auth payload at all.
    const manager = new Manager(relay.url, { reconnection: false, extraHeaders: { cookie: "nickname=Zo%C3%A9" } });
    managers.push(manager);
    const [infra, com] = ["/chat_infra", "/chat_com"].map((nsp) => {
      const socket = attachInbox(manager.socket(nsp));
      sockets.push(socket);
      return socket;
    });
    await Promise.all([connected(infra), connected(com)]);
    const room = new URL(chatUrl("cookie")).searchParams.get("room");
    const watcher = await openChatPage("Watcher", `http://127.0.0.1:3000/index.html?room=${room}`);
    const joined = watcher.infra.inbox.next("$presence", (p) => p.action === "join" && p.room === room);
    await Promise.all([ack(infra, "$join", room), ack(com, "$join", room)]);
    assert.equal((await joined)[0].user, "Zoé", "'Zoé has joined' on /chat_infra");
    for (const socket of [infra, com]) {
      const reply = await ack(socket, "$members", room);
      assert.deepEqual(reply.members.map((m) => m.user).sort(), ["Watcher", "Zoé"], socket.nsp);
    }
  }));

  it("a room from the URL: 'X has joined', messages to the others in the room plus the sender's copy", withLogs(async () => {
    const url1 = chatUrl("test");
    const url2 = chatUrl("test");
    const alice = await openChatPage("alice", url1);
    assert.equal(alice.room, new URL(url1).searchParams.get("room"));
    assert.deepEqual(alice.infraJoin, { ok: true, room: alice.room, count: 1 });

    // bob opens the same room: alice is told on /chat_infra, with the user count.
    const entered = alice.infra.inbox.next("$presence", (p) => p.action === "join");
    const bob = await openChatPage("bob", url1);
    assert.deepEqual(bob.infraJoin, { ok: true, room: alice.room, count: 2 });
    const [p] = await entered;
    assert.deepEqual(p, { room: alice.room, action: "join", id: bob.infra.id, user: "bob", count: 2 });
    assert.equal(presenceLine(p), "bob has joined the room.");

    // carol is in another room.
    const carol = await openChatPage("carol", url2);
    assert.notEqual(carol.room, alice.room);

    // bob writes: alice gets it, bob gets his own copy back (the book's "myMessage").
    const atAlice = alice.com.inbox.next("message");
    const atBob = bob.com.inbox.next("message");
    assert.deepEqual(await sendMessage(bob, "Hi"), { ok: true });
    const sent = { username: "bob", message: "Hi", from: bob.com.id };
    assert.deepEqual(await atAlice, [sent]);
    assert.deepEqual(await atBob, [sent]);

    // carol's room saw none of it. Proof without sleeping: bob also joins carol's room on
    // /chat_com and writes again; carol gets that second message, so she would already
    // have had the first.
    await ack(bob.com, "$join", carol.room);
    const second = carol.com.inbox.next("message");
    assert.deepEqual(await sendMessage(bob, "Anyone here?"), { ok: true });
    assert.deepEqual(await second, [{ username: "bob", message: "Anyone here?", from: bob.com.id }]);
    assert.equal(carol.com.inbox.all("message").length, 1, "carol got a message of another room");
    assert.deepEqual(carol.infra.inbox.all("$presence"), [], "carol was told of a join in another room");
    // Joins are announced once, on /chat_infra only (presence = false on /chat_com).
    assert.deepEqual(alice.com.inbox.all("$presence"), []);
    assert.deepEqual(carol.com.inbox.all("$presence"), []);
    assert.equal(alice.infra.inbox.all("$presence").length, 1);
  }));

  it("the rooms page lists the rooms with user counts, and a closed page says 'X has left'", withLogs(async () => {
    const urlA = chatUrl("jsconf");
    const urlB = chatUrl("nodeconf");
    const ann = await openChatPage("ann", urlA);
    const ben = await openChatPage("ben", urlA);
    const cyd = await openChatPage("cyd", urlB);
    const roomsPage = await openRoomsPage();

    const rooms = await roomsPage.rooms();
    assert.equal(rooms[ann.room], 2, `rooms list: ${JSON.stringify(rooms)}`);
    assert.equal(rooms[cyd.room], 1, `rooms list: ${JSON.stringify(rooms)}`);

    // ben closes his tab: both namespaces go with the connection.
    const benId = ben.infra.id; // the client forgets its id once disconnected
    const left = ann.infra.inbox.next("$presence", (p) => p.action === "leave");
    ben.close();
    const [p] = await left;
    assert.deepEqual(p, { room: ann.room, action: "leave", id: benId, user: "ben", count: 1 });
    assert.equal(presenceLine(p), "ben has left the room.");

    const after = await roomsPage.rooms();
    assert.equal(after[ann.room], 1, `rooms list after ben left: ${JSON.stringify(after)}`);
    assert.equal(after[cyd.room], 1);
  }));
});

describe("the example's pages, served with IORELAY_SERVER__STATIC_DIR as the README says", () => {
  let pages;
  before(async () => {
    pages = await startRelay("", {
      configFile: CONFIG_FILE,
      env: { IORELAY_SERVER__STATIC_DIR: join(repoRoot, "examples", "chat", "public") },
    });
  });
  after(async () => {
    await pages?.stop();
  });

  it("serves the chat room, the rooms page, their scripts and the client bundle", async (t) => {
    try {
      for (const [path, type, needle] of [
        ["/index.html?room=jsconf", "text/html", "/socket.io/socket.io.min.js"],
        ["/", "text/html", "chat.js"],
        ["/rooms.html", "text/html", "rooms.js"],
        ["/chat.js", "javascript", "/chat_com"],
        ["/rooms.js", "javascript", "$rooms"],
        ["/style.css", "text/css", "#messages"],
        ["/socket.io/socket.io.min.js", "javascript", "Socket.IO v4"],
      ]) {
        const res = await fetch(pages.url + path);
        assert.equal(res.status, 200, `GET ${path}`);
        const ctype = res.headers.get("content-type") || "";
        assert.ok(ctype.includes(type), `content-type of ${path}: ${ctype}`);
        const body = await res.text();
        assert.ok(body.includes(needle), `GET ${path}: body lacks ${JSON.stringify(needle)}`);
      }
      // examples/chat/iorelay.toml sits right above the static dir: no way up to it.
      // (fetch would normalize the dots away, so these go out verbatim through node:http.)
      for (const path of ["/../iorelay.toml", "/%2e%2e/iorelay.toml", "/..%2fiorelay.toml", "/%2E%2E%2Fiorelay.toml"]) {
        const status = await rawGetStatus(pages.port, path);
        assert.equal(status, 404, `GET ${path} answered ${status}`);
      }
    } catch (err) {
      t.diagnostic(`relay log:\n${pages.logs()}`);
      throw err;
    }
  });
});

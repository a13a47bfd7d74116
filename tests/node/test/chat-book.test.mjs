// The book's chat (chapters 3–4) on iorelay: examples/chat/iorelay.toml, driven by Node
// socket.io clients that do what examples/chat/public/*.js do in the browser.
//
// The last part runs the pages themselves in headless Chromium (Debian's, through
// playwright-core): three users with their own cookie jars use the rooms page and the chat
// room through their forms and links; the rooms page's counts follow joins and closed tabs
// without a reload. Screenshots go to a temp dir that is removed afterwards, unless
// TEST_IORELAY_SCREENSHOTS names a directory to keep them in.
//
// Each "page" is one Manager (one connection) carrying /chat_infra and /chat_com, the way
// io("/chat_infra") + io("/chat_com") share a connection in a browser. Nothing here sleeps:
// every step waits for the event or ack it needs.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { get as httpGet } from "node:http";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
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
    // (announce = true also tells every socket of /chat_infra of connections, "room": null:
    // that is for the rooms page, and the chat page skips it.)
    const entered = alice.infra.inbox.next("$presence", (p) => p.action === "join" && p.room === alice.room);
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
    assert.deepEqual(carol.infra.inbox.all("$presence").filter(([p]) => p.room !== null), [], "carol was told of a join in another room");
    // Joins are announced once, on /chat_infra only (presence = false on /chat_com).
    assert.deepEqual(alice.com.inbox.all("$presence"), []);
    assert.deepEqual(carol.com.inbox.all("$presence"), []);
    assert.equal(alice.infra.inbox.all("$presence").filter(([p]) => p.room !== null).length, 1);
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
    const left = ann.infra.inbox.next("$presence", (p) => p.action === "leave" && p.room === ann.room);
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

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const BROWSER_WAIT_MS = 10000;

describe("the example's pages in a real browser (Debian chromium, three users)", () => {
  let site;
  let browser;
  let shotDir;
  let keepShots = false;
  const users = {};

  before(async () => {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install -y chromium (never let playwright download a browser)`);
    const { chromium } = await import("playwright-core");
    site = await startRelay("", {
      configFile: CONFIG_FILE,
      env: { IORELAY_SERVER__STATIC_DIR: join(repoRoot, "examples", "chat", "public") },
    });
    keepShots = Boolean(process.env.TEST_IORELAY_SCREENSHOTS);
    shotDir = keepShots ? process.env.TEST_IORELAY_SCREENSHOTS : mkdtempSync(join(tmpdir(), "iorelay-shots-"));
    mkdirSync(shotDir, { recursive: true });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30000 });
  });

  after(async () => {
    if (browser) await browser.close().catch(() => {});
    if (site) await site.stop().catch(() => {});
    if (shotDir && !keepShots) rmSync(shotDir, { recursive: true, force: true });
  });

  /** A user with a browser context (cookie jar) of its own, on the rooms page. */
  async function openUser(name) {
    const context = await browser.newContext({ viewport: { width: 820, height: 620 }, colorScheme: "light" });
    context.setDefaultTimeout(BROWSER_WAIT_MS);
    const page = await context.newPage();
    const user = { name, context, page, errors: [] };
    page.on("pageerror", (err) => user.errors.push(`pageerror: ${err.message}`));
    page.on("console", (msg) => {
      if (msg.type() === "error") user.errors.push(`console.error: ${msg.text()}`);
    });
    await page.goto(`${site.url}/rooms.html`, { waitUntil: "load" });
    users[name] = user;
    return user;
  }

  /** Wait until `locator` shows `text`; the failure says what it shows instead. */
  async function shows(user, locator, text, what) {
    try {
      await locator.filter({ hasText: text }).first().waitFor({ timeout: BROWSER_WAIT_MS });
    } catch (err) {
      const now = await user.page.locator("main").innerText().catch(() => "(gone)");
      throw new Error(`${user.name}'s page: ${what} never showed ${JSON.stringify(String(text))}; the page shows:\n${now}\nrelay log:\n${site.logs()}`, { cause: err });
    }
  }

  /** The user-count cell of `room` on a rooms page. */
  const countOf = (user, room) =>
    user.page.locator("#rooms_list li").filter({ has: user.page.locator(".room_name", { hasText: new RegExp(`^${room}$`) }) }).locator(".room_users");

  const log = (user) => user.page.getByRole("log", { name: "Messages" }).locator("div");

  it("nickname cookie, 'X has joined', messages, and a rooms page whose counts follow along live", async () => {
    const room = "jsconf";
    const watcher = await openUser("watcher");
    await shows(watcher, watcher.page.locator("#status"), "No rooms yet", "the status");

    // ann saves a nickname and starts a room from the rooms page.
    const ann = await openUser("ann");
    await ann.page.getByLabel("Your nickname").fill("ann");
    await ann.page.getByRole("button", { name: "Save" }).click();
    await ann.page.getByLabel("Start a new room").fill(room);
    await ann.page.getByRole("button", { name: "Start" }).click();
    await ann.page.waitForURL(`**/index.html?room=${room}`);
    await shows(ann, log(ann), "Hello ann", "the greeting (name_set)");
    await shows(ann, ann.page.locator("#status"), `In ${room} · 1 user`, "the status");
    const cookie = (await ann.context.cookies()).find((c) => c.name === "nickname");
    assert.equal(cookie?.value, "ann", "the rooms page set the nickname cookie");

    // The relay names ann from that cookie alone, on /chat_com as on /chat_infra: a socket
    // opened in her page without any auth payload is "ann" in the room's member list.
    const members = await ann.page.evaluate(async (r) => {
      const s = io("/chat_com", { forceNew: true });
      try {
        await new Promise((resolve, reject) => { s.on("connect", resolve); s.on("connect_error", reject); });
        await s.timeout(5000).emitWithAck("$join", r);
        const reply = await s.timeout(5000).emitWithAck("$members", r);
        return reply.members.map((m) => m.user);
      } finally {
        s.close();
      }
    }, room);
    assert.deepEqual(members, ["ann", "ann"]);

    // The watcher's rooms page counts ann without a reload.
    await shows(watcher, countOf(watcher, room), "[ 1 User ]", `${room}'s count`);

    // bob sees the room on his rooms page, names himself and joins it by its link.
    const bob = await openUser("bob");
    await shows(bob, countOf(bob, room), "[ 1 User ]", `${room}'s count`);
    await bob.page.getByLabel("Your nickname").fill("bob");
    await bob.page.getByRole("button", { name: "Save" }).click();
    await bob.page.getByRole("link", { name: `Join ${room}` }).click();
    await shows(bob, log(bob), "Hello bob", "the greeting");
    await shows(ann, log(ann), "bob has joined the room.", "the joined announcement");
    await shows(ann, ann.page.locator("#status"), `In ${room} · 2 users`, "the status");
    await shows(watcher, countOf(watcher, room), "[ 2 Users ]", `${room}'s count`);

    // Messages: ann gets bob's, bob gets his own copy.
    await bob.page.getByLabel("Message", { exact: true }).fill("hi ann");
    await bob.page.getByRole("button", { name: "Send" }).click();
    await shows(ann, ann.page.locator("#messages .userMessage"), "hi ann", "bob's message");
    assert.equal(await ann.page.locator("#messages .userMessage .name").first().textContent(), "bob:");
    await shows(bob, bob.page.locator("#messages .myMessage"), "hi ann", "bob's own copy");

    // bob closes his tab: ann is told, the watcher's count drops.
    await bob.page.close();
    await shows(ann, log(ann), "bob has left the room.", "the left announcement");
    await shows(watcher, countOf(watcher, room), "[ 1 User ]", `${room}'s count after bob left`);
    assert.equal(await log(ann).filter({ hasText: "has joined the room." }).count(), 1, "one joined announcement (not one per namespace, nor for the rooms pages)");

    const file = join(shotDir, "chat-rooms.png");
    await watcher.page.screenshot({ path: file, animations: "disabled" });
    await ann.page.screenshot({ path: join(shotDir, "chat-room.png"), animations: "disabled" });
    assert.equal(readFileSync(file).subarray(1, 4).toString("latin1"), "PNG");

    // ann leaves too: the room is gone from the list.
    await ann.page.close();
    await shows(watcher, watcher.page.locator("#status"), "No rooms yet", "the status once the room emptied");
    assert.equal(await countOf(watcher, room).count(), 0);
    for (const user of Object.values(users)) assert.deepEqual(user.errors, [], `${user.name}'s page logged errors`);
  });
});

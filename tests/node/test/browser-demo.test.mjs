// The built-in demo chat page (static/index.html, served at "/") in a real browser, as the
// README promises: two tabs pick a nickname and a room through the page's own form and talk,
// with the socket.io client bundle iorelay serves itself (no CDN, nothing beyond the relay).
// The relay runs config/default.toml, whose "/" recovers dropped connections: one tab loses
// its network (Chromium's offline emulation, for that tab only) while the other writes, and
// comes back with the same session and every missed message, in order, once, without
// joining the room again; after the relay restarts (nothing left to recover) both tabs say
// "New session" and join again; put out by the server API, they say so.
//
// The browser is Debian's Chromium (/usr/bin/chromium, package "chromium"; .ci/run installs
// it), driven through playwright-core, which never downloads a browser of its own. A machine
// without it FAILS this file with instructions: it is never skipped.
//
// Every wait is bounded (WAIT_MS); the tests run in order and share the two tabs.
// Screenshots of both tabs go to a temp dir that is removed afterwards, unless
// TEST_IORELAY_SCREENSHOTS names a directory to keep them in.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startDaemon, stopDaemon } from "../lib/admin.mjs";
import { repoRoot, TEST_TOKEN } from "../lib/spawn.mjs";

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const WAIT_MS = 10000;
const ROOM = "garden";

let relay;
let context;
let profileDir;
let shotDir;
let keepShots = false;
/** One entry per tab: { name, page, requests: [url], sockets: [url], responses: Map, errors: [] } */
const tabs = {};

/** Open the demo page in a new tab and record everything it asks the network for. */
async function openTab(name, page) {
  const tab = { name, page, requests: [], sockets: [], responses: new Map(), errors: [] };
  page.on("request", (req) => tab.requests.push(req.url()));
  page.on("websocket", (ws) => tab.sockets.push(ws.url()));
  page.on("response", (res) => {
    tab.responses.set(res.url(), res.status());
    if (res.status() >= 400) tab.errors.push(`HTTP ${res.status()}: ${res.url()}`);
  });
  page.on("pageerror", (err) => tab.errors.push(`pageerror: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() !== "error") return;
    // The page names no icon, so Chromium asks for /favicon.ico, which the relay answers 404
    // (logged as a console error). Harmless; a `<link rel="icon" href="data:,">` in the
    // page would end it. Any other console error counts.
    if (msg.location().url === `${relay.url}/favicon.ico`) return;
    tab.errors.push(`console.error: ${msg.text()} (${msg.location().url})`);
  });
  const res = await page.goto(`${relay.url}/`, { waitUntil: "load", timeout: WAIT_MS });
  assert.equal(res.status(), 200, `GET / answered ${res.status()}`);
  tabs[name] = tab;
  return tab;
}

/** What the page's message log shows now, for failure messages. */
async function logText(page) {
  const lines = await page
    .getByRole("log", { name: "Messages" })
    .locator("li")
    .evaluateAll((lis) => lis.map((li) => `[${li.className}] ${li.textContent}`));
  const status = await page.getByRole("status").textContent();
  return `status: ${status}\nlog:\n  ${lines.join("\n  ") || "(empty)"}`;
}

/**
 * Wait until the tab's log shows a line of class `kind` containing `text` (and, when `who`
 * is given, attributed to `who`); resolve to that line's locator.
 */
async function waitForLine(tab, kind, text, who) {
  const line = tab.page
    .getByRole("log", { name: "Messages" })
    .locator(`li.${kind}`)
    .filter({ hasText: text });
  try {
    await line.first().waitFor({ state: "visible", timeout: WAIT_MS });
  } catch (err) {
    throw new Error(
      `${tab.name}'s tab: no ${kind} line with ${JSON.stringify(text)} within ${WAIT_MS}ms\n${await logText(tab.page)}`,
      { cause: err },
    );
  }
  assert.equal(await line.count(), 1, `${tab.name}'s tab shows ${JSON.stringify(text)} more than once\n${await logText(tab.page)}`);
  if (who !== undefined) {
    assert.equal(await line.locator(".who").textContent(), `${who}:`, `who said ${JSON.stringify(text)} in ${tab.name}'s tab`);
  }
  return line;
}

/** Wait until a locator's text contains `text`, with the tab's state in the failure. */
async function waitForText(tab, locator, text, what) {
  try {
    await locator.filter({ hasText: text }).waitFor({ state: "visible", timeout: WAIT_MS });
  } catch (err) {
    throw new Error(
      `${tab.name}'s tab: ${what} never showed ${JSON.stringify(text)} within ${WAIT_MS}ms ` +
        `(it shows ${JSON.stringify(await locator.textContent())})\n${await logText(tab.page)}`,
      { cause: err },
    );
  }
}

/** Fill the page's own entry form, the way a person would, and submit it. */
async function enterRoom(tab, nickname, room) {
  const { page } = tab;
  await page.getByLabel("Nickname", { exact: true }).fill(nickname);
  await page.getByLabel("Room", { exact: true }).fill(room);
  await page.getByRole("button", { name: "Enter", exact: true }).click();
  await page.getByRole("heading", { name: `#${room} as ${nickname}`, exact: true }).waitFor({ timeout: WAIT_MS });
}

/** Type a message into the page's message box and press Send. */
async function say(tab, text) {
  const box = tab.page.getByLabel("Message", { exact: true });
  await box.fill(text);
  await tab.page.getByRole("button", { name: "Send", exact: true }).click();
}

/**
 * Take one tab off the network, or put it back: Chromium's offline emulation through the
 * DevTools protocol, for that tab alone (playwright's context.setOffline would cut both).
 * The page sees the browser's "offline" event, on which the socket.io client closes its
 * transport ("transport close") and keeps trying to reconnect, failing until it is back.
 */
async function setOffline(tab, offline) {
  tab.cdp ??= await context.newCDPSession(tab.page);
  await tab.cdp.send("Network.emulateNetworkConditions", { offline, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
}

/** The tab's log lines as "text", from line `from` on. */
async function linesFrom(tab, from = 0) {
  return (await tab.page.locator("#log li").allTextContents()).slice(from);
}

const NO_CHROMIUM =
  `${CHROMIUM} is missing: the browser tests need Debian's Chromium. Install it with ` +
  "`apt-get update && apt-get install -y chromium` (.ci/run does this on CI). " +
  "Do not let playwright download a browser of its own.";

// A machine without the browser FAILS here (counted as a failure, never skipped); the
// suite below is then cancelled by its before hook with the same message.
it(`Debian's Chromium is installed at ${CHROMIUM}`, () => {
  assert.ok(existsSync(CHROMIUM), NO_CHROMIUM);
});

describe("demo page in a real browser (Debian chromium, two tabs)", () => {
  before(async () => {
    assert.ok(existsSync(CHROMIUM), NO_CHROMIUM);
    const { chromium } = await import("playwright-core");
    // What `cargo run` in a checkout serves: "/" with join any, route rooms, presence and
    // recovery on (the test profile is not beside the copy; the environment gives ports).
    relay = await startDaemon(readFileSync(join(repoRoot, "config", "default.toml"), "utf8"));
    profileDir = mkdtempSync(join(tmpdir(), "iorelay-chromium-"));
    keepShots = Boolean(process.env.TEST_IORELAY_SCREENSHOTS);
    shotDir = keepShots ? process.env.TEST_IORELAY_SCREENSHOTS : mkdtempSync(join(tmpdir(), "iorelay-shots-"));
    mkdirSync(shotDir, { recursive: true });
    context = await chromium.launchPersistentContext(profileDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 900, height: 720 },
      colorScheme: "light",
      timeout: 30000,
    });
    context.setDefaultTimeout(WAIT_MS);
    context.setDefaultNavigationTimeout(WAIT_MS);
  });

  after(async () => {
    // Each step on its own, so one failure does not leave the rest running.
    if (context) await context.close().catch(() => {});
    if (relay) await stopDaemon(relay).catch(() => {});
    if (profileDir) rmSync(profileDir, { recursive: true, force: true });
    if (shotDir && !keepShots) rmSync(shotDir, { recursive: true, force: true });
  });

  it("serves the page and its socket.io bundle from the relay, with a labelled entry form", async () => {
    // A persistent context opens with one blank tab: that is ann's; bob gets a second one.
    const first = context.pages()[0] ?? (await context.newPage());
    for (const [name, page] of [["ann", first], ["bob", await context.newPage()]]) {
      const tab = await openTab(name, page);
      assert.equal(await page.title(), "iorelay demo chat");
      await page.getByRole("heading", { name: "iorelay demo chat", level: 1 }).waitFor();
      const bundle = `${relay.url}/socket.io/socket.io.min.js`;
      assert.ok(tab.requests.includes(bundle), `${name}'s tab did not request ${bundle}; it asked for: ${tab.requests.join(", ")}`);
      assert.equal(tab.responses.get(bundle), 200, `${bundle} answered ${tab.responses.get(bundle)}`);
      assert.equal(await page.evaluate(() => typeof window.io), "function", "the bundle defines io()");
      // The form is usable by its labels and roles, as assistive technology sees it.
      assert.equal(await page.getByLabel("Nickname", { exact: true }).inputValue(), "");
      assert.equal(await page.getByLabel("Room", { exact: true }).inputValue(), "lobby");
      assert.ok(await page.getByRole("button", { name: "Enter", exact: true }).isEnabled());
      assert.equal(await page.getByRole("log", { name: "Messages" }).isVisible(), false, "the chat is hidden before entering");
    }
  });

  it("ann and bob enter the same room through the form and see each other", async () => {
    const { ann, bob } = tabs;
    assert.ok(ann && bob, "the tabs were opened by the previous test");

    await enterRoom(ann, "ann", ROOM);
    await waitForLine(ann, "info", `You joined #${ROOM} (1 person here).`);
    await waitForText(ann, ann.page.getByRole("status"), "Connected · 1 person here", "the status");
    assert.equal(await ann.page.getByLabel("Nickname", { exact: true }).isVisible(), false, "the entry form is hidden once in");

    await enterRoom(bob, "bob", ROOM);
    await waitForLine(bob, "info", `You joined #${ROOM} (2 people here).`);
    await waitForText(bob, bob.page.getByRole("status"), "Connected · 2 people here", "the status");
    // bob joined second: he learns about ann from the member list...
    await waitForText(bob, bob.page.getByText(/^Here: /), "Here: ann, bob", "the member list");
    // ...and ann hears of bob through $presence.
    await waitForLine(ann, "presence", "bob joined (2 people here).");
    await waitForText(ann, ann.page.getByRole("status"), "Connected · 2 people here", "the status");
    await waitForText(ann, ann.page.getByText(/^Here: /), "Here: ann, bob", "the member list");
  });

  it("ann's message reaches bob (and ann's own copy shows in her tab); bob's reply reaches ann", async () => {
    const { ann, bob } = tabs;
    assert.ok(ann && bob, "the tabs were opened by the previous tests");

    await say(ann, "hello bob, tea in the garden?");
    await waitForLine(bob, "theirs", "hello bob, tea in the garden?", "ann");
    await waitForLine(ann, "mine", "hello bob, tea in the garden?", "ann (you)");
    assert.equal(await ann.page.getByLabel("Message", { exact: true }).inputValue(), "", "the message box is cleared after sending");

    await say(bob, "yes please, ann!");
    await waitForLine(ann, "theirs", "yes please, ann!", "bob");
    await waitForLine(bob, "mine", "yes please, ann!", "bob (you)");

    // Echo is off by default: nobody sees their own message twice, nor an error.
    for (const tab of [ann, bob]) {
      assert.equal(await tab.page.locator("#log li.error").count(), 0, `${tab.name}'s tab shows an error\n${await logText(tab.page)}`);
      assert.deepEqual(tab.errors, [], `${tab.name}'s tab logged errors`);
    }
    // The order each tab shows is the order things happened.
    const annLines = await ann.page.locator("#log li").allTextContents();
    assert.deepEqual(annLines, [
      `You joined #${ROOM} (1 person here).`,
      "bob joined (2 people here).",
      "ann (you):hello bob, tea in the garden?",
      "bob:yes please, ann!",
    ]);
    const bobLines = await bob.page.locator("#log li").allTextContents();
    assert.deepEqual(bobLines, [
      `You joined #${ROOM} (2 people here).`,
      "ann:hello bob, tea in the garden?",
      "bob (you):yes please, ann!",
    ]);
  });

  it("bob's tab loses its network while ann writes; back online it shows 'recovered' and the missed messages, in order, once", async (t) => {
    const { ann, bob } = tabs;
    assert.ok(ann && bob, "the tabs were opened by the previous tests");
    const bobStatus = bob.page.getByRole("status");
    const bobFrom = (await linesFrom(bob)).length;
    const bobErrors = bob.errors.length;

    await setOffline(bob, true);
    await waitForText(bob, bobStatus, "Reconnecting…", "the status");
    await waitForLine(bob, "info", "Connection lost (transport close); reconnecting…");

    // Each acked by the relay (ann's "mine" line appears on the ack): the relay has them
    // all before bob's tab is back.
    const missed = ["are you still there, bob?", "the kettle is on", "third time lucky"];
    for (const text of missed) {
      await say(ann, text);
      await waitForLine(ann, "mine", text, "ann (you)");
    }

    await setOffline(bob, false);
    // The reconnect waits out the client's backoff (at most its 5 s cap, plus a retry).
    await waitForText(bob, bobStatus, "Recovered — 3 missed messages delivered", "the status");
    for (const text of missed) {
      const got = await waitForLine(bob, "theirs", text, "ann");
      assert.match(await got.getAttribute("class"), /\bmissed\b/, `${JSON.stringify(text)} is marked as missed`);
    }
    // In order, each once, and no $join again: the relay restored the room membership.
    assert.deepEqual(await linesFrom(bob, bobFrom), [
      "Connection lost (transport close); reconnecting…",
      ...missed.map((text) => `ann:${text}`),
      "Back with the same session: 3 missed messages delivered.",
    ]);
    await waitForText(bob, bobStatus, "Recovered — 3 missed messages delivered · 2 people here", "the status");
    await waitForText(bob, bob.page.getByText(/^Here: /), "Here: ann, bob", "the member list");
    await waitForText(ann, ann.page.getByRole("status"), "2 people here", "the status");
    await waitForText(ann, ann.page.getByText(/^Here: /), "Here: ann, bob", "the member list");

    // Still in the room, both ways, and what comes now is not counted as missed.
    await say(ann, "welcome back");
    const live = await waitForLine(bob, "theirs", "welcome back", "ann");
    assert.doesNotMatch(await live.getAttribute("class"), /\bmissed\b/);
    await say(bob, "all caught up, thanks");
    await waitForLine(ann, "theirs", "all caught up, thanks", "bob");
    await waitForLine(bob, "mine", "all caught up, thanks", "bob (you)");

    // While offline, Chromium logs each failed reconnect attempt; nothing else may appear.
    const during = bob.errors.slice(bobErrors).filter((e) => !/ERR_INTERNET_DISCONNECTED/.test(e));
    assert.deepEqual(during, [], "bob's tab logged errors besides the failed attempts while offline");
    assert.deepEqual(ann.errors, [], "ann's tab logged errors");
    const shot = join(shotDir, "demo-bob-recovered.png");
    await bob.page.screenshot({ path: shot, fullPage: true, timeout: WAIT_MS });
    t.diagnostic(`bob's tab, recovered: ${shot}${keepShots ? "" : " (removed afterwards; set TEST_IORELAY_SCREENSHOTS=DIR to keep)"}`);
  });

  it("with nothing to recover (the relay restarted), both tabs say 'New session', join again and talk", async () => {
    const { ann, bob } = tabs;
    assert.ok(ann && bob, "the tabs were opened by the previous tests");
    const from = { ann: (await linesFrom(ann)).length, bob: (await linesFrom(bob)).length };
    const errors = { ann: ann.errors.length, bob: bob.errors.length };
    // A new relay process on the same address: the old one's parked sockets and events
    // went with it, and it does not know their pids. (The address was ours a moment ago;
    // the pages must find the relay where they left it.)
    const text = readFileSync(join(repoRoot, "config", "default.toml"), "utf8");
    const addr = relay.publicAddr;
    await stopDaemon(relay);
    relay = await startDaemon(text, { env: { IORELAY_SERVER__LISTEN: addr } });

    for (const tab of [ann, bob]) {
      await waitForLine(tab, "info", "Reconnected as a new session: messages sent while you were away are not shown.");
      await waitForText(tab, tab.page.getByRole("status"), "New session", "the status");
    }
    for (const tab of [ann, bob]) {
      await waitForText(tab, tab.page.getByRole("status"), "New session · 2 people here", "the status");
      await waitForText(tab, tab.page.getByText(/^Here: /), "Here: ann, bob", "the member list");
      // The count and the list may come from the other tab's presence before this tab's
      // own $join is answered: wait for that answer's line too.
      const joined = tab.page
        .locator("#log li.info")
        .filter({ hasText: `You joined #${ROOM} (` })
        .nth(1);
      await joined.waitFor({ state: "visible", timeout: WAIT_MS });
      const lines = await linesFrom(tab, from[tab.name]);
      assert.match(lines[0], /^Connection lost \(transport (close|error)\); reconnecting…$/, JSON.stringify(lines));
      assert.equal(lines.filter((l) => l.startsWith(`You joined #${ROOM} (`)).length, 1, JSON.stringify(lines));
    }
    await say(bob, "new session, same garden");
    await waitForLine(ann, "theirs", "new session, same garden", "bob");
    // While the relay was down, Chromium logged each refused reconnect attempt.
    for (const tab of [ann, bob]) {
      const other = tab.errors.slice(errors[tab.name]).filter((e) => !/ERR_CONNECTION_REFUSED/.test(e));
      assert.deepEqual(other, [], `${tab.name}'s tab logged errors besides the refused attempts`);
    }
  });

  it("the pages talked to the relay only: no CDN, no other host", async () => {
    const origin = new URL(relay.url);
    for (const tab of Object.values(tabs)) {
      assert.ok(tab.requests.length > 0, `${tab.name}'s tab made no request at all`);
      const elsewhere = tab.requests.filter((u) => new URL(u).origin !== origin.origin);
      assert.deepEqual(elsewhere, [], `${tab.name}'s tab asked hosts other than the relay (${origin.origin})`);
      // socket.io upgrades from long-polling to a WebSocket: that goes to the relay too.
      const wsElsewhere = tab.sockets.filter((u) => new URL(u).host !== origin.host);
      assert.deepEqual(wsElsewhere, [], `${tab.name}'s tab opened WebSockets to other hosts`);
      assert.ok(
        tab.requests.some((u) => u.startsWith(`${relay.url}/socket.io/?EIO=4&transport=polling`)),
        `${tab.name}'s tab never reached the relay's Engine.IO endpoint: ${tab.requests.join(", ")}`,
      );
    }
  });

  it("screenshots of both tabs", async (t) => {
    for (const tab of Object.values(tabs)) {
      const file = join(shotDir, `demo-${tab.name}.png`);
      await tab.page.screenshot({ path: file, fullPage: true, timeout: WAIT_MS });
      const png = readFileSync(file);
      assert.ok(png.length > 5000, `${file} is only ${png.length} bytes`);
      assert.equal(png.subarray(1, 4).toString("latin1"), "PNG", `${file} is not a PNG`);
      t.diagnostic(`${tab.name}'s tab: ${file}${keepShots ? "" : " (removed afterwards; set TEST_IORELAY_SCREENSHOTS=DIR to keep)"}`);
    }
  });

  it("put out by the relay (the server API's disconnect), a tab says so instead of 'reconnecting'", async () => {
    const { ann, bob } = tabs;
    assert.ok(ann && bob, "the tabs were opened by the previous tests");
    const res = await fetch(`${relay.adminUrl}/api/v1/disconnect`, {
      method: "POST",
      headers: { Authorization: `Bearer ${TEST_TOKEN}`, "Content-Type": "application/json" },
      body: JSON.stringify({ namespace: "/", rooms: [ROOM] }),
    });
    const body = await res.json();
    assert.deepEqual(body, { ok: true, disconnected: 2 });
    for (const tab of [ann, bob]) {
      await waitForLine(tab, "info", "The relay disconnected you; Leave and Enter to come back.");
      await waitForText(tab, tab.page.getByRole("status"), "Disconnected by the relay", "the status");
    }
  });
});

// The stream-search example (examples/stream: seed 004) end to end in headless Chromium:
// the relay runs the example's iorelay.toml and serves its pages, examples/stream/backend.py
// (Python standard library) learns the watched terms from the relay's signed webhooks and
// pushes items into their rooms through POST /api/v1/emit, and two browser contexts (two
// users, separate cookie jars) use the page's own form and buttons:
//
// - two viewers watching different terms get only their own term's items;
// - switching term moves the feed (the list holds the new term's items only);
// - pause stops items appearing while another viewer of the same term keeps getting
//   them, and resume brings them back, the missed ones included (room history);
// - once the last viewer of a term leaves, the backend stops pushing into its room
//   (room.vacated), and starts again when someone watches it (room.occupied);
// - a page cannot emit into the rooms itself (route = "none").
//
// The backend gets a port found free (the relay must be told its webhook URL before the
// backend can be told the relay's admin address) and is killed by its pid at the end, as
// are the relay and the browser. Nothing sleeps: every wait is for a page state, a log
// line or the backend's /status, bounded by WAIT_MS. Screenshots of both users' pages
// go to a temp dir that is removed afterwards, unless TEST_IORELAY_SCREENSHOTS names a
// directory to keep them in.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startDaemon, stopDaemon, get } from "../lib/admin.mjs";
import { freePort, repoRoot, TEST_TOKEN } from "../lib/spawn.mjs";

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const WAIT_MS = 10000;
const EXAMPLE = join(repoRoot, "examples", "stream");
/** Items this many backend ticks apart prove "the backend kept going meanwhile". */
const TICKS = 3;

let relay;
let backend;
let browser;
let shotDir;
let keepShots = false;
/** name -> { page, errors } */
const users = {};

/** Start backend.py on `port`, talking to the relay's admin listener; resolves once it listens. */
async function startBackend(port, adminUrl) {
  const child = spawn("python3", [join(EXAMPLE, "backend.py"), "--listen", `127.0.0.1:${port}`, "--api", adminUrl, "--interval", "0.1", "--resync", "30"], {
    env: { ...process.env, IORELAY_TOKEN: TEST_TOKEN, PYTHONUNBUFFERED: "1" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const exited = new Promise((resolve) => child.on("exit", resolve));
  child.stdout.setEncoding("utf8").on("data", (c) => (output += c));
  child.stderr.setEncoding("utf8").on("data", (c) => (output += c));
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`backend.py did not listen within ${WAIT_MS}ms:\n${output}`)), WAIT_MS);
    const look = () => {
      if (/stream backend listening on/.test(output)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout.on("data", look);
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`backend.py exited (${code}):\n${output}`));
    });
    look();
  });
  return {
    url: `http://127.0.0.1:${port}`,
    logs: () => output,
    async status() {
      const res = await fetch(`http://127.0.0.1:${port}/status`, { signal: AbortSignal.timeout(WAIT_MS) });
      return res.json();
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        process.kill(child.pid, "SIGKILL");
        await exited;
      }
    },
  };
}

/** Poll the backend's /status until `pred` holds; resolves with that status. */
async function backendUntil(pred, what) {
  const deadline = Date.now() + WAIT_MS;
  let last;
  for (;;) {
    last = await backend.status();
    if (pred(last)) return last;
    if (Date.now() > deadline) throw new Error(`backend: ${what} not within ${WAIT_MS}ms; last /status: ${JSON.stringify(last)}\nbackend log:\n${backend.logs()}`);
    // A polling interval, not a guess: the loop ends as soon as the state is there.
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A user: a browser context of its own with the example page open. */
async function openUser(name) {
  const context = await browser.newContext({ viewport: { width: 900, height: 600 }, colorScheme: "light" });
  context.setDefaultTimeout(WAIT_MS);
  const page = await context.newPage();
  const user = { name, context, page, errors: [] };
  page.on("pageerror", (err) => user.errors.push(`pageerror: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error") user.errors.push(`console.error: ${msg.text()}`);
  });
  const res = await page.goto(`${relay.url}/index.html`, { waitUntil: "load" });
  assert.equal(res.status(), 200);
  await page.locator("#status").filter({ hasText: "Pick a term to watch." }).waitFor();
  users[name] = user;
  return user;
}

/** The items the page lists now: [{ id, term, seq }], newest first. */
function items(user) {
  return user.page.locator("#items li").evaluateAll((lis) => lis.map((li) => ({ id: li.dataset.id, term: li.dataset.term, seq: Number(li.dataset.seq) })));
}

/** What the page shows, for failure messages. */
async function pageState(user) {
  const status = await user.page.locator("#status").textContent();
  return `${user.name}'s page: status ${JSON.stringify(status)}, room ${JSON.stringify(await user.page.evaluate(() => document.body.dataset.room))}, items ${JSON.stringify(await items(user))}`;
}

/**
 * Wait until the page's list satisfies `pred(items, arg)` (run in the page: it may use
 * nothing but its arguments); resolves with the items.
 */
async function itemsUntil(user, pred, what, arg = null) {
  try {
    await user.page.waitForFunction(
      ([src, a]) => {
        const list = [...document.querySelectorAll("#items li")].map((li) => ({ id: li.dataset.id, term: li.dataset.term, seq: Number(li.dataset.seq) }));
        return (0, eval)(`(${src})`)(list, a);
      },
      [pred.toString(), arg],
      { timeout: WAIT_MS, polling: 25 },
    );
  } catch (err) {
    throw new Error(`${what}: not within ${WAIT_MS}ms\n${await pageState(user)}\nbackend log:\n${backend.logs()}`, { cause: err });
  }
  return items(user);
}

/** Type a term into the page's form and press Watch; resolves once the relay has the page in its room. */
async function watch(user, term) {
  await user.page.getByLabel("Search term", { exact: true }).fill(term);
  await user.page.getByRole("button", { name: "Watch", exact: true }).click();
  await user.page.locator(`body[data-room="${term}"]`).waitFor({ state: "attached" });
  await user.page.getByRole("heading", { name: `Items for “${term}”` }).waitFor();
}

/** Press Pause (or Resume) and wait until the relay confirmed the move. */
async function toggle(user, label, room) {
  await user.page.getByRole("button", { name: label, exact: true }).click();
  await user.page.locator(`body[data-room="${room}"]`).waitFor({ state: "attached" });
}

const maxSeq = (list) => Math.max(0, ...list.map((i) => i.seq));

const NO_CHROMIUM =
  `${CHROMIUM} is missing: the browser tests need Debian's Chromium. Install it with ` +
  "`apt-get update && apt-get install -y chromium` (.ci/run does this on CI). " +
  "Do not let playwright download a browser of its own.";

it(`Debian's Chromium is installed at ${CHROMIUM}`, () => {
  assert.ok(existsSync(CHROMIUM), NO_CHROMIUM);
});

describe("examples/stream: stream search in a real browser (two users, backend.py)", () => {
  before(async () => {
    assert.ok(existsSync(CHROMIUM), NO_CHROMIUM);
    const { chromium } = await import("playwright-core");
    const hookPort = await freePort();
    relay = await startDaemon(readFileSync(join(EXAMPLE, "iorelay.toml"), "utf8"), {
      env: {
        IORELAY_SERVER__STATIC_DIR: join(EXAMPLE, "public"),
        IORELAY_WEBHOOKS__URL: `http://127.0.0.1:${hookPort}/hooks`,
        // Deliveries that find the backend not yet listening are retried soon.
        IORELAY_WEBHOOKS__BACKOFF: "50ms",
        IORELAY_WEBHOOKS__LINGER: "10ms",
      },
    });
    backend = await startBackend(hookPort, relay.adminUrl);
    keepShots = Boolean(process.env.TEST_IORELAY_SCREENSHOTS);
    shotDir = keepShots ? process.env.TEST_IORELAY_SCREENSHOTS : mkdtempSync(join(tmpdir(), "iorelay-shots-"));
    mkdirSync(shotDir, { recursive: true });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30000 });
  });

  after(async () => {
    // Each step on its own, so that one failure does not leave the rest running.
    if (browser) await browser.close().catch(() => {});
    if (backend) await backend.stop().catch(() => {});
    if (relay) await stopDaemon(relay).catch(() => {});
    if (shotDir && !keepShots) rmSync(shotDir, { recursive: true, force: true });
  });

  it("two users watching different terms get only their own term's items", async () => {
    const ann = await openUser("ann");
    const bob = await openUser("bob");
    await watch(ann, "rust");
    await watch(bob, "python");
    await backendUntil((s) => s.terms.includes("rust") && s.terms.includes("python"), "rust and python watched (room.occupied)");
    const annItems = await itemsUntil(ann, (list) => list.length >= 3, "3 items on ann's page");
    const bobItems = await itemsUntil(bob, (list) => list.length >= 3, "3 items on bob's page");
    assert.deepEqual([...new Set(annItems.map((i) => i.term))], ["rust"], await pageState(ann));
    assert.deepEqual([...new Set(bobItems.map((i) => i.term))], ["python"], await pageState(bob));
    // Newest first, each once.
    assert.deepEqual(annItems.map((i) => i.seq), [...annItems.map((i) => i.seq)].sort((a, b) => b - a));
    assert.equal(new Set(annItems.map((i) => i.id)).size, annItems.length);
    // The rendered text is the item's, with the term in it.
    const text = await ann.page.locator("#items li .text").first().textContent();
    assert.match(text, /rust/);
  });

  it("switching term moves the feed to the new term's items only", async () => {
    const { ann } = users;
    assert.ok(ann, "opened by the previous test");
    await watch(ann, "go");
    const list = await itemsUntil(ann, (l) => l.length >= 3 && l.every((i) => i.term === "go"), "3 items of go, nothing else, on ann's page");
    assert.ok(list.every((i) => i.term === "go"), await pageState(ann));
    // The next items are go's too (the old room was left before the new one was joined).
    const after = await itemsUntil(ann, (l) => l.length >= 5, "5 items on ann's page");
    assert.deepEqual([...new Set(after.map((i) => i.term))], ["go"], await pageState(ann));
  });

  it("the backend stops pushing into a room once its last viewer has left (room.vacated)", async () => {
    // ann was rust's only viewer: her switch emptied the room.
    const vacated = await backendUntil((s) => !s.terms.includes("rust"), "rust no longer watched (room.vacated)");
    // A tick that was under way when the webhook came may still push into rust; the one
    // after it started once rust was gone.
    const settled = await backendUntil((s) => s.ticks >= vacated.ticks + 2, "two more ticks");
    const pushedThen = settled.pushed.rust;
    // The backend keeps ticking for go and python...
    await backendUntil((s) => s.ticks >= settled.ticks + TICKS && s.pushed.go >= settled.pushed.go + TICKS, `${TICKS} more ticks with go items`);
    // ...and has pushed nothing more into rust, as the relay's own history of the room shows.
    const now = await backend.status();
    assert.equal(now.pushed.rust, pushedThen, JSON.stringify(now));
    const history = await get(`${relay.adminUrl}/api/v1/rooms/rust/history?namespace=/stream&limit=100`);
    assert.equal(history.status, 200, history.text);
    const last = JSON.parse(history.text).events.at(-1).args[0];
    const before = await get(`${relay.adminUrl}/api/v1/rooms/go/history?namespace=/stream&limit=1`);
    const lastGo = JSON.parse(before.text).events.at(-1).args[0];
    assert.ok(last.seq < lastGo.seq - TICKS, `rust's last item (seq ${last.seq}) is older than go's latest ones (seq ${lastGo.seq})`);
  });

  it("pause stops items appearing while another viewer still gets them; resume brings them back", async () => {
    const { ann, bob } = users;
    assert.ok(ann && bob, "opened by the first test");
    // ann opens a second tab on bob's term, so that python keeps flowing while bob pauses.
    const annTab = { name: "ann's second tab", page: await ann.context.newPage(), errors: [] };
    users.annTab = annTab;
    await annTab.page.goto(`${relay.url}/index.html`, { waitUntil: "load" });
    await watch(annTab, "python");

    // Room for everything that comes in while paused, and a bit more, on resume.
    await bob.page.getByLabel("Items to show").fill("20");
    assert.equal(await bob.page.locator("#limit_value").textContent(), "20");
    await toggle(bob, "Pause", "");
    await bob.page.locator("#status").filter({ hasText: "Paused" }).waitFor();
    assert.equal(await bob.page.getByRole("button", { name: "Resume", exact: true }).getAttribute("aria-pressed"), "true");
    const frozen = await items(bob);
    const pausedAt = maxSeq(frozen);
    // python is still watched (by ann's tab): the backend keeps pushing into it.
    const st = await backend.status();
    assert.ok(st.terms.includes("python"), JSON.stringify(st));
    const tabItems = await itemsUntil(annTab, (l, seq) => l.filter((i) => i.seq > seq).length >= 3, "3 python items in ann's tab after bob paused", pausedAt);
    const whilePaused = tabItems.filter((i) => i.seq > pausedAt);
    // bob's page shows none of them: the same list as when he paused.
    assert.deepEqual(await items(bob), frozen, await pageState(bob));

    await toggle(bob, "Resume", "python");
    await bob.page.locator("#status").filter({ hasText: "Watching “python” · live" }).waitFor();
    // What came in while paused shows up (the room's history, up to "Items to show")...
    const caughtUp = await itemsUntil(bob, (l, seq) => l.some((i) => i.seq > seq), "items after resume", pausedAt);
    const ids = new Set(caughtUp.map((i) => i.id));
    // (All of them that fit: the newest, and every one at least as new as the oldest shown.)
    const oldest = Math.min(...caughtUp.map((i) => i.seq));
    const expected = whilePaused.filter((i) => i.seq >= oldest);
    assert.ok(expected.some((i) => i.seq === maxSeq(whilePaused)), `bob's page lacks the newest item pushed while he was paused: ${await pageState(bob)}`);
    for (const item of expected) assert.ok(ids.has(item.id), `bob's page lacks ${item.id} (seq ${item.seq}), pushed while he was paused: ${await pageState(bob)}`);
    // ...and new items flow again.
    const top = maxSeq(await items(annTab));
    await itemsUntil(bob, (l, seq) => l.some((i) => i.seq > seq), "a new item after resume", top);
    assert.deepEqual([...new Set((await items(bob)).map((i) => i.term))], ["python"]);
  });

  it("a paused last viewer empties the room: the backend stops, and starts again on resume", async () => {
    const { bob, annTab } = users;
    await annTab.page.close();
    await toggle(bob, "Pause", "");
    await backendUntil((s) => !s.terms.includes("python"), "python no longer watched once bob paused and ann's tab closed");
    await toggle(bob, "Resume", "python");
    const s = await backendUntil((st) => st.terms.includes("python"), "python watched again (room.occupied)");
    const top = maxSeq(await items(bob));
    await itemsUntil(bob, (l, seq) => l.some((i) => i.seq > seq), "a new python item after resuming", top);
    assert.ok(s.terms.includes("go"));
  });

  it("a page cannot emit into the rooms (route = \"none\")", async () => {
    const { bob } = users;
    const reply = await bob.page.evaluate(async () => {
      const s = io("/stream", { forceNew: true });
      try {
        await new Promise((resolve, reject) => {
          s.on("connect", resolve);
          s.on("connect_error", reject);
        });
        return await s.timeout(5000).emitWithAck("item", { id: "forged", term: "python", seq: 1e12, text: "forged" });
      } finally {
        s.close();
      }
    });
    assert.equal(reply.ok, false, JSON.stringify(reply));
    assert.equal(await bob.page.locator('#items li[data-id="forged"]').count(), 0);
  });

  it("screenshots of both users' pages, and no page errors", async (t) => {
    for (const user of [users.ann, users.bob]) {
      assert.deepEqual(user.errors, [], `${user.name}'s page logged errors`);
      // No item caught halfway through its fade-in.
      await user.page.addStyleTag({ content: ".item { animation: none !important; }" });
      const file = join(shotDir, `stream-${user.name}.png`);
      await user.page.screenshot({ path: file, fullPage: false, animations: "disabled" });
      const png = readFileSync(file);
      assert.equal(png.subarray(1, 4).toString("latin1"), "PNG", `${file} is not a PNG`);
      t.diagnostic(`${user.name}'s page: ${file}${keepShots ? "" : " (removed afterwards; set TEST_IORELAY_SCREENSHOTS=DIR to keep)"}`);
    }
  });
});

// The "right now" app (seed 003) as its users see it: examples/right-now (iorelay.toml,
// public/ and backend.py) with the real binary, in headless Chromium (Debian's, through
// playwright-core), one browser context per person.
//
// - the config passes `iorelay check-config`;
// - ann and bob join through the page's form: each gets the relay's welcome, sees how
//   many people are here, and ann sees bob connect;
// - a message from one reaches the other, and its sender's own copy shows as theirs;
// - backend.py, started here against the admin listener with a server API token, pushes
//   every second and both pages show the pushes; it is stopped by its PID; with a wrong
//   token it says that the relay answered 401;
// - a page that lies about who it is shows under its connection's name, as text;
// - another origin is refused;
// - bob closes his tab: ann sees him leave and the count;
// - screenshots of both pages (kept in TEST_IORELAY_SCREENSHOTS).
//
// The tests run in order and share the people's tabs. Every wait is for something on a
// page, an ack, a log line or an exit, bounded; nothing sleeps.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { io } from "socket.io-client";
import { runCli, startDaemon, stopDaemon, withLogs } from "../lib/admin.mjs";
import { repoRoot, TEST_TOKEN } from "../lib/spawn.mjs";
import { connected } from "../lib/clients.mjs";
import { assertOnlyRelay, launchBrowser, newUser, screenshots, waitForText, watch, WAIT_MS } from "../lib/browser.mjs";

const EXAMPLE = join(repoRoot, "examples", "right-now");
const CONFIG_FILE = join(EXAMPLE, "iorelay.toml");

let daemon;
let browser;
let shots;
let backend;
const sockets = [];
/** The people: { context, tab } by name. */
const people = {};

const logs = (fn) => withLogs(() => daemon, fn);

/** What `name`'s page shows now, for failure messages. */
async function pageState(name) {
  const { page } = people[name].tab;
  const status = await page.locator("#status").textContent();
  const ticker = await page.locator("#ticker").textContent();
  const lines = await page.locator("#messages div").evaluateAll((ds) => ds.map((d) => `[${d.className}] ${d.textContent}`));
  return `${name}'s page: status ${JSON.stringify(status)}, ticker ${JSON.stringify(ticker)}, log:\n  ${lines.join("\n  ") || "(empty)"}`;
}

/** Wait until `name`'s log shows a line of class `kind` that reads exactly `text`. */
async function waitForLine(name, kind, text) {
  const { page } = people[name].tab;
  const exact = new RegExp(`^${text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`);
  await waitForText(page.locator(`#messages div.${kind}`), exact, `${name}'s ${kind} lines`, () => pageState(name));
}

/** Wait until `name`'s status reads `text`. */
function waitForStatus(name, text) {
  return waitForText(people[name].tab.page.locator("#status"), text, `${name}'s status`, () => pageState(name));
}

/** Open the page for `name` in a context of their own and join through the form. */
async function enter(name) {
  const context = await newUser(browser);
  const tab = watch(name, await context.newPage());
  people[name] = { context, tab };
  const res = await tab.page.goto(`${daemon.url}/`, { waitUntil: "load" });
  assert.equal(res.status(), 200);
  await tab.page.getByLabel("Your name", { exact: true }).fill(name);
  await tab.page.getByRole("button", { name: "Join", exact: true }).click();
  return tab;
}

/** Type `text` into `name`'s message box and press Send. */
async function say(name, text) {
  const { page } = people[name].tab;
  await page.getByLabel("Message", { exact: true }).fill(text);
  await page.getByRole("button", { name: "Send", exact: true }).click();
}

/** Stop the backend by its PID and wait for it to exit; resolves to its exit. */
async function stopBackend() {
  if (!backend || backend.child.exitCode !== null || backend.child.signalCode !== null) return backend?.exit;
  process.kill(backend.child.pid, "SIGTERM");
  const timer = setTimeout(() => {
    if (backend.child.exitCode === null) process.kill(backend.child.pid, "SIGKILL");
  }, WAIT_MS);
  try {
    return await backend.exit;
  } finally {
    clearTimeout(timer);
  }
}

before(async () => {
  daemon = await startDaemon(readFileSync(CONFIG_FILE, "utf8"), {
    env: { IORELAY_SERVER__STATIC_DIR: join(EXAMPLE, "public") },
  });
  browser = await launchBrowser();
  shots = screenshots();
});

after(async () => {
  // Each step on its own, so that one failure does not leave the rest running.
  await stopBackend().catch(() => {});
  while (sockets.length) sockets.pop().close();
  if (browser) await browser.close().catch(() => {});
  await stopDaemon(daemon);
  shots?.cleanup();
});

describe("right now (examples/right-now) in Chromium", () => {
  it("iorelay check-config accepts examples/right-now/iorelay.toml", async () => {
    const run = await runCli(["check-config", "--config", CONFIG_FILE]);
    assert.equal(run.code, 0, `check-config exited ${run.code}:\n${run.stderr}${run.stdout}`);
    assert.match(run.stdout, /\[namespaces\."\/"\]/);
    // The example's token is a secret like any other: redacted in the printout.
    assert.ok(!run.stdout.includes("right-now-example-token"), "check-config printed the API token");
  });

  it("ann joins: the relay's welcome, and she is the only one here", logs(async () => {
    await enter("ann");
    await waitForLine("ann", "server", "turingbot: Hello, world!");
    await waitForLine("ann", "info", "You are connected (1 person here).");
    await waitForStatus("ann", "Connected as ann · 1 person here");
  }));

  it("bob joins: he is welcomed and counted, ann sees him connect", logs(async () => {
    await enter("bob");
    await waitForLine("bob", "server", "turingbot: Hello, world!");
    await waitForLine("bob", "info", "You are connected (2 people here).");
    await waitForLine("ann", "presence", "bob connected (2 people here).");
    await waitForStatus("ann", "Connected as ann · 2 people here");
    await waitForStatus("bob", "Connected as bob · 2 people here");
  }));

  it("a message from one reaches the other, and the sender sees it too", logs(async () => {
    await say("ann", "hello bob, what's new right now?");
    await waitForLine("bob", "theirs", "ann: hello bob, what's new right now?");
    await waitForLine("ann", "mine", "ann (you): hello bob, what's new right now?");
    assert.equal(await people.ann.tab.page.getByLabel("Message", { exact: true }).inputValue(), "", "the box is cleared");
    await say("bob", "the backend is about to speak");
    await waitForLine("ann", "theirs", "bob: the backend is about to speak");
    await waitForLine("bob", "mine", "bob (you): the backend is about to speak");
  }));

  it("backend.py pushes through the server API every second; both pages show it", logs(async () => {
    const child = spawn("python3", [join(EXAMPLE, "backend.py"), "--interval", "1"], {
      env: { ...process.env, IORELAY_ADMIN: daemon.adminUrl, IORELAY_TOKEN: TEST_TOKEN },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let output = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (c) => (output += c));
    const exit = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
    backend = { child, exit, output: () => output };
    try {
      // Two pushes in each page: the second proves it is a stream, not a one-off.
      for (const name of ["ann", "bob"]) {
        const { page } = people[name].tab;
        await page
          .waitForFunction(() => Number(document.getElementById("ticker").dataset.n) >= 2, null, { timeout: WAIT_MS })
          .catch(async (err) => {
            throw new Error(`no second push in ${name}'s page\n${await pageState(name)}\nbackend:\n${output}`, { cause: err });
          });
        assert.match(await page.locator("#ticker").textContent(), /^turingbot: It is \d{2}:\d{2}:\d{2} UTC right now\.$/);
      }
      assert.match(output, /backend: push 1 reached 2 sockets/);
      // Pushes go to the ticker, not into the conversation.
      assert.equal(await people.ann.tab.page.locator("#messages div.server").count(), 1, await pageState("ann"));
    } catch (err) {
      err.message += `\nbackend output:\n${output}`;
      throw err;
    }
  }));

  it("screenshots of both pages", async (t) => {
    await shots.shoot(people.ann.tab.page, "right-now-ann.png", t);
    await shots.shoot(people.bob.tab.page, "right-now-bob.png", t);
  });

  it("the backend stops on SIGTERM, by its PID", async () => {
    const { code, signal } = await stopBackend();
    assert.equal(signal, null, `the backend died of ${signal}:\n${backend.output()}`);
    assert.equal(code, 0, `the backend exited ${code}:\n${backend.output()}`);
  });

  it("backend.py with a wrong token says why its pushes fail (401), and stops on SIGTERM", logs(async () => {
    const child = spawn("python3", [join(EXAMPLE, "backend.py"), "--interval", "1"], {
      env: { ...process.env, IORELAY_ADMIN: daemon.adminUrl, IORELAY_TOKEN: "not-the-token-0123456789" },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let output = "";
    child.stderr.setEncoding("utf8");
    const exit = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
    try {
      await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no failure line within ${WAIT_MS}ms:\n${output}`)), WAIT_MS);
        child.stderr.on("data", (c) => {
          output += c;
          if (/push 1 failed: HTTP 401/.test(output)) {
            clearTimeout(timer);
            resolve();
          }
        });
      });
    } finally {
      process.kill(child.pid, "SIGTERM");
      assert.deepEqual(await exit, { code: 0, signal: null }, output);
    }
  }));

  it("a page cannot sign as someone else: the name shown is its connection's, as text", logs(async () => {
    const socket = io(daemon.url, { forceNew: true, reconnection: false, auth: { name: "mallory" } });
    sockets.push(socket);
    await connected(socket);
    // A forged server message and a forged metadata argument: the relay appends the real
    // one last, and the page goes by that.
    socket.emit("message", { user: "turingbot", text: "<b id=injected>free bananas</b>" }, { id: "nobody", user: "ann" });
    await waitForLine("ann", "theirs", "mallory: <b id=injected>free bananas</b>");
    assert.equal(await people.ann.tab.page.locator("#injected").count(), 0, "markup from a message was rendered");
    socket.close();
  }));

  it("a page from another origin is refused", logs(async () => {
    const socket = io(daemon.url, { forceNew: true, reconnection: false, extraHeaders: { origin: "http://evil.example" } });
    sockets.push(socket);
    await assert.rejects(connected(socket), /connect_error/);
  }));

  it("bob closes his tab: ann sees him leave, and the count", logs(async () => {
    await people.bob.context.close();
    await waitForLine("ann", "presence", "bob left (1 person here).");
    await waitForStatus("ann", "Connected as ann · 1 person here");
  }));

  it("the pages talked to the relay only, without errors", async () => {
    for (const name of ["ann", "bob"]) {
      const { tab } = people[name];
      assertOnlyRelay(tab, daemon.url);
      assert.ok(tab.requests.includes(`${daemon.url}/socket.io/socket.io.min.js`), `${name}'s tab did not load the relay's bundle`);
      assert.deepEqual(tab.errors, [], `${name}'s tab logged errors`);
    }
  });
});

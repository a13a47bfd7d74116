// The live analytics app (seeds 000 and 001) as its users see it: examples/analytics
// (iorelay.toml + public/) served by the real binary, in headless Chromium (Debian's,
// through playwright-core), one browser context per person.
//
// - the config passes `iorelay check-config`;
// - a dashboard is open; two visitors, each behind the (trusted, loopback) proxy with
//   their own X-Forwarded-For, open the instrumented pages, follow links and #hash
//   links: the dashboard shows each view with its URL, the visitor's address (the relay's
//   `meta` ip), the time, and the live number of connected pages;
// - the dashboard is refreshed and still shows every past view (room history), once;
// - a visitor leaves: the count goes down;
// - a page from another origin is refused (a Chromium page served on another port, and
//   the Node client sending that Origin), and shows up nowhere;
// - what a page sends is shown as text, never as markup;
// - screenshots of the dashboard and a page (kept in TEST_IORELAY_SCREENSHOTS).
//
// The tests run in order and share the people's tabs. Every wait is for something on a
// page, an ack or an answer, bounded; nothing sleeps.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { io } from "socket.io-client";
import { runCli, scrape, startDaemon, stopDaemon, waitForMetric, withLogs } from "../lib/admin.mjs";
import { repoRoot } from "../lib/spawn.mjs";
import { connected } from "../lib/clients.mjs";
import { assertOnlyRelay, launchBrowser, newUser, pageServer, screenshots, waitForText, watch, WAIT_MS } from "../lib/browser.mjs";

const EXAMPLE = join(repoRoot, "examples", "analytics");
const CONFIG_FILE = join(EXAMPLE, "iorelay.toml");
const ANN_IP = "203.0.113.7";
const BOB_IP = "198.51.100.23";

let daemon;
let browser;
let shots;
let foreign;
const sockets = [];
/** The people: { context, tab } by name; tabs as watch() records them. */
const people = {};
const started = Date.now();

const logs = (fn) => withLogs(() => daemon, fn);

/** The dashboard's table rows, as [time, url, ip, title] each, newest first. */
async function rows() {
  return people.dash.tab.page
    .locator("#pageviews tr")
    .evaluateAll((trs) => trs.map((tr) => [...tr.cells].map((td) => td.textContent)));
}

/** What the dashboard shows now, for failure messages. */
async function dashboardState() {
  const page = people.dash.tab.page;
  const status = await page.locator("#status").textContent();
  const count = await page.locator("#connections").textContent();
  return `dashboard: status ${JSON.stringify(status)}, connected pages ${count}, rows:\n  ${(await rows()).map((r) => r.join(" | ")).join("\n  ") || "(none)"}`;
}

/** Wait until the dashboard shows a view of `url` from `ip`; resolves to its <time>. */
async function waitForView(url, ip) {
  const page = people.dash.tab.page;
  const row = page.locator("#pageviews tr").filter({ has: page.locator("td", { hasText: new RegExp(`^${escape(url)}$`) }) }).filter({ hasText: ip });
  await waitForText(row, ip, `the dashboard's row for ${url}`, dashboardState);
  const cells = await row.first().locator("td").allTextContents();
  assert.equal(cells[1], url);
  assert.equal(cells[2], ip);
  const when = Date.parse(await row.first().locator("time").getAttribute("datetime"));
  // The relay's receive time, not the page's: between the start of this suite and now.
  assert.ok(when >= started - 1000 && when <= Date.now() + 1000, `time of the view of ${url}: ${new Date(when).toISOString()}`);
  assert.match(cells[0], /\d{1,2}:\d{2}:\d{2}/, "the time column shows the time of day");
  return when;
}

/** Wait until the dashboard's "Connected pages" reads exactly `n`. */
function waitForCount(n) {
  const count = people.dash.tab.page.locator("#connections");
  return waitForText(count, new RegExp(`^${n}$`), "the number of connected pages", dashboardState);
}

function escape(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Open a tab for `name` (a new context, with `headers` on every request) at `path`. */
async function visit(name, path, headers = {}) {
  const context = await newUser(browser, headers);
  const tab = watch(name, await context.newPage());
  people[name] = { context, tab };
  const res = await tab.page.goto(`${daemon.url}${path}`, { waitUntil: "load" });
  assert.equal(res.status(), 200, `GET ${path}`);
  return tab;
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
  while (sockets.length) sockets.pop().close();
  if (browser) await browser.close().catch(() => {});
  await foreign?.close();
  await stopDaemon(daemon);
  shots?.cleanup();
});

describe("live analytics (examples/analytics) in Chromium", () => {
  it("iorelay check-config accepts examples/analytics/iorelay.toml", async () => {
    const run = await runCli(["check-config", "--config", CONFIG_FILE]);
    assert.equal(run.code, 0, `check-config exited ${run.code}:\n${run.stderr}${run.stdout}`);
    assert.match(run.stdout, /\[namespaces\."\/analytics"\]/);
    assert.match(run.stdout, /allowed_origins = \[\]/);
  });

  it("the dashboard opens with no views and no connected page", logs(async () => {
    const dash = await visit("dash", "/dashboard.html");
    await waitForText(dash.page.locator("#status"), "Live", "the dashboard's status", dashboardState);
    await waitForCount(0);
    assert.equal(await dash.page.locator("#views").textContent(), "0");
    assert.deepEqual(await rows(), []);
    assert.ok(await dash.page.getByText("No page views yet").isVisible());
  }));

  it("ann opens the index page: the dashboard shows its URL, her address, the time, 1 page", logs(async () => {
    const ann = await visit("ann", "/index.html", { "x-forwarded-for": ANN_IP });
    assert.equal(await ann.page.title(), "Index | Sample Real-Time Analytics");
    await waitForView(`${daemon.url}/index.html`, ANN_IP);
    await waitForCount(1);
    assert.equal(await people.dash.tab.page.getByText("No page views yet").isVisible(), false);
  }));

  it("ann follows #hash links and a link to another page: each is a view", logs(async () => {
    const { page } = people.ann.tab;
    await page.getByRole("link", { name: "Pricing", exact: true }).click();
    await waitForView(`${daemon.url}/index.html#pricing`, ANN_IP);
    await page.getByRole("link", { name: "Features", exact: true }).click();
    await waitForView(`${daemon.url}/index.html#features`, ANN_IP);
    // A hash typed into the address bar is a hashchange too.
    await page.evaluate(() => {
      location.hash = "#pricing";
    });
    const urls = async () => (await rows()).map((r) => r[1]);
    await waitForText(people.dash.tab.page.locator("#views"), /^4$/, "the number of views", dashboardState);
    assert.deepEqual(await urls(), ["#pricing", "#features", "#pricing", ""].map((h) => `${daemon.url}/index.html${h}`));

    // A real navigation: the index page's connection goes, the about page's comes.
    await page.getByRole("link", { name: "About", exact: true }).first().click();
    await page.waitForURL(`${daemon.url}/about.html`);
    await waitForView(`${daemon.url}/about.html`, ANN_IP);
    await page.getByRole("link", { name: "Team", exact: true }).click();
    await waitForView(`${daemon.url}/about.html#team`, ANN_IP);
    await waitForCount(1);
    const titles = (await rows()).map((r) => r[3]);
    assert.deepEqual(titles.slice(0, 2), ["About | Sample Real-Time Analytics", "About | Sample Real-Time Analytics"]);
  }));

  it("bob opens a deep link from another address: 2 pages, his own address", logs(async () => {
    await visit("bob", "/about.html#contact", { "x-forwarded-for": BOB_IP });
    await waitForView(`${daemon.url}/about.html#contact`, BOB_IP);
    await waitForCount(2);
    const ips = new Set((await rows()).map((r) => r[2]));
    assert.deepEqual([...ips].sort(), [BOB_IP, ANN_IP].sort(), "only the visitors' addresses, as their proxy forwarded them");
  }));

  it("a refreshed dashboard still shows every past view, once, and the count", logs(async () => {
    const dash = people.dash.tab;
    const before = await rows();
    assert.equal(before.length, 7, await dashboardState());
    await dash.page.reload({ waitUntil: "load" });
    await waitForText(dash.page.locator("#status"), "Live", "the dashboard's status after the refresh", dashboardState);
    await waitForText(dash.page.locator("#views"), /^7$/, "the number of views after the refresh", dashboardState);
    assert.deepEqual(await rows(), before, "the same rows, in the same order, none twice");
    await waitForCount(2);
    // And it is live again.
    await people.bob.tab.page.getByRole("link", { name: "Team", exact: true }).click();
    await waitForView(`${daemon.url}/about.html#team`, BOB_IP);
    assert.equal((await rows()).length, 8);
  }));

  it("screenshots of the dashboard (2 pages, 8 views) and a page", async (t) => {
    await shots.shoot(people.dash.tab.page, "analytics-dashboard.png", t);
    await shots.shoot(people.ann.tab.page, "analytics-page.png", t);
  });

  it("bob closes his tab: 1 page", logs(async () => {
    await people.bob.context.close();
    await waitForCount(1);
  }));

  it("a page from another origin is refused, and its views go nowhere", logs(async () => {
    const refused = "iorelay_origin_refused_total";
    const before = (await scrape(daemon)).value(refused);
    // A site that copied the instrumentation onto its own pages, pointing at this relay.
    foreign = await pageServer(
      () => `<!doctype html><meta charset="utf-8"><title>elsewhere</title>
<script src="${daemon.url}/socket.io/socket.io.min.js"></script>
<script>
  window.result = null;
  const socket = io(${JSON.stringify(`${daemon.url}/analytics`)}, { reconnection: false });
  socket.on("connect", () => { window.result = { connected: true }; });
  socket.on("connect_error", (err) => { window.result = { error: String(err && err.message) }; });
  socket.emit("pageview", { url: location.href, title: "elsewhere" });
</script>`,
    );
    const context = await newUser(browser);
    const page = await context.newPage();
    await page.goto(`${foreign.url}/`, { waitUntil: "load" });
    const result = await (await page.waitForFunction(() => window.result, null, { timeout: WAIT_MS })).jsonValue();
    assert.ok(result.error, `the foreign page connected: ${JSON.stringify(result)}`);
    await context.close();
    await waitForMetric(daemon, refused, {}, (v) => v > before);

    // The Node client saying it is that page: refused the same way.
    const socket = io(`${daemon.url}/analytics`, { forceNew: true, reconnection: false, extraHeaders: { origin: foreign.url } });
    sockets.push(socket);
    await assert.rejects(connected(socket), /connect_error/);

    // Nothing of it reached the dashboard. Proof without sleeping: a later view from a
    // page that is allowed arrives, so the foreign one would have come before it.
    await people.ann.tab.page.getByRole("link", { name: "Contact", exact: true }).click();
    await waitForView(`${daemon.url}/about.html#contact`, ANN_IP);
    const urls = (await rows()).map((r) => r[1]);
    assert.ok(!urls.some((u) => u.startsWith(foreign.url)), `a foreign view reached the dashboard: ${urls}`);
    await waitForCount(1);
  }));

  it("what a page sends is shown as text, never as markup", logs(async () => {
    // A client without Origin (not a browser) is let in: the dashboard must not trust it.
    const socket = io(`${daemon.url}/analytics`, { forceNew: true, reconnection: false, extraHeaders: { "x-forwarded-for": "192.0.2.1" } });
    sockets.push(socket);
    await connected(socket);
    const markup = `<img src=x onerror="document.title='owned'"><b id="injected">x</b>`;
    assert.deepEqual(await socket.timeout(WAIT_MS).emitWithAck("pageview", { url: markup, title: markup }), { ok: true });
    // Not a view at all: ignored.
    assert.deepEqual(await socket.timeout(WAIT_MS).emitWithAck("pageview", "nonsense"), { ok: true });
    await waitForView(markup, "192.0.2.1");
    const page = people.dash.tab.page;
    assert.equal(await page.locator("#pageviews img, #injected").count(), 0, "markup from a page was rendered");
    assert.equal(await page.title(), "Stats | Sample Real-Time Analytics");
    socket.close();
  }));

  it("the pages talked to the relay only, without errors", async () => {
    for (const name of ["dash", "ann", "bob"]) {
      const { tab } = people[name];
      assertOnlyRelay(tab, daemon.url);
      assert.ok(tab.requests.includes(`${daemon.url}/socket.io/socket.io.min.js`), `${name}'s tab did not load the relay's bundle`);
      assert.deepEqual(tab.errors, [], `${name}'s tab logged errors`);
    }
  });
});

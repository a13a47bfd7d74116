// Headless Chromium for the example apps' end-to-end suites (app-analytics, app-right-now):
// Debian's /usr/bin/chromium driven through playwright-core, which never downloads a
// browser of its own. A machine without it fails those suites with instructions; they
// are never skipped.
//
// Also here: a record of what each tab asked the network for and which errors it logged
// (so a suite can assert "no errors, nothing but the relay"), screenshots kept in
// TEST_IORELAY_SCREENSHOTS when it names a directory (else a temp dir removed
// afterwards), and a static server on a free loopback port, for pages of another origin.
import assert from "node:assert/strict";
import http from "node:http";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const CHROMIUM = "/usr/bin/chromium";
/** How long one wait in a page may take. */
export const WAIT_MS = 10000;
const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
export const NO_CHROMIUM =
  `${CHROMIUM} is missing: the browser tests need Debian's Chromium. Install it with ` +
  "`apt-get update && apt-get install -y chromium` (.ci/run does this on CI). " +
  "Do not let playwright download a browser of its own.";

/** Launch headless Chromium; each user of a suite then gets a context of their own. */
export async function launchBrowser() {
  assert.ok(existsSync(CHROMIUM), NO_CHROMIUM);
  const { chromium } = await import("playwright-core");
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30000 });
}

/**
 * A new browser context (one user: its own cookies and storage) with a small light
 * viewport and bounded waits; `headers` go with every request it makes (HTTP and
 * WebSocket), such as the X-Forwarded-For a proxy would add.
 */
export async function newUser(browser, headers = {}) {
  const context = await browser.newContext({
    viewport: { width: 900, height: 640 },
    colorScheme: "light",
    extraHTTPHeaders: headers,
  });
  context.setDefaultTimeout(WAIT_MS);
  context.setDefaultNavigationTimeout(WAIT_MS);
  return context;
}

/**
 * Record what `page` asks the network for and every error it reports: { name, page,
 * requests: [url], sockets: [url], errors: [text] }.
 */
export function watch(name, page) {
  const tab = { name, page, requests: [], sockets: [], errors: [] };
  page.on("request", (req) => tab.requests.push(req.url()));
  page.on("websocket", (ws) => tab.sockets.push(ws.url()));
  page.on("response", (res) => {
    if (res.status() >= 400) tab.errors.push(`HTTP ${res.status()}: ${res.url()}`);
  });
  page.on("pageerror", (err) => tab.errors.push(`pageerror: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error") tab.errors.push(`console.error: ${msg.text()} (${msg.location().url})`);
  });
  return tab;
}

/** Assert that `tab` made requests and WebSockets to `origin` (a relay's url) only. */
export function assertOnlyRelay(tab, origin) {
  const relay = new URL(origin);
  assert.ok(tab.requests.length > 0, `${tab.name}'s tab made no request at all`);
  const elsewhere = tab.requests.filter((u) => !u.startsWith("data:") && new URL(u).origin !== relay.origin);
  assert.deepEqual(elsewhere, [], `${tab.name}'s tab asked hosts other than the relay (${relay.origin})`);
  const wsElsewhere = tab.sockets.filter((u) => new URL(u).host !== relay.host);
  assert.deepEqual(wsElsewhere, [], `${tab.name}'s tab opened WebSockets to other hosts`);
}

/**
 * Where screenshots go: TEST_IORELAY_SCREENSHOTS when set (kept), else a temp dir that
 * `cleanup()` removes. Resolves to { dir, keep, cleanup, shoot(page, file, t) }.
 */
export function screenshots() {
  const keep = Boolean(process.env.TEST_IORELAY_SCREENSHOTS);
  const dir = keep ? process.env.TEST_IORELAY_SCREENSHOTS : mkdtempSync(join(tmpdir(), "iorelay-shots-"));
  mkdirSync(dir, { recursive: true });
  return {
    dir,
    keep,
    cleanup: () => {
      if (!keep) rmSync(dir, { recursive: true, force: true });
    },
    /** Screenshot `page` into `file` (in dir), check it is a PNG, report where it is. */
    async shoot(page, file, t) {
      const path = join(dir, file);
      await page.screenshot({ path, fullPage: false, timeout: WAIT_MS });
      const png = readFileSync(path);
      assert.ok(png.length > 5000, `${path} is only ${png.length} bytes`);
      assert.equal(png.subarray(1, 4).toString("latin1"), "PNG", `${path} is not a PNG`);
      t.diagnostic(`${path}${keep ? "" : " (removed afterwards; set TEST_IORELAY_SCREENSHOTS=DIR to keep)"}`);
      return path;
    },
  };
}

/**
 * A static server on a free loopback port answering every GET with `html()`: a page of
 * another origin than the relay's. Resolves to { url, close() }.
 */
export function pageServer(html) {
  return new Promise((resolve, reject) => {
    const server = http.createServer((req, res) => {
      if (req.url === "/favicon.ico") {
        res.writeHead(204).end();
        return;
      }
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(html());
    });
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () =>
      resolve({
        url: `http://127.0.0.1:${server.address().port}`,
        close: () => new Promise((r) => server.close(r)),
      }),
    );
  });
}

/**
 * Wait until `locator` (narrowed to elements containing `text`) is visible; on timeout
 * fail with what it shows and `context()` (a function returning more state, may be
 * async).
 */
export async function waitForText(locator, text, what, context = () => "") {
  try {
    await locator.filter({ hasText: text }).first().waitFor({ state: "visible", timeout: WAIT_MS });
  } catch (err) {
    const shows = await locator.allTextContents().catch(() => ["(gone)"]);
    throw new Error(
      `${what} never showed ${JSON.stringify(String(text))} within ${WAIT_MS}ms; it shows ${JSON.stringify(shows)}\n${await context()}`,
      { cause: err },
    );
  }
}

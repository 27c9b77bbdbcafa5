// Drives the live page in Debian's headless Chromium with playwright-core, for
// tests/integration/live.rs. usage: node live_page.cjs URL KEY METER SCREENSHOT
//
// The test and this script talk in lines. This script prints `ready` once the page is live and
// watching METER; the test publishes a reading and answers `published <epoch ms> <ts>`; this
// script waits for the reading to show and prints `reading <ms from publish to display>`. The
// test opens an alert and answers `alert <meter>`; this script waits for its row, clicks
// Acknowledge, waits for the new state and prints `acked <alert id>`. Then it drops the
// connection, waits for the page to reconnect by itself and prints `reconnected`; the test
// publishes again and answers `published …`; the reading shows: `reading …`. A screenshot goes
// to SCREENSHOT (also on failure), then `done`.
"use strict";

const { chromium } = require("playwright-core");
const readline = require("readline");

const [url, key, meter, screenshot] = process.argv.slice(2);
const lines = readline.createInterface({ input: process.stdin });
const queue = [];
let waiting = null;
lines.on("line", (l) => (waiting ? (waiting(l), (waiting = null)) : queue.push(l)));
const nextLine = () => (queue.length ? Promise.resolve(queue.shift()) : new Promise((r) => (waiting = r)));

async function awaitReading(page) {
  const [word, publishedMs, ts] = (await nextLine()).split(" ");
  if (word !== "published") throw new Error("expected published, got " + word);
  await page.waitForFunction(
    ([m, t]) => {
      const el = document.getElementById("latest");
      return el.dataset.meter === m && el.dataset.ts === t;
    },
    [meter, ts],
    { timeout: 10000, polling: 10 },
  );
  console.log("reading " + (Date.now() - Number(publishedMs)));
}

(async () => {
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  try {
    await page.goto(url);
    await page.fill("#key", key);
    await page.click("#key-form button[type=submit]");
    await page.waitForSelector("#connection.state-on", { timeout: 10000 });
    await page.waitForFunction(() => document.getElementById("stat-online").textContent !== "–", null, { timeout: 10000 });
    await page.selectOption("#watch-kind", "meter");
    await page.fill("#watch-id", meter);
    await page.click("#watch-form button[type=submit]");
    await page.waitForFunction(() => document.getElementById("latest").textContent.startsWith("waiting for meter"));
    // The subscription is on the wire once the server answered it; give it a round trip.
    await page.waitForTimeout(300);
    console.log("ready");
    await awaitReading(page);

    const [word, alertMeter] = (await nextLine()).split(" ");
    if (word !== "alert") throw new Error("expected alert, got " + word);
    const row = page.locator("#alerts tbody tr[data-state=open]", { hasText: alertMeter });
    await row.waitFor({ timeout: 15000 });
    const alertId = await row.getAttribute("data-alert-id");
    await row.locator("button.ack").click();
    await page.waitForSelector(`#alerts tbody tr[data-alert-id="${alertId}"][data-state=acknowledged]`, { timeout: 10000 });
    console.log("acked " + alertId);

    // A flaky network: the connection drops; the page reconnects by itself.
    await page.evaluate(() => state.ws.close());
    await page.waitForSelector("#connection.state-off, #connection.state-wait", { timeout: 5000 });
    await page.waitForSelector("#connection.state-on", { timeout: 15000 });
    await page.waitForTimeout(300);
    console.log("reconnected");
    await awaitReading(page);
    const chart = await page.evaluate(() => state.points.length);
    if (chart < 2) throw new Error("the chart has " + chart + " points");
    if (errors.length) throw new Error("page errors: " + errors.join("; "));
    await page.screenshot({ path: screenshot, fullPage: true });
    console.log("done");
  } catch (e) {
    await page.screenshot({ path: screenshot, fullPage: true }).catch(() => {});
    console.log("error " + String(e).replace(/\n/g, " ") + (errors.length ? " page errors: " + errors.join("; ") : ""));
    process.exitCode = 1;
  } finally {
    await browser.close();
    lines.close();
  }
})();

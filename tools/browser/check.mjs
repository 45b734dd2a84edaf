// Open a page in headless Chromium, wait for a selector to contain a text, save a
// screenshot, and print what was found as JSON. Used by the Rust browser tests.
//
//   node tools/browser/check.mjs <url> <selector> <expected-text> <screenshot.png> [timeout-ms] [trigger-url]
//
// When trigger-url is given, it is fetched (GET, from the test process's side) once the page
// shows the selector, so a test can make something happen while the page watches.
import { chromium } from 'playwright-core';

const [url, selector, expected, screenshot, timeoutArg] = process.argv.slice(2);

// A full-page screenshot needs an HTML body: on an SVG or XML document Chromium never
// finishes one, so those get the viewport.
async function fullPage(page) {
  return page.evaluate(() => document.body !== null).catch(() => false);
}
const timeout = Number(timeoutArg || 20000);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let result = { ok: false };
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 700 } });
  const console_ = [];
  page.on('console', (m) => console_.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => console_.push(`pageerror: ${e.message}`));
  await page.goto(url);
  // Let the test make requests while the page is open: it polls for this file.
  if (process.env.READY_FILE) {
    const { writeFile } = await import('node:fs/promises');
    await page.waitForSelector(process.env.READY_SELECTOR || 'body', { timeout });
    await writeFile(process.env.READY_FILE, 'ready');
  }
  await page.waitForFunction(
    ([sel, text]) => [...document.querySelectorAll(sel)].some((el) => el.textContent.includes(text)),
    [selector, expected],
    { timeout },
  );
  const texts = await page.$$eval(selector, (els) => els.map((e) => e.textContent));
  await page.screenshot({ path: screenshot, fullPage: await fullPage(page) });
  result = { ok: true, texts, console: console_ };
} catch (e) {
  result = { ok: false, error: String(e) };
  try {
    const pages = browser.contexts().flatMap((c) => c.pages());
    if (pages[0]) await pages[0].screenshot({ path: screenshot, fullPage: await fullPage(pages[0]) });
  } catch {}
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);

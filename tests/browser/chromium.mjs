// What the browser tests here share: the system Chromium started headless through
// playwright-core so that nothing but the page's own HTTP/1.1 requests leave it, one page, and
// the run's result printed as one JSON line for the Python test that started it.
import { chromium } from "playwright-core";

// Without the background-networking flags Chromium's own connections are refused on the test
// machines; QUIC and GPU are off so nothing but the page's HTTP/1.1 requests leave the browser.
const FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

// Runs `body(page)` in a fresh persistent context, then prints `result` (its `ok` set when
// `body` returned, its `error` the first line of what it threw) and exits 0 when ok, else 1.
export async function runPage({ executablePath, userDataDir, timeout = 60000, flags = [] },
  result, body) {
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath, headless: true, args: [...FLAGS, ...flags], timeout,
  });
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    await body(page);
    result.ok = true;
  } catch (e) {
    result.error = String(e && e.message ? e.message : e).split("\n")[0];
  } finally {
    await context.close();
  }
  console.log(JSON.stringify(result));
  process.exit(result.ok ? 0 : 1);
}

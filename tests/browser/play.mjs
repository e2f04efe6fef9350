// Drives the edge360 /player page in the system Chromium (headless) with playwright-core and
// prints one JSON object with what it saw, for tests/test_player.py to assert on.
//
// usage: node tests/browser/play.mjs --url URL --user-data-dir DIR [--stats URL]
//            [--min-time 3] [--timeout 60] [--chromium /usr/bin/chromium]
//
// It waits (bounded by --timeout seconds) until the video's currentTime passes --min-time, then,
// while the page is still playing, reads --stats (the node's /api/stats) and waits for the page's
// own next /api/stats poll so the viewer count it shows postdates the start of playback.
// Exit status 0 when playback advanced, 1 otherwise; the JSON is printed either way.
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const { values: opt } = parseArgs({
  options: {
    url: { type: "string" },
    "user-data-dir": { type: "string" },
    stats: { type: "string" },
    "min-time": { type: "string", default: "3" },
    timeout: { type: "string", default: "60" },
    chromium: { type: "string", default: "/usr/bin/chromium" },
  },
});
if (!opt.url || !opt["user-data-dir"]) {
  console.error("usage: play.mjs --url URL --user-data-dir DIR [--stats URL]");
  process.exit(2);
}
const minTime = Number(opt["min-time"]);
const timeoutMs = Number(opt.timeout) * 1000;

// Without the background-networking flags Chromium's own connections are refused on the test
// machines; QUIC and GPU are off so nothing but the page's HTTP/1.1 requests leave the browser.
const FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

const result = {
  ok: false,
  error: null,
  currentTime: 0,
  ended: null,
  paused: null,
  rendition: null,
  bufferAhead: null,
  status: null,
  viewersShown: null,
  viewerPolls: 0,
  statsWhilePlaying: null,
  media: [],
  consoleErrors: [],
  pageErrors: [],
};

const context = await chromium.launchPersistentContext(opt["user-data-dir"], {
  executablePath: opt.chromium,
  headless: true,
  args: FLAGS,
  timeout: timeoutMs,
});
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (msg) => {
    if (msg.type() === "error") result.consoleErrors.push(msg.text());
  });
  page.on("pageerror", (err) => result.pageErrors.push(String(err)));
  page.on("response", (r) => {
    const u = new URL(r.url());
    if (/\.(m3u8|ts|m4s|mp4|m4a|aac)$/.test(u.pathname)) {
      result.media.push({ path: u.pathname, query: u.search, status: r.status(),
                          xCache: r.headers()["x-cache"] ?? null });
    }
  });

  await page.goto(opt.url, { timeout: timeoutMs });
  const snapshot = () => page.evaluate(() => {
    const v = document.getElementById("video");
    const d = (id) => document.getElementById(id).dataset;
    return {
      currentTime: v.currentTime, ended: v.ended, paused: v.paused,
      rendition: d("rendition").height ? { height: Number(d("rendition").height),
                                           bitrate: Number(d("rendition").bitrate) } : null,
      bufferAhead: d("buffer").seconds !== undefined ? Number(d("buffer").seconds) : null,
      status: document.getElementById("status").textContent,
      viewersShown: d("viewers").count !== undefined ? Number(d("viewers").count) : null,
      viewerPolls: Number(d("viewers").polls ?? 0),
    };
  });
  try {
    await page.waitForFunction(
      (t) => document.getElementById("video").currentTime > t, minTime,
      { timeout: timeoutMs, polling: 100 });
  } catch (e) {
    Object.assign(result, await snapshot());
    throw e;
  }
  // still playing: the node's view of its viewers right now
  if (opt.stats) {
    const r = await fetch(opt.stats, { cache: "no-store" });
    result.statsWhilePlaying = await r.json();
  }
  const polls = (await snapshot()).viewerPolls;
  await page.waitForFunction(
    (n) => Number(document.getElementById("viewers").dataset.polls ?? 0) > n, polls,
    { timeout: 10000, polling: 100 });
  Object.assign(result, await snapshot());
  result.ok = true;
} catch (e) {
  result.error = String(e && e.message ? e.message : e).split("\n")[0];
} finally {
  await context.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);

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
import { runPage } from "./chromium.mjs";

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

await runPage({ executablePath: opt.chromium, userDataDir: opt["user-data-dir"], timeout: timeoutMs }, result, async (page) => {
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
});

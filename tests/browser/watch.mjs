// Watches a whole title on the edge360 /player page in the system Chromium (headless) with
// playwright-core, at --rate times real speed, and samples the server's viewer count all along;
// prints one JSON object for tests/test_viewer_truth.py to assert on.
//
// usage: node tests/browser/watch.mjs --url PAGE --stats URL --user-data-dir DIR
//            [--rate 8] [--timeout 90] [--after 20] [--chromium /usr/bin/chromium]
//
// It sets the video's playback rate as soon as the page has loaded, then every 250 ms reads the
// video (currentTime, ended) and --stats (a node's /api/stats) until the video ends, and goes on
// reading --stats for at most --after seconds, until the node counts no viewer. Every loop is
// bounded by --timeout. Media responses are recorded with the time they arrived. Exit status 0
// when the video played to its end, 1 otherwise; the JSON is printed either way.
import { parseArgs } from "node:util";
import { runPage } from "./chromium.mjs";

const { values: opt } = parseArgs({
  options: {
    url: { type: "string" },
    stats: { type: "string" },
    "user-data-dir": { type: "string" },
    rate: { type: "string", default: "8" },
    timeout: { type: "string", default: "90" },
    after: { type: "string", default: "20" },
    chromium: { type: "string", default: "/usr/bin/chromium" },
  },
});
if (!opt.url || !opt.stats || !opt["user-data-dir"]) {
  console.error("usage: watch.mjs --url PAGE --stats URL --user-data-dir DIR");
  process.exit(2);
}
const rate = Number(opt.rate);
const deadline = Date.now() + Number(opt.timeout) * 1000;
const afterMs = Number(opt.after) * 1000;

const started = Date.now();
const result = {
  ok: false, error: null, rate, duration: null, endedAt: null, samples: [], after: [],
  media: [], consoleErrors: [], pageErrors: [],
};
const since = () => Date.now() - started;

async function stats() {
  try {
    const r = await fetch(opt.stats, { cache: "no-store" });
    return await r.json();
  } catch (e) {
    return { error: String(e) };
  }
}

await runPage({
  executablePath: opt.chromium, userDataDir: opt["user-data-dir"],
  flags: ["--autoplay-policy=no-user-gesture-required"],
}, result, async (page) => {
  page.on("console", (msg) => {
    if (msg.type() === "error") result.consoleErrors.push(msg.text());
  });
  page.on("pageerror", (err) => result.pageErrors.push(String(err)));
  page.on("response", (r) => {
    const u = new URL(r.url());
    if (/\.(m3u8|ts|m4s|mp4|m4a|aac)$/.test(u.pathname)) {
      result.media.push({ path: u.pathname, query: u.search, status: r.status(), at: since(),
                          method: r.request().method() });
    }
  });
  await page.goto(opt.url, { timeout: 60000 });
  await page.evaluate((n) => {
    const v = document.getElementById("video");
    v.defaultPlaybackRate = n;
    v.playbackRate = n;
    // the page may (re)start playback after this: keep the rate whatever it does
    v.addEventListener("play", () => { v.playbackRate = n; });
  }, rate);
  const video = () => page.evaluate(() => {
    const v = document.getElementById("video");
    return { currentTime: v.currentTime, ended: v.ended, duration: v.duration,
             rate: v.playbackRate };
  });
  while (Date.now() < deadline) {
    const v = await video();
    const s = await stats();
    result.samples.push({ at: since(), currentTime: v.currentTime, ended: v.ended, rate: v.rate,
                          active: s.sessions_active, starting: s.sessions_starting,
                          views: s.views_total });
    if (v.ended) {
      result.endedAt = since();
      result.duration = v.duration;
      break;
    }
    await new Promise((res) => setTimeout(res, 250));
  }
  if (result.endedAt === null) throw new Error("the video did not end in time");
  const until = Math.min(deadline, Date.now() + afterMs);
  while (Date.now() < until) {
    const s = await stats();
    result.after.push({ at: since(), active: s.sessions_active, starting: s.sessions_starting,
                        views: s.views_total });
    if (s.sessions_active === 0) break;
    await new Promise((res) => setTimeout(res, 250));
  }
});

// Plays a title on the edge360 /player page in the system Chromium (headless) with
// playwright-core and watches hls.js follow content steering from one edge to another; prints
// one JSON object for tests/test_overload_browser.py.
//
// usage: node tests/browser/steer.mjs --url PAGE --from PORT --to PORT --user-data-dir DIR
//            [--timeout 90] [--chromium /usr/bin/chromium]
//
// Once the video plays, it prints the line "PLAYING" (the test then drains the --from edge),
// and goes on until hls.js has fetched media from the --to edge and the video has played on
// for two more seconds. Every media and steering response is recorded with the port it came
// from and when. Every loop is bounded by --timeout. Exit status 0 when the move was seen.
import { parseArgs } from "node:util";
import { runPage } from "./chromium.mjs";

const { values: opt } = parseArgs({
  options: {
    url: { type: "string" },
    from: { type: "string" },
    to: { type: "string" },
    "user-data-dir": { type: "string" },
    timeout: { type: "string", default: "90" },
    chromium: { type: "string", default: "/usr/bin/chromium" },
  },
});
if (!opt.url || !opt.from || !opt.to || !opt["user-data-dir"]) {
  console.error("usage: steer.mjs --url PAGE --from PORT --to PORT --user-data-dir DIR");
  process.exit(2);
}
const deadline = Date.now() + Number(opt.timeout) * 1000;

const started = Date.now();
const result = {
  ok: false, error: null, playingAt: null, movedAt: null, media: [], steering: [],
  samples: [], pageErrors: [], console: [], failed: [],
};
const since = () => Date.now() - started;
const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

await runPage({
  executablePath: opt.chromium, userDataDir: opt["user-data-dir"],
  flags: ["--autoplay-policy=no-user-gesture-required"],
}, result, async (page) => {
  page.on("pageerror", (err) => result.pageErrors.push(String(err)));
  page.on("console", (msg) => result.console.push(`${msg.type()}: ${msg.text()}`.slice(0, 300)));
  page.on("requestfailed", (r) => result.failed.push(`${r.url()} ${r.failure()?.errorText}`));
  page.on("response", (r) => {
    const u = new URL(r.url());
    const entry = { port: u.port, path: u.pathname, status: r.status(), at: since() };
    if (/\.(m3u8|ts|m4s|mp4|m4a|aac)$/.test(u.pathname)) result.media.push(entry);
    if (u.pathname === "/steering") result.steering.push(entry);
  });
  await page.goto(opt.url, { timeout: 60000 });
  const video = () => page.evaluate(() => {
    const v = document.getElementById("video");
    return { currentTime: v.currentTime, paused: v.paused };
  });
  while (Date.now() < deadline) {
    const v = await video();
    result.samples.push({ at: since(), currentTime: v.currentTime });
    if (result.playingAt === null && v.currentTime > 0.5) {
      result.playingAt = since();
      console.log("PLAYING");
    }
    if (result.movedAt === null && result.media.some((m) => m.port === opt.to)) {
      result.movedAt = since();
    }
    if (result.movedAt !== null && since() - result.movedAt > 2000) break;
    await sleep(250);
  }
  if (result.movedAt === null) throw new Error("hls.js never fetched from the other edge");
});

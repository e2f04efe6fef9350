// edge360 player: plays the page's `src` with hls.js and shows, live, the rendition, the buffer
// ahead of the playhead and this node's concurrent viewers (GET /api/stats once a second).
// The configuration comes from the server as JSON in data-config (validated and escaped there);
// nothing here writes HTML, only textContent and data-* values.
"use strict";

(() => {
  const root = document.getElementById("player");
  const config = JSON.parse(root.dataset.config);
  const video = document.getElementById("video");
  const out = {
    rendition: document.getElementById("rendition"),
    buffer: document.getElementById("buffer"),
    viewers: document.getElementById("viewers"),
    status: document.getElementById("status"),
  };
  document.getElementById("src").value = config.src;

  const setStatus = (text) => { out.status.textContent = text; out.status.dataset.state = text; };

  // Rendition: hls.js level (or the decoded picture size when the browser plays HLS natively).
  let hls = null;
  const showRendition = () => {
    let height = video.videoHeight || 0;
    let bitrate = 0;
    if (hls && hls.currentLevel >= 0 && hls.levels[hls.currentLevel]) {
      const level = hls.levels[hls.currentLevel];
      height = level.height || height;
      bitrate = level.bitrate || 0;
    }
    if (!height && !bitrate) return;
    out.rendition.dataset.height = String(height);
    out.rendition.dataset.bitrate = String(bitrate);
    out.rendition.textContent = `${height}p` + (bitrate ? ` @ ${Math.round(bitrate / 1000)} kb/s` : "");
  };

  // Buffer ahead: the end of the buffered range holding the playhead, minus the playhead.
  const showBuffer = () => {
    const t = video.currentTime;
    let ahead = 0;
    for (let i = 0; i < video.buffered.length; i++) {
      if (video.buffered.start(i) <= t + 0.1 && t <= video.buffered.end(i)) {
        ahead = video.buffered.end(i) - t;
      }
    }
    out.buffer.dataset.seconds = ahead.toFixed(2);
    out.buffer.textContent = `${ahead.toFixed(1)} s`;
  };

  // Viewers: /api/stats never opens a session, so polling it does not count this page twice.
  let polls = 0;
  const pollStats = async () => {
    try {
      const r = await fetch(config.stats, { cache: "no-store" });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const stats = await r.json();
      out.viewers.dataset.count = String(stats.sessions_active);
      out.viewers.textContent = String(stats.sessions_active);
    } catch (e) {
      out.viewers.textContent = `? (${e.message})`;
    }
    out.viewers.dataset.polls = String(++polls);
    setTimeout(pollStats, 1000);
  };

  const tick = () => { showBuffer(); showRendition(); };
  for (const name of ["playing", "pause", "waiting", "ended", "seeking"]) {
    video.addEventListener(name, () => setStatus(name === "pause" ? "paused" : name));
  }
  video.addEventListener("timeupdate", tick);
  video.addEventListener("progress", tick);
  setInterval(tick, 500);
  pollStats();

  const play = () => {
    // muted autoplay is allowed everywhere; a refusal only leaves the controls to the viewer
    video.play().catch((e) => setStatus(`press play (${e.name})`));
  };

  if (typeof Hls !== "undefined" && Hls.isSupported()) {
    // CMCD (CTA-5004) on request: the server's session rule reads the player's buffer from it
    const options = { autoStartLoad: false };
    if (config.cmcd) options.cmcd = { useHeaders: config.cmcd === "headers" };
    hls = new Hls(options);
    hls.on(Hls.Events.MANIFEST_PARSED, () => {
      if (config.maxHeight) {
        // the highest level not taller than maxHeight (levels are sorted by bitrate); the
        // lowest when none fits, so a cap below the ladder still plays
        let cap = 0;
        hls.levels.forEach((level, i) => {
          if ((level.height || 0) <= config.maxHeight) cap = i;
        });
        hls.autoLevelCapping = cap;
        hls.startLevel = cap;
      }
      hls.startLoad();
      play();
    });
    hls.on(Hls.Events.LEVEL_SWITCHED, showRendition);
    hls.on(Hls.Events.ERROR, (_event, data) => {
      if (!data.fatal) return;
      if (data.type === Hls.ErrorTypes.NETWORK_ERROR) {
        setStatus(`network error (${data.details}), retrying`);
        hls.startLoad();
      } else if (data.type === Hls.ErrorTypes.MEDIA_ERROR) {
        setStatus(`media error (${data.details}), recovering`);
        hls.recoverMediaError();
      } else {
        setStatus(`error: ${data.details}`);
        hls.destroy();
      }
    });
    hls.loadSource(config.src);
    hls.attachMedia(video);
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = config.src;  // Safari plays HLS itself
    play();
  } else if (typeof Hls === "undefined") {
    setStatus("error: hls.js is missing on this server (run scripts/setup.sh)");
  } else {
    setStatus("error: this browser has no Media Source Extensions");
  }
})();

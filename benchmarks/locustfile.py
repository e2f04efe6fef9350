"""Locust version of the first-day replay: each user is one virtual HLS viewer, the user count
follows the model's concurrency curve (compressed by SPEED).

Locust is an optional extra (`pip install 'edge360[locust]'`); importing this file without it
raises a clear ImportError. The viewer logic reuses edge360.replay.player's parsers and link mix.

    locust -f benchmarks/locustfile.py --host http://127.0.0.1:8080
    env: REPLAY_VIEWS (1000000), REPLAY_PEAK (60000), REPLAY_SCALE (0.01), REPLAY_SPEED (60),
         REPLAY_MASTER (/demo/master.m3u8)
"""

from __future__ import annotations

import os
import random
import secrets
import time

try:
    from locust import HttpUser, LoadTestShape, task
except ImportError as exc:           # optional extra: say how to get it
    raise ImportError("benchmarks/locustfile.py needs locust: pip install 'edge360[locust]'"
                      ) from exc

from edge360.replay.model import calibrate
from edge360.replay.player import (
    BURST,
    HEADROOM,
    LINKS,
    PlaylistError,
    parse_master,
    parse_media,
    sid_of,
    with_sid,
)

VIEWS = float(os.environ.get("REPLAY_VIEWS", "1000000"))
PEAK = float(os.environ.get("REPLAY_PEAK", "60000"))
SCALE = float(os.environ.get("REPLAY_SCALE", "0.01"))
SPEED = float(os.environ.get("REPLAY_SPEED", "60"))
MASTER = os.environ.get("REPLAY_MASTER", "/demo/master.m3u8")
CURVE = calibrate(VIEWS, PEAK)


class Viewer(HttpUser):  # type: ignore[misc]
    """One looping viewer: master, rendition by link speed, burst, then paced segments."""

    def on_start(self) -> None:
        self.rng = random.Random()
        self.sid: str | None = None

    def _get(self, url: str, name: str, byterange: tuple[int, int] | None = None) -> str | None:
        if self.sid and sid_of(url) is None:
            url = with_sid(url, self.sid)
        headers = {"Range": f"bytes={byterange[0]}-{byterange[1]}"} if byterange else None
        with self.client.get(url, name=name, headers=headers, catch_response=True) as resp:
            if resp.status_code not in (200, 206):
                resp.failure(f"HTTP {resp.status_code}")
                return None
            return str(resp.text) if name != "segment" else ""

    @task  # type: ignore[untyped-decorator]
    def watch(self) -> None:
        base = self.host.rstrip("/") + MASTER
        text = self._get(base, "master")
        if text is None:
            return
        try:
            variants = parse_master(text, base)
        except PlaylistError:
            return
        if sid_of(variants[0][1]) is None:
            self.sid = secrets.token_urlsafe(12)
        r, link = self.rng.random(), LINKS[-1][1]
        for share, bits in LINKS:
            if r < share:
                link = bits
                break
            r -= share
        fitting = [u for bw, u in variants if bw <= link * HEADROOM] or [variants[0][1]]
        media_text = self._get(fitting[-1], "playlist")
        if media_text is None:
            return
        playlist = parse_media(media_text, fitting[-1])
        for i, seg in enumerate(playlist.segments):
            self._get(seg.url, "segment", seg.byterange)
            if i >= BURST - 1:
                time.sleep(seg.duration / SPEED)    # locust patches time.sleep under gevent


class FirstDay(LoadTestShape):  # type: ignore[misc]
    """User count = scaled model concurrency at the compressed time of day."""

    def tick(self) -> tuple[int, float] | None:
        sim = self.get_run_time() * SPEED
        if sim >= 24 * 3600:
            return None
        users = max(1, round(SCALE * CURVE.concurrency_at(sim)))
        return users, max(1.0, SCALE * CURVE.rate_at(sim) * SPEED)

"""One virtual HLS viewer: master, a rendition by link speed, a start-up burst, then paced segments.

It behaves like a player so the server sees what a real audience sends: the master playlist, the
media playlist of the rendition its simulated link can hold, a burst that fills the buffer, then one
segment per segment duration (compressed by `speed`), switching rendition when its link changes. It
carries the `sid` the server put into the playlist URIs (or its own when the server adds none) and
sends `Range` for EXT-X-BYTERANGE renditions. It measures start-up time, stalls and request latency
and records the ground truth of its session: its first and last answered request.

A live or event playlist (no EXT-X-ENDLIST) is followed as RFC 8216 §6.3.3-6.3.5 asks: join three
target durations from the end, reload every target duration (half of one after a reload that
changed nothing), fetch each new segment once by media sequence number, jump to the live edge when
the window has slid past the next one (counted as a skip), and play out once EXT-X-ENDLIST appears.

Playlists are read by replay/hls.py, a small line parser of the tags a player needs.
"""

from __future__ import annotations

import asyncio
import bisect
import gzip
import random
import secrets
import time
from collections import deque
from dataclasses import dataclass, field

import aiohttp

from edge360.replay.aioget import SessionGetter
from edge360.replay.hls import (
    MediaPlaylist,
    PlaylistError,
    Segment,
    parse_master,
    parse_media,
    sid_of,
    variant_names,
    with_sid,
)
from edge360.replay.model import Viewer
from edge360.replay.report import Histogram
from edge360.replay.wire import FetchError, Getter

# the parsers' old home: benchmarks/locustfile.py and the tests import them from here
__all__ = ["BURST", "HEADROOM", "LINKS", "MediaPlaylist", "PlayerConfig", "PlaylistError",
           "Segment", "Stats", "VirtualPlayer", "parse_master", "parse_media", "sid_of",
           "variant_names", "with_sid"]

# (share of viewers, link speed bit/s) per docs/TRAFFIC.md: fibre, good, fair, slow mobile
LINKS: tuple[tuple[float, float], ...] = ((0.25, 25e6), (0.35, 8e6), (0.25, 4e6), (0.15, 1.5e6))
BURST = 3                 # segments fetched back to back at start-up
SWITCH_PROBABILITY = 0.02  # per segment: the simulated link changes
HEADROOM = 0.8            # a player picks a rendition whose bandwidth fits 80 % of its link
#: a bound on a live viewer's steps (segment fetches and reloads) besides its watch time: a
#: server answering zero-length segments at once cannot spin it
MAX_LIVE_STEPS = 1_000_000


@dataclass
class Stats:
    """What one process's viewers measured; bounded by the number of viewers it runs."""

    idle_timeout: float
    requests: int = 0
    bytes: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latency: Histogram = field(default_factory=Histogram)
    startup: Histogram = field(default_factory=Histogram)
    stall_s: float = 0.0
    played_s: float = 0.0
    running: int = 0
    reloads: int = 0          # live playlists: media playlist reloads
    live_skips: int = 0       # live playlists: jumps to the live edge after falling behind
    #: ground truth per viewer that got an answer: (first answered request, last answered request)
    truth: list[tuple[float, float]] = field(default_factory=list)
    #: when finished viewers stop counting (last request + idle timeout), in finishing order
    counting_until: deque[float] = field(default_factory=deque)
    #: rendition mix: content seconds fetched per (time bucket, rendition name); bucket =
    #: monotonic seconds // PlayerConfig.mix_bucket_s. Bounded by buckets × renditions.
    mix: dict[tuple[int, str], float] = field(default_factory=dict)
    #: each rendition name's BANDWIDTH, to stack the mix from the lowest rendition up
    mix_bandwidth: dict[str, int] = field(default_factory=dict)

    def fetched(self, bucket: int, name: str, bandwidth: int, content_s: float) -> None:
        key = (bucket, name)
        self.mix[key] = self.mix.get(key, 0.0) + content_s
        self.mix_bandwidth[name] = bandwidth

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def achieved_now(self, now: float) -> int:
        """Viewers the ground-truth rule counts at `now`: running ones plus idle-timeout tails."""
        while self.counting_until and self.counting_until[0] <= now:
            self.counting_until.popleft()
        return self.running + len(self.counting_until)


@dataclass(frozen=True)
class PlayerConfig:
    master_url: str
    speed: float
    loop: bool
    seed: int
    mix_bucket_s: float = 1.0     # real seconds per rendition-mix bucket
    switch_probability: float = SWITCH_PROBABILITY   # tests raise it to force switches


class VirtualPlayer:
    """Plays one viewer's session against the target; `run` returns when its watch time is over."""

    def __init__(self, http: Getter | aiohttp.ClientSession, viewer: Viewer,
                 config: PlayerConfig, stats: Stats) -> None:
        # the replay's lean wire.Client, or a caller's own aiohttp session behind the same get
        self.http: Getter = SessionGetter(http) if isinstance(http, aiohttp.ClientSession) else http
        self.viewer, self.cfg, self.stats = viewer, config, stats
        self.rng = random.Random(f"{config.seed}:{viewer.index}")
        self.own_sid: str | None = None
        self.first: float | None = None
        self.last = 0.0
        # what the master playlist said, set by _play
        self.variants: list[tuple[int, str]] = []
        self.names: dict[str, str] = {}
        self.bandwidth: dict[str, int] = {}

    async def run(self) -> None:
        st = self.stats
        st.running += 1
        try:
            await self._play()
        finally:
            st.running -= 1
            if self.first is not None:
                st.truth.append((self.first, self.last))
                st.counting_until.append(self.last + st.idle_timeout)

    def _url(self, url: str) -> str:
        return with_sid(url, self.own_sid) if self.own_sid else url

    async def _fetch(self, url: str, *, text: bool, brange: tuple[int, int] | None = None
                     ) -> str | int | None:
        """GET url; the body as text (playlists) or its byte count (segments); None on failure."""
        headers = {"Range": f"bytes={brange[0]}-{brange[1]}"} if brange else None
        sent = time.monotonic()
        self.stats.requests += 1
        try:
            got = await self.http.get(self._url(url), headers, keep_body=text)
            if got.status not in (200, 206):
                self.stats.error(f"http_{got.status}")
                return None
            self.stats.bytes += got.size
            if text and got.body is not None:
                raw = got.body
                if (got.header("Content-Encoding") or "").strip().lower() == "gzip":
                    # players accept compressed playlists (servers gzip big rewritten ones);
                    # the client leaves bodies raw so segments are only counted
                    raw = gzip.decompress(raw)
                body: str | int = raw.decode("utf-8")
            else:
                body = got.size
        except FetchError as exc:
            self.stats.error(exc.kind)
            return None
        except (OSError, EOFError, UnicodeDecodeError):  # gzip.BadGzipFile is an OSError
            self.stats.error("bad_body")
            return None
        done = time.monotonic()
        self.stats.latency.add(done - sent)
        if self.first is None:
            self.first = sent
        self.last = sent
        return body

    def _pick(self, variants: list[tuple[int, str]]) -> str:
        r, link = self.rng.random(), LINKS[-1][1]
        for share, speed in LINKS:
            if r < share:
                link = speed
                break
            r -= share
        fitting = [url for bw, url in variants if bw <= link * HEADROOM]
        return fitting[-1] if fitting else variants[0][1]

    async def _media(self, url: str) -> MediaPlaylist | None:
        body = await self._fetch(url, text=True)
        if not isinstance(body, str):
            return None
        try:
            return parse_media(body, url)
        except (PlaylistError, ValueError):
            self.stats.error("bad_playlist")
            return None

    async def _play(self) -> None:
        cfg, v = self.cfg, self.viewer
        started = time.monotonic()
        body = await self._fetch(cfg.master_url, text=True)
        if not isinstance(body, str):
            return
        try:
            self.variants = parse_master(body, cfg.master_url)
        except PlaylistError:
            self.stats.error("bad_playlist")
            return
        if sid_of(self.variants[0][1]) is None:
            # the server does not hand out sessions: carry our own valid sid so it can count us
            self.own_sid = secrets.token_urlsafe(12)
        self.names = variant_names(body, cfg.master_url)
        self.bandwidth = {url: bw for bw, url in self.variants}
        rendition = self._pick(self.variants)
        loaded = time.monotonic()
        playlist = await self._media(rendition)
        if playlist is None:
            return
        buffer = _Buffer(self.stats, cfg.speed, started, watching=v.offset_s > 0)
        if playlist.live:
            await self._follow(rendition, playlist, loaded, buffer)
            return
        starts = playlist.starts
        total = starts[-1] + playlist.segments[-1].duration
        offset = v.offset_s % total if cfg.loop and total > 0 else v.offset_s
        index = max(bisect.bisect_right(starts, offset) - 1, 0)
        if offset >= total:
            return                      # already past the end of a title it does not loop
        content = 0.0                   # simulated seconds fetched
        while content < max(v.watch_s, 1e-9):
            if index >= len(playlist.segments):
                if not cfg.loop:
                    return
                index = 0
            due = buffer.due(playlist.segments[index].duration)
            if due is not None and (delay := due - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            seg = playlist.segments[index]
            index += 1
            content += seg.duration
            if not await self._segment(seg, rendition, buffer):
                continue
            change = await self._switch(rendition)
            if change is not None:
                position = starts[index - 1] + seg.duration if index > 0 else 0.0
                rendition, playlist, _ = change
                starts = playlist.starts
                index = bisect.bisect_left(starts, position - 1e-6)

    async def _switch(self, rendition: str) -> tuple[str, MediaPlaylist, float] | None:
        """After a segment, the simulated link may change (cfg.switch_probability): the new
        rendition, its media playlist and when that load began; None when the player stays."""
        if self.rng.random() >= self.cfg.switch_probability:
            return None
        new = self._pick(self.variants)
        if new == rendition:
            return None
        began = time.monotonic()
        switched = await self._media(new)
        return None if switched is None else (new, switched, began)

    async def _segment(self, seg: Segment, rendition: str, buffer: _Buffer) -> bool:
        """Fetch one segment and account for it (buffer, played time, rendition mix); False when
        it got no answer."""
        got = await self._fetch(seg.url, text=False, brange=seg.byterange)
        now = time.monotonic()
        if got is None:
            buffer.fetched += 1
            return False
        bandwidth = self.bandwidth[rendition]
        self.stats.played_s += seg.duration
        self.stats.fetched(int(now // self.cfg.mix_bucket_s),
                           self.names.get(rendition, f"{bandwidth / 1e6:.1f} Mbit/s"),
                           bandwidth, seg.duration)
        buffer.landed(now, seg.duration)
        return True

    async def _follow(self, rendition: str, playlist: MediaPlaylist, loaded: float,
                      buffer: _Buffer) -> None:
        """Follow a live or event playlist (RFC 8216 §6.3.4-6.3.5) from its live edge until the
        viewer's watch time is over or the stream has ended and its last segment is fetched.

        A live viewer's watch time is wall time too (compressed by `speed`): segments appear only
        as fast as the stream makes them, so a stalled stream cannot keep the viewer forever."""
        cfg, st = self.cfg, self.stats
        watch = max(self.viewer.watch_s, 1e-9)
        leave_at = buffer.started + watch / cfg.speed
        sequence = playlist.live_edge()
        reload_at = loaded + playlist.reload_s / cfg.speed   # measured from the load's start
        content = 0.0
        for _ in range(MAX_LIVE_STEPS):
            if content >= watch or time.monotonic() >= leave_at:
                return
            place = playlist.place(sequence)
            if place == "over":
                return                  # EXT-X-ENDLIST and every segment fetched: played out
            if place == "behind":
                # the window slid past the next segment: rejoin at the live edge, as players do
                st.live_skips += 1
                sequence = playlist.live_edge()
                continue
            seg = playlist.segment(sequence)     # None: not published yet ("ahead")
            due = None if seg is None else buffer.due(seg.duration)
            # fetch when the buffer wants the segment before the next reload is due; a full
            # buffer still reloads on time, as a player keeps its playlist fresh
            if seg is not None and (not playlist.live or due is None or due <= reload_at):
                if due is not None and not await _sleep_until(due, leave_at):
                    return
                sequence += 1
                content += seg.duration
                if not await self._segment(seg, rendition, buffer):
                    continue
                change = await self._switch(rendition)
                if change is not None:
                    # go on with the same media sequence number in the new rendition: common
                    # live packagers number the renditions alike, though RFC 8216 §6.3 tells
                    # clients not to assume it; a server that differs would need matching by
                    # EXT-X-PROGRAM-DATE-TIME instead
                    rendition, playlist, began = change
                    reload_at = began + playlist.reload_s / cfg.speed
                continue
            if not await _sleep_until(reload_at, leave_at):
                return
            began = time.monotonic()
            reloaded = await self._media(rendition)
            st.reloads += 1
            if reloaded is not None and reloaded != playlist:
                playlist = reloaded
                reload_at = began + playlist.reload_s / cfg.speed
            else:
                # §6.3.4: unchanged (or failed), so retry after half a target duration
                reload_at = time.monotonic() + playlist.reload_s / 2 / cfg.speed


class _Buffer:
    """The simulated play-out buffer: when the next fetch is due, and the start-up time and
    stalls a segment's arrival shows. Times are `time.monotonic()` seconds."""

    def __init__(self, stats: Stats, speed: float, started: float, *, watching: bool) -> None:
        self.stats, self.speed, self.started = stats, speed, started
        self.watching = watching    # already watching when the window opened: no start-up
        self.dry_at: float | None = None   # real time the buffer runs dry
        self.fetched = 0

    def due(self, duration: float) -> float | None:
        """When to fetch a segment of `duration`; None while the start-up burst is on."""
        if self.fetched >= BURST and self.dry_at is not None:
            # steady state: keep BURST-1 segments of buffer ahead of the play head
            return self.dry_at - (BURST - 1) * duration / self.speed
        return None

    def landed(self, now: float, duration: float) -> None:
        self.fetched += 1
        play = duration / self.speed
        if self.dry_at is None and self.watching:
            # its buffer is full, no start-up
            self.dry_at = now + BURST * play
            self.fetched = BURST
        elif self.dry_at is None:
            self.stats.startup.add(now - self.started)
            self.dry_at = now + play
        elif now > self.dry_at:
            self.stats.stall_s += (now - self.dry_at) * self.speed
            self.dry_at = now + play
        else:
            self.dry_at += play


async def _sleep_until(when: float, leave_at: float) -> bool:
    """Sleep until `when`; False (after sleeping until `leave_at`) when the viewer leaves first."""
    wake = min(when, leave_at)
    delay = wake - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
    return when < leave_at

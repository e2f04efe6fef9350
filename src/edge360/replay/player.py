"""One virtual HLS viewer: master, a rendition by link speed, a start-up burst, then paced segments.

It behaves like a player so the server sees what a real audience sends: the master playlist, the
media playlist of the rendition its simulated link can hold, a burst that fills the buffer, then one
segment per segment duration (compressed by `speed`), switching rendition when its link changes. It
carries the `sid` the server put into the playlist URIs (or its own when the server adds none) and
sends `Range` for EXT-X-BYTERANGE renditions. It measures start-up time, stalls and request latency
and records the ground truth of its session: its first and last answered request.

Playlists are read with a small line parser (RFC 8216 §4.3 tags the player needs) rather than m3u8,
which stays in playlist.py; the player only needs URIs, bandwidths, durations and byte ranges.
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
from urllib.parse import parse_qs, urljoin, urlsplit

import aiohttp

from edge360.replay.model import Viewer
from edge360.replay.report import Histogram

# (share of viewers, link speed bit/s) per TRAFFIC.md: fibre, good, fair, slow mobile
LINKS: tuple[tuple[float, float], ...] = ((0.25, 25e6), (0.35, 8e6), (0.25, 4e6), (0.15, 1.5e6))
BURST = 3                 # segments fetched back to back at start-up
SWITCH_PROBABILITY = 0.02  # per segment: the simulated link changes
HEADROOM = 0.8            # a player picks a rendition whose bandwidth fits 80 % of its link
_SID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


class PlaylistError(Exception):
    """A playlist the player cannot use (not HLS, no variants, no segments)."""


@dataclass(frozen=True)
class Segment:
    duration: float
    url: str
    byterange: tuple[int, int] | None   # (first byte, last byte) inclusive, for a Range header


@dataclass(frozen=True)
class MediaPlaylist:
    segments: tuple[Segment, ...]
    ended: bool

    @property
    def starts(self) -> list[float]:
        out: list[float] = []
        t = 0.0
        for s in self.segments:
            out.append(t)
            t += s.duration
        return out


def parse_master(text: str, base: str) -> list[tuple[int, str]]:
    """(bandwidth, absolute URI) of every variant, sorted by bandwidth."""
    lines = [ln.strip() for ln in text.splitlines()]
    if not lines or not lines[0].startswith("#EXTM3U"):
        raise PlaylistError("not an HLS playlist (no #EXTM3U)")
    variants: list[tuple[int, str]] = []
    pending: int | None = None
    for ln in lines:
        if ln.startswith("#EXT-X-STREAM-INF:"):
            pending = _attr_int(ln, "BANDWIDTH")
        elif pending is not None and ln and not ln.startswith("#"):
            variants.append((pending, urljoin(base, ln)))
            pending = None
    if not variants:
        raise PlaylistError("not a master playlist (no EXT-X-STREAM-INF)")
    return sorted(variants)


def variant_names(text: str, base: str) -> dict[str, str]:
    """A readable name per variant URI for the report's rendition mix: '1080p 5.0 Mbit/s'."""
    names: dict[str, str] = {}
    pending: str | None = None
    for ln in (raw.strip() for raw in text.splitlines()):
        if ln.startswith("#EXT-X-STREAM-INF:"):
            res = next((p.split("=", 1)[1] for p in ln.split(":", 1)[1].split(",")
                        if p.strip().startswith("RESOLUTION=")), "")
            height = res.partition("x")[2].strip('"')
            mbit = f"{_attr_int(ln, 'BANDWIDTH') / 1e6:.1f} Mbit/s"
            pending = f"{height}p {mbit}" if height.isdigit() else mbit
        elif pending is not None and ln and not ln.startswith("#"):
            names[urljoin(base, ln)] = pending
            pending = None
    return names


def _attr_int(line: str, name: str) -> int:
    for part in line.split(":", 1)[1].split(","):
        key, _, value = part.partition("=")
        if key.strip() == name:
            try:
                return int(value.strip().strip('"'))
            except ValueError:
                return 0
    return 0


def parse_media(text: str, base: str) -> MediaPlaylist:
    """Segments with durations and resolved byte ranges (an offset-less range follows the last)."""
    if not text.startswith("#EXTM3U"):
        raise PlaylistError("media playlist without #EXTM3U")
    segments: list[Segment] = []
    duration: float | None = None
    brange: tuple[int, int | None] | None = None
    next_offset: dict[str, int] = {}
    ended = False
    for raw in text.splitlines():
        ln = raw.strip()
        if ln.startswith("#EXTINF:"):
            duration = float(ln[8:].split(",", 1)[0] or 0)
        elif ln.startswith("#EXT-X-BYTERANGE:"):
            n_text, _, at_text = ln[17:].partition("@")
            brange = (int(n_text), int(at_text) if at_text else None)
        elif ln.startswith("#EXT-X-ENDLIST"):
            ended = True
        elif ln and not ln.startswith("#") and duration is not None:
            url = urljoin(base, ln)
            rng: tuple[int, int] | None = None
            if brange is not None:
                length, off = brange
                start = off if off is not None else next_offset.get(url, 0)
                next_offset[url] = start + length
                rng = (start, start + length - 1)
            segments.append(Segment(duration=duration, url=url, byterange=rng))
            duration, brange = None, None
    if not segments:
        raise PlaylistError("media playlist without segments")
    return MediaPlaylist(segments=tuple(segments), ended=ended)


def sid_of(url: str) -> str | None:
    values = parse_qs(urlsplit(url).query).get("sid")
    if values and 8 <= len(values[0]) <= 64 and set(values[0]) <= _SID_CHARS:
        return values[0]
    return None


def with_sid(url: str, sid: str) -> str:
    return f"{url}{'&' if urlsplit(url).query else '?'}sid={sid}"


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


class VirtualPlayer:
    """Plays one viewer's session against the target; `run` returns when its watch time is over."""

    def __init__(self, http: aiohttp.ClientSession, viewer: Viewer, config: PlayerConfig,
                 stats: Stats) -> None:
        self.http, self.viewer, self.cfg, self.stats = http, viewer, config, stats
        self.rng = random.Random(f"{config.seed}:{viewer.index}")
        self.own_sid: str | None = None
        self.first: float | None = None
        self.last = 0.0

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
            async with self.http.get(self._url(url), headers=headers) as resp:
                if resp.status not in (200, 206):
                    self.stats.error(f"http_{resp.status}")
                    await resp.read()
                    return None
                if text:
                    raw = await resp.read()
                    self.stats.bytes += len(raw)
                    if resp.headers.get("Content-Encoding", "").strip().lower() == "gzip":
                        # players accept compressed playlists (servers gzip big rewritten ones);
                        # the session leaves bodies raw so segments are only counted
                        raw = gzip.decompress(raw)
                    body: str | int = raw.decode("utf-8")
                else:
                    n = 0
                    while chunk := await resp.content.readany():
                        n += len(chunk)
                    self.stats.bytes += n
                    body = n
        except TimeoutError:
            self.stats.error("timeout")
            return None
        except aiohttp.ClientConnectionError:
            self.stats.error("connection")
            return None
        except aiohttp.ClientError:
            self.stats.error("client")
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
            variants = parse_master(body, cfg.master_url)
        except PlaylistError:
            self.stats.error("bad_playlist")
            return
        if sid_of(variants[0][1]) is None:
            # the server does not hand out sessions: carry our own valid sid so it can count us
            self.own_sid = secrets.token_urlsafe(12)
        names = variant_names(body, cfg.master_url)
        bandwidth = {url: bw for bw, url in variants}
        rendition = self._pick(variants)
        playlist = await self._media(rendition)
        if playlist is None:
            return
        starts = playlist.starts
        total = starts[-1] + playlist.segments[-1].duration
        offset = v.offset_s % total if cfg.loop and total > 0 else v.offset_s
        index = max(bisect.bisect_right(starts, offset) - 1, 0)
        if offset >= total:
            return                      # already past the end of a title it does not loop
        content = 0.0                   # simulated seconds fetched
        dry_at: float | None = None     # real time the buffer runs dry
        fetched = 0
        while content < max(v.watch_s, 1e-9):
            if index >= len(playlist.segments):
                if not cfg.loop:
                    return
                index = 0
            if fetched >= BURST and dry_at is not None:
                # steady state: keep BURST-1 segments of buffer ahead of the play head
                goal = (BURST - 1) * playlist.segments[index].duration / cfg.speed
                delay = dry_at - goal - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            seg = playlist.segments[index]
            got = await self._fetch(seg.url, text=False, brange=seg.byterange)
            now = time.monotonic()
            index += 1
            content += seg.duration
            fetched += 1
            if got is None:
                continue
            play = seg.duration / cfg.speed
            self.stats.played_s += seg.duration
            self.stats.fetched(int(now // cfg.mix_bucket_s),
                               names.get(rendition, f"{bandwidth[rendition] / 1e6:.1f} Mbit/s"),
                               bandwidth[rendition], seg.duration)
            if dry_at is None and v.offset_s > 0:
                # already watching when the window opened: its buffer is full, no start-up
                dry_at = now + BURST * play
                fetched = BURST
            elif dry_at is None:
                self.stats.startup.add(now - started)
                dry_at = now + play
            elif now > dry_at:
                self.stats.stall_s += (now - dry_at) * cfg.speed
                dry_at = now + play
            else:
                dry_at += play
            if self.rng.random() < SWITCH_PROBABILITY:
                new = self._pick(variants)
                if new != rendition:
                    switched = await self._media(new)
                    if switched is not None:
                        position = starts[index - 1] + seg.duration if index > 0 else 0.0
                        rendition, playlist, starts = new, switched, switched.starts
                        index = bisect.bisect_left(starts, position - 1e-6)

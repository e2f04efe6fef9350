"""One virtual HLS viewer: master, a rendition by link speed, then segments as real players buffer.

It behaves like a player so the server sees what a real audience sends: the master playlist, the
media playlist of the rendition its simulated link can hold, then segments while its forward buffer
is below the profile's goal (replay/profiles.py: hls.js by default): after it starts it fills to
the goal as fast as its simulated link allows (a segment takes BANDWIDTH x duration over the link,
compressed by `speed`), then fetches one segment per segment duration. It switches rendition when
its link changes, carries the `sid` the server put into the playlist URIs (or its own when the
server adds none), sends `Range` for EXT-X-BYTERANGE renditions and, with `cmcd`, CTA-5004 data.

It leaves at its arrival plus its watch time (real seconds: watch / speed), whatever it fetched,
so the audience's size follows the model; without --loop it also leaves once the title has played
out. It keeps its own connection for the whole visit when the caller gives it a wire.Line. It
measures start-up, stalls, request latency and how late it woke for each due fetch, and leaves a
truth.Record. A failed segment is retried RETRIES times, a second of media time apart, then the
viewer gives up.

A live or event playlist (no EXT-X-ENDLIST) is followed as RFC 8216 §6.3.3-6.3.5 asks: join three
target durations from the end, reload every target duration (half of one after a reload that
changed nothing), fetch each new segment once by media sequence number, jump to the live edge when
the window has slid past the next one (counted as a skip), and play out once EXT-X-ENDLIST appears.
"""

from __future__ import annotations

import asyncio
import bisect
import gzip
import random
import secrets
import time
import uuid
from dataclasses import dataclass

import aiohttp

from edge360.replay import cmcd
from edge360.replay.aioget import SessionGetter
from edge360.replay.buffer import PlayBuffer
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
from edge360.replay.links import HEADROOM, LINKS, draw_link, expected_bitrate, pick
from edge360.replay.live import follow
from edge360.replay.model import Viewer
from edge360.replay.pacer import Pacer, pacer_of
from edge360.replay.profiles import HLSJS, PlayerProfile
from edge360.replay.queue import admitted_master
from edge360.replay.stats import Stats
from edge360.replay.steer import Steerer, parse_pathways
from edge360.replay.truth import Record
from edge360.replay.wire import Answer, FetchError, Getter

# the parsers' old home: benchmarks/locustfile.py and the tests import them from here
__all__ = ["BURST", "HEADROOM", "LINKS", "MediaPlaylist", "PlayerConfig", "PlaylistError",
           "Segment", "Stats", "VirtualPlayer", "expected_bitrate", "parse_master", "parse_media",
           "sid_of", "variant_names", "with_sid"]

BURST = 3                 # the Locust approximation's start-up burst (benchmarks/locustfile.py)
SWITCH_PROBABILITY = 0.02  # per segment: the simulated link changes
RETRIES = 3               # a failed segment is asked again this often before the viewer gives up
RETRY_S = 1.0             # media seconds between those attempts
#: a bound on a viewer's steps (segment fetches and reloads) besides its watch time: a server
#: answering zero-length segments at once cannot spin it
MAX_STEPS = 1_000_000


@dataclass(frozen=True)
class PlayerConfig:
    master_url: str
    speed: float
    loop: bool
    seed: int
    mix_bucket_s: float = 1.0     # real seconds per rendition-mix bucket
    switch_probability: float = SWITCH_PROBABILITY   # tests raise it to force switches
    profile: PlayerProfile = HLSJS
    cmcd: str | None = None       # "query" or "headers": send CTA-5004 data that way
    links: tuple[tuple[float, float], ...] = LINKS
    #: monotonic time the window opened: viewers already watching then watch from here
    epoch: float | None = None


class VirtualPlayer:
    """Plays one viewer's visit against the target; `run` returns when the viewer has left."""

    def __init__(self, http: Getter | aiohttp.ClientSession, viewer: Viewer,
                 config: PlayerConfig, stats: Stats) -> None:
        # a wire.Line or wire.Client, or a caller's own aiohttp session behind the same get
        self.http: Getter = SessionGetter(http) if isinstance(http, aiohttp.ClientSession) else http
        self.viewer, self.cfg, self.stats = viewer, config, stats
        self.rng = random.Random(f"{config.seed}:{viewer.index}")
        self.own_sid: str | None = None
        self.cmcd_sid = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        self.first: float | None = None           # first answered request
        self.first_segment: float | None = None    # of the run the target counts now
        self.earlier: list[tuple[float, float]] = []  # counts the target closed (truth.Record)
        self.last = 0.0
        self.fetched_s = 0.0                      # media seconds of answered segments
        self.watch_from: float | None = None
        self.started = self.quit_at = 0.0
        self.link = config.links[-1][1]
        self.link_free = 0.0                      # the simulated link is busy until then
        self.stream_type: str | None = None
        self.buffer: PlayBuffer | None = None
        # what the master playlist said, set by _play
        self.variants: list[tuple[int, str]] = []
        self.names: dict[str, str] = {}
        self.bandwidth: dict[str, int] = {}
        self.steer: Steerer | None = None         # the master's content steering, if any
        self.refusal: Answer | None = None        # the master's last 503 (a queue, maybe)
        self.waited = 0.0                         # real seconds it waited in a queue
        self.pacer: Pacer | None = None           # its loop's shared wake-ups, when it first sleeps

    async def run(self) -> None:
        st = self.stats
        st.running += 1
        self.started = time.monotonic()
        self.quit_at = self.started + self.viewer.watch_s / self.cfg.speed
        try:
            await self._play()
        finally:
            # it left at its quit time, however late this process woke to let it go
            now = min(time.monotonic(), self.quit_at)
            st.running -= 1
            if self.buffer is not None:
                self.buffer.finish(now)
                st.stall_s += self.buffer.stall_s
                st.played_s += self.buffer.played_s
            if self.first_segment is not None:
                st.counting -= 1
            if self.watch_from is not None:
                st.watching_now -= 1
            if self.first is not None:
                st.left(Record(self.first_segment, self.last, self.fetched_s, now,
                               self.watch_from, tuple(self.earlier)))

    async def _fetch(self, url: str, *, text: bool, brange: tuple[int, int] | None = None,
                     bandwidth: int | None = None, duration: float | None = None,
                     queue: bool = False) -> str | int | None:
        """GET url; the body as text (playlists) or its byte count (segments); None on failure
        (with `queue`, a 503 with Retry-After is kept in `refusal` for the caller instead)."""
        headers = {"Range": f"bytes={brange[0]}-{brange[1]}"} if brange else {}
        url = with_sid(url, self.own_sid) if self.own_sid else url
        if self.cfg.cmcd:
            buf = self.buffer
            if buf is not None:
                buf.advance(time.monotonic())
            top = self.variants[-1][0] / 1000 if self.variants else None
            data = cmcd.Data(
                ot="m" if text else cmcd.object_type(url), sid=self.cmcd_sid, pr=self.cfg.speed,
                st=self.stream_type, br_kbps=None if bandwidth is None else bandwidth / 1000,
                tb_kbps=None if bandwidth is None else top, d_s=duration,
                bl_s=None if buf is None or duration is None else buf.ahead,
                su=buf is None or buf.starting, bs=buf is not None and buf.take_starved())
            if self.cfg.cmcd == "headers":
                headers.update(cmcd.headers(data))
            else:
                url = cmcd.with_query(url, data)
        sent = time.monotonic()
        self.stats.requests += 1
        try:
            got = await self.http.get(url, headers or None, keep_body=text)
            if got.status not in (200, 206):
                if queue and got.status == 503 and got.header("Retry-After") is not None:
                    self.refusal = got
                    return None
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
            self.stats.error(exc.kind, exc.detail)
            return None
        except (OSError, EOFError, UnicodeDecodeError):  # gzip.BadGzipFile is an OSError
            self.stats.error("bad_body")
            return None
        self.stats.latency.add(time.monotonic() - sent)
        if self.first is None:
            self.first = sent
        elif self.first_segment is not None:
            # after a silence the target's rule does not cover, it closed this count and counts
            # a new view at the next segment: the truth does too (docs/FIRST-DAY.md)
            end = self.stats.rule.end(self.first_segment, self.last, self.fetched_s)
            if sent >= end:
                self.earlier.append((self.first_segment, end))
                self.first_segment, self.fetched_s = None, 0.0
                self.stats.counting -= 1
        self.last = sent
        return body

    def _pick(self, variants: list[tuple[int, str]]) -> str:
        """Draw the viewer's link speed and the highest rendition that fits it."""
        self.link = draw_link(self.rng.random(), self.cfg.links)
        return pick(variants, self.link)

    async def _media(self, url: str) -> MediaPlaylist | None:
        body = await self._fetch(url, text=True)
        if not isinstance(body, str):
            return None
        try:
            playlist = parse_media(body, url)
        except (PlaylistError, ValueError):
            self.stats.error("bad_playlist")
            return None
        self.stream_type = "l" if playlist.live else "v"
        return playlist

    async def _play(self) -> None:
        cfg, v = self.cfg, self.viewer
        # with CMCD the master request's `sid` opens the session under the player's own id
        admitted = await admitted_master(self)
        if admitted is None:
            return
        body, url = admitted
        try:
            self.variants = parse_master(body, url)
        except PlaylistError:
            self.stats.error("bad_playlist")
            return
        self.bandwidth = {u: bw for bw, u in self.variants}  # every pathway's variants
        paths = parse_pathways(body, url)
        if paths.steered:
            self.steer = Steerer(paths)
            self.variants = self.steer.variants()
        if sid_of(self.variants[0][1]) is None:
            # the server does not hand out sessions: carry our own valid sid so it can count us
            self.own_sid = self.cmcd_sid if cfg.cmcd else secrets.token_urlsafe(12)
        self.names = variant_names(body, url)
        rendition = self._pick(self.variants)
        loaded = time.monotonic()
        playlist = await self._media(rendition)
        if playlist is None:
            return
        # a viewer already watching when the window opened has the profile's goal buffered
        # (not one that had to wait in a queue: it was not watching, it was refused)
        ahead = self._goal(rendition) if v.offset_s > 0 and not self.waited else 0.0
        self.buffer = PlayBuffer(cfg.profile, cfg.speed, time.monotonic(), inherited_s=ahead)
        if ahead > 0:
            self._watching(cfg.epoch if cfg.epoch is not None else self.started)
        if playlist.live:
            await follow(self, rendition, playlist, loaded, self.buffer)
        else:
            await self._vod(rendition, playlist, self.buffer)

    def _goal(self, rendition: str) -> float:
        return self.cfg.profile.goal_for(self.bandwidth.get(rendition, 0))

    def _watching(self, since: float) -> None:
        self.watch_from = since
        self.stats.watching_now += 1

    async def _vod(self, rendition: str, playlist: MediaPlaylist, buffer: PlayBuffer) -> None:
        cfg, v = self.cfg, self.viewer
        starts = playlist.starts
        total = starts[-1] + playlist.segments[-1].duration
        if not cfg.loop and v.offset_s >= total:
            return                      # already past the end of a title it does not loop
        # the next segment to fetch holds the end of what is buffered ahead of the play head
        position = v.offset_s + buffer.ahead
        if cfg.loop and total > 0:
            position %= total
        index = len(starts) if position >= total else max(
            bisect.bisect_right(starts, position) - 1, 0)
        failures = 0
        for _ in range(MAX_STEPS):
            if index >= len(playlist.segments):
                if not cfg.loop:
                    buffer.end(time.monotonic())
                    await self._sleep_until(buffer.played_out_at(time.monotonic()))
                    return
                index = 0
            seg = playlist.segments[index]
            due = max(buffer.due(time.monotonic(), self._goal(rendition)), self.link_free)
            if not await self._sleep_until(due):
                return
            if not await self._segment(seg, rendition, buffer):
                failures += 1
                moved = await self._repath(rendition, failed=True)
                if moved is not None:  # its pathway failed: the same segment from another
                    position = starts[index]
                    rendition, playlist, _ = moved
                    starts = playlist.starts
                    index = bisect.bisect_left(starts, position - 1e-6)
                    continue
                if failures > RETRIES:
                    self.stats.gave_up += 1
                    return
                if not await self._sleep_until(time.monotonic() + RETRY_S / cfg.speed):
                    return
                continue
            failures = 0
            index += 1
            change = await self._switch(rendition)
            if change is not None:
                position = starts[index - 1] + seg.duration
                rendition, playlist, _ = change
                starts = playlist.starts
                index = bisect.bisect_left(starts, position - 1e-6)

    async def _switch(self, rendition: str) -> tuple[str, MediaPlaylist, float] | None:
        """After a segment, the simulated link may change (cfg.switch_probability): the new
        rendition, its media playlist and when that load began; None when the player stays.
        Content steering may move it to another pathway first (`_repath`)."""
        if self.steer is not None:  # (no coroutine to make per segment when not steered)
            moved = await self._repath(rendition)
            if moved is not None:
                return moved
        if self.rng.random() >= self.cfg.switch_probability:
            return None
        new = self._pick(self.variants)
        if new == rendition:
            return None
        began = time.monotonic()
        switched = await self._media(new)
        return None if switched is None else (new, switched, began)

    async def _repath(self, rendition: str, *, failed: bool = False
                      ) -> tuple[str, MediaPlaylist, float] | None:
        """Follow content steering (replay/steer.py): after a due reload of the steering
        manifest, or at once when a segment of the current pathway failed, move to the pathway
        it names, at the same rung; None when the player stays where it is."""
        st, now = self.steer, time.monotonic()
        if st is None:
            return None
        if failed:
            target = st.failed(now)
        elif st.due(now):
            errors = st.errors
            target = await st.poll(self.http, now, self.link)
            self.stats.steering_polls += 1
            self.stats.steering_errors += st.errors - errors
        else:
            return None
        if target is None:
            return None
        new = st.same_rung(rendition, target)
        playlist = await self._media(new)
        if playlist is None:
            st.penalized[target] = time.monotonic()
            return None
        st.pathway = target
        self.variants = st.variants()
        self.stats.pathway_moves += 1
        return new, playlist, now

    async def _segment(self, seg: Segment, rendition: str, buffer: PlayBuffer) -> bool:
        """Fetch one segment and account for it (buffer, truth, link, rendition mix); False when
        it got no answer."""
        bandwidth = self.bandwidth[rendition]
        sent = time.monotonic()
        got = await self._fetch(seg.url, text=False, brange=seg.byterange, bandwidth=bandwidth,
                                duration=seg.duration)
        if got is None:
            return False
        now = time.monotonic()
        if self.first_segment is None:
            self.first_segment = sent
            self.stats.counting += 1
        self.fetched_s += seg.duration
        if self.steer is not None:
            pathways = self.stats.pathways
            pathways[self.steer.pathway] = pathways.get(self.steer.pathway, 0) + 1
        # the simulated link carries BANDWIDTH x duration bits (compressed by speed)
        self.link_free = sent + bandwidth * seg.duration / (self.link * self.cfg.speed)
        # (the fallback is formatted only for a rendition the master did not name)
        name = self.names.get(rendition) or f"{bandwidth / 1e6:.1f} Mbit/s"
        self.stats.fetched(int(now // self.cfg.mix_bucket_s), name, bandwidth, seg.duration)
        buffer.landed(now, seg.duration)
        if self.watch_from is None and buffer.first_frame is not None:
            self.stats.startup.add(buffer.first_frame - self.started)
            self._watching(buffer.first_frame)
        return True

    async def _sleep_until(self, when: float) -> bool:
        """Sleep until `when`, recording how late the wake-up came; False (after sleeping until
        the viewer's quit time) when the viewer leaves first."""
        wake = min(when, self.quit_at)
        delay = wake - time.monotonic()
        if delay > 0:
            pacer = self.pacer
            if pacer is None:
                pacer = self.pacer = pacer_of(asyncio.get_running_loop())
            await pacer.sleep(delay)
            self.stats.late(time.monotonic() - wake)
        return when < self.quit_at

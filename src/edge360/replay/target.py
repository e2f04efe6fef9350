"""The target of a replay: is it a reachable master playlist, by which rule does it count viewers
(its `/api/stats` idle timeout and, for the play-out rule, its time scale), how long are its
segments, and how many viewers does its /metrics report (edge360_sessions_active summed)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from edge360.core.errors import UsageError
from edge360.replay.hls import PlaylistError, parse_master, parse_media

DEFAULT_IDLE_TIMEOUT = 30.0
#: times the probe waits in a target's admission queue, and the longest wait it takes each time
PROBE_QUEUE_TRIES = 4
PROBE_QUEUE_WAIT_S = 10.0


@dataclass(frozen=True)
class TargetInfo:
    idle_timeout: float
    has_metrics: bool
    metrics_url: str
    variants: int
    #: `/api/stats` time_scale: the target counts by the play-out rule (None: by requests alone)
    time_scale: float | None = None
    #: the longest segment of the lowest rendition (None when its playlist could not be read)
    segment_s: float | None = None
    bandwidths: tuple[int, ...] = ()     # every variant's BANDWIDTH
    #: the lowest rendition's first segment's bytes over what its BANDWIDTH promises (a stand-in
    #: title of tiny segments is far below 1); None when unknown
    size_ratio: float | None = None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def parse_sessions_active(text: str) -> float | None:
    """Sum of `edge360_sessions_active` over its labels; None when the exposition lacks it."""
    total: float | None = None
    for family in text_string_to_metric_families(text):
        if family.name == "edge360_sessions_active":
            for sample in family.samples:
                if sample.name == "edge360_sessions_active":
                    total = (total or 0.0) + sample.value
    return total


async def probe(target: str) -> TargetInfo:
    """Check the target is a reachable master playlist; read idle_timeout; look for /metrics."""
    timeout = aiohttp.ClientTimeout(total=10)
    base = _origin(target)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        try:
            text = await _master(http, target)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise UsageError(f"--target {target} is unreachable: {exc or type(exc).__name__}"
                             ) from None
        try:
            variants = parse_master(text, target)
        except PlaylistError as exc:
            raise UsageError(f"--target {target} is {exc}") from None
        idle: float | None = DEFAULT_IDLE_TIMEOUT
        scale: float | None = None
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            async with http.get(base + "/api/stats") as resp:
                if resp.status == 200:
                    data = await resp.json(content_type=None)
                    if isinstance(data, dict):
                        idle = _number(data.get("idle_timeout"), idle)
                        scale = _number(data.get("time_scale"), None)
        segment_s, ratio = await _lowest(http, *variants[0])
        has_metrics = await sample_server(http, base + "/metrics") is not None
    return TargetInfo(idle_timeout=DEFAULT_IDLE_TIMEOUT if idle is None else idle,
                      has_metrics=has_metrics, metrics_url=base + "/metrics",
                      variants=len(variants), time_scale=scale or None, segment_s=segment_s,
                      bandwidths=tuple(bw for bw, _ in variants), size_ratio=ratio)


async def _master(http: aiohttp.ClientSession, target: str) -> str:
    """The target's master playlist; a target whose admission queue holds the probe (503 with
    Retry-After, docs/OVERLOAD.md) is asked again after the wait it names, a few times."""
    url = target
    for attempt in range(PROBE_QUEUE_TRIES):
        async with http.get(url) as resp:
            if resp.status == 200:
                return await resp.text(errors="replace")
            wait = resp.headers.get("Retry-After", "")
            if resp.status != 503 or not wait.isdigit() or attempt + 1 == PROBE_QUEUE_TRIES:
                raise UsageError(f"--target {target} answered HTTP {resp.status}")
            with contextlib.suppress(ValueError, aiohttp.ContentTypeError):
                data = await resp.json(content_type=None)
                if isinstance(data, dict) and isinstance(data.get("retry"), str):
                    url = urljoin(target, data["retry"])
        await asyncio.sleep(min(float(wait), PROBE_QUEUE_WAIT_S))
    raise UsageError(f"--target {target} kept its queue closed")


def _number(value: object, default: float | None) -> float | None:
    """A JSON number >= 0 (a bool is not one), else `default`."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return default


async def _lowest(http: aiohttp.ClientSession, bandwidth: int, url: str
                  ) -> tuple[float | None, float | None]:
    """The lowest rendition's longest segment (seconds) and its first segment's size against
    its BANDWIDTH (the size from its byte range, or a HEAD); None for what cannot be read."""
    segment_s, ratio = None, None
    with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, ValueError,
                             PlaylistError):
        async with http.get(url) as resp:
            if resp.status != 200:
                return None, None
            playlist = parse_media(await resp.text(errors="replace"), url)
        segment_s = max(seg.duration for seg in playlist.segments)
        first = playlist.segments[0]
        size = None
        if first.byterange is not None:
            size = first.byterange[1] - first.byterange[0] + 1
        else:
            async with http.head(first.url) as resp:
                if resp.status == 200 and resp.content_length is not None:
                    size = resp.content_length
        if size is not None and bandwidth > 0 and first.duration > 0:
            ratio = size * 8 / (first.duration * bandwidth)
    return segment_s, ratio


async def sample_server(http: aiohttp.ClientSession, url: str) -> float | None:
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=0.9)) as resp:
            if resp.status != 200:
                return None
            return parse_sessions_active(await resp.text())
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return None

"""The comparison groups of `python -m benchmarks.run` and the workloads each one measures.

A plain run measures every group in one run (one results file); `--only GROUP` measures one
(results/<date>-<group>.json). Each workload names the server pair that answers it: the two
origins, or an edge360 edge and an nginx proxy cache standing in front of the same origin (an
nginx origin or an edge360 origin, `--edge-origins`), over plain HTTP or HTTPS. Comparing two
edges in front of one origin keeps the origin out of the ratio.

- origin (the two origins): 218 B master playlist and .ts (req/s, p99); 8 MiB segment and
  random 1 MiB ranges (GB per server CPU-second).
- edge (the edges in front of each origin), cache hits: 218 B master playlist with a 4 h
  lifetime, live media playlist with a 2 s lifetime + stale-while-revalidate, 218 B .ts (req/s,
  p99); 8 MiB segment, random 1 MiB ranges (GB per server CPU-second); the last two again with
  a second edge360 edge answering from its disk tier.
- herd (the edges in front of each origin): a cold-miss herd, TTFB p50/p99/max and upstream
  fetches per herd.
- https (TLS edges in front of each origin): 218 B .ts hit (req/s, p99), 8 MiB segment (GB per
  server CPU-second), full handshakes (handshakes/s, server CPU per handshake).
"""

from __future__ import annotations

from benchmarks.harness import SID
from benchmarks.media import Media
from benchmarks.nginxref import LIFETIMES
from benchmarks.workloads import WrkWorkload

GROUPS = ("origin", "edge", "herd", "https")
#: the origins an edge is measured in front of, in run order
ORIGINS = ("nginx", "edge360")
SMALL_CONNECTIONS = 64
RANGE_CONNECTIONS = 64
_RATE = ("req_per_s", "p99_ms")
_BYTES = ("gb_per_cpu_s", "gb_per_pair_cpu_s", "gb_per_s", "p99_ms")


def edge_label(upstream: str, *, tls: bool = False) -> str:
    """The start of an edge row's name: which edges, in front of which origin."""
    return f"{'https ' if tls else ''}edge over {upstream} origin"


def herd_name(upstream: str) -> str:
    return f"{edge_label(upstream)}: cold-miss herd"


def origin_workloads(media: Media, *, big_connections: int, piece: int) -> list[WrkWorkload]:
    """The two origins, each serving the generated files (row names as in earlier results)."""
    q = f"?sid={SID}"
    return [
        WrkWorkload("origin: master playlist 218 B", "origin", media.master + q,
                    SMALL_CONNECTIONS, _RATE,
                    f"218-byte master playlist; edge360 rewrites it for sid {SID} (sent "
                    "private), nginx sends the file as is"),
        WrkWorkload("origin: small .ts 218 B", "origin", media.small + q, SMALL_CONNECTIONS,
                    _RATE, "218-byte segment-like object, not rewritten by either"),
        WrkWorkload("origin: 8 MiB segment", "origin", media.segment + q, big_connections,
                    _BYTES, f"whole {media.segment_size}-byte .ts from its file"),
        WrkWorkload("origin: 1 MiB ranges of 64 MiB", "origin", media.big + q,
                    RANGE_CONNECTIONS, _BYTES,
                    f"random {piece}-byte ranges of a {media.big_size}-byte .ts",
                    ranges=(media.big_size, piece), expect_status=206),
    ]


def edge_workloads(media: Media, upstream: str, *, big_connections: int,
                   piece: int) -> list[WrkWorkload]:
    """Cache hits at the edge360 edge and the nginx proxy cache in front of `upstream`."""
    q = f"?sid={SID}"
    label = edge_label(upstream)
    pair = f"edge/{upstream}"
    master_age = LIFETIMES["master_max_age"]
    live_age = LIFETIMES["live_max_age"]
    return [
        WrkWorkload(f"{label}: master playlist 218 B, 4 h lifetime", "edge", media.master + q,
                    SMALL_CONNECTIONS, _RATE,
                    f"218-byte master playlist, a cache hit; edge360 rewrites it for sid {SID} "
                    "(sent private), nginx sends its stored copy as is",
                    pair=pair, lifetime=f"Cache-Control: public, max-age={master_age}"),
        WrkWorkload(f"{label}: live media playlist, 2 s lifetime + stale-while-revalidate",
                    "edge", media.live + q, SMALL_CONNECTIONS, _RATE,
                    f"{media.live_size}-byte live media playlist (no EXT-X-ENDLIST): fresh for "
                    f"{live_age} s, then answered stale while one background request refreshes "
                    "it (edge360: its edge.stale_while_revalidate window of 30 s, the origin "
                    "giving none; nginx: proxy_cache_valid 200 2s, proxy_cache_use_stale "
                    "updating, proxy_cache_background_update on); over a run that is hits, "
                    "stale answers and a refresh every 2 s (the file never changes); edge360 "
                    f"rewrites it for sid {SID} (sent private), nginx sends it as is",
                    pair=pair, refresh_first=True,
                    lifetime=f"Cache-Control: public, max-age={live_age}"),
        WrkWorkload(f"{label}: small .ts 218 B", "edge", media.small + q, SMALL_CONNECTIONS,
                    _RATE, "218-byte segment-like object, a cache hit, not rewritten by either",
                    pair=pair),
        WrkWorkload(f"{label}: 8 MiB segment", "edge", media.segment + q, big_connections,
                    _BYTES, f"whole {media.segment_size}-byte .ts, a cache hit", pair=pair),
        WrkWorkload(f"{label}: 1 MiB ranges of 64 MiB", "edge", media.big + q,
                    RANGE_CONNECTIONS, _BYTES,
                    f"random {piece}-byte ranges of a {media.big_size}-byte .ts, cache hits "
                    "(nginx holds it in 1 MiB slices, edge360 in its pieces)",
                    ranges=(media.big_size, piece), expect_status=206, pair=pair),
    ]


def disk_workloads(media: Media, upstream: str, *, big_connections: int,
                   piece: int) -> list[WrkWorkload]:
    """The big objects again, with the edge360 edge answering from its disk tier (a memory tier
    smaller than one piece), against the same nginx proxy cache (whose cache is always files)."""
    q = f"?sid={SID}"
    label = f"{edge_label(upstream)}, edge360 from its disk tier"
    pair = f"edge-disk/{upstream}"
    return [
        WrkWorkload(f"{label}: 8 MiB segment", "edge", media.segment + q, big_connections,
                    _BYTES, f"whole {media.segment_size}-byte .ts, a cache hit; edge360 sends "
                    "its pieces from their disk-tier files, nginx from its cache file",
                    pair=pair),
        WrkWorkload(f"{label}: 1 MiB ranges of 64 MiB", "edge", media.big + q,
                    RANGE_CONNECTIONS, _BYTES,
                    f"random {piece}-byte ranges of a {media.big_size}-byte .ts, cache hits "
                    "from disk-tier files (nginx from its 1 MiB slice files)",
                    ranges=(media.big_size, piece), expect_status=206, pair=pair),
        WrkWorkload(f"{label}: 1.5 MiB segment", "edge", media.mid + q, big_connections,
                    _BYTES, f"whole {media.mid_size}-byte .ts (a 2 Mbit/s rung's 6 s), a cache "
                    "hit that edge360 stores whole (under one piece), sent from its disk-tier "
                    "file; nginx from its cache file", pair=pair),
    ]


def https_workloads(media: Media, upstream: str, *, big_connections: int,
                    handshake_clients: int) -> list[WrkWorkload]:
    """Cache hits over TLS 1.3 at an edge360 edge and an nginx proxy cache in front of
    `upstream`, and full handshakes per second."""
    q = f"?sid={SID}"
    label = edge_label(upstream, tls=True)
    pair = f"https/{upstream}"
    return [
        WrkWorkload(f"{label}: small .ts 218 B", "edge", media.small + q, SMALL_CONNECTIONS,
                    _RATE, "218-byte segment-like object, a cache hit, over kept TLS 1.3 "
                    "connections", pair=pair),
        WrkWorkload(f"{label}: 8 MiB segment", "edge", media.segment + q, big_connections,
                    _BYTES, f"whole {media.segment_size}-byte .ts, a cache hit, over kept TLS "
                    "1.3 connections (nginx without kTLS, its default)", pair=pair),
        WrkWorkload(f"{label}: full TLS handshakes", "edge", media.small + q,
                    handshake_clients, ("handshakes_per_s", "cpu_us_per_handshake"),
                    "one full TLS 1.3 handshake per connection (no session resumed) and one "
                    "HTTP/1.0 GET of the 218-byte .ts (a cache hit) on it, which the server "
                    f"answers and closes; {handshake_clients} s_time processes at once on the "
                    "client core; handshakes per second of wall time, and server CPU seconds / "
                    "handshakes", pair=pair, client="handshakes"),
    ]

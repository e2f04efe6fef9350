"""Benchmark of edge360.sessions.SessionTracker: touches per second and bytes per active session.

Run: .venv/bin/python -m benchmarks.bench_sessions [--json OUT] [--quick]
(in RESULTS.md through `python -m benchmarks.run --only sessions`, see benchmarks/only.py).
Side by side with the floor: a bare `dict[key] = now` store of the same keys in the same run.
Memory is tracemalloc growth of the whole tracker (keys included) divided by sessions, after
every session has fetched two 6 s segments (so its start, last request and play-out end are
distinct floats, as in service). Every segment touch carries its 6 s of media, so the play-out
rule runs as in service; `sessions_ended_per_s_tail` times the expiry of sessions that each
fetched a 120 s title in one burst, so every one of them ends through the play-out calendar.
Touches through the request path: real request targets (`/film/1080p/seg_00042.ts?sid=...&token=
...`) parsed as aiohttp parses them (yarl, encoded), split by `paths.split_request_path`, the
viewer identified by `sessions.identity` (the rule `viewers.identify` applies) and touched; in
process, no network, no HTTP framing.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
import tracemalloc
from typing import Any

from yarl import URL

from edge360.core import paths
from edge360.sessions import identity as sessions
from edge360.sessions.identity import new_sid
from edge360.sessions.tracker import SessionTracker

TOKEN = "1700000000.k1.abcdefabcdefabcdef"
#: EXTINF of every segment touched (the play-out rule runs on each)
SEGMENT = 6.0


def touches_existing(n_sessions: int, n_touches: int) -> tuple[float, float]:
    """(tracker touches/s, bare dict stores/s) for touches of existing sessions."""
    keys = [new_sid() for _ in range(n_sessions)]
    t = SessionTracker(30.0, 15.0, 10_000_000)
    for k in keys:
        t.touch(k, 0.0, title="film", rendition="1080p", media=SEGMENT)
    seq = [keys[i % n_sessions] for i in range(n_touches)]
    nows = [1.0 + i * 1e-6 for i in range(n_touches)]
    touch = t.touch
    start = time.perf_counter()
    for k, now in zip(seq, nows, strict=True):
        touch(k, now, title="film", rendition="1080p", media=SEGMENT)
    tracker = n_touches / (time.perf_counter() - start)
    floor: dict[str, float] = {}
    start = time.perf_counter()
    for k, now in zip(seq, nows, strict=True):
        floor[k] = now
    bare = n_touches / (time.perf_counter() - start)
    return tracker, bare


def touches_new(n: int) -> float:
    """Touches/s that start a session with its first segment (a view; each also runs the
    expiry check)."""
    keys = [new_sid() for _ in range(n)]
    nows = [i * 1e-6 for i in range(n)]
    t = SessionTracker(30.0, 15.0, 10_000_000)
    touch = t.touch
    start = time.perf_counter()
    for k, now in zip(keys, nows, strict=True):
        touch(k, now, title="film", rendition="1080p", media=SEGMENT)
    return n / (time.perf_counter() - start)


def ended_through_tail(n: int) -> float:
    """Sessions ended per second when each fetched a whole 120 s title in one burst (as hls.js
    does on small segments): each outlives its idle deadline, moves to the play-out calendar
    and ends there; the expiry of all of them is timed, in one call as a scrape would run it."""
    t = SessionTracker(30.0, 15.0, 10_000_000)
    for i in range(n):
        key, now = new_sid(), i * 1e-4
        for _ in range(20):
            t.touch(key, now, title="film", rendition="1080p", media=SEGMENT)
    t.expire(n * 1e-4 + 31.0)  # every idle deadline has passed: all wait in the calendar
    assert t.active == n
    start = time.perf_counter()
    ended = t.expire(n * 1e-4 + 20 * SEGMENT + 31.0)
    elapsed = time.perf_counter() - start
    assert ended == n and t.active == 0
    return n / elapsed


def request_urls(n_viewers: int) -> list[str]:
    """Request targets as players send them: the media playlist, then its segments, per viewer,
    interleaved across viewers as concurrent playback is."""
    sids = [new_sid() for _ in range(n_viewers)]
    out = []
    for seg in range(20):
        for i, sid in enumerate(sids):
            rendition = ("1080p", "720p", "480p")[i % 3]
            name = "index.m3u8" if seg == 0 else f"seg_{(i + seg) % 1200:05d}.ts"
            out.append(f"/film{i % 4}/{rendition}/{name}?sid={sid}&token={TOKEN}")
    return out


def touches_request_path(targets: list[str], rounds: int) -> float:
    """Touches/s of identify + touch on real request targets (see the module docstring)."""
    t = SessionTracker(30.0, 15.0, 10_000_000)
    split, identity, valid_sid, touch = (paths.split_request_path, sessions.identity,
                                         sessions.valid_sid, t.touch)
    address, agent = "203.0.113.7", "AppleCoreMedia/1.0"
    n = 0
    start = time.perf_counter()
    for r in range(rounds):
        for i, target in enumerate(targets):
            url = URL(target, encoded=True)
            parts = split(url.raw_path)
            query = url.query
            sid = query.get("sid")
            if sid is not None and not valid_sid(sid):
                sid = None
            key, _ = identity(sid, query.get("CMCD"), None, address, agent)
            playlist = parts[-1].endswith(".m3u8")
            touch(key, r + i * 1e-7, title=parts[0], rendition=None if playlist else parts[1],
                  media=0.0 if playlist else SEGMENT)
            n += 1
    return n / (time.perf_counter() - start)


def bytes_per_session(n: int) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    t = SessionTracker(30.0, 15.0, 10_000_000)
    keys = [new_sid() for _ in range(n)]
    for i, k in enumerate(keys):
        t.touch(k, i * 1e-6, title="film", rendition="1080p", media=SEGMENT)
    for i, k in enumerate(keys):
        t.touch(k, 1.0 + i * 1e-6, title="film", rendition="1080p", media=SEGMENT)
    del keys  # the tracker holds its own references to the keys: they are counted
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert t.active == n
    return (after - before) / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="OUT", help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    n_existing = 3_000_000 // scale
    existing, bare = touches_existing(60_000, n_existing)
    targets = request_urls(60_000 // scale)
    result: dict[str, Any] = {
        "python": sys.version.split()[0], "machine": platform.machine(),
        "touches_existing": n_existing,
        "touches_per_s_existing": round(existing),
        "bare_dict_stores_per_s": round(bare),
        "touches_per_s_new": round(touches_new(1_000_000 // scale)),
        "sessions_ended_per_s_tail": round(ended_through_tail(60_000 // scale)),
        "bytes_per_session_60k": round(bytes_per_session(60_000), 1),
        "sessions_large": 1_000_000 // scale,
        "bytes_per_session_1m": round(bytes_per_session(1_000_000 // scale), 1),
        "request_path_urls": len(targets),
        "request_path_touches_per_s": round(touches_request_path(targets, 2)),
    }
    for key, value in result.items():
        print(f"{key:28} {value}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

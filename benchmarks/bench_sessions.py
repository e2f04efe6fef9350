"""Benchmark of edge360.sessions.SessionTracker: touches per second and bytes per active session.

Run: python benchmarks/bench_sessions.py [--json OUT] [--quick]
Side by side with the floor: a bare `dict[key] = now` store of the same keys in the same run.
Memory is tracemalloc growth of the whole tracker (keys included) divided by sessions, after
every session has been touched twice (so `first` and `last` are distinct floats, as in service).
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

from edge360.sessions import SessionTracker, new_sid


def touches_existing(n_sessions: int, n_touches: int) -> tuple[float, float]:
    """(tracker touches/s, bare dict stores/s) for touches of existing sessions."""
    keys = [new_sid() for _ in range(n_sessions)]
    t = SessionTracker(30.0, 15.0, 10_000_000)
    for k in keys:
        t.touch(k, 0.0, title="film", rendition=None)
    seq = [keys[i % n_sessions] for i in range(n_touches)]
    nows = [1.0 + i * 1e-6 for i in range(n_touches)]
    touch = t.touch
    start = time.perf_counter()
    for k, now in zip(seq, nows, strict=True):
        touch(k, now, title="film", rendition="1080p")
    tracker = n_touches / (time.perf_counter() - start)
    floor: dict[str, float] = {}
    start = time.perf_counter()
    for k, now in zip(seq, nows, strict=True):
        floor[k] = now
    bare = n_touches / (time.perf_counter() - start)
    return tracker, bare


def touches_new(n: int) -> float:
    """Touches/s that open a session (each also runs the expiry check)."""
    keys = [new_sid() for _ in range(n)]
    nows = [i * 1e-6 for i in range(n)]
    t = SessionTracker(30.0, 15.0, 10_000_000)
    touch = t.touch
    start = time.perf_counter()
    for k, now in zip(keys, nows, strict=True):
        touch(k, now, title="film", rendition=None)
    return n / (time.perf_counter() - start)


def bytes_per_session(n: int) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    t = SessionTracker(30.0, 15.0, 10_000_000)
    keys = [new_sid() for _ in range(n)]
    for i, k in enumerate(keys):
        t.touch(k, i * 1e-6, title="film", rendition=None)
    for i, k in enumerate(keys):
        t.touch(k, 1.0 + i * 1e-6, title="film", rendition="1080p")
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
    existing, bare = touches_existing(60_000, 3_000_000 // scale)
    result: dict[str, Any] = {
        "python": sys.version.split()[0], "machine": platform.machine(),
        "touches_per_s_existing": round(existing),
        "bare_dict_stores_per_s": round(bare),
        "touches_per_s_new": round(touches_new(1_000_000 // scale)),
        "bytes_per_session_60k": round(bytes_per_session(60_000), 1),
        "bytes_per_session_1m": round(bytes_per_session(1_000_000 // scale), 1),
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

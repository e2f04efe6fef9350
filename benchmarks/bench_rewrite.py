"""Benchmark of the per-viewer playlist rewrite: a two-hour media playlist (1,200 byte-range
entries of 6 s plus an EXT-X-MAP) rendered for one viewer, side by side with the reference of
rewriting it line by line on every request.

Run: .venv/bin/python -m benchmarks.bench_rewrite [--json OUT] [--quick]
(in RESULTS.md through `python -m benchmarks.run --only sessions`, see benchmarks/only.py).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from typing import Any

from edge360.hls.playlist import is_absolute
from edge360.hls.rewrite import CompiledPlaylist
from edge360.sessions.identity import new_sid


def two_hour_playlist(entries: int = 1200) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-TARGETDURATION:6",
             "#EXT-X-PLAYLIST-TYPE:VOD", '#EXT-X-MAP:URI="br_1080p.mp4",BYTERANGE="1200@0"']
    offset = 1200
    for i in range(entries):
        length = 1_500_000 + (i * 7919) % 400_000
        lines += ["#EXTINF:6.000000,", f"#EXT-X-BYTERANGE:{length}@{offset}", "br_1080p.mp4"]
        offset += length
    return "\n".join([*lines, "#EXT-X-ENDLIST", ""])


def naive_render(text: str, params: str) -> bytes:
    """The reference: scan and rewrite every line for every viewer."""
    out = []
    for line in text.split("\n"):
        if line and not line.startswith("#") and not is_absolute(line):
            out.append(line + ("&" if "?" in line else "?") + params)
        elif line.startswith("#EXT-X-MAP:"):
            out.append(line.replace('.mp4"', f'.mp4?{params}"', 1))
        else:
            out.append(line)
    return "\n".join(out).encode()


def rate(fn: Any, params: list[str]) -> float:
    start = time.perf_counter()
    for p in params:
        fn(p)
    return len(params) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="OUT", help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    args = parser.parse_args()
    text = two_hour_playlist()
    n = 2000 if args.quick else 20000
    params = [f"sid={new_sid()}&token=1700000000.k1.abcdefabcdefabcdef" for _ in range(n)]
    start = time.perf_counter()
    compiled = CompiledPlaylist.compile(text)
    compile_ms = (time.perf_counter() - start) * 1000
    assert compiled.render(params[0]) == naive_render(text, params[0])
    fast = rate(compiled.render, params)
    slow = rate(lambda p: naive_render(text, p), params[: n // 10])
    result: dict[str, Any] = {
        "python": sys.version.split()[0], "machine": platform.machine(),
        "entries": 1200, "uri_slots": compiled.slots, "playlist_bytes": len(text),
        "compile_ms": round(compile_ms, 2),
        "renders_per_s": round(fast), "us_per_render": round(1e6 / fast, 1),
        "reference_renders_per_s": round(slow), "reference_us_per_render": round(1e6 / slow, 1),
        "speedup": round(fast / slow, 1),
    }
    for key, value in result.items():
        print(f"{key:26} {value}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Time per hour of content of `edge360 package`, per preset, on this machine.

Generates a short 4K clip (a test pattern with film-like grain at 24 fps, with a tone), packages
it with the default ladders of the codecs asked for (H.264 1080p-360p and HEVC 2160p-360p: 14
renditions), once per preset, and extrapolates each wall time to an hour of content: wall time x
3600 / clip seconds. The fixed costs of a run (probing, the muxes, the measurements) are counted
in, so a long film does a little better than the figure. Grain makes the encoders work about as
hard as on a film; a clean test pattern would flatter them.

Run it on a quiet machine (nothing else encoding): the figures scale with free cores.

    .venv/bin/python scripts/package_timing.py                       # every preset, 12 s of 4K
    .venv/bin/python scripts/package_timing.py --seconds 6 --presets ultrafast,veryfast,medium \\
        --json /tmp/package-timing.json

Prints one line per preset as it finishes, then a Markdown table for docs/PACKAGING.md. Exits 2
with one line on a bad argument.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import NoReturn

from edge360.core.errors import UsageError
from edge360.hls import ffmpeg
from edge360.hls.package import PRESETS, package
from edge360.hls.progress import clock_text
from edge360.hls.runner import cores


def make_clip(tools: ffmpeg.Tools, path: Path, seconds: float, size: str, fps: int) -> None:
    """A grainy moving test pattern with a tone, at a mezzanine's quality (a film's source is far
    better than what is shipped, and decoding it is part of the work)."""
    ffmpeg.run_encode(tools, [
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=1000:beep_factor=4:duration={seconds}",
        "-vf", "noise=alls=6:allf=t+u,format=yuv420p", "-c:v", "libx264", "-preset", "veryfast",
        "-crf", "17", "-c:a", "aac", "-b:a", "192k", "-shortest", "-y", str(path)], seconds)


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return m.group(1).strip() if m else "unknown"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"package_timing: {message}\n")  # one line, no usage dump
        raise SystemExit(2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=12.0, help="clip length (default 12)")
    p.add_argument("--size", default="3840x2160", help="clip picture size (default 3840x2160)")
    p.add_argument("--fps", type=int, default=24, help="clip frame rate (default 24)")
    p.add_argument("--codecs", default="h264,hevc", help="as edge360 package (default h264,hevc)")
    p.add_argument("--presets", default=",".join(PRESETS),
                   help="comma-separated presets to time (default: all of them)")
    p.add_argument("--jobs", type=int, default=None, help="encodes at once (default: the cores)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    args.presets = [x.strip() for x in args.presets.split(",") if x.strip()]
    bad = [x for x in args.presets if x not in PRESETS]
    if bad or not args.presets:
        p.error(f"unknown preset {bad[0] if bad else '(none)'} (use {', '.join(PRESETS)})")
    if not 1 <= args.seconds <= 600 or re.fullmatch(r"\d+x\d+", args.size) is None:
        p.error("--seconds must be 1-600 and --size WIDTHxHEIGHT")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        tools = ffmpeg.find_tools()
    except UsageError as e:
        print(f"package_timing: {e}", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="package-timing-") as tmp:
        clip = Path(tmp) / "clip.mp4"
        print(f"package_timing: making a {args.seconds:g} s {args.size} clip", file=sys.stderr)
        make_clip(tools, clip, args.seconds, args.size, args.fps)
        for preset in args.presets:
            out = Path(tmp) / preset
            started = time.monotonic()
            try:
                package(clip, out, codecs=args.codecs, preset=preset, jobs=args.jobs,
                        note=lambda text, p=preset: print(f"package_timing: {p}: {text}",
                                                          file=sys.stderr, flush=True))
            except UsageError as e:
                print(f"package_timing: {preset}: {e}", file=sys.stderr)
                return 2
            wall = time.monotonic() - started
            renditions = sum(1 for p in out.iterdir() if p.is_dir())
            shutil.rmtree(out)
            per_hour = clock_text(wall * 3600 / args.seconds)
            row = {"preset": preset, "wall_seconds": round(wall, 1),
                   "hours_per_hour_of_content": round(wall / args.seconds, 2),
                   "per_hour": per_hour, "renditions": renditions,
                   "load_average_1m": round(os.getloadavg()[0], 2)}
            rows.append(row)
            print(f"{preset:>9}: {wall:7.1f} s for {args.seconds:g} s of content -> {per_hour} "
                  f"per hour of content (load {row['load_average_1m']})", flush=True)
    report = {"clip_seconds": args.seconds, "size": args.size, "fps": args.fps,
              "codecs": args.codecs, "cores": cores(), "jobs": args.jobs or cores(),
              "cpu": cpu_model(), "load_average_before": [round(x, 2) for x in load_before],
              "presets": rows}
    print(f"\n{args.size} at {args.fps} fps, codecs {args.codecs}, {cores()} cores ({cpu_model()})")
    print("\n| preset | time per hour of content | renditions |\n|---|---|---|")
    for row in rows:
        print(f"| {row['preset']} | {row['per_hour']} | {row['renditions']} |")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

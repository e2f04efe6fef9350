"""`edge360 package`: turn one video file into a ready-to-serve HLS title (both delivery variants).

The title folder holds one sub-folder per rendition with its segments and media playlist, a
`master.m3u8` over them, and a `master_br.m3u8` whose media playlists address one file per rendition
with EXT-X-BYTERANGE. The single files are the segments concatenated (MPEG-TS is concatenable; for
fragmented MP4 the init section is followed by the fragments), so both variants carry identical bits
from a single encode. The title is built in a temporary folder next to the destination and renamed
into place only after it has been checked, so a failure never leaves a half-written title behind.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, TextIO

from edge360.core.errors import UsageError
from edge360.hls import ffmpeg
from edge360.hls.playlist import parse_media
from edge360.hls.titles import check_title

Format = Literal["ts", "fmp4"]


@dataclass(frozen=True, slots=True)
class Rung:
    """One rendition of the ladder: its height and its bitrate caps in kbit/s."""

    name: str
    height: int
    video_kbps: int
    audio_kbps: int


#: the default ladder (after Apple's HLS authoring bitrates for H.264, rounded); the video figure is
#: the VBV cap of a capped-CRF encode, so easy content comes out smaller.
DEFAULT_LADDER: tuple[Rung, ...] = (
    Rung("2160p", 2160, 12000, 128),
    Rung("1440p", 1440, 8000, 128),
    Rung("1080p", 1080, 5000, 128),
    Rung("720p", 720, 2800, 128),
    Rung("540p", 540, 1800, 96),
    Rung("480p", 480, 1200, 96),
    Rung("360p", 360, 700, 64),
    Rung("240p", 240, 400, 64),
)
DEFAULT_LADDER_SPEC = "2160p,1080p,720p,480p"
_KNOWN = {r.name: r for r in DEFAULT_LADDER}
_RATE_RE = re.compile(r"(\d+(?:\.\d+)?)([kKmM]?)")
# x264's ultrafast preset turns off CABAC and 8x8 transforms, which silently yields Constrained
# Baseline whatever -profile says; every preset from superfast on keeps High.
PRESETS = ("superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


@dataclass(frozen=True, slots=True)
class RenditionResult:
    """What the master playlist says about one rendition, measured from its real segments."""

    rung: Rung
    width: int
    height: int
    codecs: str
    bandwidth: int
    average_bandwidth: int


def _kbps(text: str) -> int:
    m = _RATE_RE.fullmatch(text.strip())
    if m is None:
        raise UsageError(f"bad bitrate {text!r} (use e.g. 800k or 2.5M)")
    value = float(m.group(1)) * {"": 0.001, "k": 1, "m": 1000}[m.group(2).lower()]
    if not 1 <= value <= 1_000_000:
        raise UsageError(f"bitrate {text!r} out of range")
    return round(value)


def parse_ladder(spec: str) -> tuple[Rung, ...]:
    """`NAME[:VIDEO[:AUDIO]],...` (e.g. `2160p:1500k,360p:300k:64k`) over the default table."""
    rungs: list[Rung] = []
    for item in (x.strip() for x in spec.split(",")):
        if not item:
            continue
        name, *rates = item.split(":")
        base = _KNOWN.get(name)
        if base is None:
            if re.fullmatch(r"[1-9]\d{1,3}p", name) is None or len(rates) == 0:
                raise UsageError(f"unknown rung {name!r} (known: {', '.join(_KNOWN)}; "
                                 "other heights need a bitrate, e.g. 900p:4000k)")
            base = Rung(name, int(name[:-1]), 0, 128)
        if len(rates) > 2:
            raise UsageError(f"bad rung {item!r} (NAME[:VIDEO[:AUDIO]])")
        if rates:
            base = replace(base, video_kbps=_kbps(rates[0]))
        if len(rates) == 2:
            base = replace(base, audio_kbps=_kbps(rates[1]))
        rungs.append(base)
    if not rungs:
        raise UsageError("empty ladder")
    if len({r.height for r in rungs}) != len(rungs):
        raise UsageError("two rungs of the same height")
    return tuple(sorted(rungs, key=lambda r: -r.height))


def plan_ladder(ladder: Sequence[Rung], source_height: int) -> tuple[Rung, ...]:
    """The rungs to encode: never upscale. Rungs taller than the source are dropped; a source
    shorter than every rung gets one rung at its own (even) height with the lowest rung's rates."""
    even = source_height - source_height % 2  # 4:2:0 chroma needs even dimensions
    kept = tuple(r for r in sorted(ladder, key=lambda r: -r.height) if r.height <= source_height)
    if kept:
        return kept
    lowest = min(ladder, key=lambda r: r.height)
    return (replace(lowest, name=f"{even}p", height=even),)


def peak_bitrate(durations: Sequence[float], sizes: Sequence[int], target: float) -> int:
    """Peak segment bit rate (RFC 8216 §4.3.4.2 BANDWIDTH): the largest bit rate of any contiguous
    set of segments whose total duration is between 0.5 and 1.5 times the target duration. A title
    too short for any such set falls back to the largest single-segment rate."""
    best = 0.0
    for i in range(len(durations)):
        total_d, total_b = 0.0, 0
        for j in range(i, len(durations)):
            total_d += durations[j]
            total_b += sizes[j]
            if total_d > 1.5 * target:
                break
            if total_d >= 0.5 * target:
                best = max(best, total_b * 8 / total_d)
    if best == 0.0:
        best = max((b * 8 / d for b, d in zip(sizes, durations, strict=True) if d > 0), default=0)
    return math.ceil(best)


def _encode_args(src: Path, info: ffmpeg.SourceInfo, rungs: Sequence[Rung], build: Path, *,
                 seg: float, fmt: Format, crf: int, preset: str) -> list[str]:
    """One ffmpeg run, decode once, one output per rung (split + scale)."""
    labels = "".join(f"[s{i}]" for i in range(len(rungs)))
    graph = [f"[0:v:0]format=yuv420p,split={len(rungs)}{labels}"]
    graph += [f"[s{i}]scale=-2:{r.height}[v{i}]" for i, r in enumerate(rungs)]
    # Segment boundaries must be keyframes in every rendition at the same instants so a player can
    # switch at any boundary: forced IDRs every `seg` seconds, no scene-cut keyframes, closed GOPs,
    # and a GOP no longer than a segment (RFC 8216 §6.2.4 "matching content" across variants).
    gop = max(1, math.ceil(float(info.fps) * seg))
    args = ["-i", str(src), "-filter_complex", ";".join(graph)]
    ext = "ts" if fmt == "ts" else "m4s"
    for i, r in enumerate(rungs):
        folder = build / r.name
        folder.mkdir()
        args += ["-map", f"[v{i}]"]
        if info.has_audio:
            args += ["-map", "0:a:0", "-c:a", "aac", "-b:a", f"{r.audio_kbps}k", "-ac", "2",
                     "-ar", "48000"]
        args += ["-c:v", "libx264", "-preset", preset, "-profile:v", "high", "-crf", str(crf),
                 "-maxrate", f"{r.video_kbps}k", "-bufsize", f"{2 * r.video_kbps}k",
                 "-g", str(gop), "-sc_threshold", "0", "-flags", "+cgop",
                 "-force_key_frames", f"expr:gte(t,n_forced*{seg:g})",
                 "-f", "hls", "-hls_time", f"{seg:g}", "-hls_playlist_type", "vod",
                 "-hls_list_size", "0",
                 "-hls_segment_type", "mpegts" if fmt == "ts" else "fmp4",
                 "-hls_segment_filename", str(folder / f"seg_%05d.{ext}")]
        if fmt == "fmp4":
            args += ["-hls_fmp4_init_filename", "init.mp4"]
        args.append(str(folder / "ffmpeg.m3u8"))
    return args


def _media_playlist(version: int, target: int, body: list[str], init: str | None) -> str:
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{version}", f"#EXT-X-TARGETDURATION:{target}",
             "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-INDEPENDENT-SEGMENTS"]
    if init is not None:
        lines.append(init)
    return "\n".join([*lines, *body, "#EXT-X-ENDLIST", ""])


def _finish_rendition(tools: ffmpeg.Tools, folder: Path, rung: Rung, fmt: Format,
                      has_audio: bool) -> RenditionResult:
    """Write index.m3u8 and the single-file variant of one rendition; measure its bit rates."""
    made = folder / "ffmpeg.m3u8"
    media = parse_media(made.read_text())
    made.unlink()
    names = [s.path for s in media.segments]
    durations = [s.duration for s in media.segments]
    sizes = [(folder / n).stat().st_size for n in names]
    if not names or any(d <= 0 for d in durations):
        raise UsageError(f"ffmpeg wrote no usable segments for {rung.name}")
    # RFC 8216 §4.3.3.1: every EXTINF rounded to the nearest integer is <= TARGETDURATION; the
    # ceiling satisfies that and the stricter reading (duration itself <= target).
    target = math.ceil(max(durations) - 1e-6)
    init_name = media.segments[0].init_path if fmt == "fmp4" else None
    init_size = (folder / init_name).stat().st_size if init_name else 0
    seg_lines: list[str] = []
    br_lines: list[str] = []
    single = "single.ts" if fmt == "ts" else "single.mp4"
    offset = init_size
    with open(folder / single, "wb") as out:
        if init_name:
            out.write((folder / init_name).read_bytes())
        for name, d, size in zip(names, durations, sizes, strict=True):
            out.write((folder / name).read_bytes())
            seg_lines += [f"#EXTINF:{d:.6f},", name]
            # RFC 8216 §4.3.2.2: EXT-X-BYTERANGE:<length>@<offset> of the concatenated file
            br_lines += [f"#EXTINF:{d:.6f},", f"#EXT-X-BYTERANGE:{size}@{offset}", single]
            offset += size
    # Versions per RFC 8216 §7: byte ranges need 4, EXT-X-MAP outside I-frame playlists needs 6.
    seg_map = f'#EXT-X-MAP:URI="{init_name}"' if init_name else None
    br_map = f'#EXT-X-MAP:URI="{single}",BYTERANGE="{init_size}@0"' if init_name else None
    (folder / "index.m3u8").write_text(
        _media_playlist(6 if init_name else 3, target, seg_lines, seg_map))
    (folder / "index_br.m3u8").write_text(
        _media_playlist(6 if init_name else 4, target, br_lines, br_map))
    stream = ffmpeg.probe_output(tools, folder / names[0],
                                 folder / init_name if init_name else None)
    if stream.profile != "High":
        raise UsageError(f"{rung.name} came out {stream.profile!r}, not High profile")
    codecs = stream.codecs + (",mp4a.40.2" if has_audio else "")  # AAC-LC, RFC 6381 §3.3
    return RenditionResult(rung, stream.width, stream.height, codecs,
                           peak_bitrate(durations, sizes, target),
                           math.ceil(sum(sizes) * 8 / sum(durations)))


def _master(results: Sequence[RenditionResult], fps: float, playlist: str, version: int) -> str:
    """RFC 8216 §4.3.4.2 EXT-X-STREAM-INF per rendition, in ladder order (tallest first)."""
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{version}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for r in results:
        lines.append(f"#EXT-X-STREAM-INF:BANDWIDTH={r.bandwidth},"
                     f"AVERAGE-BANDWIDTH={r.average_bandwidth},CODECS=\"{r.codecs}\","
                     f"RESOLUTION={r.width}x{r.height},FRAME-RATE={fps:.3f}")
        lines.append(f"{r.rung.name}/{playlist}")
    return "\n".join([*lines, ""])


def _prepare_destination(out: Path) -> None:
    """Refuse to replace anything but nothing, an empty folder or an earlier packaged title."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "master.m3u8").is_file():
        raise UsageError(f"{out} is not empty and holds no title; choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)


def _install(build: Path, out: Path) -> None:
    """Rename the finished title into place, replacing an earlier one (renames are atomic)."""
    os.chmod(build, 0o755)  # mkdtemp made it private; a web server must read the title
    if not out.exists():
        os.rename(build, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rename(out, old / "title")
    os.rename(build, out)
    shutil.rmtree(old)


def package(input_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
            ladder: Sequence[Rung] | None = None,
            segment_seconds: float = 6.0, fmt: Format = "ts", crf: int = 23,
            preset: str = "veryfast", progress: ffmpeg.Progress | None = None) -> Path:
    """Package `input_path` into the HLS title folder `out_dir` and return its path."""
    if not 0.5 <= segment_seconds <= 60:
        raise UsageError("--segment must be between 0.5 and 60 seconds")
    if fmt not in ("ts", "fmp4"):
        raise UsageError(f"unknown format {fmt!r} (ts or fmp4)")
    if preset not in PRESETS:
        raise UsageError(f"preset {preset!r} not one of {', '.join(PRESETS)}")
    ladder = parse_ladder(DEFAULT_LADDER_SPEC) if ladder is None else ladder
    if not ladder:
        raise UsageError("empty ladder")
    tools = ffmpeg.find_tools()
    src, out = Path(input_path), Path(out_dir).absolute()
    info = ffmpeg.probe_source(tools, src)
    _prepare_destination(out)
    rungs = plan_ladder(ladder, info.height)
    build = Path(tempfile.mkdtemp(prefix=f".{out.name}.build-", dir=out.parent))
    try:
        args = _encode_args(src, info, rungs, build, seg=segment_seconds, fmt=fmt, crf=crf,
                            preset=preset)
        ffmpeg.run_encode(tools, args, info.duration, progress)
        results = [_finish_rendition(tools, build / r.name, r, fmt, info.has_audio)
                   for r in rungs]
        fps = float(info.fps)
        (build / "master.m3u8").write_text(_master(results, fps, "index.m3u8",
                                                   6 if fmt == "fmp4" else 3))
        (build / "master_br.m3u8").write_text(_master(results, fps, "index_br.m3u8",
                                                      6 if fmt == "fmp4" else 4))
        check_title(build)
        _install(build, out)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return out


class ProgressBar:
    """A one-line bar on a terminal; on a pipe, one line per tenth so logs stay short."""

    def __init__(self, stream: TextIO, label: str) -> None:
        self.stream, self.label = stream, label
        self.tty = stream.isatty()
        self.shown = -1

    def __call__(self, fraction: float) -> None:
        pct = int(fraction * 100)
        if pct == self.shown or (not self.tty and pct // 10 == self.shown // 10):
            return
        self.shown = pct
        bar = "#" * (pct // 4) + "-" * (25 - pct // 4)
        end = "\n" if not self.tty or pct >= 100 else ""
        self.stream.write(f"\r{self.label} [{bar}] {pct:3d}%{end}" if self.tty
                          else f"{self.label} {pct:3d}%{end}")
        self.stream.flush()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT", help="the video file to package")
    parser.add_argument("--out", required=True, metavar="DIR", help="title folder to create")
    parser.add_argument("--ladder", default=DEFAULT_LADDER_SPEC, metavar="RUNGS",
                        help="NAME[:VIDEO[:AUDIO]],... e.g. 2160p,1080p:4000k,360p:300k:64k "
                             f"(default {DEFAULT_LADDER_SPEC}; known: {', '.join(_KNOWN)})")
    parser.add_argument("--segment", type=float, default=6.0, metavar="SECONDS",
                        help="segment duration (default 6)")
    parser.add_argument("--format", choices=("ts", "fmp4"), default="ts", dest="fmt",
                        help="segment container (default ts)")
    parser.add_argument("--crf", type=int, default=23, help="x264 quality under the caps")
    parser.add_argument("--preset", choices=PRESETS, default="veryfast", help="x264 preset")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    bar = None if args.quiet else ProgressBar(sys.stderr, "package")
    out = package(args.input, args.out, ladder=parse_ladder(args.ladder),
                  segment_seconds=args.segment, fmt=args.fmt, crf=args.crf, preset=args.preset,
                  progress=bar)
    print(f"package: wrote {out}/master.m3u8 and master_br.m3u8")
    return 0


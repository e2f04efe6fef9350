"""`edge360 package`: turn one video file into a ready-to-serve HLS title (both delivery variants).

The title folder holds one sub-folder per rendition (`<codec>_<rung>`, e.g. `hevc_2160p`) with its
segments, media playlist and I-frame playlist, a `master.m3u8` over them, and a `master_br.m3u8`
whose playlists address one file per rendition with EXT-X-BYTERANGE (the segments concatenated, so
both variants carry identical bits from a single encode). HEVC is libx265 in fMP4 (CMAF) tagged
hvc1; H.264 is libx264 in fMP4 or MPEG-TS. One master lists both codecs: a player keeps what it
can decode (hls.js asks MediaSource.isTypeSupported for each CODECS value).

A run is a set of encodes (chunks of the renditions, each chunk decoded once, and the audio) run
in parallel up to the cores, then a stream-copy mux per rendition, then the measurements: a ladder
with a step of more than twice in measured peak BANDWIDTH is balanced (ladder.rebalance) and the
rungs it moves are encoded again until it has none. The work lives in a hidden folder beside the
destination, so an interrupted run continues where it stopped, and the title is renamed into place
only once it is complete and checked (docs/PACKAGING.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import signal
import sys
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from types import FrameType

from edge360.core.errors import UsageError
from edge360.hls import encodeargs, ffmpeg, ladder, rendition, runner
from edge360.hls.progress import ProgressBar
from edge360.hls.rendition import RenditionResult
from edge360.hls.titles import check_title
from edge360.hls.workdir import Workdir, prepare_destination, temporary_name

#: the presets x264 and x265 share, fastest first (placebo is left out: it is not for films)
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
           "veryslow")
FORMATS = ("fmp4", "ts")
#: encode cost per pixel of x265 against x264 at the same preset name, to group a chunk's encodes
#: and weigh the ETA (which the rate measured as the run goes corrects)
_COST = {"h264": 1.0, "hevc": 4.0}
#: the audio encode of a frame costs about what a 100x100 video encode does
_AUDIO_COST = 10_000.0
#: decoding a source pixel costs about a third of encoding one with x264
_DECODE_COST = 0.3
#: measurements of the ladder: the first, then re-encodes of the rungs around steps of more than
#: twice (each aims 10% under the limit, so one usually does)
_MAX_PASSES = 4

Note = Callable[[str], None]


def _check_options(segment_seconds: float, fmt: str, crf: int, preset: str,
                   chunk_seconds: float, jobs: int | None) -> None:
    if not 0.5 <= segment_seconds <= 60:
        raise UsageError("--segment must be between 0.5 and 60 seconds")
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r} (fmp4 or ts)")
    if preset not in PRESETS:
        raise UsageError(f"preset {preset!r} is not one of {', '.join(PRESETS)}")
    if not 0 <= crf <= 45:
        raise UsageError("--crf must be between 0 and 45")
    if not segment_seconds <= chunk_seconds <= 86_400:
        raise UsageError("--chunk must be at least one segment and at most a day")
    if jobs is not None and not 1 <= jobs <= 256:
        raise UsageError("--jobs must be between 1 and 256")


def _cost(target: ladder.Target) -> float:
    """The expected cost of encoding one frame of a rendition, for the ETA and for grouping."""
    return target.width * target.height * _COST[target.codec]


def _groups(targets: Sequence[ladder.Target], count: int) -> list[list[ladder.Target]]:
    """`targets` in at most `count` groups of about equal cost (largest first, each into the
    lightest group so far); no empty group."""
    groups: list[list[ladder.Target]] = [[] for _ in range(min(count, len(targets)))]
    for t in sorted(targets, key=_cost, reverse=True):
        min(groups, key=lambda g: sum(_cost(x) for x in g)).append(t)
    return groups


def _chunk_name(target: ladder.Target, chunk: encodeargs.Chunk) -> str:
    # the rate is part of the name: a rung encoded again at another rate never reuses old chunks
    return f"{target.rate_name}-{chunk.index:05d}.mp4"


class _Run:
    """One packaging run: the source, its plan, the work folder and the encodes."""

    def __init__(self, tools: ffmpeg.Tools, src: Path, info: ffmpeg.SourceInfo,
                 targets: Sequence[ladder.Target], work: Workdir, *, seg: int, per_chunk: int,
                 fmt: str, crf: int, preset: str, workers: int,
                 progress: runner.RunProgress | None, note: Note) -> None:
        self.tools, self.src, self.info, self.work = tools, src, info, work
        self.targets = list(targets)
        self.seg, self.fmt, self.crf, self.preset = seg, fmt, crf, preset
        self.chunks = encodeargs.chunks(info.frames, per_chunk)
        self.workers = workers
        self.threads = max(1, runner.cores() // workers)
        self.progress, self.note = progress, note

    def _audio_file(self, kbps: int) -> Path:
        return self.work.folder("audio") / f"aac-{kbps}k.mp4"

    def _chunk_file(self, target: ladder.Target, chunk: encodeargs.Chunk) -> Path:
        return self.work.folder(target.folder) / _chunk_name(target, chunk)

    def jobs(self, targets: Sequence[ladder.Target]) -> list[runner.Job]:
        """The audio encodes, and per chunk the renditions' encodes from one decode of it, in
        as many groups as it takes to give every worker a job (one group per chunk for a film:
        decoding a 4K source once per rendition would cost as much as a fast preset's encode).
        Finished work is listed too, as done jobs, so progress counts it."""
        info = self.info
        out: list[runner.Job] = []
        if info.has_audio:
            for kbps in sorted({t.rung.audio_kbps for t in targets}):
                path = self._audio_file(kbps)
                args = encodeargs.audio(self.src, info, kbps, temporary_name(path))
                out.append(runner.Job(f"audio {kbps}k", args, (path,), info.duration,
                                      info.frames * _AUDIO_COST))
        per_chunk = max(1, -(-self.workers // len(self.chunks)))
        decode = info.width * info.height * _DECODE_COST
        for c in self.chunks:
            frames = c.frames if c.frames is not None else max(1, info.frames - c.first)
            done = [t for t in targets if self._chunk_file(t, c).is_file()]
            todo = [t for t in targets if t not in done]
            for group in ([done] if done else []) + _groups(todo, per_chunk):
                outputs = tuple(self._chunk_file(t, c) for t in group)
                args = encodeargs.video_chunk(
                    self.src, info, group, c, [temporary_name(o) for o in outputs],
                    seg=self.seg, crf=self.crf, preset=self.preset, threads=self.threads)
                out.append(runner.Job(
                    f"chunk {c.index}: {', '.join(t.folder for t in group)}", args, outputs,
                    float(frames / info.fps), frames * (decode + sum(_cost(t) for t in group))))
        return out

    def assemble(self, target: ladder.Target, title: Path) -> RenditionResult:
        """Mux one rendition from its chunks and audio, then write its playlists."""
        work = self.work.folder(target.folder)
        listing = [(_chunk_name(target, c), Fraction(c.frames) / self.info.fps
                    if c.frames is not None else None) for c in self.chunks]
        concat = work / "chunks.ffconcat"
        concat.write_text(encodeargs.concat_list(listing))
        folder = title / target.folder
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
        audio = self._audio_file(target.rung.audio_kbps) if self.info.has_audio else None
        fmt = "fmp4" if target.codec == "hevc" else self.fmt  # HEVC in HLS is fMP4 only
        args = encodeargs.mux(concat, audio, target, folder, fmt=fmt, seg=self.seg,
                              fps=self.info.fps)
        ffmpeg.run_encode(self.tools, args, self.info.duration)
        return rendition.finish(self.tools, folder, target, self.info.has_audio)

    def _forget_chunks(self, target: ladder.Target) -> None:
        for c in self.chunks:
            (self.work.folder(target.folder) / _chunk_name(target, c)).unlink(missing_ok=True)

    def _rebalanced(self, results: dict[str, RenditionResult]) -> list[ladder.Target]:
        audio = self.info.has_audio
        again = []
        for codec in dict.fromkeys(t.codec for t in self.targets):
            again += ladder.rebalance([
                ladder.Measured(r.target, r.bandwidth, r.average_bandwidth,
                                r.target.rung.audio_kbps * 1000 if audio else 0)
                for r in results.values() if r.target.codec == codec])
        return again

    def ladder(self) -> list[RenditionResult]:
        """Encode and assemble every rendition, then encode again the rungs `rebalance` moves
        until no step is more than twice (bounded: _MAX_PASSES measurements)."""
        current = {t.folder: self.work.rate_of(t) for t in self.targets}
        results: dict[str, RenditionResult] = {}
        title = self.work.fresh_title()
        for attempt in range(_MAX_PASSES):
            runner.run_jobs(self.tools, self.jobs(list(current.values())), workers=self.workers,
                            progress=self.progress)
            for t in current.values():
                done = results.get(t.folder)
                if done is None or done.target != t:
                    results[t.folder] = self.assemble(t, title)
            again = self._rebalanced(results)
            if not again:
                return sorted(results.values(),
                              key=lambda r: (r.target.codec != "hevc", -r.height, -r.bandwidth))
            peaks = ", ".join(f"{t.folder} {results[t.folder].bandwidth / 1e6:.2f}"
                              for t in again)
            if attempt == _MAX_PASSES - 1:
                raise UsageError(f"the ladder still has a step of more than twice after "
                                 f"{_MAX_PASSES - 1} re-encodes (peaks in Mbit/s: {peaks}); "
                                 "give its rungs closer rates")
            self.note("a step of more than twice in measured peak: encoding again "
                      + ", ".join(f"{t.folder} ({results[t.folder].bandwidth / 1e6:.2f} Mbit/s) "
                                  + (f"at {t.abr_kbps}k average" if t.abr_kbps
                                     else f"capped at {t.video_cap}k") for t in again))
            for t in again:
                self._forget_chunks(current[t.folder])
                current[t.folder] = t
            self.work.remember(again)
        raise AssertionError("unreachable: the last pass returns or raises")


def _seekable(tools: ffmpeg.Tools, src: Path, info: ffmpeg.SourceInfo, work: Workdir,
              progress: runner.RunProgress | None, note: Note) -> tuple[Path, ffmpeg.SourceInfo]:
    """The source itself when its container has a keyframe index, else a stream copy of it into
    one (fast: no decode), so each chunk's seek is exact."""
    if info.seeks_to_keyframes:
        return src, info
    copy = work.folder("source") / "source.mkv"
    if not copy.is_file():
        note(f"{src.name} has no keyframe index ({info.container}): copying it into Matroska "
             "first (no re-encode)")
    job = runner.Job("index", encodeargs.remux(src, temporary_name(copy)), (copy,),
                     info.duration, 1.0)
    runner.run_jobs(tools, [job], workers=1, progress=progress)
    return copy, ffmpeg.probe_source(tools, copy)


def package(input_path: str | Path, out_dir: str | Path, *,
            codecs: str | Sequence[str] = ("h264",), ladder_spec: str | None = None,
            segment_seconds: float = 6.0, fmt: str = "fmp4", crf: int = 23,
            preset: str = "veryfast", jobs: int | None = None, chunk_seconds: float = 60.0,
            progress: runner.RunProgress | None = None, note: Note | None = None) -> Path:
    """Package `input_path` into the HLS title folder `out_dir` and return its path."""
    _check_options(segment_seconds, fmt, crf, preset, chunk_seconds, jobs)
    names = ladder.parse_codecs(codecs if isinstance(codecs, str) else ",".join(codecs))
    ladders = ladder.parse_ladder(ladder_spec, names)
    tools = ffmpeg.find_tools()
    src, out = Path(input_path), Path(out_dir).absolute()
    info = ffmpeg.probe_source(tools, src)
    prepare_destination(out)
    targets = ladder.plan(ladders, info.width, info.height, info.sar)
    seg = encodeargs.segment_frames(info.fps, segment_seconds)
    per_chunk = seg * max(1, round(chunk_seconds / float(seg / info.fps)))
    stat = src.stat()
    fingerprint = {
        "input": str(src.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
        "targets": [dataclasses.asdict(t) for t in targets], "segment_frames": seg,
        "chunk_frames": per_chunk, "format": fmt, "crf": crf, "preset": preset,
    }
    workers = jobs or runner.cores()
    say = note or (lambda _text: None)
    with Workdir(out).open(fingerprint) as work:
        if work.resumed:
            say(f"continuing the interrupted run kept in {work.root}")
        try:
            source, info = _seekable(tools, src, info, work, progress, say)
            run = _Run(tools, source, info, targets, work, seg=seg, per_chunk=per_chunk,
                       fmt=fmt, crf=crf, preset=preset, workers=workers, progress=progress,
                       note=say)
            results = run.ladder()
        except UsageError as e:  # still one line: what failed, and where the work waits
            raise UsageError(f"{e} (the work so far is kept in {work.root}: the same command "
                             "continues from it)") from None
        fps = float(info.fps)
        for name, byteranges in (("master.m3u8", False), ("master_br.m3u8", True)):
            (work.title / name).write_text(rendition.master(results, fps, byteranges))
        check_title(work.title)
        work.publish()
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT", help="the video file to package")
    parser.add_argument("--out", required=True, metavar="DIR", help="title folder to create")
    parser.add_argument("--codecs", default="h264", metavar="LIST",
                        help="h264, hevc or h264,hevc: one ladder per codec in one master "
                             "(default h264)")
    parser.add_argument("--ladder", default=None, metavar="RUNGS",
                        help="[CODEC/]NAME[:VIDEO[:AUDIO]],... e.g. 1080p,720p:2000k,"
                             "hevc/2160p:9M (default: Apple's authoring ladder, H.264 1080p-360p "
                             f"and HEVC 2160p-360p; known names: {', '.join(ladder.KNOWN)})")
    parser.add_argument("--preset", choices=PRESETS, default="veryfast", metavar="NAME",
                        help=f"x264/x265 preset: {', '.join(PRESETS)} (default veryfast)")
    parser.add_argument("--segment", type=float, default=6.0, metavar="SECONDS",
                        help="segment duration (default 6)")
    parser.add_argument("--format", choices=FORMATS, default="fmp4", dest="fmt",
                        help="H.264 segment container (default fmp4; HEVC is always fmp4)")
    parser.add_argument("--crf", type=int, default=23,
                        help="quality under the caps, x264's scale (x265 gets 5 more, the same "
                             "picture; default 23)")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="encodes run at once (default: one per core)")
    parser.add_argument("--chunk", type=float, default=60.0, metavar="SECONDS",
                        help="media seconds per encode: the unit of parallel work and of resuming "
                             "(default 60)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM stops a run the way Ctrl-C does: work kept, ffmpeg ended


def run(args: argparse.Namespace) -> int:
    bar = None if args.quiet else ProgressBar(sys.stderr, "package")
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        out = package(args.input, args.out, codecs=args.codecs, ladder_spec=args.ladder,
                      segment_seconds=args.segment, fmt=args.fmt, crf=args.crf,
                      preset=args.preset, jobs=args.jobs, chunk_seconds=args.chunk,
                      progress=bar, note=bar.note if bar is not None else None)
    except KeyboardInterrupt:
        sys.stderr.write("package: interrupted; run the same command again to continue\n")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"package: wrote {out}/master.m3u8 and master_br.m3u8")
    return 0

"""ffmpeg arguments for the three kinds of work in a packaging run. Pure: lists of strings.

1. A video chunk: a run of whole segments of one rendition, encoded on its own (so chunks of every
   rendition can run in parallel, and an interrupted run keeps the chunks it finished).
2. The audio: encoded once per audio bit rate, over the whole film, so it has no seam.
3. The mux: a rendition's chunks joined (concat demuxer, stream copy) with its audio and cut into
   HLS segments at the keyframes that start every segment.

Segment boundaries are keyframes in every rendition at the same frames, so a player can switch at
any boundary (RFC 8216 §6.2.4 "matching content"): a segment is a whole number of frames, every
chunk starts on a segment boundary, IDR frames are forced every segment, GOPs are closed and no
scene cut adds a keyframe (one keyframe per segment: it is the trick-play frame too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from edge360.hls.ffmpeg import SourceInfo
from edge360.hls.ladder import Target

#: x265's default CRF gives about the picture of x264's default (28 against 23)
HEVC_CRF_OFFSET = 5
#: where a chunk's seek lands: a quarter frame before its first frame, so rounding never loses it
_SEEK_LEAD = Fraction(1, 4)


@dataclass(frozen=True, slots=True)
class Chunk:
    """Frames [first, first + frames) of the source; frames None: to the end of the source."""

    index: int
    first: int
    frames: int | None


def segment_frames(fps: Fraction, seconds: float) -> int:
    """Frames per segment: the whole number nearest to `seconds` of video, at least one."""
    return max(1, round(fps * Fraction(seconds).limit_denominator(1000)))


def chunks(total_frames: int, per_chunk: int) -> list[Chunk]:
    """Chunks of `per_chunk` frames covering the source; the last runs to the end of the source,
    so an estimate of `total_frames` that is short never loses frames, and one that is long by a
    frame never yields an empty chunk."""
    count = max(1, -(-total_frames // per_chunk))
    if count > 1 and total_frames - (count - 1) * per_chunk <= 1:
        count -= 1
    return [Chunk(i, i * per_chunk, per_chunk if i < count - 1 else None) for i in range(count)]


def _seek(info: SourceInfo, first: int) -> list[str]:
    video_start = Fraction(info.video_start).limit_denominator(1_000_000)
    start = video_start + (first - _SEEK_LEAD) / info.fps
    return ["-ss", f"{float(start):.6f}"] if start > 0 else []


def rate_args(target: Target, seg: int, fps: Fraction, crf: int) -> list[str]:
    """Capped CRF (the CRF's quality, never above the cap), or, for a rung `rebalance` had to
    raise, an average bit rate under a cap half as high again (ABR spends the bits the ladder
    needs there whatever the CRF would). The VBV buffer bounds how far a segment's rate can pass
    the cap: by the buffer's seconds over the segment's; two seconds, or one segment when
    segments are shorter."""
    if target.abr_kbps:
        cap = max(target.video_cap, math.ceil(target.abr_kbps * 3 / 2))
        rate = ["-b:v", f"{target.abr_kbps}k"]
    else:
        cap = target.video_cap
        rate = ["-crf", str(crf + (HEVC_CRF_OFFSET if target.codec == "hevc" else 0))]
    buffer = math.ceil(cap * min(Fraction(2), seg / fps))
    return [*rate, "-maxrate", f"{cap}k", "-bufsize", f"{buffer}k"]


def _encoder(target: Target, seg: int, fps: Fraction, crf: int, preset: str,
             threads: int) -> list[str]:
    rate = rate_args(target, seg, fps, crf)
    keys = ["-force_key_frames", f"expr:eq(mod(n,{seg}),0)"]
    if target.codec == "hevc":
        params = (f"keyint={seg}:min-keyint={seg}:scenecut=0:open-gop=0:pools={threads}:"
                  f"frame-threads={min(threads, 4)}:log-level=error")
        # hvc1, not hev1: parameter sets in the sample entry only, as Apple devices require
        return ["-c:v", "libx265", "-preset", preset, "-profile:v", "main", *rate,
                "-forced-idr", "1", *keys, "-x265-params", params, "-tag:v", "hvc1"]
    return ["-c:v", "libx264", "-preset", preset, "-profile:v", "high", *rate,
            "-g", str(seg), "-keyint_min", str(seg), "-sc_threshold", "0", "-flags", "+cgop",
            *keys, "-threads", str(threads)]


def video_chunk(src: Path, info: SourceInfo, targets: Sequence[Target], chunk: Chunk,
                outputs: Sequence[Path], *, seg: int, crf: int, preset: str,
                threads: int) -> list[str]:
    """Encode one chunk of several renditions from one decode of the source, each to its MP4 in
    `outputs`. The fps filter makes the video constant-rate on the source's frame grid, so a
    chunk's frames are the same whatever frame its seek landed on."""
    labels = "".join(f"[s{i}]" for i in range(len(targets)))
    graph = [f"[0:v:0]fps={info.fps},split={len(targets)}{labels}"]
    graph += [f"[s{i}]scale={t.width}:{t.height}:flags=bicubic,setsar=1,format=yuv420p[v{i}]"
              for i, t in enumerate(targets)]
    args = ["-threads", str(threads), *_seek(info, chunk.first), "-i", str(src),
            "-filter_complex", ";".join(graph)]
    for i, (t, out) in enumerate(zip(targets, outputs, strict=True)):
        args += ["-map", f"[v{i}]", *_encoder(t, seg, info.fps, crf, preset, threads)]
        if chunk.frames is not None:
            args += ["-frames:v", str(chunk.frames)]
        args += ["-an", "-sn", "-dn", "-map_metadata", "-1", "-f", "mp4", str(out)]
    return args


def audio(src: Path, info: SourceInfo, kbps: int, out: Path) -> list[str]:
    """AAC-LC stereo at 48 kHz from the first video frame to the last."""
    seek = ["-ss", f"{info.video_start:.6f}"] if info.video_start > 0 else []
    return [*seek, "-i", str(src), "-map", "0:a:0", "-vn", "-c:a", "aac", "-b:a", f"{kbps}k",
            "-ac", "2", "-ar", "48000", "-t", f"{info.duration:.6f}", "-map_metadata", "-1",
            "-f", "mp4", str(out)]


def remux(src: Path, out: Path) -> list[str]:
    """Copy the video and first audio of a container without a keyframe index into Matroska,
    which has one, so every chunk's seek lands on a keyframe."""
    return ["-i", str(src), "-map", "0:v:0", "-map", "0:a:0?", "-c", "copy", "-sn", "-dn",
            "-map_metadata", "-1", "-f", "matroska", str(out)]


def concat_list(files: list[tuple[str, Fraction | None]]) -> str:
    """The concat demuxer's script: each chunk by name (relative to the script's folder) with its
    exact duration, so the joins carry on the timeline without rounding."""
    lines = ["ffconcat version 1.0"]
    for name, seconds in files:
        lines.append(f"file '{name}'")
        if seconds is not None:
            lines.append(f"duration {float(seconds):.9f}")
    return "\n".join([*lines, ""])


def mux(concat: Path, audio_file: Path | None, target: Target, folder: Path, *,
        fmt: str, seg: int, fps: Fraction) -> list[str]:
    """Join a rendition's chunks and its audio (stream copy) into HLS segments in `folder`.
    Segments are cut at the first keyframe at or after each multiple of `hls_time`; asking for
    half a frame less than a segment makes that keyframe the one starting each segment."""
    args = ["-f", "concat", "-safe", "0", "-i", str(concat)]
    if audio_file is not None:
        args += ["-i", str(audio_file)]
    args += ["-map", "0:v:0"] + (["-map", "1:a:0"] if audio_file is not None else [])
    args += ["-c", "copy"] + (["-tag:v", "hvc1"] if target.codec == "hevc" else [])
    ext = "m4s" if fmt == "fmp4" else "ts"
    args += ["-f", "hls", "-hls_time", f"{float((seg - Fraction(1, 2)) / fps):.6f}",
             "-hls_playlist_type", "vod", "-hls_list_size", "0",
             "-hls_segment_type", "fmp4" if fmt == "fmp4" else "mpegts",
             "-hls_segment_filename", str(folder / f"seg_%05d.{ext}")]
    if fmt == "fmp4":
        args += ["-hls_fmp4_init_filename", "init.mp4"]
    return [*args, str(folder / "ffmpeg.m3u8")]

"""The one home of the ffmpeg and ffprobe executables: find, probe, run an encode with progress.

Everything here is synchronous (`subprocess`): packaging is a command-line job, never on the event
loop. Every failure becomes a `UsageError` whose message is one line, so the CLI can print it and
exit 2 without a traceback.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from edge360.core.errors import UsageError

#: called with the fraction of the input encoded so far, 0.0-1.0
Progress = Callable[[float], None]

NOT_FOUND = "ffmpeg not found (install the ffmpeg package)"

# Demuxers that accept almost anything as a "video" (text shown as ANSI art, single images): an
# input they claim is not a film to package.
_NOT_FILM_FORMATS = {"tty", "image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "gif", "webp_pipe"}


@dataclass(frozen=True, slots=True)
class Tools:
    ffmpeg: str
    ffprobe: str


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What the packager needs to know about an input file."""

    width: int
    height: int
    fps: Fraction
    duration: float
    has_audio: bool


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """The video of one encoded segment, as a player will see it."""

    width: int
    height: int
    profile: str
    codecs: str  # RFC 8216 §4.3.4.2 CODECS value of the video, e.g. avc1.640028


def find_tools() -> Tools:
    """Both executables from PATH, or the one clear error."""
    ffmpeg, ffprobe = shutil.which("ffmpeg"), shutil.which("ffprobe")
    if ffmpeg is None or ffprobe is None:
        raise UsageError(NOT_FOUND)
    return Tools(ffmpeg, ffprobe)


def _probe_json(tools: Tools, path: Path, *extra: str) -> dict[str, object] | None:
    proc = subprocess.run(
        [tools.ffprobe, "-v", "error", "-of", "json", *extra, str(path)],
        capture_output=True, check=False, timeout=120,
    )
    if proc.returncode != 0:
        return None
    try:
        data = json.loads(proc.stdout or b"{}")
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _rate(text: object) -> Fraction:
    try:
        value = Fraction(str(text))
    except (ValueError, ZeroDivisionError):
        return Fraction(0)
    return value if value > 0 else Fraction(0)


def probe_source(tools: Tools, path: Path) -> SourceInfo:
    """Height, frame rate, duration and audio presence of `path`; UsageError if it is no video."""
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if not path.is_file() or not os.access(path, os.R_OK):
        raise UsageError(f"{path}: not a readable file")
    data = _probe_json(tools, path, "-show_entries",
                       "format=duration,format_name:stream=codec_type,width,height,"
                       "avg_frame_rate,r_frame_rate:stream_disposition=attached_pic")
    not_video = UsageError(f"{path}: not a video file (ffprobe found no video stream)")
    if data is None:
        raise not_video
    fmt = data.get("format")
    streams = data.get("streams")
    if not isinstance(fmt, dict) or not isinstance(streams, list):
        raise not_video
    if set(str(fmt.get("format_name", "")).split(",")) & _NOT_FILM_FORMATS:
        raise not_video
    videos = [s for s in streams if isinstance(s, dict) and s.get("codec_type") == "video"
              and not (s.get("disposition") or {}).get("attached_pic")]
    if not videos:
        raise not_video
    video = videos[0]
    fps = _rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate"))
    try:
        duration = float(str(fmt.get("duration")))
        width, height = int(str(video.get("width"))), int(str(video.get("height")))
    except ValueError:
        raise not_video from None
    if not (duration > 0 and math.isfinite(duration) and width > 0 and height > 0 and fps > 0):
        raise not_video
    has_audio = any(isinstance(s, dict) and s.get("codec_type") == "audio" for s in streams)
    return SourceInfo(width, height, fps, duration, has_audio)


def _sps_codecs(annexb: bytes) -> str | None:
    """`avc1.PPCCLL` from the first sequence parameter set of an H.264 Annex B stream.

    The three bytes after the SPS NAL header are profile_idc, the constraint flags and level_idc
    (ITU-T H.264 §7.3.2.1.1); RFC 6381 §3.3 spells them in hex as the CODECS value.
    """
    start = 0
    for _ in range(len(annexb)):  # bounded: each pass moves past one start code
        i = annexb.find(b"\x00\x00\x01", start)
        if i < 0 or i + 6 >= len(annexb):
            return None
        if annexb[i + 3] & 0x1F == 7:
            p, c, lv = annexb[i + 4], annexb[i + 5], annexb[i + 6]
            return f"avc1.{p:02x}{c:02x}{lv:02x}"
        start = i + 3
    return None


def probe_output(tools: Tools, segment: Path, init: Path | None = None) -> StreamInfo:
    """Resolution, profile and real CODECS string of an encoded segment (with its init for fmp4)."""
    source = segment
    tmp: Path | None = None
    if init is not None:  # an fmp4 fragment is only decodable after its initialisation section
        fd, name = tempfile.mkstemp(suffix=".mp4", dir=segment.parent)
        tmp = source = Path(name)
        with os.fdopen(fd, "wb") as out:
            out.write(init.read_bytes())
            out.write(segment.read_bytes())
    try:
        data = _probe_json(tools, source, "-select_streams", "v:0",
                           "-show_entries", "stream=width,height,profile")
        raw = subprocess.run(
            [tools.ffmpeg, "-v", "error", "-i", str(source), "-map", "0:v:0", "-c", "copy",
             "-frames:v", "1", "-f", "h264", "pipe:1"],
            capture_output=True, check=False, timeout=120,
        )
    finally:
        if tmp is not None:
            tmp.unlink()
    streams = (data or {}).get("streams")
    codecs = _sps_codecs(raw.stdout) if raw.returncode == 0 else None
    if not isinstance(streams, list) or not streams or codecs is None:
        raise UsageError(f"cannot read the encoded video in {segment}")
    s = streams[0]
    return StreamInfo(int(s["width"]), int(s["height"]), str(s.get("profile", "")), codecs)


def run_encode(tools: Tools, args: Sequence[str], duration: float,
               progress: Progress | None = None) -> None:
    """Run ffmpeg with `args`, reporting progress from its `-progress pipe:1` key=value lines."""
    cmd = [tools.ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-nostats",
           "-progress", "pipe:1", *args]
    with tempfile.TemporaryFile() as errors:
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors) as proc:
            assert proc.stdout is not None
            try:
                # Bounded by EOF: ffmpeg closes stdout when it exits.
                for line in proc.stdout:
                    key, _, value = line.decode("ascii", "replace").strip().partition("=")
                    # out_time_us: microseconds of output written (so is out_time_ms, despite
                    # its name)
                    if key == "out_time_us" and progress is not None and value.isdigit():
                        progress(min(1.0, int(value) / 1e6 / duration))
            except BaseException:
                proc.kill()  # an interrupted packaging must not leave ffmpeg writing
                raise
        code = proc.returncode
        if code != 0:
            errors.seek(0)
            lines = [ln for ln in errors.read().decode("utf-8", "replace").splitlines() if ln]
            last = lines[-1] if lines else f"exit status {code}"
            raise UsageError(f"ffmpeg failed: {last}")
    if progress is not None:
        progress(1.0)

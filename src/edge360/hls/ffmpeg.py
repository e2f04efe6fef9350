"""The one home of the ffmpeg and ffprobe executables: find, probe, run an encode with progress.

Everything here is synchronous (`subprocess`): packaging is a command-line job, never on the event
loop. Every failure becomes a `UsageError` whose message is one line, so the CLI can print it and
exit 2 without a traceback. Encodes run in their own session, so a Ctrl-C on the terminal reaches
the packager alone, which then stops every ffmpeg it started (`Processes.kill_all`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from edge360.core.errors import UsageError

#: called with the fraction of one encode done so far, 0.0-1.0
Progress = Callable[[float], None]

NOT_FOUND = "ffmpeg not found (install the ffmpeg package)"

# Demuxers that accept almost anything as a "video" (text shown as ANSI art, single images): an
# input they claim is not a film to package.
_NOT_FILM_FORMATS = {"tty", "image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "gif", "webp_pipe"}
#: frame rates outside this range are a container's time base, not a film's rate
_FPS_RANGE = (Fraction(1), Fraction(240))


@dataclass(frozen=True, slots=True)
class Tools:
    ffmpeg: str
    ffprobe: str


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What the packager needs to know about an input file."""

    width: int
    height: int
    sar: Fraction  # sample aspect ratio: 1 for square pixels
    fps: Fraction
    duration: float  # seconds of video from its first frame
    has_audio: bool
    video_start: float  # the first video frame's time after the start of the file
    container: str = ""  # ffprobe's format_name, e.g. "mov,mp4,m4a,3gp,3g2,mj2" or "mpegts"

    @property
    def seeks_to_keyframes(self) -> bool:
        """Whether the container has a keyframe index (MP4/MOV, Matroska/WebM), so a seek lands
        on the keyframe before the wanted frame; MPEG-TS and raw streams seek by guesswork."""
        return bool(set(self.container.split(",")) & {"mov", "mp4", "matroska", "webm"})

    @property
    def frames(self) -> int:
        """Frames of video, estimated from its duration (the last encode runs to the end)."""
        return max(1, math.floor(self.duration * self.fps + 0.5))


@dataclass(frozen=True, slots=True)
class Packet:
    """One video packet of a file: where its bytes start, how many, and whether it is a keyframe."""

    pos: int
    size: int
    key: bool


def find_tools() -> Tools:
    """Both executables from PATH, or the one clear error."""
    ffmpeg, ffprobe = shutil.which("ffmpeg"), shutil.which("ffprobe")
    if ffmpeg is None or ffprobe is None:
        raise UsageError(NOT_FOUND)
    return Tools(ffmpeg, ffprobe)


def _probe_json(tools: Tools, path: Path, *extra: str) -> dict[str, object] | None:
    proc = subprocess.run(
        [tools.ffprobe, "-v", "error", "-of", "json", *extra, str(path)],
        capture_output=True, check=False, timeout=300,
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
    return value if _FPS_RANGE[0] <= value <= _FPS_RANGE[1] else Fraction(0)


def _seconds(value: object) -> float | None:
    try:
        seconds = float(str(value))
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) else None


def probe_source(tools: Tools, path: Path) -> SourceInfo:
    """Size, frame rate, duration, start and audio presence of `path`; UsageError if it is no
    video."""
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if not path.is_file() or not os.access(path, os.R_OK):
        raise UsageError(f"{path}: not a readable file")
    data = _probe_json(tools, path, "-show_entries",
                       "format=duration,format_name,start_time:stream=codec_type,width,height,"
                       "avg_frame_rate,r_frame_rate,sample_aspect_ratio,start_time,duration"
                       ":stream_disposition=attached_pic")
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
        width, height = int(str(video.get("width"))), int(str(video.get("height")))
    except ValueError:
        raise not_video from None
    file_start = _seconds(fmt.get("start_time")) or 0.0
    video_start = max(0.0, (_seconds(video.get("start_time")) or file_start) - file_start)
    duration = _seconds(video.get("duration"))
    if duration is None:  # Matroska and others give only the file's duration
        duration = (_seconds(fmt.get("duration")) or 0.0) - video_start
    if not (duration > 0 and width > 0 and height > 0):
        raise not_video
    if fps == 0:
        raise UsageError(f"{path}: no usable frame rate (ffprobe reports "
                         f"{video.get('avg_frame_rate')})")
    try:
        sar = Fraction(str(video.get("sample_aspect_ratio", "1:1")).replace(":", "/"))
    except (ValueError, ZeroDivisionError):
        sar = Fraction(1)
    sar = sar if Fraction(1, 4) <= sar <= 4 else Fraction(1)  # 0:1 means unknown
    has_audio = any(isinstance(s, dict) and s.get("codec_type") == "audio" for s in streams)
    return SourceInfo(width, height, sar, fps, duration, has_audio, video_start,
                      str(fmt.get("format_name", "")))


def stream_fields(tools: Tools, path: Path, stream: str, *fields: str) -> dict[str, str]:
    """ffprobe's `fields` of the first `stream` ("v:0", "a:0") of a file; {} if it has none."""
    data = _probe_json(tools, path, "-select_streams", stream,
                       "-show_entries", "stream=" + ",".join(fields))
    streams = (data or {}).get("streams")
    if not isinstance(streams, list) or not streams or not isinstance(streams[0], dict):
        return {}
    return {k: str(v) for k, v in streams[0].items()}


def first_annexb_frame(tools: Tools, path: Path) -> bytes:
    """The first H.264 frame of `path` as an Annex B stream (its parameter sets come first)."""
    raw = subprocess.run(
        [tools.ffmpeg, "-v", "error", "-i", str(path), "-map", "0:v:0", "-c", "copy",
         "-frames:v", "1", "-f", "h264", "pipe:1"],
        capture_output=True, check=False, timeout=300,
    )
    return raw.stdout if raw.returncode == 0 else b""


def video_packets(tools: Tools, path: Path) -> list[Packet]:
    """Every video packet of `path` in file order. For MP4 `pos` is where the sample's bytes
    start; for MPEG-TS it is the transport packet where its PES packet starts."""
    proc = subprocess.run(
        [tools.ffprobe, "-v", "error", "-select_streams", "v:0", "-show_entries",
         "packet=pos,size,flags", "-of", "compact=p=0", str(path)],
        capture_output=True, check=False, timeout=600, text=True,
    )
    if proc.returncode != 0:
        raise UsageError(f"ffprobe cannot read the packets of {path}")
    packets = []
    for line in proc.stdout.splitlines():  # "size=3522|pos=564|flags=K_"
        fields = dict(field.partition("=")[::2] for field in line.split("|"))
        pos, size = fields.get("pos", ""), fields.get("size", "")
        if pos.isdigit() and size.isdigit():  # side data lines carry neither
            packets.append(Packet(int(pos), int(size), fields.get("flags", "").startswith("K")))
    return sorted(packets, key=lambda p: p.pos)


class Processes:
    """The ffmpeg processes running for one packaging run, so an interruption can stop them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, subprocess.Popen[bytes]] = {}
        self.stopping = False

    def add(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._running[proc.pid] = proc
            if self.stopping:
                proc.kill()

    def remove(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._running.pop(proc.pid, None)

    def kill_all(self) -> None:
        """Stop every process started for this run (by its PID, never by name)."""
        with self._lock:
            self.stopping = True
            for proc in self._running.values():
                if proc.poll() is None:
                    proc.kill()


def run_encode(tools: Tools, args: Sequence[str], duration: float,
               progress: Progress | None = None, processes: Processes | None = None) -> None:
    """Run ffmpeg with `args`, reporting progress from its `-progress pipe:1` key=value lines."""
    cmd = [tools.ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-nostats",
           "-progress", "pipe:1", *args]
    with tempfile.TemporaryFile() as errors:
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors,
                              start_new_session=True) as proc:
            assert proc.stdout is not None
            if processes is not None:
                processes.add(proc)
            try:
                # Bounded by EOF: ffmpeg closes stdout when it exits.
                for line in proc.stdout:
                    key, _, value = line.decode("ascii", "replace").strip().partition("=")
                    # out_time_us: microseconds of output written (so is out_time_ms, despite
                    # its name)
                    if key == "out_time_us" and progress is not None and value.isdigit():
                        progress(min(1.0, int(value) / 1e6 / max(duration, 1e-3)))
            except BaseException:
                proc.kill()  # an interrupted packaging must not leave ffmpeg writing
                raise
            finally:
                proc.wait()
                if processes is not None:
                    processes.remove(proc)
        code = proc.returncode
        if processes is not None and processes.stopping:
            raise KeyboardInterrupt
        if code != 0:
            errors.seek(0)
            lines = [ln for ln in errors.read().decode("utf-8", "replace").splitlines() if ln]
            last = lines[-1] if lines else f"exit status {code}"
            raise UsageError(f"ffmpeg failed: {last}")
    if progress is not None:
        progress(1.0)

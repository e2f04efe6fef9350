"""The packager's progress line on stderr: a bar, the percentage and the time still to go."""

from __future__ import annotations

import math
import threading
from typing import TextIO


def clock_text(seconds: float | None) -> str:
    """`1:02:03`, `4:05` or `--:--` for a duration in seconds."""
    if seconds is None or not math.isfinite(seconds) or not 0 <= seconds <= 1e7:
        return "--:--"
    s = round(seconds)
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    """A one-line bar on a terminal; on a pipe, one line per tenth so logs stay short. Called
    from the encoding threads, so it draws under a lock."""

    def __init__(self, stream: TextIO, label: str) -> None:
        self.stream, self.label = stream, label
        self.tty = stream.isatty()
        self.shown = -1
        self.lock = threading.Lock()

    def note(self, text: str) -> None:
        """A line of its own (the bar starts again below it)."""
        with self.lock:
            self.stream.write(("\n" if self.tty and 0 <= self.shown < 100 else "")
                              + f"{self.label}: {text}\n")
            self.stream.flush()
            self.shown = -1

    def __call__(self, fraction: float, eta: float | None = None) -> None:
        pct = max(0, min(100, int(fraction * 100)))
        with self.lock:
            if pct == self.shown or (not self.tty and pct // 10 == self.shown // 10
                                     and self.shown >= 0):
                return
            self.shown = pct
            left = "done" if pct >= 100 else f"ETA {clock_text(eta)}"
            if self.tty:
                bar = "#" * (pct // 4) + "-" * (25 - pct // 4)
                end = "\n" if pct >= 100 else ""
                self.stream.write(f"\r{self.label} [{bar}] {pct:3d}%  {left}{end}")
            else:
                self.stream.write(f"{self.label} {pct:3d}%  {left}\n")
            self.stream.flush()

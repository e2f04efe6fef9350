"""Where a packaging run keeps its work, so an interrupted run continues where it stopped, and how
the finished title is published.

The work folder is `.<title>.partial` beside the destination (hidden: the origin never scans it).
It holds `state.json` (what is being made, from what, which rungs were rebalanced), `work/`
(finished chunks and audio, each renamed into place only once ffmpeg is done with it, so a file
there is always whole) and `title/` (the title being assembled). A run with the same input and
settings reuses every finished file; any other run starts the folder afresh. One run at a time:
the folder is locked (flock) while a run uses it. The finished title is renamed into place (one
atomic rename, same filesystem), never copied, so the destination is either the old title or the
new one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from edge360.core.errors import UsageError
from edge360.hls.ladder import Target

#: bumped when the work folder's layout or an encode's meaning changes: old work is not reused
LAYOUT = 1


def prepare_destination(out: Path) -> None:
    """Refuse to replace anything but nothing, an empty folder or an earlier packaged title."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "master.m3u8").is_file():
        raise UsageError(f"{out} is not empty and holds no title; choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)


class Workdir:
    """The work folder of one destination, locked for the life of the `open` context."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.root = out.parent / f".{out.name}.partial"
        self.work = self.root / "work"
        self.title = self.root / "title"
        self.state_file = self.root / "state.json"
        self.resumed = False
        #: rungs `rebalance` gave another rate: folder -> (cap kbit/s, ABR kbit/s)
        self.rates: dict[str, tuple[int, int]] = {}

    @contextlib.contextmanager
    def open(self, fingerprint: Mapping[str, Any]) -> Iterator[Workdir]:
        """Lock the folder and load its state if it was made for `fingerprint`, else empty it."""
        self.root.mkdir(exist_ok=True)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UsageError(f"another package run is writing {self.out}") from None
            state = self._load()
            wanted = {"layout": LAYOUT, **fingerprint}
            if state is not None and state.get("fingerprint") == wanted:
                self.resumed = True
                self.rates = _rates(state.get("rates"))
            else:
                for child in self.root.iterdir():
                    _remove(child)
            self.fingerprint = wanted
            self.work.mkdir(exist_ok=True)
            self._remove_leftovers()
            self.save()
            yield self
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _load(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _remove_leftovers(self) -> None:
        """Temporary files of an earlier run that stopped before renaming them."""
        for path in self.work.rglob(".tmp-*"):
            path.unlink(missing_ok=True)

    def save(self) -> None:
        """Write the state atomically (write a temporary file, then rename over the old one)."""
        text = json.dumps({"fingerprint": self.fingerprint, "rates": self.rates}, indent=1)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-state-", dir=self.root)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, self.state_file)

    def rate_of(self, target: Target) -> Target:
        """`target` with the rate an earlier pass of this run gave it, if any."""
        cap, abr = self.rates.get(target.folder, (0, 0))
        return dataclasses.replace(target, cap_kbps=cap, abr_kbps=abr)

    def remember(self, targets: Sequence[Target]) -> None:
        """Keep the new rates of re-encoded rungs, so a resumed run encodes them so too."""
        for t in targets:
            self.rates[t.folder] = (t.cap_kbps, t.abr_kbps)
        self.save()

    def folder(self, name: str) -> Path:
        path = self.work / name
        path.mkdir(exist_ok=True)
        return path

    def fresh_title(self) -> Path:
        """An empty `title/` to assemble the title in."""
        if self.title.exists():
            shutil.rmtree(self.title)
        self.title.mkdir()
        return self.title

    def publish(self) -> None:
        """Rename the assembled title into place, replacing an earlier one, then drop the work."""
        os.chmod(self.title, 0o755)
        if not self.out.exists():
            os.rename(self.title, self.out)
        else:
            old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.old-", dir=self.out.parent))
            os.rename(self.out, old / "title")
            os.rename(self.title, self.out)
            shutil.rmtree(old)
        shutil.rmtree(self.root)


def _rates(value: object) -> dict[str, tuple[int, int]]:
    """The rates kept in a state file; a damaged entry is dropped (its rung starts over)."""
    out: dict[str, tuple[int, int]] = {}
    for name, pair in (value or {}).items() if isinstance(value, dict) else ():
        if (isinstance(pair, list) and len(pair) == 2
                and all(isinstance(x, int) and x >= 0 for x in pair)):
            out[str(name)] = (pair[0], pair[1])
    return out


def temporary_name(final: Path) -> Path:
    """Where a file is written before it is renamed to `final` (a name `_remove_leftovers`
    knows)."""
    return final.with_name(f".tmp-{os.getpid()}-{final.name}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)

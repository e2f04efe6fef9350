"""The origin answers from what it opens: a file's size, validators and body all come from one
open descriptor, so a changed file is answered as its new version and never as a body that
disagrees with its own headers (docs/HTTP.md, "Publishing").

A segment too big to hold in memory is opened per request; `fstat` of that descriptor gives the
version (size, mtime, ctime, inode) from which Content-Length, ETag and Last-Modified derive, and
the same descriptor is sent. Before the last bytes go out the descriptor is stat'ed again
(`unchanged`): a file overwritten in place while it was being sent cuts the answer.

A file still being written is not published (`Settle`): its mtime lies within
`origin.settle_seconds`, or it grew since the previous look less than that ago. Such a
file is answered 503 with Retry-After and no-store; live and event titles are exempt (their files
are written while they are served, by design). Blocking calls: run them in a thread.
"""

from __future__ import annotations

import os
import stat
from collections import OrderedDict
from dataclasses import dataclass

from edge360.core.conditional import http_date, make_etag
from edge360.core.errors import NotFound

#: files whose last look the settle rule remembers at most (oldest forgotten first)
MAX_SEEN = 200_000


@dataclass(frozen=True, slots=True)
class Version:
    """One version of a file, as one stat saw it."""

    size: int
    mtime: float
    mtime_ns: int
    ctime_ns: int
    ino: int

    @classmethod
    def of(cls, st: os.stat_result) -> Version:
        return cls(st.st_size, st.st_mtime, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)

    @property
    def etag(self) -> str:
        return make_etag(self.size, self.mtime_ns, self.ino)

    @property
    def last_modified(self) -> str:
        return http_date(self.mtime)


@dataclass(slots=True)
class Opened:
    """An open file and the version its descriptor holds."""

    fd: int
    version: Version

    def unchanged(self) -> bool:
        """Whether the descriptor still holds the same version (a write in place changes ctime,
        even when it restores size and mtime)."""
        try:
            return Version.of(os.fstat(self.fd)) == self.version
        except OSError:
            return False

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


def open_version(path: str) -> Opened:
    """Open a regular file for reading and stat it (blocking). NotFound when it is gone or is
    not a regular file any more."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        raise NotFound(path) from None
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise NotFound(path) from None
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotFound(path)
    return Opened(fd, Version.of(st))


def stat_version(path: str) -> Version | None:
    """The version at `path` now, or None when it is gone (blocking)."""
    try:
        return Version.of(os.stat(path))
    except OSError:
        return None


def read_version(path: str) -> tuple[bytes, Version]:
    """A small file's bytes and the version they are (blocking; read from one descriptor)."""
    opened = open_version(path)
    try:
        chunks = []
        left = opened.version.size
        while left > 0:
            data = os.read(opened.fd, left)
            if not data:
                break
            chunks.append(data)
            left -= len(data)
        body = b"".join(chunks)
        if len(body) != opened.version.size or not opened.unchanged():
            raise NotFound(path)  # changed while read: the next look reads the new version
        return body, opened.version
    finally:
        opened.close()


class Settle:
    """The publishing rule (see the module docstring), per file path."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._seen: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def recent(self, mtime: float, now: float) -> bool:
        """Whether a file modified at `mtime` is too recent to publish at wall-clock `now`."""
        return now - mtime < self.seconds

    def settling(self, path: str, version: Version, now: float) -> bool:
        """Whether `version` of `path`, seen at wall-clock `now`, is still being written."""
        if self.seconds <= 0:
            return False
        if self.recent(version.mtime, now):
            return True
        previous = self._seen.pop(path, None)
        self._seen[path] = (version.size, now)
        if len(self._seen) > MAX_SEEN:
            self._seen.popitem(last=False)
        return previous is not None and version.size > previous[0] \
            and now - previous[1] < self.seconds

    def retry_after(self, mtime: float, now: float) -> int:
        """Seconds until a file modified at `mtime` may have settled (at least 1)."""
        return max(1, int(mtime + self.seconds - now + 0.999))

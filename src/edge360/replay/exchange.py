"""What one GET of the replayer's lean client is (an Exchange, from queued to answered) and what it
gets back: an Answer, or a FetchError that names the kind of failure the player records.

The connections and pools that carry exchanges are in replay/wirepool.py, the client in
replay/wire.py."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge360.replay.wirepool import Conn


class FetchError(Exception):
    """A GET that got no usable answer; `kind` is the error name the player records."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind, self.detail = kind, detail


class Answer:
    """A complete answer: status, header fields as received, the body if kept, its size."""

    __slots__ = ("body", "headers", "size", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes | None,
                 size: int) -> None:
        self.status, self.headers, self.body, self.size = status, headers, body, size

    def header(self, name: str) -> str | None:
        """The first field named `name` (any case); a linear scan, as only one or two are read."""
        want = name.lower().encode("latin-1")
        for key, value in self.headers:
            if key.lower() == want:
                return value.decode("latin-1")
        return None


class Exchange:
    """One request on its way: queued in a pool, then on a connection, until its future is set."""

    __slots__ = ("conn", "deadline", "future", "keep_body", "request", "retried")

    def __init__(self, request: bytes, keep_body: bool, future: asyncio.Future[Answer],
                 deadline: float) -> None:
        self.request, self.keep_body = request, keep_body
        self.future, self.deadline = future, deadline
        self.conn: Conn | None = None
        self.retried = False


def fail(ex: Exchange, kind: str, detail: str = "") -> None:
    if not ex.future.done():
        ex.future.set_exception(FetchError(kind, detail))

"""The access log: one JSON line per request on stderr (server.access_log), never blocking the loop.

A write to stderr blocks when the pipe behind it is full (a log shipper that fell behind, a
terminal scrolled back): done on the event loop, that would stall every viewer of the node. So
lines are collected in memory and written by one thread, in order: what one turn of the loop
logged goes out as one batch (under load a turn answers many requests, so batches grow with it).
What the writer has not taken yet is bounded (`max_pending` bytes): past it a line is dropped and
counted (`edge360_access_log_dropped_total`), as nginx's buffered log would rather lose
lines than stop serving.

The record: ts, client, method, path, query (token values redacted), status, bytes (sent on the
wire for the answer: status line, header and body, like nginx's $bytes_sent), ms, cache (X-Cache)
and ua. No other request header is written, so an Authorization bearer never reaches
the log. Every answer of the one content plane and of the control plane is written here, once
(http.dispatch).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import orjson

from edge360.node.counters import Counters
from edge360.security.tokens import redact_query

#: bytes of log lines waiting for the writer at most; more are dropped (and counted)
MAX_PENDING = 4 * 1024 * 1024
class AccessLog:
    """Buffered JSON lines to a file descriptor, written by one thread."""

    def __init__(self, counters: Counters, fd: int = 2, max_pending: int = MAX_PENDING) -> None:
        self._counters = counters
        self._fd = fd
        self._max = max_pending
        self._lines: list[bytes] = []
        self._pending = 0  # bytes in _lines plus bytes handed to the writer and not yet written
        self._lock = threading.Lock()  # _pending moves on the loop and in the writer thread
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge360-log")
        self._flushing: asyncio.Handle | None = None
        self.written_bytes = 0

    def request(self, *, client: str, method: str, path: str, query: str, status: int,
                sent: int | None, seconds: float, cache: str | None, ua: str) -> None:
        """Log one answered request."""
        line = orjson.dumps({
            "ts": round(time.time(), 3), "client": client, "method": method, "path": path,
            "query": redact_query(query) if query else "", "status": status, "bytes": sent,
            "ms": round(seconds * 1000, 2), "cache": cache, "ua": ua,
        }, option=orjson.OPT_APPEND_NEWLINE)
        with self._lock:
            if self._pending + len(line) > self._max:
                self._counters.access_log_dropped += 1
                return
            self._pending += len(line)
        self._lines.append(line)
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = None
        if self._lines:
            batch, self._lines = b"".join(self._lines), []
            self._writer.submit(self._write, batch)

    def _write(self, batch: bytes) -> None:
        view = memoryview(batch)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError:
            pass  # stderr closed: the lines are lost, serving goes on
        finally:
            with self._lock:
                self._pending -= len(batch)
                self.written_bytes += len(batch) - len(view)

    def close(self) -> None:
        """Write what is buffered and wait for the writer (at shutdown)."""
        if self._flushing is not None:
            self._flushing.cancel()
        self._flush()
        self._writer.shutdown(wait=True)

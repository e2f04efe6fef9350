"""A worker's side of the node-wide accounting (run.hub): it batches its touches for the hub,
reports its counters, asks the hub for node-wide snapshots and admission verdicts, and answers
the operations the hub fans out; RemoteTracker stands in for the session tracker in a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from typing import Any

from edge360.node.counters import Counters, counters_from_dict, counters_to_dict
from edge360.node.debuts import Debuts
from edge360.run.hub import (
    BATCH_SECONDS,
    MAX_BATCH,
    SYNC_SECONDS,
    Handler,
    read_frame,
    tracker_view,
    write_frame,
)
from edge360.sessions.cmcd import Playback
from edge360.sessions.playout import MAIN
from edge360.sessions.tracker import SessionTracker


class HubClient:
    """A worker's side: batches touches, fetches node-wide snapshots, answers fanned-out ops."""

    def __init__(self, worker: int, clock: Callable[[], float], counters: Counters) -> None:
        self.worker = worker
        self.clock = clock
        self.counters = counters
        self.handlers: dict[str, Handler] = {}
        self.view: dict[str, Any] = tracker_view(SessionTracker(1, 1, 1), 0.0)
        self.node_counters = Counters(debuts=Debuts.from_young([]))  # births are the hub's
        self._batch: list[list[Any]] = []
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._waiters: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._flusher: asyncio.TimerHandle | None = None
        self._syncer: asyncio.TimerHandle | None = None
        self._report_counters = True  # the next flush carries the counters (see _sync)
        self._lock = asyncio.Lock()

    async def connect(self, path: str) -> None:
        self._reader, self._writer = await asyncio.open_unix_connection(path)
        write_frame(self._writer, {"t": "hello", "w": self.worker})
        self._sync()

    def _sync(self) -> None:
        """Report the counters every SYNC_SECONDS, so the hub's copy is never far behind them."""
        if self._writer is None or self._writer.is_closing():
            self._syncer = None
            return
        self._report_counters = True
        if self._flusher is None:  # a scheduled flush carries them anyway
            self.flush()
        self._syncer = asyncio.get_running_loop().call_later(SYNC_SECONDS, self._sync)

    def touch(self, key: str, now: float, *, title: str, rendition: str | None,
              nbytes: int = 0, media: float = 0.0, track: int = MAIN,
              cmcd: Playback | None = None) -> bool:
        """Queue a touch for the hub; whether it counted a view is known only there."""
        self._batch.append([key, now, title, rendition, nbytes, media, track,
                            None if cmcd is None else cmcd.wire()])
        if len(self._batch) >= MAX_BATCH:
            self.flush()
        elif self._flusher is None:
            self._flusher = asyncio.get_running_loop().call_later(BATCH_SECONDS, self.flush)
        return False

    def flush(self, kind: str = "touch", *, counters: bool = False, **extra: Any) -> None:
        """Send the batch; the counters go with it when asked for, when due (`_sync`) and with
        every question (any `kind` but a touch)."""
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        if self._writer is None:
            self._batch = []  # not connected (shutting down): nothing to count them into
            return
        msg: dict[str, Any] = {"t": kind, "b": self._batch, **extra}
        if counters or self._report_counters or kind != "touch":
            msg["c"] = counters_to_dict(self.counters)
            self._report_counters = False
        self._batch = []
        write_frame(self._writer, msg)

    async def _request(self, kind: str, **extra: Any) -> dict[str, Any]:
        req_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[req_id] = fut
        self.flush(kind, id=req_id, **extra)
        try:
            return await asyncio.wait_for(fut, 35)
        finally:
            self._waiters.pop(req_id, None)

    async def refresh(self) -> None:
        """Flush this worker's touches and take the node-wide view (for /metrics, /api/stats)."""
        msg = await self._request("snap")
        self.view = msg["v"]
        self.node_counters = counters_from_dict(msg["c"])
        self.node_counters.debuts = Debuts.from_young(msg.get("y", []))

    async def admit(self, args: dict[str, Any]) -> dict[str, Any]:
        """Ask the hub whether a new viewer may open a session (sessions.admission): the
        verdict (`v`, sessions.admission.to_wire) and the queue's epoch (`epoch`)."""
        msg = await self._request("admit", a=args)
        return {"v": [int(x) for x in msg["r"]], "epoch": str(msg.get("e", ""))}

    async def cast(self, op: str, args: dict[str, Any]) -> list[Any]:
        """Run `op` on every worker of the node (this one included); their results."""
        msg = await self._request("cast", op=op, args=args)
        return list(msg["r"])

    def ready(self, port: int, demo: bool) -> None:
        self.flush("ready", port=port, demo=demo)

    async def listen(self) -> None:
        """Read the hub's answers and ops until the connection closes (an owned task)."""
        assert self._reader is not None and self._writer is not None
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, OSError):
            while True:
                msg = await read_frame(self._reader)
                kind = msg.get("t")
                if kind in ("snap", "cast", "admit"):
                    fut = self._waiters.get(int(msg["id"]))
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
                elif kind == "op":
                    op = str(msg["op"])
                    handler = self.handlers.get(op)
                    result = await handler(msg["args"]) if handler else None
                    if op == "flush":
                        # the batch and the counters go out before the reply, in order: a
                        # snapshot is exact to the last request
                        self.flush(counters=True)
                    write_frame(self._writer, {"t": "reply", "id": msg["id"], "r": result})

    async def close(self) -> None:
        if self._syncer is not None:
            self._syncer.cancel()
            self._syncer = None
        self.flush(counters=True)
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer.drain()
            self._writer.close()


class RemoteTracker:
    """A worker's stand-in for SessionTracker: touches go to the hub, reads show its last view."""

    def __init__(self, client: HubClient) -> None:
        self.client = client
        self.touch = client.touch

    def expire(self, now: float) -> int:
        return 0  # the hub expires sessions

    @property
    def active(self) -> int:
        return int(self.client.view["active"])

    @property
    def starting(self) -> int:
        return int(self.client.view.get("starting", 0))

    @property
    def peak(self) -> int:
        return int(self.client.view["peak"])

    @property
    def peak_time(self) -> float | None:
        value = self.client.view["peak_time"]
        return None if value is None else float(value)

    def peak_recent(self, now: float) -> int:
        return int(self.client.view["peak_recent"])

    @property
    def views(self) -> int:
        return int(self.client.view["views"])

    @property
    def views_by_title(self) -> dict[str, int]:
        return dict(self.client.view["views_by_title"])

    @property
    def watch_seconds_by_title(self) -> dict[str, float]:
        return dict(self.client.view["watch_seconds_by_title"])

    def active_by_label(self) -> dict[tuple[str, str], int]:
        return {(str(t), str(r)): int(n) for t, r, n in self.client.view["labels"]}

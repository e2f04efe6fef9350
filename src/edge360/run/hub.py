"""Node-wide accounting for `--workers N`: one session tracker and merged counters, in the
supervisor (the workers' side is run.hubclient).

A viewer's requests may land on any worker, so no worker can count sessions alone. Each worker
batches its touches (key, time, title, rendition, bytes, and what the play-out rule needs: media
seconds, track, CMCD) and sends them to the hub over a Unix socket every BATCH_SECONDS, together
with its counters; the hub applies them to the one tracker.
Admission (docs/OVERLOAD.md) is decided here too, so a node admits exactly up to its capacity
whichever worker a viewer reaches: a worker sends its batch with the question, and the hub
answers from the one session table and the one queue.
A worker answering /metrics or /api/stats first flushes its batch and asks the hub for a snapshot,
so every answer is node-wide and includes that worker's own latest requests; the snapshot carries
the births of young counter label sets (node.debuts), kept by the hub for the whole node. Admin
actions are fanned out to every worker through `cast`.

Node-wide counters never go backwards (they are Prometheus counters, whose rate() reads any
decrease as a reset): a worker that dies takes its counters with it and its replacement starts
from zero, so the hub keeps the last counters each gone worker reported (gauges aside) and adds
the live workers' on top. A worker reports its counters once every SYNC_SECONDS (with a batch
when it has one, alone when not), with every question it asks the hub, before it answers a
snapshot's flush and when it closes, so a SIGKILL loses at most SYNC_SECONDS of them. (Sent
with every batch, 20 times a second per worker, they cost the hub and the workers CPU at 60,000
viewers for nothing a scrape could see: a snapshot asks every worker for them anyway.)

Frames are a 4-byte big-endian length and an orjson object. Batches are bounded (a full batch is
sent at once), and the hub keeps at most one counters record per worker connection.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from edge360.node.counters import (
    Counters,
    counters_from_dict,
    counters_to_dict,
    rate_families,
    without_gauges,
)
from edge360.node.debuts import Debuts
from edge360.node.tasks import TaskGroup
from edge360.sessions import admission
from edge360.sessions.admission import Queue
from edge360.sessions.cmcd import Playback
from edge360.sessions.tracker import SessionTracker

BATCH_SECONDS = 0.05
#: a worker with nothing to batch still reports its counters this often
SYNC_SECONDS = 1.0
MAX_BATCH = 4096
MAX_FRAME = 64 * 1024 * 1024
_LEN = struct.Struct("!I")

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    head = await reader.readexactly(_LEN.size)
    (n,) = _LEN.unpack(head)
    if n > MAX_FRAME:
        raise ConnectionError(f"hub frame of {n} bytes refused")
    msg = orjson.loads(await reader.readexactly(n))
    if not isinstance(msg, dict):
        raise ConnectionError("hub frame is not an object")
    return msg


def write_frame(writer: asyncio.StreamWriter, msg: dict[str, Any]) -> None:
    data = orjson.dumps(msg)
    writer.write(_LEN.pack(len(data)) + data)


def tracker_view(t: SessionTracker, now: float) -> dict[str, Any]:
    """What a worker needs to answer /metrics and /api/stats for the whole node."""
    t.expire(now)
    return {
        "active": t.active, "starting": t.starting, "peak": t.peak, "peak_time": t.peak_time,
        "peak_recent": t.peak_recent(now), "views": t.views,
        "views_by_title": t.views_by_title, "watch_seconds_by_title": t.watch_seconds_by_title,
        "labels": [[title, rendition, n] for (title, rendition), n in t.active_by_label().items()],
    }


class Hub:
    """The supervisor's side: the node's one tracker and every worker's counters."""

    def __init__(self, tracker: SessionTracker, clock: Callable[[], float]) -> None:
        self.tracker = tracker
        self.clock = clock
        #: the node's admission queue; its epoch is the node's id in /api/stats
        self.queue = Queue(secrets.token_hex(6))
        self.hold = 120.0  # sessions.queue_hold as the workers last said it
        #: the latest counters of each live worker connection
        self.counters: dict[int, dict[str, Any]] = {}
        #: what workers that have gone counted (see the module docstring)
        self.retired = Counters()
        self._connections = itertools.count()
        self.ready: dict[int, int] = {}  # worker -> bound port
        self.ready_event = asyncio.Event()
        self.expected = 0
        self.demo = False
        self._writers: dict[int, asyncio.StreamWriter] = {}
        self._pending: dict[int, tuple[asyncio.Future[list[Any]], list[Any], int]] = {}
        self._ids = itertools.count(1)
        self._floor = 0.0  # touches are applied in non-decreasing time (batches interleave)
        self.debuts = Debuts(clock())
        self.tasks = TaskGroup(limit=1024)

    def apply(self, batch: list[list[Any]]) -> None:
        touch = self.tracker.touch
        floor = self._floor
        for key, at, title, rendition, nbytes, media, track, cmcd in batch:
            floor = max(floor, float(at))
            touch(str(key), floor, title=str(title),
                  rendition=None if rendition is None else str(rendition), nbytes=int(nbytes),
                  media=float(media), track=int(track),
                  cmcd=None if cmcd is None else Playback.from_wire(cmcd))
        self._floor = floor

    def admit(self, a: dict[str, Any]) -> list[int]:
        """A worker's admission question, answered from the node's table and queue (its own
        batch, sent with the question, is already applied)."""
        ticket = a.get("ticket")
        self.hold = float(a["hold"])
        now = max(self.clock(), self._floor)
        verdict = admission.admit(
            self.tracker, self.queue, now, key=str(a["key"]), explicit=bool(a["explicit"]),
            title=str(a["title"]), capacity=int(a["capacity"]), hold=self.hold,
            idle=float(a["idle"]), spare=bool(a.get("spare")),
            ticket=None if not ticket else (str(ticket[0]), int(ticket[1])))
        return admission.to_wire(verdict)

    def observe(self) -> None:
        """Once a second: the sessions ended so far, for the queue's churn."""
        now = self.clock()
        self.tracker.expire(now)
        self.queue.observe(now, self.tracker.views - self.tracker.active)

    def merged_counters(self) -> Counters:
        total = Counters()
        total.add(self.retired)
        for data in self.counters.values():
            total.add(counters_from_dict(data))
        return total

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        worker = -1
        # keyed by connection, not worker index: a restarted worker's first report must never
        # replace the totals of the process it replaces
        conn = next(self._connections)
        try:
            while True:
                msg = await read_frame(reader)
                kind = msg.get("t")
                if kind == "hello":
                    worker = int(msg["w"])
                    self._writers[worker] = writer
                    continue
                if "b" in msg:
                    self.apply(msg["b"])
                if "c" in msg:
                    self.counters[conn] = msg["c"]
                if kind == "ready":
                    self.ready[worker] = int(msg["port"])
                    self.demo = bool(msg.get("demo"))
                    if len(self.ready) >= self.expected:
                        self.ready_event.set()
                elif kind == "admit":
                    write_frame(writer, {"t": "admit", "id": msg["id"],
                                         "r": self.admit(msg["a"]), "e": self.queue.epoch})
                elif kind == "snap":
                    self.tasks.spawn(self._snap(writer, msg), "hub-snap")
                elif kind == "cast":
                    # in a task: the asking worker's own reply arrives on this connection
                    self.tasks.spawn(self._cast(writer, msg), "hub-cast")
                elif kind == "reply":
                    self._reply(msg)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            if self._writers.get(worker) is writer:
                del self._writers[worker]
            last = self.counters.pop(conn, None)
            if last is not None:
                self.retired.add(without_gauges(counters_from_dict(last)))
            writer.close()

    async def fanout(self, op: str, args: Any, within: float = 30) -> list[Any]:
        """Run `op` on every connected worker; their results (those that answered in time)."""
        cast_id = next(self._ids)
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        targets = list(self._writers.values())
        self._pending[cast_id] = (fut, [], len(targets))
        for w in targets:
            write_frame(w, {"t": "op", "id": cast_id, "op": op, "args": args})
        try:
            return await asyncio.wait_for(fut, within) if targets else []
        except TimeoutError:
            return list(self._pending[cast_id][1])
        finally:
            self._pending.pop(cast_id, None)

    async def _cast(self, writer: asyncio.StreamWriter, msg: dict[str, Any]) -> None:
        """Run an admin operation on every worker and answer with all their results."""
        results = await self.fanout(str(msg["op"]), msg["args"])
        write_frame(writer, {"t": "cast", "id": msg["id"], "r": results})

    async def _snap(self, writer: asyncio.StreamWriter, msg: dict[str, Any]) -> None:
        """A node-wide snapshot: every worker flushes first (its batch arrives before its reply
        on the same ordered stream), so the answer includes every request served so far."""
        await self.fanout("flush", None, within=2)
        now = self.clock()
        view = tracker_view(self.tracker, now)
        view["admission"] = {"node_id": self.queue.epoch, "epoch": self.queue.epoch,
                             "queued": self.queue.waiting(now, self.hold)}
        counters = self.merged_counters()
        self.debuts.observe(rate_families(counters, view["views_by_title"],
                                          view["watch_seconds_by_title"]), now)
        write_frame(writer, {"t": "snap", "id": msg["id"], "v": view,
                             "c": counters_to_dict(counters), "y": self.debuts.young(now)})

    def _reply(self, msg: dict[str, Any]) -> None:
        entry = self._pending.get(int(msg["id"]))
        if entry is None:
            return
        fut, results, expected = entry
        results.append(msg.get("r"))
        if len(results) >= expected and not fut.done():
            fut.set_result(results)

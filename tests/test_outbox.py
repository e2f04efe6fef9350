"""Small answers go out at the end of the event loop's turn (http.outbox): every connection's
answers made in one turn are written after the turn, one write per connection, in request order,
and nothing a connection writes later or a close overtakes them.

The connections here are the real http.protocol.Connection over a transport that records what
is done to it, answered by a handler that answers at once (the edge's memory hit): what is under
test is when and in which order the connection writes, which a socket would hide."""

from __future__ import annotations

import asyncio
from typing import Any

from edge360.core.errors import Edge360Error
from edge360.http.guard import ConnectionGuard
from edge360.http.listener import Listener
from edge360.http.outbox import Outbox
from edge360.http.protocol import Connection
from edge360.http.response import Response, encode_fields
from edge360.http.wire import Request
from edge360.node.counters import Counters
from tests.fixtures.servers import make_config
from tests.fixtures.titles import make_title

BIG = 300 * 1024  # above http.protocol's CHUNK: written by a task, after the head


class Recorder:
    """A transport that records writes and closes, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, bytes]] = []

    def write(self, data: bytes) -> None:
        self.events.append(("write", bytes(data)))

    def writes(self) -> list[bytes]:
        return [data for what, data in self.events if what == "write"]

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return any(what == "close" for what, _ in self.events)

    def close(self) -> None:
        self.events.append(("close", b""))

    def can_write_eof(self) -> bool:
        return True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Answers:
    """A handler that answers every request at once with its path as the body (BIG bytes for
    /big)."""

    def respond(self, request: Request) -> Response:
        body = b"b" * BIG if request.path == "/big" else request.path.encode()
        return Response(200, encode_fields({"Content-Type": "text/plain"}), body=body,
                        length=len(body))

    def refuse(self, error: Edge360Error) -> Response:
        return Response(error.status, b"", body=b"", length=0, close=True)

    def observe(self, request: Request | None, response: Response, wire_bytes: int,
                seconds: float, peer: str) -> None:
        pass


def connect(outbox: Outbox, guard: ConnectionGuard) -> tuple[Connection, Recorder]:
    handler = Answers()
    conn, transport = Connection(handler, guard, Listener(handler, guard), outbox), Recorder()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


def get(path: str, *fields: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\n" + "".join(f"{f}\r\n" for f in fields)
            + "\r\n").encode()


def bodies(data: bytes) -> list[bytes]:
    """The bodies of the answers in `data`, in order."""
    out = []
    while data:
        head, data = data.split(b"\r\n\r\n", 1)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        out.append(data[:length])
        data = data[length:]
    return out


def guard(tmp_path: Any) -> ConnectionGuard:
    make_title(tmp_path)
    return ConnectionGuard(make_config({"origin.media": str(tmp_path)}), Counters())


async def test_answers_of_one_turn_go_out_after_it_one_write_per_connection(tmp_path: Any) -> None:
    outbox = Outbox(asyncio.get_running_loop())
    g = guard(tmp_path)
    (a, ta), (b, tb) = connect(outbox, g), connect(outbox, g)
    a.data_received(get("/a"))
    b.data_received(get("/b1") + get("/b2") + get("/b3"))  # pipelined, in one read
    assert ta.events == [] and tb.events == []  # answered, not yet written
    await asyncio.sleep(0)
    assert [bodies(w) for w in ta.writes()] == [[b"/a"]]
    assert [bodies(w) for w in tb.writes()] == [[b"/b1", b"/b2", b"/b3"]]
    a.data_received(get("/a2"))  # the next turn: queued again, written again
    await asyncio.sleep(0)
    assert [bodies(w) for w in ta.writes()] == [[b"/a"], [b"/a2"]]


async def test_a_close_writes_the_queued_answers_first(tmp_path: Any) -> None:
    outbox = Outbox(asyncio.get_running_loop())
    g = guard(tmp_path)
    (a, ta), (b, tb) = connect(outbox, g), connect(outbox, g)
    a.data_received(get("/one") + get("/last", "Connection: close"))
    assert [what for what, _ in ta.events] == ["write", "close"]
    assert bodies(ta.events[0][1]) == [b"/one", b"/last"]
    b.data_received(get("/x"))
    b.eof_received()  # the client half-closed after its request, in the same turn
    assert [what for what, _ in tb.events] == ["write", "close"]
    await asyncio.sleep(0)  # the outbox's turn finds nothing left to write
    assert len(ta.writes()) == 1 and len(tb.writes()) == 1


async def test_an_answer_written_by_a_task_follows_the_queued_ones(tmp_path: Any) -> None:
    outbox = Outbox(asyncio.get_running_loop())
    conn, transport = connect(outbox, guard(tmp_path))
    conn.data_received(get("/small") + get("/big") + get("/after"))
    for _ in range(50):
        await asyncio.sleep(0)
    data = b"".join(transport.writes())
    assert bodies(data) == [b"/small", b"b" * BIG, b"/after"]


async def test_a_connection_lost_before_the_turn_ends_writes_nothing(tmp_path: Any) -> None:
    outbox = Outbox(asyncio.get_running_loop())
    g = guard(tmp_path)
    (a, ta), (b, tb) = connect(outbox, g), connect(outbox, g)
    a.data_received(get("/a"))
    b.data_received(get("/b"))
    a.connection_lost(None)
    await asyncio.sleep(0)
    assert ta.events == []
    assert [bodies(w) for w in tb.writes()] == [[b"/b"]]

"""Edge answers whose bytes arrive as they go out: a stored object in pieces not all in memory, a
flight whose body is still arriving, and an upstream answer relayed as it is (the answers from
bytes at hand are edge.held's).

Every one follows the plan of core.answer (preconditions, ranges, HEAD) through the header
builder of http.represent, exactly as the origin's answers do. When the bytes stop coming after
the head went out (an upstream body that broke off, a piece that failed its checks) the body
raises and the connection is cut: a client never sees a short body end cleanly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from edge360.cache.diskformat import OpenBody
from edge360.core.answer import Plan, whole
from edge360.core.conditional import parse_http_date
from edge360.core.ranges import ByteRange
from edge360.edge.coalescer import Flight, Head, Reader
from edge360.edge.held import file_slice, slices
from edge360.edge.stored import StoredObject
from edge360.http.represent import Prepared, fields_for, plan_for, render
from edge360.http.response import Part, Response, carried, encode_fields
from edge360.http.wire import Request


class Pieces(Protocol):
    """Where an answer's pieces come from (edge.piecesource.PieceSource)."""

    async def piece(self, n: int) -> bytes | memoryview | OpenBody: ...
    def close(self) -> None: ...


def from_pieces(p: Plan, obj: StoredObject, prepared: Prepared, source: Pieces,
                cache: str) -> Response:
    """A stored object in pieces, not all of them in the memory tier (those are
    edge.held.from_held_pieces): the pieces are read (or fetched) as the body goes out, a piece
    on disk as a span of its open file (sent with sendfile, closed once written, and by
    `source.close` when the answer ends)."""
    pb = obj.piece_bytes
    if not p.send_body:
        return render(p, prepared, lambda r: [], cache=cache)

    async def stream() -> AsyncIterator[Part]:
        for part in p.parts:
            if not isinstance(part, ByteRange):
                yield part
                continue
            for n in range(part.start // pb, part.end // pb + 1):
                data = await source.piece(n)
                if isinstance(data, OpenBody):
                    yield file_slice(part, obj, n, data)
                    data.close()  # written: the next part is asked for
                    continue
                for piece_part in slices(part, pb, {n: data}.__getitem__, only=n):
                    yield piece_part
    return Response(p.status, fields_for(p, prepared), stream=stream(), length=p.length,
                    cache=cache, carries=prepared.carries, release=source.close)


def from_flight(request: Request, flight: Flight, reader: Reader, head: Head,
                prepared: Prepared, max_ranges: int) -> Response:
    """A 200 whose body is still arriving: streamed as it comes, ranges included (in order);
    a body of unknown length is sent whole (RFC 9110 §14.2 lets a server ignore Range)."""
    length = head.length
    if length is None:
        p = plan_for(request, prepared, 0, None, max_ranges)
        if p.status == 304:
            reader.close()
            return render(p, prepared, lambda r: [], cache="MISS")
        p = whole(0, head=not p.send_body)
        fields = prepared.block
        if not p.send_body:
            reader.close()
            return Response(200, fields, length=None, cache="MISS", carries=prepared.carries)
        return Response(200, fields, stream=reader.parts(), length=None, cache="MISS",
                        carries=prepared.carries,
                        release=reader.close)
    p = plan_for(request, prepared, length, parse_http_date(head.headers.get("last-modified")),
                 max_ranges)
    if not p.send_body:
        reader.close()
        return render(p, prepared, lambda r: [], cache="MISS")

    async def stream() -> AsyncIterator[Part]:
        for part in p.parts:
            if not isinstance(part, ByteRange):
                yield part
                continue
            reader.seek(part.start)
            async for data in reader.parts(part.end + 1):
                yield data
    return Response(p.status, fields_for(p, prepared), stream=stream(), length=p.length,
                    cache="MISS", release=reader.close, carries=prepared.carries)


def relay(request: Request, flight: Flight, reader: Reader | None, head: Head,
          headers: dict[str, str]) -> Response:
    """Pass an upstream answer on as it is (redirects, errors, pass-through ranges)."""
    no_body = request.method == "HEAD" or head.status in (204, 304) or head.status < 200
    fields, carries = encode_fields(headers), carried(headers)
    if no_body or reader is None:
        if reader is not None:
            reader.close()
        return Response(head.status, fields, length=head.length if request.method == "HEAD"
                        else None if no_body else 0, cache=headers.get("X-Cache"),
                        carries=carries)
    return Response(head.status, fields, stream=reader.parts(), length=head.length,
                    cache=headers.get("X-Cache"), release=reader.close, carries=carries)

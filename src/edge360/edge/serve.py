"""Edge answers from each place the bytes can be: a stored whole object, a stored object in pieces,
a flight whose body is still arriving, and an upstream answer relayed as it is.

Every one follows the plan of core.answer (preconditions, ranges, HEAD) through the header
builder of http.represent, exactly as the origin's answers do. When the bytes stop coming after
the head went out (an upstream body that broke off, a piece that failed its checks) the body
raises and the connection is cut: a client never sees a short body end cleanly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Final, Protocol

from edge360.cache.diskformat import OpenBody
from edge360.core.answer import Plan, pieces_needed, whole
from edge360.core.conditional import parse_http_date
from edge360.core.errors import UpstreamError
from edge360.core.ranges import ByteRange
from edge360.edge.coalescer import Flight, Head, Reader
from edge360.edge.stored import StoredObject
from edge360.http.represent import Prepared, fields_for, memory_slicer, plan_for, render
from edge360.http.response import FileSpan, Part, Response, carried, encode_fields
from edge360.http.wire import Request

#: fields never copied from a stored or upstream answer: hop-by-hop (RFC 9110 §7.6.1) and framing
#: the edge writes itself
_DROP: Final = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                          "transfer-encoding", "upgrade", "content-length", "content-range",
                          "accept-ranges", "edge360-cache-control"})
_SPECIAL: Final = {"etag": "ETag", "www-authenticate": "WWW-Authenticate", "cdn-cache-control":
                   "CDN-Cache-Control", "edge360-cache-control": "Edge360-Cache-Control"}


class Pieces(Protocol):
    """Where an answer's pieces come from (edge.piecesource.PieceSource)."""

    async def piece(self, n: int) -> bytes | OpenBody: ...
    def close(self) -> None: ...


def canonical(name: str) -> str:
    """Header name as conventionally written."""
    return _SPECIAL.get(name) or "-".join(p.capitalize() for p in name.split("-"))


def client_headers(fields: Mapping[str, str], *, to_peer: bool = False) -> dict[str, str]:
    """Stored/upstream fields as sent to the client. Edge360-Cache-Control is for edge360
    caches only: it goes to a child edge and nowhere else (RFC 9213 §2)."""
    out = {canonical(k): v for k, v in fields.items() if k not in _DROP}
    if to_peer and "edge360-cache-control" in fields:
        out["Edge360-Cache-Control"] = fields["edge360-cache-control"]
    via = fields.get("via")
    out["Via"] = f"{via}, 1.1 edge360" if via else "1.1 edge360"
    return out


def from_whole(request: Request, obj: StoredObject, body: bytes, prepared: Prepared,
               max_ranges: int, cache: str) -> Response:
    """A stored whole object (or a body rewritten for the viewer: a playlist)."""
    s = obj.stored
    p = plan_for(request, prepared, len(body), s.last_modified, max_ranges, status=s.status)
    return render(p, prepared, memory_slicer(body), cache=cache)


def from_file(request: Request, obj: StoredObject, body: OpenBody, prepared: Prepared,
              max_ranges: int, cache: str) -> Response:
    """A stored whole object held by the disk tier, sent from its open file (closed by the
    answer's release, or here when no answer is made)."""
    s = obj.stored
    try:
        p = plan_for(request, prepared, body.length, s.last_modified, max_ranges,
                     status=s.status)
    except BaseException:
        body.close()
        raise

    def cut(r: ByteRange) -> list[Part]:
        return [FileSpan(body.file.fileno(), body.offset + r.start, r.length)]
    response = render(p, prepared, cut, cache=cache)
    response.release = body.close
    return response


def pieces_plan(request: Request, obj: StoredObject, prepared: Prepared,
                max_ranges: int) -> Plan:
    return plan_for(request, prepared, obj.length, obj.stored.last_modified, max_ranges)


def from_pieces(p: Plan, obj: StoredObject, prepared: Prepared, in_memory: list[bytes] | None,
                source: Pieces, cache: str) -> Response:
    """A stored object in pieces. `in_memory`: every piece the plan reads, in order, when all
    are in the memory tier (written at once); else the pieces are read (or fetched) as the body
    goes out, a piece on disk as a span of its open file (sent with sendfile, closed once
    written, and by `source.close` when the answer ends)."""
    pb = obj.piece_bytes
    if in_memory is not None:
        held = dict(zip(pieces_needed(p, pb), in_memory, strict=True))

        def cut(r: ByteRange) -> list[Part]:
            return list(_slices(r, pb, held.__getitem__))
        return render(p, prepared, cut, cache=cache)
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
                    yield _file_slice(part, obj, n, data)
                    data.close()  # written: the next part is asked for
                    continue
                for piece_part in _slices(part, pb, {n: data}.__getitem__, only=n):
                    yield piece_part
    return Response(p.status, fields_for(p, prepared), stream=stream(), length=p.length,
                    cache=cache, carries=prepared.carries, release=source.close)


def _file_slice(r: ByteRange, obj: StoredObject, n: int, body: OpenBody) -> FileSpan:
    """The part of range `r` in piece n, held on disk as `body`. A piece whose length is not
    the one the object's head gives raises (never a short or shifted body)."""
    base = n * obj.piece_bytes
    if body.length != obj.piece_span(n)[1] - base + 1:
        raise UpstreamError("stored piece has the wrong length", kind="invalid")
    lo, hi = max(r.start - base, 0), min(r.end - base, body.length - 1)
    return FileSpan(body.file.fileno(), body.offset + lo, hi - lo + 1)


def _slices(r: ByteRange, pb: int, piece: Callable[[int], bytes],
            only: int | None = None) -> list[Part]:
    """The slices of the pieces that hold range `r` (of piece `only` when given). A piece shorter
    than it must be raises (never a short body)."""
    out: list[Part] = []
    first, last = r.start // pb, r.end // pb
    for n in range(first, last + 1) if only is None else (only,):
        data = piece(n)
        base = n * pb
        lo, hi = max(r.start - base, 0), min(r.end - base, len(data) - 1)
        if hi < lo or base + hi < min(r.end, base + pb - 1):
            raise UpstreamError("piece shorter than expected", kind="invalid")
        out.append(memoryview(data)[lo:hi + 1])
    return out


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

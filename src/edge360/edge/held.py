"""Edge answers from bytes the store holds at hand: a whole object in memory or in a disk-tier
file, and an object whose every needed piece is in the memory tier; and the stored or upstream
fields as a client gets them.

Every one follows the plan of core.answer (preconditions, ranges, HEAD) through the header
builder of http.represent, exactly as the origin's answers do. This module is compiled
(docs/ARCHITECTURE.md, "Compiled modules"): an answer whose bytes arrive as it goes out is a
stream, an async generator, and lives in edge.serve.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from edge360.cache.diskformat import OpenBody
from edge360.cache.memfd import fd_of
from edge360.core.answer import Plan, pieces_needed
from edge360.core.errors import UpstreamError
from edge360.core.ranges import ByteRange
from edge360.edge.stored import StoredObject
from edge360.http.represent import Prepared, memory_slicer, plan_for, render
from edge360.http.response import FileSpan, Part, Response
from edge360.http.wire import Request

#: fields never copied from a stored or upstream answer: hop-by-hop (RFC 9110 §7.6.1) and framing
#: the edge writes itself
_DROP: Final = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                          "transfer-encoding", "upgrade", "content-length", "content-range",
                          "accept-ranges", "edge360-cache-control"})
_SPECIAL: Final = {"etag": "ETag", "www-authenticate": "WWW-Authenticate", "cdn-cache-control":
                   "CDN-Cache-Control", "edge360-cache-control": "Edge360-Cache-Control"}


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


def from_whole(request: Request, obj: StoredObject, body: bytes | memoryview,
               prepared: Prepared, max_ranges: int, cache: str) -> Response:
    """A stored whole object (or a body rewritten for the viewer: a playlist); one the memory
    tier holds in a memfd goes out as spans of its file, as a held piece does."""
    s = obj.stored
    p = plan_for(request, prepared, len(body), s.last_modified, max_ranges, status=s.status)
    if fd_of(body) is None:
        return render(p, prepared, memory_slicer(body), cache=cache)
    size = len(body)

    def cut(r: ByteRange) -> list[Part]:
        return slices(r, size, lambda _n: body)  # one "piece": the whole body
    return render(p, prepared, cut, cache=cache)


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


def from_held_pieces(p: Plan, obj: StoredObject, prepared: Prepared,
                     in_memory: list[bytes | memoryview], cache: str) -> Response:
    """A stored object in pieces, every piece the plan reads in the memory tier (`in_memory`, in
    order): all its parts at hand (a piece held in a memfd goes out as a span of its file)."""
    pb = obj.piece_bytes
    held = dict(zip(pieces_needed(p, pb), in_memory, strict=True))

    def cut(r: ByteRange) -> list[Part]:
        return slices(r, pb, held.__getitem__)
    return render(p, prepared, cut, cache=cache)


def file_slice(r: ByteRange, obj: StoredObject, n: int, body: OpenBody) -> FileSpan:
    """The part of range `r` in piece n, held on disk as `body`. A piece whose length is not
    the one the object's head gives raises (never a short or shifted body)."""
    base = n * obj.piece_bytes
    if body.length != obj.piece_span(n)[1] - base + 1:
        raise UpstreamError("stored piece has the wrong length", kind="invalid")
    lo, hi = max(r.start - base, 0), min(r.end - base, body.length - 1)
    return FileSpan(body.file.fileno(), body.offset + lo, hi - lo + 1)


def slices(r: ByteRange, pb: int, piece: Callable[[int], bytes | memoryview],
            only: int | None = None) -> list[Part]:
    """The slices of the pieces that hold range `r` (of piece `only` when given). A piece shorter
    than it must be raises (never a short body). A piece held in a memfd (cache.memfd) gives a
    span of its file, sent with sendfile where the connection allows it."""
    out: list[Part] = []
    first, last = r.start // pb, r.end // pb
    for n in range(first, last + 1) if only is None else (only,):
        data = piece(n)
        base = n * pb
        lo, hi = max(r.start - base, 0), min(r.end - base, len(data) - 1)
        if hi < lo or base + hi < min(r.end, base + pb - 1):
            raise UpstreamError("piece shorter than expected", kind="invalid")
        view = memoryview(data)[lo:hi + 1]
        fd = fd_of(data)
        out.append(view if fd is None else FileSpan(fd, lo, hi - lo + 1, view=view))
    return out

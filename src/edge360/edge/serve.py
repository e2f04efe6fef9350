"""Writing edge answers that do not fit responses.serve's "all bytes at hand" shape: an object held
in pieces, a body still arriving through a flight, and upstream answers relayed as they are.

The decisions are the same pure ones the origin uses (RFC 9110 §13 preconditions via
`conditional`, §14 ranges via `ranges`), so both roles answer a request alike. When the bytes stop
coming (an upstream body that broke off, a piece that fails validation) after the head went out,
the connection is aborted: the client must see a short body, never a cleanly ended wrong one.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from multidict import CIMultiDict

from edge360.core.conditional import (
    Outcome,
    evaluate_preconditions,
    if_range_matches,
    parse_http_date,
)
from edge360.core.errors import PreconditionFailed, UpstreamError
from edge360.core.ranges import (
    FULL,
    ByteRange,
    Multi,
    RangePlan,
    content_range,
    multipart_layout,
    resolve_range,
)
from edge360.edge.coalescer import Flight, Head
from edge360.http.responses import (
    NOT_MODIFIED_FIELDS,
    Representation,
    Served,
    conditional_fields,
    serve,
)

#: fields never copied from a stored or upstream answer: hop-by-hop (RFC 9110 §7.6.1) and framing
#: the edge writes itself
_DROP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                   "transfer-encoding", "upgrade", "content-length", "content-range",
                   "accept-ranges", "edge360-cache-control"})
_SPECIAL = {"etag": "ETag", "www-authenticate": "WWW-Authenticate", "cdn-cache-control":
            "CDN-Cache-Control", "edge360-cache-control": "Edge360-Cache-Control"}


def canonical(name: str) -> str:
    """Header name as conventionally written (responses.serve looks names up exactly)."""
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


def cut(request: web.Request, why: BaseException) -> ConnectionResetError:
    """Abort the client's connection mid-body; the caller raises the returned error."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    return ConnectionResetError(f"response cut short: {why}")


def _not_modified(headers: Mapping[str, str]) -> Served:
    kept = {k: v for k, v in headers.items()
            if k in NOT_MODIFIED_FIELDS or k.startswith("Access-Control-")}
    return Served(web.Response(status=304, headers=kept), 0)


def _preconditions(request: web.Request, etag: str | None, last_modified: float | None,
                   headers: Mapping[str, str]) -> Served | None:
    outcome = evaluate_preconditions(request.method, conditional_fields(request.headers), etag,
                                     last_modified)
    if outcome is Outcome.PRECONDITION_FAILED:
        raise PreconditionFailed("precondition failed")
    if outcome is Outcome.NOT_MODIFIED:
        return _not_modified(headers)
    return None


def _plan(request: web.Request, length: int, etag: str | None, last_modified: float | None,
          max_ranges: int) -> RangePlan:
    header = request.headers.get("Range")
    if header is None or not if_range_matches(request.headers.get("If-Range"), etag,
                                              last_modified):
        return FULL
    return resolve_range(header, length, max_ranges=max_ranges)


async def serve_pieced(request: web.Request, length: int, etag: str | None,
                       last_modified: float | None, headers: dict[str, str],
                       piece_bytes: int, piece: Callable[[int], Awaitable[bytes]],
                       max_ranges: int) -> Served:
    """Answer from an object held in pieces; `piece(n)` gives piece n (cache or fetch)."""
    early = _preconditions(request, etag, last_modified, headers)
    if early is not None:
        return early
    plan = _plan(request, length, etag, last_modified, max_ranges)
    h = CIMultiDict(headers)
    h["Accept-Ranges"] = "bytes"
    parts: list[bytes | ByteRange]
    status = 206
    if isinstance(plan, ByteRange):
        h["Content-Range"] = content_range(plan, length)
        parts, total = [plan], plan.length
    elif isinstance(plan, Multi):
        boundary = secrets.token_hex(12)
        parts, total = multipart_layout(plan, length, h.get("Content-Type",
                                                             "application/octet-stream"), boundary)
        h["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
    else:
        status, parts, total = 200, [ByteRange(0, length - 1)] if length else [], length
    response = web.StreamResponse(status=status, headers=h)
    response.content_length = total
    await response.prepare(request)
    if request.method == "HEAD":
        await response.write_eof()
        return Served(response, 0)
    sent = 0
    try:
        for part in parts:
            if isinstance(part, bytes):
                await response.write(part)
                sent += len(part)
                continue
            for n in range(part.start // piece_bytes, part.end // piece_bytes + 1):
                data = await piece(n)
                base = n * piece_bytes
                lo, hi = max(part.start - base, 0), min(part.end - base, len(data) - 1)
                if hi < lo or base + hi < min(part.end, base + piece_bytes - 1):
                    raise UpstreamError("piece shorter than expected", kind="invalid")
                await response.write(memoryview(data)[lo:hi + 1])
                sent += hi - lo + 1
    except UpstreamError as e:
        raise cut(request, e) from e
    await response.write_eof()
    return Served(response, sent)


async def serve_flight(request: web.Request, flight: Flight, head: Head,
                       headers: dict[str, str], max_ranges: int) -> Served:
    """Answer a GET/HEAD from a 200 whose body is still arriving: the plain and single-range
    answers are streamed as the bytes come; a multipart answer waits for the whole body.
    A body that is not kept (coalescer.stop_retaining: too big to store, or uncacheable) is
    never waited for whole: what would need it (multiple ranges, a range of a body of unknown
    length) gets the whole body streamed with 200, as RFC 9110 §14.2 lets a server ignore Range."""
    etag = head.headers.get("etag")
    last_modified = parse_http_date(head.headers.get("last-modified"))
    early = _preconditions(request, etag, last_modified, headers)
    if early is not None:
        return early
    length = head.length
    plan: RangePlan | None = None  # None: a range of a body whose length is not known yet
    if length is not None or "Range" not in request.headers:
        plan = FULL if length is None else _plan(request, length, etag, last_modified, max_ranges)
    if not flight.retain and (plan is None or isinstance(plan, Multi)):
        plan = FULL  # a body that is not kept is never waited for whole: Range ignored
    if plan is None or isinstance(plan, Multi):
        body = await flight.body()
        rep = Representation(headers=headers, length=len(body), etag=etag,
                             last_modified=last_modified, body=body)
        return await serve(request, rep, max_ranges=max_ranges, conditional=False)
    h = CIMultiDict(headers)
    h["Accept-Ranges"] = "bytes"
    start, end, status = 0, (length or 0) - 1, 200
    if isinstance(plan, ByteRange):
        assert length is not None
        start, end, status = plan.start, plan.end, 206
        h["Content-Range"] = content_range(plan, length)
    response = web.StreamResponse(status=status, headers=h)
    if length is not None:
        response.content_length = end - start + 1
    await response.prepare(request)
    if request.method == "HEAD":
        await response.write_eof()
        return Served(response, 0)
    sent, position = 0, start
    try:
        async for chunk in flight.stream(start):
            data = chunk[:end + 1 - position] if length is not None else chunk
            if data:
                await response.write(data)
                sent += len(data)
                position += len(data)
            if length is not None and position > end:
                break
    except UpstreamError as e:
        raise cut(request, e) from e
    await response.write_eof()
    return Served(response, sent)


async def relay(request: web.Request, flight: Flight, head: Head,
                headers: dict[str, str]) -> Served:
    """Pass an upstream answer on as it is (redirects, errors, pass-through ranges)."""
    response = web.StreamResponse(status=head.status, headers=headers)
    no_body = request.method == "HEAD" or head.status in (204, 304) or head.status < 200
    if head.length is not None and not (no_body and request.method != "HEAD"):
        response.content_length = head.length
    await response.prepare(request)
    sent = 0
    if not no_body:
        try:
            async for chunk in flight.stream():
                await response.write(chunk)
                sent += len(chunk)
        except UpstreamError as e:
            raise cut(request, e) from e
    await response.write_eof()
    return Served(response, sent)

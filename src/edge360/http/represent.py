"""From a plan (core.answer) to a Response: the one header builder of content answers.

A representation's fields are encoded once into a `Prepared` block (the hit path reuses it);
`render()` adds what the plan decides (Content-Range, a multipart Content-Type, the 304 subset)
and lays the body out from a slicer that turns each planned byte range into body parts (memory
slices or file spans). A body whose bytes are not all at hand (pieces still to fetch, a flight)
is laid out by the edge with the same plan (edge.serve).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence

from edge360.core.answer import NOT_MODIFIED_FIELDS, Plan, plan
from edge360.core.ranges import ByteRange
from edge360.http.response import FileSpan, Part, Response, carried, encode_fields
from edge360.http.wire import Request

#: what a browser player on another origin must be able to read (CORS, Fetch standard)
EXPOSE = "Content-Length, Content-Range, ETag, Age, X-Cache, Accept-Ranges"
ACCEPT_RANGES = b"Accept-Ranges: bytes\r\n"

Slicer = Callable[[ByteRange], Sequence[Part]]


def cors_headers(origin: str) -> dict[str, str]:
    return {"Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": EXPOSE}


def preflight(origin: str, methods: str = "GET, HEAD, OPTIONS") -> Response:
    """The answer to a CORS preflight: players may send Range (and CMCD) from any page."""
    return Response(204, encode_fields({
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": methods,
        "Access-Control-Allow-Headers": "Range, If-Range, If-None-Match, If-Modified-Since, "
                                        "CMCD-Request, CMCD-Object, CMCD-Status, CMCD-Session",
        "Access-Control-Max-Age": "86400",
    }))


class Prepared:
    """The header fields of one representation (without Content-Length, Content-Range and
    Accept-Ranges), encoded once."""

    __slots__ = ("block", "carries", "headers")

    def __init__(self, headers: dict[str, str], *, ranges: bool = True,
                 block: bytes | None = None) -> None:
        """`block`, when given, is `headers` already encoded (Accept-Ranges included)."""
        self.headers = headers
        self.block = block if block is not None else \
            encode_fields(headers) + (ACCEPT_RANGES if ranges else b"")
        #: the node's Date and Server fields are added unless these carry their own
        self.carries = carried(headers)

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "application/octet-stream")

    @property
    def etag(self) -> str | None:
        return self.headers.get("ETag")


def not_modified_fields(headers: dict[str, str]) -> bytes:
    """The fields a 304 repeats (RFC 9110 §15.4.5), CORS included."""
    return encode_fields({k: v for k, v in headers.items()
                          if k.lower() in NOT_MODIFIED_FIELDS
                          or k.startswith("Access-Control-")})


def _boundary() -> str:
    return secrets.token_hex(12)


def plan_for(request: Request, prepared: Prepared, length: int, last_modified: float | None,
             max_ranges: int, *, status: int = 200, conditional: bool = True) -> Plan:
    return plan(request.method, request.fields, length=length, etag=prepared.etag,
                last_modified=last_modified, max_ranges=max_ranges,
                content_type=prepared.content_type, boundary=_boundary,
                status=status, conditional=conditional)


def fields_for(p: Plan, prepared: Prepared) -> bytes:
    """The header block of an answer following plan `p`."""
    if p.status == 304:
        return not_modified_fields(prepared.headers)
    if p.content_type is not None:
        headers = {**prepared.headers, "Content-Type": p.content_type}
        return encode_fields(headers) + ACCEPT_RANGES
    if p.content_range is not None:
        return prepared.block + f"Content-Range: {p.content_range}\r\n".encode()
    return prepared.block


def render(p: Plan, prepared: Prepared, slicer: Slicer, *, cache: str | None = None,
           done: Callable[[int, float], None] | None = None,
           cut: Callable[[str], None] | None = None) -> Response:
    """The Response for plan `p` of a representation whose bytes `slicer` cuts."""
    fields = fields_for(p, prepared)
    carries = prepared.carries
    if not p.send_body:
        return Response(p.status, fields, length=None if p.status == 304 else p.length,
                        cache=cache, done=done, cut=cut, carries=carries)
    parts: list[Part] = []
    for part in p.parts:
        if isinstance(part, ByteRange):
            parts.extend(slicer(part))
        else:
            parts.append(part)
    if len(parts) == 1 and not isinstance(parts[0], FileSpan):
        return Response(p.status, fields, body=parts[0], length=p.length, cache=cache,
                        done=done, cut=cut, carries=carries)
    return Response(p.status, fields, parts=parts, length=p.length, cache=cache, done=done,
                    cut=cut, carries=carries)


def memory_slicer(body: bytes | memoryview) -> Slicer:
    """Slices of an in-memory body, never copied."""
    size = len(body)

    def cut(r: ByteRange) -> Sequence[Part]:
        if r.start == 0 and r.length == size:
            return (body,)  # the whole body (most answers): no view to make
        return (memoryview(body)[r.start:r.end + 1],)
    return cut

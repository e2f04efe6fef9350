"""Answering a GET/HEAD for one representation, exactly per RFC 9110: preconditions (§13), ranges
(§14: 206, multipart/byteranges, 416), HEAD, and CORS for browser players on other origins.

Both roles call `serve()` with a Representation whose bytes are in memory (served as memoryview
slices, never copied) or in a file (sent by the kernel where the loop can). The decisions come from
the pure modules `conditional` and `ranges`; this module only writes them out.
"""

from __future__ import annotations

import gzip
import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web
from multidict import CIMultiDict

from edge360.core.conditional import Outcome, evaluate_preconditions, if_range_matches
from edge360.core.errors import NotFound, PreconditionFailed
from edge360.core.ranges import (
    FULL,
    ByteRange,
    Multi,
    RangePlan,
    content_range,
    multipart_layout,
    resolve_range,
)
from edge360.http import filesend

#: what a browser player on another origin must be able to read (CORS, Fetch standard)
EXPOSE = "Content-Length, Content-Range, ETag, Age, X-Cache, Accept-Ranges"
#: response fields a 304 repeats (RFC 9110 §15.4.5)
NOT_MODIFIED_FIELDS = ("Cache-Control", "Content-Location", "Date", "ETag", "Expires", "Vary",
                       "Last-Modified", "Age", "X-Cache", "Via")
_CONDITIONAL = ("if-match", "if-none-match", "if-modified-since", "if-unmodified-since")


@dataclass(slots=True)
class Representation:
    """A selected representation: its header fields (without Content-Length/Content-Range), its
    validators and where its bytes are."""

    headers: dict[str, str]
    length: int
    etag: str | None = None
    last_modified: float | None = None
    body: bytes | memoryview | None = None
    fs_path: str | None = None
    fs_offset: int = 0  # where the representation starts inside fs_path
    status: int = 200
    extra: dict[str, str] = field(default_factory=dict)
    #: write the body before returning (segments: the caller times the send for late segments)
    stream: bool = False

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "application/octet-stream")


def cors_headers(origin: str) -> dict[str, str]:
    return {"Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": EXPOSE}


def preflight(origin: str, methods: str = "GET, HEAD, OPTIONS") -> web.Response:
    """The answer to a CORS preflight: players may send Range (and CMCD) from any page."""
    return web.Response(status=204, headers={
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": methods,
        "Access-Control-Allow-Headers": "Range, If-Range, If-None-Match, If-Modified-Since, "
                                        "CMCD-Request, CMCD-Object, CMCD-Status, CMCD-Session",
        "Access-Control-Max-Age": "86400",
    })


#: playlists at least this big are gzipped for clients that accept it
COMPRESS_MIN = 1024


def gzip_accepted(accept_encoding: str, has_range: bool) -> bool:
    """Whether a playlist may go out gzipped (never for a range of it: ranges count raw bytes)."""
    return "gzip" in accept_encoding and not has_range


def personalize(body: bytes, params: str, headers: dict[str, str], etag: str | None,
                gzip_ok: bool) -> tuple[bytes, str | None]:
    """A playlist already rendered for one viewer (`params`: its sid/token query), finished the
    same way by both roles and both paths: sent private when it carries the viewer's ids (a
    shared cache downstream must never hand it to another viewer) with an ETag of its own,
    Vary: Accept-Encoding, and gzip when accepted. Returns the body and its ETag."""
    if params:
        cc = headers.get("Cache-Control", "")
        rest = ", ".join(p.strip() for p in cc.split(",") if p.strip().lower() not in
                         ("public", "private", "") and not p.strip().lower().startswith(
                             "s-maxage"))
        headers["Cache-Control"] = "private" + (f", {rest}" if rest else "")
        digest = hashlib.blake2b(params.encode(), digest_size=6).hexdigest()
        etag = f'{etag[:-1]}-{digest}"' if etag and etag.endswith('"') else etag
    headers["Vary"] = "Accept-Encoding"
    if gzip_ok and len(body) >= COMPRESS_MIN:
        body = gzip.compress(body, compresslevel=1, mtime=0)
        headers["Content-Encoding"] = "gzip"
        etag = f'{etag[:-1]}-gz"' if etag and etag.endswith('"') else etag
    return body, etag


def conditional_fields(headers: Mapping[str, str]) -> dict[str, str]:
    """The request's precondition fields, lower-cased, repeated ones comma-joined (§5.3)."""
    out: dict[str, str] = {}
    getall = getattr(headers, "getall", None)
    for name in _CONDITIONAL:
        if getall is not None:
            values = getall(name, [])
            if values:
                out[name] = ", ".join(values)
        elif name in headers:
            out[name] = headers[name]
    return out


@dataclass(slots=True)
class Served:
    response: web.StreamResponse
    body_bytes: int  # body bytes written (0 for HEAD and 304)


async def serve(request: web.Request, rep: Representation, *, max_ranges: int,
                conditional: bool = True) -> Served:
    """Write the answer for `rep` to the client and return what was sent."""
    method = request.method
    if conditional and rep.status == 200:
        outcome = evaluate_preconditions(method, conditional_fields(request.headers), rep.etag,
                                         rep.last_modified)
        if outcome is Outcome.PRECONDITION_FAILED:
            raise PreconditionFailed("precondition failed")
        if outcome is Outcome.NOT_MODIFIED:
            kept = {k: v for k, v in rep.headers.items() if k in NOT_MODIFIED_FIELDS
                    or k.startswith("Access-Control-")}
            kept.update(rep.extra)
            return Served(web.Response(status=304, headers=kept), 0)
    plan: RangePlan = FULL
    range_header = request.headers.get("Range")
    if (range_header is not None and rep.status == 200
            and if_range_matches(request.headers.get("If-Range"), rep.etag, rep.last_modified)):
        plan = resolve_range(range_header, rep.length, max_ranges=max_ranges)
    headers = CIMultiDict(rep.headers)
    headers.update(rep.extra)
    if rep.status == 200:
        headers["Accept-Ranges"] = "bytes"
    if isinstance(plan, ByteRange):
        headers["Content-Range"] = content_range(plan, rep.length)
        return await _write(request, rep, headers, 206, [plan], plan.length)
    if isinstance(plan, Multi):
        boundary = secrets.token_hex(12)
        parts, total = multipart_layout(plan, rep.length, rep.content_type, boundary)
        headers["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
        return await _write(request, rep, headers, 206, parts, total)
    return await _write(request, rep, headers, rep.status, [ByteRange(0, rep.length - 1)]
                        if rep.length else [], rep.length)


async def _write(request: web.Request, rep: Representation, headers: CIMultiDict[str],
                 status: int, parts: list[bytes | ByteRange], total: int) -> Served:
    head = request.method == "HEAD"
    if rep.body is not None and not head:
        # in memory: one contiguous answer for a single part, slices joined for multipart
        view = memoryview(rep.body)
        if len(parts) == 1 and isinstance(parts[0], ByteRange):
            r = parts[0]
            body: bytes | memoryview = view[r.start:r.end + 1]
        else:
            body = b"".join(p if isinstance(p, bytes) else view[p.start:p.end + 1]
                            for p in parts)
        if len(body) <= filesend.CHUNK and not rep.stream:
            return Served(web.Response(status=status, headers=headers, body=body), total)
        # big bodies go out in chunks with back-pressure (one giant write per body starves the
        # other connections), and a streamed answer is fully handed to the kernel on return
        streamed = web.StreamResponse(status=status, headers=headers)
        streamed.content_length = total
        await streamed.prepare(request)
        for start in range(0, len(body), filesend.CHUNK):
            await streamed.write(body[start:start + filesend.CHUNK])
        await streamed.write_eof()
        return Served(streamed, total)
    fh = None
    if not head and total and rep.body is None:
        assert rep.fs_path is not None
        try:
            # opened before the head goes out: a file gone since the last scan is a 404,
            # not a 200 head followed by a broken connection
            fh = await filesend.open_file(rep.fs_path)
        except FileNotFoundError:
            raise NotFound(rep.fs_path) from None
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = total
    await response.prepare(request)
    if fh is None:
        await response.write_eof()
        return Served(response, 0)
    sent = 0
    try:
        for part in parts:
            if isinstance(part, bytes):
                await response.write(part)
                sent += len(part)
            else:
                sent += await filesend.send_file(request, response, fh,
                                                 rep.fs_offset + part.start, part.length)
    finally:
        fh.close()
    await response.write_eof()
    return Served(response, sent)

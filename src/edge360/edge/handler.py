"""The edge role: answer GET/HEAD for any path from the cache, fetching from a parent on a miss.

A request: method check -> loop and path checks -> token -> cache key (path + the configured key
params; never sid, token or CMCD) -> viewer -> lookup (memory, then disk) -> policy.decide
(RFC 9111 §4) -> HIT / STALE (+ background refresh, RFC 5861) / MISS through the coalescer ->
playlists rewritten per viewer on the way out -> session touch, egress, late segments, prefetch.
Serving stays in `responses` (whole objects) and `edgeserve` (pieces, flights, relays).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from urllib.parse import urlencode

from aiohttp import web

from edge360.core import policy
from edge360.core.conditional import parse_http_date
from edge360.core.errors import (
    Edge360Error,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
    RangeNotSatisfiable,
    UpstreamError,
    UpstreamTimeout,
)
from edge360.core.kinds import OTHER
from edge360.core.paths import split_request_path
from edge360.core.ranges import ByteRange, Multi, resolve_range
from edge360.edge import admin
from edge360.edge.coalescer import Flight, Head
from edge360.edge.fetch import Target
from edge360.edge.serve import client_headers, relay, serve_flight, serve_pieced
from edge360.edge.state import EdgeState, edge_of
from edge360.edge.store import StoredObject
from edge360.edge.upstream import fold
from edge360.http.responses import (
    Representation,
    Served,
    cors_headers,
    gzip_accepted,
    personalize,
    preflight,
    serve,
)
from edge360.http.viewers import check_loop, check_token, identify, is_child_cache, touch
from edge360.node.counters import bounded
from edge360.node.state import NodeState, node_of
from edge360.sessions.viewer import VIEWER_PARAMS, Viewer

Found = tuple[StoredObject, bytes | None]
RESULTS = {"HIT": "hit", "MISS": "miss", "STALE": "stale"}


def install(app: web.Application, node: NodeState) -> None:
    """Wire the edge into the app: its state, admin endpoints, the catch-all content route."""
    state = EdgeState(node)
    node.role_state = state
    admin.install(app)
    app.router.add_route("*", "/{tail:.*}", handle)

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        await state.start()
        yield
        await state.close()
    app.cleanup_ctx.append(lifetime)


def cache_key(path: str, query: list[tuple[str, str]], key_params: tuple[str, ...]) -> str:
    """Path plus the key params, sorted; "*" = all but sid, token and CMCD (never in a key)."""
    items = [(k, v) for k, v in query if k not in VIEWER_PARAMS
             and (key_params == ("*",) or k in key_params)]
    return path + ("?" + urlencode(sorted(items)) if items else "")


def range_offset(header: str) -> int | None:
    """The first byte of a single `bytes=a-b` request (names the byte-range segment)."""
    if not header.startswith("bytes=") or "," in header:
        return None
    first = header[6:].split("-", 1)[0].strip()
    return int(first) if first.isdigit() else None


async def handle(request: web.Request) -> web.StreamResponse:
    node = node_of(request)
    state = edge_of(node)
    cors = node.config.origin.cors_origin
    if request.method == "OPTIONS":
        return preflight(cors)
    if request.method not in ("GET", "HEAD"):
        if request.method in state.config.pass_methods:
            return await state.pass_unsafe(request, _target(request, state))
        raise MethodNotAllowed(request.method, headers={"Allow": "GET, HEAD, OPTIONS"})
    check_loop(request)
    t = _target(request, state)
    check_token(request, node, t.path)
    child = is_child_cache(request, node)
    viewer = None if child else identify(request, node, opens=t.kind == "playlist")
    started = time.monotonic()
    try:
        served, result = await _answer(request, state, t, child, viewer)
    except Edge360Error as e:
        # CONTRACT: X-Cache on every content response, refusals included (a refusal decided
        # from a stored object says HIT/STALE, set where it was decided; the rest had to go
        # upstream or could not be answered from cache)
        e.headers.setdefault("X-Cache", "MISS")
        raise
    account(state, t, viewer, child, result, served.response.status, served.body_bytes,
            time.monotonic() - started, range_offset(request.headers.get("Range", "")))
    return served.response


def account(state: EdgeState, t: Target, viewer: Viewer | None, child: bool, result: str,
            status: int, body_bytes: int, seconds: float, offset: int | None) -> None:
    """Count an answer: cache result, the viewer's session, egress, a late segment, and the
    prefetch bookkeeping. Shared by `handle` and the fast path."""
    state.counters.cache_requests[RESULTS.get(result, result.lower())] += 1
    state.counters.cache_bytes[RESULTS.get(result, result.lower())] += body_bytes
    rendition = state.index.rendition_of(t.path, t.title, offset, is_playlist=t.kind == "playlist")
    media, track = state.index.playback(t.path, offset, t.kind)
    touch(state.node, viewer, status, title=t.title, rendition=rendition,
          playlist=t.kind == "playlist", nbytes=body_bytes, media=media, track=track)
    counters = state.counters
    if body_bytes:
        counters.egress[bounded(counters.egress, (t.title, rendition))] += body_bytes
    if t.kind == "segment" and status in (200, 206):
        ref = state.index.segment(t.path, offset)
        if body_bytes and ref is not None and ref.duration > 0 and seconds > ref.duration:
            counters.late_segments[bounded(counters.late_segments, (t.title, rendition))] += 1
        if not child and ref is not None:
            length = body_bytes if offset is not None else 0
            state.prefetcher.after(t, (offset, length) if offset is not None else None)
    if result == "HIT":
        state.prefetcher.used(t.key)


def _target(request: web.Request, state: EdgeState) -> Target:
    raw_path = request.raw_path.split("?", 1)[0]
    segments = split_request_path(raw_path, max_length=min(
        state.node.config.limits.max_header_bytes, 4096))
    if not segments:
        raise NotFound("/")
    key = cache_key(raw_path, list(request.query.items()), state.config.cache_key_params)
    return Target.of(key, raw_path, segments[0], fold(request.headers.items()),
                     request.headers.get("CDN-Loop"))


async def _answer(request: web.Request, state: EdgeState, t: Target, child: bool,
                  viewer: Viewer | None) -> tuple[Served, str]:
    now = state.node.clock()
    found = await state.store.lookup(t.key)
    if found is None:
        neg = state.store.negative(t.key, now)
        if neg is not None:
            headers = {**client_headers(neg.headers), **_extra(state, "HIT")}
            return Served(web.Response(status=neg.status, headers=headers,
                                       body=b"" if request.method == "HEAD" else neg.body),
                          len(neg.body)), "HIT"
        return await _miss(request, state, t, None, child, viewer)
    obj = found[0]
    cfg = state.config
    # the edge's default stale window is for HLS kinds (like segment_ttl): elsewhere stale is
    # served only with the upstream's or the client's permission (RFC 9111 §4.2.4)
    decision = policy.decide(obj.stored, t.request_headers, now,
                             stale_while_revalidate_max=cfg.stale_while_revalidate,
                             stale_while_revalidate_default=cfg.stale_while_revalidate
                             if t.kind != OTHER else 0.0)
    action = decision.action
    if action is policy.Action.FRESH:
        return await _from_cache(request, state, t, found, "HIT", child, viewer)
    if action is policy.Action.STALE:
        return await _from_cache(request, state, t, found, "STALE", child, viewer)
    if action is policy.Action.STALE_REVALIDATE_BACKGROUND:
        state.refresh_behind(t, found)
        return await _from_cache(request, state, t, found, "STALE", child, viewer)
    if action is policy.Action.GATEWAY_TIMEOUT:
        raise UpstreamTimeout("only-if-cached and nothing fresh stored")
    return await _miss(request, state, t, found if action is policy.Action.REVALIDATE else None,
                       child, viewer)


def _extra(state: EdgeState, result: str, age: str | None = None) -> dict[str, str]:
    out = {**cors_headers(state.node.config.origin.cors_origin), "X-Cache": result}
    if age is not None:
        out["Age"] = age
    return out


async def _from_cache(request: web.Request, state: EdgeState, t: Target,
                      found: Found, result: str, child: bool,
                      viewer: Viewer | None) -> tuple[Served, str]:
    obj, body = found
    s = obj.stored
    max_ranges = state.node.config.limits.max_ranges
    headers = client_headers(s.fields, to_peer=child)
    if not obj.pieced:
        assert body is not None
        headers.update(_extra(state, result, s.age_header(state.node.clock())))
        if t.kind == "playlist" and s.status == 200:
            return await _playlist(request, state, t, obj.version, body, headers, viewer), result
        rep = Representation(headers=headers, length=obj.length, etag=s.etag,
                             last_modified=s.last_modified, body=body, status=s.status,
                             stream=t.kind == "segment")
        try:
            return await serve(request, rep, max_ranges=max_ranges), result
        except (RangeNotSatisfiable, PreconditionFailed) as e:
            e.headers["X-Cache"] = result  # decided from the stored object
            raise
    # a range touching any uncached piece is a MISS (CONTRACT: Edge headers)
    if any(not state.store.has_piece(t.key, obj, n) for n in _needed(request, obj, max_ranges)):
        result = "MISS"
    headers.update(_extra(state, result, s.age_header(state.node.clock())))

    async def piece(n: int) -> bytes:
        return await state.piece(t, obj, n)
    return await serve_pieced(request, obj.length, s.etag, s.last_modified, headers,
                              obj.piece_bytes, piece, max_ranges), result


def _needed(request: web.Request, obj: StoredObject, max_ranges: int) -> list[int]:
    """The pieces a GET needs (none for HEAD; none when the range is unsatisfiable)."""
    header = request.headers.get("Range")
    spans: list[ByteRange] = [ByteRange(0, obj.length - 1)] if obj.length else []
    if header is not None and request.method == "GET":
        try:
            plan = resolve_range(header, obj.length, max_ranges=max_ranges)
        except RangeNotSatisfiable:
            return []
        if isinstance(plan, ByteRange):
            spans = [plan]
        elif isinstance(plan, Multi):
            spans = list(plan.ranges)
    if request.method == "HEAD":
        return []
    p = obj.piece_bytes
    return sorted({n for r in spans for n in range(r.start // p, r.end // p + 1)})


async def _miss(request: web.Request, state: EdgeState, t: Target, found: Found | None,
                child: bool, viewer: Viewer | None) -> tuple[Served, str]:
    if request.method == "HEAD" and found is None:
        flight = state.coalescer.get(t.key)
        if flight is None:
            flight, _ = state.fetcher.passthrough(t, "HEAD", {})
        head = await flight.wait_head()
        headers = {**client_headers(head.headers, to_peer=child), **_extra(state, "MISS")}
        return await relay(request, flight, head, headers), "MISS"
    offset = range_offset(request.headers.get("Range", ""))
    if found is None and offset is not None and "If-Range" not in request.headers:
        flight, _ = state.fetcher.first_piece(t, offset // state.config.piece_bytes)
        head = await flight.wait_head()
        if head.status == 206:
            await flight.body()
            if flight.result is not None:
                return await _from_cache(request, state, t, flight.result, "MISS", child,
                                         viewer)
            # not storable: the client's own range goes through as is
            flight, _ = state.fetcher.passthrough(t, "GET", {"Range": request.headers["Range"]})
            head = await flight.wait_head()
        return await _from_flight(request, state, t, flight, head, None, child, viewer)
    flight, _ = state.fetcher.whole(t, found)
    try:
        head = await flight.wait_head()
    except UpstreamError as e:
        if found is not None and state.stale_on_error(found[0], t, e):
            return await _from_cache(request, state, t, found, "STALE", child, viewer)
        raise
    return await _from_flight(request, state, t, flight, head, found, child, viewer)


async def _from_flight(request: web.Request, state: EdgeState, t: Target, flight: Flight,
                       head: Head, stored: Found | None, child: bool,
                       viewer: Viewer | None) -> tuple[Served, str]:
    if stored is not None and state.stale_on_error(stored[0], t, head.status):
        return await _from_cache(request, state, t, stored, "STALE", child, viewer)
    if head.revalidated:
        return await _from_cache(request, state, t, flight.result, "HIT", child, viewer)
    headers = {**client_headers(head.headers, to_peer=child), **_extra(state, "MISS")}
    if head.status != 200:
        if head.status in (206, 416) and "content-range" in head.headers:
            headers["Content-Range"] = head.headers["content-range"]
        return await relay(request, flight, head, headers), "MISS"
    if t.kind == "playlist":
        body = await flight.body()
        version = flight.result[0].version if isinstance(flight.result, tuple) else ""
        return await _playlist(request, state, t, version, body, headers, viewer), "MISS"
    return await serve_flight(request, flight, head, headers,
                              state.node.config.limits.max_ranges), "MISS"


async def _playlist(request: web.Request, state: EdgeState, t: Target, version: str,
                    body: bytes, headers: dict[str, str], viewer: Viewer | None) -> Served:
    """The stored (unrewritten) playlist rewritten for this viewer (see rewrite_playlist)."""
    gzip_ok = gzip_accepted(request.headers.get("Accept-Encoding", ""), "Range" in request.headers)
    out, etag = rewrite_playlist(state, t, version, body, headers, viewer, gzip_ok)
    rep = Representation(headers=headers, length=len(out), etag=etag,
                         last_modified=parse_http_date(headers.get("Last-Modified")), body=out)
    return await serve(request, rep, max_ranges=state.node.config.limits.max_ranges)


def rewrite_playlist(state: EdgeState, t: Target, version: str, body: bytes,
                     headers: dict[str, str], viewer: Viewer | None,
                     gzip_ok: bool) -> tuple[bytes, str | None]:
    """The stored (unrewritten) playlist rewritten for this viewer and its ETag, sent private
    when it carries the viewer's sid/token (a shared cache downstream must never hand it to
    another viewer); `headers` gets the playlist fields. Shared by the fast path."""
    if not state.index.knows(t.path):
        state.index.learn(t.path, t.title, body.decode("utf-8", "replace"))
    compiled = state.index.compiled(t.key, version or hashlib.blake2b(body).hexdigest(), body)
    params = viewer.params() if viewer is not None else ""
    out, etag = personalize(compiled.render(params), params, headers, headers.get("ETag"),
                            gzip_ok)
    if etag:
        headers["ETag"] = etag
    return out, etag

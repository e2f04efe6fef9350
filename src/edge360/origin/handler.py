"""The origin role: files of the titles under the media root, exactly and cheaply.

A request is one catalog lookup (no stat, no open for playlists); playlists are rewritten per
viewer from their compiled form and sent private; segments go out through the kernel's sendfile.
Range, conditionals, HEAD and CORS come from `responses`. The catalog is rebuilt off the loop on a
timer and on SIGHUP, so titles dropped into the media root appear without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import orjson
from aiohttp import web

from edge360.core.errors import MethodNotAllowed, NotFound
from edge360.core.paths import split_request_path
from edge360.http.responses import (
    Representation,
    cors_headers,
    gzip_accepted,
    personalize,
    preflight,
    serve,
)
from edge360.http.viewers import check_loop, check_token, identify, is_child_cache, touch
from edge360.node.state import NodeState, node_of
from edge360.origin import catalog as catalog_mod
from edge360.origin.catalog import Catalog, MediaFile
from edge360.sessions.viewer import Viewer

log = logging.getLogger("edge360.origin")



@dataclass(slots=True)
class OriginState:
    catalog: Catalog


def origin_state(node: NodeState) -> OriginState:
    state = node.role_state
    assert isinstance(state, OriginState)
    return state


async def load_catalog(node: NodeState) -> Catalog:
    """Scan the media root in a thread; report broken titles by name."""
    cat = await asyncio.to_thread(catalog_mod.build, node.config.origin.media, node.config.origin)
    for name, problem in sorted(cat.broken.items()):
        log.warning("title %s is broken and not served: %s", name, problem)
    return cat


async def rescan(node: NodeState) -> str:
    state = origin_state(node)
    state.catalog = await load_catalog(node)
    return f"{len(state.catalog.titles)} titles, {len(state.catalog.broken)} broken"


def _lookup(node: NodeState, request: web.Request) -> tuple[str, MediaFile]:
    max_len = node.config.limits.max_header_bytes
    segments = split_request_path(request.raw_path.split("?", 1)[0], max_length=min(max_len, 1024))
    path = "/" + "/".join(segments)
    mf = origin_state(node).catalog.files.get(path)
    if mf is None:
        raise NotFound(path)
    return path, mf


def _gzip_ok(request: web.Request) -> bool:
    return gzip_accepted(request.headers.get("Accept-Encoding", ""), "Range" in request.headers)


async def handle(request: web.Request) -> web.StreamResponse:
    node = node_of(request)
    cors = node.config.origin.cors_origin
    if request.method == "OPTIONS":
        return preflight(cors)
    if request.method not in ("GET", "HEAD"):
        raise MethodNotAllowed(request.method, headers={"Allow": "GET, HEAD, OPTIONS"})
    started = time.monotonic()
    check_loop(request)
    path, mf = _lookup(node, request)
    check_token(request, node, path)
    child = is_child_cache(request, node)
    headers = content_headers(mf, cors)
    is_playlist = mf.compiled is not None
    viewer = None if child else identify(request, node, opens=is_playlist)
    rep = Representation(headers=headers, length=mf.size, etag=mf.etag,
                         last_modified=mf.mtime, body=mf.body, fs_path=mf.fs_path)
    if is_playlist:
        params = viewer.params() if viewer is not None else ""
        body, rep.etag = render_playlist(mf, params, headers, _gzip_ok(request))
        rep.body = body
        rep.length = len(body)
    headers["ETag"] = rep.etag or ""
    served = await serve(request, rep, max_ranges=node.config.limits.max_ranges)
    account(node, mf, viewer, served.response.status, served.body_bytes,
            time.monotonic() - started, request.headers.get("Range", ""))
    return served.response


def content_headers(mf: MediaFile, cors: str) -> dict[str, str]:
    """The header fields of a catalog file's answer, before the playlist rules and ETag."""
    return {"Content-Type": mf.media_type.content_type, "Cache-Control": mf.cache_control,
            "Last-Modified": mf.last_modified, **cors_headers(cors)}


def render_playlist(mf: MediaFile, params: str, headers: dict[str, str],
                    gzip_ok: bool) -> tuple[bytes, str | None]:
    """A catalog playlist rewritten for the viewer whose query fragment is `params`: its body
    and ETag; `headers` gets the playlist fields (private Cache-Control, Vary, Content-Encoding).
    Shared by `handle` and the fast path, so both rewrite alike."""
    assert mf.compiled is not None
    return personalize(mf.compiled.render(params), params, headers, mf.etag, gzip_ok)


def account(node: NodeState, mf: MediaFile, viewer: Viewer | None, status: int,
            body_bytes: int, seconds: float, range_header: str) -> None:
    """Count a served answer: the viewer's session, egress, a segment sent later than its
    duration. Shared by `handle` and the fast path."""
    touch(node, viewer, status, title=mf.title, rendition=mf.rendition,
          playlist=mf.compiled is not None, nbytes=body_bytes,
          media=mf.media_seconds(range_header), track=mf.track)
    counters = node.counters
    if body_bytes:
        counters.egress[(mf.title, mf.rendition)] += body_bytes
    if mf.media_type.kind == "segment" and body_bytes:
        duration = _duration(mf, range_header)
        if duration and seconds > duration:
            counters.late_segments[(mf.title, mf.rendition)] += 1


def _duration(mf: MediaFile, rng: str) -> float | None:
    """Seconds of media in the requested segment (by byte offset for single-file renditions)."""
    if not mf.durations:
        return None
    if len(mf.durations) == 1:
        return next(iter(mf.durations.values()))
    try:
        offset = int(rng.split("=", 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return None
    return mf.durations.get(offset)


async def titles(request: web.Request) -> web.Response:
    """GET /api/titles: every served title and its renditions, and the broken ones by name."""
    cat = origin_state(node_of(request)).catalog
    body = orjson.dumps({
        "titles": [info.to_dict() for _, info in sorted(cat.titles.items())],
        "broken": cat.broken,
    })
    return web.Response(body=body, content_type="application/json")

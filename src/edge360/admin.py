"""The edge's operator endpoints behind `Authorization: Bearer <admin token>` (no token configured:
403 for everyone): POST /admin/purge, POST /admin/warm, GET /admin/cache?path=.

Warm fetches the named playlists now (so it can say how many objects it queued) and the segments
in the background with bounded concurrency, through the same coalescer as viewers.
"""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from aiohttp import web

from edge360 import playlist
from edge360.edgestate import edge_of
from edge360.errors import BadRequest, Edge360Error, Forbidden
from edge360.prefetch import Prefetcher, target_for
from edge360.state import NodeState, node_of

#: objects one warm request queues at most
MAX_WARM = 100_000


def install(app: web.Application) -> None:
    app.router.add_post("/admin/purge", purge)
    app.router.add_post("/admin/warm", warm)
    app.router.add_get("/admin/cache", cache)


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json",
                        headers={"Cache-Control": "no-store"})


def _authorize(request: web.Request, node: NodeState) -> None:
    token = node.config.admin.token
    header = request.headers.get("Authorization", "")
    given = header[7:].strip() if header.startswith("Bearer ") else ""
    if not token or not hmac.compare_digest(given.encode(), token.encode()):
        raise Forbidden("admin token missing or wrong")


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise BadRequest("body is not JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


def _path_arg(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/"):
        raise BadRequest(f"{name} must be a path starting with /")
    return value


async def purge(request: web.Request) -> web.Response:
    """{"prefix": "/demo/"} or {"path": "/demo/master.m3u8"} -> {"purged": N}."""
    node = node_of(request)
    _authorize(request, node)
    data = await _body(request)
    store = edge_of(node).store
    prefix, path = _path_arg(data, "prefix"), _path_arg(data, "path")
    if prefix is not None:
        return _json({"purged": await store.purge_prefix(prefix)})
    if path is not None:
        n = await store.purge(path) + await store.purge_prefix(path + "?")
        return _json({"purged": n})
    raise BadRequest("give prefix or path")


async def _collect(prefetcher: Prefetcher, path: str, out: dict[str, tuple[int, int] | None],
                   depth: int = 0) -> int:
    """The objects a playlist needs (its media playlists and their segments); returns how many
    playlists were fetched."""
    body = await prefetcher.fetch(target_for(path), None)
    if body is None or depth > 2:
        return 1
    text = body.decode("utf-8", "replace")
    if playlist.kind(text) == "master":
        count = 1
        for uri in playlist.uris(text):
            resolved = playlist.resolve(path, uri)
            if resolved is None or len(out) >= MAX_WARM:
                continue
            if resolved.endswith(".m3u8"):
                count += await _collect(prefetcher, resolved, out, depth + 1)
            else:
                out.setdefault(resolved, None)
        return count
    try:
        segments = playlist.segments(text, path)
    except Edge360Error:
        return 1
    for seg in segments[:MAX_WARM]:
        if seg.init_path is not None:
            out.setdefault(seg.init_path, seg.init_range)
        out.setdefault(seg.path, seg.byterange)
    return 1


async def warm(request: web.Request) -> web.Response:
    """{"playlist": "/demo/master.m3u8"} or {"prefix": "/demo/"} -> {"queued": N}."""
    node = node_of(request)
    _authorize(request, node)
    data = await _body(request)
    state = edge_of(node)
    name, prefix = _path_arg(data, "playlist"), _path_arg(data, "prefix")
    if name is None and prefix is None:
        raise BadRequest("give playlist or prefix")
    masters = [name] if name is not None else await _masters(state.prefetcher, prefix or "/")
    items: dict[str, tuple[int, int] | None] = {}
    fetched = 0
    for master in masters:
        try:
            fetched += await _collect(state.prefetcher, master, items)
        except Edge360Error:
            continue
    state.tasks.spawn(state.prefetcher.warm(list(items.items())), "warm")
    return _json({"queued": fetched + len(items)})


async def _masters(prefetcher: Prefetcher, prefix: str) -> list[str]:
    """The master playlists under `prefix`, from the parent's /api/titles (an origin knows its
    titles); else `<prefix>master.m3u8`."""
    try:
        body = await prefetcher.fetch(target_for("/api/titles"), None)
        titles = orjson.loads(body or b"{}").get("titles", [])
        found = [f"/{t['name']}/{m}" for t in titles for m in t.get("masters", ())
                 if f"/{t['name']}/".startswith(prefix) or prefix.startswith(f"/{t['name']}/")]
        if found:
            return found
    except (Edge360Error, orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
        pass
    return [prefix.rstrip("/") + "/master.m3u8"]


async def cache(request: web.Request) -> web.Response:
    """GET /admin/cache?path=/demo/v0/seg_001.ts -> the object's tiers, pieces, age, freshness."""
    node = node_of(request)
    _authorize(request, node)
    path = request.query.get("path")
    if not path or not path.startswith("/"):
        raise BadRequest("give ?path=/...")
    return _json(await edge_of(node).store.describe(path, node.clock()))

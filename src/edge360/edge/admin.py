"""The edge's operator endpoints behind `Authorization: Bearer <admin token>` (no token configured:
403 for everyone): POST /admin/purge, POST /admin/warm, GET /admin/cache?path=.

Warm fetches the named playlists now (so it can say how many objects it queued) and the segments
in the background with bounded concurrency, through the same coalescer as viewers.

A node with `edge.children` (a shield and its edges) forwards the same purge or warm body to each
child's endpoint with the admin token once its own action is done, FANOUT at a time, each bounded by
the edge's connect + read timeouts, and adds `"children": {url: N | "error: ..."}` to its answer.
A forwarded action carries CDN-Loop and Via like any upstream request, so a child list that leads
back to a node is refused there (508) instead of going round.

With `--workers N` a warm is node-wide too: the worker that takes it reads the playlists, then casts
"warm" with the object list to every worker, each filling its own memory tier (the answer adds
`"workers": N`, how many took the list).
With `--workers N` a purge is node-wide whichever worker takes it: that worker casts "purge" through
the hub to every worker (itself included); each empties its own memory tier and the shared disk
tier (a file is deleted once, by whoever gets there first; the others drop it from their index),
returns the keys it removed, and the answer counts the distinct objects over all of them.
GET /admin/cache describes the answering worker's memory tier and the shared disk tier, and names
that worker (`"worker": i`).
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

import orjson

from edge360.core.errors import BadRequest, Edge360Error, Forbidden
from edge360.edge.prefetch import Prefetcher, target_for
from edge360.edge.state import EdgeState
from edge360.edge.store import EdgeStore
from edge360.edge.upstream import post_json
from edge360.hls import playlist
from edge360.http.dispatch import Route, route
from edge360.http.response import Response, json_response
from edge360.http.viewers import check_loop
from edge360.http.wire import Request
from edge360.node.state import NodeState

#: objects one warm request queues at most
MAX_WARM = 100_000
#: children an action is forwarded to at once
FANOUT = 8
#: keys one worker reports back from a node-wide purge at most (the frame stays bounded)
MAX_PURGE_KEYS = 1_000_000


def routes(state: EdgeState) -> dict[str, Route]:
    """The admin endpoints of an edge; with --workers N also the hub's fanned-out operations."""
    _register_ops(state)

    async def purge_endpoint(request: Request) -> Response:
        return await purge(state, request)

    async def warm_endpoint(request: Request) -> Response:
        return await warm(state, request)

    async def cache_endpoint(request: Request) -> Response:
        return await cache(state, request)
    return {"/admin/purge": route(purge_endpoint, "POST"),
            "/admin/warm": route(warm_endpoint, "POST"),
            "/admin/cache": route(cache_endpoint)}


def _register_ops(state: EdgeState) -> None:
    """With --workers N: answer the hub's fanned-out "purge" and "warm"."""
    hub = state.node.hub
    if hub is None:
        return

    async def purge_op(args: dict[str, Any]) -> dict[str, Any]:
        keys, rest = await _purge_here(state.store, args.get("prefix"), args.get("path"))
        return {"keys": sorted(keys)[:MAX_PURGE_KEYS], "rest": rest}

    async def warm_op(args: dict[str, Any]) -> int:
        items = [(str(p), (int(r[0]), int(r[1])) if r else None) for p, r in args["items"]]
        state.tasks.spawn(state.prefetcher.warm(items), "warm")
        return len(items)
    hub.handlers["purge"] = purge_op
    hub.handlers["warm"] = warm_op


async def _purge_here(store: EdgeStore, prefix: str | None,
                      path: str | None) -> tuple[set[str], int]:
    """This worker's part of a node-wide purge: the keys it removed from its memory tier and the
    shared disk tier, and how many more entries (negative answers) the store's own purge took."""
    prefixes = [prefix] if prefix is not None else [f"{path}\x00", f"{path}?"]
    removed: set[str] = set()
    if path is not None and prefix is None:
        if store.memory.pop(path) is not None:
            removed.add(path)
        if store.disk is not None and await asyncio.to_thread(store.disk.pop, path):
            removed.add(path)
    for p in prefixes:
        removed |= {k.split("\x00", 1)[0] for k in store.memory.pop_prefix(p)}
        if store.disk is not None:
            found = await asyncio.to_thread(store.disk.pop_prefix, p)
            removed |= {k.split("\x00", 1)[0] for k in found}
    if prefix is not None:
        rest = await store.purge_prefix(prefix)
    else:
        rest = await store.purge(str(path)) + await store.purge_prefix(f"{path}?")
    return removed, rest


def _authorize(request: Request, node: NodeState) -> None:
    token = node.config.admin.token
    header = request.fields.get("authorization", "")
    given = header[7:].strip() if header.startswith("Bearer ") else ""
    if not token or not hmac.compare_digest(given.encode(), token.encode()):
        raise Forbidden("admin token missing or wrong")


def _command(state: EdgeState, request: Request) -> tuple[NodeState, dict[str, Any]]:
    """An admin POST (purge, warm) made ready: the token checked, a forwarding loop refused (the
    command fans out to children, which could name us), then its JSON object body read."""
    node = state.node
    _authorize(request, node)
    check_loop(request, state.upstream.pseudonym)
    try:
        data = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        raise BadRequest("body is not JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return node, data


def _path_arg(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/"):
        raise BadRequest(f"{name} must be a path starting with /")
    return value


async def purge(state: EdgeState, request: Request) -> Response:
    """{"prefix": "/demo/"} or {"path": "/demo/master.m3u8"} -> {"purged": N} (+ "children")."""
    node, data = _command(state, request)
    store = state.store
    prefix, path = _path_arg(data, "prefix"), _path_arg(data, "path")
    if node.hub is not None and (prefix is not None or path is not None):
        results = await node.hub.cast("purge", {"prefix": prefix, "path": path})
        done = [r for r in results if isinstance(r, dict)]
        n = len({k for r in done for k in r["keys"]}) + sum(int(r["rest"]) for r in done)
    elif prefix is not None:
        n = await store.purge_prefix(prefix)
    elif path is not None:
        n = await store.purge(path) + await store.purge_prefix(path + "?")
    else:
        raise BadRequest("give prefix or path")
    return json_response({"purged": n, **await _fan_out(request, state, "purge", data)})


async def _fan_out(request: Request, state: EdgeState, action: str,
                   data: dict[str, Any]) -> dict[str, Any]:
    """Forward the action to every configured child; {} when there are none."""
    children = state.config.children
    if not children:
        return {}
    answer_key = "purged" if action == "purge" else "queued"
    headers = state.upstream.request_headers(request.fields.get("cdn-loop"), {
        "Authorization": f"Bearer {state.node.config.admin.token}"},
        via=request.fields.get("via"))
    body = orjson.dumps(data)
    timeout = state.config.connect_timeout + state.config.read_timeout
    gate = asyncio.Semaphore(FANOUT)
    results: dict[str, int | str] = dict.fromkeys(children, "error: not sent (shutting down)")

    async def one(child: str) -> None:
        async with gate:
            try:
                status, raw = await post_json(state.upstream.session,
                                              f"{child}/admin/{action}", body, headers,
                                              seconds=timeout)
            except Edge360Error as e:
                results[child] = f"error: {e}"
                return
        try:
            value = orjson.loads(raw).get(answer_key) if status == 200 else None
        except (orjson.JSONDecodeError, AttributeError):
            value = None
        results[child] = value if isinstance(value, int) and not isinstance(value, bool) \
            else f"error: HTTP {status}"

    tasks = [t for c in children if (t := state.tasks.spawn(one(c), f"admin {action} {c}"))]
    if tasks:
        await asyncio.wait(tasks)
    return {"children": results}


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


async def warm(state: EdgeState, request: Request) -> Response:
    """{"playlist": "/demo/master.m3u8"} or {"prefix": "/demo/"} -> {"queued": N}."""
    node, data = _command(state, request)
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
    if node.hub is not None:
        # every worker fills its own memory tier (the disk tier is shared): each fetches what it
        # finds in neither, so a warm costs up to one upstream fetch per object per worker
        results = await node.hub.cast("warm", {"items": [[p, r] for p, r in items.items()]})
        workers = {"workers": sum(1 for r in results if isinstance(r, int))}
    else:
        state.tasks.spawn(state.prefetcher.warm(list(items.items())), "warm")
        workers = {}
    return json_response({"queued": fetched + len(items), **workers,
                          **await _fan_out(request, state, "warm", data)})


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


async def cache(state: EdgeState, request: Request) -> Response:
    """GET /admin/cache?path=/demo/v0/seg_001.ts -> the object's tiers, pieces, age, freshness."""
    node = state.node
    _authorize(request, node)
    path = request.param("path")
    if not path or not path.startswith("/"):
        raise BadRequest("give ?path=/...")
    out = await state.store.describe(path, node.clock())
    if node.hub is not None:
        out["worker"] = node.hub.worker
    return json_response(out)

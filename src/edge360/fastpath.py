"""What the fast path answers, and how: the content hit requests of both roles, answered exactly as
the aiohttp handlers would (origin.handle, edge.handle and middleware.guard), from prepared state.

A request is fast when it is a GET/HEAD of HTTP/1.1 with a plain target (path characters
`[A-Za-z0-9/._~-]`, query `name=value` pairs of `[A-Za-z0-9._~-]`, so the raw and decoded forms
agree) and no header that changes the answer in a way not handled here (a body, Expect, Upgrade,
Authorization (the peer token), CDN-Loop and Via (loop checks, child caches), any precondition)
and, at most, a single satisfiable Range; at the origin, for a catalog file; at the edge, for a
whole object in the memory tier whose policy decision is FRESH (a HIT) with stored status 200.
Everything else returns None and the connection goes to aiohttp (fasthttp): misses, stale
answers, pieces, the disk tier, 304/412/416, multipart ranges, OPTIONS, the ops endpoints and any
other route. Also whole-node settings the fast path does not reproduce turn it off: auth.required,
a per-address request rate, the access log. A session-opening playlist request from a
non-loopback address goes to aiohttp while the per-address session limit is on, so that limit's
window is only ever counted once.

The shared decisions are the handlers' own functions (origin.render_playlist/account,
edge.rewrite_playlist/account, responses' header rules, ranges.resolve_range, policy.decide);
header blocks are built once per object (per viewer for rewritten playlists, in a bounded cache)
and only Content-Range, Content-Length, Age and Date are added per request.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from edge360 import edge as edge_mod
from edge360 import origin as origin_mod
from edge360 import policy, sessions
from edge360.clientaddr import client_address
from edge360.edgefetch import Target
from edge360.edgeserve import client_headers
from edge360.edgestate import EdgeState
from edge360.edgestore import StoredObject
from edge360.errors import Edge360Error, RangeNotSatisfiable
from edge360.fastwire import Answer, Request
from edge360.kinds import kind_of
from edge360.limits import LIMITS, is_loopback
from edge360.paths import split_request_path
from edge360.ranges import ByteRange, Multi, content_range, resolve_range
from edge360.responses import cors_headers
from edge360.state import NODE, NodeState
from edge360.upstream import fold
from edge360.viewers import Viewer

_TARGET = re.compile(r"/[A-Za-z0-9/._~-]*(?:\?[A-Za-z0-9._~=&-]+)?")
_SLOW_FIELDS = frozenset({
    "content-length", "transfer-encoding", "upgrade", "expect", "authorization", "cdn-loop",
    "via", "if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "if-range"})
#: prepared header blocks and rewritten playlists kept at most (per listener)
MAX_PREPARED = 4096
_AGE = "\x00age\x00"


class Prepared:
    """A bounded LRU of prepared answers (header blocks, rewritten bodies)."""

    def __init__(self, limit: int = MAX_PREPARED) -> None:
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._limit = limit

    def get(self, key: Any) -> Any:
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
        return found

    def put(self, key: Any, value: Any) -> None:
        self._items[key] = value
        while len(self._items) > self._limit:
            self._items.popitem(last=False)


def encode_fields(headers: dict[str, str]) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("utf-8")


def parse_query(query: str) -> list[tuple[str, str]] | None:
    """The pairs of a plain query (see the module docstring), or None when it is not plain."""
    if not query:
        return []
    out = []
    for pair in query.split("&"):
        name, eq, value = pair.partition("=")
        if not name or not eq:
            return None
        out.append((name, value))
    return out


def first(pairs: list[tuple[str, str]], name: str) -> str | None:
    for k, v in pairs:
        if k == name:
            return v
    return None


def routed_elsewhere(app: web.Application) -> tuple[frozenset[str], tuple[str, ...]]:
    """Exact paths and path prefixes of every route but the role's catch-all content route."""
    exact: set[str] = set()
    prefixes: list[str] = []
    for resource in app.router.resources():
        info = resource.get_info()
        if "path" in info:
            exact.add(str(info["path"]))
        elif "formatter" in info:
            prefix = str(info["formatter"]).split("{", 1)[0]
            if prefix != "/":
                prefixes.append(prefix)
        elif "prefix" in info:
            prefixes.append(str(info["prefix"]))
    return frozenset(exact), tuple(prefixes)


class FastPath:
    """The answerer of one node (fasthttp.Answerer): `__call__(request) -> Answer | None`."""

    def __init__(self, app: web.Application) -> None:
        self.node: NodeState = app[NODE]
        self.limits = app[LIMITS]
        self.exact, self.prefixes = routed_elsewhere(app)
        cfg = self.node.config
        self.cors = cfg.origin.cors_origin
        self.max_ranges = cfg.limits.max_ranges
        self.enabled = not (cfg.auth.required or cfg.limits.rate_per_ip > 0
                            or cfg.server.access_log)
        self.origin = cfg.server.role == "origin"
        self.max_path = min(cfg.limits.max_header_bytes, 1024 if self.origin else 4096)
        self.prepared = Prepared()
        self.segments = Prepared()
        self.objects = Prepared()

    def __call__(self, req: Request) -> Answer | None:
        if req.method not in ("GET", "HEAD") or not self.enabled:
            return None
        fields = req.fields
        if "host" not in fields or not _SLOW_FIELDS.isdisjoint(fields):
            return None
        if _TARGET.fullmatch(req.target) is None:
            return None
        path, _, qs = req.target.partition("?")
        query = parse_query(qs)
        if query is None or len(path) > self.max_path:
            return None
        if path in self.exact or path.startswith(self.prefixes):
            return None
        try:
            if self.origin:
                return self._origin(req, path, query)
            return self._edge(req, path, query)
        except Edge360Error:
            return None  # aiohttp answers it, through the same error handling as always

    # -- who is asking (viewers.identify, limits.Limits.check)

    def _viewer(self, req: Request, path: str, query: list[tuple[str, str]],
                opens: bool) -> tuple[Viewer, bool] | None:
        """The viewer as viewers.identify finds it, and whether its sid was minted just now;
        None: the request must go to aiohttp."""
        node = self.node
        sid = first(query, "sid")
        if sid is not None and not sessions.valid_sid(sid):
            sid = None
        token = first(query, "token") or None
        address = req.peer
        if node.trusted:
            address = client_address(req.peer, CIMultiDict(req.headers), node.trusted)
        key, explicit = sessions.identity(sid, first(query, "CMCD"),
                                          req.fields.get("cmcd-session"), address,
                                          req.fields.get("user-agent", ""))
        if (not explicit and self.limits.session_opens.limit and path.endswith(".m3u8")
                and not is_loopback(address)):
            return None  # the session-open window would count it here and again in aiohttp
        if not explicit and opens:
            fresh = sessions.new_sid()
            return Viewer(key=fresh, sid=fresh, token=token, address=address), True
        return Viewer(key=key, sid=key if explicit else None, token=token, address=address), False

    # -- the origin

    def _origin(self, req: Request, path: str, query: list[tuple[str, str]]) -> Answer | None:
        mf = origin_mod.origin_state(self.node).catalog.files.get(path)
        if mf is None:
            return None
        is_playlist = mf.compiled is not None
        who = self._viewer(req, path, query, is_playlist)
        if who is None:
            return None
        viewer, minted = who
        rng = req.fields.get("range")
        body: bytes | None
        if is_playlist:
            params = viewer.params()
            gzip_ok = rng is None and "gzip" in req.fields.get("accept-encoding", "")
            ident = (path, params, gzip_ok)
            found = self.prepared.get(ident)
            if found is None or found[0] is not mf:
                headers = origin_mod.content_headers(mf, self.cors)
                body, etag = origin_mod.render_playlist(mf, params, headers, gzip_ok)
                headers["ETag"] = etag or ""
                found = (mf, body, encode_fields(headers) + b"Accept-Ranges: bytes\r\n")
                if not minted:
                    self.prepared.put(ident, found)  # a sid the viewer carries: asked again
            _, body, prefix = found
        else:
            found = self.prepared.get(path)
            if found is None or found[0] is not mf:
                headers = origin_mod.content_headers(mf, self.cors)
                headers["ETag"] = mf.etag or ""
                found = (mf, None, encode_fields(headers) + b"Accept-Ranges: bytes\r\n")
                self.prepared.put(path, found)
            prefix, body = found[2], mf.body
        length = len(body) if body is not None else mf.size
        planned = self._plan(rng, length)
        if planned is None:
            return None
        status, start, count, extra = planned
        head = req.method == "HEAD"
        sent_fields = b"".join((prefix, extra, b"Content-Length: %d\r\n" % count))
        node = self.node

        def done(sent: int, seconds: float) -> None:
            origin_mod.account(node, mf, viewer, status, sent, seconds, rng or "")
            node.counters.requests[(mf.media_type.kind, str(status))] += 1
        if head or count == 0:
            return Answer(status, sent_fields, done=done)
        if body is not None:
            view = body if status == 200 else memoryview(body)[start:start + count]
            return Answer(status, sent_fields, body=view, done=done)
        return Answer(status, sent_fields, file=(mf.fs_path, start, count), done=done)

    def _plan(self, rng: str | None, length: int) -> tuple[int, int, int, bytes] | None:
        """(status, first byte, byte count, Content-Range field) as responses.serve plans it
        for a request without If-Range; None for what the fast path leaves to aiohttp."""
        if rng is None:
            return 200, 0, length, b""
        try:
            plan = resolve_range(rng, length, max_ranges=self.max_ranges)
        except RangeNotSatisfiable:
            return None
        if isinstance(plan, Multi):
            return None
        if isinstance(plan, ByteRange):
            field = f"Content-Range: {content_range(plan, length)}\r\n".encode("latin-1")
            return 206, plan.start, plan.length, field
        return 200, 0, length, b""

    # -- the edge

    def _split(self, path: str) -> tuple[str, ...] | None:
        found = self.segments.get(path)
        if found is None:
            try:
                found = split_request_path(path, max_length=self.max_path)
            except Edge360Error:
                found = ()
            self.segments.put(path, found)
        return found or None

    def _decode(self, meta: bytes) -> tuple[bytes, StoredObject | None, dict[str, Any]]:
        """(meta, its StoredObject, its prepared blocks), decoded once per stored head."""
        found: tuple[bytes, StoredObject | None, dict[str, Any]] | None = \
            self.objects.get(id(meta))
        if found is None or found[0] is not meta:
            found = (meta, StoredObject.decode(meta), {})
            self.objects.put(id(meta), found)  # holding meta keeps its id from being reused
        return found

    def _edge(self, req: Request, path: str, query: list[tuple[str, str]]) -> Answer | None:
        segments = self._split(path)
        if segments is None:
            return None
        state = self.node.role_state
        assert isinstance(state, EdgeState)
        cfg = state.config
        key = edge_mod.cache_key(path, query, cfg.cache_key_params)
        memory = state.store.memory
        entry = memory.peek(key)
        if entry is None:
            return None
        _, obj, blocks = self._decode(entry.meta)
        if obj is None or obj.pieced or obj.stored.status != 200:
            return None
        request_headers = fold(req.headers)
        now = self.node.clock()
        decision = policy.decide(obj.stored, request_headers, now,
                                 stale_while_revalidate_max=cfg.stale_while_revalidate,
                                 stale_while_revalidate_default=cfg.stale_while_revalidate)
        if decision.action is not policy.Action.FRESH:
            return None
        kind = kind_of(path)
        who = self._viewer(req, path, query, kind == "playlist")
        if who is None:
            return None
        viewer, minted = who
        rng = req.fields.get("range")
        qkey = key[len(path) + 1:] if len(key) > len(path) else ""
        t = Target(key=key, path=path, upstream=path + (f"?{qkey}" if qkey else ""), kind=kind,
                   title=segments[0], request_headers=request_headers, cdn_loop=None)
        memory.get(key)  # the lookup edge.handle makes: counted a hit, promoted
        body: bytes = entry.body
        if kind == "playlist":
            params = viewer.params()
            gzip_ok = rng is None and "gzip" in req.fields.get("accept-encoding", "")
            ident = (key, obj.version, id(entry.meta), params, gzip_ok)
            found = self.prepared.get(ident)
            if found is None or found[0] is not entry.meta:
                headers = self._stored_headers(obj)
                out, _ = edge_mod.rewrite_playlist(state, t, obj.version, body, headers, viewer,
                                                   gzip_ok)
                found = (entry.meta, out, *self._blocks(headers))
                if not minted:
                    self.prepared.put(ident, found)
            _, body, before, after, defaults = found
        else:
            if not blocks:
                blocks["b"] = self._blocks(self._stored_headers(obj))
            before, after, defaults = blocks["b"]
        planned = self._plan(rng, len(body))
        if planned is None:
            return None
        status, start, count, extra = planned
        age = obj.stored.age_header(self.node.clock()).encode("latin-1")
        head = req.method == "HEAD"
        # aiohttp defaults a Content-Type only for a body that may be sent (not for HEAD)
        sent_fields = b"".join((before, age, after, extra, b"Content-Length: %d\r\n" % count,
                                defaults[0] if count and not head else b""))
        node = self.node

        def done(sent: int, seconds: float) -> None:
            edge_mod.account(state, t, viewer, False, "HIT", status, sent, seconds,
                             edge_mod.range_offset(rng or ""))
            node.counters.requests[(kind, str(status))] += 1
        answer = Answer(status, sent_fields, done=done, date=defaults[1], server=defaults[2])
        if not head and count:
            answer.body = body if status == 200 else memoryview(body)[start:start + count]
        return answer

    def _stored_headers(self, obj: StoredObject) -> dict[str, str]:
        """The fields of a HIT as edge._from_cache builds them, with a marker where Age goes."""
        headers = client_headers(obj.stored.fields)
        headers.update({**cors_headers(self.cors), "X-Cache": "HIT", "Age": _AGE})
        return headers

    def _blocks(self, headers: dict[str, str]) -> tuple[bytes, bytes, tuple[bytes, bool, bool]]:
        """The header block around the Age value, plus what aiohttp adds by default: a
        Content-Type when there is none (for a non-empty body), Date and Server unless set."""
        block = encode_fields(headers) + b"Accept-Ranges: bytes\r\n"
        before, after = block.split(_AGE.encode(), 1)
        default_type = b"" if "Content-Type" in headers else \
            b"Content-Type: application/octet-stream\r\n"
        return before, after, (default_type, "Date" not in headers, "Server" not in headers)


"""What the fast path answers, and how: the content hit requests of both roles, answered exactly as
the aiohttp handlers would (origin.handle, edge.handle and middleware.guard), from prepared state.

A request is fast when it is a GET/HEAD of HTTP/1.1 with a plain target (path characters
`[A-Za-z0-9/._~-]`, query `name=value` pairs of `[A-Za-z0-9._~-]`, so the raw and decoded forms
agree) and no header that changes the answer in a way not handled here (a body, Expect, Upgrade,
Authorization (the peer token), CDN-Loop and Via (loop checks, child caches), any precondition)
and, at most, a single satisfiable Range; at the origin, for a catalog file; at the edge, for an
object in the memory tier (whole, or every piece the request needs) whose policy decision is
FRESH (a HIT) with stored status 200 (fastedge). Everything else returns None and the connection
goes to aiohttp (fasthttp): misses, stale answers, pieces not all in memory, the disk tier,
304/412/416, multipart ranges, OPTIONS, the ops endpoints and any other route. With
auth.required a request is fast only when its token verifies (auth.verify, as
viewers.check_token does; a refusal is aiohttp's 403, and peers, who send Authorization, are
aiohttp's anyway). With a per-address request rate the fast path charges the address's bucket
as limits.Limits.check does: an address over its rate goes to aiohttp with nothing spent (its
429 charges nothing either), and a charged request the fast path then does not answer gets its
token back before aiohttp charges it, so every request is charged once. A session-opening
playlist request from a non-loopback address goes to aiohttp while the per-address session
limit is on, so that limit's window is only ever counted once.

The shared decisions are the handlers' own functions (origin.render_playlist/account,
edge.rewrite_playlist/account, responses' header rules, ranges.resolve_range, policy.decide,
and the viewer rules: viewerrules.identify and opens_counted_session, as viewers and limits use);
header blocks are built once per object (per viewer for rewritten playlists, in a bounded cache)
and only Content-Range, Content-Length, Age and Date are added per request (a whole 200 at the
edge: once per object and Age).
"""

from __future__ import annotations

import re

from aiohttp import web
from multidict import CIMultiDict

from edge360.core.errors import Edge360Error
from edge360.core.paths import split_request_path
from edge360.edge.fasthits import EdgeHits
from edge360.http.guard import LIMITS
from edge360.http.wire import Answer, Prepared, Request, encode_fields, plan_range
from edge360.node.state import NODE, NodeState
from edge360.origin import handler as origin_mod
from edge360.security import tokens as auth
from edge360.security.clientaddr import client_address
from edge360.sessions.viewer import Viewer, identify, opens_counted_session

_TARGET = re.compile(r"/[A-Za-z0-9/._~-]*(?:\?[A-Za-z0-9._~=&-]+)?")
_SLOW_FIELDS = frozenset({
    "content-length", "transfer-encoding", "upgrade", "expect", "authorization", "cdn-loop",
    "via", "if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "if-range"})


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
        self.rate = self.limits.rate if cfg.limits.rate_per_ip > 0 else None
        self.auth_required = cfg.auth.required
        self.origin = cfg.server.role == "origin"
        self.max_path = min(cfg.limits.max_header_bytes, 1024 if self.origin else 4096)
        self.prepared = Prepared()
        self.segments = Prepared()
        self.edge_hits = EdgeHits(self.node, self.cors, self.max_ranges, self._viewer)

    def __call__(self, req: Request) -> Answer | None:
        if req.method not in ("GET", "HEAD"):
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
            return None  # the ops routes (limits.is_exempt) among them
        if self.rate is None:
            return self._answer(req, path, query)
        address = self._address(req)
        if self.rate.check(address, req.started) > 0:
            return None  # over its rate, nothing spent: aiohttp's 429
        answer = self._answer(req, path, query)
        if answer is None:
            self.rate.refund(address)  # aiohttp charges this request itself
        return answer

    def _answer(self, req: Request, path: str, query: list[tuple[str, str]]) -> Answer | None:
        try:
            if self.auth_required:
                # the plain target's raw path is its decoded path; the first of a repeated name
                # counts, as in aiohttp's request.query
                params = dict(reversed(query))
                auth.verify(params.get("token"), path=path, sid=params.get("sid"),
                            keys=self.node.auth_keys, now=self.node.clock())
            if self.origin:
                return self._origin(req, path, query)
            return self._edge(req, path, query)
        except Edge360Error:
            return None  # aiohttp answers it, through the same error handling as always

    # -- who is asking (viewers.identify, limits.Limits.check: the same viewerrules)

    def _viewer(self, req: Request, path: str, query: list[tuple[str, str]],
                opens: bool) -> Viewer | None:
        """The viewer as viewers.identify finds it; None: the request must go to aiohttp."""
        address = self._address(req)
        # the first of a repeated name counts, as in aiohttp's request.query
        params = dict(reversed(query))
        if self.limits.session_opens.limit and opens_counted_session(
                path, req.method, params, req.fields, address):
            return None  # the session-open window would count it here and again in aiohttp
        return identify(params, req.fields, address, opens=opens)

    def _address(self, req: Request) -> str:
        """The client's address as viewers.address_of finds it (PROXY header or TCP peer, then
        forwarding headers from a trusted proxy)."""
        trusted = self.node.trusted
        if not trusted:
            return req.peer
        return client_address(req.peer, CIMultiDict(req.headers), trusted)

    # -- the origin

    def _origin(self, req: Request, path: str, query: list[tuple[str, str]]) -> Answer | None:
        mf = origin_mod.origin_state(self.node).catalog.files.get(path)
        if mf is None:
            return None
        is_playlist = mf.compiled is not None
        viewer = self._viewer(req, path, query, is_playlist)
        if viewer is None:
            return None
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
                if not viewer.minted:
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
        planned = plan_range(rng, length, self.max_ranges)
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

    def _edge(self, req: Request, path: str, query: list[tuple[str, str]]) -> Answer | None:
        segments = self._split(path)
        if segments is None:
            return None
        return self.edge_hits(req, path, segments[0], query)

"""The edge's hits on the fast path (see fastpath): a stored 200 in the memory tier whose policy
decision is FRESH, whole or in pieces, answered as edge.handle would (edge._from_cache with
responses.serve for a whole object, edgeserve.serve_pieced for pieces).

Per stored head (one meta bytes object, i.e. one version of one object) the fast path keeps a
`Held`: the decoded StoredObject, its Target, the header blocks around Age, and the moment it
stops being fresh. The decision is pure (policy.decide): for a request without Cache-Control or
Pragma, whose Vary fields select this object, and a stored response without no-cache, decide
answers FRESH exactly while `current_age(now) < freshness_lifetime`, i.e. while `now` is before
`response_time + freshness_lifetime - initial_age`. That deadline is computed once; a request
near it (or any other request) still goes through policy.decide.

A pieced object is answered only when every piece the request needs is in the memory tier (and
each is as long as it must be): its slices are written in order with back-pressure. A HEAD needs
no piece. Anything else (a piece on disk or missing, 416, multipart) goes to aiohttp.
"""

from __future__ import annotations

from collections.abc import Callable

from edge360.core import policy
from edge360.core.cachecontrol import vary_fields, vary_key
from edge360.edge import handler as edge_mod
from edge360.edge.fetch import Target
from edge360.edge.serve import client_headers
from edge360.edge.state import EdgeState
from edge360.edge.store import StoredObject
from edge360.edge.upstream import fold
from edge360.http.responses import cors_headers
from edge360.http.wire import Answer, Prepared, Request, encode_fields, plan_range
from edge360.node.state import NodeState
from edge360.sessions.viewer import Viewer

_AGE = "\x00age\x00"
#: margin before the freshness deadline from which policy.decide is asked again (float rounding)
_MARGIN = 1e-3
#: Vary selections remembered per held object
_MAX_VARY = 64
ViewerOf = Callable[[Request, str, list[tuple[str, str]], bool], Viewer | None]


class Held:
    """What the fast path keeps per stored head (see the module docstring)."""

    __slots__ = ("after", "before", "defaults", "fields", "fresh_until", "initial_age", "key",
                 "meta", "obj", "piece_keys", "response_time", "target", "vary", "vary_ok")

    def __init__(self, key: str, meta: bytes, obj: StoredObject, target: Target) -> None:
        s = obj.stored
        self.key, self.meta, self.obj, self.target = key, meta, obj, target
        self.initial_age = s.initial_age
        self.response_time = s.response_time
        left = s.freshness_lifetime - s.initial_age
        usable = left > 0 and not s.directives.has("no-cache")
        self.fresh_until = s.response_time + left - _MARGIN if usable else float("-inf")
        vary = s.fields.get("vary")
        names = vary_fields(vary)
        # None: Vary * (never selects; decide says so); () with a key of "" selects any request
        self.vary: tuple[str, ...] | None = names
        if names == () and s.vary_key != "":
            self.fresh_until = float("-inf")
        self.vary_ok: dict[tuple[str | None, ...], bool] = {}
        self.before = self.after = b""
        self.defaults: tuple[bytes, bool, bool] = (b"", True, True)
        self.fields: dict[tuple[int, bool], bytes] = {}  # (age, HEAD) -> a whole 200's fields
        self.piece_keys: list[str] = []

    def age(self, now: float) -> int:
        """policy.StoredResponse.age_header, as a number."""
        return min(int(self.initial_age + max(0.0, now - self.response_time)), 2**31)

    def selected(self, fields: dict[str, str]) -> bool:
        """Whether the request's Vary fields select this object (decide's first check)."""
        names = self.vary
        if not names:
            return names is not None
        values = tuple(fields.get(n) for n in names)
        ok = self.vary_ok.get(values)
        if ok is None:
            if len(self.vary_ok) >= _MAX_VARY:
                self.vary_ok.clear()
            ok = vary_key(self.obj.stored.fields.get("vary"), fields) == self.obj.stored.vary_key
            self.vary_ok[values] = ok
        return ok

    def piece_key(self, n: int) -> str:
        keys = self.piece_keys
        if not keys:
            keys.extend(self.obj.piece_key(self.key, i) for i in range(self.obj.pieces()))
        return keys[n]


class EdgeHits:
    """The edge half of fastpath.FastPath."""

    def __init__(self, node: NodeState, cors: str, max_ranges: int,
                 viewer: ViewerOf) -> None:
        self.node = node
        self.cors = cors
        self.max_ranges = max_ranges
        self.viewer = viewer
        self.held = Prepared()
        self.prepared = Prepared()

    def _held(self, key: str, path: str, title: str, meta: bytes) -> Held | None:
        found: Held | bytes | None = self.held.get(id(meta))
        if found is meta:
            return None  # decoded before: not a 200 this version reads
        if isinstance(found, Held) and found.meta is meta and found.key == key:
            return found
        obj = StoredObject.decode(meta)
        if obj is None or obj.stored.status != 200:
            self.held.put(id(meta), meta)
            return None
        t = Target.of(key, path, title)
        held = Held(key, meta, obj, t)
        if not obj.pieced or t.kind != "playlist":
            held.before, held.after, held.defaults = self._blocks(self._stored_headers(obj))
        self.held.put(id(meta), held)  # holding meta keeps its id from being reused
        return held

    def __call__(self, req: Request, path: str, title: str,
                 query: list[tuple[str, str]]) -> Answer | None:
        state = self.node.role_state
        assert isinstance(state, EdgeState)
        cfg = state.config
        key = edge_mod.cache_key(path, query, cfg.cache_key_params)
        memory = state.store.memory
        entry = memory.peek(key)
        if entry is None:
            return None
        held = self._held(key, path, title, entry.meta)
        if held is None:
            return None
        obj, t = held.obj, held.target
        if obj.pieced and t.kind == "playlist":
            return None
        now = self.node.clock()
        fields = req.fields
        if not (now < held.fresh_until and "cache-control" not in fields
                and "pragma" not in fields and held.selected(fields)):
            decision = policy.decide(obj.stored, fold(req.headers), now,
                                     stale_while_revalidate_max=cfg.stale_while_revalidate,
                                     stale_while_revalidate_default=cfg.stale_while_revalidate)
            if decision.action is not policy.Action.FRESH:
                return None
        kind = t.kind
        viewer = self.viewer(req, path, query, kind == "playlist")
        if viewer is None:
            return None
        rng = fields.get("range")
        head = req.method == "HEAD"
        before, after, defaults = held.before, held.after, held.defaults
        body: bytes = entry.body
        if kind == "playlist":
            params = viewer.params()
            gzip_ok = rng is None and "gzip" in fields.get("accept-encoding", "")
            ident = (key, obj.version, id(entry.meta), params, gzip_ok)
            found = self.prepared.get(ident)
            if found is None or found[0] is not entry.meta:
                headers = self._stored_headers(obj)
                out, _ = edge_mod.rewrite_playlist(state, t, obj.version, body, headers, viewer,
                                                   gzip_ok)
                found = (entry.meta, out, *self._blocks(headers))
                if not viewer.minted:
                    self.prepared.put(ident, found)
            _, body, before, after, defaults = found
        length = obj.length if obj.pieced else len(body)
        planned = plan_range(rng, length, self.max_ranges)
        if planned is None:
            return None
        status, start, count, extra = planned
        parts: list[memoryview] | None = None
        if obj.pieced and not head and count:
            parts = self._slices(held, start, count)
            if parts is None:
                return None
        age = held.age(now)
        if status == 200 and kind != "playlist":
            sent_fields = held.fields.get((age, head))
            if sent_fields is None:
                if len(held.fields) >= 4:
                    held.fields.clear()
                sent_fields = held.fields[(age, head)] = self._fields(
                    before, age, after, extra, count, defaults, head)
        else:
            sent_fields = self._fields(before, age, after, extra, count, defaults, head)
        memory.get(key)  # the lookup edge.handle makes: counted a hit, promoted
        if parts is not None:
            pb = obj.piece_bytes
            for n in range(start // pb, (start + count - 1) // pb + 1):
                memory.get(held.piece_key(n))  # as state.piece reads each piece
        offset = edge_mod.range_offset(rng) if rng is not None else None
        counters = self.node.counters.requests

        def done(sent: int, seconds: float) -> None:
            edge_mod.account(state, t, viewer, False, "HIT", status, sent, seconds, offset)
            counters[(kind, str(status))] += 1
        answer = Answer(status, sent_fields, done=done, date=defaults[1], server=defaults[2])
        if parts is not None:
            answer.parts = parts
        elif not head and count:
            answer.body = body if status == 200 else memoryview(body)[start:start + count]
        return answer

    def _slices(self, held: Held, start: int, count: int) -> list[memoryview] | None:
        """The slices of the pieces holding [start, start + count), as edgeserve.serve_pieced
        cuts them; None when a piece is not in memory or shorter than it must be."""
        state = self.node.role_state
        assert isinstance(state, EdgeState)
        memory = state.store.memory
        pb = held.obj.piece_bytes
        end = start + count - 1
        out: list[memoryview] = []
        for n in range(start // pb, end // pb + 1):
            entry = memory.peek(held.piece_key(n))
            if entry is None:
                return None
            data = entry.body
            base = n * pb
            lo, hi = max(start - base, 0), min(end - base, len(data) - 1)
            if hi < lo or base + hi < min(end, base + pb - 1):
                return None
            out.append(memoryview(data)[lo:hi + 1])
        return out

    @staticmethod
    def _fields(before: bytes, age: int, after: bytes, extra: bytes, count: int,
                defaults: tuple[bytes, bool, bool], head: bool) -> bytes:
        # aiohttp defaults a Content-Type only for a body that may be sent (not for HEAD)
        return b"".join((before, b"%d" % age, after, extra, b"Content-Length: %d\r\n" % count,
                         defaults[0] if count and not head else b""))

    def _stored_headers(self, obj: StoredObject) -> dict[str, str]:
        """The fields of a HIT as edge._from_cache builds them, with a marker where Age goes."""
        headers = client_headers(obj.stored.fields)
        headers.update({**cors_headers(self.cors), "X-Cache": "HIT", "Age": _AGE})
        return headers

    @staticmethod
    def _blocks(headers: dict[str, str]) -> tuple[bytes, bytes, tuple[bytes, bool, bool]]:
        """The header block around the Age value, plus what aiohttp adds by default: a
        Content-Type when there is none (for a non-empty body), Date and Server unless set."""
        block = encode_fields(headers) + b"Accept-Ranges: bytes\r\n"
        before, after = block.split(_AGE.encode(), 1)
        default_type = b"" if "Content-Type" in headers else \
            b"Content-Type: application/octet-stream\r\n"
        return before, after, (default_type, "Date" not in headers, "Server" not in headers)

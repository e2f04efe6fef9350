"""The edge role's content handler: GET/HEAD for any path from the cache, fetching from a parent
on a miss (docs/HTTP.md, "The edge"; docs/ARCHITECTURE.md follows a hit and a miss through it).

A request: method -> loop and path checks -> token -> cache key (path + the configured key
params; never sid, token or CMCD) -> viewer -> memory lookup -> policy.decide (RFC 9111 §4) ->
HIT / STALE (+ background refresh, RFC 5861) / MISS through the coalescer -> playlists rewritten
per viewer on the way out -> session touch, egress, late segments, prefetch (`account`, once the
body went out). A hit in the memory tier is answered at once, with no task and no await; what
needs the disk, a parent or time is answered by a coroutine, through the same builders.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from edge360.cache.diskformat import OpenBody
from edge360.core import policy
from edge360.core.answer import pieces_needed
from edge360.core.errors import (
    Edge360Error,
    MethodNotAllowed,
    NotFound,
    UpstreamError,
    UpstreamTimeout,
)
from edge360.core.kinds import OTHER
from edge360.core.paths import CheckedPaths
from edge360.edge.accounting import account
from edge360.edge.coalescer import Flight, Head, Reader
from edge360.edge.held import (
    client_headers,
    from_file,
    from_held_pieces,
    from_whole,
    pieces_plan,
)
from edge360.edge.objects import Target, cache_key, range_offset
from edge360.edge.serve import from_flight, from_pieces, relay
from edge360.edge.state import EdgeState
from edge360.edge.store import FILE_FROM
from edge360.edge.stored import StoredObject
from edge360.edge.viewerplaylist import for_viewer
from edge360.http import admission
from edge360.http.represent import Prepared, cors_headers, preflight
from edge360.http.response import Response, carried, encode_fields
from edge360.http.viewers import check_loop, check_token, identify, is_child_cache, is_peer
from edge360.http.wire import Request
from edge360.sessions.viewer import Viewer

Found = tuple[StoredObject, bytes | None]
Held = tuple[StoredObject, bytes | memoryview | None]  # a hit's body may be a memfd's view
Answer = Response | Awaitable[Response]


class Edge:
    """The content handler of an edge node (http.dispatch endpoint)."""

    def __init__(self, state: EdgeState) -> None:
        self.state = state
        self.node = state.node
        cfg = self.node.config
        self.cors = cfg.origin.cors_origin
        self.max_ranges = cfg.limits.max_ranges
        self.paths = CheckedPaths(min(cfg.limits.max_header_bytes, 4096))

    def __call__(self, request: Request) -> Answer:
        state, node = self.state, self.node
        method = request.method
        if method == "OPTIONS":
            return preflight(self.cors)
        try:
            if method not in ("GET", "HEAD"):
                if method in state.config.pass_methods:
                    return state.pass_unsafe(request, self._target(request, False))
                raise MethodNotAllowed(method, headers={"Allow": "GET, HEAD, OPTIONS"})
            check_loop(request, state.upstream.pseudonym)
            peer = is_peer(request, node)
            t = self._target(request, peer)
            check_token(request, node, t.path)
            child = peer or is_child_cache(request, node)
            viewer = None if child else identify(request, node, opens=t.kind == "playlist")
            if viewer is not None and t.kind == "playlist":  # admission (docs/OVERLOAD.md)
                held = admission.gate(request, node, viewer, t.title)
                if held is not None:
                    return held if isinstance(held, Response) else self._later(
                        admission.after(held, lambda: self._answer(request, t, child, viewer)),
                        request, t, viewer, child)
            result = self._answer(request, t, child, viewer)
        except Edge360Error as e:
            # X-Cache on every content response, refusals included (a refusal decided from a
            # stored object says HIT/STALE, set where it was decided)
            e.headers.setdefault("X-Cache", "MISS")
            raise
        if isinstance(result, Response):
            return self._counted(result, request, t, viewer, child)
        return self._later(result, request, t, viewer, child)

    async def _later(self, pending: Awaitable[Response], request: Request, t: Target,
                     viewer: Viewer | None, child: bool) -> Response:
        try:
            response = await pending
        except Edge360Error as e:
            e.headers.setdefault("X-Cache", "MISS")
            raise
        return self._counted(response, request, t, viewer, child)

    def _target(self, request: Request, peer: bool) -> Target:
        segments = self.paths(request.path)
        if not segments:
            raise NotFound("/")
        path = request.path
        key_params = self.state.config.cache_key_params
        key = cache_key(path, request.query, key_params) if key_params else path
        fields = request.fields
        if peer:
            # the peer token is our own tiers' credential, not a viewer's: the answer is the
            # same for every viewer, so it may be stored (RFC 9111 §3.5 is about users' ones)
            fields = {k: v for k, v in fields.items() if k != "authorization"}
        return Target.of(key, path, segments[0], fields, fields.get("cdn-loop"), request.kind)

    # -- deciding

    def _answer(self, request: Request, t: Target, child: bool,
                viewer: Viewer | None) -> Answer:
        state = self.state
        entry = state.store.memory.get(t.key)
        if entry is None:
            return self._lookup(request, t, child, viewer)
        held = state.hits.held(entry.meta)
        if held is None:
            return self._lookup(request, t, child, viewer)
        obj, now = held.obj, self.node.clock()
        if held.fresh_for(request.fields, now):  # the body as held: maybe a memfd's (sendfile)
            return self._from_cache(request, t, (obj, None if obj.pieced else entry.body),
                                    "HIT", child, viewer, entry.meta, obj.stored.age(now))
        found = (obj, None if obj.pieced else entry.whole())
        return self._decide(request, t, found, child, viewer, entry.meta)

    async def _lookup(self, request: Request, t: Target, child: bool,
                      viewer: Viewer | None) -> Response:
        state = self.state
        looked = await state.store.lookup_or_open(t.key, None if t.kind == "playlist"
                                                  else FILE_FROM)
        found: Found | None = None
        if looked is not None:
            obj, body = looked
            if isinstance(body, OpenBody):
                sent = self._from_file(request, t, obj, body, child)
                if sent is not None:
                    return sent
                found = await state.store.lookup(t.key)  # a revalidation stores the bytes again
            else:
                found = (obj, body)
        if found is None:
            now = self.node.clock()
            neg = state.store.negative(t.key, now)
            if neg is not None:
                age = str(max(0, int(now - neg.received)))
                headers = {**client_headers(neg.headers), **self._extra("HIT", age)}
                return Response(neg.status, encode_fields(headers), body=neg.body, cache="HIT",
                                carries=carried(headers))
            return await self._miss(request, t, None, child, viewer)
        answer = self._decide(request, t, found, child, viewer)
        return answer if isinstance(answer, Response) else await answer

    def _action(self, obj: StoredObject, t: Target) -> policy.Action:
        cfg = self.state.config
        # the edge's default stale window is for HLS kinds (like segment_ttl): elsewhere stale is
        # served only with the upstream's or the client's permission (RFC 9111 §4.2.4)
        return policy.decide(obj.stored, t.request_headers, self.node.clock(),
                             stale_while_revalidate_max=cfg.stale_while_revalidate,
                             stale_while_revalidate_default=cfg.stale_while_revalidate
                             if t.kind != OTHER else 0.0).action

    def _from_file(self, request: Request, t: Target, obj: StoredObject, body: OpenBody,
                   child: bool) -> Response | None:
        """A whole object only the disk holds, answered from its file when it may be (fresh, or
        stale with no refresh to start); None (the file closed) when the answer needs its bytes."""
        action = self._action(obj, t)
        if action is not policy.Action.FRESH and action is not policy.Action.STALE:
            body.close()
            return None
        result = "HIT" if action is policy.Action.FRESH else "STALE"
        prepared = self._prepared(obj, result, child, obj.stored.age(self.node.clock()), None)
        try:
            return from_file(request, obj, body, prepared, self.max_ranges, result)
        except Edge360Error as e:
            e.headers["X-Cache"] = result  # decided from the stored object
            raise

    def _decide(self, request: Request, t: Target, found: Found, child: bool,
                viewer: Viewer | None, meta: bytes | None = None) -> Answer:
        action = self._action(found[0], t)
        if action is policy.Action.FRESH:
            return self._from_cache(request, t, found, "HIT", child, viewer, meta)
        if action is policy.Action.STALE:
            return self._from_cache(request, t, found, "STALE", child, viewer, meta)
        if action is policy.Action.STALE_REVALIDATE_BACKGROUND:
            self.state.refresh_behind(t, found)
            return self._from_cache(request, t, found, "STALE", child, viewer, meta)
        if action is policy.Action.GATEWAY_TIMEOUT:
            raise UpstreamTimeout("only-if-cached and nothing fresh stored")
        return self._miss(request, t, found if action is policy.Action.REVALIDATE else None,
                          child, viewer)

    def _extra(self, result: str, age: str | None = None) -> dict[str, str]:
        aged = {"Age": age} if age is not None else {}
        return {**cors_headers(self.cors), "X-Cache": result, **aged}

    # -- answering from the cache

    def _from_cache(self, request: Request, t: Target, found: Held, result: str, child: bool,
                    viewer: Viewer | None, meta: bytes | None = None,
                    age: int | None = None) -> Answer:
        obj, body = found
        s = obj.stored
        state = self.state
        if age is None:
            age = s.age(self.node.clock())
        try:
            if not obj.pieced:
                assert body is not None
                prepared = self._prepared(obj, result, child, age, meta)
                if t.kind == "playlist" and s.status == 200:  # stored as bytes (edge.store)
                    return for_viewer(state.index, self.node, request, t, obj, bytes(body),
                                      dict(prepared.headers), viewer, result, self.max_ranges,
                                      state.viewer_blocks, prepared)
                return from_whole(request, obj, body, prepared, self.max_ranges, result)
            p = pieces_plan(request, obj, self._prepared(obj, result, child, age, meta),
                            self.max_ranges)
        except Edge360Error as e:
            e.headers["X-Cache"] = result  # decided from the stored object
            raise
        needed = pieces_needed(p, obj.piece_bytes)
        held = [data for n in needed
                if (data := state.store.piece_in_memory(t.key, obj, n)) is not None]
        if len(held) == len(needed):
            return from_held_pieces(p, obj, self._prepared(obj, result, child, age, meta),
                                    held, result)
        # a range touching any uncached piece is a MISS (docs/HTTP.md, "X-Cache and Age")
        present = [state.store.has_piece(t.key, obj, n) for n in needed]
        if not obj.strong and not all(present):
            # never assembled from separate fetches: fetched whole again (a new version)
            return self._miss(request, t, None, child, viewer)
        result = result if all(present) else "MISS"
        return from_pieces(p, obj, self._prepared(obj, result, child, age, meta),
                           state.piece_source(t, obj, needed), result)

    def _prepared(self, obj: StoredObject, result: str, child: bool, age: int,
                  meta: bytes | None) -> Prepared:
        """The answer's header fields (stored fields, CORS, X-Cache, Age), encoded once per
        stored version, answer kind and second of age."""
        kind = result if not child else result + ":child"
        hits = self.state.hits
        found = hits.prepared(meta, kind, age) if meta is not None else None
        if found is not None:
            return found
        headers = client_headers(obj.stored.fields, to_peer=child)
        headers.update(self._extra(result, str(age)))
        made = hits.prepared(meta, kind, age, headers) if meta is not None else None
        return made if made is not None else Prepared(headers)

    # -- misses

    async def _miss(self, request: Request, t: Target, found: Found | None, child: bool,
                    viewer: Viewer | None) -> Response:
        state = self.state
        if request.method == "HEAD" and found is None:
            flight = state.coalescer.get(t.key)
            if flight is None:
                flight, _ = state.fetcher.passthrough(t, "HEAD", {})
            head = await flight.wait_head()
            headers = {**client_headers(head.headers, to_peer=child), **self._extra("MISS")}
            return relay(request, flight, None, head, headers)
        offset = range_offset(request.fields.get("range", ""))
        if found is None and offset is not None and "if-range" not in request.fields:
            return await self._cold_range(request, t, offset, child, viewer)
        flight, _ = state.fetcher.whole(t, found)
        reader = flight.reserve(0)
        if reader is None:  # the flight let the first bytes go: this request fetches its own
            flight = state.fetcher.whole_alone(t)
            reader = flight.reserve(0)
            assert reader is not None
        try:
            got = await self._head(flight, t, found)
        except BaseException:
            reader.close()
            raise
        if got is None:
            reader.close()
            assert found is not None
            return await self._settled(self._from_cache(request, t, found, "STALE", child,
                                                        viewer))
        return await self._from_flight(request, t, flight, reader, got, found, child, viewer)

    async def _head(self, flight: Flight, t: Target, found: Found | None) -> Head | None:
        """The flight's head; None when a stored copy that may serve stale should answer
        instead (the parent failed, or did not answer within edge.revalidate_timeout)."""
        state = self.state
        may_stale = found is not None and state.stale_on_error(found[0], t, UpstreamTimeout())
        try:
            if not may_stale:
                return await flight.wait_head()
            return await asyncio.wait_for(asyncio.shield(flight.wait_head()),
                                          state.config.revalidate_timeout)
        except TimeoutError:
            return None
        except UpstreamError as e:
            if found is not None and state.stale_on_error(found[0], t, e):
                return None
            raise

    async def _cold_range(self, request: Request, t: Target, offset: int, child: bool,
                          viewer: Viewer | None) -> Response:
        """A range of an object whose head is unknown: its piece is fetched (and stored with
        its head when the object has a strong validator), else the client's own range goes
        through, and the whole object is fetched behind it so later ranges come from it."""
        state = self.state
        flight, _ = state.fetcher.first_piece(t, offset // state.config.piece_bytes)
        flight, reader = self._reserve(flight, t, request)
        try:
            head = await flight.wait_head()
            if head.status == 206:
                reader.close()
                await flight.finished()
                if flight.result is not None:
                    return await self._settled(self._from_cache(request, t, flight.result,
                                                                "MISS", child, viewer))
                if policy.not_storable_reason("GET", 206, t.request_headers,
                                              head.headers) is None:
                    state.refresh_behind(t, None)  # storable, but no strong validator
                flight, _ = state.fetcher.passthrough(t, "GET",
                                                      {"Range": request.fields["range"]})
                flight, reader = self._reserve(flight, t, request)
                head = await flight.wait_head()
        except BaseException:
            reader.close()
            raise
        return await self._from_flight(request, t, flight, reader, head, None, child, viewer)

    def _reserve(self, flight: Flight, t: Target, request: Request) -> tuple[Flight, Reader]:
        """A reader from byte 0, decided now (before any head is sent): a flight that let its
        first bytes go cannot serve this request, which then gets an exchange of its own."""
        reader = flight.reserve(0)
        if reader is not None:
            return flight, reader
        own = self.state.fetcher.relay_alone(t, {"Range": request.fields["range"]})
        reader = own.reserve(0)
        assert reader is not None
        return own, reader

    async def _from_flight(self, request: Request, t: Target, flight: Flight, reader: Reader,
                           head: Head, stored: Found | None, child: bool,
                           viewer: Viewer | None) -> Response:
        state = self.state
        if stored is not None and state.stale_on_error(stored[0], t, head.status):
            reader.close()
            return await self._settled(self._from_cache(request, t, stored, "STALE", child,
                                                        viewer))
        if head.revalidated:
            reader.close()
            return await self._settled(self._from_cache(request, t, flight.result, "HIT", child,
                                                        viewer))
        headers = {**client_headers(head.headers, to_peer=child), **self._extra("MISS")}
        if head.status != 200:
            if head.status in (206, 416) and "content-range" in head.headers:
                headers["Content-Range"] = head.headers["content-range"]
            return relay(request, flight, reader, head, headers)
        if t.kind == "playlist":
            try:
                body = await flight.body()
            finally:
                reader.close()
            got = flight.result[0] if isinstance(flight.result, tuple) else None
            return for_viewer(self.state.index, self.node, request, t, got, body, headers,
                              viewer, "MISS", self.max_ranges)
        return from_flight(request, flight, reader, head, Prepared(headers), self.max_ranges)

    @staticmethod
    async def _settled(answer: Answer) -> Response:
        return answer if isinstance(answer, Response) else await answer

    # -- accounting

    def _counted(self, response: Response, request: Request, t: Target, viewer: Viewer | None,
                 child: bool) -> Response:
        state, status = self.state, response.status
        result = response.cache or "MISS"
        offset = range_offset(request.fields.get("range", ""))

        def done(sent: int, seconds: float) -> None:
            account(state, t, viewer, child, result, status, sent, seconds, offset)

        def cut(reason: str) -> None:
            state.counters.responses_cut[reason] += 1
            state.cut(reason, t.path)
        response.done = done
        response.cut = cut
        return response

"""The edge's per-process state (node.role_state): its parents, tiers, in-flight fetches, playlist
knowledge and prefetcher, plus the few decisions that need several of them (stale on error,
refresh behind, pieces, unsafe pass-through with invalidation, health for /healthz and /metrics).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Sequence

from edge360.core import invalidation, policy
from edge360.core.errors import Overloaded, UpstreamError
from edge360.core.kinds import OTHER
from edge360.core.storedfields import forwarded_request_fields
from edge360.edge.coalescer import Coalescer
from edge360.edge.fetch import Fetcher
from edge360.edge.held import client_headers
from edge360.edge.hits import HitCache
from edge360.edge.objects import Target
from edge360.edge.piecesource import PieceSource
from edge360.edge.playlists import PlaylistIndex
from edge360.edge.prefetch import Prefetcher
from edge360.edge.store import EdgeStore
from edge360.edge.stored import StoredObject
from edge360.edge.upstream import Upstream
from edge360.edge.viewerplaylist import ViewerBlocks
from edge360.http.represent import cors_headers
from edge360.http.response import Response, encode_fields
from edge360.http.wire import Request
from edge360.node.counters import TierGauge
from edge360.node.state import NodeState
from edge360.node.tasks import TaskGroup

log = logging.getLogger("edge360.edge")

#: body bytes of an unsafe request's answer relayed at most (they are API answers, not media)
MAX_PASS_BODY = 1024 * 1024
#: seconds between two log lines about answers cut because their source broke off
CUT_LOG_EVERY = 10.0


class EdgeState:
    def __init__(self, node: NodeState) -> None:
        cfg = node.config.edge
        self.node = node
        self.config = cfg
        self.counters = node.counters
        self.tasks = TaskGroup()
        self.upstream = Upstream(cfg, node.counters, peer_token=node.config.peer.token)
        self.store = EdgeStore(cfg, node.counters)
        self.coalescer = Coalescer(self.tasks, max_waiters=cfg.max_waiters,
                                   on_wait=self._waited)
        self.fetcher = Fetcher(cfg, self.upstream, self.store, self.coalescer, node.counters,
                               clock=node.clock)
        self.index = PlaylistIndex()
        self.fetcher.on_playlist = lambda t, text: self.index.learn(t.path, t.title, text)
        self.prefetcher = Prefetcher(self)
        self.hits = HitCache()
        self.viewer_blocks = ViewerBlocks()
        self._cut_logged = -CUT_LOG_EVERY

    async def start(self) -> None:
        await self.upstream.start()
        if self.upstream.parents:
            self.tasks.every(self.config.health_interval, self.upstream.check_health,
                             "parent health")
        self.node.reloaders.append(self.reload)

    async def close(self) -> None:
        await self.tasks.close()
        await self.upstream.close()

    async def reload(self) -> str:
        self.upstream.set_parents(tuple(self.node.config.edge.upstreams))
        return f"{len(self.upstream.parents)} parents"

    def _waited(self) -> None:
        self.counters.coalesced_waiters += 1

    # -- decisions -------------------------------------------------------------------------

    async def piece(self, t: Target, obj: StoredObject, n: int) -> bytes | memoryview:
        """Piece n from the cache, else fetched (once, however many ask) when the object has a
        strong validator to check it against."""
        data = await self.store.piece(t.key, obj, n)
        if data is None:
            if not obj.strong:
                raise UpstreamError("a piece of an object without a strong validator is gone",
                                    kind="abandoned")
            flight, _ = self.fetcher.piece(t, obj, n)
            data = await flight.body()
        return data

    def piece_source(self, t: Target, obj: StoredObject, needed: Sequence[int]) -> PieceSource:
        """Where an answer's pieces `needed` come from: memory, disk files, else `piece`."""
        def fetch(n: int) -> Awaitable[bytes | memoryview]:
            return self.piece(t, obj, n)
        return PieceSource(self.store, t.key, obj, needed, fetch)

    def cut(self, reason: str, path: str) -> None:
        """An answer broke off: a client that went away is routine (not logged); a source that
        broke off is one line, at most one every CUT_LOG_EVERY seconds."""
        if reason == "client":
            return
        now = time.monotonic()
        if now - self._cut_logged >= CUT_LOG_EVERY:
            self._cut_logged = now
            log.warning("answer cut short: its source broke off (%s)", path[:200])

    def refresh_behind(self, t: Target, found: tuple[StoredObject, bytes | None] | None) -> None:
        """stale-while-revalidate (RFC 5861 §3): refresh in the background, once."""
        if self.coalescer.get(t.key) is None:
            try:
                self.fetcher.whole(t, found)
            except Overloaded:
                pass

    def stale_on_error(self, obj: StoredObject, t: Target, error: int | BaseException) -> bool:
        """Whether the stored copy may answer after the upstream failed (RFC 5861 §4); the
        edge's default window (the upstream silent) is for HLS kinds only, as in `edge`."""
        if isinstance(error, int) and error not in policy.ERROR_STATUSES:
            return False
        return policy.can_serve_stale_on_error(
            obj.stored, self.node.clock(), error, float(self.config.stale_if_error),
            request_headers=t.request_headers,
            stale_if_error_default=None if t.kind != OTHER else 0.0)

    async def pass_unsafe(self, request: Request, t: Target) -> Response:
        """An allowed unsafe method, passed upstream uncached; a 2xx/3xx answer invalidates the
        stored target and same-host Location/Content-Location (RFC 9111 §4.4)."""
        body = request.body
        # the client's fields go on, its preconditions too: they are for the origin here
        extra = {k: v for k, v in t.request_headers.items()
                 if k in ("if-match", "if-unmodified-since")}
        resp = await self.upstream.open(request.method, t.upstream, t.path,
                                        self.upstream.request_headers(
                                            t.cdn_loop, extra, via=t.request_headers.get("via"),
                                            forward=forwarded_request_fields(t.request_headers)),
                                        body=body, idempotent=False)
        data = bytearray()
        try:
            async for chunk in resp.chunks():
                data += chunk
                if len(data) > MAX_PASS_BODY:
                    raise UpstreamError("answer to an unsafe method too large", kind="invalid")
        finally:
            resp.close()
        if invalidation.invalidates(request.method, resp.status):
            # the request's own stored object by its cache key; a same-host Location or
            # Content-Location by its path, with every variant of its key params when the key
            # has any (the only case that needs a scan)
            await self.store.invalidate(t.key)
            host = request.fields.get("host", "")
            for path in invalidation.invalidated_paths(t.upstream, resp.headers, host):
                target = path.split("?", 1)[0]
                await self.store.invalidate(target)
                if self.config.cache_key_params:
                    await self.store.purge_prefix(target + "?")
        headers = {**client_headers(resp.headers),
                   **cors_headers(self.node.config.origin.cors_origin)}
        return Response(resp.status, encode_fields(headers), body=bytes(data))

    # -- figures ---------------------------------------------------------------------------

    def tiers(self) -> list[TierGauge]:
        return self.store.tiers()

    def parents_up(self) -> dict[str, bool]:
        return dict(self.upstream.up)

    def health(self) -> dict[str, object]:
        """Added to /healthz: each parent's health and the tiers (200 while we can serve)."""
        return {"parents": self.parents_up(),
                "cache": {g.tier: {"bytes": g.size_bytes, "objects": g.objects}
                          for g in self.tiers()},
                "inflight": len(self.coalescer)}


def edge_of(node: NodeState) -> EdgeState:
    state = node.role_state
    assert isinstance(state, EdgeState)
    return state

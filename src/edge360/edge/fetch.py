"""The edge's upstream fetches, each run once per key through the coalescer: a whole object
(conditional when revalidating), one piece of a big object, the first piece of an object whose
head is unknown, and plain pass-through requests (HEAD misses, answers that may not be stored).

Each producer validates what it received before anything is stored: a body shorter or longer than
its Content-Length is "truncated", a 206 whose Content-Range is not the one asked for (or whose
complete length or ETag no longer matches the stored head) is "invalid"; neither is ever stored and
the waiters get the error (their responses are cut short when already under way). A playlist that
points outside its title is refused and never stored. Storing follows policy (RFC 9111 §3).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from edge360.cache.disk import DiskWriter
from edge360.config.schema import EdgeConfig
from edge360.core import policy
from edge360.core.cachecontrol import cache_directives
from edge360.core.errors import UpstreamError
from edge360.core.kinds import OTHER, kind_of
from edge360.core.ranges import parse_content_range
from edge360.core.storedfields import forwarded_request_fields
from edge360.edge.coalescer import Coalescer, Flight, Head, Producer
from edge360.edge.store import MAX_NEGATIVE_BODY, EdgeStore, Negative, StoredObject, new_version
from edge360.edge.upstream import Upstream, UpstreamResponse
from edge360.hls import playlist
from edge360.node.counters import Counters

#: fields describing one byte range of a body, never stored as the object's own (RFC 9110 §14.4)
_RANGE_FIELDS = ("content-range", "content-length")


@dataclass(frozen=True, slots=True)
class Target:
    """One object as the edge asks its parent for it."""

    key: str  # cache key: path + the key params (sorted)
    path: str  # path without query: parent choice (one parent per file), kind, title
    upstream: str  # path + forwarded query (never sid, token or CMCD)
    kind: str  # "playlist", "segment", "other"
    title: str
    request_headers: dict[str, str]  # the client's, lower-cased (Vary, no-store, Authorization)
    cdn_loop: str | None

    @classmethod
    def of(cls, key: str, path: str, title: str, request_headers: dict[str, str] | None = None,
           cdn_loop: str | None = None) -> Target:
        """The target of the object cached under `key` (`path`, then "?" and the key params when
        there are any): the parent is asked for exactly that, so a viewer's sid, token or CMCD
        never goes upstream. Without request headers it describes an object no client field
        steers (a fast-path hit, a prefetch, a warm-up)."""
        query = key[len(path) + 1:] if len(key) > len(path) else ""
        return cls(key=key, path=path, upstream=path + (f"?{query}" if query else ""),
                   kind=kind_of(path), title=title,
                   request_headers={} if request_headers is None else request_headers,
                   cdn_loop=cdn_loop)


class Fetcher:
    def __init__(self, config: EdgeConfig, upstream: Upstream, store: EdgeStore,
                 coalescer: Coalescer, counters: Counters,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.upstream = upstream
        self.store = store
        self.coalescer = coalescer
        self.counters = counters
        self.clock = clock
        #: called with (target, playlist text) for every good playlist fetched
        self.on_playlist: Callable[[Target, str], None] = lambda t, text: None

    # -- flights ---------------------------------------------------------------------------

    def whole(self, t: Target, entry: tuple[StoredObject, bytes | None] | None = None
              ) -> tuple[Flight, bool]:
        """GET the whole object (If-None-Match/If-Modified-Since from `entry` when given)."""
        return self.coalescer.join(t.key, self._whole(t, entry))

    def piece(self, t: Target, obj: StoredObject, n: int) -> tuple[Flight, bool]:
        return self.coalescer.join(obj.piece_key(t.key, n), self._piece(t, obj, n))

    def first_piece(self, t: Target, n: int) -> tuple[Flight, bool]:
        """Piece n of an object whose head is unknown (a Range request on a cold object)."""
        return self.coalescer.join(f"{t.key}\x00cold\x00{n}", self._first_piece(t, n))

    def passthrough(self, t: Target, method: str, extra: dict[str, str]) -> tuple[Flight, bool]:
        """An uncached exchange relayed as is (coalesced per method, key and headers sent)."""
        tag = "\x00".join(f"{k}={v}" for k, v in sorted(extra.items()))
        return self.coalescer.join(f"{method}\x00{t.key}\x00{tag}",
                                   self._relay(t, method, extra))

    def _headers(self, t: Target, extra: dict[str, str]) -> dict[str, str]:
        """The request to the parent: the client's end-to-end fields, our own, then `extra`."""
        return self.upstream.request_headers(t.cdn_loop, extra, via=t.request_headers.get("via"),
                                             forward=forwarded_request_fields(t.request_headers))

    # -- producers -------------------------------------------------------------------------

    def _whole(self, t: Target, entry: tuple[StoredObject, bytes | None] | None) -> Producer:
        async def produce(flight: Flight) -> None:
            extra = policy.conditional_headers(entry[0].stored) if entry else {}
            request_time = self.clock()
            resp = await self.upstream.open("GET", t.upstream, t.path,
                                            self._headers(t, extra))
            response_time = self.clock()
            if resp.status == 304 and entry is not None:
                resp.close()
                obj, body = entry
                if not policy.validator_matches(obj.stored, resp.headers):
                    raise self._invalid("304 for another representation")
                fresh = dataclasses.replace(obj, stored=policy.revalidated(
                    obj.stored, resp.headers, request_time=request_time,
                    response_time=response_time))
                await self.store.refresh(t.key, fresh, body)
                flight.result = (fresh, body)
                flight.set_head(Head(200, dict(fresh.stored.fields), fresh.length,
                                     revalidated=True))
                return
            await self._consume(flight, t, resp, request_time, response_time,
                                had_entry=entry is not None)
        return produce

    async def _consume(self, flight: Flight, t: Target, resp: UpstreamResponse,
                       request_time: float, response_time: float, *, had_entry: bool) -> None:
        """Relay a whole-object answer to the waiters and store it when allowed."""
        if resp.status != 200:
            await self._small_answer(flight, t, resp, (request_time, response_time),
                                     had_entry=had_entry)
            return
        length = resp.content_length
        flight.set_head(Head(200, resp.headers, length))
        reason = policy.not_storable_reason("GET", 200, t.request_headers, resp.headers)
        limit = max(self.config.cache_memory_bytes, self.config.cache_disk_bytes
                    if self.config.cache_dir else 0)
        storable = reason is None and (length is None or length <= limit)
        if not storable and t.kind != "playlist":
            flight.stop_retaining()  # relayed, never stored: hold a window, not the body
        obj = None
        writer: DiskWriter | None = None
        if storable and length is not None and length <= self.config.piece_bytes \
                and t.kind != "playlist":
            obj = self._object(t, resp.headers, request_time, response_time, length, b"")
            # streamed to disk as it arrives: a crash mid-body leaves only a temp file
            with contextlib.suppress(OSError):
                writer = await asyncio.to_thread(self.store.disk_writer, t.key, obj)
        total = 0
        try:
            async for chunk in self._body(resp):
                total += len(chunk)
                if length is not None and total > length:
                    raise self._truncated("body longer than its Content-Length")
                flight.append(chunk)
                if writer is not None:
                    await asyncio.to_thread(writer.write, chunk)
                if storable and total > limit:
                    storable = False
                    if t.kind != "playlist":
                        flight.stop_retaining()
                await flight.room()
            if length is not None and total != length:
                raise self._truncated("body shorter than its Content-Length")
        except BaseException:
            if writer is not None:
                await asyncio.to_thread(writer.abort)
            raise
        if not storable and t.kind != "playlist":
            # nothing to keep: no joined copy of a (possibly huge) body that is not stored
            if writer is not None:
                await asyncio.to_thread(writer.abort)
            return
        body = b"".join(flight.chunks)
        if t.kind == "playlist":
            text = body.decode("utf-8", "replace")
            if playlist.escapes_title(text, t.path, t.title):
                if writer is not None:
                    await asyncio.to_thread(writer.abort)
                raise self._invalid("playlist points outside its title")
            self.on_playlist(t, text)
        if not storable:
            if writer is not None:
                await asyncio.to_thread(writer.abort)
            return
        obj = self._object(t, resp.headers, request_time, response_time, total, body)
        disk_done = False
        if writer is not None:
            with contextlib.suppress(OSError):
                self.store._count(await asyncio.to_thread(writer.commit, obj.encode()), "disk")
                disk_done = True
        await self.store.store(t.key, obj, body, disk_done=disk_done)
        flight.result = (obj, None if obj.pieced else body)

    async def _small_answer(self, flight: Flight, t: Target, resp: UpstreamResponse,
                            times: tuple[float, float], *, had_entry: bool) -> None:
        """A non-200 answer (redirect, 404, 5xx, ...): relayed; stored like a 200 (RFC 9111 §3)
        when its freshness can be known (explicit, or the Last-Modified heuristic), else a
        404/5xx the upstream said nothing about is kept `negative_ttl` seconds (for non-HLS
        content only a heuristically cacheable status: a 5xx is never cached unasked there)."""
        body = bytearray()
        async for chunk in self._body(resp):
            body += chunk
            if len(body) > MAX_NEGATIVE_BODY * 16:
                raise self._invalid("error body too large")
        headers = {k: v for k, v in resp.headers.items() if k not in ("content-length",)}
        flight.set_head(Head(resp.status, headers, len(body)))
        flight.append(bytes(body))
        d = cache_directives(resp.headers)
        explicit = policy.has_explicit_expiration(d, resp.headers)
        if (resp.status not in (206, 304)
                and policy.storable("GET", resp.status, t.request_headers, resp.headers)
                and (explicit or "last-modified" in resp.headers)
                and not (had_entry and resp.status in policy.ERROR_STATUSES)):
            # (a 5xx never replaces a stored copy: that one may serve stale instead)
            obj = dataclasses.replace(self._object(t, headers, *times, len(body), b"",
                                                   status=resp.status), pieced=False)
            await self.store.store(t.key, obj, bytes(body))
            flight.result = (obj, bytes(body))
            return
        negative = resp.status == 404 or resp.status >= 500
        if t.kind == OTHER:
            negative = negative and resp.status in policy.HEURISTIC_STATUSES
        if (negative and self.config.negative_ttl > 0 and not had_entry and not d.has("no-store")
                and not d.has("private") and not d.has("no-cache") and not explicit
                and len(body) <= MAX_NEGATIVE_BODY):
            # never over a stored good copy (`had_entry`): that one serves stale instead
            self.store.put_negative(t.key, Negative(resp.status, headers, bytes(body),
                                                    self.clock() + self.config.negative_ttl))

    def _object(self, t: Target, headers: dict[str, str], request_time: float,
                response_time: float, length: int, body: bytes, *,
                status: int = 200) -> StoredObject:
        default_ttl: float | None = None
        cap = policy.DEFAULT_HEURISTIC_CAP
        if status != 200:
            pass  # the per-kind TTLs are for media and playlists, never for other answers
        elif t.kind == "segment":
            default_ttl = self.config.segment_ttl
        elif t.kind == "playlist":
            text = body.decode("utf-8", "replace")
            media_vod = playlist.kind(text) == "media" and playlist.is_vod(text)
            # RFC 8216 §6.2.2: a live playlist changes every target duration, so its
            # heuristic lifetime is capped too; a VOD media playlist never changes.
            default_ttl = self.config.segment_ttl if media_vod else self.config.playlist_ttl
            cap = policy.DEFAULT_HEURISTIC_CAP if media_vod else float(self.config.playlist_ttl)
        fields = {k: v for k, v in headers.items() if k not in _RANGE_FIELDS}
        fields["content-length"] = str(length)
        stored = policy.StoredResponse.from_response(
            status, fields, request_time=request_time, response_time=response_time,
            request_headers=t.request_headers, default_ttl=default_ttl, heuristic_cap=cap)
        return StoredObject(stored, length, length > self.config.piece_bytes, new_version(),
                            self.config.piece_bytes)

    def _piece(self, t: Target, obj: StoredObject, n: int) -> Producer:
        async def produce(flight: Flight) -> None:
            start, end = obj.piece_span(n)
            resp = await self.upstream.open("GET", t.upstream, t.path,
                                            self._headers(t, {"Range": f"bytes={start}-{end}"}))
            cr = parse_content_range(resp.headers.get("content-range", ""))
            etag = resp.headers.get("etag")
            if resp.status != 206 or cr != (start, end, obj.length) or (
                    etag and obj.stored.etag and etag != obj.stored.etag):
                resp.close()
                # the object changed upstream (or the parent is wrong): forget our head
                await self.store.purge(t.key)
                raise self._invalid(f"piece {n}: {resp.status} {cr}")
            flight.set_head(Head(206, resp.headers, end - start + 1))
            await self._read_exact(flight, resp, end - start + 1)
            await self.store.store_piece(t.key, obj, n, b"".join(flight.chunks))
        return produce

    def _first_piece(self, t: Target, n: int) -> Producer:
        async def produce(flight: Flight) -> None:
            start, end = n * self.config.piece_bytes, (n + 1) * self.config.piece_bytes - 1
            request_time = self.clock()
            resp = await self.upstream.open("GET", t.upstream, t.path,
                                            self._headers(t, {"Range": f"bytes={start}-{end}"}))
            response_time = self.clock()
            if resp.status != 206:
                await self._consume(flight, t, resp, request_time, response_time,
                                    had_entry=False)
                return
            cr = parse_content_range(resp.headers.get("content-range", ""))
            if cr is None or cr[2] is None or cr[0] != start or cr[1] != min(end, cr[2] - 1):
                resp.close()
                raise self._invalid(f"Content-Range {resp.headers.get('content-range')!r} "
                                    f"for bytes={start}-{end}")
            total = cr[2]
            flight.set_head(Head(206, resp.headers, cr[1] - start + 1))
            await self._read_exact(flight, resp, cr[1] - start + 1)
            body = b"".join(flight.chunks)
            if policy.not_storable_reason("GET", 206, t.request_headers, resp.headers):
                return  # flight.result stays None: the caller relays the client's own range
            whole = start == 0 and total == len(body)
            obj = self._object(t, resp.headers, request_time, response_time, total,
                               body if whole else b"")
            if t.kind == "playlist" and whole and playlist.escapes_title(
                    body.decode("utf-8", "replace"), t.path, t.title):
                raise self._invalid("playlist points outside its title")
            if whole:
                await self.store.store(t.key, obj, body)
                flight.result = (obj, None if obj.pieced else body)
                return
            obj = dataclasses.replace(obj, pieced=True)
            await self.store.store(t.key, obj, b"")
            await self.store.store_piece(t.key, obj, n, body)
            flight.result = (obj, None)
        return produce

    def _relay(self, t: Target, method: str, extra: dict[str, str]) -> Producer:
        async def produce(flight: Flight) -> None:
            resp = await self.upstream.open(method, t.upstream, t.path,
                                            self._headers(t, extra))
            flight.set_head(Head(resp.status, resp.headers, resp.content_length))
            if method == "HEAD":
                resp.close()
                return
            flight.stop_retaining()  # an uncached exchange: nothing of it is kept
            await self._read_exact(flight, resp, resp.content_length)
        return produce

    # -- body checks -----------------------------------------------------------------------

    async def _read_exact(self, flight: Flight, resp: UpstreamResponse,
                          length: int | None) -> None:
        total = 0
        async for chunk in self._body(resp):
            total += len(chunk)
            if length is not None and total > length:
                raise self._truncated("body longer than declared")
            flight.append(chunk)
            await flight.room()
        if length is not None and total != length:
            raise self._truncated("body shorter than declared")

    async def _body(self, resp: UpstreamResponse) -> AsyncIterator[bytes]:
        try:
            async for chunk in resp.chunks():
                yield chunk
        except UpstreamError as e:
            self.counters.upstream_requests[e.kind] += 1
            raise

    def _truncated(self, why: str) -> UpstreamError:
        self.counters.upstream_requests["truncated"] += 1
        return UpstreamError(why, kind="truncated")

    def _invalid(self, why: str) -> UpstreamError:
        self.counters.upstream_requests["invalid"] += 1
        return UpstreamError(why, kind="invalid")

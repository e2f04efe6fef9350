"""The edge's upstream fetches, each run once per key through the coalescer: a whole object
(conditional when revalidating), one piece of a big object, the first piece of an object whose
head is unknown, and plain pass-through requests (HEAD misses, answers that may not be stored).

Never a wrong byte (docs/ARCHITECTURE.md): every producer checks what it received before anything is
stored. A body shorter or longer than its Content-Length is "truncated"; a piece whose 206 is not
the range asked for, or whose strong ETag or complete length is not the stored object's, is
"invalid" and discards the stored object. Pieces are fetched separately (with If-Match) only for
an object with a strong validator; one without is fetched whole. Neither broken body is stored,
and the readers get the error, so their answers are cut short. A playlist that points outside its
title is refused and never stored. Storing follows policy (RFC 9111 §3).

A whole body at most one piece long (and every playlist) is kept whole by its flight and stored at
the end. A bigger one is stored piece by piece as it arrives, and its flight keeps only a window
(edge.coalescer), so a cold 2 GB object costs a window of memory, not its size.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Sequence

from edge360.config.schema import EdgeConfig
from edge360.core import policy, validation
from edge360.core.cachecontrol import cache_directives
from edge360.core.errors import UpstreamError
from edge360.core.kinds import OTHER
from edge360.core.ranges import parse_content_range
from edge360.core.storedfields import forwarded_request_fields
from edge360.edge.coalescer import Coalescer, Flight, Head, Producer
from edge360.edge.objects import Target, new_object
from edge360.edge.store import MAX_NEGATIVE_BODY, EdgeStore, Negative
from edge360.edge.stored import StoredObject
from edge360.edge.upstream import Upstream, UpstreamResponse
from edge360.hls import playlist
from edge360.http.response import Part
from edge360.node.counters import Counters

Entry = tuple[StoredObject, bytes | None]


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

    def whole(self, t: Target, entry: Entry | None = None) -> tuple[Flight, bool]:
        """GET the whole object (If-None-Match/If-Modified-Since from `entry` when given)."""
        return self.coalescer.join(t.key, self._whole(t, entry))

    def whole_alone(self, t: Target) -> Flight:
        """GET the whole object for a request the running flight can no longer serve."""
        return self.coalescer.start(t.key, self._whole(t, None))

    def relay_alone(self, t: Target, extra: dict[str, str]) -> Flight:
        """A GET relayed as is for a request the running flight can no longer serve."""
        return self.coalescer.start(f"GET\x00{t.key}\x00alone", self._relay(t, "GET", extra))

    def piece(self, t: Target, obj: StoredObject, n: int) -> tuple[Flight, bool]:
        """Piece n of a stored object with a strong validator (checked against it)."""
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

    async def stored_parts(self, t: Target, obj: StoredObject, pos: int) -> Sequence[Part]:
        """The stored bytes of `obj` from `pos` to the end of its piece: from memory or disk,
        else (evicted meanwhile) fetched again when the object has a strong validator."""
        n = pos // obj.piece_bytes
        data = await self.store.piece(t.key, obj, n)
        if data is None:
            if not obj.strong:
                raise UpstreamError("a piece was evicted before it was read", kind="abandoned")
            flight, _ = self.piece(t, obj, n)
            data = await flight.body()
        start = n * obj.piece_bytes
        if len(data) != obj.piece_span(n)[1] - start + 1:
            raise self._invalid(f"piece {n} has the wrong length")
        return (memoryview(data)[pos - start:],)

    # -- producers -------------------------------------------------------------------------

    def _whole(self, t: Target, entry: Entry | None) -> Producer:
        async def produce(flight: Flight) -> None:
            extra = validation.conditional_headers(entry[0].stored) if entry else {}
            request_time = self.clock()
            resp = await self.upstream.open("GET", t.upstream, t.path, self._headers(t, extra))
            response_time = self.clock()
            if resp.status == 304 and entry is not None:
                resp.close()
                obj, body = entry
                if not validation.validator_matches(obj.stored, resp.headers):
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
        """Relay a whole-object answer to the readers and store it when allowed."""
        if resp.status != 200:
            await self._small_answer(flight, t, resp, (request_time, response_time),
                                     had_entry=had_entry)
            return
        length = resp.content_length
        flight.set_head(Head(200, resp.headers, length))
        reason = policy.not_storable_reason("GET", 200, t.request_headers, resp.headers)
        limit = max(self.config.cache_memory_bytes,
                    self.config.cache_disk_bytes if self.config.cache_dir else 0)
        storable = reason is None and (length is None or length <= limit)
        if t.kind == "playlist":
            body = await self._read(flight, resp, length)
            await self._store_playlist(flight, t, resp, body, (request_time, response_time),
                                       storable)
            return
        if not storable:
            flight.window_only()  # relayed, never stored: hold a window, not the body
            await self._read(flight, resp, length)
            return
        obj = new_object(self.config, t, resp.headers, request_time, response_time,
                         length or 0, b"", pieced=True)
        pieces = _Pieces(self, t, flight, obj)
        if length is not None and length > obj.piece_bytes:
            pieces.begin()
        total = 0
        try:
            async for chunk in self._body(resp):
                total += len(chunk)
                if length is not None and total > length:
                    raise self._truncated("body longer than its Content-Length")
                flight.append(chunk)
                if pieces.storing:
                    if total > limit:  # a body of unknown length larger than any tier
                        pieces.give_up()
                    else:
                        await pieces.take(chunk)
                elif not pieces.started and total > obj.piece_bytes:
                    pieces.begin()  # a body of unknown length outgrew one piece
                    await pieces.take(b"")
                await flight.room()
            if length is not None and total != length:
                raise self._truncated("body shorter than its Content-Length")
        except BaseException:
            pieces.give_up()
            raise
        if pieces.started and not pieces.storing:
            return  # relayed, not stored
        if not pieces.started:  # small: stored whole
            body = b"".join(flight.chunks)
            obj = new_object(self.config, t, resp.headers, request_time, response_time,
                             total, body)
            await self.store.store(t.key, obj, body)
            flight.result = (obj, body)
            return
        flight.result = (await pieces.finish(total), None)

    async def _store_playlist(self, flight: Flight, t: Target, resp: UpstreamResponse,
                              body: bytes, times: tuple[float, float], storable: bool) -> None:
        text = body.decode("utf-8", "replace")
        if playlist.escapes_title(text, t.path, t.title):
            raise self._invalid("playlist points outside its title")
        self.on_playlist(t, text)
        obj = new_object(self.config, t, resp.headers, *times, len(body), body)
        if storable:
            await self.store.store(t.key, obj, body)
        flight.result = (obj, body)

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
            obj = new_object(self.config, t, headers, *times, len(body), bytes(body),
                             status=resp.status)
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
            now = self.clock()
            self.store.put_negative(t.key, Negative(resp.status, headers, bytes(body),
                                                    now + self.config.negative_ttl, now))

    def _piece(self, t: Target, obj: StoredObject, n: int) -> Producer:
        async def produce(flight: Flight) -> None:
            start, end = obj.piece_span(n)
            etag = obj.stored.etag
            if not obj.strong or etag is None:
                raise self._invalid("a piece of an object without a strong validator")
            resp = await self.upstream.open("GET", t.upstream, t.path, self._headers(
                t, {"Range": f"bytes={start}-{end}", "If-Match": etag}))
            cr = parse_content_range(resp.headers.get("content-range", ""))
            if resp.status != 206 or cr != (start, end, obj.length) or \
                    resp.headers.get("etag") != etag:
                resp.close()
                # the object changed upstream (or the parent is wrong): forget our head
                await self.store.purge(t.key)
                raise self._invalid(f"piece {n}: {resp.status} {cr} "
                                    f"{resp.headers.get('etag')!r} for {etag!r}")
            flight.set_head(Head(206, resp.headers, end - start + 1))
            body = await self._read(flight, resp, end - start + 1)
            await self.store.store_piece(t.key, obj, n, body)
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
            body = await self._read(flight, resp, cr[1] - start + 1)
            if policy.not_storable_reason("GET", 206, t.request_headers, resp.headers):
                return  # flight.result stays None: the caller relays the client's own range
            whole = start == 0 and total == len(body)
            obj = new_object(self.config, t, resp.headers, request_time, response_time, total,
                             body if whole else b"")
            if t.kind == "playlist" and whole and playlist.escapes_title(
                    body.decode("utf-8", "replace"), t.path, t.title):
                raise self._invalid("playlist points outside its title")
            if whole:
                await self.store.store(t.key, obj, body)
                flight.result = (obj, None if obj.pieced else body)
                return
            obj = dataclasses.replace(obj, pieced=True)
            if not obj.strong:
                return  # never assembled from pieces: the caller fetches it whole
            await self.store.store_piece(t.key, obj, n, body)
            await self.store.store(t.key, obj, b"")
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
            flight.window_only()  # an uncached exchange: nothing of it is kept
            await self._read(flight, resp, resp.content_length)
        return produce

    # -- body checks -----------------------------------------------------------------------

    async def _read(self, flight: Flight, resp: UpstreamResponse, length: int | None) -> bytes:
        """Read the body into the flight, exactly `length` bytes when given; the whole body
        when the flight keeps it (b"" for a window)."""
        total = 0
        async for chunk in self._body(resp):
            total += len(chunk)
            if length is not None and total > length:
                raise self._truncated("body longer than declared")
            flight.append(chunk)
            await flight.room()
        if length is not None and total != length:
            raise self._truncated("body shorter than declared")
        return b"".join(flight.chunks) if flight.keep_all else b""

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


class _Pieces:
    """A big body stored piece by piece as it arrives (see the module docstring)."""

    def __init__(self, fetcher: Fetcher, t: Target, flight: Flight, obj: StoredObject) -> None:
        self.fetcher, self.t, self.flight, self.obj = fetcher, t, flight, obj
        self.started = False
        self.storing = False
        self.done = 0  # pieces stored
        self._buf = bytearray()

    def begin(self) -> None:
        """From now on the flight keeps a window; what it let go is read from the pieces."""
        self.started = self.storing = True
        obj, t, fetcher = self.obj, self.t, self.fetcher

        async def fallback(pos: int) -> Sequence[Part]:
            return await fetcher.stored_parts(t, obj, pos)
        self._buf = bytearray(b"".join(self.flight.chunks))
        self.flight.window_only(fallback)

    async def take(self, chunk: bytes) -> None:
        if not self.storing:
            return
        self._buf += chunk
        pb = self.obj.piece_bytes
        while len(self._buf) >= pb:
            await self._store(bytes(self._buf[:pb]))
            del self._buf[:pb]

    async def _store(self, data: bytes) -> None:
        await self.fetcher.store.store_piece(self.t.key, self.obj, self.done, data)
        self.done += 1
        self.flight.stored_until(self.done * self.obj.piece_bytes)

    async def finish(self, total: int) -> StoredObject:
        """Store the last piece, then the head (only now may others find the object)."""
        if self._buf:
            await self._store(bytes(self._buf))
            self._buf.clear()
        stored = self.obj.stored
        headers = tuple((k, str(total) if k == "content-length" else v)
                        for k, v in stored.headers)
        obj = dataclasses.replace(self.obj, length=total,
                                  stored=dataclasses.replace(stored, headers=headers))
        await self.fetcher.store.store(self.t.key, obj, b"")
        self.flight.stored_until(total)
        return obj

    def give_up(self) -> None:
        """The body broke off, failed its checks or outgrew every tier: its pieces are never
        used, and from now on the flight is a relay (its readers hold the window)."""
        if self.storing:
            self.storing = False
            self.fetcher.store.drop_pieces(self.t.key, self.obj, self.done)
            self._buf.clear()
            self.flight.window_only()

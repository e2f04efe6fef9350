"""The edge's HTTP client to its parents: one keep-alive aiohttp session per process, parent choice
by rendezvous hashing of the object key, parent health from real traffic (edge.parenthealth) and
an optional active probe, bounded retries and bounded concurrency.

Every request carries `CDN-Loop: edge360` appended to any incoming value (RFC 8586 §2), a `Via`
entry naming this process by a random pseudonym (RFC 9110 §7.6.3; a request that comes back
carrying our own pseudonym is a forwarding loop, refused with 508 before it could join its own
in-flight fetch) and, when a peer token is configured, `Authorization: Bearer <token>` so the
parent treats us as a child cache (no session, playlists unrewritten). Viewer parameters never
get here: the caller builds the upstream target from the cache key. Counting happens here, once
per upstream exchange: `upstream_requests[code | "timeout" | "connect_error"]` and the time to
response headers.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass

import aiohttp

from edge360.config.schema import EdgeConfig
from edge360.core import hashing
from edge360.core.errors import UpstreamError, UpstreamTimeout
from edge360.edge.parenthealth import ParentHealth, is_failure
from edge360.node.counters import Counters

#: read size for upstream bodies; waiters are handed these chunks as they arrive
CHUNK = 64 * 1024
#: statuses after which an idempotent request is retried on the next parent
RETRY_STATUSES = frozenset({502, 503, 504})


@dataclass(slots=True)
class UpstreamResponse:
    """An upstream answer whose headers have arrived; the body is read with `chunks()`.

    `headers` has lower-cased names with repeated fields comma-joined (what `policy` expects);
    `location` keeps the raw Location for redirects passed to the client.
    """

    status: int
    headers: dict[str, str]
    parent: str
    _resp: aiohttp.ClientResponse
    _release: asyncio.Semaphore
    _released: bool = False

    @property
    def content_length(self) -> int | None:
        raw = self.headers.get("content-length")
        return int(raw) if raw is not None and raw.isdigit() else None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives. A body broken off (connection closed early, a read timeout)
        raises UpstreamError(kind="truncated"/"timeout")."""
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamTimeout("upstream body stalled") from None
        except (aiohttp.ClientError, ConnectionError) as e:
            raise UpstreamError(f"upstream body broke off: {e}", kind="truncated") from None
        finally:
            self.close()

    def close(self) -> None:
        if not self._released:
            self._released = True
            self._resp.close()
            self._release.release()


def fold(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Header pairs as one dict: lower-cased names, repeats comma-joined (RFC 9110 §5.3)."""
    out: dict[str, str] = {}
    for name, value in items:
        k = name.lower()
        out[k] = f"{out[k]}, {value}" if k in out else value
    return out


class Upstream:
    """Parents, their health, and the one client session (created in `start`, closed in `close`)."""

    def __init__(self, config: EdgeConfig, counters: Counters, *, peer_token: str = "") -> None:
        self.config = config
        self.counters = counters
        self.peer_token = peer_token
        #: our received-by name in Via: unique per process (workers included), never a hostname
        self.pseudonym = f"edge360-{secrets.token_hex(6)}"
        self.parents: tuple[str, ...] = tuple(config.upstreams)
        self.health = ParentHealth(self.parents, down_after=config.down_after,
                                   retry_every=config.health_interval)
        self._inflight = asyncio.Semaphore(config.max_upstream_inflight)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.config.max_upstream_inflight + 16,
                                         keepalive_timeout=30, enable_cleanup_closed=True)
        timeout = aiohttp.ClientTimeout(total=None, connect=self.config.connect_timeout,
                                        sock_read=self.config.read_timeout)
        # raw bytes are what we cache and pass on: never let the client decompress them
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout,
                                              auto_decompress=False, skip_auto_headers=(
                                                  "Accept-Encoding", "User-Agent"))

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "Upstream.start() was not awaited"
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def up(self) -> dict[str, bool]:
        """Each parent's health (edge360_parent_up)."""
        return self.health.up

    def set_parents(self, parents: tuple[str, ...]) -> None:
        """New parents (SIGHUP); health of known ones is kept."""
        self.parents = parents
        self.health.set_parents(parents)

    def ranked(self, key: str) -> list[str]:
        """Parents for `key` (the path without query or range): healthy ones first, a down
        parent that owns the key first when its trial is due (edge.parenthealth)."""
        return self.health.order(hashing.rank(key, self.parents), time.monotonic())

    def request_headers(self, incoming_loop: str | None,
                        extra: Mapping[str, str] | None = None, *,
                        via: str | None = None,
                        forward: Mapping[str, str] | None = None) -> dict[str, str]:
        """Headers for a request to a parent: `incoming_loop`/`via` are the client's CDN-Loop and
        Via, each extended with our own entry; `forward` the client's end-to-end fields
        (storedfields.forwarded_request_fields), under ours and `extra`."""
        own = f"1.1 {self.pseudonym}"
        headers = dict(forward or {})
        headers.update({"CDN-Loop": f"{incoming_loop}, edge360" if incoming_loop else "edge360",
                        "Via": f"{via}, {own}" if via else own,
                        "Accept-Encoding": "identity"})
        if self.peer_token:  # a parent sees the peer token, never a viewer's credentials
            headers.pop("authorization", None)
            headers["Authorization"] = f"Bearer {self.peer_token}"
        headers.update(extra or {})
        return headers

    async def open(self, method: str, target: str, hash_key: str,
                   headers: Mapping[str, str], *, body: bytes | None = None,
                   idempotent: bool = True) -> UpstreamResponse:
        """Send one request (retried on the next parent for connect errors, timeouts and
        502/503/504 while idempotent) and return once its headers arrived.
        Raises UpstreamError / UpstreamTimeout when no parent gave an answer."""
        assert self._session is not None, "Upstream.start() was not awaited"
        ranked = self.ranked(hash_key) or ["http://invalid.invalid"]
        attempts = 1 + (self.config.retries if idempotent else 0)
        last: UpstreamError | None = None
        for attempt in range(attempts):
            parent = ranked[attempt % len(ranked)]
            await self._inflight.acquire()
            started = time.monotonic()
            try:
                resp = await self._session.request(method, parent + target, headers=headers,
                                                   data=body, allow_redirects=False)
            except (TimeoutError, aiohttp.ServerTimeoutError):
                self._inflight.release()
                self.counters.upstream_requests["timeout"] += 1
                self.health.failed(parent, time.monotonic())
                last = UpstreamTimeout(f"{parent}: no answer in time")
                continue
            except (aiohttp.ClientError, OSError) as e:
                self._inflight.release()
                self.counters.upstream_requests["connect_error"] += 1
                self.health.failed(parent, time.monotonic())
                last = UpstreamError(f"{parent}: {e}", kind="connect_error")
                continue
            except BaseException:
                self._inflight.release()
                raise
            self.counters.upstream_latency.observe(time.monotonic() - started)
            self.counters.upstream_requests[str(resp.status)] += 1
            if is_failure(resp.status, resp.headers):
                self.health.failed(parent, time.monotonic())
            else:
                self.health.succeeded(parent)
            answer = UpstreamResponse(resp.status, fold(resp.headers.items()), parent,
                                      resp, self._inflight)
            if resp.status in RETRY_STATUSES and attempt + 1 < attempts:
                answer.close()
                continue
            return answer
        assert last is not None or attempts == 0
        raise last if last is not None else UpstreamError("no upstream configured")

    async def check_health(self) -> None:
        """The optional active probe (edge.health_path, off by default): GET the path on every
        parent; one is up while it answers one of edge.health_statuses (another edge360's
        /healthz answers 503 while it drains: on its way out, skipped). Off, health comes from
        real traffic alone, so a parent without such an endpoint is never reported down."""
        path = self.config.health_path
        if self._session is None or not path:
            return
        statuses = frozenset(self.config.health_statuses)

        async def probe(parent: str) -> None:
            assert self._session is not None
            try:
                async with self._session.get(
                        parent + path, headers=self.request_headers(None),
                        allow_redirects=False,
                        timeout=aiohttp.ClientTimeout(total=self.config.connect_timeout
                                                      + self.config.read_timeout)) as r:
                    await r.read()
                    ok = r.status in statuses
            except (TimeoutError, aiohttp.ClientError, OSError):
                ok = False
            self.health.probed(parent, ok, time.monotonic())
        await asyncio.gather(*(probe(p) for p in self.parents))


async def post_json(session: aiohttp.ClientSession, url: str, body: bytes,
                    headers: Mapping[str, str], *, seconds: float,
                    limit: int = 64 * 1024) -> tuple[int, bytes]:
    """POST a JSON body (an admin action forwarded to a child node); (status, at most `limit`
    bytes of the answer). Raises UpstreamError/UpstreamTimeout when no answer came."""
    try:
        async with session.post(url, data=body, headers={**headers,
                                "Content-Type": "application/json"}, allow_redirects=False,
                                timeout=aiohttp.ClientTimeout(total=seconds)) as r:
            return r.status, await r.content.read(limit)
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise UpstreamTimeout(f"{url}: no answer in {seconds:g} s") from None
    except (aiohttp.ClientError, OSError) as e:
        raise UpstreamError(f"{url}: {e}", kind="connect_error") from None

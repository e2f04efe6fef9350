"""The upstream client against real loopback servers: loop and peer headers, retries on another
parent, health checks that take a failing parent out only while it fails, counting."""

from __future__ import annotations

import socket

import pytest
from aiohttp import web

from edge360.config.schema import EdgeConfig
from edge360.core.errors import UpstreamError
from edge360.edge.upstream import Upstream
from edge360.node.counters import Counters
from tests.edgekit import fake_upstream


def dead_url() -> str:
    """A loopback URL nobody listens on (the port was just free)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def ok(request: web.Request) -> web.StreamResponse:
    return web.Response(body=b"hello", headers={"ETag": '"1"'})


async def test_headers_loop_and_peer_token() -> None:
    async with fake_upstream(ok) as (url, fake):
        up = Upstream(EdgeConfig(upstreams=(url,)), Counters(), peer_token="s3cret")
        await up.start()
        try:
            resp = await up.open("GET", "/a/b.ts", "/a/b.ts", up.request_headers("other-cdn"))
            body = b"".join([c async for c in resp.chunks()])
        finally:
            await up.close()
    assert (resp.status, body, resp.headers["etag"]) == (200, b"hello", '"1"')
    _, path, headers = fake.seen[0]
    assert path == "/a/b.ts"
    assert headers["CDN-Loop"] == "other-cdn, edge360"
    assert headers["Authorization"] == "Bearer s3cret"
    assert up.counters.upstream_requests["200"] == 1
    assert sum(up.counters.upstream_latency.counts) == 1


async def test_retry_on_another_parent_and_health() -> None:
    dead = dead_url()
    async with fake_upstream(ok) as (url, _fake):
        counters = Counters()
        up = Upstream(EdgeConfig(upstreams=(dead, url), retries=1), counters)
        await up.start()
        try:
            # whichever parent a key hashes to, every request gets an answer
            for i in range(12):
                resp = await up.open("GET", f"/t/{i}.ts", f"/t/{i}.ts", up.request_headers(None))
                assert resp.status == 200
                resp.close()
            assert counters.upstream_requests["connect_error"] >= 1
            await up.check_health()
            assert up.up == {dead: False, url: True}
            assert all(up.ranked(f"/t/{i}.ts")[0] == url for i in range(12))
        finally:
            await up.close()
    # the live parent now gone too: the dead one is tried again (skipped only while failing)
    await up.start()
    try:
        await up.check_health()
        assert up.up == {dead: False, url: False}
        with pytest.raises(UpstreamError) as e:
            await up.open("GET", "/t/0.ts", "/t/0.ts", up.request_headers(None))
        assert e.value.kind == "connect_error" and e.value.status == 502
    finally:
        await up.close()


async def test_no_retry_for_unsafe_methods() -> None:
    calls = 0

    async def flaky(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        return web.Response(status=503)
    async with fake_upstream(flaky) as (url, _fake):
        up = Upstream(EdgeConfig(upstreams=(url,), retries=2), Counters())
        await up.start()
        try:
            r = await up.open("POST", "/x", "/x", up.request_headers(None), body=b"{}",
                              idempotent=False)
            r.close()
            assert (r.status, calls) == (503, 1)
            r = await up.open("GET", "/x", "/x", up.request_headers(None))
            r.close()
            assert (r.status, calls) == (503, 4)  # 1 + 2 retries
        finally:
            await up.close()

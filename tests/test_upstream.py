"""The upstream client against real loopback servers: loop and peer headers, retries on another
parent, parent health from real traffic (a failing parent out only while it fails, a trial that
brings it back) and the optional probe with its own path and statuses, counting."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp import web

from edge360.config.schema import EdgeConfig
from edge360.core.errors import UpstreamError
from edge360.edge.parenthealth import ParentHealth, is_failure
from edge360.edge.upstream import Upstream
from edge360.node.counters import Counters
from tests.fixtures.edges import fake_upstream


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


async def test_retry_on_another_parent_and_health_from_traffic() -> None:
    dead = dead_url()
    async with fake_upstream(ok) as (url, _fake):
        counters = Counters()
        up = Upstream(EdgeConfig(upstreams=(dead, url), retries=1, down_after=2,
                                 health_interval=3600), counters)
        await up.start()
        try:
            # whichever parent a key hashes to, every request gets an answer
            for i in range(12):
                resp = await up.open("GET", f"/t/{i}.ts", f"/t/{i}.ts", up.request_headers(None))
                assert resp.status == 200
                resp.close()
            # two connect errors in a row took the dead parent out; no probe was needed
            assert 2 <= counters.upstream_requests["connect_error"] <= 3
            assert up.up == {dead: False, url: True}
            assert all(up.ranked(f"/t/{i}.ts")[0] == url for i in range(12))
            await up.check_health()  # no edge.health_path: the probe is off
            assert up.up == {dead: False, url: True}
        finally:
            await up.close()
    # the live parent now gone too: both are tried (a parent is skipped only while it fails)
    await up.start()
    try:
        for _ in range(2):
            with pytest.raises(UpstreamError) as e:
                await up.open("GET", "/t/0.ts", "/t/0.ts", up.request_headers(None))
            assert e.value.kind == "connect_error" and e.value.status == 502
        assert up.up == {dead: False, url: False}
    finally:
        await up.close()


async def test_a_parent_that_answers_is_up_whatever_it_answers() -> None:
    """404 (nginx, S3, http.server have no /healthz), 304, and a 503 with Retry-After (load
    shedding) never count against a parent; a 5xx does."""
    status = {"code": 404, "retry_after": False}

    async def answer(request: web.Request) -> web.StreamResponse:
        headers = {"Retry-After": "1"} if status["retry_after"] else {}
        return web.Response(status=int(status["code"]), headers=headers)
    async with fake_upstream(answer) as (url, _fake):
        up = Upstream(EdgeConfig(upstreams=(url,), retries=0, down_after=3), Counters())
        await up.start()
        try:
            async def ask(n: int) -> None:
                for _ in range(n):
                    (await up.open("GET", "/x", "/x", up.request_headers(None))).close()
            await ask(5)
            status.update(code=503, retry_after=True)
            await ask(5)
            assert up.up == {url: True}
            status.update(code=500, retry_after=False)
            await ask(2)
            assert up.up == {url: True}  # two in a row: not yet
            await ask(1)
            assert up.up == {url: False}
            status.update(code=200)
            await ask(1)  # the only parent is still asked, and its answer brings it back
            assert up.up == {url: True}
        finally:
            await up.close()


async def test_a_down_parent_gets_a_trial_and_comes_back() -> None:
    state = {"broken": True}

    async def flaky(request: web.Request) -> web.StreamResponse:
        return web.Response(status=502 if state["broken"] else 200, body=b"x")
    async with fake_upstream(ok) as (good, _g), fake_upstream(flaky) as (bad, fake):
        up = Upstream(EdgeConfig(upstreams=(good, bad), retries=1, down_after=1,
                                 health_interval=0.2), Counters())
        await up.start()
        try:
            keys = [f"/t/{i}.ts" for i in range(40)]
            owned = [k for k in keys if up.ranked(k)[0] == bad]
            assert owned
            resp = await up.open("GET", owned[0], owned[0], up.request_headers(None))
            assert resp.status == 200  # retried on the good parent
            resp.close()
            assert up.up == {good: True, bad: False}
            state["broken"] = False
            before = len(fake.seen)
            for _ in range(50):  # within a few health intervals a trial request reaches it
                resp = await up.open("GET", owned[0], owned[0], up.request_headers(None))
                resp.close()
                if up.up[bad]:
                    break
                await asyncio.sleep(0.05)
            assert up.up == {good: True, bad: True}
            assert len(fake.seen) == before + 1  # exactly one trial, which succeeded
        finally:
            await up.close()


async def test_the_optional_probe_uses_its_path_and_statuses() -> None:
    async def pong(request: web.Request) -> web.StreamResponse:
        return web.Response(status=204 if request.path == "/ping" else 404)
    async with fake_upstream(pong) as (url, _fake):
        for path, statuses, expected in (("/ping", (204,), True), ("/ping", (200,), False),
                                         ("/nope", (200,), False), ("/nope", (404,), True)):
            up = Upstream(EdgeConfig(upstreams=(url,), health_path=path,
                                     health_statuses=statuses), Counters())
            await up.start()
            try:
                await up.check_health()
                assert up.up == {url: expected}, (path, statuses)
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


@pytest.mark.parametrize(("status", "headers", "failure"), [
    (200, {}, False), (404, {}, False), (304, {}, False), (429, {}, False),
    (500, {}, True), (502, {}, True), (504, {}, True), (503, {}, True),
    (503, {"Retry-After": "5"}, False),  # load shedding: alive and answering
])
def test_which_answers_count_against_a_parent(status: int, headers: dict[str, str],
                                              failure: bool) -> None:
    assert is_failure(status, headers) is failure


def test_order_puts_a_down_owner_first_once_per_retry_interval() -> None:
    h = ParentHealth(["a", "b", "c"], down_after=1, retry_every=10.0)
    h.failed("a", 100.0)
    assert h.up == {"a": False, "b": True, "c": True}
    assert h.order(["a", "b", "c"], 105.0) == ["b", "c", "a"]
    assert h.order(["b", "a", "c"], 111.0) == ["b", "c", "a"]  # a owns no key here: no trial
    assert h.order(["a", "c", "b"], 111.0) == ["a", "c", "b"]  # its trial
    assert h.order(["a", "c", "b"], 112.0) == ["c", "b", "a"]  # one per interval
    h.succeeded("a")
    assert h.order(["a", "c", "b"], 112.0) == ["a", "c", "b"]
    h.set_parents(["a", "d"])
    assert h.up == {"a": True, "d": True}

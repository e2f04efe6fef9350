"""Signed URLs enforced end to end on a real origin (auth.required), key rotation on SIGHUP, and
access logs that never carry a token or an Authorization value."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from urllib.parse import urljoin

import aiohttp
import pytest

from edge360.security import tokens as auth
from tests.fixtures.servers import guarded_server, start_process
from tests.test_limits import origin_config

KEYS = "k1:first-secret-0123456789,k0:older-secret-9876543210"
REQUIRED = {"EDGE360_AUTH_REQUIRED": "true", "EDGE360_AUTH_KEYS": KEYS}


def token(*, scope: str = "/tiny/", ttl: int = 300, keys: str = KEYS, kid: str | None = None,
          sid: str | None = None) -> str:
    return auth.sign(auth.parse_keys(keys), scope=scope, expires=int(time.time()) + ttl, kid=kid,
                     sid=sid)


def tampered() -> str:
    fields = token().split(".")
    fields[2] = str(int(fields[2]) + 3600)  # a longer life than was signed
    return ".".join(fields)


BAD_TOKENS = {
    "none": None,
    "expired": token(ttl=-10),
    "tampered": tampered(),
    "wrong_scope": token(scope="/other/"),
    "unknown_kid": token(keys="zz:some-secret-value-here"),
    "garbage": "v1.k1.1.AA.x.y",
    "other_sid": token(sid="someone-elses-sid"),
}


@pytest.mark.parametrize("name", list(BAD_TOKENS))
async def test_refused_tokens_get_a_bare_403(tiny_media: Path, name: str) -> None:
    cfg = origin_config(tiny_media, env=REQUIRED)
    bad = BAD_TOKENS[name]
    query = {} if bad is None else {"token": bad}
    async with guarded_server(cfg) as srv, aiohttp.ClientSession() as http:
        for path in ("/tiny/master.m3u8", "/tiny/v0/seg_000.ts"):
            async with http.get(srv.base + path, params=query) as r:
                assert r.status == 403
                assert await r.json() == {"error": "forbidden"}  # no hint which check failed
        assert srv.node.tracker.views == 0  # a refusal opens no session
        for free in ("/healthz", "/metrics", "/api/stats"):
            async with http.get(srv.base + free) as r:
                assert r.status == 200


async def test_signed_master_plays_through(tiny_media: Path) -> None:
    cfg = origin_config(tiny_media, env=REQUIRED)
    async with guarded_server(cfg) as srv, aiohttp.ClientSession() as http:
        url = f"{srv.base}/tiny/master.m3u8?token={token()}"
        fetched = 0
        for _ in range(2):  # master -> media playlist, each URI exactly as written
            async with http.get(url) as r:
                assert r.status == 200, url
                lines = [ln for ln in (await r.text()).splitlines()
                         if ln and not ln.startswith("#")]
            assert all("token=" in ln for ln in lines)
            url = urljoin(url, lines[0])
            fetched += 1
        async with http.get(url) as r:  # the first segment
            assert r.status == 200
            assert await r.read() == (tiny_media / "tiny/v0/seg_000.ts").read_bytes()
        # the same URI without its token is refused
        async with http.get(url.split("?")[0]) as r:
            assert r.status == 403
        assert fetched == 2


async def test_access_log_never_carries_tokens_or_authorization(
        tiny_media: Path, capfd: pytest.CaptureFixture[str]) -> None:
    cfg = origin_config(tiny_media, {"server.access_log": True}, env=REQUIRED)
    good, secret_bearer = token(), "Bearer very-secret-admin-value"
    async with guarded_server(cfg) as srv, aiohttp.ClientSession() as http:
        for q in (f"token={good}", f"%74oken={good}", "token=forged-token-value&sid=abcdefgh12"):
            async with http.get(f"{srv.base}/tiny/master.m3u8?{q}",
                                headers={"Authorization": secret_bearer}) as r:
                await r.read()
    err = capfd.readouterr().err  # the log writes to file descriptor 2 from its own thread
    assert err.count('"path":"/tiny/master.m3u8"') == 3
    for secret in (good, good.rsplit(".", 1)[1], "forged-token-value", "very-secret-admin-value"):
        assert secret not in err


def test_keys_file_is_reread_on_sighup(tiny_media: Path, tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("old:old-secret-abcdefghijkl\n")
    sp = start_process(["serve", "--role", "origin", "--media", str(tiny_media), "--port", "0"],
                       env={"EDGE360_AUTH_REQUIRED": "true",
                            "EDGE360_AUTH_KEYS_FILE": str(keys_file)})
    try:
        import urllib.error
        import urllib.request

        def status(tok: str) -> int:
            try:
                with urllib.request.urlopen(f"{sp.base}/tiny/v0/seg_000.ts?token={tok}",
                                            timeout=10) as r:
                    return int(r.status)
            except urllib.error.HTTPError as e:
                return e.code

        old = token(keys="old:old-secret-abcdefghijkl")
        new = token(keys="new:new-secret-mnopqrstuvwx")
        assert (status(old), status(new)) == (200, 403)
        keys_file.write_text("# rotated\nnew:new-secret-mnopqrstuvwx\n")
        os.kill(sp.proc.pid, signal.SIGHUP)
        for _ in range(200):  # the reload runs as a task; wait for it, bounded
            if status(new) == 200:
                break
            time.sleep(0.05)
        assert (status(old), status(new)) == (403, 200)
    finally:
        assert sp.stop() == 0
    assert "reloaded: 1 auth keys" in sp.stderr

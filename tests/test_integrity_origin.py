"""Never a wrong byte at the origin, with a real process and real files: a file replaced in place,
by a shorter or a longer one, is answered as its new version with headers that match its body; a
file rewritten while it is being sent cuts that answer; a file still being written answers 503
until it settles, and its title is reported as settling."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from pathlib import Path

import aiohttp
import orjson
import pytest
from multidict import CIMultiDict

from tests.fixtures.servers import ServerProcess, start_process
from tests.fixtures.titles import add_files, publish

SEG = Path("tiny") / "v0" / "big.ts"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rewrite_in_place(path: Path, data: bytes) -> None:
    """Write `data` over the file (same inode), then cut it to that length."""
    with open(path, "r+b") as fh:
        fh.write(data)
        fh.truncate(len(data))


async def get(base: str, path: str) -> tuple[int, CIMultiDict[str], bytes]:
    async with aiohttp.ClientSession() as s, s.get(base + path) as r:
        return r.status, CIMultiDict(r.headers), await r.read()


@pytest.fixture
def origin(tiny_media: Path) -> ServerProcess:
    add_files(tiny_media / "tiny", {"v0/big.ts": os.urandom(600_000)})  # beyond memory: a file
    sp = start_process(["serve", "--port", "0", "--media", str(tiny_media)],
                       {"EDGE360_ORIGIN_RESCAN_INTERVAL": "0.2",
                        "EDGE360_ORIGIN_SETTLE_SECONDS": "1"})
    yield sp  # type: ignore[misc]
    assert sp.stop() == 0
    assert "Traceback" not in sp.stderr, sp.stderr[-2000:]


@pytest.mark.parametrize("size", [600_000, 300_000, 900_000], ids=["in-place", "shorter",
                                                                   "longer"])
async def test_a_replaced_file_is_answered_as_its_new_version(
        origin: ServerProcess, tiny_media: Path, size: int) -> None:
    path = tiny_media / SEG
    old = path.read_bytes()
    st, h, body = await get(origin.base, "/" + SEG.as_posix())
    assert (st, body) == (200, old) and int(h["Content-Length"]) == len(old)
    new = os.urandom(size)
    await asyncio.to_thread(rewrite_in_place, path, new)
    publish(path)  # long settled: only the version may differ
    for _ in range(60):  # bounded: a file that grew since the last look settles first (503)
        st, h2, body = await get(origin.base, "/" + SEG.as_posix())
        if st != 503:
            break
        assert size > len(old) and h2["Cache-Control"] == "no-store"
        await asyncio.sleep(0.1)
    assert st == 200
    assert sha(body) == sha(new) and int(h2["Content-Length"]) == len(new) == size
    assert h2["ETag"] != h["ETag"] and h2["Last-Modified"]
    # a range of the new version, and a precondition on the old ETag fails
    async with aiohttp.ClientSession() as s:
        async with s.get(origin.base + "/" + SEG.as_posix(),
                         headers={"Range": "bytes=-100"}) as r:
            assert r.status == 206 and await r.read() == new[-100:]
        async with s.get(origin.base + "/" + SEG.as_posix(),
                         headers={"If-Match": h["ETag"]}) as r:
            assert r.status == 412


async def test_a_file_rewritten_while_it_is_sent_cuts_that_answer(
        origin: ServerProcess, tiny_media: Path) -> None:
    """The body's last bytes wait until the file proved unchanged: a client never receives a
    complete body that mixes two versions."""
    path = tiny_media / SEG
    versions = [os.urandom(8 * 1024 * 1024)]
    path.write_bytes(versions[0])
    publish(path)
    # the catalog learns the new size at its next rescan (0.2 s); the answer's own fstat is
    # what counts anyway
    await asyncio.sleep(0.5)
    host, port = origin.base.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.connect((host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(f"GET /{SEG.as_posix()} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                 .encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    body = await reader.read(64 * 1024)
    versions.append(os.urandom(len(versions[0])))
    await asyncio.to_thread(rewrite_in_place, path, versions[1])  # the answer is on its way
    received = bytearray(body)
    for _ in range(10_000):  # bounded
        chunk = await reader.read(256 * 1024)
        if not chunk:
            break
        received += chunk
    writer.close()
    # either the connection was cut short, or (had everything been read before the rewrite)
    # the body is one whole version: never a complete body that mixes them
    if len(received) == length:
        assert sha(bytes(received)) in {sha(v) for v in versions}
    else:
        assert len(received) < length


async def test_a_title_still_arriving_answers_503_until_it_settles(
        origin: ServerProcess, tiny_media: Path) -> None:
    """A title copied in during a rescan: its fresh files answer 503 with Retry-After and
    no-store (never a half body marked immutable), /api/titles lists it as settling, and once
    settled it is served whole."""
    src = tiny_media / "tiny"
    dst = tiny_media / "copied"
    dst.mkdir()
    for rel in ("master.m3u8", "v0/index.m3u8", "v0/seg_000.ts", "v0/seg_001.ts",
                "v0/seg_002.ts"):
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        (dst / rel).write_bytes((src / rel).read_bytes())  # mtime: now
    seen: list[int] = []
    settling_seen = False
    async with aiohttp.ClientSession() as s:
        for _ in range(100):  # bounded: the title appears at a rescan, then settles
            async with s.get(origin.base + "/copied/v0/seg_000.ts") as r:
                body = await r.read()
                seen.append(r.status)
                if r.status == 503:
                    assert r.headers["Cache-Control"] == "no-store"
                    assert int(r.headers["Retry-After"]) >= 1
                    async with s.get(origin.base + "/api/titles") as t:
                        settling_seen |= "copied" in orjson.loads(await t.read())["settling"]
                if r.status == 200:
                    assert body == (src / "v0" / "seg_000.ts").read_bytes()
                    break
            await asyncio.sleep(0.1)
    assert 503 in seen and seen[-1] == 200, seen
    assert settling_seen

"""Hostile input against a real `edge360 serve` origin: tables of known attacks and Hypothesis-made
request lines, header values and Range values, sent over raw sockets.

Every answer must be a well-formed HTTP refusal or a correct answer: never a 500, never a
traceback, never a byte from outside the media root, and a well-behaved client must still get the
right bytes afterwards.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.servers import ServerProcess, start_process

SEGMENT = "/tiny/v0/seg_000.ts"


@pytest.fixture(scope="module")
def origin(tiny_master: Path) -> Iterator[tuple[ServerProcess, Path]]:
    sp = start_process(["serve", "--role", "origin", "--media", str(tiny_master), "--port", "0"],
                       env={"EDGE360_LIMITS_HEADER_TIMEOUT": "2"})
    try:
        yield sp, tiny_master
    finally:
        assert sp.stop() == 0
        assert "Traceback" not in sp.stderr, sp.stderr[-3000:]


def port_of(sp: ServerProcess) -> int:
    return int(sp.base.rsplit(":", 1)[1])


def exchange(port: int, raw: bytes, limit: float = 10.0) -> bytes:
    """Send `raw` and read until the server closes or one whole response has come (bounded).

    The client never half-closes: aiohttp takes a FIN as the end of the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as s:
        with contextlib.suppress(OSError):
            s.sendall(raw)
        out = bytearray()
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while len(out) < 4 << 20 and not _complete(out):
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
    return bytes(out)


def _complete(data: bytearray) -> bool:
    head, sep, body = bytes(data).partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return len(body) >= int(value)
    return False  # no length: the server closes when done


def statuses(answer: bytes) -> list[int]:
    """The status code of every response in `answer` (pipelined ones included)."""
    codes = []
    for line in answer.split(b"\r\n"):
        if line.startswith(b"HTTP/") and len(line) >= 12 and line[9:12].isdigit():
            codes.append(int(line[9:12]))
    return codes


def assert_harmless(answer: bytes) -> list[int]:
    codes = statuses(answer)
    assert codes, answer[:300]
    assert all(c < 500 or c in (501, 503, 505) for c in codes), answer[:300]
    assert b"Traceback" not in answer and b"root:x:" not in answer, answer[:300]
    return codes


def assert_still_serves(sp: ServerProcess, media: Path) -> None:
    answer = exchange(port_of(sp), f"GET {SEGMENT} HTTP/1.1\r\nHost: t\r\n"
                                   "Connection: close\r\n\r\n".encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert body == (media / SEGMENT.lstrip("/")).read_bytes()


TRAVERSALS = [
    "/../../../../etc/passwd", "/tiny/../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
    "/tiny/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/tiny/..%2f..%2f..%2fetc/passwd",
    "/%252e%252e/%252e%252e/etc/passwd", "/tiny/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
    "/tiny/..%5c..%5c..%5cetc%5cpasswd", "/tiny/..\\..\\etc\\passwd", "//etc/passwd",
    "/tiny/master.m3u8%00.ts", "/tiny/v0/seg_000.ts%00", "/tiny/%00/../master.m3u8",
    "/tiny/v0/./../../tiny/master.m3u8/..", "/%2fetc%2fpasswd", "/tiny/\u2025/etc/passwd",
    "/" + "a/" * 3000 + "x.ts", "/tiny/" + "%2e" * 2000,
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_in_every_encoding_is_refused(origin: tuple[ServerProcess, Path],
                                                path: str) -> None:
    sp, _ = origin
    raw = f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
    codes = assert_harmless(exchange(port_of(sp), raw))
    assert codes[0] in (400, 403, 404, 414, 431), codes


RAW_REQUESTS = [
    # NUL and control bytes in header values and names
    b"GET /tiny/master.m3u8 HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n",
    b"GET /tiny/master.m3u8 HTTP/1.1\r\nHost: t\r\nX\x00A: b\r\n\r\n",
    b"GET /tiny/master.m3u8\x00 HTTP/1.1\r\nHost: t\r\n\r\n",
    # request smuggling: conflicting framing
    b"POST /tiny/master.m3u8 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /tiny/master.m3u8 HTTP/1.1\r\nHost: t\r\n\r\n",
    b"POST /tiny/master.m3u8 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n"
    b"\r\nhello!",
    b"POST /tiny/master.m3u8 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
    b"0\r\n\r\n",
    b"POST /tiny/master.m3u8 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    b"POST /tiny/master.m3u8 HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
    b"POST /tiny/master.m3u8 HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999\r\n\r\n",
    # methods
    b"FOO /tiny/master.m3u8 HTTP/1.1\r\nHost: t\r\n\r\n",
    b"TRACE /tiny/master.m3u8 HTTP/1.1\r\nHost: t\r\n\r\n",
    b"PROPFIND /tiny/ HTTP/1.1\r\nHost: t\r\n\r\n",
    b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"DELETE /tiny/master.m3u8 HTTP/1.1\r\nHost: t\r\n\r\n",
    b"G\xc3\x89T /tiny/master.m3u8 HTTP/1.1\r\nHost: t\r\n\r\n",
    # versions and framing
    b"GET /tiny/master.m3u8 HTTP/9.9\r\nHost: t\r\n\r\n",
    b"GET /tiny/master.m3u8\r\n\r\n",
    b"GET /tiny/master.m3u8 HTTP/1.1\nHost: t\n\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
    b"GET /tiny/master.m3u8 HTTP/1.1\r\nHost: t\r\n folded: value\r\n\r\n",
    b"GET /tiny/master.m3u8 HTTP/1.1\r\n" + b"X-H: v\r\n" * 500 + b"\r\n",
    b"GET /tiny/master.m3u8 HTTP/1.1\r\nHost: t\r\nX-Long: " + b"v" * 70000 + b"\r\n\r\n",
]


@pytest.mark.parametrize("raw", RAW_REQUESTS, ids=range(len(RAW_REQUESTS)))
def test_malformed_requests_are_refused_cleanly(origin: tuple[ServerProcess, Path],
                                                raw: bytes) -> None:
    sp, media = origin
    assert_harmless(exchange(port_of(sp), raw))
    assert_still_serves(sp, media)


RANGES = [
    "bytes=abc", "bytes=", "bytes=-", "bytes=--1", "bytes=5-1", "bytes=-0", "items=0-1",
    "bytes=0-18446744073709551616", "bytes=9223372036854775808-",
    "bytes=99999999999999999999999999999999-", "bytes=-99999999999999999999999999",
    "bytes=0-0," * 2000 + "0-0", "bytes=1-2,3-4,5-6,7-8,9-10,11-12,13-14,15-16,17-18,19-20",
    "bytes=0x10-0x20", "bytes=\u0661-\u0662", "bytes= 0 - 1 ", "bytes=0-1;q=1", "bytes=1e3-",
]


@pytest.mark.parametrize("value", RANGES)
def test_garbage_ranges_never_fail_the_server(origin: tuple[ServerProcess, Path],
                                              value: str) -> None:
    sp, _ = origin
    raw = (f"GET {SEGMENT} HTTP/1.1\r\nHost: t\r\nRange: {value}\r\n"
           "Connection: close\r\n\r\n").encode()
    codes = assert_harmless(exchange(port_of(sp), raw))
    assert codes[0] in (200, 206, 400, 416, 431), codes


_HYP = settings(max_examples=80, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
_TARGET = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=80)


@_HYP
@given(method=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1,
                      max_size=12),
       target=_TARGET, version=st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2", "HTTP/1.1x"]))
def test_generated_request_lines(origin: tuple[ServerProcess, Path], method: str, target: str,
                                 version: str) -> None:
    sp, _ = origin
    raw = f"{method} /{target} {version}\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
    assert_harmless(exchange(port_of(sp), raw))


@_HYP
@given(name=st.sampled_from(["Range", "If-Range", "If-None-Match", "If-Modified-Since",
                             "Accept-Encoding", "X-Forwarded-For", "Forwarded", "CMCD-Session",
                             "CDN-Loop", "Authorization", "User-Agent"]),
       value=st.binary(max_size=200).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")))
def test_generated_header_values(origin: tuple[ServerProcess, Path], name: str,
                                 value: bytes) -> None:
    sp, _ = origin
    raw = (f"GET {SEGMENT}?sid=abcdefgh1234 HTTP/1.1\r\nHost: t\r\n{name}: ".encode() + value
           + b"\r\nConnection: close\r\n\r\n")
    assert_harmless(exchange(port_of(sp), raw))


@_HYP
@given(spec=st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 2**80)),
                               st.one_of(st.none(), st.integers(0, 2**80))),
                     min_size=1, max_size=20))
def test_generated_range_values(origin: tuple[ServerProcess, Path],
                                spec: list[tuple[int | None, int | None]]) -> None:
    sp, media = origin
    value = "bytes=" + ",".join(f"{'' if a is None else a}-{'' if b is None else b}"
                                for a, b in spec)
    raw = (f"GET {SEGMENT} HTTP/1.1\r\nHost: t\r\nRange: {value}\r\n"
           "Connection: close\r\n\r\n").encode()
    answer = exchange(port_of(sp), raw)
    codes = assert_harmless(answer)
    assert codes[0] in (200, 206, 416), codes
    if codes[0] == 206 and len(spec) == 1:
        # a single satisfiable range: exactly the bytes it names
        a, b = spec[0]
        data = (media / SEGMENT.lstrip("/")).read_bytes()
        want = data[-b:] if a is None and b is not None else data[a:None if b is None else b + 1]
        assert answer.partition(b"\r\n\r\n")[2] == want


def test_slowloris_does_not_starve_others(origin: tuple[ServerProcess, Path]) -> None:
    sp, media = origin
    port = port_of(sp)
    held = []
    try:
        for _ in range(50):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET /tiny/master.m3u8 HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            held.append(s)
        assert_still_serves(sp, media)
        # the header timeout (2 s here) closes every one of them
        for s in held:
            assert s.recv(100) == b""
    finally:
        for s in held:
            s.close()
    assert_still_serves(sp, media)

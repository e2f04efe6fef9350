"""Reading request heads (http.wire.RequestReader) without a socket: the fields every layer reads,
whatever the write boundaries, and the refusals a head can earn."""

from __future__ import annotations

import pytest

from edge360.http.wire import Request, RequestReader, WireError

HEAD = (b"GET /t/v/seg.ts?sid=a HTTP/1.1\r\nHost: edge\r\nUser-Agent: Player/1.0\r\n"
        b"Accept: */*\r\nX-Empty: \r\nAccept: text/plain\r\nACCEPT-Language: fr\r\n"
        b"Cache-Control: no-cache\r\nCache-Control: max-age=0\r\nCDN-Loop: \xe9dge\r\n\r\n")


def read(chunks: list[bytes], max_head: int = 8192) -> list[Request]:
    reader = RequestReader("127.0.0.1", max_head)
    for chunk in chunks:
        reader.feed(chunk)
    return list(reader.ready)


def test_fields_are_lower_cased_and_repeats_comma_joined_whatever_the_writes() -> None:
    whole = read([HEAD])
    byte_by_byte = read([HEAD[i:i + 1] for i in range(len(HEAD))])
    for requests in (whole, byte_by_byte):
        assert len(requests) == 1
        r = requests[0]
        assert r.fields == {
            "host": "edge", "user-agent": "Player/1.0", "accept": "*/*, text/plain",
            "x-empty": "", "accept-language": "fr", "cache-control": "no-cache, max-age=0",
            "cdn-loop": "\xe9dge"}
        assert (r.method, r.path, r.query_string, r.params()) == (
            "GET", "/t/v/seg.ts", "sid=a", {"sid": "a"})


def test_pipelined_heads_keep_their_own_fields() -> None:
    second = b"HEAD /b HTTP/1.1\r\nHost: other\r\nRange: bytes=0-1\r\n\r\n"
    first, then = read([HEAD + second])
    assert first.fields["host"] == "edge" and "range" not in first.fields
    assert then.fields == {"host": "other", "range": "bytes=0-1"}


def test_a_head_without_fields_is_read() -> None:
    (r,) = read([b"GET / HTTP/1.0\r\n\r\n"])
    assert r.fields == {} and r.version == "1.0"


@pytest.mark.parametrize("repeat", [b"Host: x\r\nhost: y\r\n",
                                    b"Host: x\r\nContent-Length: 0\r\nContent-Length: 0\r\n"])
def test_a_repeated_host_or_content_length_is_refused(repeat: bytes) -> None:
    with pytest.raises(WireError) as e:
        read([b"GET / HTTP/1.1\r\n" + repeat + b"\r\n"])
    assert e.value.error.status == 400


@pytest.mark.parametrize("split", [False, True])
def test_a_head_over_the_limit_is_refused_in_one_write_or_many(split: bool) -> None:
    head = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-F%d: %s\r\n" % (i, b"v" * 40) for i in range(100)) + b"\r\n"
    assert len(head) > 4096
    chunks = [head[i:i + 7] for i in range(0, len(head), 7)] if split else [head]
    with pytest.raises(WireError) as e:
        read(chunks, max_head=4096)
    assert e.value.error.status == 431
    assert len(read(chunks, max_head=8192)) == 1


def test_a_head_of_thousands_of_repeated_lines_in_one_write_is_refused() -> None:
    head = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-R: " + b"v" * 20 + b"\r\n"
    head += b"X-R: v\r\n" * 30_000 + b"\r\n"
    reader = RequestReader("127.0.0.1", 8192)
    with pytest.raises(WireError) as e:
        reader.feed(head)
    assert e.value.error.status == 431

"""The disk tier's bodies opened for sendfile (DiskCache.open_body): the span is the body, its
crc is checked on the first open of each file version, and a version that fails it is deleted
and never handed out, however many earlier versions passed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge360.cache.disk import DiskCache
from edge360.cache.diskformat import DiskEntry

BODY = bytes(range(256)) * 9000  # 2.3 MB: more than one check chunk


def _read(c: DiskCache, key: str) -> bytes | None:
    body = c.open_body(key)
    if body is None:
        return None
    try:
        return os.pread(body.file.fileno(), body.length, body.offset)
    finally:
        body.close()


def _flip_body_byte(c: DiskCache, key: str, at: int) -> None:
    e = c.get(key)
    assert e is not None
    with open(e.path, "r+b") as f:
        f.seek(e.body_offset + at)
        byte = f.read(1)
        f.seek(e.body_offset + at)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_open_body_is_the_body(tmp_path: Path) -> None:
    c = DiskCache(tmp_path, 1 << 30)
    c.put("/big.ts\x00v1\x000", b'{"m":1}', BODY)
    assert _read(c, "/big.ts\x00v1\x000") == BODY
    assert _read(c, "/big.ts\x00v1\x000") == BODY  # checked before: handed out as it is
    assert c.open_body("/absent.ts") is None


def test_corrupt_body_never_opened_and_deleted(tmp_path: Path) -> None:
    c = DiskCache(tmp_path, 1 << 30)
    c.put("/a.ts", b"", BODY)
    _flip_body_byte(c, "/a.ts", len(BODY) - 1)  # the last byte: the check reads it all
    assert c.open_body("/a.ts") is None
    assert c.get("/a.ts") is None and c.stats.corrupt_removed == 1
    assert not list(tmp_path.rglob("*.e360"))


def test_each_new_version_is_checked_again(tmp_path: Path) -> None:
    """A version that passed says nothing about the next one at the same name (a new nonce),
    even when the filesystem gives it the old inode."""
    c = DiskCache(tmp_path, 1 << 30)
    c.put("/a.ts", b"", BODY)
    assert _read(c, "/a.ts") == BODY
    c.put("/a.ts", b"", BODY[::-1])
    _flip_body_byte(c, "/a.ts", 5)
    assert c.open_body("/a.ts") is None
    c.put("/a.ts", b"", BODY[::-1])
    assert _read(c, "/a.ts") == BODY[::-1]


def test_open_body_survives_replacement_while_open(tmp_path: Path) -> None:
    """The open file is the version that was checked: a new version installed or the entry
    deleted meanwhile changes nothing for an answer already sending it."""
    c = DiskCache(tmp_path, 1 << 30)
    c.put("/a.ts", b"", BODY)
    body = c.open_body("/a.ts")
    assert body is not None
    try:
        c.put("/a.ts", b"", b"new" * 1000)
        assert os.pread(body.file.fileno(), body.length, body.offset) == BODY
        c.pop("/a.ts")
        assert os.pread(body.file.fileno(), body.length, body.offset) == BODY
    finally:
        body.close()
        body.close()  # twice is harmless


def test_the_file_found_is_the_file_sent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    """open_body sends from the file it found and checked (one open, not a second one by name),
    and carries the entry's meta with it."""
    c = DiskCache(tmp_path, 10 * 1024 * 1024)
    c.put("/a.ts", b"the meta", BODY)

    def reopened(_entry: DiskEntry) -> None:
        raise AssertionError("the file was opened again by name")
    monkeypatch.setattr(DiskEntry, "open_file", reopened)
    for _ in range(2):  # the first open checks the crc, the second knows the version
        body = c.open_body("/a.ts")
        assert body is not None and body.meta == b"the meta"
        try:
            assert body.read() == BODY
        finally:
            body.close()

"""Tests for edge360.kinds: the extension table of docs/HTTP.md and the metric kind of any path."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge360.core.kinds import MediaType, kind_of, media_type

EXTENSION_TABLE = [
    ("/demo/master.m3u8", "application/vnd.apple.mpegurl", "playlist"),
    ("/demo/v0/seg_001.ts", "video/mp2t", "segment"),
    ("/demo/v0/seg_001.m4s", "video/mp4", "segment"),
    ("/demo/v0/init.mp4", "video/mp4", "segment"),
    ("/demo/a0/seg.m4a", "audio/mp4", "segment"),
    ("/demo/a0/seg.aac", "audio/aac", "segment"),
    ("/demo/subs/en.vtt", "text/vtt", "segment"),
    ("/demo/keys/k1.key", "application/octet-stream", "other"),
]


@pytest.mark.parametrize(("path", "content_type", "kind"), EXTENSION_TABLE)
def test_contract_table(path: str, content_type: str, kind: str) -> None:
    assert media_type(path) == MediaType(content_type, kind)
    assert kind_of(path) == kind


@pytest.mark.parametrize(("path", "kind"), [
    ("/demo/MASTER.M3U8", "playlist"),
    ("/demo/v0/Seg.Ts", "segment"),
    ("seg.M4S", "segment"),
    ("/a.b.c/x.tar.ts", "segment"),
])
def test_case_insensitive_and_last_extension(path: str, kind: str) -> None:
    found = media_type(path)
    assert found is not None
    assert found.kind == kind


@pytest.mark.parametrize("path", [
    "/demo/",
    "/demo/readme",
    "/demo/notes.txt",
    "/demo/index.html",
    "/demo/m3u8",  # no dot: not an extension
    "/demo/.m3u8",  # a hidden name, not an extension
    "/demo.ts/readme",  # the extension of a directory does not count
    "/demo/seg.ts.bak",
    "",
    "/",
])
def test_not_served(path: str) -> None:
    assert media_type(path) is None
    assert kind_of(path) == "other"


def test_media_type_is_frozen() -> None:
    found = media_type("/x.ts")
    assert found is not None
    with pytest.raises(AttributeError):
        found.kind = "playlist"  # type: ignore[misc]


@given(st.text())
def test_kind_of_agrees_with_media_type(path: str) -> None:
    found = media_type(path)
    kind = kind_of(path)
    assert kind in ("playlist", "segment", "other")
    assert kind == (found.kind if found is not None else "other")


@given(st.text(alphabet=st.characters(exclude_characters="/."), min_size=1),
       st.sampled_from([row[0].rsplit(".", 1)[1] for row in EXTENSION_TABLE]))
def test_any_name_with_a_served_extension(stem: str, ext: str) -> None:
    expected = {row[0].rsplit(".", 1)[1]: row[1] for row in EXTENSION_TABLE}[ext]
    found = media_type(f"/t/{stem}.{ext.upper()}")
    assert found is not None
    assert found.content_type == expected

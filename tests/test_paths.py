"""Tests for edge360.paths: no request path can name anything outside the media root."""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge360.core.errors import BadRequest, NotFound
from edge360.core.paths import is_inside, split_request_path


@pytest.mark.parametrize(("raw", "segments"), [
    ("/demo/v0/seg_001.ts", ("demo", "v0", "seg_001.ts")),
    ("/", ()),
    ("/demo", ("demo",)),
    ("/demo/a%20b.ts", ("demo", "a b.ts")),
    ("/demo/%64emo.m3u8", ("demo", "demo.m3u8")),
    ("/d%C3%A9mo/x.ts", ("démo", "x.ts")),
    ("/démo/x.ts", ("démo", "x.ts")),  # raw non-ASCII is taken as the text it is
    ("/demo/a..b.ts", ("demo", "a..b.ts")),
    ("/demo/x...ts", ("demo", "x...ts")),
    ("/demo/seg%25.ts", ("demo", "seg%.ts")),  # a lone % after decoding is just a character
    ("/demo/100%25zz", ("demo", "100%zz")),
])
def test_accepted(raw: str, segments: tuple[str, ...]) -> None:
    assert split_request_path(raw) == segments


@pytest.mark.parametrize("raw", [
    # dot segments, raw and encoded in every case
    "/demo/../etc/passwd", "/../etc/passwd", "/demo/..", "/demo/./x.ts", "/.", "/..",
    "/demo/%2e%2e/x", "/demo/%2E%2E/x", "/demo/.%2e/x", "/demo/%2e./x", "/demo/%2e/x",
    # double encoding: a %XX left after one decode
    "/demo/%252e%252e/x", "/demo/%252e%252e%252fetc", "/demo/%252fetc", "/demo/x%2541.ts",
    # encoded slash or backslash inside a segment
    "/demo/..%2fetc", "/demo%2f..%2fetc", "/demo/a%2Fb", "/demo/..%5cetc", "/demo/a%5Cb",
    "/demo/..\\etc", "/demo\\x.ts",
    # overlong UTF-8 and other invalid UTF-8
    "/demo/..%c0%af/etc", "/demo/%c0%ae%c0%ae/x", "/demo/%e0%80%ae", "/demo/%ff.ts", "/demo/%80",
    "/demo/%ed%a0%80",  # an encoded surrogate
    # NUL and control characters, raw and encoded
    "/demo/x.ts%00.m3u8", "/demo/x\x00.ts", "/demo/a%0ab", "/demo/a\nb", "/demo/a%7fb",
    "/demo/a%c2%85b", "/demo/\tx",
    # empty segments
    "//etc/passwd", "/demo//x.ts", "/demo/", "///",
    # not a path, malformed escapes
    "demo/x.ts", "", "../x", "/demo/%", "/demo/%2", "/demo/%zz", "/demo/%%32%65",
    # overlong
    "/" + "a" * 1024,
])
def test_refused(raw: str) -> None:
    with pytest.raises(BadRequest):
        split_request_path(raw)


@pytest.mark.parametrize("raw", ["/demo/.hidden", "/.git/config", "/demo/%2egit/HEAD",
                                 "/demo/.../x", "/demo/.env"])
def test_hidden_is_not_found(raw: str) -> None:
    with pytest.raises(NotFound):
        split_request_path(raw)


def test_surrogates_from_the_request_line_are_refused() -> None:
    # a server that decodes the request line with surrogateescape hands these through
    with pytest.raises(BadRequest):
        split_request_path("/demo/\udcff.ts")


def test_max_length_is_inclusive() -> None:
    raw = "/" + "a" * 99
    assert split_request_path(raw, max_length=100) == ("a" * 99,)
    with pytest.raises(BadRequest):
        split_request_path(raw + "a", max_length=100)


@pytest.mark.parametrize(("root", "candidate", "inside"), [
    ("/media", "/media", True),
    ("/media", "/media/demo/x.ts", True),
    ("/media", "/media2", False),
    ("/media", "/media2/x.ts", False),
    ("/media", "/med", False),
    ("/media", "/", False),
    ("/media", "/etc/passwd", False),
    ("/media", "/media/../etc/passwd", False),
    ("/media/", "/media/x", True),
    ("/media/", "/media", True),
    ("/", "/anything/at/all", True),
    ("/media", "media/x", False),
    ("media", "media/x", False),
])
def test_is_inside(root: str, candidate: str, inside: bool) -> None:
    assert is_inside(root, candidate) is inside


ROOT = "/srv/media"
_BAD_PARTS = {"", ".", ".."}


def _check_safe(segments: tuple[str, ...]) -> None:
    for seg in segments:
        assert seg not in _BAD_PARTS
        assert "/" not in seg and "\\" not in seg and "\x00" not in seg
    joined = posixpath.normpath(posixpath.join(ROOT, *segments))
    assert is_inside(ROOT, joined)
    assert joined == ROOT + "".join("/" + s for s in segments)  # nothing collapsed


@given(st.text())
def test_any_text_is_refused_or_safe(raw: str) -> None:
    try:
        segments = split_request_path(raw)
    except (BadRequest, NotFound):
        return
    _check_safe(segments)


# An alphabet of the characters traversal payloads are made of, so Hypothesis reaches them often.
_TOKENS = [*"/.%\\025cefFEaA1\x00", "%2e", "%2f", "%25", "%5c", "%c0%af", "%00", ".."]
_PAYLOAD = st.lists(st.sampled_from(_TOKENS), max_size=30).map("".join)


@given(_PAYLOAD)
def test_traversal_alphabet_is_refused_or_safe(tail: str) -> None:
    try:
        segments = split_request_path("/" + tail)
    except (BadRequest, NotFound):
        return
    _check_safe(segments)


_NAME = st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=12).filter(
    lambda s: not s.startswith(".") and "/" not in s and "\\" not in s)


@given(st.lists(_NAME, min_size=1, max_size=6))
def test_encoded_names_round_trip(names: list[str]) -> None:
    raw = "/" + "/".join(quote(n, safe="") for n in names)
    if any(re.search("%[0-9A-Fa-f]{2}", n) for n in names):
        # a name that itself reads as an escape is refused: it would be double encoding
        with pytest.raises(BadRequest):
            split_request_path(raw, max_length=10**6)
        return
    assert split_request_path(raw, max_length=10**6) == tuple(names)


def test_realpath_escape_is_caught(tmp_path: Path) -> None:
    # the last line of defence: a symlink inside the root pointing out of it
    root = tmp_path / "media"
    (root / "demo").mkdir(parents=True)
    outside = tmp_path / "secret.ts"
    outside.write_bytes(b"x")
    (root / "demo" / "link.ts").symlink_to(outside)
    (root / "demo" / "ok.ts").write_bytes(b"y")
    real_root = os.path.realpath(root)
    segments = split_request_path("/demo/link.ts")
    assert not is_inside(real_root, os.path.realpath(os.path.join(real_root, *segments)))
    segments = split_request_path("/demo/ok.ts")
    assert is_inside(real_root, os.path.realpath(os.path.join(real_root, *segments)))
    sibling = tmp_path / "media2"
    sibling.mkdir()
    assert not is_inside(real_root, os.path.realpath(sibling))

"""Tests of edge360.viewerrules: who a request is, when it opens a session (and when that opening
counts against the per-address bound), and which answers count. Tables, no event loop."""

from __future__ import annotations

import posixpath
import random
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge360.edge.playlists import rendition_label
from edge360.sessions.identity import fallback_key, valid_sid
from edge360.sessions.viewer import Viewer, counted, identify, is_loopback, opens_counted_session

SID = "viewer0123"
UA = {"user-agent": "UA"}


@pytest.mark.parametrize(("query", "fields", "key", "sid"), [
    ({"sid": SID}, UA, SID, SID),
    ({"sid": "bad!", "CMCD": f'sid="{SID}"'}, UA, SID, SID),  # an invalid sid is never echoed
    ({}, {**UA, "cmcd-session": f'sid="{SID}"'}, SID, SID),
    ({}, UA, fallback_key("10.0.0.1", "UA"), None),  # the fallback key is never carried
    ({}, {}, fallback_key("10.0.0.1", ""), None),
])
def test_identify_precedence(query: dict[str, str], fields: dict[str, str], key: str,
                             sid: str | None) -> None:
    v = identify(query, fields, "10.0.0.1", opens=False)
    assert (v.key, v.sid, v.minted, v.address) == (key, sid, False, "10.0.0.1")


def test_a_playlist_without_an_id_opens_a_fresh_sid() -> None:
    v = identify({"token": "t"}, UA, "10.0.0.1", opens=True)
    assert v.minted and v.key == v.sid and valid_sid(v.sid) and v.token == "t"
    w = identify({}, UA, "10.0.0.1", opens=True)
    assert w.sid != v.sid and w.token is None
    carried = identify({"sid": SID}, UA, "10.0.0.1", opens=True)
    assert (carried.sid, carried.minted) == (SID, False)


def test_params_carry_sid_and_quoted_token() -> None:
    assert Viewer("k", SID, "1.k1/x y", "a").params() == f"sid={SID}&token=1.k1%2Fx%20y"
    assert Viewer("k", None, None, "a").params() == ""


@pytest.mark.parametrize(("path", "method", "query", "address", "counts"), [
    ("/t/master.m3u8", "GET", {}, "10.0.0.1", True),
    ("/t/master.m3u8", "HEAD", {}, "10.0.0.1", True),
    ("/t/master.m3u8", "POST", {}, "10.0.0.1", False),
    ("/t/master.m3u8", "GET", {"sid": SID}, "10.0.0.1", False),
    ("/t/master.m3u8", "GET", {"CMCD": f'sid="{SID}"'}, "10.0.0.1", False),
    ("/t/master.m3u8", "GET", {"sid": "bad!"}, "10.0.0.1", True),
    ("/t/master.m3u8", "GET", {}, "127.0.0.1", False),  # a load test from this machine
    ("/t/master.m3u8", "GET", {}, "::1", False),
    ("/t/v0/seg_001.ts", "GET", {}, "10.0.0.1", False),
    ("/t/master.M3U8", "GET", {}, "10.0.0.1", True),  # a playlist by kind, as handlers see it
])
def test_opens_counted_session(path: str, method: str, query: dict[str, str], address: str,
                               counts: bool) -> None:
    assert opens_counted_session(path, method, query, UA, address) is counts


_ids = st.sampled_from([None, SID, "bad!", "", 'sid="viewer0123"', "br=1"])


@given(_ids, _ids, _ids)
def test_a_counted_opening_is_exactly_a_minted_sid(sid: str | None, cmcd: str | None,
                                                   header: str | None) -> None:
    query = {k: v for k, v in (("sid", sid), ("CMCD", cmcd)) if v is not None}
    fields = {**UA, **({"cmcd-session": header} if header is not None else {})}
    minted = identify(query, fields, "10.0.0.1", opens=True).minted
    assert opens_counted_session("/t/master.m3u8", "GET", query, fields, "10.0.0.1") is minted


def test_loopback_and_counted_statuses() -> None:
    assert is_loopback("127.0.0.2") and is_loopback("::1")
    assert not is_loopback("10.0.0.1") and not is_loopback("not an address")
    assert [s for s in (200, 204, 206, 304, 404, 416, 429, 503) if counted(s)] == [200, 206, 304]


def test_valid_sid_agrees_with_the_pattern_of_the_session_rules() -> None:
    """valid_sid checks [A-Za-z0-9_-]{8,64} without a regular expression (it runs on every
    request): it must agree with the pattern on every kind of string."""
    pattern = re.compile(r"[A-Za-z0-9_-]{8,64}")
    alphabet = "aZ09_-.~ é\n\t%+=/\x00Ａ\u0663²"  # Arabic-Indic 3 and ² are alnum, not ASCII
    rng = random.Random(5)
    cases = ["", "abcdefg", "abcdefgh", "a" * 64, "a" * 65, "abcdefgh\n", "\nabcdefgh",
             "abcd efgh", "abcdéfgh", "ＡＢＣＤＥＦＧＨ", "abc-def_ghi", "........",
             "--------", "________", "abc\u0663defgh", "abcdefgh²"]
    cases += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 70)))
              for _ in range(3000)]
    for s in cases:
        assert valid_sid(s) == (pattern.fullmatch(s) is not None), repr(s)
    assert not valid_sid(None)


def test_a_rendition_label_is_the_playlists_folder_else_its_name() -> None:
    """rendition_label spells out posixpath.dirname (interpreted Python, on every playlist
    answer): the same labels for every shape of path."""
    for path in ("/demo/1080p/index.m3u8", "/demo/index.m3u8", "/demo/a/b/c.m3u8",
                 "/demo//x.m3u8", "/other/720p/i.m3u8", "/demo/v//index.m3u8", "/demo/",
                 "/x.m3u8", "//x.m3u8", "demo/a.m3u8", "/demo/audio/en/index.m3u8"):
        rel = path.removeprefix("/demo/")
        assert rendition_label(path, "demo") == (posixpath.dirname(rel)
                                                 or rel.removesuffix(".m3u8")), path

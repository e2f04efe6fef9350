"""Tests of edge360.auth: key parsing, signing, verification (each refusal reason), redaction."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge360.core.errors import ConfigError, Forbidden, UsageError
from edge360.security.tokens import (
    Key,
    TokenRejected,
    default_scope,
    parse_keys,
    redact_query,
    scope_covers,
    sign,
    sign_url,
    verify,
)

KEYS = parse_keys("k1:first-secret,k2:second-secret")
NOW = 1_700_000_000.0
SID = "abcdefgh1234"


def reason(token: str | None, *, path: str = "/demo/master.m3u8", sid: str | None = None,
           keys: tuple[Key, ...] = KEYS, now: float = NOW) -> str:
    """The refusal reason, or "ok" when the token is accepted."""
    try:
        verify(token, path=path, sid=sid, keys=keys, now=now)
    except TokenRejected as e:
        assert str(e) == "invalid or missing token"  # one message for every reason
        assert e.status == 403
        return e.reason
    return "ok"


# --- keys ---

@pytest.mark.parametrize(("text", "expected"), [
    ("k1:abc", [("k1", b"abc")]),
    ("k1:abc,k2:def", [("k1", b"abc"), ("k2", b"def")]),
    ("  k1:abc ,\n k2:def\n", [("k1", b"abc"), ("k2", b"def")]),
    ("# rotated 2024-05-01\nnew:xyz\nold:a:b:c\n", [("new", b"xyz"), ("old", b"a:b:c")]),
    ("K_1-x:\u00e9t\u00e9", [("K_1-x", "\u00e9t\u00e9".encode())]),
    ("", []),
    (" \n ,, ", []),
])
def test_parse_keys(text: str, expected: list[tuple[str, bytes]]) -> None:
    assert [(k.kid, k.secret) for k in parse_keys(text)] == expected


@pytest.mark.parametrize("text", [
    "k1:", "k1:SEKRIT,k2:", "k1:SEKRIT,k1:SEKRIT2", "SEKRIT", ":SEKRIT", "bad.kid:SEKRIT",
    "k" * 33 + ":SEKRIT", "k\u00e9:SEKRIT",
])
def test_parse_keys_rejects(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_keys(text)
    assert info.value.key == "auth.keys"
    assert "SEKRIT" not in str(info.value)  # a secret never reaches the error line


def test_key_repr_hides_secret() -> None:
    assert "first-secret" not in repr(KEYS[0])
    assert "first-secret" not in repr(KEYS)


# --- signing and the documented format ---

def test_sign_then_verify() -> None:
    token = sign(KEYS, scope="/demo/", expires=int(NOW) + 60)
    assert token.startswith("v1.k1.")
    assert reason(token) == "ok"
    assert all(c.isalnum() or c in "._-" for c in token)  # no escaping needed in a query


def test_portal_example_from_readme_verifies() -> None:
    # the README's mint-it-yourself example, word for word except the fixed expiry
    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    kid, secret, scope, sid, exp = "k1", b"first-secret", "/demo/", "", int(NOW) + 3600
    mac = hmac.new(secret, f"v1\n{kid}\n{exp}\n{scope}\n{sid}".encode(), hashlib.sha256).digest()
    token = f"v1.{kid}.{exp}.{b64(scope.encode())}.{sid}.{b64(mac)}"
    assert token == sign(KEYS, scope="/demo/", expires=exp)
    assert reason(token, path="/demo/1080p/seg_00001.ts") == "ok"


def test_sign_with_chosen_key_id() -> None:
    token = sign(KEYS, scope="/demo/", expires=int(NOW) + 60, kid="k2")
    assert token.split(".")[1] == "k2"
    assert reason(token) == "ok"
    with pytest.raises(UsageError):
        sign(KEYS, scope="/demo/", expires=1, kid="nope")


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"scope": "demo/", "expires": 1}, UsageError),
    ({"scope": "/de\nmo/", "expires": 1}, UsageError),
    ({"scope": "/\ud800/", "expires": 1}, UsageError),
    ({"scope": "/demo/", "expires": -1}, UsageError),
    ({"scope": "/demo/", "expires": 1, "sid": "short"}, UsageError),
    ({"scope": "/demo/", "expires": 1, "sid": "has space in it"}, UsageError),
])
def test_sign_rejects_bad_input(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        sign(KEYS, **kwargs)  # type: ignore[arg-type]


def test_sign_without_keys_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        sign((), scope="/demo/", expires=1)


@pytest.mark.parametrize(("path", "scope"), [
    ("/demo/master.m3u8", "/demo/"),
    ("/demo/1080p/seg.ts", "/demo/"),
    ("/my film/master.m3u8", "/my film/"),
])
def test_default_scope(path: str, scope: str) -> None:
    assert default_scope(path) == scope


@pytest.mark.parametrize("path", ["/demo", "/", "", "demo/x", "//x"])
def test_default_scope_needs_a_folder(path: str) -> None:
    with pytest.raises(UsageError):
        default_scope(path)  # no title folder: refuse rather than guess a wider scope


def test_sign_url_decodes_the_path_for_the_scope() -> None:
    url = sign_url("http://h/my%20film/master.m3u8", KEYS, ttl=60, now=NOW)
    assert reason(url.split("token=")[1], path="/my film/720p/a.ts") == "ok"


def test_sign_url_appends_and_replaces_token() -> None:
    url = sign_url("https://h/demo/master.m3u8?a=1&token=old&b=x%20y#frag", KEYS, ttl=60, now=NOW)
    head, _, frag = url.partition("#")
    assert frag == "frag"
    base, _, query = head.partition("?")
    assert base == "https://h/demo/master.m3u8"
    params = query.split("&")
    assert params[:2] == ["a=1", "b=x%20y"]
    token = params[2].removeprefix("token=")
    assert len(params) == 3
    assert int(token.split(".")[2]) == int(NOW) + 60
    assert reason(token, path="/demo/720p/a.ts") == "ok"
    assert reason(token, path="/other/a.ts") == "scope"


def test_sign_url_scope_and_sid() -> None:
    url = sign_url("http://h/demo/master.m3u8", KEYS, ttl=5, now=NOW, scope="/demo/master.m3u8",
                   sid=SID)
    token = url.split("token=")[1]
    assert reason(token, path="/demo/master.m3u8", sid=SID) == "ok"
    assert reason(token, path="/demo/720p.m3u8", sid=SID) == "scope"
    with pytest.raises(UsageError):
        sign_url("http://h/demo/x", KEYS, ttl=0, now=NOW)


# --- verification: each refusal ---

def test_missing() -> None:
    assert reason(None) == "missing"
    assert reason("") == "missing"


def test_rotation() -> None:
    old = parse_keys("old:old-secret")
    token = sign(old, scope="/demo/", expires=int(NOW) + 60)
    rotated = parse_keys("new:new-secret,old:old-secret")
    assert reason(token, keys=rotated) == "ok"
    assert sign(rotated, scope="/demo/", expires=1).split(".")[1] == "new"
    assert reason(token, keys=parse_keys("new:new-secret")) == "unknown_kid"
    assert reason(token, keys=()) == "unknown_kid"


def test_same_kid_other_secret_fails() -> None:
    token = sign(parse_keys("k1:leaked-or-old"), scope="/demo/", expires=int(NOW) + 60)
    assert reason(token) == "bad_signature"


@pytest.mark.parametrize(("now", "expected"), [
    (NOW - 100, "ok"), (NOW, "ok"), (NOW + 1, "ok"), (NOW + 1.001, "expired"),
    (NOW + 1e6, "expired"), (float("nan"), "expired"),
])
def test_expiry_boundary(now: float, expected: str) -> None:
    token = sign(KEYS, scope="/demo/", expires=int(NOW))
    assert reason(token, now=now) == expected


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize(("index", "value", "expected"), [
    (0, "v2", "malformed"),
    (1, "k2", "bad_signature"),
    (1, "k9", "unknown_kid"),
    (2, str(int(NOW) + 61), "bad_signature"),
    (2, "-1", "malformed"),
    (3, _b64(b"/"), "bad_signature"),
    (3, _b64(b"demo/"), "malformed"),
    (3, "@@", "malformed"),
    (4, SID, "bad_signature"),
    (4, "short", "malformed"),
    (5, _b64(bytes(32)), "bad_signature"),
    (5, _b64(bytes(31)), "malformed"),
])
def test_tampered_fields(index: int, value: str, expected: str) -> None:
    fields = sign(KEYS, scope="/demo/", expires=int(NOW) + 60).split(".")
    fields[index] = value
    assert reason(".".join(fields)) == expected


def test_non_canonical_base64_is_malformed() -> None:
    fields = sign(KEYS, scope="/demo/", expires=int(NOW) + 60).split(".")
    mac = fields[5]
    # the last of 43 characters carries 2 spare bits; another spelling of the same bytes is refused
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = mac[:-1] + alphabet[alphabet.index(mac[-1]) ^ 1]
    assert base64.urlsafe_b64decode(twin + "=") == base64.urlsafe_b64decode(mac + "=")
    fields[5] = twin
    assert reason(".".join(fields)) == "malformed"


@pytest.mark.parametrize(("scope", "path", "covered"), [
    ("/demo/", "/demo/master.m3u8", True),
    ("/demo/", "/demo/1080p/seg_1.ts", True),
    ("/demo/", "/demo2/master.m3u8", False),
    ("/demo/", "/demo", False),
    ("/demo/", "/demo/../secret/master.m3u8", False),
    ("/demo/", "/demo/./x.ts", False),
    ("/demo/", "demo/x.ts", False),
    ("/demo", "/demo", True),
    ("/demo", "/demo/x.ts", True),
    ("/demo", "/demo2/x.ts", False),
    ("/demo/master.m3u8", "/demo/master.m3u8", True),
    ("/demo/master.m3u8", "/demo/master.m3u8x", False),
    ("/", "/anything/at/all.ts", True),
])
def test_scope_covers(scope: str, path: str, covered: bool) -> None:
    assert scope_covers(scope, path) is covered
    token = sign(KEYS, scope=scope, expires=int(NOW) + 60)
    assert reason(token, path=path) == ("ok" if covered else "scope")


@pytest.mark.parametrize(("bound", "request_sid", "expected"), [
    (None, None, "ok"), (None, SID, "ok"), (SID, SID, "ok"),
    (SID, None, "sid"), (SID, "abcdefgh1235", "sid"), (SID, SID.upper(), "sid"),
])
def test_sid_binding(bound: str | None, request_sid: str | None, expected: str) -> None:
    token = sign(KEYS, scope="/demo/", expires=int(NOW) + 60, sid=bound)
    assert reason(token, sid=request_sid) == expected


def test_too_long_token_is_malformed() -> None:
    token = sign(KEYS, scope="/demo/", expires=int(NOW) + 60)
    assert reason(token + "A" * 5000) == "malformed"


# --- properties ---

segment = st.text(alphabet=st.characters(min_codepoint=0x20, blacklist_characters="/\x7f",
                                        blacklist_categories=["Cs"]),
                  min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))


@given(st.lists(segment, min_size=1, max_size=3), st.lists(segment, min_size=1, max_size=3),
       st.integers(0, 10**11), st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_-]{8,64}",
                                                                    fullmatch=True)))
def test_roundtrip_property(folder: list[str], rest: list[str], exp: int, sid: str | None) -> None:
    scope = "/" + "/".join(folder) + "/"
    token = sign(KEYS, scope=scope, expires=exp, sid=sid)
    assert reason(token, path=scope + "/".join(rest), sid=sid, now=exp + 1) == "ok"
    assert reason(token, path=scope + "/".join(rest), sid=sid, now=exp + 1.5) == "expired"
    sibling = "/" + "/".join([*folder[:-1], folder[-1] + "x"]) + "/a"
    assert reason(token, path=sibling, sid=sid, now=exp) == "scope"


tokenish = st.lists(st.one_of(st.text(max_size=20), st.from_regex(r"[A-Za-z0-9_-]{0,44}",
                                                                  fullmatch=True)),
                    min_size=0, max_size=8).map(".".join)


latin1 = st.binary(max_size=100).map(lambda b: b.decode("latin-1"))


@given(st.one_of(st.text(max_size=200), tokenish, latin1), st.text(max_size=50),
       st.one_of(st.none(), st.text(max_size=70)), st.floats(allow_nan=True))
def test_garbage_only_ever_forbidden(token: str, path: str, sid: str | None, now: float) -> None:
    try:
        verify(token, path=path, sid=sid, keys=KEYS, now=now)
    except Forbidden as e:
        assert str(e) == "invalid or missing token"
    else:  # accepting a random string would mean a forged HMAC
        raise AssertionError(f"accepted {token!r}")


# --- redaction ---

@pytest.mark.parametrize(("query", "expected"), [
    ("", ""),
    ("token=v1.k1.1.L2RlbW8v..abc", "token=***"),
    ("sid=abcdefgh1234&token=x&b=2", "sid=abcdefgh1234&token=***&b=2"),
    ("%74oken=x&token=y", "%74oken=***&token=***"),
    ("tokens=1&mytoken=2", "tokens=1&mytoken=2"),
    ("token", "token=***"),
    ("a=1&&token=", "a=1&&token=***"),
])
def test_redact_query(query: str, expected: str) -> None:
    assert redact_query(query) == expected

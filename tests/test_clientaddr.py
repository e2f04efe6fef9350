"""Tests of edge360.clientaddr: forwarding chains, spoofing attempts, IPv6, PROXY protocol v1/v2."""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge360.core.errors import BadRequest, ConfigError
from edge360.security.clientaddr import (
    V1_MAX,
    V2_MAX_LENGTH,
    V2_SIGNATURE,
    TrustedProxies,
    client_address,
    normalise,
    parse_ip,
    parse_proxy_header,
)

LB = TrustedProxies(["10.0.0.0/8", "2001:db8:ffff::/48", "192.0.2.7"])
NONE = TrustedProxies([])


@pytest.mark.parametrize(("text", "expected"), [
    ("1.2.3.4", "1.2.3.4"),
    (" 1.2.3.4 ", "1.2.3.4"),
    ("1.2.3.4:8080", "1.2.3.4"),
    ("1.2.3.4:_obf", "1.2.3.4"),
    ("2001:DB8:0:0::1", "2001:db8::1"),
    ("[2001:db8::1]", "2001:db8::1"),
    ("[2001:db8::1]:4711", "2001:db8::1"),
    ("::ffff:1.2.3.4", "1.2.3.4"),
    ("[::ffff:1.2.3.4]:80", "1.2.3.4"),
    ("fe80::1%eth0", "fe80::1"),
    ("unknown", None),
    ("_hidden", None),
    ("1.2.3.4:port", None),
    ("1.2.3.4:123456", None),
    ("[1.2.3.4]", None),
    ("[2001:db8::1", None),
    ("[2001:db8::1]x", None),
    ("01.2.3.4", None),
    ("", None),
])
def test_parse_ip(text: str, expected: str | None) -> None:
    ip = parse_ip(text)
    assert (None if ip is None else str(ip)) == expected


def test_normalise_keeps_unparseable_text() -> None:
    assert normalise("[2001:DB8::1]:1") == "2001:db8::1"
    assert normalise("unix:/run/sock") == "unix:/run/sock"


@pytest.mark.parametrize(("addr", "trusted"), [
    ("10.1.2.3", True), ("11.0.0.1", False), ("192.0.2.7", True), ("192.0.2.8", False),
    ("::ffff:10.9.9.9", True), ("2001:db8:ffff:1::5", True), ("2001:db8:fffe::1", False),
    ("[2001:db8:ffff::1]:443", True), ("garbage", False), ("", False),
])
def test_trusted_contains(addr: str, trusted: bool) -> None:
    assert LB.contains(addr) is trusted


def test_trusted_rejects_bad_cidr() -> None:
    with pytest.raises(ConfigError) as info:
        TrustedProxies(["10.0.0.0/8", "ten.0.0.0"])
    assert info.value.key == "server.trusted_proxies"
    assert not NONE
    assert LB


@pytest.mark.parametrize(("peer", "headers", "expected"), [
    # an untrusted peer's headers are ignored entirely
    ("203.0.113.5", {"X-Forwarded-For": "1.1.1.1"}, "203.0.113.5"),
    ("203.0.113.5", {"Forwarded": "for=1.1.1.1"}, "203.0.113.5"),
    ("::ffff:203.0.113.5", {}, "203.0.113.5"),
    # a trusted peer without forwarding headers is itself the client
    ("10.0.0.1", {}, "10.0.0.1"),
    # one balancer
    ("10.0.0.1", {"X-Forwarded-For": "198.51.100.9"}, "198.51.100.9"),
    ("10.0.0.1", {"x-forwarded-for": "198.51.100.9"}, "198.51.100.9"),
    ("10.0.0.1", {"X-Forwarded-For": "198.51.100.9:5555"}, "198.51.100.9"),
    # spoofing: the client prepends a fake hop; the balancer appends the real one
    ("10.0.0.1", {"X-Forwarded-For": "6.6.6.6, 198.51.100.9"}, "198.51.100.9"),
    ("10.0.0.1", {"X-Forwarded-For": "10.0.0.2, 198.51.100.9"}, "198.51.100.9"),
    # two trusted tiers
    ("10.0.0.1", {"X-Forwarded-For": "6.6.6.6, 198.51.100.9, 10.0.0.2"}, "198.51.100.9"),
    ("10.0.0.1", {"X-Forwarded-For": "198.51.100.9,192.0.2.7,10.3.3.3"}, "198.51.100.9"),
    # a chain of only trusted hops: the leftmost one is the best we know
    ("10.0.0.1", {"X-Forwarded-For": "10.0.0.3, 10.0.0.2"}, "10.0.0.3"),
    # garbage stops the walk at the last valid address seen (or the peer)
    ("10.0.0.1", {"X-Forwarded-For": "198.51.100.9, unknown"}, "10.0.0.1"),
    ("10.0.0.1", {"X-Forwarded-For": "198.51.100.9, unknown, 10.0.0.2"}, "10.0.0.2"),
    ("10.0.0.1", {"X-Forwarded-For": "<script>"}, "10.0.0.1"),
    ("10.0.0.1", {"X-Forwarded-For": ""}, "10.0.0.1"),
    ("10.0.0.1", {"X-Forwarded-For": "198.51.100.9,"}, "10.0.0.1"),
    # IPv6
    ("2001:db8:ffff::1", {"X-Forwarded-For": "2001:DB8:1::0001"}, "2001:db8:1::1"),
    ("10.0.0.1", {"X-Forwarded-For": "[2001:db8:1::1]:4711"}, "2001:db8:1::1"),
    ("[2001:db8:ffff::1]:9", {"X-Forwarded-For": "2001:db8:ffff::2, ::ffff:198.51.100.9"},
     "198.51.100.9"),
    # RFC 7239 Forwarded
    ("10.0.0.1", {"Forwarded": "for=198.51.100.9"}, "198.51.100.9"),
    ("10.0.0.1", {"Forwarded": 'for="[2001:db8:cafe::17]:4711"'}, "2001:db8:cafe::17"),
    ("10.0.0.1", {"Forwarded": "For=198.51.100.9;proto=https;by=10.0.0.1"}, "198.51.100.9"),
    ("10.0.0.1", {"Forwarded": "for=6.6.6.6, for=198.51.100.9"}, "198.51.100.9"),
    ("10.0.0.1", {"Forwarded": 'for=6.6.6.6, for="198.51.100.9:80", for=10.0.0.2'},
     "198.51.100.9"),
    ("10.0.0.1", {"Forwarded": "for=198.51.100.9, for=unknown"}, "10.0.0.1"),
    ("10.0.0.1", {"Forwarded": "for=198.51.100.9, for=_hidden, for=10.0.0.9"}, "10.0.0.9"),
    ("10.0.0.1", {"Forwarded": "for=198.51.100.9, proto=https"}, "10.0.0.1"),
    # a quoted comma does not split an element
    ("10.0.0.1", {"Forwarded": 'for=198.51.100.9;x="a, for=6.6.6.6"'}, "198.51.100.9"),
    # Forwarded wins over X-Forwarded-For, so a client cannot pick the header it spoofs
    ("10.0.0.1", {"Forwarded": "for=198.51.100.9", "X-Forwarded-For": "6.6.6.6"},
     "198.51.100.9"),
    ("10.0.0.1", {"Forwarded": "proto=https", "X-Forwarded-For": "6.6.6.6"}, "10.0.0.1"),
])
def test_client_address(peer: str, headers: dict[str, str], expected: str) -> None:
    assert client_address(peer, headers, LB) == expected


def test_no_trusted_proxies_means_the_peer() -> None:
    headers = {"X-Forwarded-For": "1.1.1.1", "Forwarded": "for=2.2.2.2"}
    assert client_address("10.0.0.1", headers, NONE) == "10.0.0.1"
    assert client_address("not-an-ip", headers, LB) == "not-an-ip"


class MultiHeaders(dict[str, str]):
    """A stand-in with multidict's getall(), as aiohttp hands over repeated headers."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__(pairs[:1])
        self.pairs = pairs

    def getall(self, name: str, default: list[str] | None = None) -> list[str] | None:
        found = [v for k, v in self.pairs if k.lower() == name.lower()]
        return found or default


def test_repeated_headers_form_one_chain() -> None:
    headers = MultiHeaders([("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "198.51.100.9")])
    assert client_address("10.0.0.1", headers, LB) == "198.51.100.9"
    assert client_address("10.0.0.1", MultiHeaders([]), LB) == "10.0.0.1"


def test_long_chain_is_bounded() -> None:
    chain = ", ".join(["198.51.100.9"] + ["10.0.0.2"] * 10_000)
    assert client_address("10.0.0.1", {"X-Forwarded-For": chain}, LB) == "10.0.0.2"


header_text = st.text(max_size=120) | st.lists(
    st.sampled_from(["for=", '"', "[", "]", ":", ",", ";", "\\", "1.2.3.4", "10.0.0.2",
                     "2001:db8::1", "unknown", "_x", " ", "=", "proto=http"]),
    max_size=30).map("".join)


@given(st.sampled_from(["10.0.0.1", "203.0.113.5", "2001:db8:ffff::1", "junk"]),
       header_text, header_text)
def test_arbitrary_headers_never_raise(peer: str, fwd: str, xff: str) -> None:
    for headers in ({"Forwarded": fwd}, {"X-Forwarded-For": xff}, {"Forwarded": fwd,
                                                                      "X-Forwarded-For": xff}):
        got = client_address(peer, headers, LB)
        # the answer is always the peer or an address that appeared in the request
        assert got == normalise(peer) or parse_ip(got) is not None


@given(st.lists(st.ip_addresses(), min_size=1, max_size=6), st.ip_addresses())
def test_prepending_never_changes_the_answer(chain: list[object], fake: object) -> None:
    # whatever a client writes at the left, the rightmost untrusted hop stays the answer
    # as long as such a hop exists to the right of the forgery
    xff = ", ".join(str(a) for a in chain)
    honest = client_address("10.0.0.1", {"X-Forwarded-For": xff}, LB)
    if any(not LB.contains(str(a)) for a in chain):
        spoofed = client_address("10.0.0.1", {"X-Forwarded-For": f"{fake}, {xff}"}, LB)
        assert spoofed == honest


# --- PROXY protocol v1 ---

@pytest.mark.parametrize(("data", "expected"), [
    (b"PROXY TCP4 198.51.100.9 10.0.0.1 51234 443\r\nGET / HTTP/1.1\r\n",
     (len(b"PROXY TCP4 198.51.100.9 10.0.0.1 51234 443\r\n"), "198.51.100.9")),
    (b"PROXY TCP6 2001:db8::1 2001:db8::2 0 65535\r\n", (44, "2001:db8::1")),
    (b"PROXY UNKNOWN\r\n", (15, None)),
    (b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", (59, None)),
    (b"", None),
    (b"P", None),
    (b"PROXY TCP4 198.51.100.9", None),
    (b"PROXY TCP4 198.51.100.9 10.0.0.1 51234 443\r", None),
])
def test_proxy_v1(data: bytes, expected: tuple[int, str | None] | None) -> None:
    assert parse_proxy_header(data) == expected


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\n",
    b"PROXX",
    b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
    b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n",
    b"PROXY TCP6 1.2.3.4 2001:db8::1 1 2\r\n",
    b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
    b"PROXY TCP4 \xff.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY " + b"x" * (V1_MAX - 6),
])
def test_proxy_v1_malformed(data: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_proxy_header(data)


# --- PROXY protocol v2 ---

def v2(command: int, family: int, body: bytes, transport: int = 1, version: int = 2) -> bytes:
    return V2_SIGNATURE + struct.pack("!BBH", version << 4 | command, family << 4 | transport,
                                      len(body)) + body


V4_BODY = (socket.inet_pton(socket.AF_INET, "198.51.100.9") + bytes([10, 0, 0, 1])
           + b"\x12\x34\x01\xbb")
V6_BODY = (ipaddress.IPv6Address("2001:db8::17").packed + ipaddress.IPv6Address("::1").packed
           + b"\x00\x01\x00\x02")


@pytest.mark.parametrize(("data", "expected"), [
    (v2(1, 1, V4_BODY) + b"GET", (28, "198.51.100.9")),
    (v2(1, 2, V6_BODY), (52, "2001:db8::17")),
    (v2(1, 1, V4_BODY + b"\x04\x00\x01\x00"), (32, "198.51.100.9")),  # a TLV after the addresses
    (v2(0, 0, b"", transport=0), (16, None)),
    (v2(0, 1, V4_BODY), (28, None)),  # LOCAL ignores any addresses
    (v2(1, 0, b"", transport=0), (16, None)),
    (v2(1, 3, bytes(216)), (232, None)),
    (v2(1, 2, ipaddress.IPv6Address("::ffff:198.51.100.9").packed + bytes(20)),
     (52, "198.51.100.9")),
    (V2_SIGNATURE[:5], None),
    (V2_SIGNATURE + b"\x21\x11", None),
    (v2(1, 1, V4_BODY)[:20], None),
])
def test_proxy_v2(data: bytes, expected: tuple[int, str | None] | None) -> None:
    assert parse_proxy_header(data) == expected


@pytest.mark.parametrize("data", [
    V2_SIGNATURE[:6] + b"X",
    v2(1, 1, V4_BODY, version=1),
    v2(2, 1, V4_BODY),
    v2(1, 4, V4_BODY),
    v2(1, 1, V4_BODY, transport=3),
    v2(1, 1, V4_BODY[:8]),
    v2(1, 2, V6_BODY[:30]),
    V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, V2_MAX_LENGTH + 1),
])
def test_proxy_v2_malformed(data: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_proxy_header(data)


@given(st.binary(max_size=300))
def test_proxy_arbitrary_bytes(data: bytes) -> None:
    for candidate in (data, b"PROXY " + data, V2_SIGNATURE + data):
        try:
            result = parse_proxy_header(candidate)
        except BadRequest:
            continue
        if result is not None:
            consumed, addr = result
            assert 0 < consumed <= len(candidate)
            assert addr is None or parse_ip(addr) is not None


@given(st.binary(min_size=1, max_size=60))
def test_proxy_prefixes_ask_for_more(tail: bytes) -> None:
    # every strict prefix of a valid header either asks for more or (v1 only) is already complete
    for header in (b"PROXY TCP4 198.51.100.9 10.0.0.1 51234 443\r\n", v2(1, 1, V4_BODY)):
        for cut in range(len(header)):
            assert parse_proxy_header(header[:cut]) is None
        assert parse_proxy_header(header + tail)[0] == len(header)  # type: ignore[index]

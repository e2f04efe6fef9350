"""The client's address behind load balancers: forwarding headers and the PROXY protocol, trusted
only when they come from `server.trusted_proxies`.

Addresses come back normalised: IPv6 compressed and lower-case, an IPv4-mapped IPv6 address
("::ffff:1.2.3.4", what a dual-stack socket reports) as plain IPv4, ports and zone ids stripped.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from collections.abc import Iterable, Mapping

from edge360.core.errors import BadRequest, ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: forwarding chains longer than this are not walked further (each hop costs a parse)
MAX_HOPS = 64
_PORT_RE = re.compile(r"[0-9]{1,5}|_[A-Za-z0-9._-]+")  # RFC 7239 §6.3: node-port / obfport


def parse_ip(text: str) -> IPAddress | None:
    """An address from "1.2.3.4", "1.2.3.4:80", "2001:db8::1", "[2001:db8::1]:80"; else None."""
    s = text.strip()
    if s.startswith("["):
        host, bracket, rest = s[1:].partition("]")
        if not bracket or (rest and not (rest[0] == ":" and _PORT_RE.fullmatch(rest[1:]))):
            return None
        return _ip(host, v6_only=True)
    if s.count(":") == 1:  # IPv4 with a port; a bare IPv6 address has at least two colons
        host, _, port = s.partition(":")
        return _ip(host, v4_only=True) if _PORT_RE.fullmatch(port) else None
    return _ip(s)


def _ip(text: str, *, v4_only: bool = False, v6_only: bool = False) -> IPAddress | None:
    if (v4_only and ":" in text) or (v6_only and ":" not in text):
        return None
    host = text.partition("%")[0] if ":" in text else text  # a zone id means nothing off-link
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def normalise(addr: str) -> str:
    """The canonical text of an address (see the module docstring); unparseable text unchanged."""
    ip = parse_ip(addr)
    return str(ip) if ip is not None else addr


class TrustedProxies:
    """The set of proxy addresses/CIDRs whose forwarding information is believed."""

    def __init__(self, cidrs: Iterable[str] = ()) -> None:
        nets: list[IPNetwork] = []
        for c in cidrs:
            try:
                nets.append(ipaddress.ip_network(c.strip(), strict=False))
            except ValueError:
                raise ConfigError("server.trusted_proxies",
                                  f"not an address or CIDR: {c!r}") from None
        self._v4 = tuple(n for n in nets if isinstance(n, ipaddress.IPv4Network))
        self._v6 = tuple(n for n in nets if isinstance(n, ipaddress.IPv6Network))

    def __bool__(self) -> bool:
        return bool(self._v4 or self._v6)

    def contains(self, addr: str) -> bool:
        """Whether `addr` (any form parse_ip accepts) lies in a trusted network."""
        ip = parse_ip(addr)
        return ip is not None and self.contains_ip(ip)

    def contains_ip(self, ip: IPAddress) -> bool:
        """Whether an already parsed (and normalised) address lies in a trusted network."""
        if isinstance(ip, ipaddress.IPv4Address):
            return any(ip in n for n in self._v4)
        return any(ip in n for n in self._v6)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """All values of header `name` joined by commas (RFC 9110 §5.3), found case-insensitively."""
    getall = getattr(headers, "getall", None)  # multidict (aiohttp) keeps repeated headers apart
    if getall is not None:
        values = getall(name, None)
        return ", ".join(values) if values else None
    value = headers.get(name)
    if value is None:
        lower = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lower), None)
    return value


def _split_unquoted(text: str, sep: str) -> list[str]:
    """Split on `sep` outside RFC 9110 quoted-strings (a quoted value may hold commas)."""
    parts: list[str] = []
    cur: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return parts


def _unquote(value: str) -> str:
    v = value.strip()
    if len(v) >= 2 and v[0] == v[-1] == '"':
        return re.sub(r"\\(.)", r"\1", v[1:-1])
    return v


def _forwarded_for(value: str) -> list[str]:
    """The for= node of each RFC 7239 forwarded-element, in order; "" where an element has none."""
    nodes: list[str] = []
    for element in _split_unquoted(value, ","):
        node = ""
        for pair in _split_unquoted(element, ";"):
            name, eq, val = pair.partition("=")
            if eq and name.strip().lower() == "for":
                node = _unquote(val)
        nodes.append(node)
    return nodes


def client_address(peer: str, headers: Mapping[str, str], trusted: TrustedProxies) -> str:
    """The client's address: the peer itself, or (peer trusted) the rightmost untrusted hop.

    `Forwarded` (RFC 7239) wins over `X-Forwarded-For` when present. The chain is walked from the
    right, because only the hops appended by our own proxies are believable: a client can write
    anything at the left. An "unknown", obfuscated (RFC 7239 §6.3) or garbage hop stops the walk
    and the last valid address seen (a trusted proxy) or the peer is returned.
    """
    peer_ip = parse_ip(peer)
    if peer_ip is None or not trusted.contains_ip(peer_ip):
        return str(peer_ip) if peer_ip is not None else peer
    forwarded = _header(headers, "Forwarded")
    if forwarded is not None:
        chain = _forwarded_for(forwarded)
    else:
        xff = _header(headers, "X-Forwarded-For")
        chain = xff.split(",") if xff is not None else []
    best = peer_ip
    for hop in reversed(chain[-MAX_HOPS:]):
        ip = parse_ip(hop)
        if ip is None:
            break
        if not trusted.contains_ip(ip):
            return str(ip)
        best = ip
    return str(best)


# --- PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2) ---

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the spec's worst case line, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: largest v2 address block accepted (addresses plus TLVs); real balancers send well under this
V2_MAX_LENGTH = 2048
_V2_HEAD = 16


def parse_proxy_header(data: bytes) -> tuple[int, str | None] | None:
    """(bytes consumed, source address or None for LOCAL/UNKNOWN); None while more bytes are needed.

    Raises BadRequest when `data` does not start with a well-formed v1 or v2 header.
    """
    if not data:
        return None
    if data[:1] == V1_PREFIX[:1]:
        return _parse_v1(data)
    if data[:1] == V2_SIGNATURE[:1]:
        return _parse_v2(data)
    raise BadRequest("not a PROXY protocol header")


def _parse_v1(data: bytes) -> tuple[int, str | None] | None:
    if not data.startswith(V1_PREFIX[: len(data)]):
        raise BadRequest("not a PROXY protocol header")
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise BadRequest("PROXY v1 header too long")
        return None
    try:
        line = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest("PROXY v1 header is not ASCII") from None
    fields = line.split(" ")
    if len(fields) >= 2 and fields[1] == "UNKNOWN":
        return end + 2, None  # the balancer could not tell; the real peer stands (spec §2.1)
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise BadRequest("malformed PROXY v1 header")
    _, proto, src, dst, sport, dport = fields
    for port in (sport, dport):
        if not (port.isdigit() and port.isascii() and len(port) <= 5 and int(port) <= 65535):
            raise BadRequest("malformed PROXY v1 port")
    version = 4 if proto == "TCP4" else 6
    src_ip = _strict_ip(src, version)
    _strict_ip(dst, version)
    return end + 2, str(src_ip)


def _strict_ip(text: str, version: int) -> IPAddress:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise BadRequest("malformed PROXY v1 address") from None
    if ip.version != version:
        raise BadRequest("PROXY v1 address of the wrong family")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _parse_v2(data: bytes) -> tuple[int, str | None] | None:
    if not data.startswith(V2_SIGNATURE[: len(data)]):
        raise BadRequest("not a PROXY protocol header")
    if len(data) < _V2_HEAD:
        return None
    ver_cmd, fam, length = struct.unpack_from("!BBH", data, len(V2_SIGNATURE))
    if ver_cmd >> 4 != 2:
        raise BadRequest("unsupported PROXY protocol version")
    command = ver_cmd & 0x0F
    if command not in (0, 1):  # 0 LOCAL (health checks), 1 PROXY
        raise BadRequest("unknown PROXY v2 command")
    family, transport = fam >> 4, fam & 0x0F
    if family > 3 or transport > 2:
        raise BadRequest("unknown PROXY v2 address family")
    if length > V2_MAX_LENGTH:
        raise BadRequest("PROXY v2 header too long")
    total = _V2_HEAD + length
    if len(data) < total:
        return None
    if command == 0:
        return total, None  # LOCAL: the balancer speaks for itself, addresses are ignored
    body = data[_V2_HEAD:total]
    if family == 1:  # AF_INET: src 4, dst 4, ports 2 + 2
        if length < 12:
            raise BadRequest("short PROXY v2 IPv4 block")
        return total, str(ipaddress.IPv4Address(body[:4]))
    if family == 2:  # AF_INET6: src 16, dst 16, ports 2 + 2
        if length < 36:
            raise BadRequest("short PROXY v2 IPv6 block")
        ip6 = ipaddress.IPv6Address(body[:16])
        return total, str(ip6.ipv4_mapped or ip6)
    return total, None  # AF_UNSPEC / AF_UNIX: nothing routable to report

"""The parsers of config values: each takes a value as a TOML file, an EDGE360_* variable (always
a string) or a flag gives it and returns it typed and checked, or raises BadValue saying what it
expected; `config` names the key in the error.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable
from typing import Any

Parser = Callable[[Any], Any]

_SIZE_UNITS = {
    "": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
    "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4, "tb": 1000**4,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


class BadValue(Exception):
    """Raised by a parser with the description of what it expected."""


def _describe(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def integer(lo: int, hi: int) -> Parser:
    def parse(v: Any) -> int:
        if isinstance(v, bool):
            raise BadValue(f"expected an integer {lo}-{hi}, got {_describe(v)}")
        if isinstance(v, str) and re.fullmatch(r"\s*-?\d+\s*", v):
            v = int(v)
        if not isinstance(v, int) or not lo <= v <= hi:
            raise BadValue(f"expected an integer {lo}-{hi}, got {_describe(v)}")
        return v
    return parse


def number(lo: float, hi: float) -> Parser:
    def parse(v: Any) -> float:
        if isinstance(v, bool):
            raise BadValue(f"expected a number {lo:g}-{hi:g}, got {_describe(v)}")
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                raise BadValue(f"expected a number {lo:g}-{hi:g}, got {_describe(v)}") from None
        if not isinstance(v, int | float) or math.isnan(v) or not lo <= v <= hi:
            raise BadValue(f"expected a number {lo:g}-{hi:g}, got {_describe(v)}")
        return float(v)
    return parse


def boolean(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(v, str) and v.strip().lower() in ("0", "false", "no", "off", ""):
        return False
    raise BadValue(f"expected true or false, got {_describe(v)}")


def text(v: Any) -> str:
    if not isinstance(v, str):
        raise BadValue(f"expected a string, got {_describe(v)}")
    if "\x00" in v:
        raise BadValue("expected a string without NUL")
    return v


def choice(*options: str) -> Parser:
    def parse(v: Any) -> str:
        if not isinstance(v, str) or v not in options:
            raise BadValue(f"expected one of {', '.join(options)}, got {_describe(v)}")
        return v
    return parse


def size(lo: int = 0, hi: int = 1 << 50) -> Parser:
    def parse(v: Any) -> int:
        if isinstance(v, int) and not isinstance(v, bool):
            n = v
        elif isinstance(v, str) and (m := _SIZE_RE.match(v)) and m.group(2).lower() in _SIZE_UNITS:
            n = int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
        else:
            raise BadValue(f"expected a size in bytes such as 512MiB, got {_describe(v)}")
        if not lo <= n <= hi:
            raise BadValue(f"expected a size between {lo} and {hi} bytes, got {_describe(v)}")
        return n
    return parse


def string_list(item: Parser = text) -> Parser:
    def parse(v: Any) -> tuple[Any, ...]:
        if isinstance(v, str):  # the environment's comma-separated form
            v = [p.strip() for p in v.split(",") if p.strip()]
        if not isinstance(v, list | tuple):
            raise BadValue(f"expected a list, got {_describe(v)}")
        return tuple(item(x) for x in v)
    return parse


def url(v: Any) -> str:
    s = text(v).rstrip("/")
    if not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", s):
        raise BadValue(f"expected an http:// or https:// URL, got {_describe(v)}")
    return s


#: a content steering Pathway ID (HLS 2nd edition, Content Steering: letters, digits, . - _)
_PATHWAY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def pathway(v: Any) -> tuple[str, str]:
    """"ID=BASE_URL" -> (ID, BASE_URL): a content steering pathway and the base its URIs get."""
    s = text(v).strip()
    pid, eq, base = s.partition("=")
    if not eq or not _PATHWAY_ID.fullmatch(pid.strip()):
        raise BadValue(f"expected ID=BASE_URL with an ID of letters, digits, '.', '-' or '_', "
                       f"got {_describe(v)}")
    return pid.strip(), url(base.strip())


def cidr(v: Any) -> str:
    s = text(v)
    try:
        return str(ipaddress.ip_network(s, strict=False))
    except ValueError:
        raise BadValue(f"expected an address or CIDR, got {_describe(v)}") from None


def method(v: Any) -> str:
    s = text(v).upper()
    # RFC 9110 §9.1: a method is a token (e.g. M-SEARCH); GET and HEAD are always served
    if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Z-]{1,32}", s) or s in ("GET", "HEAD"):
        raise BadValue(f"expected an HTTP method other than GET/HEAD, got {_describe(v)}")
    return s


def workers(v: Any) -> int:
    if v == "auto":
        return os.cpu_count() or 1
    return integer(1, 256)(v)  # type: ignore[no-any-return]


def listen_address(v: Any) -> str:
    """"host:port" ("[v6]:port" for IPv6); "" = off."""
    s = text(v).strip()
    if not s:
        return ""
    host, sep, port = s.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535 or " " in host:
        raise BadValue(f"expected host:port, got {_describe(v)}")
    return s


def key_params(v: Any) -> tuple[str, ...]:
    if v == "*":
        return ("*",)
    return string_list()(v)  # type: ignore[no-any-return]


def url_path(v: Any) -> str:
    """An absolute URL path with an optional query ("/healthz", "/ping?x=1"); "" = off."""
    s = text(v).strip()
    if s and not re.fullmatch(r"/[^\s#]*", s):
        raise BadValue(f"expected a path starting with /, got {_describe(v)}")
    return s


def optional_path(v: Any) -> str:
    return text(v)

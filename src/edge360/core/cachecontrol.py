"""Parsing the header fields that steer HTTP caching into values: Cache-Control (RFC 9111 §5.2),
the targeted fields Edge360-Cache-Control and CDN-Cache-Control (RFC 9213), Pragma, Age, Expires,
Date, Last-Modified, and Vary into its secondary cache key (RFC 9111 §4.1).

Headers are `Mapping[str, str]` with lower-cased names and repeated field lines comma-joined
(RFC 9110 §5.3). Nothing here raises on bad input: a malformed value becomes "absent" or "invalid"
as the RFCs prescribe, and `policy` decides what that means.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from edge360.core.conditional import parse_http_date
from edge360.core.structuredfields import parse_dictionary

#: RFC 9111 §1.2.2: a delta-seconds too large to represent is passed on as 2^31.
MAX_DELTA: Final = 2**31
#: Directives whose argument is delta-seconds (RFC 9111 §5.2.1, §5.2.2; RFC 5861 §3-4).
DELTA_DIRECTIVES: Final = frozenset({
    "max-age", "s-maxage", "max-stale", "min-fresh", "stale-while-revalidate", "stale-if-error"})
#: Directives whose argument is a list of field names (RFC 9111 §5.2.2.4, §5.2.2.7).
FIELD_LIST_DIRECTIVES: Final = frozenset({"no-cache", "private"})

#: Our own targeted field (RFC 9213 §2): it outranks CDN-Cache-Control for edge360 caches only.
EDGE360_CACHE_CONTROL: Final = "edge360-cache-control"
CDN_CACHE_CONTROL: Final = "cdn-cache-control"
#: Targeted fields in the order this cache obeys them (RFC 9213 §2.2: the first valid one wins).
TARGETED_FIELDS: Final = (EDGE360_CACHE_CONTROL, CDN_CACHE_CONTROL)

_TOKEN: Final = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED: Final = r'"(?:[^"\\]|\\.)*"'
# RFC 9111 §5.2: cache-directive = token [ "=" ( token / quoted-string ) ]; no whitespace around
# "=", so "max-age = 60" is malformed (and treated as an invalid max-age, i.e. stale).
_CC_MEMBER: Final = re.compile(rf"[ \t]*({_TOKEN})(?:=({_TOKEN}|{_QUOTED}))?[ \t]*(?:,|\Z)")
_CC_NAME: Final = re.compile(rf"[ \t]*({_TOKEN})")
_SKIP_TO_COMMA: Final = re.compile(rf'(?:[^,"]|{_QUOTED}|")*,?')
_DIGITS: Final = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class Directives:
    """The cache directives of one field. Names are lower-cased (§5.2: case-insensitive).

    Duplicates (§4.2.1): a directive counts once; for delta-seconds directives, repeats with
    different values make the directive invalid, which for max-age/s-maxage means "stale" - the
    second option §4.2.1 allows and the safe one whichever order the values come in.
    """

    #: every directive present (valid or not), e.g. {"max-age", "public"}
    names: frozenset[str] = frozenset()
    #: valid delta-seconds arguments, capped at MAX_DELTA
    deltas: Mapping[str, int] = field(default_factory=dict)
    #: directives present with a malformed, non-numeric, negative or conflicting argument
    invalid: frozenset[str] = frozenset()
    #: field names of qualified no-cache / private (lower-cased)
    field_names: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: which header these came from ("" when none was present)
    source: str = ""

    def has(self, name: str) -> bool:
        return name in self.names

    def delta(self, name: str) -> int | None:
        """The valid delta-seconds of `name`, or None when absent or invalid."""
        return self.deltas.get(name)

    @property
    def targeted(self) -> bool:
        """Whether these came from a targeted field (so Cache-Control and Expires are ignored)."""
        return self.source in TARGETED_FIELDS


EMPTY: Final = Directives()


class _Builder:
    """Accumulates directives, applying the duplicate and validity rules of `Directives`."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.deltas: dict[str, int] = {}
        self.invalid: set[str] = set()
        self.fields: dict[str, tuple[str, ...]] = {}

    def add(self, name: str, value: str | None) -> None:
        """Add one directive read from Cache-Control text (`value` unquoted, None if bare)."""
        if name in DELTA_DIRECTIVES:
            if value is None:
                # A bare max-stale accepts any staleness (§5.2.1.2); other bare deltas are invalid.
                self.add_delta(name, MAX_DELTA if name == "max-stale" else None)
            else:
                self.add_delta(name, int(value) if _DIGITS.fullmatch(value) else None)
            return
        first = name not in self.names
        self.names.add(name)
        if name in FIELD_LIST_DIRECTIVES and value is not None and first:
            self.fields[name] = tuple(
                f.strip(" \t").lower() for f in value.split(",") if f.strip(" \t"))

    def add_delta(self, name: str, seconds: int | None) -> None:
        """Add a delta-seconds directive; None or a negative number is an invalid argument."""
        first = name not in self.names
        self.names.add(name)
        if name in self.invalid:
            return
        if seconds is None or seconds < 0 or (not first and self.deltas.get(name) != seconds):
            # §4.2.1: an invalid or conflicting value makes the response stale (for max-age).
            self.invalid.add(name)
            self.deltas.pop(name, None)
            return
        self.deltas[name] = min(seconds, MAX_DELTA)  # §1.2.2

    def mark_invalid(self, name: str) -> None:
        self.names.add(name)
        self.invalid.add(name)
        self.deltas.pop(name, None)

    def build(self, source: str) -> Directives:
        return Directives(frozenset(self.names), self.deltas, frozenset(self.invalid),
                          self.fields, source)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def parse_cache_control(value: str | None, source: str = "cache-control") -> Directives:
    """Parse a Cache-Control (or Pragma) field value (RFC 9111 §5.2); never raises.

    Names are case-insensitive; arguments are a token or a quoted-string (`max-age="60"` is 60,
    §5.2: senders SHOULD NOT quote it, recipients accept both). A malformed member is skipped up
    to the next comma; if its name could be read, that directive counts as present but invalid.
    Unknown directives are kept in `names` and otherwise ignored (§5.2.3).
    """
    if not value:
        return Directives(source="")
    b = _Builder()
    pos, n = 0, len(value)
    # Every pass consumes at least one character, so the loop ends within n passes.
    while pos < n:
        if value[pos] in ", \t":
            pos += 1
            continue
        m = _CC_MEMBER.match(value, pos)
        if m is not None:
            raw = m.group(2)
            b.add(m.group(1).lower(), None if raw is None else _unquote(raw))
            pos = m.end()
            continue
        name = _CC_NAME.match(value, pos)
        if name is not None:
            b.mark_invalid(name.group(1).lower())
        skip = _SKIP_TO_COMMA.match(value, pos)
        pos = max(pos + 1, skip.end() if skip else n)
    return b.build(source)


def parse_targeted(value: str | None, source: str = CDN_CACHE_CONTROL) -> Directives | None:
    """Parse a targeted field (RFC 9213 §2.1: an RFC 8941 Dictionary); None when it is empty or
    does not parse, so the cache falls back to the next field.

    RFC 8941 §3.2: of duplicate keys the last wins. A boolean false member counts as absent; a
    delta-seconds directive whose value is not a non-negative Integer is invalid (stale).
    """
    if value is None or not value.strip(" \t"):
        return None
    members = parse_dictionary(value)
    if members is None:
        return None
    last = dict(members)
    b = _Builder()
    for name, v in last.items():
        if v is False:
            continue
        if name in DELTA_DIRECTIVES and v is True:
            b.add(name, None)  # bare: valid only for max-stale
        elif name in DELTA_DIRECTIVES:
            # Integer only: "3600" (a String) or 1.5 (a Decimal) is the wrong type, so invalid.
            b.add_delta(name, v if isinstance(v, int) and not isinstance(v, bool) else None)
        elif name in FIELD_LIST_DIRECTIVES and isinstance(v, str):
            b.add(name, v)
        elif name in FIELD_LIST_DIRECTIVES and isinstance(v, list):
            b.add(name, ",".join(x for x in v if isinstance(x, str)))
        else:
            b.add(name, None)
    return b.build(source)


def cache_directives(headers: Mapping[str, str]) -> Directives:
    """The response directives this (shared, edge360) cache obeys.

    RFC 9213 §2.2: the first present and valid field of Edge360-Cache-Control, CDN-Cache-Control
    wins and every lower one - Cache-Control included - is ignored by this cache (it still goes
    downstream). Otherwise Cache-Control; response Pragma is ignored (RFC 9111 §5.4).
    """
    for name in TARGETED_FIELDS:
        parsed = parse_targeted(headers.get(name), name)
        if parsed is not None:
            return parsed
    return parse_cache_control(headers.get("cache-control"))


def request_directives(headers: Mapping[str, str]) -> Directives:
    """The request's Cache-Control; without one, `Pragma: no-cache` counts as `no-cache`
    (RFC 9111 §5.4 keeps that for HTTP/1.0 clients)."""
    cc = headers.get("cache-control")
    if cc is not None and cc.strip(" \t"):
        return parse_cache_control(cc)
    if "no-cache" in parse_cache_control(headers.get("pragma"), "pragma").names:
        return Directives(names=frozenset({"no-cache"}), source="pragma")
    return EMPTY


def split_list(value: str) -> list[str]:
    """The members of a comma-separated list (RFC 9110 §5.6.1), commas in quoted strings kept,
    OWS trimmed, empty members dropped."""
    out: list[str] = []
    for m in re.finditer(rf'(?:[^,"]|{_QUOTED}|")+', value):
        member = m.group(0).strip(" \t")
        if member:
            out.append(member)
    return out


def age_value(headers: Mapping[str, str]) -> int:
    """The Age in seconds (RFC 9111 §5.1): of a list, the first member counts; an invalid value
    (not a non-negative integer: "-1", "1.5", "abc") is ignored, i.e. 0; capped at 2^31."""
    raw = headers.get("age")
    if raw is None:
        return 0
    first = raw.split(",", 1)[0].strip(" \t")
    return min(int(first), MAX_DELTA) if _DIGITS.fullmatch(first) else 0


def date_value(headers: Mapping[str, str]) -> float | None:
    """The Date as wall seconds, or None when absent or invalid (then the receipt time stands in,
    RFC 9110 §6.6.1)."""
    return parse_http_date(headers.get("date"))


def expires_value(headers: Mapping[str, str]) -> float | None:
    """The Expires as wall seconds; None when absent. RFC 9111 §5.3: an invalid date ("0", two
    comma-joined dates, ...) means a time in the past, here the epoch."""
    raw = headers.get("expires")
    if raw is None:
        return None
    parsed = parse_http_date(raw)
    return 0.0 if parsed is None else parsed


def last_modified_value(headers: Mapping[str, str]) -> float | None:
    """The Last-Modified as wall seconds, or None when absent or invalid."""
    return parse_http_date(headers.get("last-modified"))


# RFC 9110 §12.5: these fields' values are case-insensitive, so case differences do not split
# the cache (RFC 9111 §4.1 allows normalising "in a way known to have identical semantics").
_CASELESS_FIELDS: Final = frozenset({"accept-encoding", "accept-language", "accept-charset"})


def vary_fields(vary: str | None) -> tuple[str, ...] | None:
    """The request fields a response varies on, lower-cased, sorted, unique; None for `*`."""
    names = {n.lower() for n in split_list(vary or "")}
    return None if "*" in names else tuple(sorted(names))


def vary_key(vary: str | None, request_headers: Mapping[str, str]) -> str | None:
    """The secondary cache key (RFC 9111 §4.1): the varied request fields' normalised values, ""
    without Vary, None for `Vary: *` (never matches). Normalising removes OWS around list
    commas and empty members and lower-cases case-insensitive fields; an absent field differs
    from an empty one."""
    names = vary_fields(vary)
    if names is None:
        return None
    parts: list[str] = []
    for name in names:
        value = request_headers.get(name)
        if value is None:
            parts.append(f"{name}!")
            continue
        norm = ",".join(split_list(value))
        norm = norm.lower() if name in _CASELESS_FIELDS else norm
        # Valid values hold no newline (RFC 9110 §5.5); escaping keeps the key unambiguous anyway.
        parts.append(f"{name}=" + norm.replace("\\", "\\\\").replace("\n", "\\n"))
    return "\n".join(parts)


def downstream_headers(headers: Mapping[str, str], *, to_peer: bool = False) -> dict[str, str]:
    """Response headers as the edge forwards them: Edge360-Cache-Control is ours and goes only to
    a child edge360 (`to_peer`); CDN-Cache-Control and Cache-Control pass on (RFC 9213 §2)."""
    if to_peer:
        return dict(headers)
    return {k: v for k, v in headers.items() if k != EDGE360_CACHE_CONTROL}

"""Validators and conditional requests (RFC 9110 §8.8 and §13): ETags, HTTP-dates, preconditions.

Pure decisions: given the request's lower-cased headers and the selected representation's
validators, say whether to proceed, answer 304 or answer 412, and whether If-Range lets a Range
header count. Preconditions are only evaluated for a representation that exists (§13.2.1: a server
ignores them when the unconditional answer would not be 2xx), so "*" always matches here.
"""

from __future__ import annotations

import calendar
import enum
import functools
import math
import re
from collections.abc import Mapping
from email.utils import formatdate
from typing import Final

_MONTHS: Final = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_DAY: Final = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_LONG_DAY: Final = r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH: Final = r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME: Final = r"([0-9]{2}):([0-9]{2}):([0-9]{2})"
# RFC 9110 §5.6.7: IMF-fixdate, plus the obsolete rfc850-date and asctime-date recipients accept.
_IMF_FIXDATE: Final = re.compile(rf"{_DAY}, ([0-9]{{2}}) {_MONTH} ([0-9]{{4}}) {_TIME} GMT")
_RFC850: Final = re.compile(rf"{_LONG_DAY}, ([0-9]{{2}})-{_MONTH}-([0-9]{{2}}) {_TIME} GMT")
_ASCTIME: Final = re.compile(rf"{_DAY} {_MONTH} ([0-9 ][0-9]) {_TIME} ([0-9]{{4}})")

# RFC 9110 §8.8.3: entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE; etagc = %x21 / %x23-7E / obs-text.
_ETAG: Final = r'(W/)?"([\x21\x23-\x7e\x80-\xff]*)"'
_ETAG_RE: Final = re.compile(_ETAG)
_LIST_ELEMENT_RE: Final = re.compile(rf"[ \t]*{_ETAG}[ \t]*(?:,|\Z)")


class Outcome(enum.Enum):
    """What the preconditions say: serve normally, 304 Not Modified, or 412 Precondition Failed."""

    PROCEED = "proceed"
    NOT_MODIFIED = "not_modified"
    PRECONDITION_FAILED = "precondition_failed"


def make_etag(size: int, mtime_ns: int, ino: int = 0) -> str:
    """A strong ETag from a file's size, modification time in nanoseconds and inode (when given).

    Strong is right for files served byte for byte: any change of content changes size or mtime,
    and a file replaced by a rename is another inode even when both are equal.
    """
    if ino:
        return f'"{ino:x}-{size:x}-{mtime_ns:x}"'
    return f'"{size:x}-{mtime_ns:x}"'


def http_date(ts: float) -> str:
    """The IMF-fixdate for a Unix time, e.g. "Sun, 06 Nov 1994 08:49:37 GMT" (§5.6.7)."""
    return formatdate(ts, usegmt=True)


def parse_http_date(value: str | None) -> float | None:
    """A Unix time from any of the three HTTP-date forms (§5.6.7), or None when invalid."""
    if value is None:
        return None
    # remembered: the same few dates (a stored object's Last-Modified, a player's
    # If-Modified-Since) are read on every request for them; a date is 29 characters, so a
    # longer value (a client's junk) is read without being remembered
    return _remembered(value) if len(value) <= _REMEMBERED else _parse_date(value)


_REMEMBERED: Final = 64


def _parse_date(value: str) -> float | None:
    value = value.strip(" \t")
    if m := _IMF_FIXDATE.fullmatch(value):
        day, month, year, hh, mm, ss = m.groups()
    elif m := _RFC850.fullmatch(value):
        day, month, yy, hh, mm, ss = m.groups()
        # §5.6.7 asks to read a two-digit year as the most recent past year with those digits;
        # without a clock we pivot at 70, the Unix epoch, which agrees until 2070.
        year = str((1900 if int(yy) >= 70 else 2000) + int(yy))
    elif m := _ASCTIME.fullmatch(value):
        month, day, hh, mm, ss, year = m.groups()
    else:
        return None
    fields = (int(year), _MONTHS[month], int(day), int(hh), int(mm), int(ss))
    y, mo, d, h, mi, s = fields
    days_in_month = calendar.monthrange(y, mo)[1] if y >= 1 else 0
    # second may be 60 for a leap second (§5.6.7); time_t has none, so it counts as 59.
    if not (1 <= d <= days_in_month and h <= 23 and mi <= 59 and s <= 60):
        return None
    return float(calendar.timegm((y, mo, d, h, mi, min(s, 59), 0, 0, 0)))


_remembered = functools.lru_cache(maxsize=1024)(_parse_date)


def _parse_etag(value: str) -> tuple[bool, str] | None:
    """(weak, opaque-tag) of a single entity-tag, or None when it is not one."""
    m = _ETAG_RE.fullmatch(value.strip(" \t"))
    if m is None:
        return None
    return m.group(1) is not None, m.group(2)


def _etag_list(value: str) -> list[tuple[bool, str]]:
    """The entity-tags of a #entity-tag list (§13.1.1); junk elements are skipped, never matched."""
    tags: list[tuple[bool, str]] = []
    pos = 0
    # Every pass consumes at least one character, so the loop ends within len(value) passes.
    while pos < len(value):
        m = _LIST_ELEMENT_RE.match(value, pos)
        if m is not None and m.end() > pos:
            tags.append((m.group(1) is not None, m.group(2)))
            pos = m.end()
            continue
        comma = value.find(",", pos)
        pos = len(value) if comma < 0 else comma + 1
    return tags


def strong_match(a: str, b: str) -> bool:
    """Strong comparison (§8.8.3.2): both strong and the opaque-tags identical."""
    pa, pb = _parse_etag(a), _parse_etag(b)
    return pa is not None and pb is not None and not pa[0] and not pb[0] and pa[1] == pb[1]


def weak_match(a: str, b: str) -> bool:
    """Weak comparison (§8.8.3.2): opaque-tags identical, either may be weak."""
    pa, pb = _parse_etag(a), _parse_etag(b)
    return pa is not None and pb is not None and pa[1] == pb[1]


def _list_matches(value: str, etag: str | None, *, strong: bool) -> bool:
    """Whether an If-Match/If-None-Match value matches the current ETag."""
    if value.strip(" \t") == "*":
        return True  # the representation exists (see the module docstring)
    current = _parse_etag(etag) if etag is not None else None
    if current is None:
        return False
    cur_weak, cur_tag = current
    for weak, tag in _etag_list(value):
        if tag == cur_tag and (not strong or not (weak or cur_weak)):
            return True
    return False


def _whole_seconds(ts: float) -> int:
    """Last-Modified as sent: HTTP-dates have one-second resolution, so compare floored seconds."""
    return math.floor(ts)


def evaluate_preconditions(method: str, headers: Mapping[str, str], etag: str | None,
                           last_modified: float | None) -> Outcome:
    """Evaluate If-Match, If-Unmodified-Since, If-None-Match, If-Modified-Since in the order of
    RFC 9110 §13.2.2. `headers` has lower-cased names with repeated fields comma-joined."""
    safe = method.upper() in ("GET", "HEAD")
    if_match = headers.get("if-match")
    if if_match is not None:
        # §13.1.1: If-Match uses the strong comparison.
        if not _list_matches(if_match, etag, strong=True):
            return Outcome.PRECONDITION_FAILED
    else:
        # §13.1.4: ignored when If-Match is present, the date is invalid, or there is no
        # modification date to compare with.
        since = parse_http_date(headers.get("if-unmodified-since"))
        if since is not None and last_modified is not None \
                and _whole_seconds(last_modified) > since:
            return Outcome.PRECONDITION_FAILED
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        # §13.1.2: If-None-Match uses the weak comparison; a match is 304 only for GET/HEAD.
        if _list_matches(if_none_match, etag, strong=False):
            return Outcome.NOT_MODIFIED if safe else Outcome.PRECONDITION_FAILED
        return Outcome.PROCEED
    if safe and last_modified is not None:
        # §13.1.3: only GET/HEAD, only without If-None-Match, only for a valid single date.
        since = parse_http_date(headers.get("if-modified-since"))
        if since is not None and _whole_seconds(last_modified) <= since:
            return Outcome.NOT_MODIFIED
    return Outcome.PROCEED


def if_range_matches(value: str | None, etag: str | None, last_modified: float | None) -> bool:
    """Whether a Range header may be honoured given this If-Range value (§13.1.5).

    No If-Range: yes. An entity-tag: only a strong match with the current strong ETag. A date: only
    exact equality with Last-Modified. Anything else (weak tag, junk, no validator): no, and the
    caller sends the whole representation with 200, which is always a correct answer.
    """
    if value is None:
        return True
    value = value.strip(" \t")
    if value.startswith(('"', "W/")):
        return etag is not None and strong_match(value, etag)
    date = parse_http_date(value)
    return date is not None and last_modified is not None and _whole_seconds(last_modified) == date

"""Common Media Client Data (CTA-5004) as a virtual player sends it (`--cmcd query|headers`).

Pure. A request's data is a set of keys; each is sent either in one `CMCD` query parameter (keys in
alphabetical order, comma-separated, the whole URL-encoded) or in four headers by how long its
value stays valid: CMCD-Object (br, d, ot, tb), CMCD-Request (bl, su), CMCD-Session (pr, sf, sid,
st) and CMCD-Status (bs). Values follow the specification's types: integers (bl in milliseconds
rounded to the nearest 100, d in milliseconds, br and tb in kbit/s), tokens (ot, sf, st), a quoted
string (sid), a decimal (pr) and booleans that are sent as the bare key when true and left out
when false. `pr` is left out at 1, as the specification asks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.parse import quote

#: which header carries each key (CTA-5004 §3.3)
SHARDS: dict[str, str] = {
    "br": "CMCD-Object", "d": "CMCD-Object", "ot": "CMCD-Object", "tb": "CMCD-Object",
    "bl": "CMCD-Request", "su": "CMCD-Request",
    "pr": "CMCD-Session", "sf": "CMCD-Session", "sid": "CMCD-Session", "st": "CMCD-Session",
    "bs": "CMCD-Status",
}
MODES = ("query", "headers")


@dataclass(frozen=True)
class Data:
    """What a player knows as it sends one request."""

    ot: str                        # object type: m (playlist), av, v, a, c, i, k, o
    sid: str                       # the playback session id
    pr: float = 1.0                # playback rate (a replay at --speed N plays at N)
    st: str | None = None          # stream type: v (VOD) or l (live), once known
    br_kbps: float | None = None   # the object's encoded bitrate (its rendition's BANDWIDTH)
    tb_kbps: float | None = None   # the top bitrate of the ladder
    d_s: float | None = None       # the object's duration (EXTINF)
    bl_s: float | None = None      # media buffered ahead at the request
    su: bool = False               # needed urgently: start-up, or recovery after running dry
    bs: bool = False               # the buffer ran dry since the previous request


def object_type(url: str) -> str:
    """The `ot` token of a segment by its extension (a TS segment carries audio and video)."""
    path = url.partition("?")[0].lower()
    for ext, token in ((".m3u8", "m"), (".ts", "av"), (".m4a", "a"), (".aac", "a"),
                       (".vtt", "c"), (".key", "k"), (".m4s", "v"), (".mp4", "v")):
        if path.endswith(ext):
            return token
    return "o"


def _integer(x: float) -> str:
    """Rounded half up, as the specification's "rounded to the nearest" reads (not to even)."""
    return str(math.floor(x + 0.5))


def _decimal(x: float) -> str:
    text = f"{x:.3f}".rstrip("0").rstrip(".")
    return text or "0"


def _string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def pairs(data: Data) -> list[tuple[str, str | None]]:
    """(key, encoded value) in alphabetical key order; None is a true boolean (the bare key)."""
    out: dict[str, str | None] = {"ot": data.ot, "sf": "h", "sid": _string(data.sid)}
    if abs(data.pr - 1.0) > 1e-9:
        out["pr"] = _decimal(data.pr)
    if data.st:
        out["st"] = data.st
    if data.br_kbps is not None:
        out["br"] = _integer(data.br_kbps)
    if data.tb_kbps is not None:
        out["tb"] = _integer(data.tb_kbps)
    if data.d_s is not None:
        out["d"] = _integer(data.d_s * 1000)
    if data.bl_s is not None:
        out["bl"] = str(math.floor(max(data.bl_s, 0.0) * 10 + 0.5) * 100)
    if data.su:
        out["su"] = None
    if data.bs:
        out["bs"] = None
    return sorted(out.items())


def _joined(items: list[tuple[str, str | None]]) -> str:
    return ",".join(k if v is None else f"{k}={v}" for k, v in items)


def payload(data: Data) -> str:
    """The CMCD value, unencoded: `bl=2300,br=800,d=6000,ot=av,sf=h,sid="..."`."""
    return _joined(pairs(data))


def with_query(url: str, data: Data) -> str:
    """`url` with its `CMCD` query parameter (URL-encoded as encodeURIComponent does)."""
    value = quote(payload(data), safe="!'()*-._~")
    return f"{url}{'&' if '?' in url else '?'}CMCD={value}"


def headers(data: Data) -> dict[str, str]:
    """The four CMCD headers (only those with a key to carry)."""
    shards: dict[str, list[tuple[str, str | None]]] = {}
    for key, value in pairs(data):
        shards.setdefault(SHARDS[key], []).append((key, value))
    return {name: _joined(items) for name, items in sorted(shards.items())}

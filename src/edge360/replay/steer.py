"""Content steering as a virtual player follows it (HLS 2nd edition, EXT-X-CONTENT-STEERING and
its Steering Manifest, as hls.js applies them): the master's variants grouped by pathway, the
steering manifest reloaded every TTL with `_HLS_pathway` and `_HLS_throughput`, and a move to the
first pathway of its PATHWAY-PRIORITY that is not penalized. A pathway whose segment failed is
penalized for PENALTY_S and the player moves to the next one at once, as hls.js moves away from
a host that fails. Parsing is pure; `poll` does one GET through the player's connection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from edge360.replay.wire import FetchError, Getter

#: seconds a pathway that failed is kept out of the player's choice (hls.js: five minutes)
PENALTY_S = 300.0
#: a steering manifest's TTL when it gives none (the specification's default)
DEFAULT_TTL = 300.0
#: the pathway of variants that name none (hls.js names it ".")
NO_PATHWAY = "."


@dataclass
class Pathways:
    """What a master says about steering: where the manifest is, where to start, and each
    pathway's variants as (BANDWIDTH, absolute URL), sorted by bandwidth."""

    server_uri: str | None
    start: str | None
    variants: dict[str, list[tuple[int, str]]] = field(default_factory=dict)

    @property
    def steered(self) -> bool:
        return self.server_uri is not None and len(self.variants) > 1


def _attrs(line: str) -> dict[str, str]:
    out: dict[str, str] = {}
    rest = line.split(":", 1)[1] if ":" in line else ""
    key, value, quoted, buf = "", "", False, ""
    for ch in rest + ",":
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            key, _, value = buf.partition("=")
            out[key.strip()] = value.strip().strip('"')
            buf = ""
            continue
        buf += ch
    return out


def parse_pathways(text: str, base: str) -> Pathways:
    """The master's steering tag and its variants by PATHWAY-ID (RFC 8216bis §4.4.6.6)."""
    server, start = None, None
    groups: dict[str, list[tuple[int, str]]] = {}
    pending: tuple[int, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#EXT-X-CONTENT-STEERING:"):
            attrs = _attrs(line)
            server = urljoin(base, attrs["SERVER-URI"]) if attrs.get("SERVER-URI") else None
            start = attrs.get("PATHWAY-ID")
        elif line.startswith("#EXT-X-STREAM-INF:"):
            attrs = _attrs(line)
            try:
                bandwidth = int(attrs.get("BANDWIDTH", "0"))
            except ValueError:
                bandwidth = 0
            pending = (bandwidth, attrs.get("PATHWAY-ID", NO_PATHWAY))
        elif pending is not None and line and not line.startswith("#"):
            groups.setdefault(pending[1], []).append((pending[0], urljoin(base, line)))
            pending = None
    for variants in groups.values():
        variants.sort(key=lambda v: v[0])
    return Pathways(server, start, groups)


def with_params(url: str, **params: str) -> str:
    """`url` with these query parameters set (replacing any of the same name)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k not in params]
    return urlunsplit((parts.scheme, parts.netloc, parts.path,
                       urlencode([*query, *params.items()]), parts.fragment))


class Steerer:
    """One player's steering: its pathway, the manifest's priority, the pathways it penalized."""

    def __init__(self, paths: Pathways) -> None:
        self.paths = paths
        first = next(iter(paths.variants))
        self.pathway = paths.start if paths.start in paths.variants else first
        self.uri = paths.server_uri
        self.priority: list[str] = list(paths.variants)
        self.penalized: dict[str, float] = {}
        self.ttl = DEFAULT_TTL
        self.next_at = 0.0  # the first manifest is asked for at once, as hls.js does
        self.polls = self.errors = 0

    def variants(self) -> list[tuple[int, str]]:
        return self.paths.variants[self.pathway]

    def due(self, now: float) -> bool:
        return self.uri is not None and now >= self.next_at

    async def poll(self, http: Getter, now: float, throughput: float) -> str | None:
        """Reload the steering manifest; the pathway to move to, or None to stay."""
        assert self.uri is not None
        url = with_params(self.uri, _HLS_pathway=self.pathway,
                          _HLS_throughput=str(int(throughput)))
        self.polls += 1
        self.next_at = now + self.ttl
        try:
            got = await http.get(url, None, keep_body=True)
            data = json.loads(got.body or b"") if got.status == 200 else None
        except (FetchError, ValueError):
            data = None
        if not isinstance(data, dict) or data.get("VERSION") != 1:
            self.errors += 1
            return None
        ttl = data.get("TTL")
        if isinstance(ttl, int | float) and not isinstance(ttl, bool) and ttl > 0:
            self.ttl = float(ttl)
        self.next_at = now + self.ttl
        reload = data.get("RELOAD-URI")
        if isinstance(reload, str) and reload:
            self.uri = urljoin(url, reload)
        priority = data.get("PATHWAY-PRIORITY")
        if isinstance(priority, list) and priority and all(isinstance(p, str) for p in priority):
            self.priority = list(priority)
        return self._choose(now)

    def failed(self, now: float) -> str | None:
        """A segment of the current pathway failed: penalize it; the pathway to move to."""
        self.penalized[self.pathway] = now
        return self._choose(now)

    def _choose(self, now: float) -> str | None:
        self.penalized = {p: t for p, t in self.penalized.items() if now - t < PENALTY_S}
        order = [*self.priority, *(p for p in self.paths.variants if p not in self.priority)]
        for pathway in order:
            if pathway in self.penalized or pathway not in self.paths.variants:
                continue
            return None if pathway == self.pathway else pathway
        return None

    def same_rung(self, url: str, pathway: str) -> str:
        """The variant of `pathway` at the rung `url` holds in the current pathway."""
        here = [u for _, u in self.variants()]
        there = self.paths.variants[pathway]
        index = here.index(url) if url in here else 0
        return there[min(index, len(there) - 1)][1]

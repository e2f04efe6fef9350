"""The browser player: `GET /player?src=...` and the static files it loads, for both roles.

The page plays a title with hls.js and shows, live, the current rendition, the buffer ahead of the
playhead and this node's concurrent viewers (polled from /api/stats). hls.js is served by edge360
itself from its npm package (copied into `static/vendor/` at set-up or image build, never
committed), so the page works offline and under a strict Content-Security-Policy (script-src
'self'). The query is validated here and handed to the page as a JSON data attribute, never
concatenated into markup. None of these routes opens or touches a viewer session: only the media
requests the page then makes do (docs/SESSIONS.md).
"""

from __future__ import annotations

import hashlib
import html
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import orjson

from edge360.core.errors import BadRequest, NotFound
from edge360.http.dispatch import Route, route
from edge360.http.represent import Prepared, memory_slicer, plan_for, render
from edge360.http.response import Response, encode_fields
from edge360.http.wire import Request

log = logging.getLogger("edge360.player")

STATIC = Path(__file__).resolve().parent.parent / "static"
#: where `scripts/setup.sh` and the Dockerfile put hls.js (git-ignored, shipped as package data)
VENDORED_HLS = STATIC / "vendor" / "hls.min.js"
#: fallback when running from a checkout where `npm install` ran but the copy step did not
CHECKOUT_HLS = STATIC.parents[2] / "node_modules" / "hls.js" / "dist" / "hls.min.js"

DEFAULT_SRC = "/demo/master.m3u8"
MAX_SRC = 2048
CONFIG_MARK = "__EDGE360_PLAYER_CONFIG__"

# A host that can stand in a CSP host-source unquoted: a DNS name or IPv4 (IPv6 literals are not
# valid CSP sources, so such a src is refused rather than half-allowed), with an optional port.
_HOST_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})(?::\d{1,5})?$")
_HEIGHT_RE = re.compile(r"^[0-9]{1,5}$")

#: static files the page loads: URL path -> (file under static/, Content-Type)
ASSETS: dict[str, tuple[str, str]] = {
    "/static/player.js": ("player.js", "text/javascript; charset=utf-8"),
    "/static/player.css": ("player.css", "text/css; charset=utf-8"),
}
HLS_PATH = "/static/vendor/hls.min.js"


class BadPlayerQuery(BadRequest):
    """A /player query the page cannot safely use."""

    default_reason = ("bad player query: src must be a same-origin path or an http(s) URL, "
                      "maxHeight a positive integer, cmcd query or headers")


@dataclass(frozen=True, slots=True)
class PlayerQuery:
    """The validated query: what the page plays, the level cap, and the extra origin it fetches."""

    src: str
    max_height: int | None
    #: "scheme://host[:port]" of an absolute src, added to connect-src; None for same-origin paths
    src_origin: str | None
    #: hls.js sends CMCD (CTA-5004) "query" (the CMCD parameter) or "headers" (CMCD-*); None: off
    cmcd: str | None = None


def parse_query(src: str | None, max_height: str | None,
                cmcd: str | None = None) -> PlayerQuery:
    """Validate `src` (a same-origin path or an http(s) URL), `maxHeight` and `cmcd`
    (BadPlayerQuery)."""
    if cmcd == "":
        cmcd = None
    if cmcd not in (None, "query", "headers"):
        raise BadPlayerQuery(f"cmcd {cmcd[:20]!r}")
    if max_height is None or max_height == "":
        cap = None
    elif _HEIGHT_RE.match(max_height) and int(max_height) > 0:
        cap = int(max_height)
    else:
        raise BadPlayerQuery(f"maxHeight {max_height!r}")
    if src is None or src == "":
        return PlayerQuery(DEFAULT_SRC, cap, None, cmcd)
    # whitespace, controls and backslashes: browsers "repair" such URLs in ways that differ from
    # what we validate here (WHATWG URL parsing strips and converts them), so refuse them outright
    if len(src) > MAX_SRC or "\\" in src or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in src):
        raise BadPlayerQuery("src has forbidden characters")
    if src.startswith("/") and not src.startswith("//"):  # "//host" is another origin
        return PlayerQuery(src, cap, None, cmcd)
    parts = urlsplit(src)
    if parts.scheme.lower() not in ("http", "https") or "@" in parts.netloc \
            or not _HOST_RE.match(parts.netloc):
        raise BadPlayerQuery(f"src {src[:80]!r}")
    try:
        port = parts.port
    except ValueError as e:
        raise BadPlayerQuery("src port") from e
    if port is not None and not 0 < port < 65536:
        raise BadPlayerQuery("src port")
    return PlayerQuery(src, cap, f"{parts.scheme.lower()}://{parts.netloc.lower()}", cmcd)


def content_security_policy(query: PlayerQuery, pathways: tuple[str, ...] = ()) -> str:
    """A policy that lets the page run only edge360's own scripts and fetch only the title
    (from any of the node's content steering pathways, `pathways`: their origins)."""
    origins = [o for o in (query.src_origin, *pathways) if o]
    connect = " ".join(["'self'", *dict.fromkeys(origins)])
    return "; ".join((
        "default-src 'none'",
        "script-src 'self'",
        # hls.js transmuxes in a Web Worker it builds from a blob: URL of its own code
        "worker-src blob:",
        "style-src 'self'",
        "img-src 'self' data:",  # data: only for the empty favicon that stops a /favicon.ico fetch
        # Media Source Extensions hand the <video> a blob: URL
        "media-src 'self' blob:",
        f"connect-src {connect}",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'self'",
    ))


def find_hls(candidates: tuple[Path, ...] = (VENDORED_HLS, CHECKOUT_HLS)) -> Path | None:
    """The first hls.min.js that exists: the vendored copy, else the checkout's node_modules."""
    return next((p for p in candidates if p.is_file()), None)


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str

    @classmethod
    def of(cls, body: bytes, content_type: str) -> Asset:
        digest = hashlib.blake2b(body, digest_size=12).hexdigest()
        return cls(body, content_type, f'"{digest}"')


@dataclass(slots=True)
class Player:
    """The page template and the static files, read once at start-up (no file I/O per request)."""

    template: str
    assets: dict[str, Asset]

    @classmethod
    def load(cls, hls: Path | None) -> Player:
        assets = {path: Asset.of((STATIC / name).read_bytes(), ctype)
                  for path, (name, ctype) in ASSETS.items()}
        if hls is None:
            # the page still loads and says what is missing; /static/vendor/hls.min.js answers 404
            log.warning("hls.js not found (run scripts/setup.sh): /player cannot play")
        else:
            assets[HLS_PATH] = Asset.of(hls.read_bytes(), "text/javascript; charset=utf-8")
        template = (STATIC / "player.html").read_text(encoding="utf-8")
        assert CONFIG_MARK in template
        return cls(template, assets)

    def render(self, query: PlayerQuery) -> bytes:
        config: dict[str, object] = {"src": query.src, "maxHeight": query.max_height,
                                     "stats": "/api/stats"}
        if query.cmcd:
            config["cmcd"] = query.cmcd
        # JSON, then HTML-attribute escaping (quotes included): the page reads it back with
        # JSON.parse(dataset.config), so no value of src can end the attribute or the element
        attr = html.escape(orjson.dumps(config).decode(), quote=True)
        return self.template.replace(CONFIG_MARK, attr).encode()


_SECURITY = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


class PlayerPages:
    """GET /player and its static files (http.dispatch endpoints)."""

    def __init__(self, player: Player, pathways: tuple[str, ...] = ()) -> None:
        self.player = player
        #: the origins of the node's steering pathways, which the player may be steered to
        self.pathways = pathways

    def page(self, request: Request) -> Response:
        """GET /player: the page for `?src=` (default the demo), `?maxHeight=` and `?cmcd=`."""
        query = parse_query(request.param("src"), request.param("maxHeight"),
                            request.param("cmcd"))
        body = self.player.render(query)
        return Response(200, encode_fields({
            "Content-Type": "text/html; charset=utf-8",
            "Content-Security-Policy": content_security_policy(query, self.pathways),
            "Cache-Control": "no-cache", **_SECURITY}), body=body)

    def static(self, request: Request) -> Response:
        """GET/HEAD of the page's script, style sheet and hls.js, with ETag revalidation."""
        asset = self.player.assets.get(request.path)
        if asset is None:
            raise NotFound(request.path)
        prepared = Prepared({"Content-Type": asset.content_type, "ETag": asset.etag,
                             # unversioned URLs: short lifetime, then a cheap 304
                             "Cache-Control": "public, max-age=300", **_SECURITY})
        p = plan_for(request, prepared, len(asset.body), None, 1)
        return render(p, prepared, memory_slicer(asset.body))

    def routes(self) -> dict[str, Route]:
        out = {"/player": route(self.page)}
        for path in (*ASSETS, HLS_PATH):
            out[path] = route(self.static)
        return out


def player_pages(steering: tuple[tuple[str, str], ...] = ()) -> PlayerPages:
    """The pages; `steering`: the node's steering pathways (ID, base URL)."""
    origins = []
    for _, base in steering:
        parts = urlsplit(base)
        origins.append(f"{parts.scheme}://{parts.netloc}")
    return PlayerPages(Player.load(find_hls()), tuple(origins))

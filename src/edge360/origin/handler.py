"""The origin role: files of the titles under the media root, exactly and cheaply (docs/HTTP.md).

A request is one catalog lookup. Small files (playlists, keys, small segments) are held in memory
as one version each and answered at once, with no task and no I/O; their file is stat'ed again at
most once a second (off the loop), so a change is served as the new version within a second and
never mixed with the old. Bigger segments are opened per request and answered from that
descriptor (origin.files): size and validators from its fstat, bytes by the kernel's sendfile.
A file still being written answers 503 (origin.files.Settle). Playlists are rewritten per viewer
and sent private. Ranges, preconditions and HEAD follow core.answer for every file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import orjson

from edge360.core.errors import MethodNotAllowed, NotFound, Overloaded
from edge360.core.lru import Memo
from edge360.core.paths import CheckedPaths
from edge360.core.ranges import ByteRange
from edge360.hls.personalize import gzip_accepted, personalize
from edge360.hls.rewrite import CompiledPlaylist
from edge360.http import admission
from edge360.http.masters import finish
from edge360.http.represent import (
    Prepared,
    cors_headers,
    memory_slicer,
    plan_for,
    preflight,
    render,
)
from edge360.http.response import FileSpan, Part, Response
from edge360.http.viewers import check_loop, check_token, identify, is_child_cache, touch
from edge360.http.wire import Request
from edge360.node.counters import TierGauge
from edge360.node.state import NodeState
from edge360.origin.catalog import Catalog, MediaFile, fresh_segments
from edge360.origin.files import Opened, Settle, open_version, read_version, stat_version
from edge360.sessions.viewer import Viewer

log = logging.getLogger("edge360.origin")

#: seconds a memory-held file is trusted before its file is stat'ed again
RECHECK = 1.0
#: prepared header blocks and per-viewer playlists kept at most
MAX_PREPARED = 4096
Answer = Response | Awaitable[Response]


@dataclasses.dataclass(slots=True)
class OriginState:
    """The origin's role state: the catalog (replaced by each rescan) and the settle rule."""

    catalog: Catalog
    settle: Settle

    def health(self) -> dict[str, object]:
        return {"titles": len(self.catalog.titles), "settling": list(self.catalog.settling)}

    def tiers(self) -> Sequence[TierGauge]:
        return ()

    def parents_up(self) -> dict[str, bool]:
        return {}


def content_headers(mf: MediaFile, cors: str, etag: str, last_modified: str) -> dict[str, str]:
    """The header fields of a catalog file's answer (the playlist rules come after)."""
    return {"Content-Type": mf.media_type.content_type, "Cache-Control": mf.cache_control,
            "Last-Modified": last_modified, **cors_headers(cors), "ETag": etag}


class Origin:
    """The content handler of an origin node (http.dispatch endpoint)."""

    def __init__(self, node: NodeState, state: OriginState) -> None:
        self.node = node
        self.state = state
        cfg = node.config
        self.cors = cfg.origin.cors_origin
        self.max_ranges = cfg.limits.max_ranges
        self.paths = CheckedPaths(min(cfg.limits.max_header_bytes, 1024))
        self._checked: dict[str, float] = {}  # memory-held file -> when its file was stat'ed
        self._prepared: Memo[object, tuple[MediaFile, Prepared, bytes | None]] = \
            Memo(MAX_PREPARED)

    def __call__(self, request: Request) -> Answer:
        method = request.method
        if method == "OPTIONS":
            return preflight(self.cors)
        if method not in ("GET", "HEAD"):
            raise MethodNotAllowed(method, headers={"Allow": "GET, HEAD, OPTIONS"})
        check_loop(request)
        path = "/" + "/".join(self.paths(request.path))
        mf = self.state.catalog.files.get(path)
        if mf is None:
            raise NotFound(path)
        node = self.node
        check_token(request, node, path)
        viewer = None if is_child_cache(request, node) else identify(
            request, node, opens=mf.compiled is not None)
        if viewer is not None and mf.compiled is not None:  # admission (docs/OVERLOAD.md)
            held = admission.gate(request, node, viewer, mf.title)
            if held is not None:
                return held if isinstance(held, Response) else admission.after(
                    held, lambda: self._from_file(request, mf, viewer) if mf.body is None
                    else self._recheck(request, mf, viewer))
        if mf.body is None:
            return self._from_file(request, mf, viewer)
        # file times are wall-clock times: the settle rule reads the wall clock, never the
        # node's (injectable) session clock; the recheck interval is a monotonic one
        ticks = time.monotonic()
        if ticks - self._checked.get(path, -RECHECK) >= RECHECK:
            self._checked[path] = ticks  # one look per second, whoever asks meanwhile
            return self._recheck(request, mf, viewer)
        return self._from_memory(request, mf, viewer, time.time())

    # -- small files, held in memory

    def _from_memory(self, request: Request, mf: MediaFile, viewer: Viewer | None,
                     now: float) -> Response:
        if not mf.live and self.state.settle.recent(mf.mtime, now):
            raise self._settling(mf.mtime, now)
        assert mf.body is not None
        gzip_ok = False
        if mf.compiled is not None:
            params = viewer.params() if viewer is not None else ""
            gzip_ok = gzip_accepted(request.fields.get("accept-encoding", ""),
                                    "range" in request.fields)
            key: object = (mf.url_path, params, gzip_ok)
        else:
            params, key = "", mf.url_path
        ov = self.node.overload
        # under overload control a viewer playlist is shaped and steered as the node is now
        # (http.masters): only a playlist nothing finishes may be answered from the memo
        memo = mf.compiled is None or ov is None or not ov.active
        found = self._prepared.get(key) if memo else None
        if found is None or found[0] is not mf:
            headers = content_headers(mf, self.cors, mf.etag, mf.last_modified)
            body = mf.body
            if mf.compiled is not None:
                rendered = finish(self.node, viewer, mf.url_path, mf.title,
                                  mf.compiled.render(params), headers)
                body, etag = personalize(rendered, params, headers, mf.etag, gzip_ok)
                headers["ETag"] = etag or ""
            found = (mf, Prepared(headers), body)
            if memo and (viewer is None or not viewer.minted):  # a minted sid: asked once
                self._prepared.put(key, found)
        _, prepared, held = found
        assert held is not None
        p = plan_for(request, prepared, len(held), mf.mtime, self.max_ranges)
        return self._counted(render(p, prepared, memory_slicer(held)), mf, viewer, request)

    async def _recheck(self, request: Request, mf: MediaFile, viewer: Viewer | None) -> Response:
        """A memory-held file's periodic look: the new version replaces it when it changed."""
        version = await asyncio.to_thread(stat_version, mf.fs_path)
        if version is None:
            self.state.catalog.files.pop(mf.url_path, None)
            raise NotFound(mf.url_path)
        if version.etag != mf.etag:
            catalog = self.state.catalog
            mf, added = await asyncio.to_thread(_reload, mf, catalog)
            # a live playlist's new segments are indexed before it names them to anyone
            for segment in added:
                catalog.files.setdefault(segment.url_path, segment)
            catalog.files[mf.url_path] = mf
        return self._from_memory(request, mf, viewer, time.time())

    # -- segments sent from their file

    async def _from_file(self, request: Request, mf: MediaFile,
                         viewer: Viewer | None) -> Response:
        opened = await _open(mf.fs_path)
        try:
            version = opened.version
            now = time.time()
            if not mf.live and self.state.settle.settling(mf.url_path, version, now):
                raise self._settling(version.mtime, now)
            prepared = Prepared(content_headers(mf, self.cors, version.etag,
                                                version.last_modified))
            p = plan_for(request, prepared, version.size, version.mtime, self.max_ranges)
        except BaseException:
            opened.close()
            raise
        response = render(p, prepared, _file_slicer(opened))
        response.release = opened.close
        return self._counted(response, mf, viewer, request)

    def _settling(self, mtime: float, now: float) -> Overloaded:
        wait = self.state.settle.retry_after(mtime, now)
        error = Overloaded("file still being written", retry_after=wait)
        error.headers["Cache-Control"] = "no-store"
        return error

    # -- accounting

    def _counted(self, response: Response, mf: MediaFile, viewer: Viewer | None,
                 request: Request) -> Response:
        """`response`, counted (account) once its body went out."""
        node, status, rng = self.node, response.status, request.fields.get("range", "")

        def done(sent: int, seconds: float) -> None:
            account(node, mf, viewer, status, sent, seconds, rng)
        response.done = done
        return response


def _reload(mf: MediaFile, catalog: Catalog) -> tuple[MediaFile, list[MediaFile]]:
    """A memory-held file read again (blocking): its new bytes, version and compiled playlist,
    and the segments it names that the catalog does not hold yet (catalog.fresh_segments)."""
    body, version = read_version(mf.fs_path)
    compiled = mf.compiled
    if compiled is not None:
        compiled = CompiledPlaylist.compile(body.decode("utf-8", "replace"))
    fresh = dataclasses.replace(mf, body=body, size=version.size, mtime=version.mtime,
                                etag=version.etag, last_modified=version.last_modified,
                                compiled=compiled)
    return fresh, fresh_segments(catalog.files, fresh, catalog.root)


async def _open(path: str) -> Opened:
    """open_version in a thread; a descriptor opened for a request that went away is closed."""
    pending = asyncio.get_running_loop().run_in_executor(None, open_version, path)
    try:
        return await asyncio.shield(pending)
    except asyncio.CancelledError:
        def close(f: asyncio.Future[Opened]) -> None:
            if not f.cancelled() and f.exception() is None:
                f.result().close()
        pending.add_done_callback(close)
        raise


def _file_slicer(opened: Opened) -> Callable[[ByteRange], list[Part]]:
    """File spans of the opened version, each verified unchanged before its last bytes go out
    (the response's release closes the file)."""
    def cut(r: ByteRange) -> list[Part]:
        return [FileSpan(opened.fd, r.start, r.length, verify=opened.unchanged)]
    return cut


def account(node: NodeState, mf: MediaFile, viewer: Viewer | None, status: int,
            body_bytes: int, seconds: float, range_header: str) -> None:
    """Count a served answer: the viewer's session, egress, a segment sent later than its
    duration."""
    touch(node, viewer, status, title=mf.title, rendition=mf.rendition,
          playlist=mf.compiled is not None, nbytes=body_bytes,
          media=mf.media_seconds(range_header), track=mf.track)
    counters = node.counters
    if body_bytes:
        counters.egress[(mf.title, mf.rendition)] += body_bytes
    if mf.media_type.kind == "segment" and body_bytes:
        duration = _duration(mf, range_header)
        if duration and seconds > duration:
            counters.late_segments[(mf.title, mf.rendition)] += 1


def _duration(mf: MediaFile, rng: str) -> float | None:
    """Seconds of media in the requested segment (by byte offset for single-file renditions)."""
    if not mf.durations:
        return None
    if len(mf.durations) == 1:
        return next(iter(mf.durations.values()))
    try:
        offset = int(rng.split("=", 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return None
    return mf.durations.get(offset)


def titles_body(catalog: Catalog) -> bytes:
    """GET /api/titles: every served title and its renditions, the broken ones by name, and the
    titles still arriving."""
    return orjson.dumps({
        "titles": [info.to_dict() for _, info in sorted(catalog.titles.items())],
        "broken": catalog.broken,
        "settling": list(catalog.settling),
    })

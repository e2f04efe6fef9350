"""The servers of one comparison run, all pinned to the server core: an edge360 origin and an nginx
origin on the same media, and pairs of edges (an edge360 edge and an nginx proxy cache) in front
of the same origin, over plain HTTP or HTTPS. Every process is stopped by its own PID.

Pairs are keyed "origin", "edge/<origin>", "edge-disk/<origin>" (a second edge360 edge answering
big objects from its disk tier, beside the same nginx proxy cache) and "https/<origin>" (<origin>:
nginx or edge360), each {"edge360": Server, "nginx": Server}. Both origins give every file the
same lifetimes (checked when they start), and both edges ask either origin the same way (the
peer token, no sid), so the two edges of a pair differ only in themselves.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks import harness
from benchmarks.harness import PEER_TOKEN, SID, BenchError, Pinning, Server
from benchmarks.media import Media
from benchmarks.nginxref import LIFETIMES, start_nginx
from benchmarks.tlsbench import make_cert
from benchmarks.workloads import wait_for_hit, warm

#: the edge360 edge's stale-while-revalidate window when its origin gives none (the default,
#: written out so the results say what was run)
EDGE_STALE_WHILE_REVALIDATE = 30


class Fleet:
    """The servers of a run; `stop()` stops them all, last started first."""

    def __init__(self, media: Media, pin: Pinning, tmp: Path, *, slice_module: bool) -> None:
        self.media = media
        self.pin = pin
        self.tmp = tmp
        self.slice_module = slice_module
        self.logs = tmp / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.pairs: dict[str, dict[str, Server]] = {}
        self.servers: list[Server] = []
        self._tls: tuple[Path, Path] | None = None

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()

    def _config(self, name: str, text: str) -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path

    def tls_files(self) -> tuple[Path, Path]:
        if self._tls is None:
            self._tls = make_cert(self.tmp / "tls")
        return self._tls

    def start_origins(self) -> None:
        """Both origins on the media; raises BenchError if either fails or if they disagree on
        a lifetime the edges will learn."""
        conf = self._config("origin.toml", (
            "[origin]\n"
            f"master_max_age = {LIFETIMES['master_max_age']}\n"
            f"vod_max_age = {LIFETIMES['vod_max_age']}\n"))
        ours = harness.start_edge360("origin", ["--media", str(self.media.root),
                                                "--config", str(conf)], self.pin, self.logs)
        self.servers.append(ours)
        ref = start_nginx("origin", self.media.root, self.pin, self.tmp / "nginx-origin",
                          slice_module=self.slice_module)
        self.servers.append(ref)
        self.pairs["origin"] = {"edge360": ours, "nginx": ref}
        self._same_lifetimes(ours, ref)

    def _same_lifetimes(self, ours: Server, ref: Server) -> None:
        """What an edge asks (the peer token, no sid) must get the same Cache-Control from both
        origins, or the edges in front of them would not be compared on the same lifetimes."""
        auth = {"Authorization": f"Bearer {PEER_TOKEN}"}
        for path in (self.media.master, self.media.live, self.media.small):
            got = {s.name: harness.http_get(s.base + path, auth)[1].get("cache-control", "")
                   for s in (ours, ref)}
            if got["edge360"] != got["nginx"]:
                raise BenchError(f"the origins give {path} different lifetimes: {got}")

    def start_disk_edge(self, upstream: str, warm_paths: list[str]) -> str | None:
        """A second edge360 edge in front of `upstream` whose memory tier (1 MiB) holds no piece
        of a big object, so those are answered from its disk tier; paired with the nginx proxy
        cache already started in front of that origin. Returns why it is not available."""
        origin = self.pairs["origin"][upstream]
        cache_dir = self.tmp / f"edge-disk-{upstream}-cache"
        conf = self._config(f"edge-disk-{upstream}.toml", (
            f"[edge]\nstale_while_revalidate = {EDGE_STALE_WHILE_REVALIDATE}\n"
            f'cache_dir = "{cache_dir}"\ncache_memory_bytes = {1 << 20}\nprefetch_depth = 0\n'))
        try:
            edge = harness.start_edge360("edge", ["--upstream", origin.base, "--config",
                                                  str(conf)], self.pin, self.logs, timeout=20,
                                         label=f"edge-disk-{upstream}")
        except BenchError as e:
            return str(e)
        edge.extra["origin"] = origin
        self.servers.append(edge)
        proxy = self.pairs[f"edge/{upstream}"]["nginx"]
        try:
            warm(proxy, warm_paths)  # what the plain rows did not ask it already
            warm(edge, warm_paths)
            for path in warm_paths:  # its pieces go to disk after the answer: wait for them
                wait_for_hit(edge, path)
        except BenchError as e:
            return f"warming failed: {e}"
        self.pairs[f"edge-disk/{upstream}"] = {"edge360": edge, "nginx": proxy}
        return None

    def start_edges(self, upstream: str, *, tls: bool, warm_paths: list[str]) -> str | None:
        """An edge360 edge and an nginx proxy cache in front of the `upstream` origin ("nginx" or
        "edge360"), plain or HTTPS, both warmed. Returns why they are not available (the edge360
        edge did not start or answer a content request with X-Cache), or None."""
        origin = self.pairs["origin"][upstream]
        kind = "https" if tls else "edge"
        label = f"{kind}-{upstream}"
        text = f"[edge]\nstale_while_revalidate = {EDGE_STALE_WHILE_REVALIDATE}\n"
        cert: tuple[Path, Path] | None = None
        if tls:
            cert = self.tls_files()
            text = f'[server]\ntls_cert = "{cert[0]}"\ntls_key = "{cert[1]}"\n\n' + text
        conf = self._config(f"edge-{label}.toml", text)
        try:
            edge = harness.start_edge360("edge", ["--upstream", origin.base, "--config",
                                                  str(conf)], self.pin, self.logs, timeout=20,
                                         label=label)
        except BenchError as e:
            return str(e)
        edge.cafile = cert[0] if cert else None
        self.servers.append(edge)
        try:
            status, headers, _ = harness.http_get(edge.base + self.media.small + f"?sid={SID}",
                                                  cafile=edge.cafile)
        except BenchError as e:
            return str(e)
        if status != 200 or "x-cache" not in headers:
            return (f"GET {self.media.small} answered {status}, X-Cache "
                    f"{headers.get('x-cache', 'absent')}")
        try:
            proxy = start_nginx("edge", self.media.root, self.pin, self.tmp / f"nginx-{label}",
                                upstream=origin.base, slice_module=self.slice_module, tls=cert)
        except BenchError as e:
            return str(e)
        proxy.extra["origin"] = origin
        edge.extra["origin"] = origin
        self.servers.append(proxy)
        self.pairs[f"{kind}/{upstream}"] = {"edge360": edge, "nginx": proxy}
        try:
            for server in (edge, proxy):
                warm(server, warm_paths)
        except BenchError as e:
            return f"warming failed: {e}"
        return None

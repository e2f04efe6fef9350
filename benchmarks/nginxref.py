"""The nginx reference: its configuration from benchmarks/nginx.conf.template and its process.

One template plays both roles. As an origin, nginx serves the generated files with the same
Cache-Control lifetimes the edge360 origin gives them (`LIFETIMES`), so an edge in front of
either origin learns the same freshness. As a proxy cache (the edge360 edge's counterpart), it
stands in front of either origin, over plain HTTP or HTTPS, and asks upstream as an edge360 edge
does: the peer token, no viewer query.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path
from string import Template

from benchmarks.harness import PEER_TOKEN, BenchError, Pinning, Server, free_port

NGINX_TEMPLATE = Path(__file__).resolve().parent / "nginx.conf.template"
#: Cache-Control max-age by kind, in seconds, at both origins: a master playlist 4 h (the
#: edge360 origin's `origin.master_max_age` is set to it), a live media playlist half its 4 s
#: target duration (the edge360 origin's own rule), VOD playlists and segments a year (the
#: edge360 origin's default `origin.vod_max_age`)
LIFETIMES = {"master_max_age": 4 * 3600, "live_max_age": 2, "vod_max_age": 31536000}


class NginxTemplate(Template):
    """@{name} placeholders: "$" is nginx's own variable syntax."""

    delimiter = "@"


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None


def nginx_has_slice(nginx: str) -> bool:
    out = subprocess.run([nginx, "-V"], capture_output=True, text=True, timeout=10)
    return "--with-http_slice_module" in (out.stderr + out.stdout)


def nginx_conf(role: str, *, workdir: Path, media_root: Path, listen: str, upstream: str = "",
               slice_module: bool = True, tls: tuple[Path, Path] | None = None) -> str:
    """The configuration text of one instance: `role` "origin" or "edge" (the proxy cache) on
    `listen` (host:port); `tls` (certificate, key) makes the proxy cache listen for HTTPS."""
    if tls is not None and role != "edge":
        raise BenchError("only the nginx proxy cache is measured over HTTPS")
    proxy_tls = ""
    if tls is not None:
        # TLS 1.2 and 1.3, as the edge360 server's default context accepts; the clients ask
        # for TLS 1.3. Session tickets stay on (nginx's default, as Python's)
        proxy_tls = (f"ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]}; "
                     "ssl_protocols TLSv1.2 TLSv1.3;")
    values = {
        "workdir": str(workdir),
        "media_root": str(media_root),
        "origin_listen": listen if role == "origin" else f"unix:{workdir}/unused-origin.sock",
        "proxy_listen": (listen + (" ssl" if tls else "")) if role == "edge"
        else f"unix:{workdir}/unused-proxy.sock",
        "proxy_tls": proxy_tls,
        "upstream": upstream.removeprefix("http://") or "127.0.0.1:9",
        "peer_token": PEER_TOKEN,
        # without the slice module the 64 MiB object is cached whole (noted in the results)
        "slice_directive": "slice 1m;" if slice_module else "",
        "slice_key": "$slice_range" if slice_module else "",
        "slice_header": ("proxy_set_header Range $slice_range;" if slice_module else ""),
        **{k: str(v) for k, v in LIFETIMES.items()},
    }
    return NginxTemplate(NGINX_TEMPLATE.read_text()).substitute(values)


def start_nginx(role: str, media_root: Path, pin: Pinning, workdir: Path, *,
                upstream: str = "", slice_module: bool = True,
                tls: tuple[Path, Path] | None = None, timeout: float = 15) -> Server:
    """One nginx process (master_process off, so the measured PID is the one doing the work)."""
    nginx = nginx_binary()
    if nginx is None:
        raise BenchError("nginx is not installed")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    listen = f"127.0.0.1:{port}"
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_conf(role, workdir=workdir, media_root=media_root, listen=listen,
                               upstream=upstream, slice_module=slice_module, tls=tls))
    stderr_path = workdir / "stderr"
    cmd = [*pin.server, nginx, "-p", str(workdir), "-c", str(conf),
           "-e", str(workdir / "error.log"), "-g", "daemon off; master_process off;"]
    with stderr_path.open("wb") as err:
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=err)
    scheme = "https" if tls else "http"
    server = Server("nginx", role, f"{scheme}://{listen}", proc, workdir=workdir,
                    stderr_path=stderr_path, extra={"slice": slice_module},
                    cafile=tls[0] if tls else None)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return server
        time.sleep(0.05)
    server.stop(timeout=5)
    err_log = workdir / "error.log"
    tail = err_log.read_text(errors="replace")[-400:] if err_log.exists() else server.stderr_tail()
    raise BenchError(f"nginx {role} did not start: {tail.strip()}")

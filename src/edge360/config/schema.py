"""The one configuration object: defaults, then a TOML file, then EDGE360_* environment, then flags.

Every key is declared once, in its section's dataclass, with its parser (configvalues); a value that
does not parse raises ConfigError naming `section.key`, so the command line prints one line and
exits 2. The result is frozen.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge360.config.values import (
    BadValue,
    Parser,
    boolean,
    choice,
    cidr,
    integer,
    key_params,
    listen_address,
    method,
    number,
    optional_path,
    pathway,
    size,
    string_list,
    text,
    url,
    url_path,
    workers,
)
from edge360.core.errors import ConfigError
from edge360.native import SWITCH as NATIVE_SWITCH


def _f(default: Any, parser: Parser, doc: str, *, secret: bool = False) -> Any:
    return field(default=default, metadata={"parse": parser, "doc": doc, "secret": secret})


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = _f("127.0.0.1", text, "address to listen on")
    port: int = _f(8080, integer(0, 65535), "TCP port; 0 takes a free one")
    role: str = _f("origin", choice("origin", "edge"), "origin or edge")
    workers: int = _f(1, workers, "worker processes sharing the port, or auto")
    trusted_proxies: tuple[str, ...] = _f((), string_list(cidr), "proxies whose XFF is trusted")
    drain_delay: float = _f(0.0, number(0, 3600), "seconds /healthz answers 503 before close")
    drain_timeout: float = _f(10.0, number(0, 3600), "seconds in-flight responses get to finish")
    access_log: bool = _f(False, boolean, "one JSON line per request on stderr")
    tls_cert: str = _f("", optional_path, "PEM certificate; with tls_key, serve HTTPS")
    tls_key: str = _f("", optional_path, "PEM private key")
    fastpath: bool = _f(True, boolean, "no effect, kept so older configs load")
    proxy_protocol: bool = _f(False, boolean,
                              "connections begin with a PROXY v1/v2 header (trusted_proxies only)")
    metrics_listen: str = _f("", listen_address,
                             "host:port of a second listener for /metrics, /healthz, /api/stats")
    egress_limit: int = _f(0, integer(0, 10**15),
                           "egress budget in bit/s; near it new viewers get fewer renditions")


@dataclass(frozen=True, slots=True)
class OriginConfig:
    media: str = _f("", optional_path, "media root, one folder per title")
    rescan_interval: float = _f(10.0, number(0, 86400), "seconds between title rescans; 0 = off")
    vod_max_age: int = _f(31536000, integer(0, 1 << 31), "max-age of VOD media playlists/segments")
    master_max_age: int = _f(30, integer(0, 1 << 31), "max-age of master playlists")
    cors_origin: str = _f("*", text, "Access-Control-Allow-Origin value")
    settle_seconds: float = _f(2.0, number(0, 3600),
                               "a file modified this recently (or still growing) is not served")


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    upstreams: tuple[str, ...] = _f((), string_list(url), "parent URLs")
    cache_key_params: tuple[str, ...] = _f((), key_params, "query params in the cache key")
    pass_methods: tuple[str, ...] = _f((), string_list(method), "unsafe methods passed upstream")
    cache_memory_bytes: int = _f(512 * 1024**2, size(1 << 20), "memory tier budget")
    cache_dir: str = _f("", optional_path, "disk tier directory; empty = no disk tier")
    cache_disk_bytes: int = _f(10 * 1024**3, size(1 << 20), "disk tier budget")
    piece_bytes: int = _f(2 * 1024**2, size(64 * 1024, 1 << 30), "slice size for big objects")
    segment_ttl: int = _f(86400, integer(0, 1 << 31), "segment freshness when upstream is silent")
    playlist_ttl: int = _f(2, integer(0, 1 << 31), "freshness of live playlists left open")
    stale_while_revalidate: int = _f(30, integer(0, 1 << 31), "stale seconds while refreshing")
    stale_if_error: int = _f(3600, integer(0, 1 << 31), "seconds stale may serve on upstream error")
    negative_ttl: int = _f(5, integer(0, 3600), "seconds 404/5xx answers are cached")
    prefetch_depth: int = _f(1, integer(0, 16), "segments fetched ahead of a viewer")
    prefetch_inflight: int = _f(32, integer(0, 10000), "prefetches in flight at most")
    connect_timeout: float = _f(3.0, number(0.01, 600), "upstream connect timeout")
    read_timeout: float = _f(15.0, number(0.01, 3600), "upstream read timeout between bytes")
    retries: int = _f(1, integer(0, 10), "retries of idempotent requests on another parent")
    max_waiters: int = _f(10000, integer(1, 1_000_000), "waiters per in-flight object")
    max_upstream_inflight: int = _f(256, integer(1, 100000), "upstream fetches in flight")
    health_interval: float = _f(2.0, number(0.1, 3600),
                                "seconds between probes, and between retries of a parent down")
    health_path: str = _f("", url_path, "path of the optional active probe of parents; "
                          "empty = off: health comes from real traffic")
    health_statuses: tuple[int, ...] = _f((200,), string_list(integer(100, 599)),
                                          "probe statuses that mean a parent is up")
    down_after: int = _f(3, integer(1, 1000),
                         "consecutive failed exchanges that mark a parent down")
    revalidate_timeout: float = _f(2.0, number(0.01, 600),
                                   "seconds to wait for a parent's answer when stale may serve")
    max_entries: int = _f(200_000, integer(16, 100_000_000), "cache entries at most")
    children: tuple[str, ...] = _f((), string_list(url),
                                   "child edge URLs /admin/purge and /admin/warm fan out to")


@dataclass(frozen=True, slots=True)
class SessionsConfig:
    idle_timeout: float = _f(30.0, number(0.05, 86400), "idle seconds that end a session")
    peak_window: float = _f(15.0, number(0.1, 86400), "window of sessions_peak_recent")
    state_file: str = _f("", optional_path, "keeps peak/views/sessions across restarts")
    max_active: int = _f(2_000_000, integer(1, 100_000_000), "active sessions at most")
    per_ip_per_minute: int = _f(120, integer(0, 1_000_000), "sessions one address opens a minute")
    time_scale: float = _f(1.0, number(0.001, 10000),
                           "divides media seconds in the play-out rule (compressed replays)")
    capacity: int = _f(0, integer(0, 100_000_000),
                       "viewers the node admits, node-wide; at it new viewers queue (503); 0 = off")
    queue_hold: float = _f(120.0, number(1, 86400),
                           "seconds a queued viewer who retries keeps its place")


@dataclass(frozen=True, slots=True)
class AuthConfig:
    required: bool = _f(False, boolean, "every content request needs a signed token")
    keys: str = _f("", text, "kid:secret,... (environment only)", secret=True)
    keys_file: str = _f("", optional_path, "file holding kid:secret,... (re-read on SIGHUP)")


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    keys: str = _f("", text, "kid:secret,... signing admission tickets (environment only)",
                   secret=True)
    keys_file: str = _f("", optional_path, "file holding the admission keys (re-read on SIGHUP)")


@dataclass(frozen=True, slots=True)
class SteeringConfig:
    pathways: tuple[tuple[str, str], ...] = _f((), string_list(pathway),
                                               "content steering pathways, ID=BASE_URL")
    ttl: int = _f(10, integer(1, 86400), "seconds players keep a steering manifest")


@dataclass(frozen=True, slots=True)
class PeerConfig:
    token: str = _f("", text, "shared secret a child edge presents (environment only)", secret=True)


@dataclass(frozen=True, slots=True)
class AdminConfig:
    token: str = _f("", text, "bearer token for /admin/* (environment only)", secret=True)


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    rate_per_ip: float = _f(0.0, number(0, 1e9), "requests per second per address; 0 = off")
    rate_burst: float = _f(0.0, number(0, 1e9), "bucket size; 0 = equal to the rate")
    header_timeout: float = _f(10.0, number(0.1, 3600), "seconds to send the request head")
    keepalive_timeout: float = _f(75.0, number(0.1, 3600), "idle keep-alive seconds")
    max_connections: int = _f(10000, integer(1, 10_000_000), "open client connections at most")
    max_header_bytes: int = _f(16384, integer(1024, 1 << 20), "request head size at most")
    max_ranges: int = _f(16, integer(1, 1000), "ranges per request honoured at most")
    send_timeout: float = _f(60.0, number(0.1, 3600), "seconds a stalled reader may hold a write")
    max_addresses: int = _f(100_000, integer(16, 100_000_000), "addresses tracked for limits")


SECTIONS: dict[str, type] = {
    "server": ServerConfig, "origin": OriginConfig, "edge": EdgeConfig,
    "sessions": SessionsConfig, "auth": AuthConfig, "peer": PeerConfig, "admin": AdminConfig,
    "limits": LimitsConfig, "admission": AdmissionConfig, "steering": SteeringConfig,
}
#: keys that may only come from the environment (secrets never live in a file in the repo)
ENV_ONLY = {("auth", "keys"), ("peer", "token"), ("admin", "token"), ("admission", "keys")}


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    origin: OriginConfig = field(default_factory=OriginConfig)
    edge: EdgeConfig = field(default_factory=EdgeConfig)
    sessions: SessionsConfig = field(default_factory=SessionsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    peer: PeerConfig = field(default_factory=PeerConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    steering: SteeringConfig = field(default_factory=SteeringConfig)

    def replace(self, section: str, **values: Any) -> Config:
        """A copy with some keys of one section changed (values already parsed)."""
        return dataclasses.replace(
            self, **{section: dataclasses.replace(getattr(self, section), **values)})


def _fields(section: str) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(SECTIONS[section])}


def _parse_value(section: str, key: str, value: Any) -> Any:
    fields = _fields(section)
    if key not in fields:
        raise ConfigError(f"{section}.{key}", "unknown key")
    try:
        return fields[key].metadata["parse"](value)
    except BadValue as e:
        raise ConfigError(f"{section}.{key}", str(e)) from None


def _apply(raw: dict[str, dict[str, Any]], section: str, key: str, value: Any) -> None:
    raw.setdefault(section, {})[key] = _parse_value(section, key, value)


def read_toml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(str(path), "no such config file") from None
    except OSError as e:
        raise ConfigError(str(path), f"cannot read: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(str(path), f"not valid TOML: {e}") from None


def load(
    toml_path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
    *,
    require_media: bool = False,
) -> Config:
    """Resolve the config: defaults < TOML < EDGE360_* environment < flags (`section.key` names)."""
    raw: dict[str, dict[str, Any]] = {}
    if toml_path is not None:
        for section, body in read_toml(toml_path).items():
            if section not in SECTIONS:
                raise ConfigError(section, "unknown section")
            if not isinstance(body, dict):
                raise ConfigError(section, "expected a table")
            for key, value in body.items():
                if (section, key) in ENV_ONLY:
                    raise ConfigError(f"{section}.{key}", "secrets come only from the environment")
                _apply(raw, section, key, value)
    for name, value in sorted((env if env is not None else os.environ).items()):
        if not name.startswith("EDGE360_") or name == NATIVE_SWITCH:
            continue  # (the switch chooses the code that runs, not a setting: edge360.native)
        rest = name[len("EDGE360_"):].lower()
        section, _, key = rest.partition("_")
        if section not in SECTIONS or key not in _fields(section):
            raise ConfigError(name, "unknown environment variable")
        _apply(raw, section, key, value)
    for dotted, value in (flags or {}).items():
        section, _, key = dotted.partition(".")
        _apply(raw, section, key, value)
    config = Config(**{s: SECTIONS[s](**raw.get(s, {})) for s in SECTIONS})
    _check_relations(config, require_media=require_media)
    return config


def _check_relations(c: Config, *, require_media: bool) -> None:
    """Checks that involve more than one key or the file system."""
    if require_media and c.server.role == "origin":
        if not c.origin.media:
            raise ConfigError("origin.media", "no media root given")
        if not Path(c.origin.media).is_dir():
            raise ConfigError("origin.media", f"not a directory: {c.origin.media!r}")
    if require_media and c.server.role == "edge" and not c.edge.upstreams:
        raise ConfigError("edge.upstreams", "an edge needs at least one --upstream URL")
    if bool(c.server.tls_cert) != bool(c.server.tls_key):
        raise ConfigError("server.tls_key", "tls_cert and tls_key go together")
    for key in ("tls_cert", "tls_key"):
        p = getattr(c.server, key)
        if p and not Path(p).is_file():
            raise ConfigError(f"server.{key}", f"no such file: {p!r}")
    if c.server.proxy_protocol and c.server.tls_cert:
        raise ConfigError("server.proxy_protocol",
                          "does not combine with tls_cert (terminate TLS at the balancer)")
    if c.server.proxy_protocol and not c.server.trusted_proxies:
        raise ConfigError("server.proxy_protocol",
                          "needs server.trusted_proxies (the balancers allowed to send it)")
    if c.edge.health_path and not c.edge.health_statuses:
        raise ConfigError("edge.health_statuses", "the probe needs at least one status")
    if c.auth.keys_file and not Path(c.auth.keys_file).is_file():
        raise ConfigError("auth.keys_file", f"no such file: {c.auth.keys_file!r}")
    if c.admission.keys_file and not Path(c.admission.keys_file).is_file():
        raise ConfigError("admission.keys_file", f"no such file: {c.admission.keys_file!r}")
    ids = [pid for pid, _ in c.steering.pathways]
    if len(set(ids)) != len(ids):
        raise ConfigError("steering.pathways", "a pathway ID is listed twice")


def render(config: Config) -> str:
    """The resolved config as TOML text, secrets shown as ***."""
    lines: list[str] = []
    for section in SECTIONS:
        lines.append(f"[{section}]")
        obj = getattr(config, section)
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.metadata["secret"] and value:
                value = "***"
            elif (section, f.name) == ("steering", "pathways"):
                value = tuple(f"{pid}={base}" for pid, base in value)  # as they are written
            lines.append(f"{f.name} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

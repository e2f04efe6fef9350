"""The `edge360` command line: argparse commands, config resolution, and the event loop choice.

Every refusal of bad input is one line on stderr and exit status 2; nothing here prints a traceback
for a mistake the user made. This is the only module that imports uvloop.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from edge360 import __version__
from edge360.config.live import ConfigSource
from edge360.config.schema import Config, load, render
from edge360.core.errors import ConfigError, Edge360Error, UsageError

#: the bundled demo title, found when edge360 runs from a checkout of the repository
REPO_MEDIA = Path("media")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one line and exit 2 (minus the usage dump)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: {message}\n")
        raise SystemExit(2)


def _serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--role", choices=("origin", "edge"), help="origin (default) or edge")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", help="TCP port (default 8080; 0 takes a free port)")
    p.add_argument("--media", help="media root, one folder per title (origin)")
    p.add_argument("--upstream", action="append", help="parent URL (edge; repeatable)")
    p.add_argument("--config", help="TOML config file")
    p.add_argument("--workers", help="worker processes sharing the port, or auto (default 1)")
    p.add_argument("--cache-dir", help="disk cache tier directory (edge)")
    p.add_argument("--access-log", action="store_true", help="one JSON line per request on stderr")
    p.add_argument("--takeover", action="store_true",
                   help="replace the node serving this address without refusing a connection "
                        "(an upgrade: it hands over its sockets and drains)")


def source_from_args(args: argparse.Namespace,
                     env: dict[str, str] | None = None) -> ConfigSource:
    """Where `serve` takes its config from: --config TOML, EDGE360_* environment, flags (the
    demo media root filled in for an origin run from the repository). SIGHUP reads it again."""
    flags: dict[str, Any] = {}
    for attr, key in (("role", "server.role"), ("host", "server.host"), ("port", "server.port"),
                      ("media", "origin.media"), ("upstream", "edge.upstreams"),
                      ("workers", "server.workers"), ("cache_dir", "edge.cache_dir")):
        value = getattr(args, attr, None)
        if value is not None:
            flags[key] = value
    if getattr(args, "access_log", False):
        flags["server.access_log"] = True
    environ = dict(os.environ) if env is None else env
    environ = {k: v for k, v in environ.items() if k.startswith("EDGE360_")}
    config = load(args.config, environ, flags)
    if config.server.role == "origin" and not config.origin.media and REPO_MEDIA.is_dir():
        flags["origin.media"] = str(REPO_MEDIA.resolve())
    return ConfigSource(args.config, environ, flags)


def config_from_args(args: argparse.Namespace, env: dict[str, str] | None = None) -> Config:
    """defaults < TOML (--config) < EDGE360_* environment < flags."""
    return source_from_args(args, env).load()


def _run_serve(args: argparse.Namespace) -> int:
    source = source_from_args(args)
    config = source.load()
    from edge360.run.cluster import run_node
    return run_node(config, loop_factory=event_loop_factory(config), source=source,
                    takeover=bool(getattr(args, "takeover", False)))


def event_loop_factory(config: Config) -> Callable[[], Any] | None:
    """uvloop for both roles: the content plane sends files with sendfile itself (http.send),
    so no role needs asyncio's own loop.sendfile any more, and uvloop answers more requests
    per core (benchmarks/RESULTS.md)."""
    import uvloop
    return uvloop.new_event_loop


def _run_check_config(args: argparse.Namespace) -> int:
    config = load(args.file, dict(os.environ), require_media=args.strict)
    sys.stdout.write(render(config))
    return 0


def _run_sign(args: argparse.Namespace) -> int:
    import time

    from edge360.security.tokens import parse_keys, sign_url
    config = load(None, dict(os.environ))
    text = config.auth.keys
    if config.auth.keys_file:
        text = Path(config.auth.keys_file).read_text(encoding="utf-8")
    if not text.strip():
        raise UsageError("no signing keys: set EDGE360_AUTH_KEYS or EDGE360_AUTH_KEYS_FILE")
    keys = parse_keys(text)
    if args.key_id:
        chosen = [k for k in keys if k.kid == args.key_id]
        if not chosen:
            raise UsageError(f"no key with id {args.key_id!r}")
        keys = (chosen[0], *[k for k in keys if k.kid != args.key_id])
    if args.ttl <= 0:
        raise UsageError("--ttl must be a positive number of seconds")
    print(sign_url(args.url, keys, ttl=args.ttl, now=time.time(), scope=args.scope, sid=args.sid))
    return 0


def _on_uvloop(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """The replayer drives thousands of virtual players: run it on uvloop."""
    def wrapped(args: argparse.Namespace) -> int:
        import asyncio

        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return run(args)
    return wrapped


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edge360", description=(
        "HLS origin and caching edge server that counts its viewers exactly."))
    parser.add_argument("--version", action="version", version=f"edge360 {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    serve = sub.add_parser("serve", help="run an origin or edge server")
    _serve_arguments(serve)
    serve.set_defaults(func=_run_serve)

    check = sub.add_parser("check-config", help="validate a config file and print it resolved")
    check.add_argument("file")
    check.add_argument("--strict", action="store_true",
                       help="also require the media root / upstreams the role needs")
    check.set_defaults(func=_run_check_config)

    sign = sub.add_parser("sign", help="print a URL with a signed token appended")
    sign.add_argument("url")
    sign.add_argument("--ttl", type=int, default=3600, help="seconds the token stays valid")
    sign.add_argument("--key-id", help="sign with this key id instead of the first key")
    sign.add_argument("--scope", help="path prefix the token covers (default: the title folder)")
    sign.add_argument("--sid", help="bind the token to this session id")
    sign.set_defaults(func=_run_sign)

    for name, module_name, help_text in (
        ("replay", "edge360.replay.command", "replay the first day against an HLS server"),
        ("package", "edge360.hls.package", "package a video into an HLS ladder with ffmpeg"),
    ):
        module = __import__(module_name, fromlist=["add_arguments", "run"])
        p = sub.add_parser(name, help=help_text)
        module.add_arguments(p)
        p.set_defaults(func=_on_uvloop(module.run) if name == "replay" else module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as e:
        sys.stderr.write(f"{e}\n")
    except Edge360Error as e:
        sys.stderr.write(f"{args.command}: {e}\n")
    except KeyboardInterrupt:
        return 130
    except OSError as e:
        # e.g. the port is taken: still one line, still no traceback
        sys.stderr.write(f"{args.command}: {e.strerror or e}\n")
    return 2

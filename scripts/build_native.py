"""Compile edge360's hot modules with mypyc, in place beside their sources.

    .venv/bin/python scripts/build_native.py [--root DIR] [--clean] [--opt-level N]

The modules below are the ones every request passes through: the content plane's protocol and
request reader, the edge's hit path and the origin's answers, playlists rendered per viewer, the
sessions, the counters, and the replayer's virtual players and their HTTP client. They are compiled
as they are written (they pass mypy --strict); the rest of the package stays interpreted, and a
compiled module imports an interpreted one as any module does. The build writes
`edge360/native.json` (each module with the SHA-256 of the source it was built from);
`edge360.native` uses the compiled modules only while every source still matches it, so an edit
never runs stale code, it runs from source until the next build.

Nothing is rebuilt when the manifest already matches. Without a C compiler or mypyc the build
fails with one line: exit 1 when CI=true (CI must test what ships), else exit 0 and edge360 runs
from source. `--root` builds another copy of the package (an installed one, in a Docker image).
`--clean` removes the compiled modules and the manifest.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
os.environ["EDGE360_NATIVE"] = "0"  # this process reads the sources, never a build in progress

from edge360.native import MANIFEST, source_digest  # noqa: E402

#: the compiled modules, as paths under the package (see the module docstring for the choice);
#: docs/ARCHITECTURE.md ("Compiled modules") lists what code in them may not do
NATIVE = (
    "core/answer.py", "core/cachecontrol.py", "core/conditional.py", "core/kinds.py",
    "core/lru.py", "core/paths.py", "core/policy.py", "core/ranges.py", "core/steering.py",
    "cache/memory.py",
    "hls/personalize.py", "hls/rewrite.py", "hls/shape.py", "hls/steer.py",
    "http/admission.py", "http/dispatch.py", "http/guard.py", "http/masters.py",
    "http/outbox.py", "http/protocol.py", "http/represent.py", "http/send.py",
    "http/response.py", "http/timers.py", "http/viewers.py", "http/wire.py",
    "edge/accounting.py", "edge/handler.py", "edge/held.py", "edge/hits.py",
    "edge/objects.py", "edge/playlists.py", "edge/prefetch.py", "edge/store.py",
    "edge/stored.py",
    "edge/viewerplaylist.py",
    "origin/files.py", "origin/handler.py", "origin/role.py",
    "sessions/cmcd.py", "sessions/identity.py", "sessions/playout.py", "sessions/tracker.py",
    "sessions/viewer.py",
    "node/counters.py", "node/overload.py", "security/clientaddr.py", "security/ratelimit.py",
    "run/hubclient.py",
    "replay/aioget.py", "replay/buffer.py", "replay/cmcd.py", "replay/exchange.py",
    "replay/links.py", "replay/limits.py", "replay/live.py", "replay/pacer.py",
    "replay/player.py", "replay/profiles.py", "replay/queue.py", "replay/share.py",
    "replay/stats.py", "replay/steer.py", "replay/target.py", "replay/truth.py",
    "replay/wire.py", "replay/wirepool.py",
)
PACKAGE = "edge360"


def module_name(rel: str) -> str:
    return PACKAGE + "." + rel.removesuffix(".py").replace("/", ".")


def built_files(root: Path) -> list[Path]:
    """Every compiled file of a build under `root`: the modules and mypyc's shared library."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    return ([p for p in (root / PACKAGE).rglob(f"*{suffix}")]
            + list(root.glob(f"*__mypyc{suffix}")))


def clean(root: Path) -> None:
    for p in built_files(root):
        p.unlink()
    (root / PACKAGE / MANIFEST).unlink(missing_ok=True)


def manifest(root: Path) -> dict[str, object]:
    pkg = root / PACKAGE
    return {"cache_tag": sys.implementation.cache_tag,
            "modules": {module_name(rel): source_digest(pkg / rel) for rel in NATIVE}}


def up_to_date(root: Path) -> bool:
    path = root / PACKAGE / MANIFEST
    try:
        return bool(json.loads(path.read_text()) == manifest(root)) and bool(built_files(root))
    except (OSError, ValueError):
        return False


def build(root: Path, opt_level: str) -> None:
    """mypyc the NATIVE modules of `root`/edge360 in a child process (setuptools' build_ext,
    two compiler jobs), then write the manifest last: a build that fails leaves none."""
    clean(root)
    with tempfile.TemporaryDirectory(prefix="edge360-native-") as tmp:
        script = Path(tmp) / "setup.py"
        files = [f"{PACKAGE}/{rel}" for rel in NATIVE]
        script.write_text(
            "from setuptools import setup\n"
            "from mypyc.build import mypycify\n"
            f"setup(name='edge360-native', ext_modules=mypycify({files!r}, "
            f"opt_level={opt_level!r}, target_dir={str(Path(tmp) / 'c')!r}))\n")
        proc = subprocess.run(
            [sys.executable, str(script), "build_ext", "--inplace", "--build-temp",
             str(Path(tmp) / "o"), "--parallel", "2"],
            cwd=root, capture_output=True, text=True,
            env={**os.environ, "MYPY_CACHE_DIR": str(Path(tmp) / "mypy")})
        if proc.returncode != 0:
            clean(root)
            tail = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
            raise RuntimeError(tail[-1] if tail else f"exit {proc.returncode}")
    shutil.rmtree(root / "build", ignore_errors=True)
    (root / PACKAGE / MANIFEST).write_text(json.dumps(manifest(root), indent=1) + "\n")


def main() -> int:
    p = argparse.ArgumentParser(prog="scripts/build_native.py")
    p.add_argument("--root", type=Path, default=REPO / "src",
                   help="the directory holding the edge360 package (default: src)")
    p.add_argument("--clean", action="store_true", help="remove the build and run from source")
    p.add_argument("--opt-level", default="2", choices=("0", "1", "2", "3"))
    args = p.parse_args()
    root = args.root.resolve()
    if not (root / PACKAGE / "__init__.py").exists():
        print(f"build_native: no {PACKAGE} package under {root}", file=sys.stderr)
        return 2
    if args.clean:
        clean(root)
        return 0
    if up_to_date(root):
        print("build_native: compiled modules up to date")
        return 0
    try:
        build(root, args.opt_level)
    except (RuntimeError, OSError) as e:
        ci = os.environ.get("CI") == "true"
        print(f"build_native: compiling failed, edge360 runs from source: {e}", file=sys.stderr)
        return 1 if ci else 0
    print(f"build_native: {len(NATIVE)} modules compiled with mypyc")
    return 0


if __name__ == "__main__":
    sys.exit(main())

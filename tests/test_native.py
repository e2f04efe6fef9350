"""The compiled modules (edge360.native, scripts/build_native.py): CI runs the suite compiled, a
build runs only while it matches its sources, and the sources still serve on their own."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import sysconfig
import urllib.request
from pathlib import Path

import pytest

import edge360.http.protocol
from edge360.native import STATE
from tests.fixtures.servers import REPO, start_logged


def test_the_suite_runs_compiled_where_it_was_built() -> None:
    """CI must test what ships: under CI=true the setup built the modules and the suite imported
    them (a build that failed or went stale would leave everything interpreted)."""
    if not STATE.compiled:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI ran from source: {STATE.reason}")
        pytest.skip(f"not compiled here: {STATE.reason}")
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    assert edge360.http.protocol.__file__ is not None
    assert edge360.http.protocol.__file__.endswith(suffix)
    assert "edge360.http.protocol" in STATE.compiled and not STATE.unusable


def _package(tmp: Path, *, digest: str | None, tag: str | None = None) -> Path:
    """A package `pkgx` guarded like edge360: `mod.py` beside an extension module of the same
    name that is not a real one (importing it fails), and a manifest when `digest` is given."""
    pkg = tmp / "pkgx"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from pathlib import Path\nfrom edge360.native import guard\n"
        "STATE = guard(__name__, Path(__file__).parent)\n")
    (pkg / "mod.py").write_text('WHERE = "source"\n')
    (pkg / f"mod{sysconfig.get_config_var('EXT_SUFFIX')}").write_bytes(b"not an ELF file")
    if digest is not None:
        (pkg / "native.json").write_text(json.dumps({
            "cache_tag": tag or sys.implementation.cache_tag, "modules": {"pkgx.mod": digest}}))
    return tmp


def _import(root: Path, **env: str) -> tuple[str, str]:
    """(what `import pkgx.mod` gave, the guard's account), in a fresh interpreter."""
    code = ("import pkgx\ntry:\n    import pkgx.mod\n    got = pkgx.mod.WHERE\n"
            "except ImportError:\n    got = 'extension'\n"
            "print(got)\nprint(pkgx.STATE.describe(), pkgx.STATE.unusable)\n")
    full = {k: v for k, v in os.environ.items() if k != "EDGE360_NATIVE"}
    full.update(env, PYTHONPATH=os.pathsep.join([str(root), str(REPO / "src")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=full, timeout=60)
    assert out.returncode == 0, out.stderr
    got, account = out.stdout.splitlines()
    return got, account


def test_a_build_that_matches_its_sources_is_used(tmp_path: Path) -> None:
    digest = hashlib.sha256(b'WHERE = "source"\n').hexdigest()
    got, account = _import(_package(tmp_path, digest=digest))
    assert got == "extension"  # the extension module was the one imported
    assert account == "1 modules compiled with mypyc False"


def test_a_source_changed_since_the_build_runs_from_source(tmp_path: Path) -> None:
    got, account = _import(_package(tmp_path, digest="0" * 64))
    assert got == "source"
    assert account == ("running from source: pkgx.mod changed since the build "
                       "(run scripts/build_native.py) True")


@pytest.mark.parametrize("case", ["switch", "other python", "no manifest", "unreadable"])
def test_the_sources_run_when_the_build_may_not(tmp_path: Path, case: str) -> None:
    digest = hashlib.sha256(b'WHERE = "source"\n').hexdigest()
    root = _package(tmp_path, digest=None if case == "no manifest" else digest,
                    tag="cpython-10" if case == "other python" else None)
    if case == "unreadable":
        (root / "pkgx" / "native.json").write_text("{")
    got, account = _import(root, **({"EDGE360_NATIVE": "0"} if case == "switch" else {}))
    assert got == "source"
    expected = {"switch": "EDGE360_NATIVE=0 False", "other python": "built for cpython-10 True",
                "no manifest": "not built (scripts/build_native.py) False"}
    if case in expected:
        assert account == f"running from source: {expected[case]}"
    else:
        assert account.startswith("running from source: unreadable native.json")


def test_an_edge_from_source_serves_and_says_so(tiny_media: Path, tmp_path: Path) -> None:
    """The sources alone (EDGE360_NATIVE=0) still serve: an origin and an edge in front of it
    answer a segment, a miss then a hit of the same bytes, and the edge's log says which code
    runs."""
    logs = tmp_path / "origin.log", tmp_path / "edge.log"
    env = {"EDGE360_NATIVE": "0"}
    origin = start_logged(["serve", "--host", "127.0.0.1", "--port", "0", "--media",
                           str(tiny_media)], env, logs[0])
    try:
        edge = start_logged(["serve", "--host", "127.0.0.1", "--port", "0", "--role", "edge",
                             "--upstream", origin.base], env, logs[1])
        try:
            with urllib.request.urlopen(edge.base + "/tiny/v0/index.m3u8", timeout=10) as r:
                media = r.read().decode()
            segment = next(ln for ln in media.splitlines() if ln and not ln.startswith("#"))
            seen = []
            for _ in range(2):
                with urllib.request.urlopen(f"{edge.base}/tiny/v0/{segment}", timeout=10) as r:
                    seen.append((r.status, r.headers["X-Cache"], r.read()))
            assert [s[:2] for s in seen] == [(200, "MISS"), (200, "HIT")]
            assert seen[0][2] == seen[1][2] and len(seen[0][2]) > 0
        finally:
            edge.stop()
        assert "code: running from source: EDGE360_NATIVE=0" in logs[1].read_text()
    finally:
        origin.stop()

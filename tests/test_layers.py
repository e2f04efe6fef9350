"""The import rules of DESIGN.md, walked over the source so they stay true."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "edge360"
PURE = {"errors", "config", "configvalues", "kinds", "paths", "ranges", "conditional",
        "cachecontrol", "structuredfields", "policy", "storedfields", "invalidation",
        "playlist", "playlistrewrite", "sessions", "viewerrules", "auth", "clientaddr",
        "ratelimit", "hashing", "replay.model", "replay.hls"}
STATE = {"cache", "diskcache", "diskformat"}
IMPURE_LIBS = {"asyncio", "aiohttp", "uvloop", "aiofiles", "prometheus_client", "httptools"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if node.module == "edge360":
                found.update(f"edge360.{a.name}" for a in node.names)
    return found


def modules() -> dict[str, set[str]]:
    out = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        out[name] = imports_of(path)
    return out


def test_pure_core_imports_no_io_shell() -> None:
    for name, imps in modules().items():
        if name in PURE | STATE:
            bad = {i for i in imps if i.split(".")[0] in IMPURE_LIBS}
            assert not bad, f"{name} is pure but imports {bad}"
            internal = {i.removeprefix("edge360.") for i in imps if i.startswith("edge360.")}
            allowed = PURE | (STATE if name in STATE else set())
            assert internal <= allowed | {"edge360"}, f"{name} imports {internal - allowed}"


def test_nothing_imports_app_or_cli_and_roles_stay_apart() -> None:
    for name, imps in modules().items():
        if name not in ("cli", "__main__", "server"):
            assert "edge360.cli" not in imps, name
        if name not in ("cli", "server", "cluster"):
            # cluster is the supervisor of --workers N: it runs servers, it is part of L4
            assert "edge360.app" not in imps and "edge360.server" not in imps, name
    mods = modules()
    assert not any(i.startswith("edge360.edge") for i in mods["origin"])
    for name, imps in mods.items():
        if name.startswith("edge"):
            assert "edge360.origin" not in imps, name


def test_single_homes_for_third_party_libraries() -> None:
    for name, imps in modules().items():
        if "m3u8" in imps:
            assert name == "playlist", f"{name} imports m3u8"
        if "uvloop" in imps:
            assert name in ("cli", "replay.runner", "replay.command"), f"{name} imports uvloop"


def test_modules_stay_small() -> None:
    for path in SRC.rglob("*.py"):
        lines = len(path.read_text().splitlines())
        assert lines <= 450, f"{path.name} has {lines} lines"

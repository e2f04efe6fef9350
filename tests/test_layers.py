"""The architecture's import rules, walked over the source so they stay true (docs/ARCHITECTURE.md):
folders are layers, each imports only the folders below it, there are no import cycles (a lazy
import counts; one under TYPE_CHECKING does not), and the pure core does no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "edge360"
#: the layers, lowest first: a module may import its own folder and the folders before it
LAYERS = ("core", "config", "cache", "sessions", "hls", "security", "node", "http", "origin",
          "edge", "ops", "run", "replay")
#: what the pure core never imports (time is a parameter there; I/O belongs to the shell)
IMPURE = {"asyncio", "os", "time", "socket", "aiohttp", "uvloop", "aiofiles", "httptools",
          "prometheus_client", "subprocess", "threading", "selectors"}
#: the cache tiers are synchronous and timer-free
ASYNC = {"asyncio", "aiohttp", "uvloop", "aiofiles", "httptools"}
MAX_LINES = 400


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports anywhere (lazy imports included), except under TYPE_CHECKING."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            for a in node.names:  # `from edge360.x import y` may name the module x.y
                candidate = f"{node.module}.{a.name}"
                if (SRC.parent / (candidate.replace(".", "/") + ".py")).exists():
                    found.add(candidate)
    return found


def modules() -> dict[str, set[str]]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts) or "__init__"] = imports_of(path)
    return out


def internal(imps: set[str]) -> set[str]:
    return {i.removeprefix("edge360.") for i in imps if i.startswith("edge360.")}


def layer_of(module: str) -> int:
    top = module.split(".", maxsplit=1)[0]
    if top == "native":  # the import guard, below every layer (test_every_module_lives_in_a_layer)
        return -1
    return LAYERS.index(top) if top in LAYERS else len(LAYERS)


def test_every_module_lives_in_a_layer() -> None:
    top_level = [p.stem for p in SRC.glob("*.py")]
    # besides the package's own files, only the guard its __init__ runs first (edge360.native),
    # which stands below every layer: it imports nothing of edge360
    assert set(top_level) <= {"__init__", "__main__", "native"}, top_level
    assert not internal(imports_of(SRC / "native.py"))
    packages = [p for p in SRC.iterdir() if (p / "__init__.py").is_file()]
    assert len(packages) >= 6
    assert {p.name for p in packages} == set(LAYERS)


def test_each_folder_imports_only_lower_layers() -> None:
    for name, imps in modules().items():
        if name in ("__init__", "__main__"):
            continue
        for dep in internal(imps):
            assert layer_of(dep) <= layer_of(name), f"{name} imports {dep}, a higher layer"


def test_no_import_cycles() -> None:
    mods = modules()
    # (a module importing its own package's __init__ is not a cycle through the package)
    graph = {name: {d for d in internal(imps)
                    if d in mods and d != name and not name.startswith(d + ".")}
             for name, imps in mods.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep):], dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_core_is_pure_and_cache_is_synchronous() -> None:
    for name, imps in modules().items():
        roots = {i.split(".")[0] for i in imps}
        if name.split(".")[0] == "core":
            assert not roots & IMPURE, f"{name} is pure but imports {roots & IMPURE}"
        if name.split(".")[0] == "cache":
            assert not roots & ASYNC, f"{name} is synchronous but imports {roots & ASYNC}"


def test_roles_stay_apart() -> None:
    for name, imps in modules().items():
        deps = internal(imps)
        if name.startswith("origin"):
            assert not any(d.startswith("edge") for d in deps), name
        if name.startswith("edge"):
            assert not any(d.startswith("origin") for d in deps), name


def test_single_homes_for_third_party_libraries() -> None:
    for name, imps in modules().items():
        if "m3u8" in imps:
            assert name == "hls.playlist", f"{name} imports m3u8"
        if "uvloop" in imps:
            assert name in ("run.cli", "replay.runner", "replay.command"), f"{name} imports uvloop"


def test_modules_stay_small() -> None:
    for path in SRC.rglob("*.py"):
        lines = len(path.read_text().splitlines())
        assert lines <= MAX_LINES, f"{path.relative_to(SRC)} has {lines} lines"

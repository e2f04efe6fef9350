"""Whether edge360's hot modules run compiled, and the guard that keeps a stale build from running.

`scripts/build_native.py` compiles the modules a request passes through (the content plane, the
sessions, the replayer's players) with mypyc into extension modules beside their sources, and
writes `native.json` into this package: each compiled module with the SHA-256 of the source it
was built from. Python imports an extension module before a source file of the same name, so a
source edited after a build would silently not run. The guard below, installed by the package's
`__init__` before any other module of it is imported, prevents that: unless every compiled
module's source still has its recorded digest, every module of the package is imported from its
source file, and `STATE.reason` says why. `EDGE360_NATIVE=0` asks for the sources on purpose (a
traceback with line numbers, a profile of Python functions). docs/ARCHITECTURE.md, "Compiled
modules", says what compiled code may not do.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

#: the manifest the build writes into the package
MANIFEST = "native.json"
#: the environment switch: "0" runs every module from its source
SWITCH = "EDGE360_NATIVE"


@dataclass
class NativeState:
    """What the guard decided: `compiled` names the modules running compiled (empty: none), and
    `reason` says why none do when a build exists but is not used."""

    compiled: tuple[str, ...] = ()
    reason: str = "not built (scripts/build_native.py)"
    #: a build exists but may not run (stale, for another Python, unreadable): worth a warning
    unusable: bool = False

    def describe(self) -> str:
        if self.compiled:
            return f"{len(self.compiled)} modules compiled with mypyc"
        return f"running from source: {self.reason}"


STATE = NativeState()


def source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def module_source(package_dir: Path, package: str, name: str) -> Path:
    """The source file of module `name` (dotted, inside `package`)."""
    rel = name.removeprefix(package + ".").split(".")
    return package_dir.joinpath(*rel[:-1], rel[-1] + ".py")


def stale(package_dir: Path, package: str, modules: dict[str, str]) -> str | None:
    """Why the build recorded in `modules` (name -> source digest) may not run, or None."""
    for name, digest in sorted(modules.items()):
        src = module_source(package_dir, package, name)
        try:
            now = source_digest(src)
        except OSError:
            return f"{src.name} of {name} is missing"
        if now != digest:
            return f"{name} changed since the build (run scripts/build_native.py)"
    return None


class FromSource(importlib.abc.MetaPathFinder):
    """Imports every module of one package from its .py file, never from an extension module."""

    def __init__(self, package: str) -> None:
        self.package = package

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if not fullname.startswith(self.package + ".") or path is None:
            return None
        leaf = fullname.rpartition(".")[2]
        for entry in path:
            base = Path(entry) / leaf
            if (base / "__init__.py").exists():
                return None  # a subpackage: the normal finders, then this one for its modules
            source = base.with_suffix(".py")
            if source.exists():  # (a .py location gets the source loader, never an extension)
                return importlib.util.spec_from_file_location(fullname, source)
        return None


def guard(package: str, package_dir: Path, state: NativeState = STATE) -> NativeState:
    """Use the package's compiled modules only if its manifest matches every source; else make
    every module of `package` import from source (see the module docstring)."""
    manifest = package_dir / MANIFEST
    modules: dict[str, str] = {}
    reason: str | None
    unusable = False  # a build exists, but may not run
    if os.environ.get(SWITCH) == "0":
        reason = f"{SWITCH}=0"
    elif not manifest.exists():
        reason = "not built (scripts/build_native.py)"
    else:
        try:
            data = json.loads(manifest.read_text())
            modules = dict(data["modules"])
            reason = (None if data.get("cache_tag") == sys.implementation.cache_tag
                      else f"built for {data.get('cache_tag')}")
        except (OSError, ValueError, KeyError, TypeError) as e:
            reason = f"unreadable {MANIFEST}: {e}"
        if reason is None:
            reason = stale(package_dir, package, modules)
        unusable = reason is not None
    state.unusable = unusable
    if reason is None:
        state.compiled, state.reason = tuple(sorted(modules)), ""
        return state
    state.compiled, state.reason = (), reason
    if not any(isinstance(f, FromSource) and f.package == package for f in sys.meta_path):
        sys.meta_path.insert(0, FromSource(package))
    return state

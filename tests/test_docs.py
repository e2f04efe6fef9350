"""The repository documents itself (docs/DEVELOPING.md, "The documents"): every config key of the
schema has its row in docs/CONFIG.md, every document a file names is in the repository, every
section a comment cites exists, and no relative path in a document or a comment climbs out of the
repository."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os
import re
import subprocess
import tokenize
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType

from edge360.config.live import LIVE_KEYS
from edge360.config.schema import SECTIONS

ROOT = Path(__file__).resolve().parent.parent
#: this file holds examples of what it looks for: documents and paths that do not exist on purpose
SELF = Path(__file__).resolve()
DOCS = ROOT / "docs"
CONFIG_MD = DOCS / "CONFIG.md"
#: documents named before they exist (none now: every document named is checked)
PENDING: frozenset[str] = frozenset()
#: never scanned: git's own files, third-party packages, build and tool caches
SKIP_DIRS = frozenset({".git", "node_modules", ".venv", "__pycache__", ".mypy_cache",
                       ".ruff_cache", ".pytest_cache", ".hypothesis", "build", "dist", "vendor"})

#: a relative path that climbs: `../x`, `../../docs/y.md` (not `/../` inside a longer path)
CLIMB = re.compile(r"(?<![\w/.%\\-])((?:\.\./)+[\w.-]+(?:/[\w.-]+)*)")
#: a document named by path: `docs/HTTP.md`, `deploy/README.md`, `SECURITY.md`
DOC_NAME = re.compile(r"(?<![\w/.-])((?:[\w-]+/)*[A-Z][A-Z0-9_-]*\.md)(?![\w/-])")
#: a section cited after a document: docs/HTTP.md, "Tiers" or docs/ARCHITECTURE.md "Memory"
CITATION = re.compile(r"((?:[\w-]+/)*[A-Z][A-Z0-9_-]*\.md)`?,?\s*\(?\"([^\"\n]+)\"")
#: a Markdown link to a document or a heading: [x](CONFIG.md#secrets), [x](#drain)
LINK = re.compile(r"\]\(([^)\s#]*)(?:#([^)\s]+))?\)")
ROW = re.compile(r"^\| `(\w+)\.(\w+)` \| `(\w+)` \| `([^`]*)` \|", re.MULTILINE)


@cache
def repository_files() -> list[Path]:
    """The repository's files as git sees them (tracked, and new ones not ignored), else a walk."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.SubprocessError):
        names = []
        for top, dirs, files in os.walk(ROOT):
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
            names.extend(os.path.relpath(os.path.join(top, f), ROOT) for f in files)
    paths = [ROOT / n for n in names]
    return [p for p in paths if p.is_file() and p.resolve() != SELF
            and not set(p.relative_to(ROOT).parts) & SKIP_DIRS]


@cache
def text_files() -> dict[Path, str]:
    """Every text file of the repository by path (binary files, such as media, left out)."""
    out = {}
    for path in repository_files():
        with path.open("rb") as fh:
            start = fh.read(8192)
            if b"\0" in start:
                continue
            data = start + fh.read()
        try:
            out[path] = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return out


def prose(path: Path, text: str) -> Iterator[tuple[int, str]]:
    """The lines of a file that are written for people, numbered: all of them, except in Python
    source, where only comments and docstrings are (a string is data: a test's traversal attempt
    or a playlist it serves is no reference)."""
    if path.suffix != ".py":
        yield from enumerate(text.splitlines(), 1)
        return
    try:
        tree = ast.parse(text)
        comments = [tok for tok in tokenize.generate_tokens(
            iter(text.splitlines(keepends=True)).__next__) if tok.type == tokenize.COMMENT]
    except (SyntaxError, tokenize.TokenError):
        yield from enumerate(text.splitlines(), 1)
        return
    for tok in comments:
        yield tok.start[0], tok.string
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                for k, line in enumerate(first.value.value.splitlines()):
                    yield first.lineno + k, line


def climbs_out(path: Path, text: str) -> Iterator[tuple[int, str]]:
    """Relative paths in the prose of `path` that lead out of the repository, or to nothing in
    it."""
    for n, line in prose(path, text):
        for ref in CLIMB.findall(line):
            target = (path.parent / ref).resolve()
            if not target.is_relative_to(ROOT) or not target.exists():
                yield n, ref


def slug(heading: str) -> str:
    """The anchor a Markdown heading gets (GitHub's rule: lower case, punctuation dropped,
    spaces to hyphens)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def headings(path: Path) -> list[str]:
    return [line.lstrip("#").strip().replace("`", "")
            for line in path.read_text().splitlines() if line.startswith("#")]


def resolve(name: str, where: Path) -> Path | None:
    """The file a document name means: relative to the naming file, else to the repository,
    else the one repository file whose path ends with it (`RESULTS.md` in a benchmark test)."""
    for base in (where.parent, ROOT):
        candidate = (base / name).resolve()
        if candidate.is_file():
            return candidate
    found = [p for p in repository_files() if p.as_posix().endswith("/" + name.lstrip("./"))]
    return found[0] if len(found) == 1 else None


def pending(name: str, where: Path) -> bool:
    rel = os.path.relpath((where.parent / name).resolve(), ROOT)
    return name in PENDING or rel in PENDING


@cache
def config_table() -> ModuleType:
    """scripts/config_table.py, which prints the key table from the schema."""
    spec = importlib.util.spec_from_file_location("config_table",
                                                  ROOT / "scripts" / "config_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def documented_keys() -> dict[str, tuple[str, str]]:
    """`section.key` -> (environment variable, default) of each row of docs/CONFIG.md."""
    rows: dict[str, tuple[str, str]] = {}
    for section, key, env, default in ROW.findall(CONFIG_MD.read_text()):
        name = f"{section}.{key}"
        assert name not in rows, f"{name} has two rows in docs/CONFIG.md"
        rows[name] = (env, default)
    return rows


# -- docs/CONFIG.md against the schema


def test_every_config_key_has_its_row_in_config_md() -> None:
    table = config_table()
    defaults = table.defaults()
    rows = documented_keys()
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            name = f"{section}.{f.name}"
            assert name in rows, (f"config key {name} is missing from docs/CONFIG.md: add its row "
                                  f"(scripts/config_table.py {section} prints it)")
            env, default = rows[name]
            assert env == table.env_name(section, f.name), f"{name}: environment variable {env}"
            assert default == defaults[name], \
                f"{name}: docs/CONFIG.md says the default is {default}, the schema {defaults[name]}"


def test_every_row_of_config_md_is_a_key_of_the_schema() -> None:
    known = {f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    stale = sorted(set(documented_keys()) - known)
    assert not stale, f"docs/CONFIG.md documents keys the schema does not have: {stale}"


def test_the_keys_a_sighup_applies_are_named_in_config_md() -> None:
    text = CONFIG_MD.read_text()
    section = text[text.index("## Reloading with SIGHUP"):text.index("## Keys")]
    for section_name, key in sorted(LIVE_KEYS):
        assert f"`{section_name}.{key}`" in section, f"{section_name}.{key} applies on SIGHUP"


def test_config_table_prints_each_row_as_config_md_has_it() -> None:
    table = config_table()
    text = CONFIG_MD.read_text()
    for row in table.rows():
        prefix = row.rsplit(" | ", 1)[0]  # key, environment, default: the meaning is reworded
        assert prefix in text, f"not in docs/CONFIG.md: {prefix}"
    assert table.main(["nonsense"]) == 2


# -- a self-contained repository


def test_no_path_climbs_out_of_the_repository() -> None:
    found = [f"{path.relative_to(ROOT)}:{n}: {ref}" for path, text in text_files().items()
             for n, ref in climbs_out(path, text)]
    assert not found, "paths that lead out of the repository:\n" + "\n".join(found)


def test_every_document_named_is_in_the_repository() -> None:
    missing = []
    for path, text in text_files().items():
        for n, line in enumerate(text.splitlines(), 1):
            for name in DOC_NAME.findall(line):
                if resolve(name, path) is None and not pending(name, path):
                    missing.append(f"{path.relative_to(ROOT)}:{n}: {name}")
    assert not missing, "documents named but not in the repository:\n" + "\n".join(missing)


def test_every_cited_section_exists() -> None:
    missing = []
    for path, text in text_files().items():
        for name, section in CITATION.findall(text):
            target = resolve(name, path)
            if target is None:
                continue  # a missing document is the test above's
            if not any(h.startswith(section) for h in headings(target)):
                missing.append(f"{path.relative_to(ROOT)}: {name}, \"{section}\"")
    assert not missing, "sections cited but not in their document:\n" + "\n".join(missing)


def test_links_between_documents_resolve() -> None:
    broken = []
    for path, text in text_files().items():
        if path.suffix != ".md":
            continue
        for target, anchor in LINK.findall(text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            doc = path if not target else resolve(target, path)
            if doc is None:
                if not pending(target, path):
                    broken.append(f"{path.relative_to(ROOT)}: {target}")
                continue
            if anchor and doc.suffix == ".md" and anchor not in {slug(h) for h in headings(doc)}:
                broken.append(f"{path.relative_to(ROOT)}: {target}#{anchor}")
    assert not broken, "links to nothing:\n" + "\n".join(broken)


def test_the_checks_see_a_broken_reference(tmp_path: Path) -> None:
    """The patterns above catch what they are for (so the tests above can fail)."""
    doc = ROOT / "docs" / "X.md"
    assert list(climbs_out(doc, "see ../../notes/plan.md\nand ../README.md, ../gone")) == [
        (1, "../../notes/plan.md"), (2, "../gone")]
    assert list(climbs_out(ROOT / "x.py", '"""Read ../../elsewhere\nfirst."""\n'
                           'TRIES = ["../../etc/passwd"]  # a request, not a reference\n')) == [
        (1, "../../elsewhere")]
    assert DOC_NAME.findall("see `docs/HTTP.md`, and SECURITY.md.") == ["docs/HTTP.md",
                                                                        "SECURITY.md"]
    assert CITATION.findall('(docs/HTTP.md, "Tiers")') == [("docs/HTTP.md", "Tiers")]
    assert resolve("docs/NOWHERE.md", tmp_path / "x.py") is None
    assert slug("Publishing: a file still being written is not served") == \
        "publishing-a-file-still-being-written-is-not-served"
    assert slug("`[server]`".replace("`", "")) == "server"

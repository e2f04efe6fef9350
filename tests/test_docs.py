"""The repository documents itself (docs/DEVELOPING.md, "The documents"): every config key of the
schema has its row in docs/CONFIG.md, every document a file names is in the repository, every
section a comment cites exists, and nothing points at the briefs kept outside the repository."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest

from edge360.config.live import LIVE_KEYS
from edge360.config.schema import SECTIONS

ROOT = Path(__file__).resolve().parent.parent
#: this file names the patterns it looks for, and documents that do not exist on purpose
SELF = Path(__file__).resolve()
DOCS = ROOT / "docs"
CONFIG_MD = DOCS / "CONFIG.md"
#: documents named before they exist (none now: every document named is checked)
PENDING: frozenset[str] = frozenset()
#: never scanned: git's own files, third-party packages, build and tool caches
SKIP_DIRS = frozenset({".git", "node_modules", ".venv", "__pycache__", ".mypy_cache",
                       ".ruff_cache", ".pytest_cache", ".hypothesis", "build", "dist", "vendor"})

#: what a self-contained repository never mentions: the briefs folder beside the checkout, its
#: contract, and its design and traffic notes (docs/ names its own ARCHITECTURE.md and
#: FIRST-DAY.md, so no document here shares a name with them); written so that this file does
#: not match itself
FORBIDDEN = (re.compile(r"\.\./shared"), re.compile(r"\bCONT" r"RACT\b"),
             re.compile(r"\b(?:DES" r"IGN|TRA" r"FFIC)\.md"))
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


def lines_matching(pattern: re.Pattern[str]) -> Iterator[tuple[str, int, str]]:
    for path, text in text_files().items():
        rel = path.relative_to(ROOT)
        for n, line in enumerate(text.splitlines(), 1):
            if pattern.search(line):
                yield str(rel), n, line.strip()


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


@pytest.mark.parametrize("pattern", FORBIDDEN, ids=["briefs folder", "contract", "notes"])
def test_nothing_points_at_the_briefs_outside_the_repository(pattern: re.Pattern[str]) -> None:
    found = list(lines_matching(pattern))
    assert not found, "mentions of documents the repository does not hold:\n" + "\n".join(
        f"{path}:{n}: {line}" for path, n, line in found)


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
    assert FORBIDDEN[0].search("see ../" "shared/CONTRACT.md")
    assert FORBIDDEN[1].search("the CONT" "RACT says")
    assert not FORBIDDEN[1].search("EXTENSION_TABLE, CONTRACTED")
    assert FORBIDDEN[2].search("per TRAFFIC" ".md: fibre")
    assert FORBIDDEN[2].search("docs/DESIGN" ".md")
    assert DOC_NAME.findall("see `docs/HTTP.md`, and SECURITY.md.") == ["docs/HTTP.md",
                                                                        "SECURITY.md"]
    assert CITATION.findall('(docs/HTTP.md, "Tiers")') == [("docs/HTTP.md", "Tiers")]
    assert resolve("docs/NOWHERE.md", tmp_path / "x.py") is None
    assert slug("Publishing: a file still being written is not served") == \
        "publishing-a-file-still-being-written-is-not-served"
    assert slug("`[server]`".replace("`", "")) == "server"

"""Print the config key table of docs/CONFIG.md from the schema, one Markdown row per key.

    .venv/bin/python scripts/config_table.py            # every section
    .venv/bin/python scripts/config_table.py edge       # one section

Each row is `| key | environment variable | default | meaning |`, the meaning being the schema's
short description. docs/CONFIG.md keeps the first three columns exactly as printed here and
words the meaning for readers; tests/test_docs.py fails when a key of the schema is missing
there or its default differs, so after adding a key run this and paste its row.
"""

from __future__ import annotations

import dataclasses
import sys

from edge360.config.schema import ENV_ONLY, SECTIONS, Config, render


def env_name(section: str, key: str) -> str:
    """The environment variable of a key: EDGE360_<SECTION>_<KEY>, upper-cased."""
    return f"EDGE360_{section}_{key}".upper()


def defaults() -> dict[str, str]:
    """`section.key` -> its default as TOML, as `edge360 check-config` prints it."""
    out: dict[str, str] = {}
    section = ""
    for line in render(Config()).splitlines():
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif " = " in line:
            key, _, value = line.partition(" = ")
            out[f"{section}.{key}"] = value
    return out


def rows(only: str | None = None) -> list[str]:
    """The table rows, in schema order."""
    shown = defaults()
    out = []
    for section, cls in SECTIONS.items():
        if only is not None and section != only:
            continue
        for f in dataclasses.fields(cls):
            doc = f.metadata["doc"]
            if (section, f.name) in ENV_ONLY and "environment only" not in doc:
                doc += " (environment only)"
            out.append(f"| `{section}.{f.name}` | `{env_name(section, f.name)}` | "
                       f"`{shown[f'{section}.{f.name}']}` | {doc} |")
    return out


def main(argv: list[str]) -> int:
    if len(argv) > 1 or (argv and argv[0] not in SECTIONS):
        sys.stderr.write(f"config_table: give at most one section of {', '.join(SECTIONS)}\n")
        return 2
    print("| key | environment | default | meaning |")
    print("|---|---|---|---|")
    for row in rows(argv[0] if argv else None):
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""Results: medians and ratios of one run, the results file it is written to, and RESULTS.md,
which `render_results` generates from every results file (RESULTS.md is never edited by hand;
tests/test_benchmarks.py checks it is exactly what the generator makes).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
RESULTS_MD = BENCH_DIR / "RESULTS.md"
SERVERS = ("edge360", "nginx")
RENDER_COMMAND = ".venv/bin/python -m benchmarks.run --render"

#: unit and direction of each metric; the ratio is always edge360 / nginx
METRICS: dict[str, tuple[str, str]] = {
    "req_per_s": ("requests/s", "higher"),
    "gb_per_cpu_s": ("GB per server CPU-second", "higher"),
    "gb_per_pair_cpu_s": ("GB per server + client CPU-second", "higher"),
    "gb_per_s": ("GB/s", "higher"),
    "p99_ms": ("p99 latency, ms", "lower"),
    "ttfb_p50_ms": ("TTFB p50, ms", "lower"),
    "ttfb_p99_ms": ("TTFB p99, ms", "lower"),
    "ttfb_max_ms": ("TTFB max, ms", "lower"),
    "upstream_fetches": ("upstream fetches per herd", "lower"),
    "cpu_us_per_request": ("server CPU µs per request", "lower"),
    "handshakes_per_s": ("full TLS handshakes/s", "higher"),
    "cpu_us_per_handshake": ("server CPU µs per full handshake", "lower"),
}
#: a results document holding only figures without an nginx counterpart
EDGE360_ONLY = "edge360-only"


def summarize(runs: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Median per (workload, metric, server) and the edge360/nginx ratio, in first-seen order.
    Only pairs measured on both servers become rows; the others are returned by name, so a
    one-sided figure is reported as such and never shown as a comparison."""
    values: dict[tuple[str, str], dict[str, list[float]]] = {}
    for run in runs:
        if run.get("value") is None:
            continue
        key = (run["workload"], run["metric"])
        values.setdefault(key, {}).setdefault(run["server"], []).append(float(run["value"]))
    summary: list[dict[str, Any]] = []
    unpaired: list[str] = []
    for (workload, metric), by_server in values.items():
        if not all(by_server.get(s) for s in SERVERS):
            unpaired.append(f"{workload} / {metric}: only {', '.join(sorted(by_server))}")
            continue
        ours = statistics.median(by_server["edge360"])
        ref = statistics.median(by_server["nginx"])
        summary.append({
            "workload": workload, "metric": metric, "edge360": ours, "nginx": ref,
            "ratio": ours / ref if ref else None,
            "rounds": {s: len(by_server[s]) for s in SERVERS},
        })
    return summary, unpaired


def results_path(results_dir: Path, date: str, group: str = "") -> Path:
    """`<results_dir>/<YYYY-MM-DD>[-<group>].json`, with -2, -3, ... for further runs that day."""
    stem = date[:10] + (f"-{group}" if group else "")
    path = results_dir / f"{stem}.json"
    n = 2
    while path.exists():
        path = results_dir / f"{stem}-{n}.json"
        n += 1
    return path


def write_results(doc: dict[str, Any], results_dir: Path) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_path(results_dir, doc["date"], doc.get("group", ""))
    path.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    return path


def load_results(results_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """(file name, document) for every results file, newest first (by the date recorded inside,
    then by name, so the order never depends on the file system)."""
    docs = [(p.name, json.loads(p.read_text())) for p in sorted(results_dir.glob("*.json"))]
    docs.sort(key=lambda item: (item[1].get("date", ""), item[0]), reverse=True)
    return docs


def _num(value: float | None) -> str:
    """Four significant figures, no exponent for the magnitudes measured here."""
    if value is None:
        return "n/a"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 1:
        return f"{value:.4g}"
    return f"{value:.3g}"


def _render_one(name: str, doc: dict[str, Any]) -> list[str]:
    m = doc.get("machine", {})
    s = doc.get("settings", {})
    lines = [
        f"## {doc.get('date', '?')} (`results/{name}`)",
        "",
        f"Command: `{doc.get('command', '?')}`  ",
        f"Machine: {m.get('cpu_model', '?')}, {m.get('cores', '?')} cores, kernel "
        f"{m.get('kernel', '?')}, Python {m.get('python', '?')}, {m.get('nginx', 'nginx ?')}, "
        f"{m.get('wrk', 'wrk ?')}; load average {m.get('loadavg_before', '?')} before, "
        f"{m.get('loadavg_after', '?')} after  ",
        *([f"edge360 code: {m['edge360_code']}  "] if m.get("edge360_code") else []),
        f"Pinning: {doc.get('pinning', '?')}  ",
        f"Rounds: {s.get('rounds', '?')}, wrk runs of {s.get('duration_s', '?')} s, edge360 and "
        f"nginx interleaved; figures are medians over the rounds.",
        "",
    ]
    if doc.get("mode") == "quick":
        lines += ["**Quick smoke run: tiny objects, one short round; these figures measure "
                  "nothing.**", ""]
    lines += [
        "| workload | metric | edge360 | nginx | ratio edge360/nginx | better |",
        "|---|---|---:|---:|---:|---|",
    ]
    for row in doc.get("summary", []):
        unit, better = METRICS.get(row["metric"], (row["metric"], "?"))
        ratio = "n/a" if row.get("ratio") is None else f"{row['ratio']:.2f}"
        lines.append(f"| {row['workload']} | {unit} | {_num(row['edge360'])} | "
                     f"{_num(row['nginx'])} | {ratio} | {better} |")
    if not doc.get("summary"):
        lines.append("| (nothing measured) | | | | | |")
    lines.append("")
    if doc.get("workloads"):
        lines.append("What was requested:")
        for w in doc["workloads"]:
            req = w.get("request", {})
            # request details beyond method, path and client: ranges, TLS, the lifetime the
            # origin gave (only what the file records; older files have fewer)
            extra = "".join(f"; {req[k]}" for k in ("range", "tls", "lifetime") if req.get(k))
            conns = req.get("connections", "?")
            conns = f"{conns} connections" if isinstance(conns, int) else conns
            lines.append(f"- {w['name']}: `{req.get('method', 'GET')} {req.get('path', '?')}`, "
                         f"{conns}, {req.get('client', '?')}{extra}. {w.get('description', '')}")
        lines.append("")
    if doc.get("not_run"):
        lines.append("Not run:")
        lines += [f"- {n['workload']}: {n['reason']}" for n in doc["not_run"]]
        lines.append("")
    if doc.get("notes"):
        lines.append("Notes:")
        lines += [f"- {note}" for note in doc["notes"]]
        lines.append("")
    return lines


def figure(group: str, name: str, value: float | None, unit: str,
           target: str = "", note: str = "") -> dict[str, Any]:
    """One edge360-only figure (no nginx counterpart): what, how much, in what unit, the target
    the issue set (if any) and a short note on how it was taken."""
    return {"group": group, "figure": name, "value": value, "unit": unit, "target": target,
            "note": note}


def edge360_only_doc(group: str, *, date: str, command: str, machine: dict[str, Any],
                     figures: list[dict[str, Any]], settings: dict[str, Any],
                     notes: list[str], raw: dict[str, Any]) -> dict[str, Any]:
    """A results document of edge360-only figures: rendered in RESULTS.md's separate section,
    never as a comparison row (it has no runs and no summary)."""
    return {"kind": EDGE360_ONLY, "group": group, "date": date, "command": command,
            "machine": machine, "settings": settings, "figures": figures, "notes": notes,
            "raw": raw, "runs": [], "summary": []}


def is_comparison(doc: dict[str, Any]) -> bool:
    return doc.get("kind", "comparison") != EDGE360_ONLY


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _render_edge360_only(docs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """The separate section: every figure of every file (newest first), each row naming the
    command that produced it, the date and the results file it comes from."""
    rows = [(name, doc, f) for name, doc in docs for f in doc.get("figures", [])]
    lines = [
        "## edge360-only figures",
        "",
        "Figures the issues ask for that have no nginx counterpart (memory per session, touches",
        "per second, playlist rewrite cost, replayer capacity, CPU per request across workers).",
        "They are not comparisons: each row names the command that measured it, when, and the",
        "results file it is generated from.",
        "",
    ]
    if not rows:
        return [*lines, "None recorded yet.", ""]
    lines += ["| group | figure | value | unit | target | measured | command | source |",
              "|---|---|---:|---|---|---|---|---|"]
    for name, doc, f in rows:
        lines.append(f"| {f['group']} | {_cell(f['figure'])} | {_num(f.get('value'))} | "
                     f"{_cell(f['unit'])} | {_cell(f.get('target') or '')} | "
                     f"{doc.get('date', '?')} | `{_cell(doc.get('command', '?'))}` | "
                     f"`results/{name}` |")
    lines.append("")
    for name, doc in docs:
        if not doc.get("figures"):
            continue
        m = doc.get("machine", {})
        lines.append(f"`results/{name}`: {m.get('cpu_model', '?')}, {m.get('cores', '?')} "
                     f"cores, Python {m.get('python', '?')}; load average "
                     f"{m.get('loadavg_before', '?')} before, {m.get('loadavg_after', '?')} "
                     f"after.")
        notes = [f"{f['figure']}: {f['note']}" for f in doc["figures"] if f.get("note")]
        notes += doc.get("notes", []) if not is_comparison(doc) else []
        lines += [f"- {_cell(n)}" for n in notes]
        lines.append("")
    return lines


def render_results(results_dir: Path) -> str:
    """RESULTS.md from every results file in `results_dir`, newest first: one comparison table
    per comparison file, then one section of every edge360-only figure."""
    lines = [
        "# edge360 benchmark results",
        "",
        "Generated from every file in `benchmarks/results/` by `render_results()` in",
        f"`benchmarks/results.py`; do not edit by hand (regenerate: `{RENDER_COMMAND}`).",
        "Each table compares edge360 with nginx measured side by side in the same run; the ratio",
        "is edge360's median over nginx's, and \"better\" says which direction wins.",
        "Figures without an nginx counterpart are in the last section, \"edge360-only figures\".",
        "",
    ]
    docs = load_results(results_dir) if results_dir.is_dir() else []
    comparisons = [(n, d) for n, d in docs if is_comparison(d)]
    if not comparisons:
        lines += ["No comparison results recorded yet.", ""]
    for name, doc in comparisons:
        lines += _render_one(name, doc)
    lines += _render_edge360_only(docs)
    return "\n".join(lines).rstrip("\n") + "\n"


def write_markdown(results_dir: Path, path: Path) -> None:
    path.write_text(render_results(results_dir))

"""Run the HTTP caching conformance suite (cache-tests.fyi, npm `http-cache-tests`) against an edge.

Starts the suite's test server on a free loopback port, an edge360 edge whose only upstream is that
server (settings of a generic shared cache: every query parameter in the key, unsafe methods
passed through so the suite can configure its server and test invalidation), runs the suite's CLI
through the edge, scores the results and stops everything by PID.

    .venv/bin/python scripts/cache_tests.py                # score; rewrite docs/CONFORMANCE.md
    .venv/bin/python scripts/cache_tests.py --json r.json  # also keep the raw results
    .venv/bin/python scripts/cache_tests.py --id freshness-max-age   # one test, with its exchange

The score is the suite's own: a test passes when its result is `true`; the kinds (required,
optimal, check) and groups are the suite's. The reference caches are the proxies and CDN whose
results the suite ships (`results/*.json`), scored the same way. Exit 0 after a full run (1 when
the edge or the suite did not run, 2 on bad arguments or a missing suite). Bounded: every start
has a deadline and the whole run a --timeout; processes are stopped by PID (SIGTERM, then
SIGKILL), on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SUITE = REPO / "node_modules" / "http-cache-tests"
DOC = REPO / "docs" / "CONFORMANCE.md"
REFERENCE = ("squid", "apache", "trafficserver", "varnish", "nginx", "nuster", "fastly")

#: The edge as a generic shared cache in front of an arbitrary origin: every query parameter in the
#: key, the usual unsafe methods go through, and no
#: retries (they go "on another parent", and there is one). The HLS defaults (segment_ttl,
#: playlist_ttl, the default stale windows, prefetch) only apply to HLS kinds, which the suite
#: never requests.
EDGE_TOML = """\
[edge]
upstreams = ["{upstream}"]
cache_key_params = ["*"]
pass_methods = ["POST", "PUT", "DELETE", "PATCH"]
prefetch_depth = 0
retries = 0
"""

#: Runs the suite's server bound to loopback only (the server itself listens on every address).
SERVER_JS = """\
import http from 'http'
const listen = http.Server.prototype.listen
http.Server.prototype.listen = function (port) { return listen.call(this, port, '127.0.0.1') }
await import(process.argv[1])
"""

#: Prints the suite's test metadata: one record per test the CLI runs (browser-only ones skipped).
META_JS = """\
const suite = process.argv[1]
const tests = (await import(suite + '/tests/index.mjs')).default
tests.push((await import(suite + '/tests/surrogate-control.mjs')).default)
const out = []
for (const s of tests) for (const t of s.tests) {
  if (t.browser_only === true) continue
  out.push({group: s.id, group_name: s.name, id: t.id, name: t.name,
            kind: t.kind || 'required', depends_on: t.depends_on || []})
}
console.log(JSON.stringify(out))
"""


#: Why the remaining failures of `required`/`optimal` tests remain, by test id prefix (rendered
#: into the page only while such a test fails).
NOTES = {
    "age-parse-": "The suite wants an invalid or repeated `Age` to make the response stale; the "
                  "edge follows RFC 9111 §4.2.3 (an unusable age_value counts as 0, of a list the "
                  "first member). No reference cache passes the duplicate cases either.",
    "stale-close-": "Not passable by a proxy: when the origin drops the connection and "
                    "must-revalidate/no-cache/s-maxage forbid stale, the edge answers 502, but the "
                    "suite counts an answer as not from cache only by a header the origin "
                    "itself adds. Every reference cache fails these.",
    "surrogate-": "`Surrogate-Control` (the pre-standard ESI field) is not implemented; edge360 "
                  "obeys the standard targeted fields of RFC 9213 (`CDN-Cache-Control`, "
                  "`Edge360-Cache-Control`).",
    "invalidate-M-SEARCH": "`edge.pass_methods` accepts method names of letters only, so "
                           "M-SEARCH cannot be passed through (405).",
    "headers-store-Content-Length": "The suite's server sends `Content-Length: 5` with a longer "
                                    "body; Node 20 aborts that connection, so the edge sees no "
                                    "answer (502).",
    "304-etag-update-response-Content-Length": "As headers-store-Content-Length.",
    "headers-store-Content-Range": "A 200 carrying `Content-Range`: the edge stores whole "
                                   "responses without it (it writes its own for ranges).",
    "304-etag-update-response-Content-Range": "As headers-store-Content-Range.",
    "304-etag-update-response-ETag": "A 304 whose ETag differs from the stored one does not "
                                     "identify it (RFC 9111 §4.3.4); the edge refuses it (502).",
    "partial-": "A 206 for a range the edge did not ask for (its pieces are aligned) is relayed, "
                "not stored.",
}


@dataclass(frozen=True)
class Test:
    group: str
    group_name: str
    id: str
    name: str
    kind: str


class Procs:
    """The processes this script started, stopped by PID in reverse order."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[str]] = []

    def start(self, argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[str]:
        with open(log, "ab") as err:
            proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                    stderr=err, text=True, start_new_session=True)
        self.started.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.started):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in reversed(self.started):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            if proc.stdout is not None:
                proc.stdout.close()


def wait_line(proc: subprocess.Popen[str], pattern: re.Pattern[str], seconds: float) -> str:
    """The first stdout line matching `pattern` (group 1), within `seconds`."""
    assert proc.stdout is not None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = proc.stdout.readline()
        if not line:
            break
        m = pattern.search(line)
        if m is not None:
            return m.group(1)
    raise RuntimeError(f"process {proc.pid} did not get ready in {seconds:g} s "
                       f"(exit {proc.poll()})")


def node_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("npm_", "EDGE360_"))}
    env.update(extra)
    return env


@contextmanager
def running(workdir: Path) -> Iterator[str]:
    """The suite's server and an edge in front of it; yields the edge's base URL."""
    procs = Procs()
    try:
        server = procs.start(
            ["node", "--input-type=module", "-e", SERVER_JS, str(SUITE / "server/server.mjs")],
            node_env(npm_package_config_protocol="http", npm_package_config_port="0",
                     npm_package_config_pidfile=str(workdir / "server.pid")),
            workdir / "server.log")
        upstream = wait_line(server, re.compile(r"Listening on (http://[0-9.]+:\d+)/"), 20)
        (workdir / "edge.toml").write_text(EDGE_TOML.format(upstream=upstream))
        edge = procs.start(
            [sys.executable, "-m", "edge360", "serve", "--role", "edge", "--port", "0",
             "--config", str(workdir / "edge.toml")],
            node_env(), workdir / "edge.log")
        yield wait_line(edge, re.compile(r"^edge360 edge ready (http://[^/\s]+)/"), 30)
    finally:
        procs.stop()


def metadata() -> list[Test]:
    out = subprocess.run(["node", "--input-type=module", "-e", META_JS, str(SUITE)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return [Test(d["group"], d["group_name"], d["id"], d["name"], d["kind"])
            for d in json.loads(out)]


def run_cli(base: str, timeout: float, test_id: str = "") -> str:
    """The CLI's stdout: the results as JSON, or one test's exchange when `test_id` is given."""
    proc = subprocess.run(["node", "--no-warnings", "cli.mjs"], cwd=SUITE,
                          env=node_env(npm_config_base=base, npm_package_config_base=base,
                                       npm_config_id=test_id, npm_package_config_id=test_id),
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or proc.stderr.strip():
        raise RuntimeError(f"the suite's CLI failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def passed(result: Any) -> bool:
    return result is True


def score(tests: list[Test], results: dict[str, Any]) -> dict[str, Any]:
    """Passed/total overall, per kind and per group; the failures with the suite's messages."""
    kinds: Counter[str] = Counter()
    kinds_passed: Counter[str] = Counter()
    groups: dict[str, list[int]] = {}
    failures = []
    for t in tests:
        ok = passed(results.get(t.id))
        kinds[t.kind] += 1
        kinds_passed[t.kind] += ok
        g = groups.setdefault(t.group_name, [0, 0])
        g[0] += ok
        g[1] += 1
        if not ok:
            r = results.get(t.id)
            why = r[1] if isinstance(r, list) and len(r) > 1 else "no result"
            failures.append({"id": t.id, "name": t.name, "kind": t.kind, "group": t.group_name,
                             "why": str(why)})
    return {"passed": sum(kinds_passed.values()), "total": len(tests),
            "kinds": {k: [kinds_passed[k], kinds[k]] for k in sorted(kinds)},
            "groups": groups, "failures": failures}


def reference_scores(tests: list[Test]) -> dict[str, dict[str, Any]]:
    out = {}
    for name in REFERENCE:
        path = SUITE / "results" / f"{name}.json"
        if path.exists():
            s = score(tests, json.loads(path.read_text()))
            out[name] = {"passed": s["passed"], "total": s["total"], "kinds": s["kinds"]}
    return out


def render(s: dict[str, Any], refs: dict[str, dict[str, Any]], seconds: float) -> str:
    def kinds(k: dict[str, list[int]]) -> str:
        return ", ".join(f"{name} {p}/{n}" for name, (p, n) in k.items())
    lines = [
        "# HTTP caching conformance",
        "",
        "Generated by `scripts/cache_tests.py`; do not edit by hand. The suite is cache-tests.fyi",
        f"(npm `http-cache-tests` {suite_version()}), run with its CLI through an edge360 edge",
        "whose upstream is the suite's test server (settings: `EDGE_TOML` in the script). A test",
        "passes when its result is `true`; kinds are the suite's: `required` (the RFCs' MUSTs),",
        "`optimal` (SHOULDs and good practice) and `check` (a behaviour noted, neither good nor",
        f"bad). Run took {seconds:.0f} s.",
        "",
        f"**edge360: {s['passed']} of {s['total']}** ({kinds(s['kinds'])})",
        "",
        "Reference caches, scored the same way from the results the suite ships:",
        "",
        "| cache | passed | by kind |",
        "|---|---|---|",
    ]
    lines += [f"| {n} | {r['passed']} of {r['total']} | {kinds(r['kinds'])} |"
              for n, r in refs.items()]
    lines += ["", "## By group", "", "| group | passed |", "|---|---|"]
    lines += [f"| {g} | {p} of {n} |" for g, (p, n) in s["groups"].items()]
    failing = {f["id"] for f in s["failures"] if f["kind"] != "check"}
    notes = [f"- `{prefix}*`: {text}" for prefix, text in NOTES.items()
             if any(i.startswith(prefix) for i in failing)]
    if notes:
        lines += ["", "## Why the remaining required/optimal failures remain", "", *notes]
    lines += ["", "## Failing tests", "", "`check` tests note a behaviour; failing one is neither "
              "good nor bad.", "", "| id | kind | test | result |", "|---|---|---|---|"]
    for f in s["failures"]:
        name = f["name"].replace("|", "\\|").replace("\n", " ")
        why = f["why"].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{f['id']}` | {f['kind']} | {name} | {why} |")
    return "\n".join(lines) + "\n"


def suite_version() -> str:
    return str(json.loads((SUITE / "package.json").read_text())["version"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--id", default="", help="run one test and print its exchange")
    parser.add_argument("--json", type=Path, help="write the raw results and the score here")
    parser.add_argument("--doc", type=Path, default=DOC, help="the generated page")
    parser.add_argument("--no-doc", action="store_true", help="do not write the page")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for the suite")
    args = parser.parse_args(argv)
    if not (SUITE / "cli.mjs").exists() or shutil.which("node") is None:
        print("cache_tests: node and node_modules/http-cache-tests are needed (npm install)",
              file=sys.stderr)
        return 2
    tests = metadata()
    if args.id and args.id not in {t.id for t in tests}:
        print(f"cache_tests: no test {args.id!r}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="cache-tests-") as tmp:
        try:
            with running(Path(tmp)) as base:
                started = time.monotonic()
                out = run_cli(base, args.timeout, args.id)
                seconds = time.monotonic() - started
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            for log in sorted(Path(tmp).glob("*.log")):
                sys.stderr.write(f"--- {log.name}\n{log.read_text()[-3000:]}\n")
            print(f"cache_tests: {e}", file=sys.stderr)
            return 1
    if args.id:
        print(out)
        return 0
    results = json.loads(out)
    s = score(tests, results)
    refs = reference_scores(tests)
    print(f"edge360: {s['passed']} of {s['total']} passed "
          f"({', '.join(f'{k} {p}/{n}' for k, (p, n) in s['kinds'].items())}) in {seconds:.0f} s")
    for g, (p, n) in s["groups"].items():
        print(f"  {p:3d}/{n:<3d} {g}")
    best = max(refs.items(), key=lambda kv: kv[1]["passed"], default=None)
    if best is not None:
        print(f"best reference cache: {best[0]} {best[1]['passed']} of {best[1]['total']}")
    if args.json is not None:
        args.json.write_text(json.dumps({"score": s, "results": results,
                                         "reference": refs}, indent=1))
    if not args.no_doc:
        args.doc.write_text(render(s, refs, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())

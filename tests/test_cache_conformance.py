"""The HTTP caching conformance suite (cache-tests.fyi, npm `http-cache-tests`) run whole against a
real edge in front of the suite's own test server, through scripts/cache_tests.py (real processes
on loopback; about 20 s, the suite's 3 s pauses run concurrently).

The floor is the score edge360 reached (docs/CONFORMANCE.md): a change that makes the edge a worse
HTTP cache fails here. Besides the total, the tests for the behaviours fixed to reach it are named
one by one, so a regression says what broke: forwarding the client's fields upstream (without it
the suite cannot even tell its requests apart), no stale answers for non-HLS content without
permission, non-200 answers stored by their own freshness, 304s that never relabel stored bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.tools import require_tool

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "cache_tests.py"
#: the score reached (2026-11-29, suite 0.4.5): 253 of 350 passed, 141 of the 165 required
#: (before the fixes: 149 and 40). The best reference cache the suite ships, Squid, has 243 and
#: 141. The floors sit 3 and 2 below that: a few of the suite's own tests race its 3-second
#: waits on a loaded 2-core machine (one run scored 252 with no code change). Raise them when
#: the edge gets better; never lower them to make a change pass.
FLOOR_TOTAL = 250
FLOOR_REQUIRED = 139
#: one test per fixed behaviour (all `required` or `optimal` in the suite)
FIXED = [
    "freshness-max-age",          # request fields forwarded: the suite's Req-Num reaches it
    "cc-resp-no-store",
    "vary-syntax-star",
    "invalidate-POST",
    "freshness-max-age-0",        # no default stale-while-revalidate for non-HLS content
    "freshness-expires-past",
    "304-etag-update-response-Cache-Control",
    "status-301-fresh",           # non-200 answers stored by their own freshness
    "status-404-fresh",
    "status-404-stale",           # ... and an explicitly stale one never negatively cached
    "heuristic-503-not_cached",   # a silent 5xx of non-HLS content is not cached
    "heuristic-410-cached",
    "304-etag-update-response-Content-Encoding",  # a 304 never relabels the stored bytes
    "304-etag-update-response-Content-MD5",
]


def test_suite_score_does_not_fall(tmp_path: Path) -> None:
    require_tool("node")
    if not (REPO / "node_modules" / "http-cache-tests" / "cli.mjs").exists():
        message = "node_modules/http-cache-tests is missing (scripts/setup.sh runs npm install)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--json", str(out), "--no-doc",
                           "--timeout", "300"], capture_output=True, text=True, timeout=420,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    score, results = doc["score"], doc["results"]
    assert score["total"] >= 340, score["total"]  # the whole suite ran
    broken = [t for t in FIXED if results.get(t) is not True]
    assert not broken, {t: results.get(t) for t in broken}
    assert score["passed"] >= FLOOR_TOTAL, proc.stdout
    assert score["kinds"]["required"][0] >= FLOOR_REQUIRED, proc.stdout

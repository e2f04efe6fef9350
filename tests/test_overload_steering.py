"""Content steering between two real edges (docs/OVERLOAD.md, "Steering"): masters list every
variant once per pathway, GET /steering orders the pathways by free capacity from each edge's
exact count (a full edge last, one that is down after it) without ever touching a session, and
a new viewer a full edge cannot seat is admitted on the other pathway."""

from __future__ import annotations

import json
import re
import signal
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.fixtures.fleets import read_json, steered_fleet, wait_for
from tests.fixtures.titles import make_title


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        body: bytes = r.read()
        return body.decode("utf-8", "replace")


def priority(base: str, query: str = "") -> list[str]:
    data = read_json(f"{base}/steering{query}")
    ranked = data["PATHWAY-PRIORITY"]
    assert isinstance(ranked, list)
    return [str(p) for p in ranked]


def test_steering_between_two_edges(tmp_path: Path) -> None:
    make_title(tmp_path / "media")
    with steered_fleet(tmp_path / "media", {"e1": 4, "e2": 2}) as fleet:
        e1, e2 = fleet.bases["e1"], fleet.bases["e2"]
        master = fetch(e1 + "/demo/master.m3u8")
        sid = parse_qs(urlsplit(next(ln for ln in master.splitlines()
                                     if ln.startswith("http"))).query)["sid"][0]
        assert f'#EXT-X-CONTENT-STEERING:SERVER-URI="/steering?sid={sid}",PATHWAY-ID="e1"' \
            in master
        assert master.count('PATHWAY-ID="e1"') == 3 and master.count('PATHWAY-ID="e2"') == 2
        assert f"{e2}/demo/v1/index.m3u8?sid={sid}&ticket=" in master
        manifest = read_json(f"{e1}/steering?sid={sid}&_HLS_pathway=e1&_HLS_throughput=9e6")
        assert manifest["VERSION"] == 1 and manifest["TTL"] == 1
        assert manifest["PATHWAY-PRIORITY"] == ["e1", "e2"]
        assert manifest["RELOAD-URI"] == f"/steering?sid={sid}"
        # four viewers play on e1: it is full, and goes last for everyone not on it. A pathway's
        # load is every seat it holds: those four, and the first master's viewer while it is
        # still starting (it ends idle_timeout after its request)
        for n in range(4):
            fetch(f"{e1}/demo/v0/seg_000.ts?sid=viewer{n:04d}")

        def seats() -> int:
            s = fleet.stats("e1")
            return int(s["sessions_active"]) + int(s["sessions_starting"])
        wait_for(lambda: fleet.stats("e1")["sessions_active"] == 4)
        for name in ("e1", "e2"):
            wait_for(lambda name=name: fleet.stats(name)["steering"]["e1"]["active"] == seats())  # type: ignore[misc, index]
        before = fleet.stats("e1")
        assert priority(e1) == ["e2", "e1"] and priority(e2) == ["e2", "e1"]
        after = fleet.stats("e1")
        assert (after["sessions_active"], after["sessions_starting"]) == (
            before["sessions_active"], before["sessions_starting"])
        # a new viewer e1 cannot seat is admitted on e2, and takes no seat on e1
        moved = fetch(e1 + "/demo/master.m3u8")
        assert 'PATHWAY-ID="e2"' in moved.splitlines()[1]
        assert fleet.stats("e1")["sessions_starting"] == after["sessions_starting"]
        # e2 goes down: it is last, after the full e1
        assert fleet.edges["e2"].stop(signal.SIGKILL) != 0
        wait_for(lambda: not fleet.stats("e1")["steering"]["e2"]["up"])  # type: ignore[index]
        assert priority(e1) == ["e1", "e2"]
        metrics = fetch(e1 + "/metrics")
        assert 'edge360_steering_pathway_up{pathway="e2"} 0.0' in metrics
        assert re.search(r'edge360_steering_pathway_sessions\{pathway="e1"\} [45]\.0', metrics)
        assert json.loads(fetch(e1 + "/api/stats"))["capacity"] == 4

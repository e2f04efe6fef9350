"""The operator configs: Prometheus config, alerts, recording rules (with promtool unit tests) and
the Grafana dashboard name only metrics edge360 exports, parse, and never pad a query with zeros."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.tools import require_tool

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "config" / "prometheus"
GRAFANA = ROOT / "config" / "grafana"
DASHBOARD = GRAFANA / "edge360.json"
README = ROOT / "deploy" / "README.md"

#: Grafana's built-in variables and what a test substitutes for them (scrape interval 15 s).
GRAFANA_VARIABLES = {
    "__rate_interval": "1m", "__interval": "15s", "__interval_ms": "15000",
    "__range": "1h", "__range_s": "3600", "__range_ms": "3600000",
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def known_metrics() -> set[str]:
    """The metric names docs/DEVELOPING.md lists (the one list every module agrees on)."""
    text = (ROOT / "docs/DEVELOPING.md").read_text()
    start = text.index("Metric names")
    end = text.index("- Tests:", start)
    return set(re.findall(r"`(edge360_[a-z_]+)", text[start:end]))


def substitute(expr: str) -> str:
    """`expr` with Grafana's variables replaced; an unknown variable raises ValueError."""
    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in GRAFANA_VARIABLES:
            raise ValueError(f"unknown Grafana variable ${name} in {expr!r}")
        return GRAFANA_VARIABLES[name]
    # longest names first is implicit: \w+ is greedy, so $__interval_ms never matches $__interval
    return _VARIABLE.sub(one, expr)


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in panels:
        if p.get("type") == "row":
            out.extend(_panels(p.get("panels", [])))
        else:
            out.append(p)
    return out


def dashboard_panels(path: Path = DASHBOARD) -> list[dict[str, Any]]:
    """Every non-row panel of a dashboard, rows' nested panels included."""
    return _panels(json.loads(path.read_text())["panels"])


def dashboard_queries(path: Path | str = DASHBOARD) -> list[str]:
    """Every panel's PromQL query, Grafana variables substituted ($__rate_interval -> 1m, ...)."""
    panels = dashboard_panels(Path(path))
    return [substitute(t["expr"]) for p in panels for t in p.get("targets", [])]


#: a recorded series name (level:metric:operations); not a subquery's [1h:15s]
_RECORDED = re.compile(r"(?<![A-Za-z0-9_])[A-Za-z_][A-Za-z0-9_]*:[A-Za-z0-9_:]*[A-Za-z0-9_]")


def _unquoted(expr: str) -> str:
    """`expr` with quoted strings emptied and range/subquery brackets blanked."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return re.sub(r"\[[0-9smhdwy:]+\]", "[]", bare)


def metric_names(expr: str) -> set[str]:
    """edge360 metric names an expression reads (histogram suffixes stripped).

    Quoted strings (label values) and recorded series names (level:metric:ops) are left out."""
    bare = _RECORDED.sub(" ", _unquoted(expr))
    names = set()
    known = known_metrics()
    for found in re.findall(r"\bedge360_[a-z_]+", bare):
        name = found
        for suffix in _HISTOGRAM_SUFFIXES:
            if found.endswith(suffix) and found[: -len(suffix)] in known:
                name = found[: -len(suffix)]
        names.add(name)
    return names


def recorded_names(expr: str) -> set[str]:
    return set(_RECORDED.findall(_unquoted(expr)))


def padding(expr: str) -> list[str]:
    """Zero padding that hides a missing series: vector(...) or `or 0`."""
    return re.findall(r"\bvector\s*\(|\bor\s+0\b|\bor\s+on\s*\(\s*\)\s*vector", expr)


def balanced(expr: str) -> bool:
    stack: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    in_string = False
    for i, ch in enumerate(expr):
        if ch == '"' and (i == 0 or expr[i - 1] != "\\"):
            in_string = not in_string
        elif in_string:
            continue
        elif ch in "([{":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return False
    return not stack and not in_string


def rules(name: str) -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROM / name).read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def _promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    tool = require_tool("promtool")
    return subprocess.run([tool, *map(str, args)], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, check=False)


# -- the checkers themselves can fail --

def test_known_metrics_come_from_the_developer_list() -> None:
    known = known_metrics()
    contract = {"edge360_sessions_active", "edge360_sessions_peak", "edge360_sessions_peak_recent",
                "edge360_views_total", "edge360_requests_total", "edge360_egress_bytes_total",
                "edge360_cache_requests_total", "edge360_upstream_requests_total"}
    assert contract <= known
    assert "edge360_upstream_request_duration_seconds" in known


def test_metric_names_finds_unknown_and_strips_histogram_suffixes() -> None:
    expr = ("histogram_quantile(0.9, sum by (le) "
            "(rate(edge360_upstream_request_duration_seconds_bucket[1m])))"
            ' / edge360_made_up_total{code="edge360_not_a_metric"} + fleet:edge360_x:sum')
    assert metric_names(expr) == {
        "edge360_upstream_request_duration_seconds", "edge360_made_up_total"}
    assert recorded_names(expr) == {"fleet:edge360_x:sum"}
    assert padding("sum(x) or vector(0)") and padding("sum(x) or 0") and not padding("sum(x or y)")
    assert not balanced("sum(rate(x[1m])") and balanced('sum(rate(x{a="(["}[1m]))')


def test_dashboard_queries_substitutes_variables(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"panels": [
        {"type": "row", "panels": [{"type": "timeseries", "targets": [
            {"expr": "rate(a[$__rate_interval]) + max_over_time(b[${__range}:$__interval])"}]}]},
        {"type": "stat", "targets": [{"expr": "sum(c)"}]}]}))
    assert dashboard_queries(path) == ["rate(a[1m]) + max_over_time(b[1h:15s])", "sum(c)"]
    bad = {"panels": [{"type": "stat", "targets": [{"expr": 'x{i="$node"}'}]}]}
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="node"):
        dashboard_queries(path)


# -- Prometheus --

def test_promtool_check_config() -> None:
    result = _promtool("check", "config", PROM / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rule files found" in result.stdout


def test_promtool_check_rules() -> None:
    result = _promtool("check", "rules", PROM / "alerts.yml", PROM / "recording.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests() -> None:
    tests = sorted((PROM / "tests").glob("*.yml"))
    assert {t.name for t in tests} >= {"recording_test.yml", "alerts_test.yml"}
    result = _promtool("test", "rules", *tests)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_config_scrapes_loopback_with_roles_and_loads_rules() -> None:
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
    assert set(cfg["rule_files"]) == {"alerts.yml", "recording.yml"}
    roles = {}
    for job in cfg["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                roles[target] = static["labels"]["role"]
    assert set(roles.values()) == {"origin", "edge"}
    assert all(t.startswith(("127.0.0.1:", "localhost:", "[::1]:")) for t in roles)


def test_alerts_have_for_severity_summary_and_known_metrics() -> None:
    alerts = rules("alerts.yml")
    known = known_metrics()
    for rule in alerts:
        assert "alert" in rule, rule
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        names = metric_names(rule["expr"])
        assert names <= known, (rule["alert"], names - known)
        assert not recorded_names(rule["expr"]), "alerts must work without recording.yml"
        assert not padding(rule["expr"]) and balanced(rule["expr"]), rule["alert"]
    exprs = {r["alert"]: r["expr"] for r in alerts}
    origin = exprs["Edge360OriginErrors"]
    assert 'role="origin"' in origin and 'code=~"5.."' in origin
    assert "edge360_cache_bytes_total" in exprs["Edge360CacheHitRatioLow"]
    assert "edge360_late_segments_total" in exprs["Edge360LateSegmentsRising"]
    assert "edge360_connections_open" in exprs["Edge360NodeConnectionsNearLimit"]
    assert "edge360_sessions_active" in exprs["Edge360NodeSessionsNearCapacity"]
    assert 'code=~"5..|timeout|connect_error|truncated"' in exprs["Edge360UpstreamErrors"]
    assert "edge360_parent_up == 0" in exprs["Edge360ParentDown"]
    # overload control (docs/OVERLOAD.md): the queue, shaping, a steering pathway down
    assert "edge360_sessions_queued" in exprs["Edge360ViewersQueued"]
    shaping = exprs["Edge360EgressShaping"]
    assert "edge360_egress_projected_bytes_per_second" in shaping and "0.9 *" in shaping
    assert "edge360_steering_pathway_up" in exprs["Edge360SteeringPathwayDown"]


def test_recording_rules_known_metrics_and_documented() -> None:
    recording = rules("recording.yml")
    known = known_metrics()
    recorded = [r["record"] for r in recording]
    readme = README.read_text()
    lines = (PROM / "recording.yml").read_text().splitlines()
    for rule in recording:
        expr = rule["expr"]
        assert metric_names(expr) <= known, (rule["record"], metric_names(expr) - known)
        # a rule may read a series recorded earlier in the file, never one that does not exist
        earlier = set(recorded[: recorded.index(rule["record"])])
        assert recorded_names(expr) <= earlier, rule["record"]
        assert not padding(expr) and balanced(expr), rule["record"]
        assert re.fullmatch(r"[a-z]+:edge360_[a-z0-9_]+:[a-z0-9_]+", rule["record"])
        assert f"`{rule['record']}`" in readme, f"{rule['record']} not in deploy/README.md"
        # a comment sits right above each rule
        at = lines.index(next(x for x in lines if x.strip() == f"- record: {rule['record']}"))
        above = [line.strip() for line in lines[:at] if line.strip()]
        assert above[-1].startswith("#"), rule["record"]


def test_fleet_peak_is_max_over_time_of_the_recorded_sum() -> None:
    recording = {r["record"]: r["expr"] for r in rules("recording.yml")}
    sums = [name for name, expr in recording.items()
            if re.fullmatch(r"sum\(edge360_sessions_active\)", expr.replace(" ", ""))]
    assert len(sums) == 1
    peaks = {name: expr for name, expr in recording.items() if "max_over_time" in expr}
    assert peaks
    for expr in peaks.values():
        pattern = rf"max_over_time\({re.escape(sums[0])}\[\d+[hd]\]\)"
        assert re.fullmatch(pattern, expr.replace(" ", ""))
        assert "edge360_sessions_peak" not in expr


# -- Grafana --

def test_dashboard_has_datasource_variable_and_every_panel_uses_it() -> None:
    dash = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard_panels():
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"])["uid"] == "${datasource}"


def test_every_dashboard_query_is_known_unpadded_and_balanced() -> None:
    known = known_metrics()
    queries = dashboard_queries()
    assert len(queries) >= 10
    for query in queries:
        names = metric_names(query)
        assert names, f"names no edge360 metric: {query}"
        assert names <= known, (query, names - known)
        assert not recorded_names(query), f"depends on recording rules: {query}"
        assert not padding(query), query
        assert balanced(query), query


def test_every_dashboard_query_parses_as_promql(tmp_path: Path) -> None:
    queries = dashboard_queries()
    group = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query:{i}", "expr": q} for i, q in enumerate(queries)]}]}
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(group))
    result = _promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(queries)} rules found" in result.stdout


def test_dashboard_has_the_operator_panels() -> None:
    flat = [q.replace(" ", "") for q in dashboard_queries()]

    def some(pattern: str) -> bool:
        return any(re.search(pattern, q) for q in flat)

    assert some(r"^sum\(edge360_sessions_active\)$")
    assert some(r"max_over_time\(sum\(edge360_sessions_active\)\[")
    assert some(r"edge360_sessions_peak\b") and some(r"edge360_sessions_peak_recent")
    assert some(r"rate\(edge360_views_total\[")
    assert some(r"sumby\(rendition\)\(edge360_sessions_active\)")
    assert some(r"rate\(edge360_egress_bytes_total\[1m\]\)\)\*8/1e9")
    assert some(r'edge360_cache_bytes_total\{result=~"hit\|stale"\}')
    assert some(r'edge360_cache_requests_total\{result=~"hit\|stale"\}')
    assert some(r"sumby\(code\)\(rate\(edge360_upstream_requests_total")
    assert some(r"histogram_quantile\(0\.\d+,sumby\(le\)\(rate\("
                r"edge360_upstream_request_duration_seconds_bucket")
    assert some(r"rate\(edge360_late_segments_total")
    # overload control: admission, the queue, shaping and the steering split
    assert some(r"sumby\(result\)\(rate\(edge360_admission_total\[")
    assert some(r"edge360_sessions_queued")
    assert some(r"/sumby\(instance\)\(edge360_sessions_capacity>0\)")
    assert some(r"edge360_egress_projected_bytes_per_second")
    assert some(r"edge360_shaped_playlists_total")
    assert some(r"maxby\(pathway\)\(edge360_steering_pathway_sessions\)")


def test_grafana_provisioning_loads_the_dashboard_from_the_documented_mounts() -> None:
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "edge360.yml").read_text())
    (provider,) = prov["providers"]
    assert provider["type"] == "file"
    dash_dir = provider["options"]["path"]
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert [d["type"] for d in ds["datasources"]] == ["prometheus"]
    readme = README.read_text()
    # README tells how config/grafana reaches dash_dir and provisioning reaches Grafana's folder
    assert re.search(rf"config/grafana/?:{re.escape(dash_dir)}", readme), dash_dir
    assert re.search(r"config/grafana/provisioning/?:/etc/grafana/provisioning", readme)

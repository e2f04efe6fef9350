"""The Kubernetes base in deploy/k8s renders, validates against the Kubernetes schemas, and hangs
together: selectors, ports, probes, drain timing and each role's edge360.toml."""

from __future__ import annotations

import copy
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

import edge360.config.schema
from edge360.core.errors import ConfigError
from tests.fixtures.tools import require_tool

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "deploy" / "k8s"
SCHEMA_VERSIONS = ("1.29", "1.32")
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
COMPONENT = "app.kubernetes.io/component"
Obj = dict[str, Any]


@pytest.fixture(scope="module")
def objects() -> list[Obj]:
    kubectl = require_tool("kubectl")
    result = subprocess.run([kubectl, "kustomize", str(BASE)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[Obj], kind: str, name: str) -> Obj:
    (found,) = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    return found


def workloads(objects: list[Obj]) -> list[Obj]:
    return [o for o in objects if o["kind"] in WORKLOAD_KINDS]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def label_selector_matches(selector: Obj, labels: dict[str, str]) -> bool:
    """A metav1.LabelSelector (matchLabels and matchExpressions In/NotIn/Exists)."""
    if not selects(selector.get("matchLabels", {}), labels):
        return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        ok = {"In": labels.get(key) in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def pod_labels(workload: Obj) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"]["labels"])


def containers(workload: Obj) -> list[Obj]:
    return list(workload["spec"]["template"]["spec"]["containers"])


def toml_of(objects: list[Obj], workload: Obj) -> dict[str, Any]:
    """The edge360.toml the workload mounts at /etc/edge360, parsed."""
    spec = workload["spec"]["template"]["spec"]
    (container,) = containers(workload)
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/etc/edge360"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    cm = named(objects, "ConfigMap", volume["configMap"]["name"])
    return tomllib.loads(cm["data"]["edge360.toml"])


def example_secret() -> Obj:
    doc: Obj = yaml.safe_load((BASE / "secret.example.yaml").read_text())
    return doc


def container_env(container: Obj) -> dict[str, str]:
    """The EDGE360_* environment a container gets, secrets taken from the example Secret."""
    secret = example_secret()
    env = {}
    for e in container.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        env[e["name"]] = secret["stringData"][ref["key"]] if ref else e["value"]
    return env


def sleep_seconds(container: Obj) -> float:
    command = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
    m = re.search(r"time\.sleep\((\d+(?:\.\d+)?)\)", command)
    assert m, command
    return float(m.group(1))


# -- schemas --

def test_every_object_validates_against_the_kubernetes_schemas(objects: list[Obj]) -> None:
    kinds = {o["kind"] for o in objects}
    assert kinds >= {"Deployment", "StatefulSet", "Service", "HorizontalPodAutoscaler",
                     "PodDisruptionBudget", "ConfigMap", "ServiceMonitor"}
    for obj in objects:
        if obj["apiVersion"] == "monitoring.coreos.com/v1":
            continue  # a CRD: checked structurally below
        for version in SCHEMA_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


def test_schema_validation_rejects_a_broken_object(objects: list[Obj]) -> None:
    broken = copy.deepcopy(named(objects, "Deployment", "edge360-edge"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, SCHEMA_VERSIONS[-1], strict=True)


def test_service_monitor_structure(objects: list[Obj]) -> None:
    (sm,) = of_kind(objects, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(sm["spec"]) <= {"selector", "endpoints", "jobLabel", "namespaceSelector",
                               "podTargetLabels", "targetLabels", "sampleLimit"}
    assert isinstance(sm["spec"]["selector"], dict) and sm["spec"]["selector"]
    assert sm["spec"]["endpoints"]
    for ep in sm["spec"]["endpoints"]:
        assert isinstance(ep["port"], str) and ep["port"]
        assert ep.get("path", "/metrics") == "/metrics"
        assert re.fullmatch(r"\d+[sm]", ep["interval"])
        for r in ep.get("relabelings", []):
            assert set(r) <= {"sourceLabels", "targetLabel", "action", "regex", "replacement",
                              "separator", "modulus"}
    roles = [r for ep in sm["spec"]["endpoints"] for r in ep.get("relabelings", [])
             if r.get("targetLabel") == "role"]
    assert roles and roles[0]["sourceLabels"] == [
        "__meta_kubernetes_pod_label_app_kubernetes_io_component"]


# -- selectors and ports --

def test_every_selector_matches_a_pod_template(objects: list[Obj]) -> None:
    pods = [pod_labels(w) for w in workloads(objects)]
    for w in workloads(objects):
        assert label_selector_matches(w["spec"]["selector"], pod_labels(w)), w["metadata"]["name"]
        spec = w["spec"]["template"]["spec"]
        for tsc in spec.get("topologySpreadConstraints", []):
            assert label_selector_matches(tsc["labelSelector"], pod_labels(w))
        for term in spec.get("affinity", {}).get("podAntiAffinity", {}).get(
                "preferredDuringSchedulingIgnoredDuringExecution", []):
            assert label_selector_matches(term["podAffinityTerm"]["labelSelector"], pod_labels(w))
    for svc in of_kind(objects, "Service"):
        matching = [p for p in pods if selects(svc["spec"]["selector"], p)]
        assert len(matching) == 1, svc["metadata"]["name"]
    for pdb in of_kind(objects, "PodDisruptionBudget"):
        matching = [p for p in pods if label_selector_matches(pdb["spec"]["selector"], p)]
        assert len(matching) == 1, pdb["metadata"]["name"]


def test_service_and_probe_ports_name_container_ports(objects: list[Obj]) -> None:
    for w in workloads(objects):
        for c in containers(w):
            names = {p["name"] for p in c["ports"]}
            for probe in ("readinessProbe", "livenessProbe"):
                assert c[probe]["httpGet"]["path"] == "/healthz"
                assert c[probe]["httpGet"]["port"] in names, (w["metadata"]["name"], probe)
    for svc in of_kind(objects, "Service"):
        (w,) = [w for w in workloads(objects) if selects(svc["spec"]["selector"], pod_labels(w))]
        names = {p["name"] for c in containers(w) for p in c["ports"]}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in names, svc["metadata"]["name"]


def test_service_monitor_scrapes_all_three_roles_on_a_named_port(objects: list[Obj]) -> None:
    (sm,) = of_kind(objects, "ServiceMonitor")
    services = [s for s in of_kind(objects, "Service")
                if label_selector_matches(sm["spec"]["selector"], s["metadata"]["labels"])]
    roles = set()
    for svc in services:
        (w,) = [w for w in workloads(objects) if selects(svc["spec"]["selector"], pod_labels(w))]
        roles.add(pod_labels(w)[COMPONENT])
        by_name = {p["name"]: p for p in svc["spec"]["ports"]}
        container_ports = {p["name"] for c in containers(w) for p in c["ports"]}
        for ep in sm["spec"]["endpoints"]:
            assert ep["port"] in by_name, svc["metadata"]["name"]
            assert by_name[ep["port"]]["targetPort"] in container_ports
    assert roles == {"origin", "shield", "edge"}


def test_hpa_and_pdb_point_at_the_edge_deployment(objects: list[Obj]) -> None:
    edge = named(objects, "Deployment", "edge360-edge")
    (hpa,) = of_kind(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    ref = hpa["spec"]["scaleTargetRef"]
    target = (ref["apiVersion"], ref["kind"], ref["name"])
    assert target == ("apps/v1", "Deployment", "edge360-edge")
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert "replicas" not in edge["spec"], "the HPA owns the edge replica count"
    pdbs = [p for p in of_kind(objects, "PodDisruptionBudget")
            if label_selector_matches(p["spec"]["selector"], pod_labels(edge))]
    assert len(pdbs) == 1
    shield = named(objects, "StatefulSet", "edge360-shield")
    assert any(label_selector_matches(p["spec"]["selector"], pod_labels(shield))
               for p in of_kind(objects, "PodDisruptionBudget"))


# -- drain, resources, secrets --

def test_grace_period_covers_prestop_and_drain(objects: list[Obj]) -> None:
    for w in workloads(objects):
        spec = w["spec"]["template"]["spec"]
        server = toml_of(objects, w)["server"]
        drain = server["drain_delay"] + server["drain_timeout"]
        (c,) = containers(w)
        assert c["lifecycle"]["preStop"]["exec"]["command"][0] == "python"
        prestop = sleep_seconds(c)
        assert prestop > 0
        assert spec["terminationGracePeriodSeconds"] > prestop + drain, w["metadata"]["name"]
        live = c["livenessProbe"]
        # /healthz fails for the whole drain; liveness must not restart a draining pod
        assert live["periodSeconds"] * live["failureThreshold"] > drain, w["metadata"]["name"]


def test_containers_run_the_image_with_the_mounted_config(objects: list[Obj]) -> None:
    for w in workloads(objects):
        for c in containers(w):
            assert c["image"] == "edge360:latest"
            assert c["command"] == ["edge360", "serve", "--config", "/etc/edge360/edge360.toml"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), w["metadata"]["name"]


def test_secrets_come_from_secret_key_refs_of_the_documented_secret(objects: list[Obj]) -> None:
    secret = example_secret()
    kubernetes_validate.validate(secret, SCHEMA_VERSIONS[-1], strict=True)
    assert all("REPLACE-ME" in v for v in secret["stringData"].values())
    assert not of_kind(objects, "Secret"), "the base must not ship placeholder secrets"
    seen = set()
    for w in workloads(objects):
        for c in containers(w):
            for e in c.get("env", []):
                assert "value" not in e, f"{e['name']} must come from a Secret"
                ref = e["valueFrom"]["secretKeyRef"]
                assert ref["name"] == secret["metadata"]["name"]
                assert ref["key"] in secret["stringData"]
                seen.add(e["name"])
    assert seen == {"EDGE360_PEER_TOKEN", "EDGE360_ADMIN_TOKEN", "EDGE360_AUTH_KEYS"}
    edge = named(objects, "Deployment", "edge360-edge")
    assert set(container_env(containers(edge)[0])) == seen
    readme = (ROOT / "deploy" / "README.md").read_text()
    assert secret["metadata"]["name"] in readme and "secret.example.yaml" in readme


# -- each role's edge360.toml --

def test_configmap_toml_loads_with_edge360_config(objects: list[Obj], tmp_path: Path) -> None:
    for w in workloads(objects):
        name = w["metadata"]["name"]
        raw = toml_of(objects, w)
        path = tmp_path / f"{name}.toml"
        path.write_text(named(objects, "ConfigMap", _config_name(w))["data"]["edge360.toml"])
        (c,) = containers(w)
        config = edge360.config.schema.load(path, env=container_env(c))  # raises on any unknown key
        assert config.server.host == "0.0.0.0" and config.server.port == 8080
        assert config.server.port == c["ports"][0]["containerPort"]
        role = pod_labels(w)[COMPONENT]
        assert config.server.role == ("origin" if role == "origin" else "edge")
        assert raw["server"]["drain_delay"] == config.server.drain_delay
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        if role == "origin":
            assert config.origin.media == "/media" and "/media" in mounts
        if role == "shield":
            vct = {t["metadata"]["name"] for t in w["spec"]["volumeClaimTemplates"]}
            cache_mounts = {m["mountPath"] for m in c["volumeMounts"] if m["name"] in vct}
            assert config.edge.cache_dir in cache_mounts


def _config_name(workload: Obj) -> str:
    spec = workload["spec"]["template"]["spec"]
    (volume,) = [v for v in spec["volumes"] if "configMap" in v]
    return str(volume["configMap"]["name"])


def test_upstreams_point_at_the_tier_above(objects: list[Obj]) -> None:
    shield = named(objects, "StatefulSet", "edge360-shield")
    origin_svc = named(objects, "Service", "edge360-origin")
    shield_svc = named(objects, "Service", shield["spec"]["serviceName"])
    assert shield_svc["spec"]["clusterIP"] == "None"
    (origin_url,) = toml_of(objects, shield)["edge"]["upstreams"]
    u = urlsplit(origin_url)
    assert (u.hostname, u.port) == ("edge360-origin", origin_svc["spec"]["ports"][0]["port"])
    edge = named(objects, "Deployment", "edge360-edge")
    hosts = []
    for url in toml_of(objects, edge)["edge"]["upstreams"]:
        u = urlsplit(url)
        assert u.port == shield_svc["spec"]["ports"][0]["port"]
        hosts.append(u.hostname)
    name, svc = shield["metadata"]["name"], shield_svc["metadata"]["name"]
    # one URL per shield replica, each pod by its stable name, so hashing keeps a file on one shield
    assert hosts == [f"{name}-{i}.{svc}" for i in range(shield["spec"]["replicas"])]


def test_service_links_are_off_because_edge360_rejects_their_variables(
        objects: list[Obj], tmp_path: Path) -> None:
    # What the kubelet would inject for each Service with a cluster IP (headless ones get none).
    links = {}
    for svc in of_kind(objects, "Service"):
        if svc["spec"].get("clusterIP") == "None":
            continue
        prefix = svc["metadata"]["name"].upper().replace("-", "_")
        port = svc["spec"]["ports"][0]
        links[f"{prefix}_SERVICE_HOST"] = "10.0.0.1"
        links[f"{prefix}_SERVICE_PORT"] = str(port["port"])
        links[f"{prefix}_PORT"] = f"tcp://10.0.0.1:{port['port']}"
    assert any(k.startswith("EDGE360_") for k in links)
    edge = named(objects, "Deployment", "edge360-edge")
    path = tmp_path / "edge.toml"
    path.write_text(named(objects, "ConfigMap", _config_name(edge))["data"]["edge360.toml"])
    with pytest.raises(ConfigError):
        edge360.config.schema.load(path, env={**container_env(containers(edge)[0]), **links})
    for w in workloads(objects):
        assert w["spec"]["template"]["spec"]["enableServiceLinks"] is False, w["metadata"]["name"]


def test_readme_documents_the_custom_metrics_path() -> None:
    readme = (ROOT / "deploy" / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    adapter = [yaml.safe_load(b) for b in blocks if "seriesQuery" in b]
    assert adapter, "no Prometheus adapter rule in deploy/README.md"
    (rule,) = adapter[0]["rules"]
    assert rule["name"]["as"] == "edge360_sessions_active"
    assert "edge360_sessions_active" in rule["seriesQuery"]
    hpa = [yaml.safe_load(b) for b in blocks if "type: Pods" in b]
    assert hpa and hpa[0]["metrics"][0]["pods"]["metric"]["name"] == "edge360_sessions_active"

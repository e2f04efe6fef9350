"""The Dockerfile, checked statically (no Docker engine runs here) and its config validated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parent.parent


def parsed() -> DockerfileParser:
    parser = DockerfileParser(path=str(REPO / "Dockerfile"))
    return parser


def test_dockerfile_runs_edge360_as_non_root_with_healthcheck() -> None:
    p = parsed()
    final = [i for i in p.structure if i["instruction"] != "COMMENT"]
    last_from = max(i for i, ins in enumerate(final) if ins["instruction"] == "FROM")
    stage = final[last_from:]
    assert "slim" in stage[0]["value"]
    users = [i["value"] for i in stage if i["instruction"] == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(i["instruction"] == "EXPOSE" and "8080" in i["value"].split() for i in stage)
    health = [i["value"] for i in stage if i["instruction"] == "HEALTHCHECK"]
    assert health and "/healthz" in health[0] and "curl" not in health[0]
    cmd = [i["value"] for i in stage if i["instruction"] == "CMD"][-1]
    assert json.loads(cmd) == ["edge360", "serve", "--config", "/etc/edge360/edge360.toml"]
    copies = " ".join(i["value"] for i in stage if i["instruction"] == "COPY")
    assert "config/docker/edge360.toml /etc/edge360/edge360.toml" in copies
    # hls.js is built in a stage from npm, never copied from the repository
    assert "--from=web" in copies and "node_modules/hls.js" in copies


def test_image_config_is_valid_and_listens_everywhere() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE360_")}
    out = subprocess.run([sys.executable, "-m", "edge360", "check-config",
                          str(REPO / "config" / "docker" / "edge360.toml")],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert 'host = "0.0.0.0"' in out.stdout and "port = 8080" in out.stdout

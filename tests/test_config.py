"""The one config object: precedence, parsing of every kind of value, one clear error per key."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge360.config.schema import ENV_ONLY, SECTIONS, load, render
from edge360.core.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_defaults() -> None:
    c = load(None, {})
    assert (c.server.host, c.server.port, c.server.role, c.server.workers) == (
        "127.0.0.1", 8080, "origin", 1)
    assert c.sessions.idle_timeout == 30.0 and c.sessions.peak_window == 15.0
    assert c.edge.cache_key_params == () and c.edge.pass_methods == ()


def test_precedence_flags_over_env_over_toml(tmp_path: Path) -> None:
    p = write(tmp_path, "[server]\nport = 9000\nhost = '0.0.0.0'\n[sessions]\nidle_timeout = 7\n")
    c = load(p, {"EDGE360_SERVER_PORT": "9100", "EDGE360_SESSIONS_IDLE_TIMEOUT": "5.5"},
             {"server.port": "9200"})
    assert c.server.port == 9200
    assert c.server.host == "0.0.0.0"
    assert c.sessions.idle_timeout == 5.5


@pytest.mark.parametrize(("text", "message"), [
    ("[server]\nport = 'eighty'\n",
     "config: server.port: expected an integer 0-65535, got 'eighty'"),
    ("[server]\nport = 70000\n", "config: server.port: expected an integer 0-65535, got 70000"),
    ("[server]\nprot = 1\n", "config: server.prot: unknown key"),
    ("[nope]\nx = 1\n", "config: nope: unknown section"),
    ("[server]\nrole = 'proxy'\n",
     "config: server.role: expected one of origin, edge, got 'proxy'"),
    ("[edge]\ncache_memory_bytes = '12 parsecs'\n",
     "config: edge.cache_memory_bytes: expected a size in bytes such as 512MiB, got '12 parsecs'"),
    ("[edge]\nupstreams = ['ftp://x']\n",
     "config: edge.upstreams: expected an http:// or https:// URL, got 'ftp://x'"),
    ("[server]\ntrusted_proxies = ['10.0.0.300']\n",
     "config: server.trusted_proxies: expected an address or CIDR, got '10.0.0.300'"),
    ("[sessions]\nidle_timeout = -1\n",
     "config: sessions.idle_timeout: expected a number 0.05-86400, got -1"),
    ("[auth]\nrequired = 'maybe'\n", "config: auth.required: expected true or false, got 'maybe'"),
    ("[admin]\ntoken = 'x'\n", "config: admin.token: secrets come only from the environment"),
    ("[sessions]\ntime_scale = 0\n",
     "config: sessions.time_scale: expected a number 0.001-10000, got 0"),
    ("[edge]\nhealth_path = 'healthz'\n",
     "config: edge.health_path: expected a path starting with /, got 'healthz'"),
    ("[edge]\nhealth_statuses = [200, 'ok']\n",
     "config: edge.health_statuses: expected an integer 100-599, got 'ok'"),
    ("[edge]\nhealth_path = '/healthz'\nhealth_statuses = []\n",
     "config: edge.health_statuses: the probe needs at least one status"),
    ("[edge]\ndown_after = 0\n", "config: edge.down_after: expected an integer 1-1000, got 0"),
    ("[server\n", "not valid TOML"),
    ("server = 3\n", "config: server: expected a table"),
])
def test_bad_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(write(tmp_path, text), {})
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_environment_variable_is_refused() -> None:
    with pytest.raises(ConfigError, match="EDGE360_SERVER_PROT: unknown environment variable"):
        load(None, {"EDGE360_SERVER_PROT": "1"})


def test_environment_forms() -> None:
    c = load(None, {
        "EDGE360_EDGE_UPSTREAMS": "http://a:1, http://b:2/",
        "EDGE360_EDGE_CACHE_MEMORY_BYTES": "64MiB",
        "EDGE360_EDGE_CACHE_KEY_PARAMS": "*",
        "EDGE360_EDGE_PASS_METHODS": "post,delete",
        "EDGE360_SERVER_WORKERS": "auto",
        "EDGE360_AUTH_KEYS": "k1:secret",
        "EDGE360_ADMIN_TOKEN": "adm",
        "EDGE360_PEER_TOKEN": "peer",
        "EDGE360_AUTH_REQUIRED": "true",
        "EDGE360_EDGE_HEALTH_PATH": "/healthz",
        "EDGE360_EDGE_HEALTH_STATUSES": "200, 204",
        "EDGE360_SESSIONS_TIME_SCALE": "2.5",
    })
    assert c.edge.health_path == "/healthz" and c.edge.health_statuses == (200, 204)
    assert c.sessions.time_scale == 2.5
    assert c.edge.upstreams == ("http://a:1", "http://b:2")
    assert c.edge.cache_memory_bytes == 64 * 1024**2
    assert c.edge.cache_key_params == ("*",)
    assert c.edge.pass_methods == ("POST", "DELETE")
    assert c.server.workers >= 1
    assert c.auth.required and c.auth.keys == "k1:secret"
    text = render(c)
    assert "secret" not in text and "adm\"" not in text and "peer\"" not in text
    assert text.count('"***"') == 3


def test_missing_media_root_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"origin\.media: not a directory"):
        load(None, {}, {"origin.media": str(tmp_path / "nope")}, require_media=True)
    with pytest.raises(ConfigError, match=r"edge\.upstreams"):
        load(None, {}, {"server.role": "edge"}, require_media=True)


def test_config_is_frozen() -> None:
    c = load(None, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.server.port = 1  # type: ignore[misc]


@pytest.mark.parametrize("name", ["origin.toml", "edge.toml"])
def test_examples_name_every_key(name: str) -> None:
    path = REPO / "config" / name
    data = tomllib.loads(path.read_text())
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            if (section, f.name) in ENV_ONLY:
                continue
            assert f.name in data.get(section, {}), f"{name} lacks {section}.{f.name}"
    load(path, {})


@given(st.text(max_size=30))
def test_any_port_string_is_a_value_or_a_config_error(value: str) -> None:
    try:
        c = load(None, {"EDGE360_SERVER_PORT": value})
    except ConfigError as e:
        assert str(e).startswith("config: server.port:")
    else:
        assert 0 <= c.server.port <= 65535

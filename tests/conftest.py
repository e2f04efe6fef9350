"""The pytest fixtures tests share: a tiny real HLS title made by ffmpeg once per test run (and a
private copy of it per test), a long one for players, and a self-signed certificate. The modules
behind them are in tests/fixtures/."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.titles import encoded_title, long_title
from tests.fixtures.tools import require_tool


@pytest.fixture(scope="session")
def tiny_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A media root with one small real title `tiny`: 3 x 2 s TS segments, one BYTERANGE file."""
    root = tmp_path_factory.mktemp("media-master")
    encoded_title(root)
    return root


@pytest.fixture(scope="session")
def long_media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A media root with one real 120 s title `long` in 6 s TS segments, tiny pictures; shared:
    tests only read it."""
    root = tmp_path_factory.mktemp("media-long")
    long_title(root)
    return root


@pytest.fixture
def tiny_media(tiny_master: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny media root that a test may change."""
    root = tmp_path / "media"
    shutil.copytree(tiny_master, root)
    return root


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1, made at test time with openssl."""
    openssl = require_tool("openssl")
    crt, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(crt)],
                   check=True, capture_output=True, timeout=60)
    return crt, key

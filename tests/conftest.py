"""Shared fixtures: a tiny real HLS title made by ffmpeg once per test run."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.tools import require_tool

MASTER = """#EXTM3U
#EXT-X-VERSION:4
#EXT-X-STREAM-INF:BANDWIDTH=400000,AVERAGE-BANDWIDTH=300000,RESOLUTION=320x180,\
CODECS="avc1.64000d,mp4a.40.2"
v0/index.m3u8
"""


def _make_title(root: Path, name: str = "tiny") -> Path:
    ffmpeg = require_tool("ffmpeg")
    title = root / name
    (title / "v0").mkdir(parents=True)
    subprocess.run([
        ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=s=320x180:r=25:d=6",
        "-f", "lavfi", "-i", "sine=d=6", "-c:v", "libx264", "-preset", "superfast", "-g", "25",
        "-c:a", "aac", "-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod",
        "-hls_segment_filename", str(title / "v0" / "seg_%03d.ts"),
        str(title / "v0" / "index.m3u8"),
    ], check=True, timeout=120)
    (title / "master.m3u8").write_text(MASTER)
    # the same ladder as one file addressed with EXT-X-BYTERANGE (TS concatenates cleanly)
    segs = sorted((title / "v0").glob("seg_*.ts"))
    (title / "br").mkdir()
    lines = ["#EXTM3U", "#EXT-X-VERSION:4", "#EXT-X-TARGETDURATION:2", "#EXT-X-PLAYLIST-TYPE:VOD"]
    offset = 0
    with open(title / "br" / "all.ts", "wb") as out:
        for seg in segs:
            data = seg.read_bytes()
            out.write(data)
            lines += ["#EXTINF:2.0,", f"#EXT-X-BYTERANGE:{len(data)}@{offset}", "all.ts"]
            offset += len(data)
    lines.append("#EXT-X-ENDLIST")
    (title / "br" / "index.m3u8").write_text("\n".join(lines) + "\n")
    (title / "master_br.m3u8").write_text(MASTER.replace("v0/index.m3u8", "br/index.m3u8"))
    publish(title)
    return title


def publish(root: Path, age: float = 3600.0) -> None:
    """Date every file under `root` `age` seconds back: a title copied in long ago, which the
    origin serves at once (a file modified within origin.settle_seconds is still arriving)."""
    then = time.time() - age
    for path in [root, *root.rglob("*")]:
        os.utime(path, (then, then))


@pytest.fixture(scope="session")
def tiny_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A media root with one small real title `tiny`: 3 x 2 s TS segments, one BYTERANGE file."""
    root = tmp_path_factory.mktemp("media-master")
    _make_title(root)
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

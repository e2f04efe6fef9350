"""An interrupted packaging run continues where it stopped: finished chunks are kept and reused,
nothing is published until the title is complete, a changed command starts afresh, and Ctrl-C or
SIGTERM on the command line stops every ffmpeg it started."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge360.hls.package import package
from edge360.hls.titles import check_title
from tests.fixtures.titles import source_film
from tests.fixtures.tools import require_tool

OPTIONS: dict[str, object] = {"codecs": "h264,hevc", "ladder_spec": "240p:300k:64k,144p:150k:64k",
                              "segment_seconds": 1.0, "chunk_seconds": 1.0, "preset": "superfast"}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return source_film(tmp_path_factory.mktemp("src") / "source.mp4", 6)


def chunk_files(partial: Path) -> dict[Path, tuple[int, int]]:
    """Every finished chunk and audio file of a work folder, with its inode and mtime."""
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (partial / "work").rglob("*.mp4")
            if not p.name.startswith(".tmp-")}


def interrupted(source: Path, out: Path, at: float = 0.4) -> dict[Path, tuple[int, int]]:
    """Run until `at` of the work is done and a chunk has finished, then interrupt it as Ctrl-C
    would (progress counts work under way too, so a fraction alone may come before any chunk
    is whole on a busy machine)."""
    partial = out.parent / f".{out.name}.partial"

    def stop(fraction: float, _eta: float | None) -> None:
        if fraction >= at and chunk_files(partial):
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        package(source, out, progress=stop, **OPTIONS)  # type: ignore[arg-type]
    assert not out.exists()  # nothing published
    assert (partial / "state.json").is_file()
    assert not list(partial.rglob(".tmp-*"))  # no half-written file is kept
    kept = chunk_files(partial)
    assert kept, "some chunks finished before the interruption"
    return kept


def test_a_run_continues_with_the_chunks_it_finished(source: Path, tmp_path: Path) -> None:
    require_tool("ffprobe")
    out = tmp_path / "title"
    kept = interrupted(source, out)
    first: list[float] = []
    notes: list[str] = []

    def watch(fraction: float, _eta: float | None) -> None:
        if not first:
            first.append(fraction)
            assert chunk_files(out.parent / f".{out.name}.partial").items() >= kept.items()
    package(source, out, progress=watch, note=notes.append, **OPTIONS)  # type: ignore[arg-type]
    assert any(n.startswith("continuing the interrupted run") for n in notes), notes
    assert first[0] > 0.2  # the kept work counts as done
    assert [p.name for p in tmp_path.iterdir()] == ["title"]
    info = check_title(out)
    assert {r.path.split("/")[0] for r in info.renditions} == {
        "hevc_240p", "hevc_144p", "h264_240p", "h264_144p"}
    frames = subprocess.run(
        [require_tool("ffprobe"), "-v", "error", "-count_frames", "-select_streams", "v:0",
         "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0",
         str(out / "hevc_240p" / "single.mp4")], capture_output=True, text=True, check=True,
        timeout=60).stdout
    assert int(frames.split()[0]) == 6 * 25


def test_a_changed_command_starts_afresh(source: Path, tmp_path: Path) -> None:
    require_tool("ffprobe")
    out = tmp_path / "title"
    kept = interrupted(source, out, at=0.2)
    notes: list[str] = []
    seen: list[set[Path]] = []

    def watch(_fraction: float, _eta: float | None) -> None:
        if not seen:
            seen.append(set(chunk_files(out.parent / f".{out.name}.partial")))
    changed = {**OPTIONS, "ladder_spec": "180p:200k:64k", "codecs": "h264"}
    package(source, out, progress=watch, note=notes.append, **changed)  # type: ignore[arg-type]
    assert not any(n.startswith("continuing") for n in notes), notes
    assert not seen[0] & set(kept)  # the old work was dropped, not mixed in
    assert sorted(p.name for p in out.iterdir()) == ["h264_180p", "master.m3u8", "master_br.m3u8"]


def _ffmpeg_children_of(marker: str) -> list[int]:
    """PIDs of running processes whose command line names `marker` (our temporary folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode("utf-8", "replace")
        except OSError:
            continue
        if "ffmpeg" in cmdline and marker in cmdline:
            found.append(int(entry.name))
    return found


def test_sigterm_on_the_command_line_keeps_the_work_and_stops_ffmpeg(source: Path,
                                                                     tmp_path: Path) -> None:
    require_tool("ffprobe")
    out = tmp_path / "title"
    cmd = [sys.executable, "-m", "edge360", "package", str(source), "--out", str(out),
           "--codecs", "h264", "--ladder", str(OPTIONS["ladder_spec"]), "--segment", "1",
           "--chunk", "1", "--preset", "superfast"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    try:
        deadline = time.monotonic() + 120
        seen = ""
        while time.monotonic() < deadline:  # bounded: the run reports every tenth
            ready, _, _ = select.select([proc.stderr], [], [], 1.0)
            if not ready:
                continue
            line = proc.stderr.readline()
            seen += line
            m = re.match(r"package +(\d+)%", line)
            if (m and 20 <= int(m.group(1)) < 100) or not line:
                break
        assert re.search(r"package +[2-9]\d%", seen), seen
        os.kill(proc.pid, signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == 130, seen + rest
    assert rest.endswith("package: interrupted; run the same command again to continue\n")
    assert not out.exists() and (tmp_path / ".title.partial" / "state.json").is_file()
    assert _ffmpeg_children_of(str(tmp_path)) == []
    again = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "continuing the interrupted run" in again.stderr
    check_title(out)
    assert [p.name for p in tmp_path.iterdir()] == ["title"]

"""The disk tier: round trip, restart, corruption, a real SIGKILL mid-write, budget, two workers."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from edge360.cache.disk import TOUCH_NS, DiskCache
from edge360.cache.diskformat import ENTRY_EXT, HEADER_SIZE, TEMP_EXT, EntryGone


def files(root: Path, ext: str) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.name.endswith(ext))


def cost(key: str, meta: bytes, body: bytes) -> int:
    return HEADER_SIZE + len(key.encode()) + len(meta) + len(body)


def test_round_trip(tmp_path: Path) -> None:
    c = DiskCache(tmp_path, 1 << 20)
    body = bytes(range(256)) * 40
    assert c.put("/demo/a.ts", b'{"s":200}', body) == []
    e = c.get("/demo/a.ts")
    assert e is not None and e.meta == b'{"s":200}' and e.key == "/demo/a.ts"
    assert e.read_body() == body
    assert e.read_range(10, 300) == body[10:300]
    assert e.read_range(0, 0) == b""
    with pytest.raises(ValueError):
        e.read_range(5, len(body) + 1)
    with e.open_file() as f:  # what sendfile would use
        f.seek(e.body_offset)
        assert f.read(e.body_length) == body
    assert Path(e.path).stat().st_size == cost("/demo/a.ts", b'{"s":200}', body)
    assert c.size_bytes == cost("/demo/a.ts", b'{"s":200}', body) and len(c) == 1
    assert c.get("/demo/missing.ts") is None
    s = c.stats
    assert (s.hits, s.misses, s.entries) == (1, 1, 1)


def test_unicode_and_piece_keys(tmp_path: Path) -> None:
    c = DiskCache(tmp_path, 1 << 20)
    keys = ["/é/ü.ts", "/big.mp4#p0", "/big.mp4#p1", "/q?b=1&a=2"]
    for i, k in enumerate(keys):
        c.put(k, b"", bytes([i]) * 10)
    for i, k in enumerate(keys):
        e = c.get(k)
        assert e is not None and e.read_body() == bytes([i]) * 10


def test_streaming_writer_commit_final_meta_and_abort(tmp_path: Path) -> None:
    c = DiskCache(tmp_path, 1 << 20)
    w = c.open_writer("/s.ts", b"provisional")
    for i in range(10):
        w.write(bytes([i]) * 1000)
        assert c.get("/s.ts") is None  # never visible before commit
    assert files(tmp_path, TEMP_EXT)
    assert w.commit(final_meta=b"final, longer than before") == []
    assert files(tmp_path, TEMP_EXT) == []
    e = c.get("/s.ts")
    assert e is not None and e.meta == b"final, longer than before"
    assert e.read_body() == b"".join(bytes([i]) * 1000 for i in range(10))
    with c.open_writer("/t.ts", b"") as w2:
        w2.write(b"partial")
        w2.abort()
    with pytest.raises(RuntimeError), c.open_writer("/u.ts", b"") as w3:
        w3.write(b"partial")
        raise RuntimeError("upstream broke off")
    assert c.get("/t.ts") is None and c.get("/u.ts") is None
    assert files(tmp_path, TEMP_EXT) == []


def test_replacement_invalidates_old_entry(tmp_path: Path) -> None:
    c = DiskCache(tmp_path, 1 << 20)
    c.put("/k", b"v1", b"old body")
    old = c.get("/k")
    assert old is not None
    c.put("/k", b"v2", b"a new body of another length")
    with pytest.raises(EntryGone):
        old.read_range(0, 3)  # its offsets would be wrong for the new file
    new = c.get("/k")
    assert new is not None and new.read_body() == b"a new body of another length"
    assert len(c) == 1 and c.size_bytes == cost("/k", b"v2", b"a new body of another length")


def test_restart_rebuilds_index(tmp_path: Path) -> None:
    c = DiskCache(tmp_path, 1 << 20)
    for i in range(20):
        c.put(f"/t/{i}.ts", f"m{i}".encode(), bytes([i]) * (100 + i))
    size = c.size_bytes
    c2 = DiskCache(tmp_path, 1 << 20)
    assert len(c2) == 20 and c2.size_bytes == size
    assert sorted(c2) == sorted(f"/t/{i}.ts" for i in range(20))
    for i in range(20):
        e = c2.get(f"/t/{i}.ts")
        assert e is not None and e.meta == f"m{i}".encode()
        assert e.read_body() == bytes([i]) * (100 + i)


def test_restart_keeps_recency_order(tmp_path: Path) -> None:
    c = DiskCache(tmp_path, 1 << 20)
    for i in range(5):
        c.put(f"/k{i}", b"", b"x" * 100)
    for i in (3, 0):  # touch order is the LRU order
        os.utime(c.path_for(f"/k{i}"), ns=(10**18 + i, 10**18 + i))
    for i in (1, 2, 4):
        os.utime(c.path_for(f"/k{i}"), ns=(10**17 * (i + 1), 10**17 * (i + 1)))
    per = cost("/k0", b"", b"x" * 100)
    c2 = DiskCache(tmp_path, per * 3)  # a smaller budget evicts the coldest at start
    assert sorted(c2) == ["/k0", "/k3", "/k4"]


def _corrupt_cases() -> list[tuple[str, int, int]]:
    # (name, offset, bytes to invert there; 0 = truncate the file at offset)
    return [
        ("truncated body", HEADER_SIZE + 10, 0),
        ("truncated header", 7, 0),
        ("bad magic", 0, 4),
        ("bad version", 4, 1),
        ("bad meta length", 12, 1),
        ("bad body length", 16, 1),
        ("flipped key byte", HEADER_SIZE + 1, 1),
        ("flipped header crc", HEADER_SIZE - 1, 1),
        ("flipped meta byte", HEADER_SIZE + len("/bad.ts") + 1000 + 1, 1),
    ]


@pytest.mark.parametrize(("case", "offset", "flip"), _corrupt_cases())
def test_corrupt_file_deleted_at_start(tmp_path: Path, case: str, offset: int,
                                       flip: int) -> None:
    c = DiskCache(tmp_path, 1 << 20)
    c.put("/bad.ts", b"meta", b"b" * 1000)
    c.put("/good.ts", b"meta", b"g" * 1000)
    path = Path(c.path_for("/bad.ts"))
    with open(path, "r+b") as f:
        if flip == 0:
            f.truncate(offset)
        else:
            f.seek(offset)
            old = f.read(flip)
            f.seek(offset)
            f.write(bytes(x ^ 0xFF for x in old))
    c2 = DiskCache(tmp_path, 1 << 20)
    assert "/bad.ts" not in c2 and c2.get("/bad.ts") is None
    assert not path.exists()
    assert c2.stats.corrupt_removed == 1
    good = c2.get("/good.ts")
    assert good is not None and good.read_body() == b"g" * 1000


def test_corrupt_file_found_at_read_is_deleted(tmp_path: Path) -> None:
    c = DiskCache(tmp_path, 1 << 20)
    c.put("/a.ts", b"m", b"a" * 500)
    path = Path(c.path_for("/a.ts"))
    with open(path, "r+b") as f:  # a flipped body byte: only the body crc catches it
        f.seek(HEADER_SIZE + len("/a.ts") + 100)
        f.write(b"Z")
    e = c.get("/a.ts")
    assert e is not None
    with pytest.raises(EntryGone):
        e.read_body()
    assert not path.exists() and c.get("/a.ts") is None and len(c) == 0
    # a header corrupted while running is caught by get itself
    c.put("/b.ts", b"m", b"b" * 500)
    with open(c.path_for("/b.ts"), "r+b") as f:
        f.truncate(HEADER_SIZE + 3)
    assert c.get("/b.ts") is None and not Path(c.path_for("/b.ts")).exists()


def test_renamed_file_with_wrong_key_is_deleted(tmp_path: Path) -> None:
    c = DiskCache(tmp_path, 1 << 20)
    c.put("/a", b"", b"aaa")
    c.put("/b", b"", b"bbb")
    # a file whose name is not the hash of its key (what a collision would look like)
    shutil.copy(c.path_for("/a"), c.path_for("/b"))
    assert c.get("/b") is None  # get checks the key inside the file
    c2 = DiskCache(tmp_path, 1 << 20)
    assert sorted(c2) == ["/a"] and not Path(c.path_for("/b")).exists()


CHILD = r"""
import sys
from edge360.cache.disk import TOUCH_NS, DiskCache
c = DiskCache(sys.argv[1], 1 << 30)
w = c.open_writer("/killed.ts", b"meta")
w.write(b"k" * 100_000)
print("ready", flush=True)
sys.stdin.read()  # blocks until killed
"""


def test_sigkill_mid_write_leaves_no_entry(tmp_path: Path) -> None:
    DiskCache(tmp_path, 1 << 30).put("/other.ts", b"", b"o" * 10)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n"
        temps = files(tmp_path, TEMP_EXT)
        assert len(temps) == 1 and f".{child.pid}." in temps[0].name
        # while the writer lives, a starting worker neither serves nor reaps its file
        live = DiskCache(tmp_path, 1 << 30)
        assert live.get("/killed.ts") is None and files(tmp_path, TEMP_EXT) == temps
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()
    c = DiskCache(tmp_path, 1 << 30)
    assert c.get("/killed.ts") is None
    assert files(tmp_path, TEMP_EXT) == []
    assert c.stats.temps_removed == 1
    assert sorted(c) == ["/other.ts"]


def test_budget_eviction_is_lru(tmp_path: Path) -> None:
    per = cost("/k0", b"", b"x" * 1000)
    c = DiskCache(tmp_path, per * 3)
    for i in range(3):
        assert c.put(f"/k{i}", b"", b"x" * 1000) == []
    assert c.get("/k0") is not None  # k1 is now the coldest
    assert c.put("/k3", b"", b"x" * 1000) == ["/k1"]
    assert not Path(c.path_for("/k1")).exists()
    assert sorted(c) == ["/k0", "/k2", "/k3"] and c.size_bytes == per * 3
    assert len(files(tmp_path, ENTRY_EXT)) == 3 and c.stats.evictions == 1
    # too big for the whole budget: refused, nothing evicted, no file left behind
    assert not c.fits(per * 3)
    assert c.put("/huge", b"", b"x" * (per * 3)) == []
    assert "/huge" not in c and len(c) == 3 and files(tmp_path, TEMP_EXT) == []
    w = c.open_writer("/huge2", b"")
    for _ in range(10):
        w.write(b"y" * per)
    assert w.discarded and files(tmp_path, TEMP_EXT) == []
    assert w.commit() == [] and "/huge2" not in c


def test_two_workers_share_one_directory(tmp_path: Path) -> None:
    per = cost("/k0", b"", b"x" * 1000)
    a = DiskCache(tmp_path, per * 3)
    for i in range(3):
        a.put(f"/k{i}", b"", b"x" * 1000)
    b = DiskCache(tmp_path, per * 10)
    assert sorted(b) == ["/k0", "/k1", "/k2"]
    held = b.get("/k0")
    assert held is not None
    assert a.put("/k3", b"", b"x" * 1000) == ["/k0"]  # a evicts a file b indexed
    with pytest.raises(EntryGone):
        held.read_body()
    assert b.get("/k0") is None and "/k0" not in b and len(b) == 2
    # what one worker stores, the other finds (and adopts into its index)
    b.put("/from-b", b"mb", b"bbb")
    e = a.get("/from-b")
    assert e is not None and e.meta == b"mb" and e.read_body() == b"bbb"
    assert a.size_bytes <= a.budget_bytes or len(a) == 4
    a.rescan()  # converges to the directory and the budget
    assert a.size_bytes <= a.budget_bytes
    # a purge on one worker removes what the other wrote
    b.put("/demo/x.ts", b"", b"1")
    a.put("/demo/y.ts", b"", b"2")
    assert a.pop_prefix("/demo/") == ["/demo/x.ts", "/demo/y.ts"]
    assert b.get("/demo/x.ts") is None and a.get("/demo/y.ts") is None
    assert b.pop("/from-b") is True and a.get("/from-b") is None
    assert b.pop("/from-b") is False


def test_threads_share_one_instance(tmp_path: Path) -> None:
    c = DiskCache(tmp_path, cost("/t0-00", b"", b"x" * 500) * 20)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(200):
                key = f"/t{t}-{i % 25:02d}"
                c.put(key, b"", bytes([t]) * 500)
                e = c.get(f"/t{(t + 1) % 4}-{i % 25:02d}")
                if e is not None:
                    try:
                        assert e.read_body() == bytes([(t + 1) % 4]) * 500
                    except EntryGone:
                        pass  # evicted or replaced by another thread meanwhile
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert errors == []
    assert c.size_bytes <= c.budget_bytes and len(c) == len(files(tmp_path, ENTRY_EXT))
    assert c.size_bytes == sum(p.stat().st_size for p in files(tmp_path, ENTRY_EXT))


class DiskModel(RuleBasedStateMachine):
    """A model of which keys are present: put's evicted list is the only way one is lost."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(os.environ.get("TMPDIR", "/tmp")) / f"e360-disk-{os.getpid()}-{id(self)}"
        self.cache = DiskCache(self.root, 3000)
        self.model: dict[str, tuple[bytes, bytes]] = {}

    keys = st.sampled_from([f"/k{i}" for i in range(8)])

    @rule(key=keys, meta=st.binary(max_size=30), size=st.integers(0, 3100))
    def put(self, key: str, meta: bytes, size: int) -> None:
        b = bytes([size % 251]) * size
        evicted = self.cache.put(key, meta, b)
        for k in evicted:
            del self.model[k]
        self.model.pop(key, None)
        if self.cache.fits(len(key) + len(meta) + size):
            self.model[key] = (meta, b)

    @rule(key=keys)
    def get(self, key: str) -> None:
        e = self.cache.get(key)
        assert (e is None) == (key not in self.model)
        if e is not None:
            assert (e.meta, e.read_body()) == self.model[key]

    @rule(key=keys)
    def pop(self, key: str) -> None:
        assert self.cache.pop(key) == (key in self.model)
        self.model.pop(key, None)

    @rule()
    def restart(self) -> None:
        self.cache = DiskCache(self.root, 3000)

    @invariant()
    def consistent(self) -> None:
        assert sorted(self.cache) == sorted(self.model)
        assert self.cache.size_bytes <= 3000
        assert len(files(self.root, ENTRY_EXT)) == len(self.model)
        assert files(self.root, TEMP_EXT) == []

    def teardown(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


TestDiskModel = DiskModel.TestCase
TestDiskModel.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)


def test_a_hit_moves_the_files_mtime_at_most_once_a_minute(tmp_path: Path) -> None:
    """The mtime is the recency a restart rebuilds: a hit on a file touched more than TOUCH_NS
    ago (or stamped in the future) moves it to now; one touched lately is left alone (a hit
    would otherwise be a metadata write)."""
    c = DiskCache(tmp_path, 1 << 20)
    c.put("/k", b"", b"x" * 100)
    path = c.path_for("/k")
    now = time.time_ns()
    for stamp in (now - 2 * TOUCH_NS, now + 2 * TOUCH_NS):
        os.utime(path, ns=(stamp, stamp))
        assert c.get("/k") is not None
        assert abs(os.stat(path).st_mtime_ns - time.time_ns()) < TOUCH_NS // 2
    recent = now - TOUCH_NS // 2
    os.utime(path, ns=(recent, recent))
    assert c.get("/k") is not None and os.stat(path).st_mtime_ns == recent

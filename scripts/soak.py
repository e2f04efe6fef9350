"""The integrity soak: an origin and an edge (2 workers, a disk tier on a small tmpfs that fills)
served for a while as the media changes under them, with every byte checked.

Every few seconds one fault: a segment replaced by a new version (an atomic rename), a segment
rewritten in place (truncated, then written), a whole title copied in while the origin scans, an
edge worker killed (SIGKILL; the supervisor starts another). Meanwhile clients fetch whole
segments and ranges of them, through the edge and from the origin directly. Each answer whose
body arrived complete is compared by sha256 with every version its file ever had (a range with
the same bytes of a version); an answer cut short is counted apart (that is how a server says
"this body broke off"). The origin's ETags are checked too: one ETag, one version.

    .venv/bin/python scripts/soak.py --minutes 20 [--out benchmarks/proofs/soak.json]

Exit status 1 when any body was wrong or disagreed with its headers. Linux; as root (or with
user namespaces) for the tmpfs mount.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.fixtures.procs import workers_of  # noqa: E402
from tests.fixtures.servers import ServerProcess, start_process  # noqa: E402
from tests.fixtures.titles import make_title, publish  # noqa: E402
from tests.test_disk_faults import edge_on_small_disk  # noqa: E402

MiB = 1024 * 1024


class Versions:
    """Every version each file ever had, kept on disk by digest."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.of: dict[str, set[str]] = {}

    def add(self, path: str, data: bytes) -> None:
        digest = hashlib.sha256(data).hexdigest()
        copy = self.store / digest
        if not copy.exists():
            copy.write_bytes(data)
        self.of.setdefault(path, set()).add(digest)

    def whole(self, path: str, body: bytes) -> bool:
        return hashlib.sha256(body).hexdigest() in self.of.get(path, set())

    def slice(self, path: str, start: int, body: bytes) -> bool:
        for digest in self.of.get(path, set()):
            with open(self.store / digest, "rb") as fh:
                fh.seek(start)
                if fh.read(len(body)) == body:
                    return True
        return False


class Soak:
    def __init__(self, media: Path, versions: Versions) -> None:
        self.media = media
        self.versions = versions
        self.results: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.wrong: list[str] = []
        self.etags: dict[str, str] = {}
        self.paths: list[str] = []
        self.bytes = 0

    # -- media

    def seed(self) -> None:
        make_title(self.media, "soak")
        for i in range(12):
            self.write(f"/soak/v1/big_{i:02d}.ts", os.urandom(random.randint(MiB, 5 * MiB)))
        for f in (self.media / "soak").rglob("*.ts"):
            self.register("/" + f.relative_to(self.media).as_posix())
        publish(self.media)

    def register(self, path: str) -> None:
        self.versions.add(path, (self.media / path.lstrip("/")).read_bytes())
        if path not in self.paths:
            self.paths.append(path)

    def write(self, path: str, data: bytes, *, in_place: bool = False) -> None:
        self.versions.add(path, data)  # known before a client can see it
        target = self.media / path.lstrip("/")
        if in_place and target.exists():
            with open(target, "r+b") as fh:
                fh.truncate(0)
                fh.write(data)
        else:
            tmp = target.with_name("." + target.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        if path not in self.paths:
            self.paths.append(path)

    # -- faults

    async def faults_loop(self, edge: ServerProcess, until: float, every: float) -> None:
        copies = 0
        while time.monotonic() < until:
            await asyncio.sleep(every)
            kind = random.choice(["replace", "in_place", "copy_title", "kill_worker"])
            self.faults[kind] += 1
            if kind == "replace":
                path = random.choice([p for p in self.paths if "/big_" in p])
                self.write(path, os.urandom(random.randint(MiB, 5 * MiB)))
            elif kind == "in_place":
                path = random.choice([p for p in self.paths if "/big_" in p])
                await asyncio.to_thread(self.write, path,
                                        os.urandom(random.randint(MiB, 5 * MiB)), in_place=True)
            elif kind == "copy_title" and copies < 20:
                copies += 1
                name = f"copy{copies}"
                await asyncio.to_thread(shutil.copytree, self.media / "soak",
                                        self.media / name, copy_function=shutil.copyfile)
                for f in (self.media / name).rglob("*.ts"):
                    self.register("/" + f.relative_to(self.media).as_posix())
            elif kind == "kill_worker":
                workers = sorted(workers_of(edge.proc.pid))
                if workers:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(random.choice(workers), signal.SIGKILL)

    # -- clients

    async def client_loop(self, bases: dict[str, str], until: float) -> None:
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as s:
            while time.monotonic() < until:
                where = random.choice(list(bases))
                path = random.choice(self.paths)
                ranged = random.random() < 0.4
                headers = {}
                start = 0
                if ranged:
                    start = random.randint(0, MiB)
                    headers["Range"] = f"bytes={start}-{start + random.randint(0, 300_000)}"
                await self.one(s, where, bases[where] + path, path, headers, start)

    async def one(self, s: aiohttp.ClientSession, where: str, url: str, path: str,
                  headers: dict[str, str], start: int) -> None:
        try:
            async with s.get(url, headers=headers) as r:
                body = await r.read()
                status, etag = r.status, r.headers.get("ETag")
                content_range = r.headers.get("Content-Range", "")
        except aiohttp.ClientPayloadError:
            self.results[f"{where}:cut"] += 1
            return
        except (aiohttp.ClientError, TimeoutError) as e:
            self.results[f"{where}:{type(e).__name__}"] += 1
            return
        self.results[f"{where}:{status}"] += 1
        self.bytes += len(body)
        if status == 200:
            ok = self.versions.whole(path, body)
        elif status == 206:
            first = int(content_range.split()[1].split("-")[0]) if content_range else -1
            ok = first == start and self.versions.slice(path, first, body)
        else:
            return  # 503 (still arriving), 502/504 (a worker killed mid-fetch): no body
        if not ok:
            self.wrong.append(f"{where} {path} {status} {len(body)} {headers}")
        if where == "origin" and status == 200 and etag is not None:
            digest = hashlib.sha256(body).hexdigest()
            if self.etags.setdefault(etag, digest) != digest:
                self.wrong.append(f"origin {path}: ETag {etag} names two versions")


async def run(minutes: float, every: float, clients: int, work: Path) -> dict[str, object]:
    media, versions = work / "media", Versions(work / "versions")
    versions.store.mkdir(parents=True)
    soak = Soak(media, versions)
    soak.seed()
    origin = start_process(["serve", "--port", "0", "--media", str(media)],
                           {"EDGE360_ORIGIN_RESCAN_INTERVAL": "1"})
    try:
        with edge_on_small_disk(origin.base, work / "cache", work / "edge.log",
                                workers=2) as edge:
            until = time.monotonic() + minutes * 60
            bases = {"edge": edge.base, "origin": origin.base}
            await asyncio.gather(soak.faults_loop(edge, until, every),
                                 *(soak.client_loop(bases, until) for _ in range(clients)))
    finally:
        origin.stop()
    log = (work / "edge.log").read_text(errors="replace")
    return {"minutes": minutes, "fault_every_s": every, "clients": clients,
            "answers": dict(sorted(soak.results.items())), "faults": dict(soak.faults),
            "bytes_checked": soak.bytes, "wrong": len(soak.wrong), "wrong_examples":
            soak.wrong[:20], "edge_tracebacks": log.count("Traceback"),
            "origin_tracebacks": origin.stderr.count("Traceback")}


def main() -> int:
    p = argparse.ArgumentParser(prog="scripts/soak.py")
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--every", type=float, default=3.0, help="seconds between two faults")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--out", type=Path)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    random.seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="edge360-soak-") as tmp:
        result = asyncio.run(run(args.minutes, args.every, args.clients, Path(tmp)))
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    bad = result["wrong"] or result["edge_tracebacks"] or result["origin_tracebacks"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

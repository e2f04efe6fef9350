"""The benchmark's media: one generated HLS title, written into a temporary directory (never into
media/) and read once, so both servers start from the page cache."""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness import BenchError

#: the title folder the benchmark media lives in; URLs are /bench/...
TITLE = "bench"
#: a master playlist is padded to this size: the ~218-byte master the issue measures
MASTER_SIZE = 218


@dataclass(frozen=True)
class Media:
    """The generated media root and the URL paths of its objects (all under /bench/)."""

    root: Path
    master: str
    small: str
    segment: str
    segment_size: int
    big: str
    big_size: int
    herd: tuple[str, ...]
    herd_size: int
    #: a live media playlist (no EXT-X-ENDLIST, target duration 4 s): 2 s lifetime at either origin
    live: str = ""
    live_size: int = 0
    #: a mid-sized .ts, under one edge360 piece (stored whole): a low rung's 6 s segment
    mid: str = ""
    mid_size: int = 0


#: the live playlist's sliding window: this many 4-second segments from this media sequence
LIVE_SEGMENTS = 6
LIVE_SEQUENCE = 1200


def make_media(root: Path, *, segment_size: int, big_size: int, herd_count: int,
               herd_size: int, seed: int, mid_size: int = 0) -> Media:
    """Write a self-contained HLS title into `root/bench`: a 218-byte master, one media playlist,
    a 218-byte .ts (the small segment-like object), an 8 MiB and a 64 MiB .ts, a mid-sized .ts
    (`mid_size`, when not 0), one fresh object
    per herd (each herd must miss a cold cache) and a live media playlist of small segments.
    Bytes are seeded pseudo-random: content does not matter to either server, and the same seed
    gives the same files."""
    rng = random.Random(seed)
    title = root / TITLE
    (title / "v").mkdir(parents=True, exist_ok=True)
    herd = tuple(f"v/herd_{i:03d}.ts" for i in range(herd_count))
    files = {"v/small.ts": MASTER_SIZE, "v/seg8m.ts": segment_size, "v/big64m.ts": big_size}
    files.update({name: herd_size for name in herd})
    if mid_size:
        files["v/mid.ts"] = mid_size
    live_names = [f"live_{LIVE_SEQUENCE + i}.ts" for i in range(LIVE_SEGMENTS)]
    files.update({f"v/{name}": MASTER_SIZE for name in live_names})
    for name, size in files.items():
        (title / name).write_bytes(rng.randbytes(size))
    media_lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:10",
                   "#EXT-X-PLAYLIST-TYPE:VOD"]
    for name in ("seg8m.ts", "big64m.ts", "small.ts"):
        media_lines += ["#EXTINF:10.0,", name]
    media_lines.append("#EXT-X-ENDLIST")
    (title / "v" / "index.m3u8").write_text("\n".join(media_lines) + "\n")
    # a live window (RFC 8216 §6.2.2: no EXT-X-ENDLIST, the client reloads it): the edge360
    # origin gives a live playlist half its target duration as lifetime, max-age=2, and the
    # nginx origin is configured to send the same; no master names it, so the title stays VOD
    live_lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:4",
                  f"#EXT-X-MEDIA-SEQUENCE:{LIVE_SEQUENCE}"]
    for name in live_names:
        live_lines += ["#EXTINF:4.000,", name]
    live_text = "\n".join(live_lines) + "\n"
    (title / "v" / "live.m3u8").write_text(live_text)
    head = ("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n"
            '#EXT-X-STREAM-INF:BANDWIDTH=5000000,AVERAGE-BANDWIDTH=4500000,'
            'RESOLUTION=1920x1080,CODECS="avc1.640028,mp4a.40.2"\nv/index.m3u8\n')
    # a comment line (RFC 8216 §4.1: lines starting "#" but not "#EXT" are comments) pads the
    # master to exactly MASTER_SIZE bytes so both servers send the same body length
    pad = MASTER_SIZE - len(head) - len("#\n")
    if pad < 0:
        raise BenchError("master playlist head is longer than MASTER_SIZE")
    (title / "master.m3u8").write_text(head + "#" + "p" * pad + "\n")
    # read every file once so the first measured server does not pay the disk for the second
    for path in title.rglob("*"):
        if path.is_file():
            path.read_bytes()
    published(title)
    return Media(root=root, master=f"/{TITLE}/master.m3u8", small=f"/{TITLE}/v/small.ts",
                 segment=f"/{TITLE}/v/seg8m.ts", segment_size=segment_size,
                 big=f"/{TITLE}/v/big64m.ts", big_size=big_size,
                 herd=tuple(f"/{TITLE}/{h}" for h in herd), herd_size=herd_size,
                 live=f"/{TITLE}/v/live.m3u8", live_size=len(live_text.encode()),
                 mid=f"/{TITLE}/v/mid.ts" if mid_size else "", mid_size=mid_size)


def published(root: Path) -> None:
    """Date every file under `root` an hour back, as a title published long ago: edge360's
    origin holds back a file written within origin.settle_seconds as still arriving."""
    then = time.time() - 3600
    for path in [root, *root.rglob("*")]:
        os.utime(path, (then, then))

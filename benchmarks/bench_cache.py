"""Operations per second of the cache tiers: memory get/put (always), disk get/put (--disk DIR).

Run: .venv/bin/python benchmarks/bench_cache.py [--ops N] [--entries N] [--body B] [--json OUT]
Keys look like the edge's ("/<title>/<rendition>/seg_<n>.ts", pieces "#p<i>"); bodies are
one shared bytes object so the figures are the policy and bookkeeping cost, not memcpy.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from edge360.cache.disk import DiskCache
from edge360.cache.memory import MemoryCache, entry_size


def rate(ops: int, fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return ops / (time.perf_counter() - start)


def bench_memory(ops: int, entries: int, body_size: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    keys = [f"/demo/{i % 7}/seg_{i:07d}.ts" for i in range(entries * 4)]
    body = b"\x47" * body_size
    meta = orjson.dumps({"status": 200, "stored": 1.0, "etag": '"abc"', "type": "video/mp2t"})
    budget = entry_size(keys[0], len(meta), body_size) * entries
    cache = MemoryCache(budget, entries * 2)
    # a skewed workload: 80% of requests on 20% of the keys, the rest a long tail
    hot = keys[: entries // 5]
    mixed = [rng.choice(hot) if rng.random() < 0.8 else rng.choice(keys) for _ in range(ops)]
    resident = keys[:entries]
    hits = [rng.choice(resident) for _ in range(ops)]
    fresh = [f"/scan/{i:08d}.ts" for i in range(ops)]

    def put_fresh() -> None:  # every put evicts once the cache is full
        for k in fresh:
            cache.put(k, meta, body)

    def fill() -> None:
        cache.clear()
        for k in resident:
            cache.put(k, meta, body)

    def get_hits() -> None:
        for k in hits:
            cache.get(k)

    def get_or_put() -> None:  # what the edge does: look up, store on a miss
        for k in mixed:
            if cache.get(k) is None:
                cache.put(k, meta, body)

    out = {"put_evicting_ops_s": rate(ops, put_fresh)}
    fill()
    out["get_hit_ops_s"] = rate(ops, get_hits)
    fill()
    before = cache.stats
    out["get_or_put_ops_s"] = rate(ops, get_or_put)
    after = cache.stats
    out["get_or_put_hit_ratio"] = (after.hits - before.hits) / ops
    out["peek_ops_s"] = rate(ops, lambda: [cache.peek(k) for k in hits])
    return out


def bench_disk(directory: Path, ops: int, body_size: int) -> dict[str, float]:
    cache = DiskCache(directory, body_size * ops * 2)
    body = b"\x47" * body_size
    keys = [f"/demo/seg_{i:06d}.ts" for i in range(ops)]

    def puts() -> None:
        for k in keys:
            cache.put(k, b"{}", body)

    def gets() -> None:
        for k in keys:
            e = cache.get(k)
            assert e is not None
            e.read_body()

    return {"disk_put_ops_s": rate(ops, puts), "disk_get_read_ops_s": rate(ops, gets),
            "disk_restart_scan_s": 1 / rate(1, lambda: DiskCache(directory, 1 << 40))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ops", type=int, default=200_000)
    p.add_argument("--entries", type=int, default=20_000, help="entries the memory budget holds")
    p.add_argument("--body", type=int, default=4096, help="body bytes per entry")
    p.add_argument("--disk", action="store_true", help="also measure the disk tier (temp dir)")
    p.add_argument("--disk-ops", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT")
    a = p.parse_args()
    result: dict[str, object] = {"ops": a.ops, "entries": a.entries, "body": a.body}
    result.update(bench_memory(a.ops, a.entries, a.body, a.seed))
    if a.disk:
        with tempfile.TemporaryDirectory() as d:
            result["disk_ops"] = a.disk_ops
            result.update(bench_disk(Path(d), a.disk_ops, a.body))
    for k, v in result.items():
        print(f"{k:24} {v:,.3f}" if isinstance(v, float) else f"{k:24} {v}")
    if a.json:
        Path(a.json).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Tests of edge360.hashing: even spread, minimal movement, health fallback, stability."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge360.core.hashing import choose, rank, weight

PARENTS = ["http://p1:8080", "http://p2:8080", "http://p3:8080"]
KEYS = [f"/demo/1080p/seg_{i:05d}.ts" for i in range(30_000)]


def owners(parents: list[str]) -> dict[str, str]:
    return {k: rank(k, parents)[0] for k in KEYS}


def test_distribution_is_roughly_even() -> None:
    share = Counter(owners(PARENTS).values())
    assert set(share) == set(PARENTS)
    for p in PARENTS:
        assert 0.25 <= share[p] / len(KEYS) <= 0.42, share


def test_removing_a_parent_moves_only_its_keys_and_adding_it_back_restores() -> None:
    before = owners(PARENTS)
    after = owners([p for p in PARENTS if p != "http://p2:8080"])
    moved = {k for k in KEYS if before[k] != after[k]}
    assert moved == {k for k in KEYS if before[k] == "http://p2:8080"}
    # each moved key goes to its own runner-up, so p2's load spreads over both survivors
    assert set(after[k] for k in moved) == {"http://p1:8080", "http://p3:8080"}
    assert owners(PARENTS) == before


def test_adding_a_parent_takes_keys_only_for_itself() -> None:
    before = owners(PARENTS)
    after = owners([*PARENTS, "http://p4:8080"])
    assert all(after[k] in (before[k], "http://p4:8080") for k in KEYS)
    assert 0.15 <= sum(after[k] == "http://p4:8080" for k in KEYS) / len(KEYS) <= 0.35


def test_rank_ignores_parent_order_and_duplicates() -> None:
    for key in KEYS[:200]:
        assert rank(key, PARENTS) == rank(key, PARENTS[::-1]) == rank(key, PARENTS + PARENTS[:1])
    assert rank("k", []) == []


@pytest.mark.parametrize("healthy_kind", ["set", "callable"])
def test_choose_puts_unhealthy_last(healthy_kind: str) -> None:
    up = {"http://p1:8080", "http://p3:8080"}
    healthy = up if healthy_kind == "set" else up.__contains__
    for key in KEYS[:500]:
        ranked = rank(key, PARENTS)
        got = choose(key, PARENTS, healthy)
        assert got == [p for p in ranked if p in up] + ["http://p2:8080"]
    # all healthy: plain ranking; none healthy: still every parent, in rank order
    assert choose(KEYS[0], PARENTS, set(PARENTS)) == rank(KEYS[0], PARENTS)
    assert choose(KEYS[0], PARENTS, set()) == rank(KEYS[0], PARENTS)


@given(st.text(max_size=40), st.lists(st.text(min_size=1, max_size=20), max_size=8))
def test_rank_is_a_permutation(key: str, parents: list[str]) -> None:
    ranked = rank(key, parents)
    assert sorted(ranked) == sorted(set(parents))
    weights = [weight(key, p) for p in ranked]
    assert weights == sorted(weights, reverse=True)


def test_stable_across_processes() -> None:
    # another interpreter with another hash seed must rank every key the same way
    code = ("import sys; from edge360.core.hashing import rank; "
            "ps = sys.argv[1].split(','); "
            "print('\\n'.join(rank(f'/demo/{i}.ts', ps)[0] for i in range(300)))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code, ",".join(PARENTS)], env=env, check=True,
                         capture_output=True, text=True, timeout=60).stdout.split()
    assert out == [rank(f"/demo/{i}.ts", PARENTS)[0] for i in range(300)]

"""Parent selection by rendezvous (highest random weight) hashing of the cache key.

Every parent gets a pseudo-random weight per key and the heaviest owns the key (Thaler and
Ravishankar, "Using Name-Based Mappings to Increase Hit Rates", 1998). Removing a parent moves
only the keys it owned, each to its own runner-up, and adding it back restores the former owners.
The weights come from BLAKE2b, never Python's hash(), so every process and node ranks alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet


def weight(key: str, parent: str) -> int:
    """The 64-bit weight of `parent` for `key` (the NUL keeps "ab"+"c" apart from "a"+"bc")."""
    digest = hashlib.blake2b(f"{parent}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rank(key: str, parents: Sequence[str]) -> list[str]:
    """The distinct `parents`, heaviest first for `key`; equal weights fall back to the name."""
    unique = list(dict.fromkeys(parents))
    return sorted(unique, key=lambda p: (-weight(key, p), p))


def choose(key: str, parents: Sequence[str],
           healthy: Callable[[str], bool] | AbstractSet[str]) -> list[str]:
    """Ranked healthy parents first, then the unhealthy ones as a last resort (same order).

    A parent that fails health checks is skipped only while it fails: its keys go to their
    runner-ups and come back to it as soon as it is healthy again.
    """
    is_healthy = healthy.__contains__ if isinstance(healthy, AbstractSet) else healthy
    ranked = rank(key, parents)
    up = [p for p in ranked if is_healthy(p)]
    return up + [p for p in ranked if p not in up]

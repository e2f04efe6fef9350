"""A bounded least-recently-used map: per-request work done once per key (a path checked, a header
block encoded, a playlist rendered for one viewer) is kept here, never in an unbounded dict."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """At most `limit` items; `get` refreshes an item, `put` evicts the least recent ones."""

    __slots__ = ("_items", "limit")

    def __init__(self, limit: int) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self.limit = limit

    def get(self, key: K) -> V | None:
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
        return found

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.limit:
            self._items.popitem(last=False)

    def pop(self, key: K) -> V | None:
        return self._items.pop(key, None)

    def items(self) -> list[tuple[K, V]]:
        """Every item, least recent first (reading them refreshes none)."""
        return list(self._items.items())

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class Memo(Generic[K, V]):
    """A bounded memo for the request path: a plain dict emptied whole when it reaches `limit`.
    Cheaper than an LRU per lookup (no reordering); what is hot comes back at once."""

    __slots__ = ("_items", "limit")

    def __init__(self, limit: int) -> None:
        self._items: dict[K, V] = {}
        self.limit = limit

    def get(self, key: K) -> V | None:
        return self._items.get(key)

    def put(self, key: K, value: V) -> None:
        items = self._items
        if len(items) >= self.limit and key not in items:
            items.clear()
        items[key] = value

    def __len__(self) -> int:
        return len(self._items)

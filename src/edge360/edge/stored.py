"""The head of an object the edge stores: the RFC 9111 stored response, the body's length, and
whether the body is held whole or in pieces of `piece_bytes`, each piece under
`<key>\\x00<version>\\x00<n>`. The version is fresh per stored body, so the pieces of two
upstream versions are never mixed (docs/ARCHITECTURE.md, "Never a wrong byte"). The head is
encoded as the meta of the object's entry."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import orjson

from edge360.core.policy import StoredResponse


@dataclass(frozen=True, slots=True)
class StoredObject:
    """The head of a stored object."""

    stored: StoredResponse
    length: int
    pieced: bool
    version: str
    piece_bytes: int

    @property
    def strong(self) -> bool:
        """Whether the object has a strong validator: only then may its pieces come from
        separate fetches (each checked against it, RFC 9110 §8.8.1)."""
        etag = self.stored.etag
        return etag is not None and not etag.startswith("W/")

    def encode(self) -> bytes:
        return orjson.dumps({"s": self.stored.to_dict(), "n": self.length, "p": self.pieced,
                             "v": self.version, "pb": self.piece_bytes})

    @classmethod
    def decode(cls, meta: bytes) -> StoredObject | None:
        """None for a record this version cannot read (treated as a miss)."""
        try:
            d = orjson.loads(meta)
            return cls(StoredResponse.from_dict(d["s"]), int(d["n"]), bool(d["p"]), str(d["v"]),
                       int(d["pb"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None

    def piece_key(self, key: str, n: int) -> str:
        return f"{key}\x00{self.version}\x00{n}"

    def pieces(self) -> int:
        return -(-self.length // self.piece_bytes) if self.pieced else 1

    def piece_span(self, n: int) -> tuple[int, int]:
        """Inclusive byte span of piece n."""
        start = n * self.piece_bytes
        return start, min(self.length, start + self.piece_bytes) - 1


def new_version() -> str:
    return secrets.token_hex(6)

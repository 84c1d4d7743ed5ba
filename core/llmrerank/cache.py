"""Score caches, keyed by scorer fingerprint, query and a hash of the text.

A cached score never crosses models or prompt versions: the fingerprint is part of the key.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

__all__ = ["MemoryScoreCache", "ScoreCache", "cache_key"]


def cache_key(fingerprint: str, query: str, text: str) -> str:
    """A compact, collision-resistant key (BLAKE2b over the three parts, length-prefixed)."""
    h = hashlib.blake2b(digest_size=20)
    for part in (fingerprint, query, text):
        data = part.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


@runtime_checkable
class ScoreCache(Protocol):
    """What the funnel needs of a cache: batch lookup and batch store."""

    def get_many(
        self, fingerprint: str, query: str, texts: Sequence[str]
    ) -> list[float | None]: ...

    def put_many(
        self, fingerprint: str, query: str, texts: Sequence[str], scores: Sequence[float]
    ) -> None: ...


class MemoryScoreCache:
    """An in-process LRU cache of at most ``max_entries`` scores. Thread-safe."""

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._data: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def get_many(self, fingerprint: str, query: str, texts: Sequence[str]) -> list[float | None]:
        out: list[float | None] = []
        with self._lock:
            for text in texts:
                key = cache_key(fingerprint, query, text)
                value = self._data.get(key)
                if value is None:
                    self.misses += 1
                else:
                    self._data.move_to_end(key)
                    self.hits += 1
                out.append(value)
        return out

    def put_many(
        self, fingerprint: str, query: str, texts: Sequence[str], scores: Sequence[float]
    ) -> None:
        with self._lock:
            for text, score in zip(texts, scores, strict=True):
                key = cache_key(fingerprint, query, text)
                self._data[key] = float(score)
                self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

"""Score caches, keyed by scorer fingerprint, query and a hash of the text.

A cached score never crosses models or prompt versions: the fingerprint is part of the key.
:class:`MemoryScoreCache` lives in one process; :class:`SQLiteScoreCache` is a file that
several processes can share; :class:`~llmrerank.cache_redis.RedisScoreCache` (``llmrerank[redis]``)
is shared by processes on several machines.

A cache over the network also implements :class:`AsyncScoreCache`: the funnel then awaits its
lookup under a timeout taken from the request's deadline and stores new scores in the
background, so a slow cache never blocks the event loop nor delays a ranking.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .budget import Deadline

__all__ = ["AsyncScoreCache", "MemoryScoreCache", "SQLiteScoreCache", "ScoreCache", "cache_key"]

logger = logging.getLogger("llmrerank")

_SQL_VARS = 500
"""Keys per ``IN (...)`` lookup, well below SQLite's bound-parameter limit."""


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


@runtime_checkable
class AsyncScoreCache(ScoreCache, Protocol):
    """A :class:`ScoreCache` with awaitable batch operations, for caches over the network.

    ``aget_many`` takes the request's deadline and bounds its own wait by it; it raises
    :class:`~llmrerank.errors.CacheUnavailable` when the cache cannot answer in time (the funnel
    then ranks without it). ``aput_many`` never raises; the funnel runs it in the background.
    """

    async def aget_many(
        self, fingerprint: str, query: str, texts: Sequence[str], *, deadline: Deadline
    ) -> list[float | None]: ...

    async def aput_many(
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


class SQLiteScoreCache:
    """Scores in a SQLite file, shared by processes: concurrent readers and one writing process.

    The database runs in WAL mode (readers never block the writer, nor it them) with a busy
    timeout for the moments writers meet. A file that is corrupt, locked beyond the timeout or
    unwritable never fails a ranking: the cache logs one warning and is bypassed (a corrupt or
    unopenable file for the rest of the process, a lock for that call only). ``hits``, ``misses``
    and ``errors`` count lookups; the funnel also reports hits and misses per request in
    ``Ranking.info``.

    Args:
        path: the database file (created with its directory when missing).
        max_entries: past this many rows the oldest are deleted (checked every
            ``trim_every`` writes); ``None`` for no bound.
        busy_timeout: seconds a statement waits for a lock before the cache gives up on it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_entries: int | None = 1_000_000,
        busy_timeout: float = 0.05,
        trim_every: int = 1000,
    ) -> None:
        if max_entries is not None and max_entries < 1:
            raise ValueError("max_entries must be at least 1 (or None for no bound)")
        self.path = Path(path)
        self.max_entries = max_entries
        self.busy_timeout = busy_timeout
        self.trim_every = max(1, trim_every)
        self.hits = 0
        self.misses = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._broken = False
        self._writes = 0
        self._open()

    # ------------------------------------------------------------------ connection

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                str(self.path),
                timeout=self.busy_timeout,
                isolation_level=None,  # autocommit; explicit transactions below
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS scores ("
                " key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, score REAL NOT NULL,"
                " created REAL NOT NULL) WITHOUT ROWID"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS scores_created ON scores (created)")
            conn.execute("SELECT key FROM scores LIMIT 1").fetchall()  # reads the first page
            self._conn = conn
        except (sqlite3.Error, OSError) as exc:
            self._disable(f"cannot open the score cache {self.path} ({exc})")

    def _disable(self, why: str) -> None:
        self._broken = True
        self.errors += 1
        logger.warning("%s; ranking continues without the cache", why)
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    def _fault(self, exc: sqlite3.Error, op: str) -> None:
        """A locked or busy database skips this call; anything else disables the cache."""
        message = str(exc).lower()
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in message or "busy" in message):
            self.errors += 1
            logger.warning("score cache %s skipped: %s is locked (%s)", op, self.path, exc)
        else:
            self._disable(f"score cache {op} failed on {self.path} ({exc})")

    @property
    def available(self) -> bool:
        """False once the file proved corrupt or unusable (the cache is then bypassed)."""
        return not self._broken and self._conn is not None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __len__(self) -> int:
        with self._lock:
            if self._conn is None:
                return 0
            try:
                return int(self._conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0])
            except sqlite3.Error as exc:
                self._fault(exc, "count")
                return 0

    # ------------------------------------------------------------------ protocol

    def get_many(self, fingerprint: str, query: str, texts: Sequence[str]) -> list[float | None]:
        keys = [cache_key(fingerprint, query, t) for t in texts]
        found: dict[str, float] = {}
        with self._lock:
            if self._conn is not None and keys:
                try:
                    for start in range(0, len(keys), _SQL_VARS):
                        part = keys[start : start + _SQL_VARS]
                        marks = ",".join("?" * len(part))
                        rows = self._conn.execute(
                            f"SELECT key, score FROM scores WHERE key IN ({marks})", part
                        ).fetchall()
                        found.update((k, float(s)) for k, s in rows)
                except sqlite3.Error as exc:
                    self._fault(exc, "lookup")
                    found = {}
            out = [found.get(k) for k in keys]
            hits = sum(v is not None for v in out)
            self.hits += hits
            self.misses += len(out) - hits
        return out

    def put_many(
        self, fingerprint: str, query: str, texts: Sequence[str], scores: Sequence[float]
    ) -> None:
        now = time.time()
        rows = [
            (cache_key(fingerprint, query, t), fingerprint, float(s), now)
            for t, s in zip(texts, scores, strict=True)
        ]
        with self._lock:
            if self._conn is None or not rows:
                return
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    self._conn.executemany(
                        "INSERT OR REPLACE INTO scores (key, fingerprint, score, created)"
                        " VALUES (?, ?, ?, ?)",
                        rows,
                    )
                    self._writes += len(rows)
                    if self.max_entries is not None and self._writes >= self.trim_every:
                        self._writes = 0
                        self._conn.execute(
                            "DELETE FROM scores WHERE key IN (SELECT key FROM scores"
                            " ORDER BY created DESC LIMIT -1 OFFSET ?)",
                            (self.max_entries,),
                        )
                    self._conn.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                self._fault(exc, "store")

    def clear(self, fingerprint: str | None = None) -> None:
        """Delete every score, or those of one scorer fingerprint."""
        with self._lock:
            if self._conn is None:
                return
            try:
                if fingerprint is None:
                    self._conn.execute("DELETE FROM scores")
                else:
                    self._conn.execute("DELETE FROM scores WHERE fingerprint = ?", (fingerprint,))
            except sqlite3.Error as exc:
                self._fault(exc, "clear")

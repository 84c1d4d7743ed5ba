"""MemoryScoreCache and SQLiteScoreCache: keys, counters, sharing, and faults that must not fail
a ranking."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from llmrerank import Funnel, MemoryScoreCache, ScoreCache, SQLiteScoreCache
from llmrerank.scorers.bm25 import BM25Scorer
from llmrerank.testing import ScriptedScorer

CORE = str(Path(__file__).resolve().parents[3] / "core")

MakeCache = Callable[[Path], ScoreCache]
CACHES: dict[str, MakeCache] = {
    "memory": lambda tmp: MemoryScoreCache(),
    "sqlite": lambda tmp: SQLiteScoreCache(tmp / "scores.db"),
}


@pytest.fixture(params=sorted(CACHES))
def cache(request: pytest.FixtureRequest, tmp_path: Path) -> ScoreCache:
    return CACHES[request.param](tmp_path)


def test_round_trip_and_counters(cache: ScoreCache) -> None:
    cache.put_many("fp", "q", ["a", "b"], [1.5, -2.0])
    assert cache.get_many("fp", "q", ["a", "b", "c"]) == [1.5, -2.0, None]
    assert (cache.hits, cache.misses) == (2, 1)  # type: ignore[attr-defined]


def test_a_score_never_crosses_fingerprints_or_queries(cache: ScoreCache) -> None:
    cache.put_many("llm:model-a(prompt=v1)", "q", ["a"], [0.9])
    assert cache.get_many("llm:model-b(prompt=v1)", "q", ["a"]) == [None]
    assert cache.get_many("llm:model-a(prompt=v2)", "q", ["a"]) == [None]
    assert cache.get_many("llm:model-a(prompt=v1)", "other query", ["a"]) == [None]
    assert cache.get_many("llm:model-a(prompt=v1)", "q", ["a"]) == [0.9]


def test_sqlite_persists_across_instances(tmp_path: Path) -> None:
    SQLiteScoreCache(tmp_path / "s.db").put_many("fp", "q", ["x" * 10_000, "é"], [1.0, 2.0])
    again = SQLiteScoreCache(tmp_path / "s.db")
    assert again.get_many("fp", "q", ["x" * 10_000, "é"]) == [1.0, 2.0]
    assert again.hits == 2 and len(again) == 2


def test_sqlite_bounds_its_size(tmp_path: Path) -> None:
    cache = SQLiteScoreCache(tmp_path / "s.db", max_entries=50, trim_every=10)
    for i in range(20):
        cache.put_many("fp", "q", [f"t{i}-{j}" for j in range(10)], [float(j) for j in range(10)])
    assert len(cache) <= 60
    assert cache.get_many("fp", "q", ["t19-9"]) == [9.0]  # the newest survive


def test_sqlite_many_keys_in_one_lookup(tmp_path: Path) -> None:
    cache = SQLiteScoreCache(tmp_path / "s.db")
    texts = [f"text {i}" for i in range(2_345)]
    cache.put_many("fp", "q", texts, [float(i) for i in range(len(texts))])
    assert cache.get_many("fp", "q", texts) == [float(i) for i in range(len(texts))]


def test_sqlite_concurrent_readers_and_a_writing_process(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    reader = SQLiteScoreCache(path)
    writer = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {CORE!r})
        from llmrerank.cache import SQLiteScoreCache
        c = SQLiteScoreCache({str(path)!r}, busy_timeout=2.0)
        for i in range(200):
            c.put_many("fp", "q", [f"w{{i}}"], [float(i)])
        assert c.errors == 0, c.errors
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", writer])
    seen = 0
    while proc.poll() is None:
        got = reader.get_many("fp", "q", [f"w{i}" for i in range(200)])
        seen = max(seen, sum(v is not None for v in got))
    assert proc.wait(timeout=60) == 0
    final = reader.get_many("fp", "q", [f"w{i}" for i in range(200)])
    assert final == [float(i) for i in range(200)]
    assert reader.errors == 0 and reader.available


def test_corrupt_file_is_bypassed_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not a database " * 500)
    with caplog.at_level(logging.WARNING, logger="llmrerank"):
        cache = SQLiteScoreCache(path)
    assert not cache.available
    assert "continues without the cache" in caplog.text
    cache.put_many("fp", "q", ["a"], [1.0])
    assert cache.get_many("fp", "q", ["a"]) == [None]
    assert path.read_bytes().startswith(b"this is not a database")  # left as found


def test_locked_file_skips_the_call_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process holding the write lock: a store is skipped with a warning, lookups still
    read (WAL), and the cache works again once the lock is gone."""
    path = tmp_path / "locked.db"
    cache = SQLiteScoreCache(path, busy_timeout=0.05)
    cache.put_many("fp", "q", ["a"], [1.0])
    holder = sqlite3.connect(str(path), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT OR REPLACE INTO scores VALUES ('k', 'fp', 0.0, 0.0)")
    with caplog.at_level(logging.WARNING, logger="llmrerank"):
        cache.put_many("fp", "q", ["b"], [2.0])
        assert cache.get_many("fp", "q", ["a", "b"]) == [1.0, None]
    assert "locked" in caplog.text and cache.available and cache.errors == 1
    holder.execute("ROLLBACK")
    holder.close()
    cache.put_many("fp", "q", ["b"], [2.0])
    assert cache.get_many("fp", "q", ["a", "b"]) == [1.0, 2.0]


TEXTS = [
    "rust programming language memory safety",
    "python programming language",
    "a recipe for bread",
    "memory safety in systems programming",
]


async def test_funnel_reports_hits_and_misses(tmp_path: Path) -> None:
    cache = SQLiteScoreCache(tmp_path / "s.db")
    llm = ScriptedScorer(name="v1")
    funnel = Funnel(fast=BM25Scorer(), llm=llm, k=3, cache=cache)
    first = await funnel.arerank("memory safety programming", TEXTS)
    assert (first.info["cache_hits"], first.info["cache_misses"]) == (0, 3)
    calls = llm.calls
    second = await funnel.arerank("memory safety programming", TEXTS)
    assert (second.info["cache_hits"], second.info["cache_misses"]) == (3, 0)
    assert llm.calls == calls  # nothing re-scored
    assert second.ids == first.ids and sum(r.cached for r in second) == 3
    assert cache.hits == 3 and cache.misses == 3
    # Another prompt version shares the file but not the scores.
    other = Funnel(fast=BM25Scorer(), llm=ScriptedScorer(name="v2"), k=3, cache=cache)
    third = await other.arerank("memory safety programming", TEXTS)
    assert third.info["cache_hits"] == 0 and not any(r.cached for r in third)


async def test_funnel_ranks_with_a_corrupt_cache_file(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"\x00garbage" * 1000)
    funnel = Funnel(llm=ScriptedScorer(), k=3, cache=SQLiteScoreCache(path))
    ranking = await funnel.arerank("memory safety programming", TEXTS)
    assert sorted(ranking.ids) == ["0", "1", "2", "3"]
    assert ranking.llm_scored == 3 and not ranking.degraded

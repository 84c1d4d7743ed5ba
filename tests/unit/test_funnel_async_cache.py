"""The funnel with an async score cache (the shape of the Redis one, here in memory): one lookup
and one batched background write per request, and a cache that fails, hangs or is cancelled
never changes a ranking's completeness or its deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from llmrerank import CacheUnavailable, Funnel
from llmrerank.budget import Deadline
from llmrerank.cache import AsyncScoreCache, cache_key
from llmrerank.testing import ScriptedScorer

DOCS = [f"apples and pears, note {i}" for i in range(12)]


class AsyncMemoryCache:
    """A real, minimal AsyncScoreCache: a dict, with an optional fault on lookups."""

    def __init__(self, fault: str | None = None) -> None:
        self.data: dict[str, float] = {}
        self.fault = fault
        self.lookups = 0
        self.batches: list[int] = []

    def get_many(self, fingerprint: str, query: str, texts: Sequence[str]) -> list[float | None]:
        return [self.data.get(cache_key(fingerprint, query, t)) for t in texts]

    def put_many(
        self, fingerprint: str, query: str, texts: Sequence[str], scores: Sequence[float]
    ) -> None:
        for t, s in zip(texts, scores, strict=True):
            self.data[cache_key(fingerprint, query, t)] = s

    async def aget_many(
        self, fingerprint: str, query: str, texts: Sequence[str], *, deadline: Deadline
    ) -> list[float | None]:
        self.lookups += 1
        if self.fault == "down":
            raise CacheUnavailable("down")
        if self.fault == "hang":  # a cache that ignores its budget
            await asyncio.sleep(60)
        return self.get_many(fingerprint, query, texts)

    async def aput_many(
        self, fingerprint: str, query: str, texts: Sequence[str], scores: Sequence[float]
    ) -> None:
        await asyncio.sleep(0.01)
        self.batches.append(len(texts))
        self.put_many(fingerprint, query, texts, scores)


async def _settle() -> None:
    await asyncio.sleep(0.05)  # background writes land


def test_the_in_memory_double_is_an_async_score_cache() -> None:
    assert isinstance(AsyncMemoryCache(), AsyncScoreCache)


async def test_one_lookup_and_one_batched_write_per_request() -> None:
    cache = AsyncMemoryCache()
    funnel = Funnel(llm=ScriptedScorer(batch_size=2), k=8, cache=cache, deadline=2.0)
    first = await funnel.arerank("apples pears", DOCS)
    assert cache.lookups == 1 and first.info["cache"] == "ok"
    await _settle()
    assert cache.batches == [8]  # 4 chunks of 2, written as one batch after the stage
    second = await funnel.arerank("apples pears", DOCS)
    await _settle()
    assert cache.lookups == 2 and cache.batches == [8]  # all hits: nothing new to write
    assert second.info["cache_hits"] == 8
    assert [(r.id, r.llm_score) for r in second] == [(r.id, r.llm_score) for r in first]


async def test_an_unavailable_cache_changes_nothing_but_the_provenance() -> None:
    funnel = Funnel(llm=ScriptedScorer(), k=5, cache=AsyncMemoryCache("down"), deadline=1.0)
    plain = Funnel(llm=ScriptedScorer(), k=5, deadline=1.0)
    ranking = await funnel.arerank("apples", DOCS)
    reference = await plain.arerank("apples", DOCS)
    assert ranking.info["cache"] == "unavailable" and not ranking.degraded
    assert ranking.ids == reference.ids and ranking.llm_scored == 5


async def test_a_cache_that_hangs_is_cut_by_the_deadline() -> None:
    funnel = Funnel(llm=ScriptedScorer(), k=5, cache=AsyncMemoryCache("hang"), deadline=0.2)
    t0 = time.monotonic()
    ranking = await funnel.arerank("apples", DOCS)
    assert time.monotonic() - t0 < 0.2 + 0.05
    assert ranking.info["cache"] == "error" and sorted(ranking.ids, key=int) == [
        str(i) for i in range(12)
    ]


async def test_scores_of_a_cancelled_stream_are_still_written() -> None:
    cache = AsyncMemoryCache()
    scorer = ScriptedScorer(latency=lambda: 0.02, batch_size=1)
    funnel = Funnel(llm=scorer, k=10, cache=cache, deadline=5.0, concurrency=2)
    stream = funnel.astream("apples", DOCS)
    kinds = []
    async for update in stream:
        kinds.append(update.kind)
        if update.kind == "partial" and update.ranking.llm_scored >= 2:
            break  # the client leaves mid-way
    await stream.aclose()  # type: ignore[attr-defined]
    await _settle()
    assert kinds[0] == "fast" and "final" not in kinds
    assert len(cache.batches) == 1 and 2 <= cache.batches[0] < 10

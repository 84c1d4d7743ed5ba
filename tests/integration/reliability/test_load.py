"""Load through the funnel and through the rerank service, with a fast scripted LLM stage
(:class:`~llmrerank.testing.ScriptedScorer`, heavy-tailed latency): 200 concurrent requests,
every candidate exactly once in every response, p99 within the deadline plus a stated margin,
bounded memory across 1,000 requests, and nothing leaked afterwards (asyncio tasks, threads,
sockets, file descriptors). ``test_load_real.py`` repeats this against a real llama.cpp server.

The stated margin: 200 simultaneous requests queue for the CPU (BM25, fusion, JSON and HTTP
run on one event loop; on two shared cores that alone takes a second or more), so each test
first measures that cost, the same 200 requests with an instant LLM stage (``calibration``), and
asserts ``p99 <= deadline + 1.5 x calibration + 0.25 s``: the LLM stage adds at most its
deadline on top of CPU queueing. The figures for the docs come from
``scripts/bench_reliability.py``.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from typing import Any

import httpx
import psutil
import pytest
from llmrerank import Funnel
from llmrerank.testing import ScriptedScorer, heavy_tailed_latency
from reliability_support import Resources, run_load, settle

pytestmark = pytest.mark.integration

N_DOCS = 30
DOCS = [
    f"passage {i} about {'apples' if i % 3 == 0 else 'pears'} and orchards" for i in range(N_DOCS)
]
IDS = [str(i) for i in range(N_DOCS)]
DEADLINE = 0.5


def _funnel(instant: bool = False) -> tuple[Funnel, ScriptedScorer]:
    latency = 0.0 if instant else heavy_tailed_latency(0.03, seed=7)
    llm = ScriptedScorer(latency=latency, name="load")
    return Funnel(llm=llm, k=10, deadline=DEADLINE, concurrency=8, name="enterprise"), llm


def margin(calibration: float) -> float:
    """Seconds allowed past the deadline at p99: CPU queueing of 200 requests, measured, with
    room for the calibration run having been luckier than the measured one on a shared CPU."""
    return 2.0 * calibration + 1.0


async def _funnel_request(funnel: Funnel, i: int) -> Any:
    ranking = await funnel.arerank(f"apples {i}", DOCS)
    return ranking.ids, ranking.provenance()


async def test_200_concurrent_through_the_funnel_complete_in_time_and_leak_nothing() -> None:
    instant, _ = _funnel(instant=True)
    calibration = await run_load(
        lambda i: _funnel_request(instant, i), total=200, concurrency=200, expected_ids=IDS
    )
    funnel, llm = _funnel()
    before_tasks = asyncio.all_tasks()
    before = Resources.now()

    result = await run_load(
        lambda i: _funnel_request(funnel, i), total=200, concurrency=200, expected_ids=IDS
    )
    bound = DEADLINE + margin(calibration.wall)
    assert result.percentile(99) <= bound, (bound, result.summary())
    assert llm.calls > 0
    # Some requests cut at the deadline (heavy tail); each is flagged, none lost anything.
    assert set(result.reasons or {}) <= {"deadline"}, result.summary()

    await asyncio.sleep(0)
    assert asyncio.all_tasks() == before_tasks, "asyncio tasks left behind"
    assert settle(lambda: Resources.now().within(before)), (before, Resources.now())


async def test_memory_stays_bounded_across_1000_funnel_requests() -> None:
    funnel, _ = _funnel()

    def request(i: int) -> Any:
        return _funnel_request(funnel, i)

    await run_load(request, total=200, concurrency=200, expected_ids=IDS)  # warm-up
    gc.collect()
    rss0 = psutil.Process().memory_info().rss
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        await run_load(request, total=1000, concurrency=200, expected_ids=IDS)
        gc.collect()
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    grown = end - start
    assert grown < 2 * 1024 * 1024, f"Python heap grew {grown / 1e6:.1f} MB over 1,000 requests"
    rss_grown = psutil.Process().memory_info().rss - rss0
    assert rss_grown < 64 * 1024 * 1024, f"RSS grew {rss_grown / 1e6:.1f} MB"


async def _http_load(url: str, total: int, statuses: dict[int, int]) -> Any:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def request(i: int) -> Any:
            r = await client.post("/v1/rerank", json={"query": f"apples {i}", "documents": DOCS})
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            assert r.status_code == 200, r.text
            body = r.json()
            return [str(x["index"]) for x in body["results"]], body["llmrerank"]

        return await run_load(request, total=total, concurrency=200, expected_ids=IDS)


async def test_200_concurrent_through_the_server_complete_in_time_and_leak_nothing(
    serve: Any,
) -> None:
    statuses: dict[int, int] = {}
    instant = serve(_funnel(instant=True)[0], max_concurrent=200, max_queued=200)
    calibration = await _http_load(instant.url, 200, statuses)
    instant.stop()

    server = serve(_funnel()[0], max_concurrent=200, max_queued=200)
    server_tasks = server.tasks()
    before = Resources.now()
    rss0 = psutil.Process().memory_info().rss
    result = await _http_load(server.url, 200, statuses)
    bound = DEADLINE + margin(calibration.wall)
    assert result.percentile(99) <= bound, (bound, result.summary())
    await _http_load(server.url, 800, statuses)  # 1,000 in all, for the memory bound

    assert statuses == {200: 1200}
    rss_grown = psutil.Process().memory_info().rss - rss0
    assert rss_grown < 96 * 1024 * 1024, f"RSS grew {rss_grown / 1e6:.1f} MB over 1,000 requests"
    assert settle(lambda: server.tasks() == server_tasks), (server_tasks, server.tasks())
    assert settle(lambda: Resources.now().within(before)), (before, Resources.now())
    assert server.state.admission.running == server.state.admission.queued == 0

"""Load against a REAL llama.cpp server (llama-cpp-python's, SmolLM2 GGUF, started here on
127.0.0.1): 200 concurrent requests through the funnel and through ``llmrerank serve`` (a
subprocess, ``--llm openai``), every candidate exactly once in every response, p99 within the
deadline plus a stated margin, and nothing leaked afterwards (tasks, threads, sockets here; the
server process's threads, file descriptors and connections). Short texts, small k and a 2 s
deadline keep it short: the server answers one request at a time, so most requests are cut at
the deadline and flagged, which is the behaviour under test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest
from llmrerank import Funnel
from reliability_support import Resources, free_port, run_load, settle

pytest.importorskip("llama_cpp.server", reason="needs llama-cpp-python[server]")
llm_openai = pytest.importorskip("llmrerank.scorers.llm_openai", reason="needs llm_openai")
testing_servers = pytest.importorskip("llmrerank.testing_servers", reason="needs llm_openai")

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DOCS = [
    "Paris is the capital of France.",
    "Bananas are yellow fruit.",
    "The Eiffel Tower stands in Paris.",
    "Cats sleep most of the day.",
    "France borders Spain and Italy.",
    "Tea is brewed from leaves.",
]
IDS = [str(i) for i in range(len(DOCS))]
DEADLINE = 2.0
MARGIN = 1.5
"""Seconds past the deadline allowed at p99 through the funnel: 200 requests' BM25 and fusion
queue for two shared cores (``test_load.py`` measures that cost)."""
HTTP_MARGIN = 3.0
"""The same through ``llmrerank serve``: HTTP, JSON and the client on the same two cores
(measured p99 here: deadline + 1.2 to 1.8 s at a load average of 15-19)."""


@pytest.fixture(scope="module")
def llama() -> Iterator[Any]:
    with testing_servers.llama_cpp_server(alias="smollm2", threads=1) as server:
        yield server


async def test_200_concurrent_through_the_funnel_against_llama_cpp(llama: Any) -> None:
    scorer = llm_openai.OpenAILLMScorer(llama.url, "smollm2", method="judgement")
    funnel = Funnel(llm=scorer, k=2, deadline=DEADLINE)
    warm = await funnel.arerank("capital of France", DOCS, deadline=30)
    assert not warm.degraded
    tasks = asyncio.all_tasks()
    before = Resources.now()

    async def request(i: int) -> Any:
        ranking = await funnel.arerank(f"capital of France {i}", DOCS)
        return ranking.ids, ranking.provenance()

    result = await run_load(request, total=200, concurrency=200, expected_ids=IDS)
    await scorer.aclose()
    assert result.percentile(99) <= DEADLINE + MARGIN, result.summary()
    assert set(result.reasons or {}) <= {"deadline"}, result.summary()
    assert result.llm_scored > 0, "the real server scored nothing"
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == tasks
    assert settle(lambda: Resources.now().within(before)), (before, Resources.now())


def _server_resources(proc: psutil.Process) -> tuple[int, int, int]:
    return proc.num_threads(), proc.num_fds(), len(proc.net_connections(kind="inet"))


@pytest.fixture
def serve_process(llama: Any) -> Iterator[tuple[psutil.Process, str]]:
    """``llmrerank serve --llm openai`` in front of the llama.cpp server, on a free port."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "llmrerank", "serve", "--no-demo", "--llm", "openai",
        "--llm-endpoint", llama.url, "--llm-model", "smollm2", "--port", str(port),
        "--deadline", str(DEADLINE), "--k", "2", "--max-concurrent", "200",
        "--max-queued", "200", "--log-level", "warning",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            assert proc.poll() is None, f"llmrerank serve exited with {proc.returncode}"
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield psutil.Process(proc.pid), url
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


async def test_200_concurrent_through_llmrerank_serve_against_llama_cpp(
    serve_process: tuple[psutil.Process, str],
) -> None:
    ps, url = serve_process
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def request(i: int) -> Any:
            body = {"query": f"capital of France {i}", "documents": DOCS}
            r = await client.post("/v1/rerank", json=body)
            assert r.status_code == 200, r.text
            data = r.json()
            return [str(x["index"]) for x in data["results"]], data["llmrerank"]

        # Warm-up, with time enough for the LLM: the chain serve -> llama.cpp scores.
        warm = await client.post(
            "/v1/rerank", json={"query": "capital of France", "documents": DOCS, "deadline": 50}
        )
        assert warm.json()["llmrerank"]["llm_scored"] == 2, warm.text
        await run_load(request, total=20, concurrency=20, expected_ids=IDS)
        await asyncio.sleep(1.0)
        threads0, fds0, conns0 = _server_resources(ps)
        rss0 = ps.memory_info().rss
        result = await run_load(request, total=200, concurrency=200, expected_ids=IDS)
        assert result.percentile(99) <= DEADLINE + HTTP_MARGIN, result.summary()
        # serve's OpenAI backend uses query likelihood (echo log-probabilities), which
        # llama-cpp-python computes in seconds per request here: under this load most or all
        # requests are cut at the deadline, flagged, and complete.
        assert set(result.reasons or {}) <= {"deadline"}, result.summary()
    rss_grown = ps.memory_info().rss - rss0
    assert rss_grown < 128 * 1024 * 1024, f"server RSS grew {rss_grown / 1e6:.0f} MB"
    # Keep-alive connections to llama.cpp stay in the scorer's httpx pool for reuse (httpx
    # purges expired ones lazily, on the pool's next use): bounded by the pool's size, they are
    # not a leak. Anything beyond that bound, or any extra thread, would be.
    pool = 16 + 4  # OpenAILLMScorer's default max_concurrency + 4 keep-alive connections
    bound = (threads0, fds0 + pool, conns0 + pool)
    for _ in range(150):  # the server's sockets and threads drain within seconds
        if all(a <= b for a, b in zip(_server_resources(ps), bound, strict=True)):
            break
        await asyncio.sleep(0.1)
    after = _server_resources(ps)
    assert all(a <= b for a, b in zip(after, bound, strict=True)), ((threads0, fds0, conns0), after)

"""Faults of a REAL llama.cpp server (llama-cpp-python's OpenAI-compatible server serving the
embedded SmolLM2 GGUF, started here on 127.0.0.1), seen through the funnel.

The llm-openai fault tests (``tests/integration/test_openai_faults.py``) inject each fault with a
fake server and check the scorer's handling; these extend them to the real server and to the
funnel over time: the server killed mid-request, frozen (SIGSTOP) past the deadline, and, through
:class:`~reliability_support.FaultProxy` (a fault-injecting proxy on loopback in front of the
real server), 5xx bursts, 429 with Retry-After, malformed and truncated JSON and missing
logprobs. For each: every request gets a complete ranking (degraded and flagged), the funnel's
circuit breaker opens after its threshold and closes after ``reset_after`` once the server
answers again (``llmrerank.breaker``), and the log says what happened once per request, with
no log storm while the circuit is open.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from llmrerank import CircuitBreaker, Funnel
from reliability_support import FaultProxy, free_port

pytest.importorskip("llama_cpp.server", reason="needs llama-cpp-python[server]")
llm_openai = pytest.importorskip("llmrerank.scorers.llm_openai", reason="needs llm_openai")
testing_servers = pytest.importorskip("llmrerank.testing_servers", reason="needs llm_openai")

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUERY = "what is the capital of france"
DOCS = [
    "Paris is the capital of France.",
    "Bananas are yellow fruit.",
    "France is a country in Europe; its capital is Paris.",
    "Cats sleep most of the day.",
    "Tea is brewed from leaves.",
]
IDS = [str(i) for i in range(len(DOCS))]


@pytest.fixture(scope="module")
def llama() -> Iterator[Any]:
    server = testing_servers.llama_cpp_server(alias="smollm2", threads=1)
    with server:
        yield server


def funnel(url: str, *, threshold: int = 2, reset: float = 1.0, deadline: float = 8.0) -> Funnel:
    scorer = llm_openai.OpenAILLMScorer(
        url, "smollm2", method="judgement", max_retries=1, backoff=0.01, breaker_threshold=99
    )
    breaker = CircuitBreaker(failure_threshold=threshold, reset_after=reset, name="llama-cpp")
    return Funnel(llm=scorer, k=3, deadline=deadline, breaker=breaker)


async def rerank(f: Funnel, deadline: float | None = None) -> Any:
    ranking = await f.arerank(QUERY, DOCS, deadline=deadline)
    assert sorted(ranking.ids) == IDS, "a candidate was lost"
    assert ranking.degraded == bool(ranking.reasons)
    return ranking


def records(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(1 for r in caplog.records if r.name == "llmrerank" and text in r.getMessage())


async def close(f: Funnel) -> None:
    await f.llm.aclose()  # type: ignore[union-attr]


async def test_the_real_server_scores_through_the_proxy(llama: Any) -> None:
    with FaultProxy(llama.root) as proxy:
        f = funnel(proxy.root + "/v1")
        ranking = await rerank(f)
        await close(f)
    assert not ranking.degraded
    assert ranking.llm_scored == 3
    assert proxy.requests >= 3


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("5xx", "backend_error"),
        ("malformed", "malformed_output"),
        ("truncated", "malformed_output"),
        ("no_logprobs", "malformed_output"),
    ],
)
async def test_a_fault_burst_degrades_opens_the_circuit_and_recovers(
    llama: Any, caplog: pytest.LogCaptureFixture, fault: str, reason: str
) -> None:
    caplog.set_level(logging.INFO, logger="llmrerank")
    burst = 12  # requests to the server that fail, then it recovers
    with FaultProxy(llama.root, lambda n: fault if n <= burst else "pass") as proxy:
        f = funnel(proxy.root + "/v1", threshold=2, reset=1.0)
        first = await rerank(f)
        assert first.degraded and reason in first.reasons, first.provenance()
        assert first.llm_scored == 0
        second = await rerank(f)
        assert f.breaker.state == "open", second.provenance()
        sent = proxy.requests
        open_rankings = [await rerank(f) for _ in range(10)]  # while open: not even asked
        assert proxy.requests == sent
        assert all(r.reasons == ("circuit_open",) for r in open_rankings)
        warnings_while_open = [
            r
            for r in caplog.records
            if r.levelno >= logging.WARNING and "circuit" not in r.getMessage()
        ]
        # The burst runs out while the circuit is open; after reset_after a trial goes through.
        proxy.plan = "pass"
        await asyncio.sleep(1.1)
        recovered = await rerank(f)
        await close(f)
    assert not recovered.degraded, recovered.provenance()
    assert f.breaker.state == "closed"
    assert records(caplog, "circuit llama-cpp opened") == 1
    assert records(caplog, "circuit llama-cpp closed") == 1
    # One warning per failed request (two before the circuit opened), none per open request.
    assert len(warnings_while_open) <= 2 * 2, [r.getMessage() for r in warnings_while_open]


async def test_429_with_retry_after_is_waited_for_within_the_deadline(llama: Any) -> None:
    with FaultProxy(llama.root, lambda n: "429" if n == 1 else "pass", retry_after=0.3) as proxy:
        f = funnel(proxy.root + "/v1")
        t0 = time.monotonic()
        ranking = await rerank(f)
        await close(f)
    assert not ranking.degraded, ranking.provenance()
    assert proxy.faults == {"429": 1}
    assert time.monotonic() - t0 >= 0.3


async def test_429_longer_than_the_deadline_degrades_at_once(llama: Any) -> None:
    with FaultProxy(llama.root, "429", retry_after=30) as proxy:
        f = funnel(proxy.root + "/v1")
        t0 = time.monotonic()
        ranking = await rerank(f, deadline=2.0)
        await close(f)
    assert ranking.degraded and ranking.llm_scored == 0
    assert time.monotonic() - t0 < 2.5
    assert proxy.requests >= 1


async def test_a_proxy_slower_than_the_deadline_is_cut_at_the_deadline(llama: Any) -> None:
    with FaultProxy(llama.root, "delay", delay=10.0) as proxy:
        f = funnel(proxy.root + "/v1")
        t0 = time.monotonic()
        ranking = await rerank(f, deadline=1.0)
        elapsed = time.monotonic() - t0
        await close(f)
    assert ranking.reasons == ("deadline",) and ranking.llm_scored == 0
    assert elapsed < 1.0 + 0.5


async def test_a_frozen_server_sigstop_is_cut_at_the_deadline_and_recovers(llama: Any) -> None:
    f = funnel(llama.url)
    pid = llama.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        ranking = await rerank(f, deadline=1.0)
        elapsed = time.monotonic() - t0
    finally:
        os.kill(pid, signal.SIGCONT)
    assert ranking.reasons == ("deadline",), ranking.provenance()
    assert elapsed < 1.5
    after = await rerank(f, deadline=20.0)
    await close(f)
    assert not after.degraded, after.provenance()


async def test_connection_refused_degrades_fast_and_opens_the_circuit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="llmrerank")
    f = funnel(f"http://127.0.0.1:{free_port()}/v1", threshold=2, reset=60)
    t0 = time.monotonic()
    rankings = [await rerank(f, deadline=3.0) for _ in range(20)]
    await close(f)
    assert time.monotonic() - t0 < 10
    assert all(r.degraded for r in rankings)
    assert rankings[0].reasons == ("backend_error",)
    assert all(r.reasons == ("circuit_open",) for r in rankings[2:])
    assert records(caplog, "opened") == 1
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) <= 2 * 2 + 1, [r.getMessage() for r in warnings]  # not 20 x anything


async def test_server_killed_mid_request_degrades_every_request() -> None:
    server = testing_servers.llama_cpp_server(alias="smollm2", threads=1)
    server.start()
    try:
        f = funnel(server.url, threshold=2, reset=60)
        warm = await rerank(f, deadline=30.0)
        assert not warm.degraded

        async def kill_soon() -> None:
            await asyncio.sleep(0.05)
            os.killpg(server.process.pid, signal.SIGKILL)

        killer = asyncio.ensure_future(kill_soon())
        in_flight = await asyncio.gather(*(rerank(f, deadline=5.0) for _ in range(4)))
        await killer
        later = [await rerank(f, deadline=2.0) for _ in range(3)]
        await close(f)
    finally:
        server.stop()
    assert any(r.degraded for r in in_flight)
    assert all(r.degraded for r in later)
    assert f.breaker.state == "open"

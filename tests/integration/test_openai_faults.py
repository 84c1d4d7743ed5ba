"""Faults of an OpenAI-compatible server, injected by a real HTTP server on loopback.

Each fault must degrade through the Funnel: a complete ranking (every id exactly once), the
fault visible in provenance (``degraded``, ``reasons``, ``info["errors"]``), logged once.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from llmrerank import Deadline, Funnel
from llmrerank.errors import BackendTimeout, BackendUnavailable, CircuitOpen, RateLimited
from llmrerank.scorers import OpenAILLMScorer
from llmrerank.testing_servers import FaultServer, free_port

pytest.importorskip("httpx")
pytest.importorskip("tenacity")

pytestmark = pytest.mark.integration

QUERY = "what is the capital of france"
CANDIDATES = [
    {"id": "paris", "text": "Paris is the capital of France and its largest city."},
    {"id": "banana", "text": "Bananas are yellow fruit rich in potassium."},
    {"id": "france", "text": "France is a country whose capital is Paris."},
    {"id": "cats", "text": "Cats sleep for most of the day."},
    {"id": "rome", "text": "Rome is the capital of Italy."},
    {"id": "tea", "text": "Green tea is brewed from unoxidised leaves."},
]
IDS = sorted(c["id"] for c in CANDIDATES)
SECRET = "sk-llmrerank-test-never-log-this-0123456789"

METHODS = ["judgement", "query_likelihood"]


def scorer(url: str | list[str], method: str = "judgement", **kw: object) -> OpenAILLMScorer:
    kw.setdefault("api_key", SECRET)
    return OpenAILLMScorer(url, "fake", method=method, **kw)  # type: ignore[arg-type]


def assert_complete(ranking: object) -> None:
    ids = ranking.ids  # type: ignore[attr-defined]
    assert sorted(ids) == IDS, "every candidate exactly once"


def our_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "llmrerank" and r.levelno >= logging.WARNING
    ]


async def rerank(s: OpenAILLMScorer, *, k: int = 4, deadline: float = 3.0) -> object:
    try:
        return await Funnel(llm=s, k=k, deadline=deadline).arerank(QUERY, CANDIDATES)
    finally:
        await s.aclose()


@pytest.mark.parametrize("method", METHODS)
async def test_healthy_fake_server_scores_everything(method: str) -> None:
    with FaultServer("ok") as srv:
        ranking = await rerank(scorer(srv.url, method))
    assert_complete(ranking)
    assert not ranking.degraded
    assert ranking.llm_scored == 4
    assert ranking.ids[0] in ("paris", "france")


@pytest.mark.parametrize("method", METHODS)
async def test_server_down_degrades(method: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="llmrerank")
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    t0 = time.monotonic()
    ranking = await rerank(scorer(url, method), deadline=3.0)
    assert time.monotonic() - t0 < 2.0, "a refused connection fails fast, not at the deadline"
    assert_complete(ranking)
    assert ranking.degraded and "backend_error" in ranking.reasons
    assert ranking.llm_scored == 0
    errors = ranking.info["errors"]
    assert any("connection refused" in e for e in errors), errors
    assert all(r.stage == "fast" for r in ranking)
    warnings = our_warnings(caplog)
    assert sum("connection refused" in w for w in warnings) == 1, warnings
    assert len(warnings) <= 3, warnings


@pytest.mark.parametrize("method", METHODS)
async def test_slow_server_is_cut_at_the_deadline_and_requests_aborted(method: str) -> None:
    with FaultServer("slow") as srv:
        s = scorer(srv.url, method)
        t0 = time.monotonic()
        ranking = await rerank(s, deadline=0.8)
        elapsed = time.monotonic() - t0
        assert elapsed < 0.8 + 0.4, f"took {elapsed:.2f} s for a 0.8 s deadline"
        assert_complete(ranking)
        assert ranking.degraded and ranking.reasons == ("deadline",)
        assert ranking.llm_scored == 0
        assert s.in_flight == 0
        # the server sees every in-flight request's connection closed: nothing left running
        for _ in range(40):
            if srv.disconnects == srv.requests:
                break
            await asyncio.sleep(0.05)
        assert srv.requests == 4
        assert srv.disconnects == 4


async def test_direct_call_times_out_with_backend_timeout() -> None:
    with FaultServer("slow") as srv:
        s = scorer(srv.url)
        with pytest.raises(BackendTimeout):
            await s.ascore(QUERY, ["Paris is the capital."], deadline=Deadline.after(0.3))
        await s.aclose()


@pytest.mark.parametrize("method", METHODS)
async def test_5xx_degrades_after_retries(method: str, caplog: pytest.LogCaptureFixture) -> None:
    with FaultServer("5xx", status=503) as srv:
        ranking = await rerank(scorer(srv.url, method, breaker_threshold=100, max_retries=2))
        assert srv.requests == 4 * 3, "each candidate tried once and retried twice"
    assert_complete(ranking)
    assert ranking.degraded and ranking.reasons == ("backend_error",)
    assert any("HTTP 503" in e for e in ranking.info["errors"])
    warnings = our_warnings(caplog)
    assert sum("HTTP 503" in w for w in warnings) == 1, warnings


async def test_one_5xx_is_retried_and_the_ranking_is_complete() -> None:
    with FaultServer("5xx", fail_first=1) as srv:
        s = scorer(srv.url)
        ranking = await rerank(s)
        assert srv.requests == 5
    assert not ranking.degraded
    assert ranking.llm_scored == 4
    assert s.stats["retries"] == 1


async def test_429_waits_for_retry_after_then_succeeds() -> None:
    with FaultServer("429", fail_first=1, retry_after=0.5) as srv:
        s = scorer(srv.url, max_concurrency=1)
        t0 = time.monotonic()
        scores = await s.ascore(
            QUERY, ["Paris is the capital of France."], deadline=Deadline.after(5)
        )
        elapsed = time.monotonic() - t0
        await s.aclose()
    assert scores[0] is not None
    assert elapsed >= 0.5, "Retry-After honoured"
    assert srv.requests == 2


async def test_429_longer_than_the_deadline_is_not_waited_for() -> None:
    with FaultServer("429", retry_after=30) as srv:
        s = scorer(srv.url, breaker_threshold=100)
        t0 = time.monotonic()
        with pytest.raises(RateLimited) as info:
            await s.ascore(QUERY, ["Paris."], deadline=Deadline.after(2.0))
        assert time.monotonic() - t0 < 1.0
        assert info.value.retry_after == pytest.approx(30)
        assert srv.requests == 1
        await s.aclose()


async def test_429_through_the_funnel_is_in_provenance() -> None:
    with FaultServer("429", retry_after=30) as srv:
        ranking = await rerank(scorer(srv.url, breaker_threshold=100), deadline=2.0)
    assert_complete(ranking)
    assert ranking.degraded and ranking.reasons == ("backend_error",)
    assert any("rate limited" in e and "retry after 30" in e for e in ranking.info["errors"])


@pytest.mark.parametrize("method", METHODS)
async def test_garbage_json_is_malformed_output(
    method: str, caplog: pytest.LogCaptureFixture
) -> None:
    with FaultServer("garbage") as srv:
        ranking = await rerank(scorer(srv.url, method))
    assert_complete(ranking)
    assert ranking.degraded and ranking.reasons == ("malformed_output",)
    assert any("not valid JSON" in e for e in ranking.info["errors"])
    assert sum("not valid JSON" in w for w in our_warnings(caplog)) == 1


@pytest.mark.parametrize("method", METHODS)
async def test_missing_logprobs_is_malformed_output(method: str) -> None:
    with FaultServer("no_logprobs") as srv:
        ranking = await rerank(scorer(srv.url, method))
    assert_complete(ranking)
    assert ranking.degraded and ranking.reasons == ("malformed_output",)
    assert any("log-probabilities" in e for e in ranking.info["errors"])


async def test_server_dropping_connections_is_unavailable() -> None:
    with FaultServer("drop") as srv:
        ranking = await rerank(scorer(srv.url, breaker_threshold=100))
    assert_complete(ranking)
    assert ranking.reasons == ("backend_error",)
    assert any("closed the connection" in e for e in ranking.info["errors"])


async def test_low_label_mass_leaves_candidates_unscored(caplog: pytest.LogCaptureFixture) -> None:
    with FaultServer("off_label") as srv:
        s = scorer(srv.url)
        ranking = await rerank(s)
    assert_complete(ranking)
    assert ranking.degraded and ranking.reasons == ("malformed_output",)
    assert ranking.llm_scored == 0
    assert s.stats["low_label_mass"] == 4
    assert sum("probability on the labels" in w for w in our_warnings(caplog)) == 1


async def test_error_classes_for_direct_calls() -> None:
    with FaultServer("5xx", status=502) as srv:
        s = scorer(srv.url, max_retries=0)
        with pytest.raises(BackendUnavailable, match="HTTP 502"):
            await s.ascore(QUERY, ["x"], deadline=Deadline.after(2))
        await s.aclose()


# ---------------------------------------------------------------------- several endpoints


async def test_dead_endpoint_is_skipped_and_its_circuit_opens() -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with FaultServer("ok") as live:
        s = scorer([dead, live.url], breaker_threshold=2)
        ranking = await rerank(s, k=6)
        stats = {e["url"]: e for e in s.endpoint_stats()}
    assert not ranking.degraded
    assert ranking.llm_scored == 6
    assert live.requests == 6
    assert stats[dead.removesuffix("/v1")]["breaker"] == "open"


async def test_least_outstanding_spreads_load() -> None:
    with FaultServer("ok", delay=0.1) as a, FaultServer("ok", delay=0.1) as b:
        s = scorer([a.url, b.url], max_concurrency=4)
        scores = await s.ascore(
            QUERY, [c["text"] for c in CANDIDATES] * 2, deadline=Deadline.after(10)
        )
        await s.aclose()
    assert all(x is not None for x in scores)
    assert a.requests + b.requests == 12
    assert 4 <= a.requests <= 8, (a.requests, b.requests)
    assert max(a.max_concurrent, b.max_concurrent) <= 4


async def test_concurrency_is_bounded() -> None:
    with FaultServer("ok", delay=0.05) as srv:
        s = scorer(srv.url, max_concurrency=3)
        scores = await s.ascore(QUERY, ["a b c"] * 12, deadline=Deadline.after(10))
        await s.aclose()
    assert len(scores) == 12
    assert srv.max_concurrent <= 3
    assert srv.max_concurrent >= 2, "requests do run concurrently"


# ---------------------------------------------------------------------- secrets


async def test_the_api_key_never_appears_in_logs_errors_or_repr(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with FaultServer("5xx") as srv:
        s = scorer(srv.url)
        ranking = await rerank(s)
    assert SECRET not in repr(s)
    assert SECRET not in repr(ranking.provenance())
    assert SECRET not in caplog.text
    assert "Bearer" not in caplog.text


def test_api_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_LLM_KEY", SECRET)
    s = OpenAILLMScorer("http://127.0.0.1:1/v1", "fake", api_key_env="MY_LLM_KEY")
    assert "api_key=set" in repr(s)
    assert SECRET not in repr(s)


async def test_endpoint_breaker_opens_then_recovers_after_reset() -> None:
    with FaultServer("5xx", fail_first=3) as srv:
        s = scorer(srv.url, max_retries=0, breaker_threshold=3, breaker_reset=0.3)
        for _ in range(3):
            with pytest.raises(BackendUnavailable):
                await s.ascore(QUERY, ["Paris."], deadline=Deadline.after(2))
        assert s.endpoint_stats()[0]["breaker"] == "open"
        with pytest.raises(CircuitOpen):
            await s.ascore(QUERY, ["Paris."], deadline=Deadline.after(2))
        assert srv.requests == 3, "an open circuit is not even asked"
        await asyncio.sleep(0.35)
        [score] = await s.ascore(
            QUERY, ["Paris is the capital of France."], deadline=Deadline.after(2)
        )
        assert score is not None
        assert s.endpoint_stats()[0]["breaker"] == "closed"
        await s.aclose()

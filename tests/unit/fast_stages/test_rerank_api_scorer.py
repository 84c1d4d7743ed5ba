"""RerankAPIScorer against a contract-test server on 127.0.0.1 and recorded cassettes."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rerank_contract_server import Fault, RerankContractServer, overlap

pytest.importorskip("httpx")

from llmrerank import Funnel
from llmrerank.budget import Deadline
from llmrerank.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    MalformedOutput,
    RateLimited,
)
from llmrerank.scorers.rerank_api import RerankAPIScorer

SECRET = "sk-test-fast-stages-0123456789-DO-NOT-LEAK"
CASSETTES = Path(__file__).resolve().parents[2] / "cassettes" / "rerank_api"
QUERY = "solar panel efficiency"
TEXTS = [
    "wind turbines in the north sea",
    "solar panel efficiency improves with cooling",
    "the efficiency of solar cells",
    "a history of sailing ships",
]
EXPECTED = [overlap(QUERY, t) for t in TEXTS]


def scorer_for(server: RerankContractServer, provider: str, **kw: object) -> RerankAPIScorer:
    return RerankAPIScorer(
        provider,
        model="rerank-test",
        base_url=server.url,
        api_key=SECRET,
        backoff=0.01,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def cohere() -> Iterator[RerankContractServer]:
    with RerankContractServer("cohere", api_key=SECRET) as server:
        yield server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------- the wire formats


@pytest.mark.parametrize(
    ("provider", "flavor", "path"),
    [
        ("cohere", "cohere", "/v2/rerank"),
        ("jina", "jina", "/v1/rerank"),
        ("together", "jina", "/v1/rerank"),
        ("vllm", "vllm", "/v1/rerank"),
    ],
)
async def test_each_provider_format_scores_every_text(
    provider: str, flavor: str, path: str
) -> None:
    with RerankContractServer(flavor, api_key=SECRET) as server:
        scorer = scorer_for(server, provider)
        scores = await scorer.ascore(QUERY, TEXTS, deadline=Deadline.after(5))
        await scorer.aclose()
    assert scores == pytest.approx(EXPECTED)
    (request,) = server.requests
    assert request["path"] == path
    assert request["headers"]["Authorization"] == f"Bearer {SECRET}"
    body = request["body"]
    assert body["model"] == "rerank-test" and body["query"] == QUERY
    assert body["documents"] == TEXTS and body["top_n"] == len(TEXTS)
    assert body.get("return_documents", False) is False


async def test_vllm_cohere_route_and_truncation_option() -> None:
    with RerankContractServer("vllm") as server:
        scorer = RerankAPIScorer(
            "vllm", model="m", base_url=server.url, path="/v2/rerank", max_tokens_per_doc=64
        )
        scores = await scorer.ascore(QUERY, TEXTS, deadline=Deadline.after(5))
        await scorer.aclose()
    assert scores == pytest.approx(EXPECTED)
    assert server.requests[0]["path"] == "/v2/rerank"
    assert server.requests[0]["body"]["truncate_prompt_tokens"] == 64
    assert "Authorization" not in server.requests[0]["headers"]  # vLLM without --api-key


async def test_empty_texts_are_not_sent_and_not_scored(cohere: RerankContractServer) -> None:
    scorer = scorer_for(cohere, "cohere")
    scores = await scorer.ascore(QUERY, ["", TEXTS[1], "   "], deadline=Deadline.after(5))
    assert scores[0] is None and scores[2] is None and scores[1] == pytest.approx(EXPECTED[1])
    assert cohere.requests[0]["body"]["documents"] == [TEXTS[1]]


async def test_large_calls_are_split_into_requests(cohere: RerankContractServer) -> None:
    scorer = scorer_for(cohere, "cohere", max_documents=3, max_concurrency=2)
    texts = TEXTS * 2 + ["solar"]
    scores = await scorer.ascore(QUERY, texts, deadline=Deadline.after(5))
    assert scores == pytest.approx([overlap(QUERY, t) for t in texts])
    assert sorted(len(r["body"]["documents"]) for r in cohere.requests) == [3, 3, 3]


# ---------------------------------------------------------------------- keys


def test_missing_key_names_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COHERE_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="COHERE_API_KEY"):
        RerankAPIScorer("cohere", model="rerank-v3.5")


async def test_key_from_environment_is_secret(
    monkeypatch: pytest.MonkeyPatch, cohere: RerankContractServer, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("COHERE_API_KEY", SECRET)
    scorer = RerankAPIScorer("cohere", model="m", base_url=cohere.url, backoff=0.01)
    assert SECRET not in repr(scorer) and SECRET not in scorer.fingerprint
    assert SECRET not in repr(vars(scorer))
    cohere.faults.extend([Fault(503), Fault(401)])
    caplog.set_level(logging.DEBUG, logger="llmrerank")
    with pytest.raises(BackendError, match="COHERE_API_KEY"):
        await scorer.ascore(QUERY, TEXTS, deadline=Deadline.after(5))
    assert cohere.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert SECRET not in caplog.text


def test_unknown_provider_and_missing_base_url() -> None:
    with pytest.raises(ConfigError, match="unknown rerank provider"):
        RerankAPIScorer("nope", model="m", api_key="k")
    with pytest.raises(ConfigError, match="base_url"):
        RerankAPIScorer("vllm", model="m")


# ---------------------------------------------------------------------- faults and retries


async def test_5xx_is_retried_then_succeeds(cohere: RerankContractServer) -> None:
    cohere.faults.extend([Fault(503), Fault(502)])
    scores = await scorer_for(cohere, "cohere").ascore(QUERY, TEXTS, deadline=Deadline.after(5))
    assert scores == pytest.approx(EXPECTED)
    assert len(cohere.requests) == 3


async def test_429_waits_for_retry_after(cohere: RerankContractServer) -> None:
    cohere.faults.append(Fault(429, headers={"Retry-After": "0.3"}))
    t0 = time.monotonic()
    scores = await scorer_for(cohere, "cohere").ascore(QUERY, TEXTS, deadline=Deadline.after(5))
    assert time.monotonic() - t0 >= 0.3
    assert scores == pytest.approx(EXPECTED) and len(cohere.requests) == 2


async def test_retry_after_beyond_the_deadline_gives_up_at_once(
    cohere: RerankContractServer,
) -> None:
    cohere.faults.append(Fault(429, headers={"Retry-After": "30"}))
    t0 = time.monotonic()
    with pytest.raises(RateLimited) as info:
        await scorer_for(cohere, "cohere").ascore(QUERY, TEXTS, deadline=Deadline.after(2))
    assert time.monotonic() - t0 < 1.0
    assert info.value.retry_after == pytest.approx(30)
    assert len(cohere.requests) == 1


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_client_errors_are_not_retried(cohere: RerankContractServer, status: int) -> None:
    cohere.faults.append(Fault(status))
    with pytest.raises(BackendError, match=str(status)) as info:
        await scorer_for(cohere, "cohere").ascore(QUERY, TEXTS, deadline=Deadline.after(5))
    assert not info.value.retryable
    assert len(cohere.requests) == 1


async def test_retries_stop_after_max_retries(cohere: RerankContractServer) -> None:
    cohere.faults.extend([Fault(500)] * 5)
    with pytest.raises(BackendUnavailable):
        await scorer_for(cohere, "cohere", max_retries=2).ascore(
            QUERY, TEXTS, deadline=Deadline.after(5)
        )
    assert len(cohere.requests) == 3


async def test_connection_refused_is_backend_unavailable() -> None:
    scorer = RerankAPIScorer(
        "vllm", model="m", base_url=f"http://127.0.0.1:{free_port()}", backoff=0.01
    )
    with pytest.raises(BackendUnavailable, match="unreachable"):
        await scorer.ascore(QUERY, TEXTS, deadline=Deadline.after(3))
    await scorer.aclose()


async def test_slow_server_times_out_at_the_deadline(cohere: RerankContractServer) -> None:
    cohere.faults.append(Fault(delay=2.0))
    t0 = time.monotonic()
    with pytest.raises(BackendTimeout):
        await scorer_for(cohere, "cohere").ascore(QUERY, TEXTS, deadline=Deadline.after(0.3))
    assert time.monotonic() - t0 < 1.5


async def test_not_json_is_malformed(cohere: RerankContractServer) -> None:
    cohere.faults.append(Fault(200, body="<html>gateway</html>"))
    with pytest.raises(MalformedOutput):
        await scorer_for(cohere, "cohere").ascore(QUERY, TEXTS, deadline=Deadline.after(5))


async def test_unusable_results_leave_those_texts_unscored(cohere: RerankContractServer) -> None:
    body = (
        '{"results": [{"index": 0, "relevance_score": 0.5}, {"index": 9, "relevance_score": 1},'
        ' {"index": 1, "relevance_score": "high"}, {"index": 2, "relevance_score": NaN}]}'
    )
    cohere.faults.append(Fault(200, body=body))
    scores = await scorer_for(cohere, "cohere").ascore(QUERY, TEXTS, deadline=Deadline.after(5))
    assert scores == [0.5, None, None, None]
    assert scores.reasons == dict.fromkeys((1, 2, 3), "malformed_output")  # type: ignore[attr-defined]


# ---------------------------------------------------------------------- in the funnel


async def test_as_funnel_first_stage(cohere: RerankContractServer) -> None:
    funnel = Funnel(fast=scorer_for(cohere, "cohere"), llm=None)
    ranking = await funnel.arerank(QUERY, TEXTS, deadline=5)
    assert ranking.ids[:2] == ["1", "2"]
    assert sorted(ranking.ids) == ["0", "1", "2", "3"] and not ranking.degraded
    assert ranking.info["fast_scorer"].startswith("rerank-api:cohere:rerank-test")


async def test_funnel_degrades_when_the_api_is_down() -> None:
    scorer = RerankAPIScorer(
        "vllm", model="m", base_url=f"http://127.0.0.1:{free_port()}", backoff=0.01
    )
    cands = [{"id": f"d{i}", "text": t, "retrieval_score": float(i)} for i, t in enumerate(TEXTS)]
    ranking = await Funnel(fast=scorer, llm=None).arerank(QUERY, cands, deadline=3)
    assert ranking.degraded and "fast_stage_failed" in ranking.reasons
    assert ranking.ids == ["d3", "d2", "d1", "d0"]  # the retriever's order stands
    assert [r.stage for r in ranking] == ["input"] * 4


# ---------------------------------------------------------------------- recorded cassettes


@pytest.fixture(scope="module")
def vcr_config() -> dict[str, object]:
    return {
        "filter_headers": ["authorization", "x-api-key", "cookie", "set-cookie"],
        # The recordings come from the contract server on a random port: match without the port.
        "match_on": ["method", "scheme", "path", "query", "body"],
        "record_mode": "once",
        "decode_compressed_response": True,
    }


@pytest.fixture(scope="module")
def vcr_cassette_dir() -> str:
    return str(CASSETTES)


@pytest.mark.vcr
@pytest.mark.parametrize(
    ("provider", "flavor"), [("cohere", "cohere"), ("jina", "jina"), ("vllm", "vllm")]
)
async def test_recorded_exchange_replays(
    provider: str, flavor: str, request: pytest.FixtureRequest
) -> None:
    """Replays tests/cassettes/rerank_api/ (recorded from the contract server, port ignored);
    records it from the contract server when the cassette is missing."""
    recorded = (CASSETTES / f"{request.node.name}.yaml").exists()
    with RerankContractServer(flavor, api_key=SECRET) as server:
        scorer = scorer_for(server, provider)
        scores = await scorer.ascore(QUERY, TEXTS, deadline=Deadline.after(5))
        await scorer.aclose()
    assert scores == pytest.approx(EXPECTED)
    if recorded:
        assert server.requests == [], "the cassette was not replayed"


def test_cassettes_hold_no_secret() -> None:
    files = sorted(CASSETTES.glob("*.yaml"))
    assert len(files) >= 3, "the recorded cassettes are missing"
    for path in files:
        text = path.read_text()
        assert SECRET not in text, path
        assert "authorization" not in text.lower(), path
        assert "relevance_score" in text, path

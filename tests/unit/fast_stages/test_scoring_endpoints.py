"""Scoring endpoints (vLLM /v1/score and /v1/rerank, TEI and Infinity /rerank) as the funnel's
LLM stage, against the contract server on 127.0.0.1: formats, deadline, faults, breaker."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from rerank_contract_server import Fault, RerankContractServer, overlap

pytest.importorskip("httpx")
pytest.importorskip("tenacity")

from llmrerank import Funnel
from llmrerank.budget import Deadline
from llmrerank.errors import BackendUnavailable, ConfigError
from llmrerank.prompts import PROFILES
from llmrerank.scorers.rerank_api import RerankAPIScorer

QUERY = "solar panel efficiency"
TEXTS = [
    "wind turbines in the north sea",
    "solar panel efficiency improves with cooling",
    "the efficiency of solar cells",
    "a history of sailing ships",
]
EXPECTED = [overlap(QUERY, t) for t in TEXTS]


@pytest.fixture
def score_server() -> Iterator[RerankContractServer]:
    with RerankContractServer("score") as server:
        yield server


@pytest.mark.parametrize(
    ("provider", "flavor", "path"),
    [
        ("vllm-score", "score", "/v1/score"),
        ("vllm", "vllm", "/v1/rerank"),
        ("tei", "tei", "/rerank"),
        ("infinity", "vllm", "/rerank"),
    ],
)
async def test_each_scoring_format_scores_every_text(provider: str, flavor: str, path: str) -> None:
    with RerankContractServer(flavor) as server:
        scorer = RerankAPIScorer(provider, model="reranker", base_url=server.url, backoff=0.01)
        scores = await scorer.ascore(QUERY, TEXTS, deadline=Deadline.after(5))
        await scorer.aclose()
    assert scores == pytest.approx(EXPECTED)
    [req] = server.requests
    assert req["path"] == path
    body = req["body"]
    if provider == "vllm-score":
        assert body == {"model": "reranker", "text_1": QUERY, "text_2": TEXTS}
    elif provider == "tei":
        assert body["query"] == QUERY and body["texts"] == TEXTS and "model" not in body
    else:
        assert body["documents"] == TEXTS and body["top_n"] == len(TEXTS)


async def test_in_the_llm_slot_the_endpoint_orders_the_top_k(
    score_server: RerankContractServer,
) -> None:
    scorer = RerankAPIScorer("vllm-score", model="r", base_url=score_server.url, backoff=0.01)
    # TEXTS is a bag, not a retriever's ranking
    ranking = await Funnel(llm=scorer, k=4, input_ranked=False).arerank(QUERY, TEXTS, deadline=5)
    assert ranking.ids[:2] == ["1", "2"] and not ranking.degraded
    assert [r.stage for r in ranking][:2] == ["llm", "llm"]
    assert ranking.info["llm_scorer"].startswith("rerank-api:vllm-score:r")
    await scorer.aclose()


async def test_a_profile_wraps_query_and_documents_in_the_model_prompt(
    score_server: RerankContractServer,
) -> None:
    scorer = RerankAPIScorer(
        "vllm-score", model="qwen3", base_url=score_server.url, profile="qwen3-reranker"
    )
    assert scorer.takes_instruction
    await Funnel(llm=scorer, k=2).arerank(
        QUERY, TEXTS[:2], deadline=5, instruction="Find engineering facts"
    )
    body = score_server.requests[0]["body"]
    pair = body["text_1"] + body["text_2"][0]
    expected = PROFILES["qwen3-reranker"].with_instruction("Find engineering facts")
    assert pair == expected.render(QUERY, body["text_2"][0][: -len(expected.suffix)])
    assert body["text_1"].endswith(f"<Query>: {QUERY}\n<Document>: ")
    assert "<Instruct>: Find engineering facts\n" in body["text_1"]
    assert body["text_2"][0][: -len(expected.suffix)] in TEXTS
    assert body["text_2"][0].endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    await scorer.aclose()
    with pytest.raises(ConfigError, match="literal prompts only"):
        RerankAPIScorer("vllm-score", model="m", base_url="http://h.test", profile="chat-instruct")


async def test_5xx_is_retried_within_the_deadline(score_server: RerankContractServer) -> None:
    score_server.faults.extend([Fault(503)])
    scorer = RerankAPIScorer("vllm-score", model="r", base_url=score_server.url, backoff=0.01)
    # TEXTS is a bag, not a retriever's ranking
    ranking = await Funnel(llm=scorer, k=4, input_ranked=False).arerank(QUERY, TEXTS, deadline=5)
    assert not ranking.degraded and len(score_server.requests) == 2
    await scorer.aclose()


async def test_a_slow_endpoint_degrades_at_the_deadline(score_server: RerankContractServer) -> None:
    score_server.faults.append(Fault(delay=2.0))
    scorer = RerankAPIScorer("vllm-score", model="r", base_url=score_server.url, backoff=0.01)
    t0 = time.monotonic()
    ranking = await Funnel(llm=scorer, k=4).arerank(QUERY, TEXTS, deadline=0.4)
    elapsed = time.monotonic() - t0
    assert elapsed < 1.5
    assert ranking.degraded and sorted(ranking.ids) == ["0", "1", "2", "3"]
    assert all(r.stage != "llm" for r in ranking)
    await scorer.aclose()


async def test_the_breaker_opens_after_repeated_failures(
    score_server: RerankContractServer,
) -> None:
    score_server.faults.extend([Fault(500)] * 3)
    scorer = RerankAPIScorer(
        "vllm-score",
        model="r",
        base_url=score_server.url,
        max_retries=0,
        breaker_threshold=2,
        breaker_reset=30,
    )
    for _ in range(2):
        with pytest.raises(BackendUnavailable):
            await scorer.ascore(QUERY, TEXTS, deadline=Deadline.after(5))
    assert scorer.endpoint_stats()[0]["breaker"] == "open"
    sent = len(score_server.requests)
    ranking = await Funnel(llm=scorer, k=4).arerank(QUERY, TEXTS, deadline=2)
    assert ranking.degraded and len(score_server.requests) == sent  # nothing sent while open
    await scorer.aclose()


async def test_replicas_share_the_load_and_skip_a_dead_one() -> None:
    with RerankContractServer("score") as a, RerankContractServer("score") as b:
        dead = "http://127.0.0.1:9"  # discard port: refused
        scorer = RerankAPIScorer(
            "vllm-score", model="r", base_url=[dead, a.url, b.url], backoff=0.01, max_documents=1
        )
        scores = await scorer.ascore(QUERY, TEXTS, deadline=Deadline.after(5))
        await scorer.aclose()
    assert scores == pytest.approx(EXPECTED)
    assert a.requests and b.requests


async def test_server_instruction_goes_in_the_request_field(
    score_server: RerankContractServer,
) -> None:
    scorer = RerankAPIScorer(
        "vllm-score", model="q", base_url=score_server.url, server_instruction=True
    )
    assert scorer.takes_instruction
    funnel = Funnel(llm=scorer, k=2)
    await funnel.arerank(QUERY, TEXTS[:2], deadline=5)
    await funnel.arerank(QUERY, TEXTS[:2], deadline=5, instruction="Find engineering facts")
    first, second = (r["body"] for r in score_server.requests)
    assert "instruction" not in first and first["text_1"] == QUERY
    assert second["instruction"] == "Find engineering facts" and second["text_1"] == QUERY
    await scorer.aclose()
    with pytest.raises(ConfigError, match="without profile="):
        RerankAPIScorer(
            "vllm-score",
            model="q",
            base_url="http://h.test",
            server_instruction=True,
            profile="qwen3-reranker",
        )

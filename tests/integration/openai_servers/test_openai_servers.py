"""OpenAILLMScorer against real OpenAI-compatible servers (llama-cpp-python, vLLM) or their
cassettes (see conftest.py for the modes). SmolLM2-135M on hand-written, clear cases."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from llmrerank import Deadline, Funnel
from llmrerank.errors import ConfigError
from llmrerank.prompts import JudgementTemplate
from llmrerank.scorers import OpenAILLMScorer

pytest.importorskip("httpx")
pytest.importorskip("tenacity")

if TYPE_CHECKING:
    from integration.openai_servers.conftest import Server

pytestmark = [pytest.mark.integration, pytest.mark.vcr]

QUERY = "what is the capital of france"
RELEVANT = "Paris is the capital and largest city of France."
IRRELEVANT = [
    "Bananas are yellow fruit rich in potassium.",
    "The stock market fell sharply on Monday.",
]
CASES = [
    (QUERY, [RELEVANT, *IRRELEVANT]),
    (
        "who wrote romeo and juliet",
        [
            "Romeo and Juliet is a tragedy written by William Shakespeare.",
            "Mount Everest is the highest mountain on Earth.",
            "Coffee beans are roasted before brewing.",
        ],
    ),
]


def make(server: Server, **kw: object) -> OpenAILLMScorer:
    return OpenAILLMScorer(server.url, server.model, **kw)  # type: ignore[arg-type]


async def scores_for(s: OpenAILLMScorer, query: str, texts: list[str]) -> list[float | None]:
    try:
        return await s.ascore(query, texts, deadline=Deadline.after(300))
    finally:
        await s.aclose()


async def test_query_likelihood_ranks_the_relevant_passage_first(server: Server) -> None:
    s = make(server, method="query_likelihood")
    for query, texts in CASES[:1] if server.kind == "llama-cpp" else CASES:
        scores = await scores_for(s, query, texts)
        assert all(x is not None and math.isfinite(x) and x < 0 for x in scores), scores
        assert scores[0] > max(scores[1:]), scores  # type: ignore[operator]
    if server.live:
        kind = {"llama-cpp": "llama-cpp-python", "vllm": "vllm"}[server.kind]
        assert s.server_info["kind"] == kind


async def test_judgement_ranks_the_relevant_passage_first(server: Server) -> None:
    s = make(server, method="judgement")
    for query, texts in CASES:
        scores = await scores_for(s, query, texts)
        assert all(x is None or 0.0 <= x <= 1.0 for x in scores), scores
        assert scores[0] is not None
        assert scores[0] > max(x for x in scores[1:] if x is not None), scores
    # the label set was checked against the server's tokenizer: one token each
    assert set(s.server_info["label_token_ids"]) == {" yes", " no"}


async def test_chat_judgement_reads_top_logprobs(server: Server) -> None:
    s = make(server, method="judgement", api="chat")
    scores = await scores_for(s, QUERY, [RELEVANT, *IRRELEVANT])
    assert any(x is not None for x in scores), "the chat reply's first token carries the labels"
    assert all(x is None or 0.0 <= x <= 1.0 for x in scores)
    assert set(s.server_info["label_token_ids"]) == {" yes", " no"}


async def test_multi_token_labels_are_refused(server: Server) -> None:
    template = JudgementTemplate(labels={" definitely relevant": 1.0, " no": 0.0})
    s = make(server, method="judgement", template=template)
    with pytest.raises(ConfigError, match="single token"):
        await s.avalidate()
    # a refused configuration is not retried against the server on every call
    with pytest.raises(ConfigError):
        await s.ascore(QUERY, [RELEVANT], deadline=Deadline.after(30))
    await s.aclose()


async def test_funnel_with_the_server_as_llm_stage(server: Server) -> None:
    s = make(server, method="query_likelihood")
    funnel = Funnel(llm=s, k=4)  # the whole set: the cassette must not depend on BM25's window
    candidates = [
        {"id": "stock", "text": IRRELEVANT[1]},
        {"id": "paris", "text": RELEVANT},
        {"id": "banana", "text": IRRELEVANT[0]},
        {"id": "france-wine", "text": "France is famous for its wine and cheese."},
    ]
    try:
        ranking = await funnel.arerank(QUERY, candidates)
    finally:
        await s.aclose()
    assert sorted(ranking.ids) == sorted(c["id"] for c in candidates)
    assert not ranking.degraded, ranking.reasons
    assert ranking.k == 4 and ranking.llm_scored == 4
    assert ranking.ids[0] == "paris"
    assert ranking.info["llm_scorer"] == f"openai:{server.model}:query_likelihood:ql-v1"


async def test_vllm_prompt_logprobs_agree_with_echo(vllm: Server) -> None:
    server = vllm
    texts = [RELEVANT, IRRELEVANT[0]]
    echo = await scores_for(make(server, ql_source="echo"), QUERY, texts)
    prompt = await scores_for(make(server, ql_source="prompt_logprobs"), QUERY, texts)
    for a, b in zip(echo, prompt, strict=True):
        assert a is not None and b is not None
        assert a == pytest.approx(b, abs=1e-3)


async def test_vllm_judgement_uses_label_restricted_logprobs(vllm: Server) -> None:
    server = vllm
    # top_logprobs=1: without logprob_token_ids at most one label would come back
    s = make(server, method="judgement", top_logprobs=1)
    scores = await scores_for(s, QUERY, [RELEVANT, *IRRELEVANT])
    assert all(x is not None and 0.0 < x < 1.0 for x in scores), scores
    assert s.server_info["kind"] == "vllm"


def test_no_secret_in_any_cassette(cassette_root: Path, api_secret: str) -> None:
    files = list(cassette_root.rglob("*.yaml"))
    assert files, f"no cassettes under {cassette_root}"
    for path in files:
        text = path.read_text()
        assert api_secret not in text, path
        assert "Bearer" not in text, path
        assert "authorization:" not in text.lower(), path

"""``llmrerank serve``: the per-request task instruction reaches the LLM stage's prompt
(a Qwen3-Reranker profile behind a vLLM-style /v1/score contract server on loopback)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from llmrerank import Funnel
from llmrerank.scorers.rerank_api import RerankAPIScorer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "fast_stages"))
from rerank_contract_server import RerankContractServer

QUERY = "solar panel efficiency"
DOCS = ["solar panel efficiency improves with cooling", "a history of sailing ships"]


@pytest.mark.integration
def test_request_instruction_reaches_the_prompt(serve: Any) -> None:
    with RerankContractServer("score") as scores:
        llm = RerankAPIScorer(
            "vllm-score", model="q", base_url=scores.url, profile="qwen3-reranker"
        )
        server = serve(Funnel(llm=llm, k=2, instruction="Find physics facts"))
        r = httpx.post(
            f"{server.url}/v1/rerank",
            json={"query": QUERY, "documents": DOCS, "instruction": "Find engineering facts"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["index"] == 0
        r = httpx.post(f"{server.url}/v1/rerank", json={"query": QUERY, "documents": DOCS})
        assert r.status_code == 200
        with httpx.stream(
            "POST",
            f"{server.url}/v1/rerank/stream",
            json={"query": QUERY, "documents": DOCS, "instruction": "Find ship facts"},
        ) as s:
            assert s.status_code == 200 and "event: final" in s.read().decode()
    sent = [req["body"]["text_1"] for req in scores.requests]
    assert "<Instruct>: Find engineering facts\n" in sent[0]
    assert "<Instruct>: Find physics facts\n" in sent[1]  # the funnel's default
    assert "<Instruct>: Find ship facts\n" in sent[2]


@pytest.mark.integration
def test_an_instruction_the_scorer_cannot_take_is_a_422(serve: Any) -> None:
    server = serve(Funnel(llm=None))
    r = httpx.post(
        f"{server.url}/v1/rerank", json={"query": QUERY, "documents": DOCS, "instruction": "x"}
    )
    assert r.status_code == 422 and "instruction" in r.text
    r = httpx.post(
        f"{server.url}/v1/rerank", json={"query": QUERY, "documents": DOCS, "instruction": ""}
    )
    assert r.status_code == 422

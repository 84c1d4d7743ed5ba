"""Always live (no cassette): llama-cpp-python's server started on 127.0.0.1 by the test session,
serving the embedded SmolLM2 GGUF. Skipped when ``llmrerank[llamacpp-server]`` is missing."""

from __future__ import annotations

import time

import pytest
from llmrerank import Deadline, Funnel
from llmrerank.errors import BackendError
from llmrerank.scorers import OpenAILLMScorer
from llmrerank.testing_servers import ManagedServer

pytest.importorskip("httpx")
pytest.importorskip("tenacity")

pytestmark = pytest.mark.integration

QUERY = "what is the capital of france"
TEXTS = [
    "Paris is the capital and largest city of France.",
    "Bananas are yellow fruit rich in potassium.",
    "The stock market fell sharply on Monday.",
]


async def test_both_methods_rank_the_relevant_passage_first(
    llama_cpp_live: ManagedServer, api_secret: str
) -> None:
    for method, texts in (("judgement", TEXTS), ("query_likelihood", TEXTS[:2])):
        async with OpenAILLMScorer(
            llama_cpp_live.url, "smollm2", method=method, api_key=api_secret
        ) as s:
            scores = await s.ascore(QUERY, texts, deadline=Deadline.after(120))
            assert s.server_info["kind"] == "llama-cpp-python"
        assert all(x is not None for x in scores), (method, scores)
        assert scores[0] > max(scores[1:]), (method, scores)  # type: ignore[operator]


async def test_a_wrong_key_is_refused_without_echoing_it(llama_cpp_live: ManagedServer) -> None:
    wrong = "sk-wrong-key-that-must-not-be-echoed"
    async with OpenAILLMScorer(
        llama_cpp_live.url, "smollm2", method="judgement", api_key=wrong
    ) as s:
        with pytest.raises(BackendError, match="not authorised") as info:
            await s.ascore(QUERY, TEXTS[:1], deadline=Deadline.after(60))
    assert wrong not in str(info.value)


async def test_deadline_cuts_a_real_server_and_the_ranking_is_complete(
    llama_cpp_live: ManagedServer, api_secret: str
) -> None:
    # query likelihood on llama-cpp-python takes seconds per request on 2 cores
    s = OpenAILLMScorer(llama_cpp_live.url, "smollm2", api_key=api_secret)
    await s.avalidate()
    funnel = Funnel(llm=s, k=3)
    t0 = time.monotonic()
    ranking = await funnel.arerank(QUERY, [*TEXTS, "France is in Europe."], deadline=0.5)
    elapsed = time.monotonic() - t0
    await s.aclose()
    assert elapsed < 0.5 + 0.5, elapsed
    assert sorted(ranking.ids) == ["0", "1", "2", "3"]
    assert ranking.degraded and "deadline" in ranking.reasons
    assert ranking.llm_scored < 3
    assert s.in_flight == 0

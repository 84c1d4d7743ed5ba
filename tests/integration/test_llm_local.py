"""The embedded local LLM scorer on the real SmolLM2-135M-Instruct, on hand-written cases.

One model load per module (the judgement scorer shares it through ``variant``). Texts are short
so the module stays within about a minute on 2 cores.
"""

from __future__ import annotations

import math
import time

import pytest

pytest.importorskip("torch", reason="llmrerank[local] is not installed")
pytest.importorskip("transformers", reason="llmrerank[local] is not installed")

from llmrerank import ConfigError, Deadline, Funnel
from llmrerank.prompts import GRADE_LABELS, JudgementTemplate
from llmrerank.scorers.llm_local import DEFAULT_METHOD, LocalLLMScorer

pytestmark = pytest.mark.slow

# (query, relevant passage, two clearly irrelevant passages)
CASES = [
    (
        "What causes the seasons on Earth?",
        "The seasons are caused by the tilt of Earth's axis, which changes how directly sunlight "
        "strikes each hemisphere during the year.",
        [
            "A sourdough starter needs flour, water and regular feeding to stay active.",
            "The offside rule in football stops attackers from waiting behind the defenders.",
        ],
    ),
    (
        "How do bees make honey?",
        "Bees collect nectar from flowers, carry it to the hive and fan it with their wings until "
        "most of the water evaporates and the nectar becomes honey.",
        [
            "The stock exchange closed higher after strong bank earnings on Friday.",
            "Python lists are mutable sequences that can hold items of any type.",
        ],
    ),
    (
        "What is the boiling point of water at sea level?",
        "At sea level pure water boils at 100 degrees Celsius, which is 212 degrees Fahrenheit.",
        [
            "The Great Wall of China stretches for thousands of kilometres across the north.",
            "Jazz music grew up in New Orleans in the early twentieth century.",
        ],
    ),
    (
        "Who painted the Mona Lisa?",
        "The Mona Lisa was painted by the Italian artist Leonardo da Vinci in the early 1500s.",
        [
            "Glaciers form where more snow falls each winter than melts each summer.",
            "A balanced diet includes vegetables, proteins and whole grains.",
        ],
    ),
]


@pytest.fixture(scope="module")
def ql() -> LocalLLMScorer:
    from llmrerank.models import smollm2_path

    try:
        smollm2_path()
    except ConfigError as exc:
        pytest.skip(f"embedded model unavailable: {exc}")
    # float32: these tests check that batching and padding leave scores unchanged, which bf16
    # rounding does not promise (the default dtype is bf16 where the CPU has it)
    scorer = LocalLLMScorer(method="query_likelihood", threads=1, dtype="float32")
    scorer.load()
    return scorer


@pytest.fixture(scope="module")
def judge(ql: LocalLLMScorer) -> LocalLLMScorer:
    scorer = ql.variant(method="judgement")
    scorer.load()
    return scorer


@pytest.fixture(scope="module")
def default(ql: LocalLLMScorer, judge: LocalLLMScorer) -> LocalLLMScorer:
    return ql if DEFAULT_METHOD == "query_likelihood" else judge


@pytest.fixture(scope="module")
def ql_scores(ql: LocalLLMScorer) -> list[list[float | None]]:
    """Query-likelihood scores of [relevant, irrelevant, irrelevant] per case."""
    return [ql.score(q, [rel, *irr]) for q, rel, irr in CASES]


def test_default_method_ranks_the_relevant_passage_first(default):
    for query, rel, irr in CASES:
        scores = default.score(query, [rel, *irr])
        assert all(s is not None and math.isfinite(s) for s in scores), scores
        assert scores[0] > max(scores[1:]), (query, scores)  # type: ignore[type-var]


def test_query_likelihood_scores_are_mean_log_probabilities(ql_scores):
    for scores in ql_scores:
        assert all(s is not None and math.isfinite(s) and s < 0.0 for s in scores)


def test_judgement_scores_are_expected_relevance_or_flagged_malformed(judge):
    # SmolLM2-135M is a weak judge: on these cases it often puts under 5% of its probability on
    # " yes"/" no" (docs/benchmarks/llm_local.md), and those answers must come back as None,
    # counted as malformed, never as an invented score
    scorer = judge.variant()  # shares the model, fresh stats
    scores = [s for q, rel, irr in CASES for s in scorer.score(q, [rel, *irr])]
    assert all(s is None or 0.0 <= s <= 1.0 for s in scores), scores
    stats = scorer.stats
    assert stats.judged == len(scores)
    assert stats.malformed == sum(s is None for s in scores)
    assert stats.scored == len(scores) - stats.malformed
    assert stats.mean_label_mass is not None and 0.0 < stats.mean_label_mass < 1.0


async def test_malformed_judgements_reach_provenance_as_malformed_output(judge):
    query, rel, irr = CASES[0]
    scores = await judge.ascore(query, [rel, *irr], deadline=Deadline.never())
    assert len(scores) == 3
    assert {i for i, s in enumerate(scores) if s is None} == set(scores.reasons)
    assert set(scores.reasons.values()) <= {"malformed_output"}


def test_a_multi_token_label_set_is_refused(ql):
    bad = ql.variant(method="judgement", judgement=JudgementTemplate(labels=GRADE_LABELS))
    with pytest.raises(ConfigError, match="' 0'"):
        bad.load()


def test_batching_padding_and_prefix_reuse_do_not_change_scores(ql, judge):
    query, rel, irr = CASES[0]
    texts = [rel, irr[0] + " " + irr[1], irr[1]]  # unequal lengths: padding is exercised
    for scorer in (ql, judge):
        one = scorer.score(query, texts)
        batched = scorer.variant(micro_batch=3, bucket=False).score(query, texts)
        assert batched == pytest.approx(one, abs=2e-4)
    reused = judge.variant(prefix_cache=True, micro_batch=2).score(query, texts)
    assert reused == pytest.approx(judge.score(query, texts), abs=2e-4)


async def test_a_deadline_mid_way_leaves_unreached_texts_unscored(ql):
    query, rel, irr = CASES[1]
    texts = [rel, *irr] * 4  # 12 texts
    t0 = time.monotonic()
    await ql.ascore(query, texts[:1], deadline=Deadline.never())
    one = time.monotonic() - t0
    budget = 3 * one  # room for about three of the twelve
    start = time.monotonic()
    scores = await ql.ascore(query, texts, deadline=Deadline.after(budget))
    elapsed = time.monotonic() - start
    assert elapsed < budget + 3.0
    assert len(scores) == len(texts)
    assert any(s is None for s in scores), "all 12 texts scored in the time of about 3"
    assert all(s is None or math.isfinite(s) for s in scores)


async def test_the_funnel_returns_every_candidate_once_with_the_relevant_one_first(default):
    query, rel, irr = CASES[2]
    others = [p for _, r, i in CASES[:2] for p in (r, *i)]
    cands = [{"id": f"d{i}", "text": t} for i, t in enumerate([*irr, *others, rel])]
    funnel = Funnel(llm=default, k=4, deadline=None)
    ranking = await funnel.arerank(query, cands, input_ranked=False)  # a bag, not a ranking
    assert sorted(ranking.ids) == sorted(c["id"] for c in cands)
    assert len(ranking.ids) == len(cands)
    assert ranking.results[0].text == rel
    assert ranking.llm_scored == 4
    assert not ranking.degraded
    assert ranking.info["llm_scorer"] == default.fingerprint


async def test_the_funnel_degrades_at_a_deadline_and_keeps_every_candidate(ql):
    query, rel, irr = CASES[3]
    texts = [rel, *irr] * 4
    cands = [{"id": str(i), "text": t} for i, t in enumerate(texts)]
    t0 = time.monotonic()
    await ql.ascore(query, texts[:1], deadline=Deadline.never())
    budget = 3 * (time.monotonic() - t0)  # room for about three of the twelve
    funnel = Funnel(llm=ql.variant(batch_size=4), k=12)
    start = time.monotonic()
    ranking = await funnel.arerank(query, cands, deadline=budget)
    elapsed = time.monotonic() - start
    assert elapsed < budget + 3.0
    assert sorted(ranking.ids, key=int) == [c["id"] for c in cands]
    assert ranking.llm_scored < 12
    assert ranking.degraded
    assert ranking.reasons == ("deadline",)
    unscored = [r for r in ranking if r.llm_score is None]
    assert len(unscored) == 12 - ranking.llm_scored
    assert all(r.stage == "fast" for r in unscored)

"""Never below the retriever: the default fast stage keeps the retriever's ranking as a signal."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llmrerank import (
    PRESETS,
    BackendUnavailable,
    BM25Scorer,
    Candidate,
    ConfigError,
    Funnel,
    Fusion,
    InputError,
    RetrieverFusionScorer,
)
from llmrerank.budget import Deadline
from llmrerank.scorers.retriever_fusion import average_ranks
from llmrerank.testing import ScriptedScorer

# A retriever's ranking of 8 texts, none of which holds a term of QUERY: BM25 has no signal.
NO_SIGNAL = [f"document number {w} about nothing in particular" for w in "abcdefgh"]
QUERY = "kitten"


def _docs_with_scores(scores):
    return [
        Candidate(id=str(i), text=t, retrieval_score=s)
        for i, (t, s) in enumerate(zip(NO_SIGNAL, scores, strict=True))
    ]


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("with_scores", [False, True])
def test_equal_llm_and_signal_free_bm25_keep_the_retrievers_order(preset, with_scores):
    llm = ScriptedScorer(lambda q, t: 0.25)
    funnel = PRESETS[preset].build(llm=llm, deadline=None, k=5)
    docs = _docs_with_scores([10.0 - i for i in range(8)]) if with_scores else NO_SIGNAL
    ranking = funnel.rerank(QUERY, docs)
    assert ranking.ids == [str(i) for i in range(8)]
    assert ranking.llm_scored == 5 and not ranking.degraded


def test_retrieval_scores_decide_over_input_position_when_every_candidate_has_one():
    # scores say the reverse of the input order: the scores are the retriever's ranking
    docs = _docs_with_scores([float(i) for i in range(8)])
    ranking = Funnel().rerank(QUERY, docs)
    assert ranking.ids == [str(i) for i in reversed(range(8))]


def test_moving_a_candidate_up_the_input_raises_its_fused_fast_score():
    texts = [
        "kitten care for a young kitten",
        "cats and kittens",
        "a kitten",
        "dogs",
        "kitten food",
        "birds",
    ]
    scorer = RetrieverFusionScorer()
    target = "a kitten"

    def fast_score_at(position: int) -> float:
        order = [t for t in texts if t != target]
        order.insert(position, target)
        cands = [Candidate(id=t, text=t) for t in order]
        scores = _run(scorer.ascore_candidates(QUERY, cands, deadline=Deadline.never()))
        return scores[position]

    by_position = [fast_score_at(p) for p in range(len(texts))]
    assert all(a > b for a, b in itertools.pairwise(by_position)), by_position
    # ... and the text scorer still counts: the same position, no query term, scores lower
    cands = [Candidate(id=str(i), text=t) for i, t in enumerate(["dogs", "kitten", "birds"])]
    s = _run(scorer.ascore_candidates(QUERY, cands, deadline=Deadline.never()))
    rerun = [Candidate(id=str(i), text=t) for i, t in enumerate(["dogs", "birds", "birds"])]
    s2 = _run(scorer.ascore_candidates(QUERY, rerun, deadline=Deadline.never()))
    assert s[1] > s2[1]


def test_input_ranked_false_ignores_positions():
    docs = ["dogs and birds", "more dogs", "a kitten", "birds"]
    ranked = Funnel().rerank(QUERY, docs)
    bag = Funnel().rerank(QUERY, docs, input_ranked=False)
    assert bag.ids[0] == "2"
    assert bag.info["input_ranked"] is False and ranked.info["input_ranked"] is True
    # with no query term anywhere and no order, BM25 ties: the fused scores carry no position
    scores = [r.fast_score for r in Funnel(input_ranked=False).rerank(QUERY, NO_SIGNAL)]
    assert len(set(scores)) == 1
    with pytest.raises(InputError, match="input_ranked"):
        Funnel().rerank(QUERY, docs, input_ranked="yes")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="input_ranked"):
        Funnel(input_ranked=1)  # type: ignore[arg-type]


def test_bm25_over_the_candidates_still_lifts_a_lexical_match():
    # the retriever's order dominates near the top (measured: docs/benchmarks/fast_fusion.md);
    # deeper down, where ranks are close, the only text with the query term climbs
    docs = [f"filler text {i}" for i in range(30)]
    docs[25] = "kitten"
    ids = Funnel().rerank(QUERY, docs).ids
    assert ids.index("25") < 25
    assert ids[:5] == ["0", "1", "2", "3", "4"]
    # with more weight on BM25 it goes first
    lexical = Funnel(fast=RetrieverFusionScorer(retriever_weight=0.2)).rerank(QUERY, docs)
    assert lexical.ids[0] == "25"


def test_a_failing_text_scorer_falls_back_to_the_retrievers_order():
    broken = ScriptedScorer(fail=BackendUnavailable("down"))
    funnel = Funnel(fast=RetrieverFusionScorer(broken))
    docs = ["kitten", "dogs", "a kitten", "birds"]
    ranking = funnel.rerank(QUERY, docs)
    assert ranking.ids == ["0", "1", "2", "3"]
    assert "fast_stage_failed" in ranking.reasons


def test_zscore_method_and_weights():
    zs = RetrieverFusionScorer(method="zscore", retriever_weight=0.7)
    assert zs.fingerprint.startswith("retriever_fusion(zscore,w=0.7)+bm25:")
    fused = zs.fuse([3.0, 2.0, 1.0], [0.0, 0.0, 0.0])
    assert fused == sorted(fused, reverse=True)
    # a missing text score counts as the lowest present one
    fused = zs.fuse([1.0, 1.0, 1.0], [2.0, None, 1.0])
    assert fused[0] > fused[1] and math.isclose(fused[1], fused[2])  # type: ignore[operator]
    only_text = RetrieverFusionScorer(retriever_weight=0.0)
    cands = [Candidate(id=str(i), text=t) for i, t in enumerate(["dogs", "kitten"])]
    got = _run(only_text.ascore_candidates(QUERY, cands, deadline=Deadline.never()))
    want = BM25Scorer().score(QUERY, ["dogs", "kitten"])
    assert got == want
    for bad in (-0.1, 1.5, math.nan, True):
        with pytest.raises(ConfigError, match="retriever_weight"):
            RetrieverFusionScorer(retriever_weight=bad)
    with pytest.raises(ConfigError, match="method"):
        RetrieverFusionScorer(method="max")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="rrf_c"):
        RetrieverFusionScorer(rrf_c=0)


def test_average_ranks_share_ties():
    assert average_ranks([3.0, 1.0, 3.0, None, 2.0]) == [1.5, 4.0, 1.5, 5.0, 3.0]
    assert average_ranks([0.0, 0.0, 0.0]) == [2.0, 2.0, 2.0]
    assert average_ranks([]) == []


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.sampled_from(["kitten", "cat", "dog", "young kitten", "", "bird kitten"]), max_size=12
    ),
    st.booleans(),
    st.integers(0, 5),
    st.booleans(),
)
def test_every_candidate_comes_back_exactly_once(texts, with_scores, k, ranked):
    rng = random.Random(len(texts))
    docs = [
        {"id": f"d{i}", "text": t, **({"retrieval_score": rng.random()} if with_scores else {})}
        for i, t in enumerate(texts)
    ]
    llm = ScriptedScorer(lambda q, t: float(len(t)))
    ranking = Funnel(llm=llm, k=k).rerank("young kitten", docs, input_ranked=ranked)
    assert sorted(ranking.ids) == sorted(d["id"] for d in docs)
    scores = [r.score for r in ranking]
    assert scores == sorted(scores, reverse=True)


def _run(coro):
    import asyncio

    return asyncio.run(coro)


def test_a_window_cut_short_ranks_like_the_part_the_llm_answered():
    # the LLM loves d3, but d1 is still being scored at the deadline: the window is as deep as
    # the LLM got (d0), so d3 keeps its fast-stage place instead of jumping over d1 and d2
    docs = [f"filler text number {i}" for i in range(6)]
    llm = ScriptedScorer(
        lambda q, t: 100.0 if t.endswith("3") else 0.0,
        latency=lambda: 0.0,
    )
    slow = {"filler text number 1"}

    class Gap(ScriptedScorer):
        async def ascore(self, query, texts, *, deadline):
            import asyncio

            if any(t in slow for t in texts):
                await asyncio.sleep(5)
            return await super().ascore(query, texts, deadline=deadline)

    gap = Gap(llm.score_fn)
    strong = Fusion(llm_weight=0.9)
    ranking = Funnel(llm=gap, k=4, concurrency=4, deadline=0.4, fusion=strong).rerank(
        "kitten", docs
    )
    assert ranking.ids == ["0", "1", "2", "3", "4", "5"]
    assert "deadline" in ranking.reasons
    d3 = ranking.by_id("3") if hasattr(ranking, "by_id") else ranking[3]
    assert d3.llm_score == 100.0 and d3.stage == "fast"
    assert ranking[0].stage == "llm"
    # the same scores with nothing pending: d3 climbs
    full = Funnel(llm=ScriptedScorer(llm.score_fn), k=4, concurrency=4, fusion=strong).rerank(
        "kitten", docs
    )
    assert full.ids[0] == "3"

"""The embedded all-MiniLM-L6-v2 as a first stage (real model, so ``slow``; a handful of texts)."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("sentence_transformers")

from llmrerank import Funnel
from llmrerank.budget import Deadline
from llmrerank.scorers import BM25Scorer, DenseScorer, HybridScorer

pytestmark = pytest.mark.slow

QUERY = "how do plants turn sunlight into energy"
TEXTS = [
    "The stock exchange closed lower on Friday after weak earnings.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "A recipe for sourdough bread with a crisp crust.",
    "Chlorophyll in leaves absorbs light to drive the synthesis of sugars.",
    "The football match ended in a draw.",
]


@pytest.fixture(scope="module")
def dense() -> DenseScorer:
    import torch

    torch.set_num_threads(2)
    scorer = DenseScorer()  # the embedded model, offline
    scorer.load()
    return scorer


async def test_minilm_ranks_the_relevant_texts_first(dense: DenseScorer) -> None:
    ranking = await Funnel(fast=dense, llm=None).arerank(QUERY, TEXTS, deadline=30)
    assert set(ranking.ids[:2]) == {"1", "3"}
    assert ranking.info["fast_scorer"] == "dense:all-MiniLM-L6-v2(max_seq=model)"
    assert all(-1.0 <= r.fast_score <= 1.0 for r in ranking)  # type: ignore[operator]


async def test_hybrid_bm25_and_minilm(dense: DenseScorer) -> None:
    hybrid = HybridScorer(BM25Scorer(), dense, method="rrf")
    scores = await hybrid.ascore(QUERY, TEXTS, deadline=Deadline.after(30))
    assert max(range(len(TEXTS)), key=lambda i: scores[i]) in (1, 3)  # type: ignore[arg-type, return-value]


@pytest.mark.parametrize("n", [1, 10_000])
async def test_bm25_on_one_and_ten_thousand_candidates(n: int) -> None:
    texts = [f"{TEXTS[i % 5]} (copy {i})" for i in range(n)]
    ranking = await Funnel(fast=BM25Scorer(), llm=None).arerank(QUERY, texts, deadline=120)
    assert len(ranking) == n and len(set(ranking.ids)) == n and not ranking.degraded
    assert int(ranking.ids[0]) % 5 in (1, 3) or n == 1


async def test_many_candidates(dense: DenseScorer) -> None:
    """MiniLM on 2 shared CPU cores encodes tens to hundreds of texts a second: 1,000 here; the
    10,000-candidate time is measured by scripts/bench_fast_stages.py."""
    texts = [f"{TEXTS[i % 5]} (copy {i})" for i in range(1_000)]
    for scorer in (BM25Scorer(), dense):
        t0 = time.monotonic()
        ranking = await Funnel(fast=scorer, llm=None).arerank(QUERY, texts, deadline=600)
        elapsed = time.monotonic() - t0
        assert len(ranking) == 1_000 and len(set(ranking.ids)) == 1_000
        assert not ranking.degraded, (scorer.fingerprint, elapsed)
        assert int(ranking.ids[0]) % 5 in (1, 3)

"""HybridScorer: fusion arithmetic, concurrency, and one scorer failing."""

from __future__ import annotations

import time

import pytest
from llmrerank import Funnel
from llmrerank.budget import Deadline
from llmrerank.errors import BackendUnavailable, InputError
from llmrerank.scorers import BM25Scorer, HybridScorer
from llmrerank.testing import ScriptedScorer

TEXTS = ["a", "b", "c", "d"]


def table(values: dict[str, float | None], name: str, **kw: object) -> ScriptedScorer:
    return ScriptedScorer(lambda q, t: values[t], name=name, **kw)  # type: ignore[arg-type]


async def test_rrf_fuses_ranks() -> None:
    first = table({"a": 3.0, "b": 2.0, "c": 1.0, "d": 0.0}, "first")
    second = table({"a": 0.0, "b": 1.0, "c": 2.0, "d": 3.0}, "second")
    hybrid = HybridScorer(first, second, method="rrf", weight=0.5, rrf_c=60)
    scores = await hybrid.ascore("q", TEXTS, deadline=Deadline.never())
    expected = [0.5 / (60 + r1) + 0.5 / (60 + r2) for r1, r2 in [(1, 4), (2, 3), (3, 2), (4, 1)]]
    assert scores == pytest.approx(expected)


async def test_interpolation_of_min_max_scores_follows_the_weight() -> None:
    first = table({"a": 10.0, "b": 0.0, "c": 5.0, "d": 0.0}, "first")
    second = table({"a": 0.0, "b": 1.0, "c": 0.5, "d": None}, "second")
    heavy_second = HybridScorer(first, second, method="interpolate", weight=0.9)
    scores = await heavy_second.ascore("q", TEXTS, deadline=Deadline.never())
    assert scores == pytest.approx([0.1, 0.9, 0.5, 0.0])  # d: second did not score it -> 0
    assert max(range(4), key=lambda i: scores[i]) == 1


async def test_unscored_by_both_stays_unscored() -> None:
    first = table({"a": 1.0, "b": None, "c": 0.0, "d": None}, "first")
    second = table({"a": 1.0, "b": 2.0, "c": None, "d": None}, "second")
    for method in ("rrf", "interpolate"):
        scores = await HybridScorer(first, second, method=method).ascore(  # type: ignore[arg-type]
            "q", TEXTS, deadline=Deadline.never()
        )
        assert scores[3] is None and all(s is not None for s in scores[:3])


async def test_both_scorers_run_concurrently() -> None:
    slow_a = ScriptedScorer(latency=0.4, name="a")
    slow_b = ScriptedScorer(latency=0.4, name="b")
    t0 = time.monotonic()
    await HybridScorer(slow_a, slow_b).ascore("q", TEXTS, deadline=Deadline.never())
    assert time.monotonic() - t0 < 0.7


async def test_one_failing_scorer_leaves_the_others_order(caplog: pytest.LogCaptureFixture) -> None:
    good = table({"a": 0.0, "b": 3.0, "c": 1.0, "d": 2.0}, "good")
    bad = ScriptedScorer(fail=BackendUnavailable("down"), name="bad")
    scores = await HybridScorer(bad, good).ascore("q", TEXTS, deadline=Deadline.never())
    assert sorted(range(4), key=lambda i: -scores[i]) == [1, 3, 2, 0]  # type: ignore[operator]
    assert "scripted:bad failed" in caplog.text


async def test_both_failing_raises() -> None:
    bad = ScriptedScorer(fail=BackendUnavailable("down"), name="bad")
    with pytest.raises(BackendUnavailable):
        await HybridScorer(bad, bad).ascore("q", TEXTS, deadline=Deadline.never())


def test_fingerprint_names_both_and_validation() -> None:
    hybrid = HybridScorer(BM25Scorer(), ScriptedScorer(name="x"), method="interpolate", weight=0.3)
    assert hybrid.fingerprint == f"hybrid:interpolate(w=0.3)[{BM25Scorer().fingerprint}|scripted:x]"
    with pytest.raises(InputError):
        HybridScorer(BM25Scorer(), BM25Scorer(), weight=1.5)
    with pytest.raises(InputError):
        HybridScorer(BM25Scorer(), BM25Scorer(), method="max")  # type: ignore[arg-type]


async def test_bm25_plus_word_overlap_as_funnel_first_stage() -> None:
    texts = [
        "the cat sat on the mat",
        "dogs chase cats in the park",
        "stock markets fell sharply",
        "a cat and a dog play",
        "interest rates and inflation",
        "weather forecast for the weekend",
        "a guide to growing tomatoes",
        "train timetables in winter",
    ]
    hybrid = HybridScorer(BM25Scorer(), ScriptedScorer(name="overlap"))
    ranking = await Funnel(fast=hybrid, llm=None).arerank("cat dog", texts)
    assert ranking.ids[0] == "3" and set(ranking.ids[:3]) == {"0", "1", "3"}
    assert ranking.info["fast_scorer"].startswith("hybrid:rrf")

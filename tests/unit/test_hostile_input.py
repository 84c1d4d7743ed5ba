"""Hostile and degenerate input through the public async API (``Funnel.arerank`` and
``Funnel.astream``): arbitrary unicode (lone surrogates, control and format characters,
combining marks), huge and empty texts, duplicate ids, extreme ``k`` and deadlines.

Every call ends in exactly one of two ways: a clear :class:`InputError` naming the problem, or a
complete, valid ranking (every input candidate exactly once, finite non-increasing scores, the
fast stage did not crash, provenance consistent). ``tests/unit/test_properties.py`` covers the
sync facade on ordinary text; this module pushes the inputs to their extremes.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llmrerank import BackendUnavailable, Candidate, Funnel, InputError, Ranking
from llmrerank.funnel import DEFAULT_MAX_TEXT_CHARS
from llmrerank.scoring import Fusion
from llmrerank.testing import ScriptedScorer

ANY_CHAR = st.characters(codec=None, exclude_categories=())
"""Every code point, lone surrogates and unassigned ones included."""

any_text = st.text(ANY_CHAR, max_size=200)
huge_text = st.builds(
    lambda s, n: (s or "x") * n, st.text(ANY_CHAR, max_size=6), st.integers(2_000, 40_000)
)
degenerate = st.sampled_from(
    ["", " ", "\n\n\t", "\x00\x01\x7f", "\u200b\u200d\ufeff", "\ud800", "🙂" * 3]
)
texts = any_text | huge_text | degenerate
ids = st.text(ANY_CHAR, max_size=3) | st.sampled_from(["0", "1", "a"])  # small pool: duplicates
queries = st.text(ANY_CHAR, max_size=80) | degenerate | huge_text
ks = (
    st.none()
    | st.integers(-3, 60)
    | st.sampled_from([10**9, 2**63])
    | st.sampled_from([True, 1.5, "3"])
)
deadlines = (
    st.none()
    | st.floats(min_value=1e-9, max_value=0.05)
    | st.sampled_from([0.0, -1.0, math.nan, math.inf, -math.inf, 1e300, 10**30, True, "1"])
)
candidate = st.builds(Candidate, id=ids, text=texts)
candidate_like = candidate | texts | st.builds(lambda i, t: {"id": i, "text": t}, ids, texts)

PROPERTY_SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _flaky(call: int) -> BaseException | None:
    return BackendUnavailable("flaky backend") if call % 4 == 0 else None


def _funnel(k: Any = 8) -> tuple[Funnel, ScriptedScorer]:
    llm = ScriptedScorer(lambda q, t: float(len(t) % 5), fail=_flaky)
    return Funnel(
        llm=llm, k=k if isinstance(k, int) and not isinstance(k, bool) and k >= 0 else 8
    ), llm


def _expected_ids(candidates: list[Any]) -> list[str]:
    out = []
    for i, c in enumerate(candidates):
        if isinstance(c, Candidate):
            out.append(c.id)
        elif isinstance(c, dict):
            out.append(str(c.get("id", i)))
        else:
            out.append(str(i))
    return out


def assert_valid_ranking(ranking: Ranking, candidates: list[Any], *, max_k: int | None) -> None:
    expected = _expected_ids(candidates)
    assert sorted(ranking.ids) == sorted(expected), "a candidate was lost or invented"
    assert len(set(ranking.ids)) == len(ranking.ids) == len(expected)
    assert [r.rank for r in ranking] == list(range(len(expected)))
    scores = [r.score for r in ranking]
    assert all(math.isfinite(s) for s in scores)
    assert all(a >= b for a, b in itertools.pairwise(scores)), "scores increase down the ranking"
    if "fast_stage_failed" in ranking.reasons:
        # Only a deadline shorter than BM25 itself may stop the fast stage; never a crash.
        assert ranking.info["errors"][0].startswith("fast: TimeoutError"), ranking.info["errors"]
    assert ranking.degraded == bool(ranking.reasons)
    assert 0 <= ranking.llm_scored <= ranking.k <= len(expected)
    if max_k is not None:
        assert ranking.k <= max_k
    for r in ranking:
        # "llm" means the LLM's score placed it; a score that landed past the first window
        # candidate still waiting at the deadline is shown but leaves the fast place
        assert r.stage != "llm" or r.llm_score is not None
        assert r.stage in ("llm", "fast" if "fast_stage_failed" not in ranking.reasons else "input")
    # Candidates come back whole: texts are cut for scoring only.
    by_id = {c.id: c.text for c in candidates if isinstance(c, Candidate)}
    for r in ranking:
        if r.id in by_id:
            assert r.text == by_id[r.id]


def assert_scorer_saw_clean_text(llm: ScriptedScorer) -> None:
    for t in llm.texts_seen:
        assert len(t) <= DEFAULT_MAX_TEXT_CHARS
        t.encode("utf-8")  # no lone surrogate reaches a backend
        assert not any(ord(c) < 32 and c not in "\n\t" for c in t)
        assert t.strip(), "an empty text was sent to the LLM"


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


@PROPERTY_SETTINGS
@given(query=queries, candidates=st.lists(candidate_like, max_size=20), k=ks, deadline=deadlines)
def test_arerank_gives_a_clear_error_or_a_complete_ranking(
    query: str, candidates: list[Any], k: Any, deadline: Any
) -> None:
    funnel, llm = _funnel(k)
    try:
        ranking = _run(funnel.arerank(query, candidates, k=k, deadline=deadline))
    except InputError as exc:
        message = str(exc)
        assert message and len(message) < 2_000
        assert any(
            word in message for word in ("query", "candidate", "k ", "k=", "k must", "deadline")
        ), message
        return
    assert_valid_ranking(ranking, candidates, max_k=k if isinstance(k, int) else None)
    assert_scorer_saw_clean_text(llm)
    if isinstance(deadline, float) and deadline < 1:
        # Huge texts make BM25 itself take a while; the LLM stage never adds past the deadline.
        assert ranking.timings.get("llm", 0.0) <= deadline + 0.25


@PROPERTY_SETTINGS
@given(query=queries, candidates=st.lists(candidate_like, max_size=12), k=ks, deadline=deadlines)
def test_astream_gives_a_clear_error_or_fast_then_final(
    query: str, candidates: list[Any], k: Any, deadline: Any
) -> None:
    funnel, _ = _funnel(k)

    async def collect() -> list[Any]:
        return [u async for u in funnel.astream(query, candidates, k=k, deadline=deadline)]

    try:
        updates = _run(collect())
    except InputError as exc:
        assert str(exc)
        return
    kinds = [u.kind for u in updates]
    assert kinds[-1] == "final"
    assert kinds.count("final") == 1
    if candidates:
        assert kinds[0] == "fast"
        assert set(kinds[1:-1]) <= {"partial"}
    elapsed = [u.elapsed for u in updates]
    assert elapsed == sorted(elapsed)
    for update in updates:  # every update is a complete ranking
        assert_valid_ranking(update.ranking, candidates, max_k=None)


def test_duplicate_ids_are_refused_by_name() -> None:
    funnel, _ = _funnel()
    with pytest.raises(InputError, match=r"duplicate candidate id '7' at positions 0 and 2"):
        funnel.rerank("q", [Candidate("7", "a"), Candidate("8", "b"), Candidate("7", "c")])


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"k": -1}, "k must be a non-negative int"),
        ({"k": 2.5}, "k must be a non-negative int"),
        ({"k": True}, "k must be a non-negative int"),
        ({"deadline": 0.0}, "deadline must be a positive number"),
        ({"deadline": -3}, "deadline must be a positive number"),
        ({"deadline": math.nan}, "deadline must be a positive number"),
        ({"deadline": "1"}, "deadline must be a number"),
    ],
)
def test_extreme_arguments_are_named_in_the_error(kwargs: dict[str, Any], fragment: str) -> None:
    funnel, _ = _funnel()
    with pytest.raises(InputError, match=fragment):
        _run(funnel.arerank("apple", ["apple pie", "pears"], **kwargs))


def test_huge_k_and_deadline_rank_everything_with_the_llm() -> None:
    llm = ScriptedScorer(lambda q, t: float(len(t)))
    funnel = Funnel(llm=llm, k=8, fusion=Fusion(llm_weight=1.0))
    docs = [f"doc {'x' * i}" for i in range(30)]
    ranking = _run(funnel.arerank("doc", docs, k=10**9, deadline=1e300))
    assert ranking.k == ranking.llm_scored == 30
    assert not ranking.degraded
    assert ranking.ids[0] == "29"  # the scripted LLM prefers the longest text


def test_a_megabyte_text_is_cut_for_scoring_but_returned_whole() -> None:
    llm = ScriptedScorer(lambda q, t: 1.0 if "needle" in t else 0.0)
    funnel = Funnel(llm=llm, k=5)
    huge = "needle " + "hay " * 250_000
    ranking = _run(funnel.arerank("needle", ["hay", huge, "needle in a haystack"], deadline=30))
    assert ranking.by_id("1").text == huge
    assert ranking.info["truncated"] == 1
    assert max(len(t) for t in llm.texts_seen) <= DEFAULT_MAX_TEXT_CHARS
    assert set(ranking.ids) == {"0", "1", "2"}


def test_a_tiny_deadline_still_returns_every_candidate_flagged() -> None:
    llm = ScriptedScorer(latency=0.5)
    funnel = Funnel(llm=llm, k=10)
    ranking = _run(funnel.arerank("apple", [f"apple {i}" for i in range(25)], deadline=1e-6))
    assert len(ranking) == 25
    assert ranking.degraded
    assert ranking.llm_scored == 0

"""The engine's behaviour as a user sees it: ranks, completeness, provenance, deadlines, faults."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time

import pytest
from llmrerank import (
    BackendUnavailable,
    Candidate,
    CircuitBreaker,
    ConfigError,
    Funnel,
    Fusion,
    InputError,
    MemoryScoreCache,
)
from llmrerank.scorers.base import Scores
from llmrerank.testing import ScriptedScorer, heavy_tailed_latency

DOCS = [
    "The cat sat on the mat and purred.",
    "Dogs are loyal animals that love walks.",
    "A kitten is a young cat that plays a lot.",
    "Stock markets fell sharply on Monday.",
    "Young cats, called kittens, sleep most of the day.",
    "The recipe needs flour, eggs and butter.",
]
QUERY = "young cat kitten"


def ids_once(ranking, n):
    ids = ranking.ids
    assert len(ids) == n and len(set(ids)) == n, ids
    return ids


def test_bm25_only_ranks_relevant_first_and_returns_everything():
    # DOCS is a bag, not a retriever's ranking: say so, and BM25 over the candidates decides
    ranking = Funnel(input_ranked=False).rerank(QUERY, DOCS)
    ids = ids_once(ranking, len(DOCS))
    assert set(ids[:2]) == {"2", "4"}
    assert not ranking.degraded
    assert all(r.stage == "fast" for r in ranking)
    assert [r.rank for r in ranking] == list(range(len(DOCS)))
    scores = [r.score for r in ranking]
    assert scores == sorted(scores, reverse=True)


def test_llm_stage_reorders_window_and_records_provenance():
    # The "LLM" prefers the recipe: it must climb inside the window, not outside it.
    llm = ScriptedScorer(lambda q, t: 10.0 if "recipe" in t else 0.0)
    ranking = Funnel(llm=llm, k=len(DOCS), fusion=Fusion(llm_weight=1.0)).rerank(QUERY, DOCS)
    assert ranking[0].id == "5"
    assert ranking[0].stage == "llm" and ranking[0].llm_score == 10.0
    assert ranking.k == len(DOCS) and ranking.llm_scored == len(DOCS)
    assert ranking.info["llm_scorer"] == "scripted:scripted"
    assert set(ranking.timings) >= {"fast", "llm", "total"}


def test_only_top_k_reach_the_llm():
    llm = ScriptedScorer()
    ranking = Funnel(llm=llm, k=2, input_ranked=False).rerank(QUERY, DOCS)
    assert len(llm.texts_seen) == 2
    assert {r.id for r in ranking if r.stage == "llm"} == {"2", "4"}
    assert [r.stage for r in ranking][2:] == ["fast"] * 4


def test_uninformative_llm_keeps_fast_order():
    fast_only = Funnel().rerank(QUERY, DOCS).ids
    constant = ScriptedScorer(lambda q, t: 0.5)
    for fusion in (Fusion("interpolate", 0.5), Fusion("interpolate", 1.0), Fusion("rrf", 0.0)):
        assert Funnel(llm=constant, k=6, fusion=fusion).rerank(QUERY, DOCS).ids == fast_only


def test_scores_never_increase_down_the_ranking():
    llm = ScriptedScorer(lambda q, t: -len(t))
    ranking = Funnel(llm=llm, k=3).rerank(QUERY, DOCS)
    scores = [r.score for r in ranking]
    assert all(a >= b for a, b in itertools.pairwise(scores)), scores


def test_ties_break_deterministically_by_input_position():
    docs = ["same text"] * 5
    cands = [Candidate(id=f"d{i}", text=t) for i, t in enumerate(docs)]
    first = Funnel(llm=ScriptedScorer(lambda q, t: 1.0), k=5).rerank("same", cands).ids
    assert first == ["d0", "d1", "d2", "d3", "d4"]


# ---------------------------------------------------------------- deadlines


def test_deadline_returns_complete_fast_ranking_in_time():
    llm = ScriptedScorer(latency=2.0)
    funnel = Funnel(llm=llm, k=4, deadline=0.2)
    t0 = time.monotonic()
    ranking = funnel.rerank(QUERY, DOCS)
    elapsed = time.monotonic() - t0
    assert elapsed < 0.2 + 0.5
    ids_once(ranking, len(DOCS))
    assert ranking.degraded and "deadline" in ranking.reasons
    assert ranking.llm_scored == 0
    assert ranking.ids == Funnel().rerank(QUERY, DOCS).ids
    assert llm.cancelled == 4  # pending calls were cancelled, not left running


def test_deadline_keeps_the_scores_that_arrived():
    # The first two calls are quick, the rest far too slow: a partial merge, not all-or-nothing.
    delays = iter([0.01, 0.01, 5.0, 5.0])
    llm = ScriptedScorer(lambda q, t: 100.0 if "recipe" in t else 0.0, latency=lambda: next(delays))
    ranking = Funnel(llm=llm, k=4, deadline=0.4, concurrency=4).rerank("cat kitten recipe", DOCS)
    ids_once(ranking, len(DOCS))
    assert ranking.llm_scored == 2 and ranking.reasons == ("deadline",)
    assert sum(r.stage == "llm" for r in ranking) == 2


def test_per_call_deadline_overrides_default():
    funnel = Funnel(llm=ScriptedScorer(latency=1.0), k=2, deadline=30)
    t0 = time.monotonic()
    ranking = funnel.rerank(QUERY, DOCS, deadline=0.1)
    assert time.monotonic() - t0 < 0.6 and "deadline" in ranking.reasons


def test_heavy_tailed_scorer_always_complete_within_margin():
    llm = ScriptedScorer(latency=heavy_tailed_latency(0.05, seed=7))
    funnel = Funnel(llm=llm, k=6, deadline=0.15, concurrency=3)

    async def many():
        return await asyncio.gather(*(funnel.arerank(QUERY, DOCS) for _ in range(20)))

    t0 = time.monotonic()
    rankings = asyncio.run(many())
    assert time.monotonic() - t0 < 0.15 + 1.0
    for ranking in rankings:
        ids_once(ranking, len(DOCS))
        assert ranking.timings["total"] < 0.15 + 0.3


# ---------------------------------------------------------------- faults


def test_backend_error_degrades_to_fast_order(caplog):
    llm = ScriptedScorer(fail=BackendUnavailable("connection refused"))
    funnel = Funnel(llm=llm, k=3, breaker=CircuitBreaker(failure_threshold=100))
    with caplog.at_level(logging.WARNING, logger="llmrerank"):
        ranking = funnel.rerank(QUERY, DOCS)
    ids_once(ranking, len(DOCS))
    assert ranking.degraded and ranking.reasons == ("backend_error",)
    assert ranking.ids == Funnel().rerank(QUERY, DOCS).ids
    assert any("connection refused" in e for e in ranking.info["errors"])
    # one log line per distinct error, not one per candidate
    assert sum("connection refused" in r.getMessage() for r in caplog.records) == 1


def test_circuit_breaker_opens_then_skips_the_backend():
    llm = ScriptedScorer(fail=BackendUnavailable("down"))
    funnel = Funnel(
        llm=llm, k=2, concurrency=1, breaker=CircuitBreaker(failure_threshold=3, reset_after=60)
    )
    funnel.rerank(QUERY, DOCS)  # 2 failures
    funnel.rerank(QUERY, DOCS)  # 3rd failure opens it
    calls = llm.calls
    ranking = funnel.rerank(QUERY, DOCS)
    assert llm.calls == calls, "an open circuit must not call the backend"
    assert ranking.reasons == ("circuit_open",)
    ids_once(ranking, len(DOCS))


def test_circuit_breaker_half_open_trial_closes_it():
    breaker = CircuitBreaker(failure_threshold=1, reset_after=0.05)
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    time.sleep(0.06)
    assert breaker.state == "half_open"
    assert breaker.allow() and not breaker.allow()  # one trial at a time
    breaker.record_success()
    assert breaker.state == "closed"


def test_fast_stage_failure_falls_back_to_input_order_and_llm_still_runs():
    fast = ScriptedScorer(fail=BackendUnavailable("fast down"), batch_size=100)
    cands = [Candidate(id=str(i), text=t, retrieval_score=float(-i)) for i, t in enumerate(DOCS)]
    llm = ScriptedScorer(lambda q, t: 1.0 if "recipe" in t else 0.0)
    ranking = Funnel(fast=fast, llm=llm, k=6, fusion=Fusion(llm_weight=1.0)).rerank(QUERY, cands)
    ids_once(ranking, len(DOCS))
    assert "fast_stage_failed" in ranking.reasons
    assert ranking[0].id == "5"
    assert ranking[1].id == "0"  # the rest keep the input (retrieval) order


def test_non_finite_llm_scores_are_unscored_and_flagged():
    llm = ScriptedScorer(lambda q, t: math.nan if "cat" in t else 1.0)
    ranking = Funnel(llm=llm, k=6).rerank(QUERY, DOCS)
    ids_once(ranking, len(DOCS))
    assert "malformed_output" in ranking.reasons
    assert all(r.llm_score is None or math.isfinite(r.llm_score) for r in ranking)


def test_wrong_number_of_scores_is_a_backend_error():
    class Short(ScriptedScorer):
        async def ascore(self, query, texts, *, deadline):
            return []

    ranking = Funnel(llm=Short(batch_size=3), k=3).rerank(QUERY, DOCS)
    ids_once(ranking, len(DOCS))
    assert ranking.reasons == ("backend_error",)


# ---------------------------------------------------------------- k, cache, presets


def test_budget_aware_k_shrinks_with_the_estimate():
    llm = ScriptedScorer(latency=0.1, max_concurrency=1)
    funnel = Funnel(llm=llm, k=None, k_min=1, k_max=6, deadline=0.35)
    first = funnel.rerank(QUERY, DOCS)
    assert first.k == 6  # no estimate yet: try k_max, the deadline protects the request
    second = funnel.rerank(QUERY, DOCS)
    assert 1 <= second.k <= 3, second.k  # ~0.1 s each, 0.35 s budget, one at a time
    assert second.llm_scored == second.k


def test_k_larger_than_candidates_is_clamped_and_zero_skips_llm():
    llm = ScriptedScorer()
    assert Funnel(llm=llm, k=100).rerank(QUERY, DOCS).k == len(DOCS)
    ranking = Funnel(llm=llm, k=10).rerank(QUERY, DOCS, k=0)
    assert ranking.k == 0 and all(r.stage == "fast" for r in ranking)


def test_cache_hits_skip_the_backend_and_show_in_provenance():
    cache = MemoryScoreCache()
    llm = ScriptedScorer()
    funnel = Funnel(llm=llm, k=3, cache=cache)
    first = funnel.rerank(QUERY, DOCS)
    calls = llm.calls
    second = funnel.rerank(QUERY, DOCS)
    assert llm.calls == calls
    assert second.info["cache_hits"] == 3 and first.info["cache_misses"] == 3
    assert all(r.cached for r in second if r.stage == "llm")
    assert second.ids == first.ids
    other = Funnel(llm=ScriptedScorer(name="other-model"), k=3, cache=cache)
    assert other.rerank(QUERY, DOCS).info["cache_hits"] == 0  # never crosses scorers


def test_presets_build_and_unknown_preset_is_a_config_error():
    for name, deadline in (("realtime", 0.5), ("enterprise", 2.5), ("research", 10.0)):
        funnel = Funnel.from_preset(name, llm=ScriptedScorer())
        assert funnel.deadline == deadline and funnel.name == name
        ranking = funnel.rerank(QUERY, DOCS)
        ids_once(ranking, len(DOCS))
        assert ranking.info["funnel"] == name
    with pytest.raises(ConfigError, match="unknown preset 'fast'"):
        Funnel.from_preset("fast", llm=None)
    with pytest.raises(ConfigError, match="unknown Funnel setting"):
        Funnel.from_preset("enterprise", llm=None, kk=3)


# ---------------------------------------------------------------- streaming and sync facade


async def test_astream_fast_then_partials_then_final():
    llm = ScriptedScorer(latency=0.02)
    funnel = Funnel(llm=llm, k=3, concurrency=1)
    kinds = []
    async for update in funnel.astream(QUERY, DOCS):
        kinds.append(update.kind)
        ids_once(update.ranking, len(DOCS))
    assert kinds[0] == "fast" and kinds[-1] == "final"
    assert kinds.count("partial") == 3


async def test_closing_the_stream_early_cancels_pending_work():
    llm = ScriptedScorer(latency=5.0)
    funnel = Funnel(llm=llm, k=3)
    stream = funnel.astream(QUERY, DOCS)
    first = await stream.__anext__()
    assert first.kind == "fast"
    t0 = time.monotonic()
    await stream.aclose()
    await asyncio.sleep(0.05)
    assert time.monotonic() - t0 < 1.0
    assert llm.cancelled == 3


async def test_sync_rerank_works_inside_a_running_event_loop():
    ranking = Funnel(llm=ScriptedScorer()).rerank(QUERY, DOCS)  # this test runs inside a loop
    ids_once(ranking, len(DOCS))


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("query", "candidates", "message"),
    [
        ("", DOCS, "query is empty"),
        ("   \n", DOCS, "query is empty"),
        (None, DOCS, "query must be a str"),
        (QUERY, "just a string", "must be a sequence"),
        (QUERY, [None], "candidate 0 has type NoneType"),
        (QUERY, [Candidate(id="a", text=None)], "text of type NoneType"),  # type: ignore[arg-type]
        (QUERY, [Candidate(id="a", text=b"bytes")], "decode bytes first"),  # type: ignore[arg-type]
        (QUERY, [Candidate("a", "x"), Candidate("a", "y")], "duplicate candidate id 'a'"),
        (QUERY, [{"id": "a"}], "without a 'text' key"),
        (QUERY, [Candidate("a", "x", retrieval_score=math.nan)], "finite number"),
    ],
)
def test_bad_input_gets_a_clear_input_error(query, candidates, message):
    with pytest.raises(InputError, match=message):
        Funnel().rerank(query, candidates)


@pytest.mark.parametrize("deadline", [0, -1, math.nan, "soon"])
def test_bad_deadlines_are_input_errors(deadline):
    with pytest.raises(InputError, match="deadline"):
        Funnel().rerank(QUERY, DOCS, deadline=deadline)


def test_bad_k_is_an_input_error():
    with pytest.raises(InputError, match="k must be"):
        Funnel().rerank(QUERY, DOCS, k=-1)
    with pytest.raises(InputError, match="k must be"):
        Funnel(k=-3)


def test_no_candidates_gives_an_empty_ranking():
    ranking = Funnel(llm=ScriptedScorer()).rerank(QUERY, [])
    assert len(ranking) == 0 and not ranking.degraded


def test_mixed_input_forms_and_empty_texts():
    cands = ["plain string about kittens", {"id": "m", "text": "a young cat"}, {"text": "  "}]
    llm = ScriptedScorer()
    ranking = Funnel(llm=llm, k=3).rerank(QUERY, cands)
    assert sorted(ranking.ids) == ["0", "2", "m"]
    assert "  " not in llm.texts_seen  # empty texts are not sent to the LLM
    assert ranking.by_id("2").stage == "fast"


def test_huge_and_hostile_texts_are_cut_for_scoring_not_lost(caplog):
    huge = "kitten " * 50_000
    weird = "young\x00cat\x1b[31m\ud800 kitten\u202e"
    llm = ScriptedScorer()
    with caplog.at_level(logging.WARNING, logger="llmrerank"):
        ranking = Funnel(llm=llm, k=3, max_text_chars=1000).rerank(QUERY, [huge, weird, "dog"])
    ids_once(ranking, 3)
    assert ranking.by_id("0").text == huge  # the candidate comes back whole
    assert all(len(t) <= 1000 for t in llm.texts_seen)
    assert ranking.info["truncated"] == 1
    assert any("cut for scoring" in r.getMessage() for r in caplog.records)
    assert all("\x00" not in t and "\ud800" not in t for t in llm.texts_seen)


def test_scorers_can_explain_missing_scores():
    from llmrerank.scorers.base import Scores

    class Explaining(ScriptedScorer):
        async def ascore(self, query, texts, *, deadline):
            # the first text's answer was unusable; the second was not reached in time
            return Scores([None, None, 1.0][: len(texts)], reasons={0: "malformed_output"})

    ranking = Funnel(llm=Explaining(batch_size=3), k=3).rerank(QUERY, DOCS)
    ids_once(ranking, len(DOCS))
    assert ranking.reasons == ("malformed_output", "deadline")
    assert ranking.llm_scored == 1


def test_retrieval_scores_as_the_fast_stage():
    from llmrerank.scorers import RetrievalScorer

    cands = [
        Candidate("a", "unrelated words", retrieval_score=0.2),
        Candidate("b", "more words", retrieval_score=0.9),
        Candidate("c", "no score given"),
        Candidate("d", "kitten", retrieval_score=0.5),
    ]
    ranking = Funnel(fast=RetrievalScorer()).rerank(QUERY, cands)
    assert ranking.ids == ["b", "d", "a", "c"]
    assert ranking.info["fast_scorer"] == "retrieval" and not ranking.degraded
    llm = ScriptedScorer(lambda q, t: 5.0 if "kitten" in t else 0.0)
    fused = Funnel(fast=RetrievalScorer(), llm=llm, k=2, fusion=Fusion(llm_weight=1.0))
    assert fused.rerank(QUERY, cands).ids[:2] == ["d", "b"]


class _HalfAnswering:
    """Answers the first half of each call after 0.05 s per answered text; the rest None (as a
    scorer cut short by its deadline does)."""

    fingerprint = "half-answering"
    batch_size = 4
    max_concurrency = 1

    async def ascore(self, query, texts, *, deadline):
        answered = len(texts) // 2
        await asyncio.sleep(0.05 * answered)
        return Scores([1.0] * answered + [None] * (len(texts) - answered))


async def test_the_latency_estimate_counts_only_the_texts_a_scorer_answered():
    llm = _HalfAnswering()
    funnel = Funnel(llm=llm, k=8, fusion=Fusion(llm_weight=0.5))
    cands = [Candidate(id=str(i), text=f"text {i}") for i in range(8)]
    ranking = await funnel.arerank("text", cands)
    assert sorted(c.id for c in ranking) == [str(i) for i in range(8)]
    # 2 of every 4 answered in ~0.1 s: ~0.05 s per answered text, not ~0.025 per text sent
    assert funnel.latency.per_candidate == pytest.approx(0.05, rel=0.5)
    assert funnel.latency.per_candidate > 0.035

    class _Silent(_HalfAnswering):
        async def ascore(self, query, texts, *, deadline):
            return Scores([None] * len(texts))

    silent = Funnel(llm=_Silent(), k=8)
    await silent.arerank("text", cands)
    assert silent.latency.per_candidate is None  # nothing answered: nothing learnt


def test_a_window_answered_shallower_than_min_depth_keeps_the_fast_order():
    """Fusion(min_depth=m): the LLM moves candidates only once its answered prefix holds m; a
    shallower one (the deadline came first) leaves the fast order, and provenance says so."""
    docs = [f"doc {i} about cats" if i % 2 else f"doc {i} about dogs" for i in range(12)]
    fast = Funnel().rerank("cats", docs)

    def answered_eight(min_depth: int):
        # the LLM inverts the order; the first two calls answer at once, the third never does:
        # an answered prefix of 8
        delays = iter([0.0, 0.0, 5.0])
        llm = ScriptedScorer(
            lambda q, t: float(t.split()[1]), latency=lambda: next(delays), batch_size=4
        )
        fusion = Fusion(llm_weight=1.0, min_depth=min_depth)
        return Funnel(llm=llm, k=12, deadline=0.4, concurrency=3, fusion=fusion).rerank(
            "cats", docs
        )

    shallow = answered_eight(9)
    ids_once(shallow, len(docs))
    assert shallow.llm_scored == 8 and "deadline" in shallow.reasons
    assert shallow.ids == fast.ids  # 8 < 9: not fused
    assert shallow.info["llm_depth"] == 8 and shallow.info["llm_fused"] is False
    assert all(r.stage == "fast" for r in shallow)
    assert sum(r.llm_score is not None for r in shallow) == 8  # the scores stay in provenance
    # the same 8 answers with min_depth 8 are fused
    deep = answered_eight(8)
    ids_once(deep, len(docs))
    assert deep.info["llm_depth"] == 8 and deep.info["llm_fused"] is True
    assert deep.ids[:8] == list(reversed(fast.ids[:8])) and deep.ids[8:] == fast.ids[8:]
    assert sum(r.stage == "llm" for r in deep) == 8


def test_min_depth_is_capped_at_a_window_fixed_in_advance():
    """min_depth guards against a window the deadline cut short: a smaller window fixed in
    advance (an explicit k, or fewer candidates than min_depth) is fused once answered whole;
    a budget-aware window is not capped by the k it planned."""
    docs = [f"doc {i} about cats" if i % 2 else f"doc {i} about dogs" for i in range(12)]
    inverts = ScriptedScorer(lambda q, t: float(t.split()[1]))  # the LLM inverts the order
    deep_rule = Fusion(llm_weight=1.0, min_depth=16)
    fast = Funnel().rerank("cats", docs)
    # 12 candidates, fewer than 16: all answered, so fused
    whole = Funnel(llm=inverts, k=20, fusion=deep_rule).rerank("cats", docs)
    ids_once(whole, 12)
    assert whole.info["llm_fused"] is True and whole.ids == list(reversed(fast.ids))
    # an explicit k, per funnel or per request, is a window fixed in advance
    for funnel, k in (
        (Funnel(llm=inverts, k=3, fusion=deep_rule), None),
        (Funnel(llm=inverts, k=20, fusion=deep_rule), 3),
    ):
        r = funnel.rerank("cats", docs, k=k)
        ids_once(r, 12)
        assert r.info["llm_fused"] is True and r.llm_scored == 3
        assert r.ids[:3] == list(reversed(fast.ids[:3])) and r.ids[3:] == fast.ids[3:]
    # budget-aware k (k=None) that planned 3 of 12: not a fixed window, so not fused
    planned = Funnel(llm=inverts, k=None, k_min=3, k_max=3, fusion=deep_rule).rerank("cats", docs)
    ids_once(planned, 12)
    assert planned.llm_scored == 3 and planned.info["llm_fused"] is False
    assert planned.ids == fast.ids and all(r.stage == "fast" for r in planned)


def test_an_llm_that_cannot_reach_min_depth_in_time_is_not_called():
    """When the latency estimate says the LLM cannot answer Fusion.min_depth candidates before
    the deadline, its scores would not be fused: the funnel does not call it (the fast order,
    flagged deadline, no time spent), and still runs it as a probe once _PROBE_SKIPS requests
    skipped it and _PROBE_EVERY seconds have passed."""
    docs = [f"doc {i} about cats" if i % 2 else f"doc {i} about dogs" for i in range(30)]
    slow = ScriptedScorer(lambda q, t: float(t.split()[1]), latency=lambda: 0.1, batch_size=1)
    funnel = Funnel(
        llm=slow, k=20, deadline=1.0, concurrency=1, fusion=Fusion(llm_weight=1.0, min_depth=16)
    )
    fast = Funnel().rerank("cats", docs)
    first = funnel.rerank("cats", docs)  # no estimate yet: the LLM runs, ~10 answered, unfused
    ids_once(first, 30)
    assert 3 <= first.llm_scored < 16 and first.info["llm_fused"] is False
    assert "llm_skipped" not in first.info and first.ids == fast.ids
    calls = slow.calls
    second = funnel.rerank("cats", docs)
    ids_once(second, 30)
    assert slow.calls == calls  # not called
    assert second.info["llm_skipped"] == "depth_out_of_reach" and second.llm_scored == 0
    assert second.degraded and "deadline" in second.reasons and second.ids == fast.ids
    # the probe: once 8 requests skipped it and 10 s have passed, the LLM runs again
    funnel._last_llm_call -= 60.0
    for _ in range(7):  # 10 s have passed, but only 2..8 requests skipped it: still skipped
        assert funnel.rerank("cats", docs).info["llm_skipped"] == "depth_out_of_reach"
    assert slow.calls == calls
    observed = funnel.latency.observations
    third = funnel.rerank("cats", docs)
    assert slow.calls > calls and "llm_skipped" not in third.info
    assert funnel.latency.observations > observed
    # a smaller window fixed in advance (k=4, reachable) is called and fused
    four = funnel.rerank("cats", docs, k=4)
    assert four.llm_scored == 4 and four.info["llm_fused"] is True
    # without a depth rule the LLM is always called
    plain = Funnel(llm=slow, k=20, deadline=1.0, concurrency=1, fusion=Fusion(llm_weight=1.0))
    for _ in range(2):
        calls = slow.calls
        r = plain.rerank("cats", docs)
        assert slow.calls > calls and r.llm_scored > 0 and "llm_skipped" not in r.info


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_min_depth_must_be_a_non_negative_int(bad):
    with pytest.raises(ValueError, match="min_depth"):
        Fusion(min_depth=bad)


def test_presets_fuse_the_llm_only_from_a_depth_of_16():
    from llmrerank.presets import PRESETS

    assert {p.fusion.min_depth for p in PRESETS.values()} == {16}
    assert "min_depth=16" in PRESETS["enterprise"].fusion.fingerprint
    assert Fusion().min_depth == 0  # a hand-built funnel fuses whatever the LLM answered

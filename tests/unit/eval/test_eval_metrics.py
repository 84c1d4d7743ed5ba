"""The benchmark's metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("ranx", reason="the metrics need llmrerank[bench] (ranx)")

from llmrerank.eval.metrics import evaluate_rankings, latency_summary

QRELS = {"q1": {"a": 1, "b": 2, "c": 0}, "q2": {"z": 1}}


def test_ndcg_uses_grades_as_gains() -> None:
    means, _ = evaluate_rankings(QRELS, {"q1": ["x", "b", "a"]}, ["ndcg@10"])
    dcg = 2 / math.log2(3) + 1 / math.log2(4)  # b at rank 2, a at rank 3
    ideal = 2 / math.log2(2) + 1 / math.log2(3)  # b, a
    assert means["ndcg@10"] == pytest.approx(dcg / ideal)  # 0.6697


def test_ndcg_exp_uses_exponential_gains() -> None:
    means, _ = evaluate_rankings(QRELS, {"q1": ["x", "b", "a"]}, ["ndcg_exp@10"])
    dcg = 3 / math.log2(3) + 1 / math.log2(4)
    ideal = 3 + 1 / math.log2(3)
    assert means["ndcg_exp@10"] == pytest.approx(dcg / ideal)  # 0.6590


def test_perfect_and_empty_rankings() -> None:
    means, per = evaluate_rankings(QRELS, {"q1": ["b", "a", "c"], "q2": []}, ["ndcg@10"])
    assert per["ndcg@10"] == {"q1": pytest.approx(1.0), "q2": 0.0}
    assert means["ndcg@10"] == pytest.approx(0.5)


def test_mrr_counts_the_first_relevant_within_the_cutoff() -> None:
    rankings = {"q1": ["c", "x", "a", "b"], "q2": [f"d{i}" for i in range(10)] + ["z"]}
    means, per = evaluate_rankings(QRELS, rankings, ["mrr@10"])
    # q1: c is judged non-relevant (grade 0), a is first relevant at rank 3; q2: z at rank 11
    assert per["mrr@10"]["q1"] == pytest.approx(1 / 3)
    assert per["mrr@10"]["q2"] == 0.0
    assert means["mrr@10"] == pytest.approx(1 / 6)


def test_recall_at_cutoffs() -> None:
    qrels = {"q": {"a": 1, "b": 1, "c": 1}}
    ranking = ["a", *[f"x{i}" for i in range(8)], "b", *[f"y{i}" for i in range(40)], "c"]
    assert ranking.index("b") == 9 and ranking.index("c") == 50
    means, _ = evaluate_rankings(qrels, {"q": ranking}, ["recall@10", "recall@100"])
    assert means["recall@10"] == pytest.approx(2 / 3)
    assert means["recall@100"] == pytest.approx(1.0)


def test_order_is_the_list_order_not_ids() -> None:
    # ids that sort the other way round must not change the ranking
    first, _ = evaluate_rankings({"q": {"zzz": 1}}, {"q": ["zzz", "aaa"]}, ["mrr@10"])
    second, _ = evaluate_rankings({"q": {"zzz": 1}}, {"q": ["aaa", "zzz"]}, ["mrr@10"])
    assert first["mrr@10"] == 1.0
    assert second["mrr@10"] == 0.5


def test_bad_rankings_are_refused() -> None:
    with pytest.raises(ValueError, match="repeats"):
        evaluate_rankings(QRELS, {"q1": ["a", "a"]})
    with pytest.raises(ValueError, match="without judgements"):
        evaluate_rankings(QRELS, {"nope": ["a"]})
    with pytest.raises(ValueError, match="no rankings"):
        evaluate_rankings(QRELS, {})


def test_latency_percentiles() -> None:
    summary = latency_summary([float(i) for i in range(1, 101)])
    assert summary["p50"] == pytest.approx(50.5)
    assert summary["p95"] == pytest.approx(95.05)
    assert summary["p99"] == pytest.approx(99.01)
    assert summary["max"] == 100.0 and summary["count"] == 100
    assert latency_summary([])["p50"] is None

"""Relevance metrics (computed by ranx, trec_eval conventions) and latency percentiles.

Rankings are passed as ordered lists of document ids; they are turned into strictly decreasing
scores before ranx sees them, so ties can never reorder a ranking behind the caller's back.

``ndcg@k`` uses the judgement grades as gains (trec_eval's ``ndcg_cut``); ``ndcg_exp@k`` uses
``2**grade - 1`` (Burges et al.). The two agree on binary judgements.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._optional import require

__all__ = ["DEFAULT_METRICS", "evaluate_rankings", "latency_summary"]

DEFAULT_METRICS = ("ndcg@10", "mrr@10", "recall@10", "recall@100", "ndcg_exp@10")

_RANX_NAMES = {"ndcg_exp": "ndcg_burges"}


def _ranx_name(metric: str) -> str:
    base, _, cut = metric.partition("@")
    base = _RANX_NAMES.get(base, base)
    return f"{base}@{cut}" if cut else base


def evaluate_rankings(
    qrels: Mapping[str, Mapping[str, int]],
    rankings: Mapping[str, Sequence[str]],
    metrics: Sequence[str] = DEFAULT_METRICS,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Mean and per-query metrics of ``rankings`` (query id -> doc ids, best first).

    Only the queries in ``rankings`` are evaluated, and each must have judgements in ``qrels``.
    Returns ``(means, per_query)`` where ``per_query[metric][query_id]`` is a float.
    """
    ranx = require("ranx", extra="bench", feature="benchmark metrics")
    if not rankings:
        raise ValueError("no rankings to evaluate")
    unjudged = [q for q in rankings if not qrels.get(q)]
    if unjudged:
        raise ValueError(f"queries without judgements cannot be evaluated: {unjudged[:5]}")
    qrels_dict = {q: {d: int(g) for d, g in qrels[q].items()} for q in rankings}
    run_dict: dict[str, dict[str, float]] = {}
    for q, ids in rankings.items():
        if len(set(ids)) != len(ids):
            raise ValueError(f"ranking for query {q!r} repeats a document id")
        # an empty ranking is legal (scores 0); ranx needs at least one entry per query
        run_dict[q] = {d: float(len(ids) - r) for r, d in enumerate(ids)} or {"\x00none": 0.0}
    names = [_ranx_name(m) for m in metrics]
    run = ranx.Run(run_dict)
    ranx.evaluate(ranx.Qrels(qrels_dict), run, names, save_results_in_run=True)
    per_query: dict[str, dict[str, float]] = {}
    means: dict[str, float] = {}
    for metric, name in zip(metrics, names, strict=True):
        per_query[metric] = {q: float(run.scores[name][q]) for q in rankings}
        means[metric] = float(np.mean(list(per_query[metric].values())))
    return means, per_query


def latency_summary(seconds: Sequence[float]) -> dict[str, Any]:
    """p50/p95/p99/mean/max of per-query latencies, in seconds (linear interpolation)."""
    values = [float(s) for s in seconds if s is not None and math.isfinite(s)]
    if not values:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None, "count": 0}
    arr = np.asarray(values)
    p50, p95, p99 = (float(v) for v in np.percentile(arr, [50, 95, 99]))
    return {
        "p50": p50,
        "p95": p95,
        "p99": p99,
        "mean": float(arr.mean()),
        "max": float(arr.max()),
        "count": len(values),
    }

"""``llmrerank bench fusion``: how the fast stage should combine the retriever and BM25, and how
much weight the LLM gets — chosen by measurement, on queries the target runs do not use.

For each collection and each retriever (corpus-wide BM25 and all-MiniLM-L6-v2 over the corpus)
the top N (default 50) are retrieved once; every signal is computed once (the retriever's order
and score, BM25 over the N with the shipped :class:`~llmrerank.scorers.bm25.BM25Scorer`, the
embedded LLM's query likelihood on the fused top ``max(windows)``) and recombined offline with
the shipped code (:meth:`RetrieverFusionScorer.fuse`, :class:`~llmrerank.scoring.Fusion`,
:func:`~llmrerank.scoring.final_order`), so what is measured is what the funnel computes.

Queries are split: the *eval* split is the sample the benchmark's target runs use (``--queries``
seeded ``--seed``, plus its warm-up query); the *tune* split is other judged queries (seeded
``--seed + 1``). Choices are made on the tune split; the eval split is reported beside it.

LLM scores are kept in an SQLite score cache under ``cache_dir()/bench`` (keyed by the scorer's
fingerprint), so a rerun costs only what changed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..budget import Deadline
from ..scorers.bm25 import BM25Scorer
from ..scorers.retriever_fusion import RetrieverFusionScorer, position_signal
from ..scoring import Fusion, final_order
from .data import Dataset, load_beir, resolve_dataset
from .metrics import evaluate_rankings
from .retrieval import make_retriever
from .runner import BenchConfig, _load, _sample_queries, machine_info

__all__ = ["fast_variants", "main", "run_study"]

logger = logging.getLogger("llmrerank")


@dataclass(frozen=True)
class Variant:
    name: str
    scorer: RetrieverFusionScorer | None  # None: a single signal
    signal: str  # "position" or "score": what stands for the retriever


def fast_variants() -> list[Variant]:
    """The fast-stage fusions compared (besides the two signals alone)."""
    out: list[Variant] = []
    for c in (20.0, 60.0):
        for w in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
            out.append(
                Variant(
                    f"rrf(c={c:g},w={w})",
                    RetrieverFusionScorer(method="rrf", retriever_weight=w, rrf_c=c),
                    "position",
                )
            )
    for signal in ("position", "score"):
        for w in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
            out.append(
                Variant(
                    f"zscore[{signal}](w={w})",
                    RetrieverFusionScorer(method="zscore", retriever_weight=w),
                    signal,
                )
            )
    return out


def _fast_scores(variant: Variant, signals: dict[str, Any]) -> list[float | None]:
    """The variant's fused fast scores from one query's precomputed signals."""
    assert variant.scorer is not None
    retriever = (
        signals["retrieval"] if variant.signal == "score" else position_signal(len(signals["ids"]))
    )
    return variant.scorer.fuse(retriever, signals["bm25"])


def _order(scores: Sequence[float | None]) -> list[int]:
    return sorted(
        range(len(scores)), key=lambda i: (-(s if (s := scores[i]) is not None else -math.inf), i)
    )


def _split(dataset: Dataset, queries: int, seed: int, tune: int) -> tuple[list[str], list[str]]:
    chosen, warm = _sample_queries(
        dataset, BenchConfig(dataset=dataset.path, queries=queries, seed=seed)
    )
    used = set(chosen) | ({warm} if warm else set())
    spare = [q for q in dataset.judged_query_ids if q not in used]
    rng = random.Random(seed + 1)
    tune_ids = sorted(rng.sample(spare, min(tune, len(spare))), key=spare.index)
    return tune_ids, chosen


def _ndcg(dataset: Dataset, rankings: dict[str, list[str]]) -> float:
    means, _ = evaluate_rankings(dataset.qrels, rankings, ("ndcg@10",))
    return round(means["ndcg@10"], 4)


def run_study(
    datasets: Sequence[Path],
    *,
    retrievers: Sequence[str] = ("bm25", "dense"),
    n: int = 50,
    queries: int = 30,
    seed: int = 0,
    tune: int = 40,
    windows: Sequence[int] = (5, 10, 20),
    llm_weights: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7),
    fast_choice: str | None = None,
    llm: Any = None,
    llm_queries: int = 20,
    progress: bool = True,
    max_drop: float = 0.005,
    llm_eval: bool = False,
) -> dict[str, Any]:
    """Every figure of the study as a JSON-ready dict. ``llm=False`` skips the LLM part, which
    runs on the first ``llm_queries`` queries of the tune split (the benchmark measures the
    eval split end to end), and with ``llm_eval`` on the eval split too (reported, never used
    for a choice)."""
    from ..cache import SQLiteScoreCache
    from ..models import cache_dir

    load_start = _load()
    started = time.time()
    bm25 = BM25Scorer()
    variants = fast_variants()
    runs: list[dict[str, Any]] = []
    signals: dict[tuple[str, str], Any] = {}
    for path in datasets:
        dataset = load_beir(path)
        tune_ids, eval_ids = _split(dataset, queries, seed, tune)
        for kind in retrievers:
            retriever = make_retriever(kind, dataset)
            ids = tune_ids + eval_ids
            cand_lists = retriever.retrieve([dataset.queries[q] for q in ids], n)
            per_q: dict[str, dict[str, Any]] = {}
            for qid, cands in zip(ids, cand_lists, strict=True):
                texts = [c.text for c in cands]
                per_q[qid] = {
                    "ids": [c.id for c in cands],
                    "texts": texts,
                    "retrieval": [float(c.retrieval_score or 0.0) for c in cands],
                    "bm25": bm25.score(dataset.queries[qid], texts),
                }
            signals[(dataset.name, kind)] = (dataset, tune_ids, eval_ids, per_q)
            row: dict[str, Any] = {"dataset": dataset.name, "retriever": kind, "fast": {}}
            for split, qids in (("tune", tune_ids), ("eval", eval_ids)):
                res: dict[str, float] = {}
                res["retriever"] = _ndcg(dataset, {q: per_q[q]["ids"] for q in qids})
                res["bm25@n"] = _ndcg(
                    dataset,
                    {q: [per_q[q]["ids"][i] for i in _order(per_q[q]["bm25"])] for q in qids},
                )
                for v in variants:
                    assert v.scorer is not None
                    rk: dict[str, list[str]] = {}
                    for q in qids:
                        s = per_q[q]
                        rk[q] = [s["ids"][i] for i in _order(_fast_scores(v, s))]
                    res[v.name] = _ndcg(dataset, rk)
                row["fast"][split] = res
                row[f"{split}_queries"] = len(qids)
            runs.append(row)
            if progress:
                print(
                    f"fast {dataset.name}/{kind}: tune retriever {row['fast']['tune']['retriever']}"
                    f" bm25@n {row['fast']['tune']['bm25@n']}",
                    file=sys.stderr,
                )
    # the fast choice: the best mean over every (collection, retriever) of the tune split, among
    # variants that never fall below the retriever there by more than 0.005
    names = [v.name for v in variants]
    mean_tune = {name: sum(r["fast"]["tune"][name] for r in runs) / len(runs) for name in names}
    worst_margin = {
        name: min(r["fast"]["tune"][name] - r["fast"]["tune"]["retriever"] for r in runs)
        for name in names
    }
    safe = [name for name in names if worst_margin[name] >= -0.005] or names
    chosen = fast_choice or max(safe, key=lambda name: mean_tune[name])
    result: dict[str, Any] = {
        "settings": {
            "datasets": [str(p) for p in datasets],
            "retrievers": list(retrievers),
            "n": n,
            "eval_queries": queries,
            "seed": seed,
            "tune_queries": tune,
            "windows": list(windows),
            "llm_weights": list(llm_weights),
            "max_drop": max_drop,
            "llm_queries": llm_queries,
            "llm_eval": llm_eval,
        },
        "fast_runs": runs,
        "fast_mean_tune": mean_tune,
        "fast_worst_margin_tune": worst_margin,
        "fast_choice": chosen,
    }
    if llm is not False:
        if llm is None:
            from ..presets import default_llm_scorer

            llm = default_llm_scorer()
        cache = SQLiteScoreCache(cache_dir() / "bench" / "llm_scores.sqlite", max_entries=10**6)
        variant = next(v for v in variants if v.name == chosen)
        assert variant.scorer is not None
        kmax = max(windows)
        llm_rows = []
        scored = 0
        t_llm = time.perf_counter()
        for (_name, kind), (dataset, tune_ids, eval_ids, per_q) in signals.items():
            row = {"dataset": dataset.name, "retriever": kind, "tune": {}}
            splits = [("tune", tune_ids[:llm_queries])]
            if llm_eval:
                row["eval"] = {}
                splits.append(("eval", eval_ids))
            for split, qids in splits:
                ranked_lists: dict[tuple[int, float], dict[str, list[str]]] = {}
                for q in qids:
                    s = per_q[q]
                    fast = _fast_scores(variant, s)
                    order = _order(fast)
                    top = order[:kmax]
                    query = dataset.queries[q]
                    top_texts = [s["texts"][i] for i in top]
                    got = cache.get_many(llm.fingerprint, query, top_texts)
                    missing = [j for j, g in enumerate(got) if g is None]
                    if missing:
                        new = asyncio.run(
                            llm.ascore(
                                query, [top_texts[j] for j in missing], deadline=Deadline.never()
                            )
                        )
                        scored += len(missing)
                        keep = [(top_texts[j], v) for j, v in zip(missing, new, strict=True)]
                        cache.put_many(
                            llm.fingerprint,
                            query,
                            [t for t, v in keep if v is not None],
                            [float(v) for t, v in keep if v is not None],
                        )
                        for j, v in zip(missing, new, strict=True):
                            got[j] = v
                    llm_of = dict(zip(top, got, strict=True))
                    for k in windows:
                        window = order[:k]
                        rest = order[k:]
                        for w in llm_weights:
                            mixed, _tail = Fusion("interpolate", llm_weight=w).fuse(
                                [fast[i] for i in window],
                                [llm_of.get(i) for i in window],
                                [fast[i] for i in rest],
                            )
                            final = final_order(window, mixed, rest, fast)
                            ranked_lists.setdefault((k, w), {})[q] = [s["ids"][i] for i in final]
                for (k, w), rk in ranked_lists.items():
                    row[split][f"k={k},w={w}"] = _ndcg(dataset, rk)
            llm_rows.append(row)
            if progress:
                print(
                    f"llm {dataset.name}/{kind}: {scored} texts scored so far, "
                    f"{time.perf_counter() - t_llm:.0f} s",
                    file=sys.stderr,
                )
        result["llm_scorer"] = llm.fingerprint
        result["llm_runs"] = llm_rows
        result["llm_texts_scored"] = scored
        choice: dict[str, float] = {}
        for k in windows:
            means = {
                w: sum(r["tune"][f"k={k},w={w}"] for r in llm_rows) / len(llm_rows)
                for w in llm_weights
            }
            # the worst run's change against the fast stage alone (w=0): a weight that lowers
            # any tune run by more than max_drop is not eligible (never below the fast stage)
            worst = {
                w: min(r["tune"][f"k={k},w={w}"] - r["tune"][f"k={k},w=0.0"] for r in llm_rows)
                for w in llm_weights
            }
            ok = [w for w in llm_weights if worst[w] >= -max_drop] or [0.0]
            choice[str(k)] = max(ok, key=lambda w: (means[w], -w))
            result[f"llm_mean_tune_k{k}"] = means
            result[f"llm_worst_tune_k{k}"] = worst
        result["llm_weight_choice"] = choice
    result["machine"] = machine_info() | {
        "load_average_start": load_start,
        "load_average_end": _load(),
    }
    result["seconds"] = round(time.time() - started, 1)
    return result


def write_markdown(result: dict[str, Any], path: Path, command: str) -> None:
    lines = [
        "# The fast stage's fusion and the LLM weight, chosen by measurement",
        "",
        f"Command: `{command}`",
        "",
        f"Load average: {result['machine']['load_average_start']} at the start, "
        f"{result['machine']['load_average_end']} at the end (quality figures do not depend "
        "on load). nDCG@10 of the top 10 of the retriever's top "
        f"{result['settings']['n']}. *tune*: judged queries outside the benchmark's sample "
        f"(up to {result['settings']['tune_queries']}); *eval*: the benchmark's sample "
        f"({result['settings']['eval_queries']} queries, seed {result['settings']['seed']}).",
        "",
        "## Fast stage",
        "",
    ]
    runs = result["fast_runs"]
    shown = [
        "retriever",
        "bm25@n",
        *sorted(result["fast_mean_tune"], key=lambda k: -result["fast_mean_tune"][k])[:8],
    ]
    if result["fast_choice"] not in shown:
        shown.append(result["fast_choice"])
    head = "| ranking of the N | " + " | ".join(
        f"{r['dataset']}/{r['retriever']} {s}" for r in runs for s in ("tune", "eval")
    )
    lines.append(head + " | mean tune |")
    lines.append("|---" * (2 * len(runs) + 2) + "|")
    for name in shown:
        cells = [f"{r['fast'][s][name]:.3f}" for r in runs for s in ("tune", "eval")]
        mean = sum(r["fast"]["tune"][name] for r in runs) / len(runs)
        mark = " **(chosen)**" if name == result["fast_choice"] else ""
        lines.append(f"| {name}{mark} | " + " | ".join(cells) + f" | {mean:.3f} |")
    lines += [
        "",
        f"Chosen: **{result['fast_choice']}**: the best mean on the tune split among the variants "
        "that are never more than 0.005 below the retriever on any tune run. All variants: "
        "`fast_mean_tune` in the JSON.",
        "",
    ]
    if "llm_runs" in result:
        lines += [
            "## LLM weight (interpolation of z(fast) and z(LLM) inside the window)",
            "",
            f"LLM: `{result['llm_scorer']}`; fast stage: the chosen fusion.",
            "",
        ]
        for k in result["settings"]["windows"]:
            means = result[f"llm_mean_tune_k{k}"]
            worst = result.get(f"llm_worst_tune_k{k}", {})
            lines.append(
                f"Window k={k}, mean tune nDCG@10 by weight (worst run's change against w=0): "
                + ", ".join(
                    f"w={w}: {v:.4f}" + (f" ({worst[w]:+.4f})" if w in worst else "")
                    for w, v in means.items()
                )
                + f" -> chosen w={result['llm_weight_choice'][str(k)]}"
            )
            lines.append("")
        picks = {k: result["llm_weight_choice"][str(k)] for k in result["settings"]["windows"]}
        lines.append(
            "| run | split | "
            + " | ".join(f"k={k} w={w}" for k, w in picks.items())
            + " | fast only |"
        )
        lines.append("|---" * (3 + len(result["settings"]["windows"])) + "|")
        for r in result["llm_runs"]:
            for split in [x for x in ("tune", "eval") if x in r]:
                cells = [f"{r[split][f'k={k},w={w}']:.3f}" for k, w in picks.items()]
                base = r[split].get(f"k={max(result['settings']['windows'])},w=0.0")
                lines.append(
                    f"| {r['dataset']}/{r['retriever']} | {split} | "
                    + " | ".join(cells)
                    + f" | {base:.3f} |"
                )
        lines.append("")
        if result["settings"].get("llm_eval"):
            lines += _depth_table(result)
    path.write_text("\n".join(lines) + "\n")


def _depth_table(result: dict[str, Any]) -> list[str]:
    """Per answered depth (the window) and weight: the mean and the worst run's change against
    the fast stage alone, on tune, eval and both pooled (weighted by queries)."""
    runs = result["llm_runs"]
    nt, ne = result["settings"]["llm_queries"], result["settings"]["eval_queries"]
    lines = [
        "## Depth: how deep an answered window must be before the LLM helps",
        "",
        "Change of nDCG@10 against the fast stage alone (w=0) when the LLM answered the top k of "
        f"the fast order: mean over the {len(runs)} runs / worst run. *pooled*: tune ({nt} "
        f"queries) and eval ({ne}) together, per run.",
        "",
        "| k | w | tune mean | tune worst | eval mean | eval worst | pooled mean | pooled worst |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k in result["settings"]["windows"]:
        for w in result["settings"]["llm_weights"]:
            if w == 0.0:
                continue
            key, base = f"k={k},w={w}", f"k={k},w=0.0"
            dt = [r["tune"][key] - r["tune"][base] for r in runs]
            de = [r["eval"][key] - r["eval"][base] for r in runs]
            dp = [(a * nt + b * ne) / (nt + ne) for a, b in zip(dt, de, strict=True)]
            cells = [f"{sum(x) / len(x):+.4f} | {min(x):+.4f}" for x in (dt, de, dp)]
            lines.append(f"| {k} | {w} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    import shlex

    parser = argparse.ArgumentParser(prog="llmrerank bench fusion", description=__doc__)
    parser.add_argument("--datasets", nargs="+", default=["cranfield", "cisi", "nfcorpus"])
    parser.add_argument("--retrievers", default="bm25,dense")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tune", type=int, default=40)
    parser.add_argument("--windows", default="5,10,20")
    parser.add_argument(
        "--max-drop",
        type=float,
        default=0.005,
        help="an LLM weight that lowers any tune run by more than this against the fast stage "
        "alone is not chosen",
    )
    parser.add_argument("--no-llm", action="store_true")
    parser.add_argument("--llm-queries", type=int, default=20, help="tune queries for the LLM part")
    parser.add_argument(
        "--llm-eval",
        action="store_true",
        help="score the eval split with the LLM too (reported beside the tune split)",
    )
    parser.add_argument("--fast-choice", default=None)
    parser.add_argument("--dtype", default=None, help="the embedded LLM's dtype (default: its own)")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    parser.add_argument("--name", default="fast_fusion")
    words = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(words)
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    paths = [resolve_dataset(d) for d in args.datasets]
    llm: Any = False if args.no_llm else None
    if args.dtype and not args.no_llm:
        from ..scorers.llm_local import LocalLLMScorer

        llm = LocalLLMScorer(dtype=args.dtype)
    result = run_study(
        paths,
        retrievers=tuple(args.retrievers.split(",")),
        n=args.n,
        queries=args.queries,
        seed=args.seed,
        tune=args.tune,
        windows=tuple(int(k) for k in args.windows.split(",")),
        max_drop=args.max_drop,
        fast_choice=args.fast_choice,
        llm_queries=args.llm_queries,
        llm=llm,
        llm_eval=args.llm_eval,
    )
    command = shlex.join(["llmrerank", "bench", "fusion", *words])
    result["command"] = command
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    write_markdown(result, args.out / f"{args.name}.md", command)
    print(f"fast choice: {result['fast_choice']}")
    if "llm_weight_choice" in result:
        print(f"llm weights: {result['llm_weight_choice']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark of the embedded local LLM scorer (llmrerank.scorers.llm_local) on a BEIR-layout folder.

Quality: BM25 over the whole corpus gives each sampled query its top-k; nDCG@10 (ranx) of
- BM25 alone, each LLM variant alone (Fusion weight 1.0) and fused with BM25 through
  ``llmrerank.Funnel`` (interpolation weights 0.3 / 0.5 / 0.7; LLM scores computed once per
  variant and reused through a MemoryScoreCache).
Speed: candidates/s and tokens/s scoring k texts of one query, sent in the scorer's
``batch_size`` chunks as the funnel sends them, for length bucketing on/off, micro-batch sizes,
prefix KV reuse on/off (judgement) and int8 on/off.

Writes <out>/llm_local.json and <out>/llm_local.md. Example (the command behind the committed
figures is recorded in those files):

    PYTHONPATH=core python scripts/bench_local_llm.py --data ../shared/data/cranfield \
        --queries 20 --out docs/benchmarks
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import random
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from llmrerank import Candidate, Deadline, Funnel, Fusion, MemoryScoreCache
from llmrerank.scorers.bm25 import tokenize
from llmrerank.scorers.llm_local import LocalLLMScorer, default_threads
from rank_bm25 import BM25Okapi

WEIGHTS = (0.3, 0.5, 0.7)

QUALITY_VARIANTS: dict[str, dict[str, Any]] = {
    "ql": {"method": "query_likelihood"},
    "ql-int8": {"method": "query_likelihood", "quantize": "int8"},
    "judge": {"method": "judgement", "chat": False},
    "judge-chat": {"method": "judgement", "chat": True},
    "judge-int8": {"method": "judgement", "chat": False, "quantize": "int8"},
    "judge-chat-int8": {"method": "judgement", "chat": True, "quantize": "int8"},
}

SPEED_VARIANTS: dict[str, dict[str, Any]] = {
    "ql mb1": {"method": "query_likelihood", "micro_batch": 1},
    "ql mb4 no-bucket": {"method": "query_likelihood", "micro_batch": 4, "bucket": False},
    "ql mb4 bucket": {"method": "query_likelihood", "micro_batch": 4, "bucket": True},
    "ql mb1 int8": {"method": "query_likelihood", "micro_batch": 1, "quantize": "int8"},
    "ql mb4 bucket int8": {"method": "query_likelihood", "micro_batch": 4, "quantize": "int8"},
    "judge mb1": {"method": "judgement", "micro_batch": 1, "prefix_cache": False},
    "judge mb1 prefix": {"method": "judgement", "micro_batch": 1, "prefix_cache": True},
    "judge-chat mb1": {"method": "judgement", "chat": True, "micro_batch": 1},
    "judge-chat mb1 prefix": {
        "method": "judgement",
        "chat": True,
        "micro_batch": 1,
        "prefix_cache": True,
    },
    "judge mb4 bucket": {"method": "judgement", "micro_batch": 4, "prefix_cache": False},
    "judge mb4 bucket prefix": {"method": "judgement", "micro_batch": 4, "prefix_cache": True},
    "ql mb1 threads2": {"method": "query_likelihood", "micro_batch": 1, "threads": 2},
}
DEFAULT_SPEED_VARIANTS = (
    "ql mb1",
    "ql mb4 no-bucket",
    "ql mb4 bucket",
    "ql mb1 int8",
    "judge-chat mb1",
    "judge-chat mb1 prefix",
    "ql mb1 threads2",
)
SPEED_TEXT_LIMIT = {"ql mb1 threads2": 2}
"""Variants too slow here to run on all k texts (oversubscribed threads)."""


# ---------------------------------------------------------------- data


def load_beir(folder: Path) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    """corpus (id -> text), queries (id -> text), qrels (query id -> doc id -> grade)."""
    corpus: dict[str, str] = {}
    with open(folder / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            title, text = d.get("title") or "", d.get("text") or ""
            corpus[str(d["_id"])] = text if text.startswith(title) else f"{title}. {text}".strip()
    queries: dict[str, str] = {}
    with open(folder / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            queries[str(d["_id"])] = d["text"]
    qrels: dict[str, dict[str, int]] = {}
    with open(folder / "qrels" / "test.tsv", encoding="utf-8") as f:
        next(f)
        for line in f:
            qid, did, grade = line.rstrip("\n").split("\t")
            qrels.setdefault(qid, {})[did] = int(grade)
    return corpus, queries, qrels


class CorpusBM25:
    """BM25 over the whole corpus (the first-stage retriever), with llmrerank's tokenizer."""

    def __init__(self, corpus: dict[str, str]) -> None:
        self.ids = list(corpus)
        self.model = BM25Okapi([tokenize(corpus[i]) for i in self.ids])

    def top(self, query: str, k: int) -> list[tuple[str, float]]:
        scores = self.model.get_scores(tokenize(query))
        best = np.argsort(-scores, kind="stable")[:k]
        return [(self.ids[i], float(scores[i])) for i in best]


class PrecomputedScorer:
    """The funnel's fast stage: the retriever's corpus-level BM25 scores, looked up by text."""

    fingerprint = "bm25-corpus"
    batch_size = 10_000
    max_concurrency = 1

    def __init__(self) -> None:
        self.scores: dict[tuple[str, str], float] = {}

    async def ascore(
        self, query: str, texts: Sequence[str], *, deadline: Deadline
    ) -> list[float | None]:
        return [self.scores.get((query, t)) for t in texts]


def ndcg10(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> float:
    from ranx import Qrels, Run, evaluate

    positive = {q: {d: g for d, g in r.items() if g > 0} for q, r in qrels.items() if q in run}
    return float(evaluate(Qrels(positive), Run(run), "ndcg@10"))


def rank_scores(ids: Sequence[str]) -> dict[str, float]:
    """Scores that reproduce an order exactly (ranx sorts by score)."""
    return {d: float(len(ids) - r) for r, d in enumerate(ids)}


# ---------------------------------------------------------------- quality


def quality(
    args: argparse.Namespace,
    corpus: dict[str, str],
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    bm25: CorpusBM25,
    log: Callable[[str], None],
) -> dict[str, Any]:
    judged = sorted((q for q in queries if any(g > 0 for g in qrels.get(q, {}).values())), key=int)
    sample = sorted(
        random.Random(args.seed).sample(judged, min(args.queries, len(judged))), key=int
    )
    pools = {q: bm25.top(queries[q], args.k) for q in sample}
    fast = PrecomputedScorer()
    for q, pool in pools.items():
        for d, s in pool:
            fast.scores[(queries[q], corpus[d])] = s
    runs: dict[str, dict[str, dict[str, float]]] = {
        "bm25": {q: rank_scores([d for d, _ in pool]) for q, pool in pools.items()},
        "oracle (best order of the BM25 top-k)": {
            q: {d: float(qrels[q].get(d, 0)) for d, _ in pool} for q, pool in pools.items()
        },
    }
    details: dict[str, Any] = {}
    bases: dict[Any, LocalLLMScorer] = {}
    for name in args.quality_variants:
        settings = QUALITY_VARIANTS[name]
        key = settings.get("quantize")
        if key not in bases:  # one model load per quantisation; variants share it
            bases[key] = LocalLLMScorer(quantize=key, threads=args.threads)
        scorer = bases[key].variant(**settings)
        scorer.load()
        bases[key] = scorer
        cache = MemoryScoreCache()
        t0, c0 = time.perf_counter(), time.process_time()
        for w in (1.0, *WEIGHTS):
            funnel = Funnel(
                fast=fast, llm=scorer, k=args.k, fusion=Fusion(llm_weight=w), cache=cache
            )
            label = f"{name} alone" if w == 1.0 else f"{name} + bm25 w={w}"
            run: dict[str, dict[str, float]] = {}
            for q, pool in pools.items():
                cands = [Candidate(id=d, text=corpus[d]) for d, _ in pool]
                ranking = funnel.rerank(queries[q], cands)
                run[q] = rank_scores(ranking.ids)
            runs[label] = run
            if w == 1.0:
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                st = scorer.stats
                details[name] = {
                    "fingerprint": scorer.fingerprint,
                    "texts": len(pools) * args.k,
                    "unscored_malformed": st.malformed,
                    "mean_label_mass": st.mean_label_mass,
                    "wall_s": round(wall, 1),
                    "cpu_s": round(cpu, 1),
                    "tokens": st.tokens,
                }
                log(f"  {name}: {details[name]}")
        del cache
    ndcg = {label: round(ndcg10(qrels, run), 4) for label, run in runs.items()}
    for label, value in ndcg.items():
        log(f"  nDCG@10 {label}: {value}")
    return {"queries": sample, "k": args.k, "ndcg@10": ndcg, "variants": details}


# ---------------------------------------------------------------- speed


def speed(
    args: argparse.Namespace,
    corpus: dict[str, str],
    queries: dict[str, str],
    bm25: CorpusBM25,
    log: Callable[[str], None],
) -> dict[str, Any]:
    qid = args.speed_query
    query = queries[qid]
    texts = [corpus[d] for d, _ in bm25.top(query, args.k)]
    results: dict[str, Any] = {}
    bases: dict[tuple[Any, Any], LocalLLMScorer] = {}
    scorers: dict[str, LocalLLMScorer] = {}
    for name in args.speed_variants:
        settings = {"threads": args.threads} | SPEED_VARIANTS[name]
        key = (settings.get("quantize"), settings["threads"])
        if key not in bases:  # one model load per quantisation; variants share it
            bases[key] = LocalLLMScorer(quantize=key[0], threads=key[1])
            bases[key].load()
        scorers[name] = bases[key].variant(**settings)
        scorers[name].score(query, texts[:2])  # warm-up (allocators, the quantised kernels)
    tokenizer = next(iter(bases.values()))._ensure_loaded().tokenizer
    text_tokens = [len(tokenizer(t)["input_ids"]) for t in texts]
    samples: dict[str, list[tuple[float, float, int, int, int]]] = {n: [] for n in scorers}
    for _ in range(args.repeats):  # interleaved, so load changes hit every variant alike
        for name, s in scorers.items():
            mine = texts[: SPEED_TEXT_LIMIT.get(name, len(texts))]
            tokens0, padded0 = s.stats.tokens, s.stats.padded_tokens
            t0, c0 = time.perf_counter(), time.process_time()
            for j in range(0, len(mine), s.batch_size):
                s.score(query, mine[j : j + s.batch_size])
            samples[name].append(
                (
                    time.perf_counter() - t0,
                    time.process_time() - c0,
                    s.stats.tokens - tokens0,
                    s.stats.padded_tokens - padded0,
                    len(mine),
                )
            )
            log(f"  {name}: {samples[name][-1][0]:.1f} s wall")
    for name, runs in samples.items():
        wall = float(np.median([r[0] for r in runs]))
        cpu = float(np.median([r[1] for r in runs]))
        tokens, padded, n = runs[0][2], runs[0][3], runs[0][4]
        results[name] = {
            "settings": SPEED_VARIANTS[name] | {"batch_size": scorers[name].batch_size},
            "texts": n,
            "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2),
            "cands_per_s": round(n / wall, 3),
            "tokens_per_s": round(tokens / wall, 1),
            "prompt_tokens": tokens,
            "computed_positions": padded,
            "runs_wall_s": [round(r[0], 2) for r in runs],
        }
    return {
        "query": qid,
        "k": len(texts),
        "text_tokens_mean": round(float(np.mean(text_tokens)), 1),
        "text_tokens_min_max": [min(text_tokens), max(text_tokens)],
        "repeats": args.repeats,
        "variants": results,
    }


# ---------------------------------------------------------------- report


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Local LLM scorer benchmark (llm_local)",
        "",
        "Command(s):",
        "",
        *[f"    {c}" for c in report.get("commands") or [report["command"]]],
        "",
        f"Machine: {report['machine']}. Load average at start / end: "
        f"{report['loadavg_start']} / {report['loadavg_end']} (a shared machine: absolute "
        "speeds are lower than on an idle one; variants were interleaved so they share the load).",
        "",
    ]
    if "quality" in report:
        q = report["quality"]
        lines += [
            f"## nDCG@10, BM25 top-{q['k']} reranked ({len(q['queries'])} seeded queries of "
            f"{report['data']})",
            "",
            "| ranking | nDCG@10 |",
            "|---|---|",
        ]
        lines += [f"| {label} | {v:.4f} |" for label, v in q["ndcg@10"].items()]
        lines += [
            "",
            "| variant | texts | malformed (unscored) | mean label mass | wall s | cpu s |",
        ]
        lines += ["|---|---|---|---|---|---|"]
        for name, d in q["variants"].items():
            mass = "-" if d["mean_label_mass"] is None else f"{d['mean_label_mass']:.3f}"
            lines.append(
                f"| {name} | {d['texts']} | {d['unscored_malformed']} | {mass} | "
                f"{d['wall_s']} | {d['cpu_s']} |"
            )
        lines.append("")
    if "speed" in report:
        s = report["speed"]
        lines += [
            f"## Speed: k={s['k']} texts of query {s['query']} (text tokens mean "
            f"{s['text_tokens_mean']}, min/max {s['text_tokens_min_max']}), median of "
            f"{s['repeats']}",
            "",
            "| variant | texts | cands/s | tokens/s | wall s | cpu s | prompt tokens | "
            "computed positions |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, d in s["variants"].items():
            lines.append(
                f"| {name} | {d['texts']} | {d['cands_per_s']} | {d['tokens_per_s']} | {d['wall_s']} | "
                f"{d['cpu_s']} | {d['prompt_tokens']} | {d['computed_positions']} |"
            )
        lines.append("")
    return "\n".join(lines)


def merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` added to an earlier report: parts and variants it did not run are kept, and every
    run's command is listed."""
    merged = {**old, **{k: v for k, v in new.items() if k not in ("quality", "speed")}}
    commands = old.get("commands") or [old["command"]]
    merged["commands"] = [*commands, new["command"]]
    for part in ("quality", "speed"):
        if part not in new:
            continue
        if part not in old:
            merged[part] = new[part]
            continue
        if part == "quality" and old[part]["queries"] != new[part]["queries"]:
            raise SystemExit("--update: the query sample differs from the earlier run's")
        merged[part] = {**old[part], **new[part]}
        for key in ("ndcg@10", "variants"):
            if key in old[part]:
                merged[part][key] = {**old[part][key], **new[part][key]}
    return merged


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data/cranfield"))
    p.add_argument("--queries", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--threads", type=int, default=default_threads())
    p.add_argument("--parts", default="speed,quality")
    p.add_argument("--quality-variants", default="ql-int8,judge-int8,judge-chat-int8,ql")
    p.add_argument("--speed-variants", default=",".join(DEFAULT_SPEED_VARIANTS))
    p.add_argument("--speed-query", default="1")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    p.add_argument(
        "--update", action="store_true", help="merge into an existing report (parts run apart)"
    )
    args = p.parse_args(argv)
    args.quality_variants = [v for v in args.quality_variants.split(",") if v]
    args.speed_variants = [v for v in args.speed_variants.split(",") if v]
    for v in args.quality_variants:
        if v not in QUALITY_VARIANTS:
            p.error(f"unknown quality variant {v!r}; choose from {list(QUALITY_VARIANTS)}")
    for v in args.speed_variants:
        if v not in SPEED_VARIANTS:
            p.error(f"unknown speed variant {v!r}; choose from {list(SPEED_VARIANTS)}")
    parts = set(args.parts.split(","))

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    start = time.perf_counter()
    report: dict[str, Any] = {
        "command": "PYTHONPATH=core python " + " ".join(shlex.quote(a) for a in sys.argv),
        "data": str(args.data.name),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{args.threads} torch threads",
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }
    corpus, queries, qrels = load_beir(args.data)
    bm25 = CorpusBM25(corpus)
    if "speed" in parts:
        log("speed")
        report["speed"] = speed(args, corpus, queries, bm25, log)
    if "quality" in parts:
        log("quality")
        report["quality"] = quality(args, corpus, queries, qrels, bm25, log)
    report["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["total_wall_s"] = round(time.perf_counter() - start, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "llm_local.json"
    with open(args.out / ".llm_local.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # runs of different parts may finish at once
        if args.update and path.exists():
            report = merge(json.loads(path.read_text()), report)
        path.write_text(json.dumps(report, indent=2) + "\n")
        (args.out / "llm_local.md").write_text(markdown(report))
    log(f"wrote {args.out / 'llm_local.json'} and {args.out / 'llm_local.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

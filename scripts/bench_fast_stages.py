"""Benchmark of the first stages: speed, cache latency and nDCG@10 of each stage alone.

    PYTHONPATH=core python scripts/bench_fast_stages.py [--data ../shared/data] [--threads 2]

Writes docs/benchmarks/fast_stages.json and .md. What it measures:

1. Candidates per second for 300 candidates of ~200 word-piece tokens (Cranfield abstracts),
   median of ``--repeats`` runs, per scorer: BM25, dense (embedded all-MiniLM-L6-v2), a
   cross-encoder *of the MiniLM-L6 architecture* (the MiniLM weights with an untrained one-label
   head: the speed of ms-marco-MiniLM-L6-v2 class models, since no pretrained cross-encoder is
   installed here), and hybrid BM25 + dense.
2. BM25 and dense on 10,000 candidates (one run each).
3. Score-cache lookup latency: memory and SQLite, 1 and 20 texts a lookup, all hits.
4. nDCG@10 on judged queries only (ranx): BM25 (bm25s over the whole corpus, stemmed, stopwords
   removed) retrieves the top 100, which each first stage then reranks alone. The corpus
   embeddings of the dense stage are computed once and passed as precomputed embeddings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from llmrerank.budget import Deadline
from llmrerank.cache import MemoryScoreCache, SQLiteScoreCache
from llmrerank.scorers import (
    BM25Scorer,
    CrossEncoderScorer,
    DenseScorer,
    HybridScorer,
    PrecomputedEmbeddings,
    Scorer,
)

ROOT = Path(__file__).resolve().parent.parent


def load_collection(path: Path) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    corpus = {}
    for line in (path / "corpus.jsonl").open():
        d = json.loads(line)
        title, text = d.get("title") or "", d.get("text") or ""
        corpus[str(d["_id"])] = (
            text if title and text.startswith(title) else f"{title} {text}".strip()
        )
    queries = {str(q["_id"]): q["text"] for q in map(json.loads, (path / "queries.jsonl").open())}
    qrels: dict[str, dict[str, int]] = {}
    for i, line in enumerate((path / "qrels" / "test.tsv").open()):
        if i == 0:
            continue
        qid, did, score = line.rstrip("\n").split("\t")
        qrels.setdefault(qid, {})[did] = int(score)
    judged = {q: t for q, t in queries.items() if any(v > 0 for v in qrels.get(q, {}).values())}
    return corpus, judged, qrels


def bm25_top(corpus: dict[str, str], queries: dict[str, str], k: int) -> dict[str, list[str]]:
    import bm25s
    import Stemmer

    ids = list(corpus)
    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize(
            [corpus[i] for i in ids], stopwords="en", stemmer=stemmer, show_progress=False
        ),
        show_progress=False,
    )
    qids = list(queries)
    tokens = bm25s.tokenize(
        [queries[q] for q in qids], stopwords="en", stemmer=stemmer, show_progress=False
    )
    docs, _ = retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
    return {q: [ids[j] for j in row] for q, row in zip(qids, docs, strict=True)}


def ndcg10(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> float:
    from ranx import Qrels, Run, evaluate

    q = Qrels({k: v for k, v in qrels.items() if k in run})
    return float(evaluate(q, Run(run), "ndcg@10"))


async def rerank_run(
    scorer: Scorer, queries: dict[str, str], top: dict[str, list[str]], corpus: dict[str, str]
) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    for qid, query in queries.items():
        ids = top[qid]
        scores = await scorer.ascore(query, [corpus[i] for i in ids], deadline=Deadline.never())
        # Unscored candidates go last, in BM25 order.
        run[qid] = {
            d: (s if s is not None else -1e9 - r)
            for r, (d, s) in enumerate(zip(ids, scores, strict=True))
        }
    return run


async def throughput(
    scorer: Scorer, query: str, texts: list[str], repeats: int
) -> dict[str, float]:
    await scorer.ascore(query, texts[:8], deadline=Deadline.never())  # load and warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        scores = await scorer.ascore(query, texts, deadline=Deadline.never())
        times.append(time.perf_counter() - t0)
        assert sum(s is not None for s in scores) == len(texts)
    med = statistics.median(times)
    return {"seconds": round(med, 4), "candidates_per_s": round(len(texts) / med, 1)}


def cache_latency(tmp: Path, reps: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    texts = [f"candidate text number {i} " * 20 for i in range(20)]
    for name, cache in (
        ("memory", MemoryScoreCache()),
        ("sqlite", SQLiteScoreCache(tmp / "bench.db")),
    ):
        for _ in range(100):  # other rows, so lookups do not hit a one-page table
            cache.put_many("fp", f"q{_}", texts, [1.0] * len(texts))
        cache.put_many("fp", "query", texts, [float(i) for i in range(20)])
        for n in (1, 20):
            samples = []
            for _ in range(reps):
                t0 = time.perf_counter()
                got = cache.get_many("fp", "query", texts[:n])
                samples.append(time.perf_counter() - t0)
                assert None not in got
            samples.sort()
            out[f"{name}_{n}"] = {
                "p50_us": round(samples[len(samples) // 2] * 1e6, 1),
                "p99_us": round(samples[int(len(samples) * 0.99)] * 1e6, 1),
            }
        t0 = time.perf_counter()
        for i in range(reps // 10):
            cache.put_many("fp", f"w{i}", texts, [1.0] * 20)
        out[f"{name}_put20"] = {
            "mean_us": round((time.perf_counter() - t0) / (reps // 10) * 1e6, 1)
        }
    return out


def minilm_cross_encoder(tmp: Path) -> Path:
    """The MiniLM-L6 weights under an untrained one-label head: a speed proxy only."""
    import transformers
    from llmrerank.models import minilm_path

    src = minilm_path()
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(src), num_labels=1)
    tok = transformers.AutoTokenizer.from_pretrained(str(src))
    tok.model_max_length = 512
    model.save_pretrained(str(tmp / "ce"))
    tok.save_pretrained(str(tmp / "ce"))
    return tmp / "ce"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--collections", default="cranfield,cisi")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-10k-dense", action="store_true")
    parser.add_argument(
        "--dense-10k-words",
        type=int,
        default=16,
        help="words kept per text for dense on 10,000 candidates (0: whole abstracts)",
    )
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "fast_stages"))
    args = parser.parse_args()

    import torch
    import transformers

    torch.set_num_threads(args.threads)
    transformers.logging.disable_progress_bar()
    data = Path(args.data)
    tmp = Path(tempfile.mkdtemp(prefix="bench-fast-"))
    report: dict[str, Any] = {
        "command": "PYTHONPATH=core python scripts/bench_fast_stages.py "
        + shlex.join(sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "torch_threads": args.threads,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
    }
    dense = DenseScorer(batch_size=32)
    dense.load()

    # ---- speed: 300 candidates of ~200 tokens
    corpus, queries, _ = load_collection(data / "cranfield")
    tok = dense.load().tokenizer
    pool = [t for t in corpus.values() if 170 <= len(tok(t)["input_ids"]) <= 240]
    texts = (pool * (300 // len(pool) + 1))[:300]
    mean_tokens = statistics.mean(len(tok(t)["input_ids"]) for t in texts)
    query = next(iter(queries.values()))
    cross = CrossEncoderScorer(minilm_cross_encoder(tmp), batch_size=16)
    speed: dict[str, Any] = {"candidates": len(texts), "mean_tokens": round(mean_tokens, 1)}
    for name, scorer in (
        ("bm25", BM25Scorer()),
        ("dense_minilm", dense),
        ("cross_encoder_minilm_l6_arch", cross),
        ("hybrid_bm25_dense_rrf", HybridScorer(BM25Scorer(), dense)),
    ):
        speed[name] = await throughput(scorer, query, texts, args.repeats)
        print(name, speed[name], flush=True)
    report["speed_300"] = speed

    # ---- 10,000 candidates
    big = (list(corpus.values()) * 8)[:10_000]
    big = [f"{t} ({i})" for i, t in enumerate(big)]
    ten: dict[str, Any] = {}
    scorers_10k: list[tuple[str, Scorer]] = [("bm25", BM25Scorer())]
    if not args.skip_10k_dense:
        scorers_10k.append(("dense_minilm", DenseScorer(batch_size=64)))
    for name, scorer in scorers_10k:
        batch = big
        if isinstance(scorer, DenseScorer):
            scorer.load()
            if args.dense_10k_words:
                batch = [" ".join(t.split()[: args.dense_10k_words]) for t in big]
        t0 = time.perf_counter()
        scores = await scorer.ascore(query, batch, deadline=Deadline.never())
        elapsed = time.perf_counter() - t0
        assert sum(s is not None for s in scores) == len(batch)
        ten[name] = {
            "seconds": round(elapsed, 2),
            "candidates_per_s": round(len(batch) / elapsed, 1),
            "mean_words": round(statistics.mean(len(t.split()) for t in batch), 1),
        }
        print("10k", name, ten[name], flush=True)
    report["ten_thousand"] = ten

    # ---- cache
    report["cache_lookup"] = cache_latency(tmp, 2000)
    print("cache", report["cache_lookup"], flush=True)

    # ---- quality
    quality: dict[str, Any] = {}
    for coll in args.collections.split(","):
        corpus, queries, qrels = load_collection(data / coll)
        top = bm25_top(corpus, queries, 100)
        first = {q: {d: 100.0 - r for r, d in enumerate(ids)} for q, ids in top.items()}
        store = PrecomputedEmbeddings()
        t0 = time.perf_counter()
        ids = list(corpus)
        vectors = dense.load().encode(
            [corpus[i] for i in ids],
            batch_size=32,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        for i, v in zip(ids, vectors, strict=True):
            store.add(corpus[i], v)
        encode_s = time.perf_counter() - t0
        dense_pre = DenseScorer(embeddings_from=store)
        dense_pre._model = dense.load()  # share the loaded model
        stages: dict[str, Scorer] = {
            "bm25_rerank": BM25Scorer(),
            "dense_minilm": dense_pre,
            "hybrid_bm25_dense_rrf": HybridScorer(BM25Scorer(), dense_pre),
            "hybrid_bm25_dense_interp_0.5": HybridScorer(
                BM25Scorer(), dense_pre, method="interpolate", weight=0.5
            ),
        }
        res: dict[str, Any] = {
            "judged_queries": len(queries),
            "corpus_docs": len(corpus),
            "corpus_encoding_s": round(encode_s, 1),
            "bm25s_top100_first_stage": round(ndcg10(qrels, first), 4),
        }
        for name, scorer in stages.items():
            res[name] = round(ndcg10(qrels, await rerank_run(scorer, queries, top, corpus)), 4)
        quality[coll] = res
        print(coll, res, flush=True)
    report["ndcg@10"] = quality
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print("wrote", out.with_suffix(".json"), out.with_suffix(".md"))


def rewrite_markdown(json_path: Path) -> None:
    """Regenerate the Markdown from a JSON report (no measuring)."""
    json_path.with_suffix(".md").write_text(markdown(json.loads(json_path.read_text())))


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        "# First-stage benchmark",
        "",
        f"Command: `{r['command']}`",
        "",
        f"Machine: {m['platform']}, Python {m['python']}, {m['cpus']} CPUs shared with other "
        f"work (load average {m['load_average_at_start'][0]} at start, "
        f"{m['load_average_at_end'][0]} at end), torch threads {m['torch_threads']}.",
        "",
        f"## Speed: {r['speed_300']['candidates']} candidates of ~{r['speed_300']['mean_tokens']:.0f} "
        "tokens (median of `--repeats` runs, default 3)",
        "",
        "| scorer | seconds | candidates/s |",
        "|---|---|---|",
    ]
    for name, v in r["speed_300"].items():
        if isinstance(v, dict):
            lines.append(f"| {name} | {v['seconds']} | {v['candidates_per_s']} |")
    lines += [
        "",
        "`cross_encoder_minilm_l6_arch` is the all-MiniLM-L6-v2 weights under an untrained head: "
        "the speed of a MiniLM-L6 cross-encoder (such as ms-marco-MiniLM-L6-v2), not a quality "
        "figure. The rerank-API scorer's speed is the provider's and is not measured here.",
        "",
        "The machine's two cores were shared with other jobs; model speeds vary with the load. "
        "For comparison, the dense stage encoded whole corpora (same kind of text, batch 32) at "
        + ", ".join(
            f"{v['corpus_docs'] / v['corpus_encoding_s']:.1f} docs/s ({c})"
            for c, v in r["ndcg@10"].items()
        )
        + " later in the same run, when the load average had fallen.",
        "",
        "## 10,000 candidates (one run)",
        "",
        "| scorer | words per text | seconds | candidates/s |",
        "|---|---|---|---|",
    ]
    for name, v in r["ten_thousand"].items():
        lines.append(f"| {name} | {v['mean_words']} | {v['seconds']} | {v['candidates_per_s']} |")
    lines += [
        "",
        "## Score-cache lookups (all hits)",
        "",
        "| cache | texts | p50 | p99 |",
        "|---|---|---|---|",
    ]
    for key, v in r["cache_lookup"].items():
        if "p50_us" in v:
            name, n = key.rsplit("_", 1)
            lines.append(f"| {name} | {n} | {v['p50_us']} µs | {v['p99_us']} µs |")
    for key, v in r["cache_lookup"].items():
        if "mean_us" in v:
            lines.append(
                f"\n{key.split('_')[0]}: storing 20 scores takes {v['mean_us']} µs on average."
            )
    lines += [
        "",
        "## nDCG@10, each first stage alone (judged queries only; ranx)",
        "",
        "BM25 (bm25s, English stemming, stopwords removed) retrieves the top 100 of the whole "
        "corpus; each stage reranks those 100 on its own. `bm25_rerank` is llmrerank's "
        "`BM25Scorer`, whose statistics come from the 100 candidates, not the corpus.",
        "",
    ]
    colls = list(r["ndcg@10"])
    lines.append("| stage | " + " | ".join(colls) + " |")
    lines.append("|---|" + "---|" * len(colls))
    rows = [
        k
        for k in r["ndcg@10"][colls[0]]
        if k not in ("judged_queries", "corpus_docs", "corpus_encoding_s")
    ]
    for row in rows:
        lines.append(f"| {row} | " + " | ".join(str(r["ndcg@10"][c][row]) for c in colls) + " |")
    lines.append(
        "| judged queries | "
        + " | ".join(str(r["ndcg@10"][c]["judged_queries"]) for c in colls)
        + " |"
    )
    lines += [
        "",
        "Sanity check: /work/shared/data/README.md gives BM25 nDCG@10 of 0.362 (cranfield) and "
        "0.396 (cisi) with bm25s; compare the `bm25s_top100_first_stage` row. The cross-encoder "
        "has no quality row: no pretrained cross-encoder installs here. `BM25Scorer` reranking "
        "the top 100 scores below corpus-level BM25 because its IDF comes from the 100 "
        "candidates only.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    asyncio.run(main())

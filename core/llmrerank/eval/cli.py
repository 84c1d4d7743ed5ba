"""``llmrerank bench --dataset DIR``: the benchmark from the command line.

:func:`add_quality_arguments` adds the options to the ``bench`` parser of :mod:`llmrerank.cli`
(which has ``--out``); :func:`run` runs them. ``python -m llmrerank.eval`` is the same command on
its own (:func:`add_bench_arguments` adds ``--out`` too).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import LLMRerankError
from .runner import ARM_ALIASES, ARM_NAMES, BenchConfig, run_benchmark

__all__ = ["add_bench_arguments", "add_quality_arguments", "main", "run"]

DEFAULT_OUT = Path("docs/benchmarks")


def _arms(value: str) -> tuple[str, ...]:
    if value.strip() == "all":
        return ARM_NAMES
    arms = tuple(ARM_ALIASES.get(a.strip(), a.strip()) for a in value.split(",") if a.strip())
    unknown = [a for a in arms if a not in ARM_NAMES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown arm(s) {', '.join(unknown)}; choose from: all, {', '.join(ARM_NAMES)}"
        )
    return arms


def add_quality_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the quality benchmark's options (all but ``--out``) to ``parser``: ``llmrerank bench``
    has ``--out`` already."""
    parser.add_argument(
        "--dataset",
        type=Path,
        help="a folder in BEIR layout: corpus.jsonl, queries.jsonl, qrels/test.tsv",
    )
    parser.add_argument(
        "--queries", type=int, default=None, help="judged queries to sample (default: all)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the query sample")
    parser.add_argument("--n", type=int, default=300, help="retrieved candidates per query")
    parser.add_argument(
        "--retriever",
        choices=("bm25", "dense"),
        default="bm25",
        help="the first stage over the whole corpus: BM25, or all-MiniLM-L6-v2 (document "
        "vectors computed once, cached under the cache directory)",
    )
    parser.add_argument("--k", type=int, default=20, help="the llm-only arm's LLM window")
    parser.add_argument(
        "--arms",
        type=_arms,
        default=ARM_NAMES,
        help=f"comma-separated arms, or 'all' (default): {', '.join(ARM_NAMES)}",
    )
    parser.add_argument(
        "--subset",
        type=int,
        default=10,
        help="candidates the generating baselines judge (the BM25 top SUBSET)",
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=64, help="generation cap of the generating baselines"
    )
    parser.add_argument(
        "--llm",
        choices=("local", "scripted"),
        default="local",
        help="the funnel's LLM scorer: the embedded model, or a scripted stand-in (harness checks)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--name", default=None, help="output file stem (default: dataset name)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the warm-up query")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--no-share-scores",
        action="store_true",
        help="the -nodl arms compute every LLM score themselves (default: they reuse what their "
        "deadline arm computed for the query)",
    )
    return parser


def add_bench_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Every option of the quality benchmark, ``--out`` included (the standalone command)."""
    add_quality_arguments(parser)
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})"
    )
    return parser


def run(args: argparse.Namespace, command: str) -> int:
    """Run the benchmark described by ``args`` (from :func:`add_bench_arguments`); writes JSON,
    Markdown and PNG under ``args.out``; ``command`` is recorded in them. Returns an exit code."""
    from .report import write_report

    if args.dataset is None:
        print("llmrerank bench: --dataset DIR is required (a BEIR-layout folder)", file=sys.stderr)
        return 2
    logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets itself to DEBUG
    config = BenchConfig(
        dataset=args.dataset,
        n=args.n,
        retriever=args.retriever,
        k=args.k,
        queries=args.queries,
        seed=args.seed,
        arms=tuple(args.arms),
        subset=args.subset,
        max_new_tokens=args.max_new_tokens,
        llm=args.llm,
        threads=args.threads,
        warmup=not args.no_warmup,
        share_scores=not args.no_share_scores,
        progress=not args.no_progress,
        command=command,
    )
    try:
        result = run_benchmark(config)
    except LLMRerankError as exc:
        print(f"llmrerank bench: {exc}", file=sys.stderr)
        return 2
    stem = args.name or (
        result["dataset"]["name"]
        + ("" if config.retriever == "bm25" else f"-{config.retriever}")
        + ("-scripted" if config.llm == "scripted" else "")
    )
    paths = write_report(result, Path(args.out), stem=stem)
    for arm in result["arms"]:
        print(
            f"{arm['name']:<24} nDCG@10 {arm['metrics']['ndcg@10']:.3f}  "
            f"p50 {arm['latency_s']['p50'] * 1000:10.1f} ms"
        )
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m llmrerank.eval``: the quality benchmark on its own."""
    parser = add_bench_arguments(
        argparse.ArgumentParser(prog="python -m llmrerank.eval", description=__doc__)
    )
    words = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(words)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run(args, shlex.join(["python", "-m", "llmrerank.eval", *words]))

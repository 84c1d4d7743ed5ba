"""``llmrerank bench --dataset DIR``: the benchmark from the command line.

:func:`add_bench_arguments` adds the options to a parser (``llmrerank bench`` in
:mod:`llmrerank.cli`); :func:`run_bench` runs them. ``python -m llmrerank.eval`` is the same
command on its own.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import LLMRerankError
from .runner import ARM_NAMES, BenchConfig, run_benchmark

__all__ = ["add_bench_arguments", "add_bench_parser", "main", "run_bench"]

DEFAULT_OUT = Path("docs/benchmarks")


def _arms(value: str) -> tuple[str, ...]:
    if value.strip() == "all":
        return ARM_NAMES
    arms = tuple(a.strip() for a in value.split(",") if a.strip())
    unknown = [a for a in arms if a not in ARM_NAMES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown arm(s) {', '.join(unknown)}; choose from: all, {', '.join(ARM_NAMES)}"
        )
    return arms


def add_bench_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the benchmark's options to ``parser``; ``--dataset`` selects a collection."""
    parser.add_argument(
        "--dataset",
        type=Path,
        help="a folder in BEIR layout: corpus.jsonl, queries.jsonl, qrels/test.tsv",
    )
    parser.add_argument(
        "--queries", type=int, default=None, help="judged queries to sample (default: all)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the query sample")
    parser.add_argument("--n", type=int, default=300, help="BM25 candidates per query")
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
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})"
    )
    parser.add_argument("--name", default=None, help="output file stem (default: dataset name)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the warm-up query")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``bench`` on an ``add_subparsers()`` object; returns the new parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="measure quality and latency of every arm on a relevance-judged collection",
        description="Benchmark llmrerank against BM25, dense, naive LLM and framework "
        "rerankers on a BEIR-layout collection.",
    )
    add_bench_arguments(parser)
    parser.set_defaults(handler=run_bench)
    return parser


def run_bench(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    """Run the benchmark described by ``args``; writes JSON, Markdown and PNG; returns 0."""
    from .report import write_report

    if args.dataset is None:
        print("llmrerank bench: --dataset DIR is required", file=sys.stderr)
        return 2
    words = list(sys.argv[1:] if argv is None else argv)
    config = BenchConfig(
        dataset=args.dataset,
        n=args.n,
        k=args.k,
        queries=args.queries,
        seed=args.seed,
        arms=tuple(args.arms),
        subset=args.subset,
        max_new_tokens=args.max_new_tokens,
        llm=args.llm,
        threads=args.threads,
        warmup=not args.no_warmup,
        progress=not args.no_progress,
        command=shlex.join(["llmrerank", *words]),
    )
    try:
        result = run_benchmark(config)
    except LLMRerankError as exc:
        print(f"llmrerank bench: {exc}", file=sys.stderr)
        return 2
    stem = args.name or (
        result["dataset"]["name"] + ("-scripted" if config.llm == "scripted" else "")
    )
    paths = write_report(result, args.out, stem=stem)
    for arm in result["arms"]:
        print(
            f"{arm['name']:<24} nDCG@10 {arm['metrics']['ndcg@10']:.3f}  "
            f"p50 {arm['latency_s']['p50'] * 1000:8.0f} ms"
        )
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m llmrerank.eval``: the ``bench`` command on its own."""
    parser = add_bench_arguments(
        argparse.ArgumentParser(prog="llmrerank bench", description=__doc__)
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets itself to DEBUG
    words = list(sys.argv[1:] if argv is None else argv)
    return run_bench(args, ["bench", *words])

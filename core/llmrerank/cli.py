"""The ``llmrerank`` command: ``rerank``, ``bench`` and ``serve``."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import LLMRerankError
from .funnel import Funnel
from .presets import PRESETS
from .types import Candidate, Ranking

__all__ = ["main"]

DEMO_DOCS = [
    "Use open() with a for loop: `for line in open(path):` yields the file one line at a time.",
    "The pathlib module offers Path.read_text() to read a whole file into a string at once.",
    "readlines() returns a list containing every line of the file, which uses memory for all.",
    "To write a file, open it with mode 'w' and call write(); the with statement closes it.",
    "The csv module reads comma-separated files row by row with csv.reader.",
    "Lists are mutable sequences; append() adds an item at the end.",
    "A dictionary maps keys to values; iterate over items() to get both.",
    "The json module parses JSON text with json.loads and reads a file with json.load.",
    "fileinput.input() iterates over lines from several files or standard input.",
    "Exceptions are raised with raise and caught with try/except blocks.",
]


def _read_docs(path: Path) -> list[Candidate]:
    """One document a line; ``.jsonl`` lines are objects with ``text`` (and ``id``)."""
    out = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            if path.suffix == ".jsonl":
                obj = json.loads(line)
                out.append(Candidate(id=str(obj.get("id", obj.get("_id", i))), text=obj["text"]))
            else:
                out.append(Candidate(id=str(i), text=line.rstrip("\n")))
    return out


def _print_ranking(ranking: Ranking, as_json: bool, top: int | None) -> None:
    results = ranking.top_k(top) if top else list(ranking)
    if as_json:
        payload = {
            "query": ranking.query,
            "results": [{"id": r.id, "text": r.text, **r.provenance()} for r in results],
            "provenance": ranking.provenance(),
        }
        print(json.dumps(payload, indent=2, ensure_ascii=False))
        return
    prov = ranking.provenance()
    status = "DEGRADED (" + ", ".join(ranking.reasons) + ")" if ranking.degraded else "complete"
    print(f"query: {ranking.query}")
    print(
        f"ranking: {status}; LLM scored {ranking.llm_scored}/{ranking.k}; "
        + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in prov["timings"].items())
    )
    print(f"stages: fast={prov.get('fast_scorer')} llm={prov.get('llm_scorer')}")
    for r in results:
        fast = "-" if r.fast_score is None else f"{r.fast_score:.3f}"
        llm = "-" if r.llm_score is None else f"{r.llm_score:.3f}"
        text = r.text if len(r.text) <= 90 else r.text[:87] + "..."
        print(f"{r.rank + 1:>3}. [{r.id}] score={r.score:+.3f} {r.stage:<5} fast={fast} llm={llm}")
        print(f"     {text}")


def _cmd_rerank(args: argparse.Namespace) -> int:
    cands: list[Any] = []
    if args.file:
        cands.extend(_read_docs(Path(args.file)))
    cands.extend(Candidate(id=f"arg{i}", text=t) for i, t in enumerate(args.docs))
    if args.demo or not cands:
        cands.extend(Candidate(id=f"demo{i}", text=t) for i, t in enumerate(DEMO_DOCS))
    overrides: dict[str, Any] = {}
    if args.k is not None:
        overrides["k"] = args.k
    if args.deadline is not None:
        overrides["deadline"] = args.deadline if args.deadline > 0 else None
    funnel = Funnel.from_preset(
        args.preset, llm=None if args.llm == "none" else "default", **overrides
    )
    ranking = funnel.rerank(args.query, cands, input_ranked=not args.unordered)
    _print_ranking(ranking, args.json, args.top)
    return 0


def _cmd_bench(args: argparse.Namespace, argv: Sequence[str]) -> int:
    command = "llmrerank " + " ".join(shlex.quote(a) for a in argv)
    if args.target == "engine":
        from .bench_engine import run_engine_bench

        result = run_engine_bench(
            Path(args.out), requests=args.requests, deadline=args.deadline, command=command
        )
        print((Path(args.out) / "engine.md").read_text())
        return 0 if all(result["targets"].values()) else 1
    from ._optional import require

    if args.target == "serve":
        from .bench_serve import run_serve_bench

        dataset = getattr(args, "dataset", None)
        result = run_serve_bench(
            Path(args.out),
            dataset=Path(dataset) if dataset else None,
            duration=args.duration,
            concurrency=args.concurrency,
            command=command,
        )
        print((Path(args.out) / "serve_scaling.md").read_text())
        return 0 if result["valid"] else 1
    if args.target == "calibrate":
        cal = require("llmrerank.eval.calibrate", extra="bench", feature="llmrerank bench")
        datasets = ([args.dataset] if getattr(args, "dataset", None) else []) + list(
            args.calib_dataset or []
        )
        result = cal.run_calibration(
            cal.CalibrateConfig(
                datasets=tuple(Path(d) for d in datasets),
                presets=tuple(p.strip() for p in args.presets.split(",") if p.strip()),
                queries=getattr(args, "queries", None) or 60,
                llm_queries=args.llm_queries,
                n=getattr(args, "n", 50),
                seed=getattr(args, "seed", 0),
                llm=getattr(args, "llm", "local"),
                cache=Path(args.cache),
                out=Path(args.out),
                params_out=Path(args.params_out) if args.params_out else None,
                command=command,
                smoke=args.smoke,
            )
        )
        print((Path(args.out) / "calibration.md").read_text())
        return 0 if result["meta"]["points"] else 1
    quality = require("llmrerank.eval.cli", extra="bench", feature="llmrerank bench")
    return int(quality.run(args, command))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmrerank", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("rerank", help="rerank documents for a query and print the provenance")
    p.add_argument("query")
    p.add_argument("docs", nargs="*", help="documents as arguments")
    p.add_argument("--file", help="a file of documents: one a line, or .jsonl with 'text'")
    p.add_argument("--demo", action="store_true", help="add a small built-in demo document set")
    p.add_argument("--preset", default="enterprise", choices=sorted(PRESETS))
    p.add_argument("--deadline", type=float, help="seconds; 0 for none (default: the preset's)")
    p.add_argument("--k", type=int, help="how many candidates the LLM scores")
    p.add_argument(
        "--llm",
        default="default",
        choices=["default", "none"],
        help="'default': the embedded CPU model; 'none': the fast stage only",
    )
    p.add_argument(
        "--unordered",
        action="store_true",
        help="the documents' order carries no meaning (default: they are ranked, best first)",
    )
    p.add_argument("--top", type=int, help="print only the top N")
    p.add_argument("--json", action="store_true", help="print JSON")

    b = sub.add_parser(
        "bench",
        help="benchmarks: 'engine' (overhead, deadlines), quality, 'calibrate' (relevance "
        "scores in [0, 1]), 'serve' (1 and 2 workers, the Redis cache, Redis outages), "
        "'fusion' (the fast stage's fusion and the LLM weight, see llmrerank bench fusion "
        "--help) or 'llm-speed' (every LLM backend on one workload, see "
        "llmrerank bench llm-speed --help)",
    )
    b.add_argument(
        "target",
        nargs="?",
        default="quality",
        choices=["engine", "quality", "calibrate", "serve"],
    )
    b.add_argument("--out", default="docs/benchmarks", help="directory for the result files")
    b.add_argument("--requests", type=int, default=300, help="engine: requests per measurement")
    b.add_argument("--deadline", type=float, default=0.5, help="engine: deadline in seconds")
    b.add_argument(
        "--duration", type=float, default=8.0, help="serve: seconds of load per measurement"
    )
    b.add_argument("--concurrency", type=int, default=8, help="serve: clients in the closed loop")
    b.add_argument(
        "--calib-dataset",
        action="append",
        help="calibrate: another BEIR-layout folder to fit on (repeatable; with --dataset)",
    )
    b.add_argument(
        "--llm-queries", type=int, default=12, help="calibrate: queries the LLM stage ranks"
    )
    b.add_argument(
        "--presets", default=",".join(PRESETS), help="calibrate: comma-separated presets"
    )
    b.add_argument(
        "--cache",
        default=".cache/calibrate-llm.sqlite",
        help="calibrate: SQLite cache of LLM scores (re-runs cost no model calls)",
    )
    b.add_argument(
        "--params-out", help="calibrate: parameters file (default: the package's data file)"
    )
    b.add_argument("--smoke", action="store_true", help="calibrate: label the fit a smoke fit")
    try:
        from .eval.cli import add_quality_arguments
    except ImportError:
        pass
    else:
        add_quality_arguments(b)

    try:
        from .serve.cli import add_serve_parser
    except ImportError:
        pass
    else:
        add_serve_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["bench", "fusion"]:  # the fusion study has its own options
        from .eval.fusion_study import main as fusion_main

        return fusion_main(argv[2:])
    if argv[:2] == ["bench", "llm-speed"]:  # so has the LLM speed table
        from .eval.llm_speed import main as speed_main

        return speed_main(argv[2:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "rerank":
            return _cmd_rerank(args)
        if args.command == "bench":
            return _cmd_bench(args, argv)
        handler = getattr(args, "handler", None)
        if handler is None:
            raise SystemExit(f"unknown command {args.command!r}")
        return int(handler(args))
    except LLMRerankError as exc:
        print(f"llmrerank: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

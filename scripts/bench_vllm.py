"""Throughput of the in-process vLLM scorer (VLLMScorer), both scoring methods.

Scores 20 short texts (~15-30 tokens) for one query, after a warm-up call; reports the median of
``--repeats`` runs as candidates/s, and the same 20 texts for 4 queries at once (the engine batches
across concurrent calls). Writes docs/benchmarks/llm_vllm.json (one entry per configuration,
replacing an entry with the same label) and regenerates docs/benchmarks/llm_vllm.md.

Run with the vLLM venv:
    .venv-vllm/bin/python scripts/bench_vllm.py --label cpu-eager-bf16 --eager --dtype bfloat16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from llmrerank.budget import Deadline
from llmrerank.prompts import JudgementTemplate
from llmrerank.scorers.llm_vllm import VLLMScorer

ROOT = Path(__file__).resolve().parent.parent
OUT_JSON = ROOT / "docs" / "benchmarks" / "llm_vllm.json"
OUT_MD = ROOT / "docs" / "benchmarks" / "llm_vllm.md"

QUERIES = [
    "what is the capital of france",
    "how do plants make food from sunlight",
    "who wrote romeo and juliet",
    "how to reset a forgotten email password",
]
TEXTS = [
    "Paris is the capital and largest city of France, on the river Seine.",
    "Bananas are a yellow tropical fruit rich in potassium.",
    "The stock market fell sharply on Tuesday after weak earnings reports.",
    "A goalkeeper must stay on the goal line during a penalty kick.",
    "Photosynthesis lets plants use sunlight, water and carbon dioxide to make sugar and oxygen.",
    "The Roman Empire was ruled by emperors for centuries.",
    "To change a car tyre, loosen the wheel nuts before jacking up the car.",
    "Jazz music developed in New Orleans in the early twentieth century.",
    "Romeo and Juliet is a tragedy written by William Shakespeare about two young lovers.",
    "Mount Everest is the highest mountain above sea level.",
    "Preheat the oven to 180 degrees before baking the bread.",
    "Electric cars use batteries instead of petrol engines.",
    "If you forgot your email password, click 'Forgot password' on the sign-in page.",
    "The blue whale is the largest animal ever known.",
    "Tomatoes grow best in warm weather with plenty of sun.",
    "The French Revolution began in 1789.",
    "Honey bees communicate the location of flowers with a waggle dance.",
    "A leap year has 366 days, with an extra day in February.",
    "The piano has 88 keys, 52 white and 36 black.",
    "Copper is a good conductor of electricity and heat.",
]


async def measure(scorer: VLLMScorer, repeats: int) -> dict[str, Any]:
    await scorer.ascore(QUERIES[0], TEXTS, deadline=Deadline.never())  # warm-up
    single = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        scores = await scorer.ascore(QUERIES[0], TEXTS, deadline=Deadline.never())
        single.append(time.perf_counter() - t0)
        assert sum(s is not None for s in scores) == len(TEXTS), scores
    t0 = time.perf_counter()
    await asyncio.gather(*(scorer.ascore(q, TEXTS, deadline=Deadline.never()) for q in QUERIES))
    multi = time.perf_counter() - t0
    med = statistics.median(single)
    return {
        "texts": len(TEXTS),
        "single_query_seconds_median": round(med, 4),
        "single_query_candidates_per_s": round(len(TEXTS) / med, 1),
        "single_query_runs_s": [round(s, 4) for s in single],
        "four_queries_concurrent_seconds": round(multi, 4),
        "four_queries_candidates_per_s": round(len(QUERIES) * len(TEXTS) / multi, 1),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    load_before = [round(x, 1) for x in os.getloadavg()]
    t0 = time.perf_counter()
    ql = VLLMScorer(
        args.model,
        method="query_likelihood",
        dtype=args.dtype,
        enforce_eager=args.eager,
        kv_cache_gib=args.kv_cache_gib,
    )
    await ql.start()
    startup = time.perf_counter() - t0
    judge = ql.with_method(
        "judgement", JudgementTemplate(labels={" Yes": 1.0, " No": 0.0}), min_label_mass=0.0
    )
    try:
        results = {
            "query_likelihood": await measure(ql, args.repeats),
            "judgement": await measure(judge, args.repeats),
        }
    finally:
        await ql.aclose()
    return {
        "label": args.label,
        "command": " ".join(["python", "scripts/bench_vllm.py", *sys.argv[1:]]),
        "model": Path(str(ql.model)).name,
        "dtype": args.dtype,
        "enforce_eager": args.eager,
        "device": args.device,
        "platform": platform.platform(),
        "engine_start_seconds": round(startup, 1),
        "load_average_1_5_15_before": load_before,
        "load_average_1_5_15_after": [round(x, 1) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(),
        "methods": results,
    }


def write(entry: dict[str, Any]) -> None:
    entries = json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else []
    entries = [e for e in entries if e.get("label") != entry["label"]] + [entry]
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    OUT_JSON.write_text(json.dumps(entries, indent=2) + "\n")
    lines = [
        "# In-process vLLM scorer throughput",
        "",
        "20 short texts (15-30 tokens) for one query (median of the repeats, after a warm-up), "
        "and the same 20 texts for 4 queries at once. Judgement uses the labels ' Yes'/' No'. "
        "Produced by `scripts/bench_vllm.py`; raw figures in `llm_vllm.json`.",
        "",
        "On the shared 2-core development machine the figures depend on what else runs: the "
        "1-minute load average before and after each run is recorded (a load of 10 on 2 cores "
        "means the engine got a fraction of one core).",
        "",
        "| configuration | device | load avg | engine start | method | 1 query: candidates/s | "
        "4 queries at once: candidates/s | command |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        for method, r in e["methods"].items():
            lines.append(
                f"| {e['label']} | {e['device']} | "
                f"{e['load_average_1_5_15_before'][0]}/{e['load_average_1_5_15_after'][0]} | "
                f"{e['engine_start_seconds']} s | {method} | "
                f"{r['single_query_candidates_per_s']} | {r['four_queries_candidates_per_s']} | "
                f"`{e['command']}` |"
            )
    OUT_MD.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":  # vLLM spawns its engine process: the guard is required
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model dir (default: embedded SmolLM2)")
    parser.add_argument("--label", required=True)
    parser.add_argument("--device", default="CPU, 2 shared cores")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--eager", action="store_true", help="enforce_eager (no torch.compile)")
    parser.add_argument("--kv-cache-gib", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    ns = parser.parse_args()
    result = asyncio.run(main(ns))
    write(result)
    print(json.dumps(result, indent=2))

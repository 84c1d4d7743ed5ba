"""``llmrerank bench engine``: what the engine itself costs, and how well it keeps a deadline.

1. Orchestration overhead: 300 candidates, zero-cost scorers in both stages, so every
   millisecond measured is the funnel's own (validation, ordering, fusion, assembly).
2. Deadline keeping: a heavy-tailed scorer (log-normal latency) under a deadline; every request
   must return a complete ranking, and p99 latency should stay within deadline + 50 ms.
"""

from __future__ import annotations

import asyncio
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .budget import Deadline
from .funnel import Funnel
from .testing import ScriptedScorer, heavy_tailed_latency
from .types import Candidate

__all__ = ["run_engine_bench"]


class _ZeroCostScorer:
    """Returns precomputed pseudo-random scores at once: the cost of scoring is ~0."""

    batch_size = 20

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def fingerprint(self) -> str:
        return f"zero-cost:{self.name}"

    async def ascore(
        self, query: str, texts: Sequence[str], *, deadline: Deadline
    ) -> list[float | None]:
        return [float(hash(t) % 1000) for t in texts]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[idx]


def _summary(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "p50_ms": round(_pct(ms, 50), 3),
        "p95_ms": round(_pct(ms, 95), 3),
        "p99_ms": round(_pct(ms, 99), 3),
        "max_ms": round(max(ms), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


def _candidates(n: int, seed: int = 0) -> list[Candidate]:
    rng = random.Random(seed)
    words = "cat dog kitten market recipe flour engine deadline rank model query text".split()
    return [
        Candidate(id=f"c{i}", text=" ".join(rng.choice(words) for _ in range(40))) for i in range(n)
    ]


async def _overhead(requests: int, n: int, k: int) -> dict[str, Any]:
    funnel = Funnel(fast=_ZeroCostScorer("fast"), llm=_ZeroCostScorer("llm"), k=k)
    cands = _candidates(n)
    for _ in range(20):
        await funnel.arerank("kitten recipe", cands)
    seconds = []
    for _ in range(requests):
        t0 = time.perf_counter()
        ranking = await funnel.arerank("kitten recipe", cands)
        seconds.append(time.perf_counter() - t0)
        assert len(ranking) == n
    return {"candidates": n, "k": k, "requests": requests, **_summary(seconds)}


async def _deadline(
    requests: int, n: int, k: int, deadline: float, median: float, concurrent: int
) -> dict[str, Any]:
    llm = ScriptedScorer(latency=heavy_tailed_latency(median, seed=1), name="heavy-tailed")
    funnel = Funnel(fast=_ZeroCostScorer("fast"), llm=llm, k=k, deadline=deadline, concurrency=8)
    cands = _candidates(n)
    seconds: list[float] = []
    complete = degraded = 0

    async def one() -> None:
        nonlocal complete, degraded
        t0 = time.perf_counter()
        ranking = await funnel.arerank("kitten recipe", cands)
        seconds.append(time.perf_counter() - t0)
        ids = ranking.ids
        complete += len(ids) == n and len(set(ids)) == n
        degraded += ranking.degraded

    for start in range(0, requests, concurrent):
        await asyncio.gather(*(one() for _ in range(min(concurrent, requests - start))))
    summary = _summary(seconds)
    return {
        "candidates": n,
        "k": k,
        "requests": requests,
        "concurrent_requests": concurrent,
        "deadline_ms": deadline * 1000,
        "scorer_latency": f"log-normal per call, median {median * 1000:.0f} ms, sigma 1.0",
        "complete_rate": complete / requests,
        "degraded_rate": degraded / requests,
        **summary,
        "p99_minus_deadline_ms": round(summary["p99_ms"] - deadline * 1000, 3),
    }


def run_engine_bench(
    out_dir: Path, *, requests: int = 300, deadline: float = 0.5, command: str = ""
) -> dict[str, Any]:
    """Run both measurements, write ``engine.json`` and ``engine.md`` into ``out_dir``."""
    overhead = asyncio.run(_overhead(requests, 300, 20))
    keeping = asyncio.run(
        _deadline(requests, 300, 20, deadline, median=deadline / 4, concurrent=10)
    )
    machine = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }
    targets = {
        "overhead_p50_under_2ms": overhead["p50_ms"] < 2.0,
        "p99_within_deadline_plus_50ms": keeping["p99_minus_deadline_ms"] <= 50.0,
        "all_rankings_complete": keeping["complete_rate"] == 1.0,
    }
    command = command or "llmrerank bench engine"
    result: dict[str, Any] = {
        "command": command,
        "machine": machine,
        "overhead_zero_cost_scorers": overhead,
        "deadline_heavy_tailed": keeping,
        "targets": targets,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "engine.json").write_text(json.dumps(result, indent=2) + "\n")
    o, d = overhead, keeping
    md = f"""# Engine benchmark

Command: `{command}` ({machine["platform"]}, Python {machine["python"]})

## Orchestration overhead (300 candidates, k=20, zero-cost scorers in both stages)

| requests | p50 | p95 | p99 | max | target p50 < 2 ms |
|---|---|---|---|---|---|
| {o["requests"]} | {o["p50_ms"]} ms | {o["p95_ms"]} ms | {o["p99_ms"]} ms | {o["max_ms"]} ms | {"met" if targets["overhead_p50_under_2ms"] else "NOT met"} |

## Deadline keeping ({d["scorer_latency"]}; deadline {d["deadline_ms"]:.0f} ms; {d["concurrent_requests"]} requests at a time)

| requests | complete | degraded | p50 | p95 | p99 | max | p99 - deadline | target <= 50 ms |
|---|---|---|---|---|---|---|---|---|
| {d["requests"]} | {d["complete_rate"]:.0%} | {d["degraded_rate"]:.0%} | {d["p50_ms"]} ms | {d["p95_ms"]} ms | {d["p99_ms"]} ms | {d["max_ms"]} ms | {d["p99_minus_deadline_ms"]} ms | {"met" if targets["p99_within_deadline_plus_50ms"] else "NOT met"} |
"""
    (out_dir / "engine.md").write_text(md)
    return result

"""Figures for the OpenAI-compatible scorer (``llmrerank.scorers.OpenAILLMScorer``).

1. Client overhead per request: what the scorer itself adds (prompt, JSON, httpx, parsing,
   retries/breaker bookkeeping), measured (a) in process against ``httpx.MockTransport`` (no
   socket at all) and (b) on loopback against a fault server answering instantly in a separate
   process, compared with a bare ``httpx`` POST of the same body.
2. Speed-up of concurrent over sequential scoring of k=20 short texts against each real server
   (llama-cpp-python's server, one process and two processes behind two URLs; vLLM's server).

Usage::

    python scripts/bench_llm_openai.py [--servers fake,llama-cpp,llama-cpp-x2,vllm] [--out docs/benchmarks]

Writes ``llm_openai.json`` and ``llm_openai.md`` to ``--out``. ``run()`` returns the same dict
(the ``llmrerank bench`` command can call it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from llmrerank import Deadline
from llmrerank.scorers import OpenAILLMScorer
from llmrerank.testing_servers import (
    VLLM_PYTHON,
    ManagedServer,
    free_port,
    llama_cpp_server,
    vllm_server,
)

QUERY = "what is the capital of france"
TEXTS = [
    "Paris is the capital and largest city of France.",
    "Bananas are yellow fruit rich in potassium.",
    "The stock market fell sharply on Monday.",
    "Lyon is a large city in France known for its food.",
    "Mount Everest is the highest mountain on Earth.",
    "The Louvre in Paris is the most visited museum.",
    "Coffee beans are roasted before brewing.",
    "France borders Spain, Italy, Germany and Belgium.",
    "Photosynthesis turns light into chemical energy.",
    "The Seine flows through the centre of Paris.",
    "Basketball is played by two teams of five.",
    "Marseille is a port city in southern France.",
    "Rome was the capital of the Roman Empire.",
    "Tea is the most consumed drink after water.",
    "Versailles was the seat of the French court.",
    "Jupiter is the largest planet in the solar system.",
    "Bordeaux is known for its wine.",
    "The Alps are a mountain range in Europe.",
    "Berlin is the capital of Germany.",
    "The French Revolution began in 1789.",
]
"""k=20 short texts (one request each)."""


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary_ms(values: Sequence[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(values) * 1000, 3),
        "p90_ms": round(_pct(values, 0.9) * 1000, 3),
        "n": len(values),
    }


# ---------------------------------------------------------------------- client overhead


def _canned(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    if body.get("echo"):
        prompt = body["prompt"]
        words = prompt.split(" ")
        tokens = [w if i == 0 else " " + w for i, w in enumerate(words)] + [" ?"]
        logprobs = {
            "tokens": tokens,
            "token_logprobs": [None] + [-1.0] * (len(tokens) - 1),
            "text_offset": [0] * len(tokens),
            "top_logprobs": None,
        }
    else:
        logprobs = {
            "tokens": [" yes"],
            "token_logprobs": [-0.4],
            "text_offset": [0],
            "top_logprobs": [{" yes": -0.4, " no": -1.2, " The": -3.0}],
        }
    return httpx.Response(200, json={"choices": [{"index": 0, "text": "", "logprobs": logprobs}]})


async def _time_calls(scorer: OpenAILLMScorer, n: int) -> list[float]:
    dl = Deadline.after(600)
    await scorer.ascore(QUERY, TEXTS[:1], deadline=dl)  # detection + warm-up
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        await scorer.ascore(QUERY, [TEXTS[i % len(TEXTS)]], deadline=dl)
        times.append(time.perf_counter() - t0)
    return times


async def client_overhead(n: int = 2000) -> dict[str, Any]:
    """Per-request time the client adds: in process (MockTransport) and on loopback."""
    out: dict[str, Any] = {}
    for method in ("judgement", "query_likelihood"):
        s = OpenAILLMScorer(
            "http://mock.invalid/v1",
            "m",
            method=method,  # type: ignore[arg-type]
            server="generic",
            transport=httpx.MockTransport(_canned),
        )
        out[f"mock_transport_{method}"] = _summary_ms(await _time_calls(s, n))
        await s.aclose()

    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "llmrerank.testing_servers",
        "--port",
        str(port),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        url = (await proc.stdout.readline()).decode().strip()
        s = OpenAILLMScorer(url, "m", method="judgement", server="generic")
        scorer_times = await _time_calls(s, n // 2)
        await s.aclose()
        payload = {
            "model": "m",
            "prompt": "Does the passage answer the query? Answer yes or no.\nQuery: q\n"
            "Passage: Paris is the capital of France.\nRelevant:",
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": 20,
        }
        raw: list[float] = []
        async with httpx.AsyncClient() as client:
            await client.post(url + "/completions", json=payload)
            for _ in range(n // 2):
                t0 = time.perf_counter()
                (await client.post(url + "/completions", json=payload)).json()
                raw.append(time.perf_counter() - t0)
    finally:
        proc.terminate()
        await proc.wait()
    out["loopback_scorer_judgement"] = _summary_ms(scorer_times)
    out["loopback_bare_httpx"] = _summary_ms(raw)
    out["loopback_added_by_scorer_median_ms"] = round(
        (statistics.median(scorer_times) - statistics.median(raw)) * 1000, 3
    )
    return out


# ---------------------------------------------------------------------- concurrency


async def concurrency_speedup(
    urls: list[str],
    method: str,
    *,
    concurrency: int = 8,
    rounds: int = 2,
    api_key: str | None = None,
) -> dict[str, Any]:
    """Wall time of scoring TEXTS (k=20) one request at a time vs ``concurrency`` in flight.

    Sequential and concurrent runs alternate (``rounds`` of each) so that a change in the
    machine's load hits both alike; the medians are compared."""
    result: dict[str, Any] = {"method": method, "k": len(TEXTS), "concurrency": concurrency}
    scorers = {
        label: OpenAILLMScorer(
            urls,
            "smollm2",
            method=method,  # type: ignore[arg-type]
            max_concurrency=conc,
            api_key=api_key,
            request_timeout=600,
        )
        for label, conc in (("sequential", 1), ("concurrent", concurrency))
    }
    times: dict[str, list[float]] = {label: [] for label in scorers}
    scored: dict[str, int] = {}
    for s in scorers.values():
        await s.avalidate()
        await s.ascore(QUERY, TEXTS[:1], deadline=Deadline.after(600))  # warm-up
    for _ in range(rounds):
        for label, s in scorers.items():
            t0 = time.perf_counter()
            scores = await s.ascore(QUERY, TEXTS, deadline=Deadline.after(1200))
            times[label].append(round(time.perf_counter() - t0, 3))
            scored[label] = sum(x is not None for x in scores)
    for label, s in scorers.items():
        await s.aclose()
        result[f"{label}_runs_s"] = times[label]
        result[f"{label}_s"] = round(statistics.median(times[label]), 3)
        result[f"{label}_scored"] = scored[label]
    result["speedup"] = round(result["sequential_s"] / result["concurrent_s"], 3)
    return result


async def _with_servers(servers: list[ManagedServer], method: str) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        for server in servers:
            stack.enter_context(server)
        return await concurrency_speedup([s.url for s in servers], method)


async def run(
    servers: Sequence[str] = ("fake", "llama-cpp", "llama-cpp-x2", "vllm"),
    *,
    vllm_available: bool = True,
) -> dict[str, Any]:
    results: dict[str, Any] = {
        "command": "python scripts/bench_llm_openai.py --servers " + ",".join(servers),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "model": "SmolLM2-135M-Instruct (llama.cpp: Q4_1 GGUF; vLLM: float32 transformers)",
    }
    if "fake" in servers:
        results["client_overhead"] = await client_overhead()
    runs: dict[str, Any] = {}
    if "llama-cpp" in servers:
        runs["llama-cpp-python x1"] = [
            await _with_servers([llama_cpp_server(threads=2)], "judgement"),
        ]
    if "llama-cpp-x2" in servers:
        runs["llama-cpp-python x2 (two URLs)"] = [
            await _with_servers(
                [llama_cpp_server(threads=1), llama_cpp_server(threads=1)], "judgement"
            ),
        ]
    if "vllm" in servers and vllm_available:
        server = vllm_server()
        with server:
            runs["vllm"] = [
                await concurrency_speedup([server.url], "judgement"),
                await concurrency_speedup([server.url], "query_likelihood"),
            ]
    results["concurrency"] = runs
    results["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return results


def to_markdown(results: dict[str, Any]) -> str:
    lines = [
        "# OpenAI-compatible scorer: client overhead and concurrency",
        "",
        f"Command: `{results['command']}`  ",
        f"Machine: {results['machine']['cpus']} CPUs shared with other jobs, load average "
        f"{results['machine']['loadavg_at_start']} at start, "
        f"{results['machine']['loadavg_at_end']} at end; Python {results['machine']['python']}.  ",
        f"Model: {results['model']}.",
        "",
    ]
    overhead = results.get("client_overhead")
    if overhead:
        lines += [
            "## Latency the client adds per request",
            "",
            "| measurement | median ms | p90 ms | n |",
            "|---|---|---|---|",
        ]
        for name, row in overhead.items():
            if isinstance(row, dict):
                lines.append(f"| {name} | {row['median_ms']} | {row['p90_ms']} | {row['n']} |")
        lines += [
            "",
            "`mock_transport_*`: the whole scorer call (prompt, JSON, httpx client, parsing, "
            "breaker and semaphore) with an in-process `httpx.MockTransport`: no socket, no "
            "server. `loopback_*`: a fault server answering at once in another process; the "
            f"scorer adds {overhead['loopback_added_by_scorer_median_ms']} ms at the median "
            "over a bare `httpx` POST of the same body.",
            "",
        ]
    runs = results.get("concurrency") or {}
    if runs:
        lines += [
            "## Concurrent vs sequential scoring (k=20 short texts)",
            "",
            "| server | method | sequential s (runs) | concurrent s, 8 in flight (runs) "
            "| speed-up (medians) | texts scored |",
            "|---|---|---|---|---|---|",
        ]
        for server, rows in runs.items():
            for r in rows:
                lines.append(
                    f"| {server} | {r['method']} | {r['sequential_s']} {r['sequential_runs_s']} "
                    f"| {r['concurrent_s']} {r['concurrent_runs_s']} | {r['speedup']}x "
                    f"| {r['concurrent_scored']}/{r['k']} |"
                )
        lines += [
            "",
            "Sequential and concurrent runs alternate; each figure is the median of its runs. "
            "llama-cpp-python serves one request at a time per process; vLLM batches concurrent "
            "requests into one forward pass.",
            "",
        ]
        load = max(results["machine"]["loadavg_at_start"] + results["machine"]["loadavg_at_end"])
        if load > 2 * (results["machine"]["cpus"] or 1):
            lines += [
                f"**Caveat: measured under a load average of up to {load:g} on "
                f"{results['machine']['cpus']} cores** (other jobs shared the machine). Under "
                "such contention a request that waits in a busy server's queue keeps that server "
                "on the CPU, while a sequential client leaves it idle between requests and pays "
                "the scheduling latency of every wake-up; that is the likely reason (not isolated "
                "here) why even a one-request-at-a-time llama-cpp-python process shows a speed-up. "
                "The x1 server ran 2 threads, the x2 servers 1 thread each, which may also explain "
                "why x2 is faster than x1 even sequentially under contention. Do not "
                "read these speed-ups as the servers' capacity: on an idle 2-core machine a model "
                "server is compute-bound and concurrency gains little (the issue's earlier "
                "measurement: vLLM CPU, query likelihood, 1.05x); the concurrency design pays off "
                "where the server has spare parallel capacity (GPU batching, replicas).",
                "",
            ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="fake,llama-cpp,llama-cpp-x2,vllm")
    parser.add_argument("--out", default="docs/benchmarks")
    parser.add_argument(
        "--render", action="store_true", help="only rewrite the Markdown from the JSON in --out"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.render:
        results = json.loads((out / "llm_openai.json").read_text())
        (out / "llm_openai.md").write_text(to_markdown(results))
        return
    results = asyncio.run(run(args.servers.split(","), vllm_available=os.path.exists(VLLM_PYTHON)))
    out.mkdir(parents=True, exist_ok=True)
    (out / "llm_openai.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "llm_openai.md").write_text(to_markdown(results))
    sys.stdout.write(to_markdown(results) + "\n")


if __name__ == "__main__":
    main()

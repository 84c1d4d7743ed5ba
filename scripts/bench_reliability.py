"""Load figures for docs/reliability.md: throughput and latency distribution under 200
concurrent requests, through the funnel and through the rerank service.

Scenarios (``--scenarios``, default all that can run here):

- ``funnel-scripted``: ``Funnel.arerank`` in process, LLM stage a ScriptedScorer with
  heavy-tailed latency (median 30 ms), 30 candidates, k=10, deadline 0.5 s.
- ``serve-scripted``: the same funnel behind the rerank service (the app ``llmrerank serve`` runs,
  uvicorn on 127.0.0.1 in a thread of this process), clients over HTTP.
- ``funnel-llamacpp``: ``Funnel.arerank`` with the OpenAI-compatible scorer against a real
  llama.cpp server (llama-cpp-python's, SmolLM2-135M GGUF) started here on a free port.
- ``serve-llamacpp``: ``llmrerank serve --llm openai`` (a subprocess) in front of that server.

Every response is checked complete (every candidate exactly once). Writes JSON (default
``docs/benchmarks/reliability.json``) with the command line and the machine's load.

    PYTHONPATH=core:tests/integration/reliability python scripts/bench_reliability.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration" / "reliability"))

import httpx  # noqa: E402
import psutil  # noqa: E402
from llmrerank import Funnel  # noqa: E402
from llmrerank.testing import ScriptedScorer, heavy_tailed_latency  # noqa: E402
from reliability_support import LiveServer, free_port, run_load  # noqa: E402

SCENARIOS = ["funnel-scripted", "serve-scripted", "funnel-llamacpp", "serve-llamacpp"]
N_DOCS = 30
DOCS = [
    f"passage {i} about {'apples' if i % 3 == 0 else 'pears'} and orchards" for i in range(N_DOCS)
]
REAL_DOCS = [
    "Paris is the capital of France.",
    "Bananas are yellow fruit.",
    "The Eiffel Tower stands in Paris.",
    "Cats sleep most of the day.",
    "France borders Spain and Italy.",
    "Tea is brewed from leaves.",
]


def scripted_funnel(deadline: float, instant: bool = False) -> Funnel:
    latency = 0.0 if instant else heavy_tailed_latency(0.03, seed=7)
    llm = ScriptedScorer(latency=latency, name="load")
    return Funnel(llm=llm, k=10, deadline=deadline, concurrency=8, name="enterprise")


async def funnel_load(funnel: Funnel, docs: list[str], total: int, concurrency: int) -> Any:
    async def request(i: int) -> Any:
        ranking = await funnel.arerank(f"question {i} about apples and France", docs)
        return ranking.ids, ranking.provenance()

    return await run_load(
        request,
        total=total,
        concurrency=concurrency,
        expected_ids=[str(i) for i in range(len(docs))],
    )


async def http_load(url: str, docs: list[str], total: int, concurrency: int, **extra: Any) -> Any:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=0)
    statuses: dict[int, int] = {}
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def request(i: int) -> Any:
            body = {"query": f"question {i} about apples and France", "documents": docs, **extra}
            r = await client.post("/v1/rerank", json=body)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code != 200:
                raise RuntimeError(f"{r.status_code}: {r.text[:200]}")
            data = r.json()
            return [str(x["index"]) for x in data["results"]], data["llmrerank"]

        result = await run_load(
            request,
            total=total,
            concurrency=concurrency,
            expected_ids=[str(i) for i in range(len(docs))],
        )
    result.statuses = statuses
    return result


def run_scripted(kind: str, total: int, concurrency: int, deadline: float) -> dict[str, Any]:
    """The scenario, and its calibration: the same requests with an instant LLM stage (what
    CPU queueing alone costs; the tests' p99 margin is 1.5 x its wall time + 0.25 s)."""
    out: dict[str, Any] = {
        "setup": f"{N_DOCS} candidates, k=10, deadline {deadline} s, ScriptedScorer LLM "
        "(log-normal latency, median 30 ms)",
        "concurrency": concurrency,
    }
    for label, instant in (("calibration_instant_llm", True), ("result", False)):
        funnel = scripted_funnel(deadline, instant=instant)
        if kind == "funnel-scripted":
            result = asyncio.run(funnel_load(funnel, DOCS, total, concurrency))
        else:
            from llmrerank.serve import ServeSettings, create_app

            app = create_app(
                ServeSettings(demo=False, max_concurrent=concurrency, max_queued=concurrency),
                funnel=funnel,
            )
            server = LiveServer(app).start()
            try:
                result = asyncio.run(http_load(server.url, DOCS, total, concurrency))
            finally:
                server.stop()
        if instant:
            out[label] = {"wall_s": round(result.wall, 3), "p99_s": round(result.percentile(99), 4)}
        else:
            out.update(result.summary())
    return out


def _llama_server() -> Any:
    from llmrerank.testing_servers import llama_cpp_server

    return llama_cpp_server(alias="smollm2", threads=1)


def run_llamacpp(
    kind: str, total: int, concurrency: int, deadline: float, k: int
) -> dict[str, Any]:
    from llmrerank.scorers.llm_openai import OpenAILLMScorer

    setup = (
        f"{len(REAL_DOCS)} short candidates, k={k}, deadline {deadline} s, llama-cpp-python server "
        "(SmolLM2-135M Q4_1 GGUF, 1 thread), judgement"
    )
    with _llama_server() as llama:
        if kind == "funnel-llamacpp":
            scorer = OpenAILLMScorer(llama.url, "smollm2", method="judgement")
            funnel = Funnel(llm=scorer, k=k, deadline=deadline, name="enterprise")

            async def go() -> Any:
                await funnel.arerank("capital of France", REAL_DOCS, deadline=50)  # warm-up
                try:
                    return await funnel_load(funnel, REAL_DOCS, total, concurrency)
                finally:
                    await scorer.aclose()

            result = asyncio.run(go())
            return {"setup": setup, **result.summary()}
        port = free_port()
        cmd = [
            sys.executable, "-m", "llmrerank", "serve", "--no-demo", "--llm", "openai",
            "--llm-endpoint", llama.url, "--llm-model", "smollm2", "--port", str(port),
            "--deadline", str(deadline), "--k", str(k), "--max-concurrent", str(concurrency),
            "--max-queued", str(concurrency), "--log-level", "warning",
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        try:
            _wait_http(f"http://127.0.0.1:{port}/healthz", proc)
            # Warm-up with time enough: server detection and the first score are not measured.
            httpx.post(
                f"http://127.0.0.1:{port}/v1/rerank",
                json={"query": "capital of France", "documents": REAL_DOCS, "deadline": 50},
                timeout=60,
            )
            ps = psutil.Process(proc.pid)
            rss0 = ps.memory_info().rss
            result = asyncio.run(
                http_load(f"http://127.0.0.1:{port}", REAL_DOCS, total, concurrency)
            )
            rss1 = ps.memory_info().rss
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
        return {
            "setup": setup + "; llmrerank serve --llm openai in a subprocess",
            **result.summary(),
            "server_rss_growth_mb": round((rss1 - rss0) / 1e6, 1),
        }


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=SCENARIOS)
    parser.add_argument("--total", type=int, default=1000, help="requests per scenario")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[200, 20])
    parser.add_argument("--deadline", type=float, default=0.5, help="scripted scenarios")
    parser.add_argument("--real-deadline", type=float, default=2.0, help="llama.cpp scenarios")
    parser.add_argument("--real-total", type=int, default=400, help="llama.cpp requests")
    parser.add_argument("--real-k", type=int, default=2)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "benchmarks" / "reliability.json"
    )
    args = parser.parse_args(argv)

    out: dict[str, Any] = {}
    if args.out.exists():
        out = json.loads(args.out.read_text())
    command = "PYTHONPATH=core python scripts/bench_reliability.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    out["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    scenarios = out.setdefault("scenarios", {})
    for name in args.scenarios:
        print(f"{name} ...", file=sys.stderr, flush=True)
        if name.endswith("scripted"):
            for conc in args.concurrency:
                key = name if conc == 200 else f"{name}@{conc}"
                scenarios[key] = run_scripted(name, args.total, conc, args.deadline)
                scenarios[key]["measured"] = time.strftime("%Y-%m-%d %H:%M")
                scenarios[key]["command"] = command
                scenarios[key]["load_average"] = [round(x, 1) for x in os.getloadavg()]
                print(key, json.dumps(scenarios[key], indent=1), file=sys.stderr)
            continue
        else:
            try:
                scenarios[name] = run_llamacpp(
                    name, args.real_total, max(args.concurrency), args.real_deadline, args.real_k
                )
            except ImportError as exc:
                print(f"{name} skipped: {exc}", file=sys.stderr)
                continue
        scenarios[name]["measured"] = time.strftime("%Y-%m-%d %H:%M")
        scenarios[name]["command"] = command
        scenarios[name]["load_average"] = [round(x, 1) for x in os.getloadavg()]
        print(json.dumps(scenarios[name], indent=1), file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

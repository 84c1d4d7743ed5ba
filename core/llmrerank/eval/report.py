"""Write a benchmark result: JSON (every figure), a Markdown table, a quality/latency plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .._optional import require

__all__ = ["markdown_report", "plot_frontier", "write_report"]


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}f}"
    return str(value)


def _ms(seconds: Any) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f}"


def markdown_report(result: dict[str, Any]) -> str:
    """The result as Markdown: settings, the BM25 check, one row per arm, the targets."""
    s, d, m = result["settings"], result["dataset"], result["machine"]
    check = result["retrieval"]["bm25_check"]
    lines = [
        f"# Benchmark: {d['name']}",
        "",
        "Produced by:",
        "",
        "```",
        result["command"] or "(run from Python)",
        "```",
        "",
        f"- dataset: `{d['name']}`: {d['documents']} documents, {d['judged_queries']} judged "
        f"queries; this run: {len(s['query_ids'])} queries (seeded sample, seed {s['seed']})"
        + (
            ""
            if s["warmup_query"] is None
            else f", plus warm-up query {s['warmup_query']} (not measured)"
        ),
        f"- candidates: the retriever's top {s['n']} ({s['retriever']}), the same for every arm",
        f"- LLM scorer: `{s['llm_scorer']}`; generating baselines: `{s['generator']}` "
        f"(greedy, max {s['max_new_tokens']} new tokens, BM25 top {s['subset']} only)",
        f"- machine: {m['platform']}, {m['cpu_count']} CPUs, torch threads "
        f"{m['torch_threads']}, load average {m['load_average_start']} at start, "
        f"{m['load_average_end']} at end (a shared machine: latencies are noisy)",
        f"- run: {result['started_utc']} .. {result['finished_utc']}",
        "",
        "BM25 check (all judged queries, depth 100): "
        f"nDCG@10 {_f(check['ndcg@10'])} (graded gains), {_f(check['ndcg_exp@10'])} "
        f"(exponential gains); README figure {_f(check['reference_ndcg@10'])}"
        + (
            f"; closest difference {_f(check.get('abs_diff_closest'), 4)} "
            f"({'within' if check.get('within_tolerance') else 'outside'} "
            f"{check.get('tolerance')})"
            if check.get("reference_ndcg@10") is not None
            else ""
        ),
        "",
        "| arm | nDCG@10 | MRR@10 | R@10 | R@100 | p50 ms | p95 ms | p99 ms | LLM calls/q "
        "| tokens/q (in+out) | LLM-judged/q | degraded | complete | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for a in result["arms"]:
        met, lat = a["metrics"], a["latency_s"]
        tokens_in, tokens_out = a["prompt_tokens_per_query"], a["completion_tokens_per_query"]
        tokens = f"{_f(tokens_in, 0)}+{_f(tokens_out, 0)}" if a["llm_calls_per_query"] else "-"
        lines.append(
            f"| {a['name']} | {_f(met['ndcg@10'])} | {_f(met['mrr@10'])} | "
            f"{_f(met['recall@10'])} | {_f(met['recall@100'])} | {_ms(lat['p50'])} | "
            f"{_ms(lat['p95'])} | {_ms(lat['p99'])} | {_f(a['llm_calls_per_query'], 1)} | "
            f"{tokens} | {_f(a['llm_judged_per_query'], 1)} | {_f(a['degraded_rate'], 2)} | "
            f"{_f(a['complete_rate'], 2)} | {_f(a['peak_rss_mib'], 0)} |"
        )
    notes = [a for a in result["arms"] if a.get("subset_note")]
    if notes:
        lines += ["", "Generating baselines (subset only, extrapolation labelled):", ""]
        for a in notes:
            lines.append(
                f"- **{a['name']}**: {a['subset_note']}: {_ms(a['per_candidate_s_p50'])} ms per "
                f"candidate (median) -> **extrapolated** {_ms(a['extrapolated_all_n_s_p50'])} ms "
                "per query for all candidates."
            )
    lines += ["", "Arms:", ""]
    lines += [f"- **{a['name']}**: {a['description']}" for a in result["arms"]]
    if result["targets"]:
        lines += ["", "Targets (this run):", "", "| target | figures | met |", "|---|---|---|"]
        for t in result["targets"]:
            figures = ", ".join(
                f"{k} {_fmt_target(v)}" for k, v in t.items() if k not in ("target", "met", "note")
            )
            lines.append(f"| {t['target']} | {figures} | {'yes' if t['met'] else '**no**'} |")
    lines += [
        "",
        "Token counts: generating arms count prompt + generated tokens exactly; llmrerank arms "
        f"count prompt tokens only ({s['token_counting']}); they generate nothing.",
        "",
    ]
    return "\n".join(lines)


def _fmt_target(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_f(v)}" for k, v in value.items()) + "}"
    return _f(value, 3)


def plot_frontier(result: dict[str, Any], path: Path) -> None:
    """nDCG@10 against median latency per arm (log scale), with the Pareto frontier drawn."""
    matplotlib = require("matplotlib", extra="bench", feature="benchmark plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=120)
    points = []
    colours = {
        "first stage": "tab:gray",
        "generating baseline": "tab:red",
        "llmrerank": "tab:blue",
    }
    for a in result["arms"]:
        x = max(a["latency_s"]["p50"] or 0.0, 1e-4)
        y = a["metrics"]["ndcg@10"]
        points.append((x, y))
        ax.scatter([x], [y], color=colours.get(a["group"], "black"), zorder=3)
        ax.annotate(a["name"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        extra = a.get("extrapolated_all_n_s_p50")
        if extra:
            ax.scatter([extra], [y], facecolors="none", edgecolors="tab:red", zorder=3)
            ax.annotate(
                f"{a['name']} (extrapolated to all N)",
                (extra, y),
                textcoords="offset points",
                xytext=(5, -10),
                fontsize=7,
                color="tab:red",
            )
            ax.plot([x, extra], [y, y], color="tab:red", linestyle=":", linewidth=0.8)
    frontier, best = [], -1.0
    for x, y in sorted(points):
        if y > best:
            frontier.append((x, y))
            best = y
    if len(frontier) > 1:
        fx, fy = zip(*frontier, strict=True)
        ax.step(fx, fy, where="post", color="tab:blue", alpha=0.4, label="Pareto frontier")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("median latency per query (s, log scale)")
    ax.set_ylabel("nDCG@10")
    s = result["settings"]
    ax.set_title(
        f"{result['dataset']['name']}: {len(s['query_ids'])} queries, N={s['n']}, "
        f"LLM {s['llm_scorer'] or '-'}",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(
    result: dict[str, Any], out_dir: str | Path, *, stem: str | None = None
) -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or result["dataset"]["name"]
    paths = {
        "json": out / f"{stem}.json",
        "markdown": out / f"{stem}.md",
        "plot": out / f"{stem}.png",
    }
    paths["json"].write_text(json.dumps(result, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown_report(result), encoding="utf-8")
    plot_frontier(result, paths["plot"])
    return paths

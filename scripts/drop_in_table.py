"""Summarise the six drop-in runs (scripts/bench_drop_in.sh) into docs/benchmarks/drop_in.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path

src = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/benchmarks/drop_in")
out = Path(sys.argv[2] if len(sys.argv) > 2 else "docs/benchmarks/drop_in.md")
runs = []
for ds in ("cranfield", "cisi", "nfcorpus"):
    for r in ("dense", "bm25"):
        p = src / f"{ds}-{r}.json"
        if p.is_file():
            runs.append((f"{ds}/{r}", json.loads(p.read_text())))
arms = []
for _, res in runs:
    for a in res["arms"]:
        if a["name"] not in arms:
            arms.append(a["name"])
lines = [
    "# Drop-in: never below the retriever (six runs)",
    "",
    "Command: `bash scripts/bench_drop_in.sh` (each run: `llmrerank bench --dataset "
    "../shared/data/DS --retriever R --n 50 --queries 30 --arms ...`), then "
    "`python scripts/drop_in_table.py`. nDCG@10 of the top 10 of the retriever's top 50; "
    "30 seeded judged queries per run (seed 0); the embedded LLM with its defaults.",
    "",
    "| arm | " + " | ".join(n for n, _ in runs) + " | mean diff vs retriever |",
    "|---" * (len(runs) + 2) + "|",
]
for arm in arms:
    cells, diffs = [], []
    for _, res in runs:
        by = {a["name"]: a for a in res["arms"]}
        if arm in by:
            v = by[arm]["metrics"]["ndcg@10"]
            base = by["retriever"]["metrics"]["ndcg@10"]
            cells.append(f"{v:.3f}")
            diffs.append(v - base)
        else:
            cells.append("-")
    mean = sum(diffs) / len(diffs) if diffs else 0.0
    lines.append(f"| {arm} | " + " | ".join(cells) + f" | {mean:+.4f} |")
lines += ["", "## Latency (p50 / p99 seconds) and LLM-scored candidates per query (mean)", ""]
lines.append("| arm | " + " | ".join(n for n, _ in runs) + " |")
lines.append("|---" * (len(runs) + 1) + "|")
for arm in arms:
    cells = []
    for _, res in runs:
        by = {a["name"]: a for a in res["arms"]}
        if arm in by:
            a = by[arm]
            lat = a["latency_s"]
            scored = [q.get("llm_scored") for q in a["per_query"] if q.get("llm_scored") is not None]
            sc = f", {sum(scored) / len(scored):.1f} scored" if scored else ""
            cells.append(f"{lat['p50']:.3f} / {lat['p99']:.3f}{sc}")
        else:
            cells.append("-")
    lines.append(f"| {arm} | " + " | ".join(cells) + " |")
lines += ["", "## Load average (start -> end of each run)", ""]
for name, res in runs:
    m = res["machine"]
    lines.append(
        f"- {name}: {m['load_average_start']} -> {m['load_average_end']}; "
        f"LLM `{res['settings']['llm_scorer']}`, torch threads {m.get('torch_threads')}"
    )
lines += ["", "## Targets", ""]
floor_ok = True
for name, res in runs:
    by = {a["name"]: a for a in res["arms"]}
    base = by["retriever"]["metrics"]["ndcg@10"]
    for arm, a in by.items():
        if arm.startswith(("funnel-", "langchain-")) and a["metrics"]["ndcg@10"] < base - 0.005:
            floor_ok = False
            lines.append(f"- floor missed: {name} {arm} {a['metrics']['ndcg@10']:.3f} < {base:.3f} - 0.005")
lines.append(f"- Floor (every preset >= retriever - 0.005 in every run): {'met' if floor_ok else 'NOT met'}")
ent = [
    {a["name"]: a for a in res["arms"]}["funnel-enterprise"]["metrics"]["ndcg@10"]
    - {a["name"]: a for a in res["arms"]}["retriever"]["metrics"]["ndcg@10"]
    for _, res in runs
    if "funnel-enterprise" in {a["name"] for a in res["arms"]}
]
if ent:
    g = sum(ent) / len(ent)
    lines.append(
        f"- Goal (enterprise >= retriever + 0.02 on average): {g:+.4f} -> "
        f"{'met' if g >= 0.02 else 'not met'} ({len(ent)} runs)"
    )
out.write_text("\n".join(lines) + "\n")
print(out.read_text())

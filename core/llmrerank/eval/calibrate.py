"""``llmrerank bench calibrate``: fit the relevance-score calibration (:mod:`llmrerank.calibration`).

On each dev collection: BM25 retrieves ``n`` candidates for a sample of judged queries; every
preset's funnel ranks them twice, without an LLM (the ``fast`` kind, on all sampled queries: cheap)
and with the LLM (the ``llm`` and ``fused`` kinds, on the first ``llm_queries`` of them; LLM
scores go through a SQLite score cache, so a re-run, or a preset whose window is inside another's,
costs no model calls). Funnels run without a deadline, so the fit sees complete windows.

Queries alternate between a fit half and a held-out half. Logistic regressions (scikit-learn)
of the judged label (grade > 0; unjudged = 0) on the fused score are fitted per preset and kind on
the fit half; the held-out half gives the expected calibration error and the reliability diagram.
Writes the parameters to the package (``llmrerank/data/calibration.json``) and
``calibration.{json,md,png}`` to ``--out``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._optional import require
from ..cache import SQLiteScoreCache
from ..calibration import (
    DEFAULT_KEY,
    KINDS,
    PACKAGE_DATA,
    Calibration,
    Logistic,
    expected_calibration_error,
    kind_of,
)
from ..errors import ConfigError
from ..presets import PRESETS, get_preset, is_default_llm
from ..scorers.base import Scorer
from .data import load_beir
from .retrieval import BM25Retriever

__all__ = ["CalibrateConfig", "run_calibration"]

logger = logging.getLogger("llmrerank")

MIN_POINTS = 30
"""Fewer labelled points (or a single class) for a preset/kind: it uses the pooled default."""


@dataclass(frozen=True)
class CalibrateConfig:
    datasets: tuple[Path, ...]
    presets: tuple[str, ...] = tuple(PRESETS)
    queries: int = 60
    """Judged queries sampled per collection (fast stage)."""
    llm_queries: int = 12
    """Of those, how many the LLM stage ranks."""
    n: int = 50
    seed: int = 0
    llm: str = "local"
    cache: Path = Path(".cache/calibrate-llm.sqlite")
    out: Path = Path("docs/benchmarks")
    params_out: Path | None = None
    """Where the parameters go (default: the installed package's data file)."""
    command: str = ""
    smoke: bool = False
    """Label the result a smoke fit (too small to trust) in the report."""


Point = tuple[str, str, float, int, int]
"""(preset, kind, fused score, label, held-out 0/1)"""


def _collect(config: CalibrateConfig, llm: Scorer) -> tuple[list[Point], list[dict[str, Any]]]:
    points: list[Point] = []
    rankings: list[dict[str, Any]] = []  # held-out rankings, to evaluate with the cap applied
    cache = SQLiteScoreCache(config.cache, max_entries=None)
    for path in config.datasets:
        ds = load_beir(path)
        judged = list(ds.judged_query_ids)
        random.Random(config.seed).shuffle(judged)
        qids = judged[: config.queries]
        retriever = BM25Retriever(ds)
        cands = retriever.retrieve([ds.queries[q] for q in qids], config.n)
        for name in config.presets:
            preset = get_preset(name)
            fast_only = preset.build(llm=None, deadline=None)
            # the embedded default as this preset runs it (its text cut)
            own = preset.default_llm() if is_default_llm(llm) else llm
            with_llm = preset.build(llm=own, deadline=None, cache=cache)
            for j, (qid, cs) in enumerate(zip(qids, cands, strict=True)):
                rels = ds.qrels.get(qid, {})
                held = j % 2
                runs = [fast_only] + ([with_llm] if j < config.llm_queries else [])
                for funnel in runs:
                    ranking = funnel.rerank(ds.queries[qid], cs)
                    rows = []
                    for r in ranking.results:
                        label = int(rels.get(r.candidate.id, 0) > 0)
                        kind = kind_of(r, ranking)
                        points.append((name, kind, r.score, label, held))
                        rows.append((kind, r.score, label))
                    if held:
                        rankings.append({"preset": name, "rows": rows})
    return points, rankings


def _fit(points: list[tuple[float, int]]) -> Logistic | None:
    labels = {y for _, y in points}
    if len(points) < MIN_POINTS or len(labels) < 2:
        return None
    sk = require("sklearn.linear_model", extra="bench", feature="calibrate", package="scikit-learn")
    np = require("numpy", extra="bench", feature="calibrate")
    x = np.array([[s] for s, _ in points], dtype=float)
    y = np.array([lab for _, lab in points], dtype=int)
    model = sk.LogisticRegression(C=1e4, max_iter=1000).fit(x, y)
    a, b = float(model.coef_[0][0]), float(model.intercept_[0])
    if a < 0:  # a higher score must not mean less relevant: fall back to the base rate
        a, b = 0.0, _logit(float(y.mean()))
    return Logistic(a, b)


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def fit_calibration(points: list[Point], presets: tuple[str, ...]) -> Calibration:
    train = [p for p in points if not p[4]]
    params: dict[str, dict[str, Logistic]] = {DEFAULT_KEY: {}}
    base = [y for *_, y, _ in train]
    base_rate = sum(base) / len(base) if base else 0.01
    for kind in KINDS:
        pooled = [(s, y) for _, k, s, y, _ in train if k == kind]
        params[DEFAULT_KEY][kind] = _fit(pooled) or Logistic(0.0, _logit(base_rate))
    for preset in presets:
        own: dict[str, Logistic] = {}
        for kind in KINDS:
            fitted = _fit([(s, y) for p, k, s, y, _ in train if p == preset and k == kind])
            if fitted is not None:
                own[kind] = fitted
        params[preset] = own
    # "input" (the fast stage failed) carries no score information: always the base rate
    params[DEFAULT_KEY]["input"] = Logistic(0.0, _logit(base_rate))
    for preset in presets:
        params[preset].pop("input", None)
    return Calibration(params=params, meta={})


def _evaluate(cal: Calibration, rankings: list[dict[str, Any]]) -> dict[str, Any]:
    probs: dict[str, list[float]] = defaultdict(list)
    labels: dict[str, list[int]] = defaultdict(list)
    for rk in rankings:
        cap = 1.0
        for kind, score, label in rk["rows"]:
            cap = min(cap, cal.map(rk["preset"], kind)(score))
            for key in ("all", rk["preset"], kind):
                probs[key].append(cap)
                labels[key].append(label)
    out = {}
    for key in probs:
        ece, table = expected_calibration_error(probs[key], labels[key])
        out[key] = {"ece": ece, "n": len(probs[key]), "bins": table}
    return out


def _plot(evaluation: dict[str, Any], path: Path, title: str) -> None:
    matplotlib = require("matplotlib", extra="bench", feature="the reliability diagram")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    for key, ev in evaluation.items():
        if key in PRESETS or key == "all":
            xs = [b["mean_p"] for b in ev["bins"]]
            ys = [b["hit_rate"] for b in ev["bins"]]
            ax.plot(xs, ys, marker="o", label=f"{key} (ECE {ev['ece']:.3f}, n={ev['n']})")
    ax.set_xlabel("predicted relevance_score (bin mean)")
    ax.set_ylabel("fraction judged relevant")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _llm(name: str) -> Scorer:
    if name == "scripted":
        from ..testing import ScriptedScorer

        return ScriptedScorer(name="word-overlap")
    if name == "local":
        from ..presets import default_llm_scorer

        return default_llm_scorer()
    raise ConfigError(f"--llm must be 'local' or 'scripted', got {name!r}")


def run_calibration(config: CalibrateConfig) -> dict[str, Any]:
    if not config.datasets:
        raise ConfigError("calibrate needs at least one --dataset DIR (a BEIR-layout folder)")
    unknown = [p for p in config.presets if p not in PRESETS]
    if unknown:
        raise ConfigError(f"unknown preset(s) {unknown}; choose from {', '.join(PRESETS)}")
    t0 = time.monotonic()
    llm = _llm(config.llm)
    points, held_rankings = _collect(config, llm)
    cal = fit_calibration(points, config.presets)
    evaluation = _evaluate(cal, held_rankings)
    meta = {
        "command": config.command,
        "smoke": config.smoke,
        "datasets": [Path(d).name for d in config.datasets],
        "presets": list(config.presets),
        "queries": config.queries,
        "llm_queries": config.llm_queries,
        "n": config.n,
        "seed": config.seed,
        "llm_scorer": llm.fingerprint,
        "points": len(points),
        "ece_heldout": evaluation.get("all", {}).get("ece"),
        "seconds": round(time.monotonic() - t0, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    cal = Calibration(params=cal.params, meta=meta)
    params_path = config.params_out or Path(
        str(require("llmrerank", extra="bench", feature="calibrate").__file__)
    ).parent.joinpath(PACKAGE_DATA)
    params_path.parent.mkdir(parents=True, exist_ok=True)
    params_path.write_text(json.dumps(cal.to_dict(), indent=1) + "\n", encoding="utf-8")
    config.out.mkdir(parents=True, exist_ok=True)
    result = {"meta": meta, "calibration": cal.to_dict()["params"], "heldout": evaluation}
    (config.out / "calibration.json").write_text(json.dumps(result, indent=1) + "\n")
    label = "SMOKE FIT (tiny sample; not for use)" if config.smoke else "fit"
    _plot(
        evaluation,
        config.out / "calibration.png",
        f"relevance_score reliability, held-out queries\n{label}: "
        f"{', '.join(meta['datasets'])}; {meta['llm_scorer'].split('(')[0]}",
    )
    (config.out / "calibration.md").write_text(_markdown(result, params_path))
    return result


def _markdown(result: dict[str, Any], params_path: Path) -> str:
    meta = result["meta"]
    lines = ["# relevance_score calibration", ""]
    if meta["smoke"]:
        lines += [
            "> **Smoke fit.** These parameters come from a tiny sample run to check the command "
            "(a couple of minutes of CPU); the figures below say nothing about calibration "
            "quality. The full fit replaces this file; run the command under *How to refit*.",
            "",
        ]
    lines += [
        "`relevance_score` (served by `llmrerank serve`, the LangChain adapter's "
        "`metadata['relevance_score']` and `score_threshold`, the LlamaIndex node score) is an "
        "estimated probability that the result is judged relevant, from a logistic fit of the "
        "fused score per preset and per kind of result (`llm`: the LLM scored it; `fused`: in a "
        "ranking with an LLM window, fast stage only; `fast`: a ranking without a window; "
        "`input`: the fast stage failed, base rate), capped down the ranking so it never "
        "increases. See `llmrerank/calibration.py`.",
        "",
        f"- command: `{meta['command']}`",
        f"- collections: {', '.join(meta['datasets'])}; presets: {', '.join(meta['presets'])}",
        f"- queries per collection: {meta['queries']} (fast stage), {meta['llm_queries']} with "
        f"the LLM ({meta['llm_scorer']}); BM25 candidates per query: {meta['n']}",
        f"- labelled points: {meta['points']}; fit on even-numbered queries, evaluated on the "
        f"odd ones; wall time {meta['seconds']} s",
        f"- parameters written to `{params_path.name}` in the package (`llmrerank/{PACKAGE_DATA}`)",
        "",
        "## Expected calibration error (held-out queries, 10 equal-width bins)",
        "",
        "| slice | ECE | pairs |",
        "|---|---|---|",
    ]
    for key, ev in result["heldout"].items():
        lines.append(f"| {key} | {ev['ece']:.4f} | {ev['n']} |")
    lines += ["", "![reliability diagram](calibration.png)", "", "## Parameters", ""]
    lines += ["| preset | kind | a | b |", "|---|---|---|---|"]
    for preset, kinds in result["calibration"].items():
        for kind, ab in kinds.items():
            lines.append(f"| {preset} | {kind} | {ab['a']:.4f} | {ab['b']:.4f} |")
    lines += [
        "",
        "## How to refit",
        "",
        "After any change to the fast stage, the fusion or a preset (fused-score scales move):",
        "",
        "```",
        "llmrerank bench calibrate --dataset /work/shared/data/cranfield \\",
        "  --calib-dataset /work/shared/data/nfcorpus --calib-dataset /work/shared/data/cisi \\",
        "  --queries 80 --llm-queries 8 --n 30",
        "```",
        "",
        "The fast stage runs on every sampled query; the LLM on `--llm-queries` of them, at most "
        "`llm_queries x collections x min(n, 50)` model calls (the research window). LLM scores "
        "depend only on the query and the text, so they are kept in the SQLite cache "
        "(`--cache`, default `.cache/calibrate-llm.sqlite`): a refit after a fast-stage change "
        "only scores the texts that newly enter a window.",
        "",
    ]
    return "\n".join(lines)

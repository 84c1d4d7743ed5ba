"""Relevance scores in [0, 1]: the fused score mapped to an estimated probability of relevance.

The fused score that orders a ranking (see :mod:`llmrerank.scoring`) is on a z-score scale
(negative values are ordinary) or, for a ranking without an LLM window, on the fast scorer's own
scale. Clients of hosted rerank APIs read ``relevance_score`` as a number in [0, 1] and threshold
it, so everything the project hands a user (``llmrerank serve``, the LangChain and LlamaIndex
adapters) goes through :func:`relevance_scores`:

``p = sigmoid(a * score + b)``, with ``(a, b)`` fitted by logistic regression on judged dev
collections, one pair per preset and per *kind* of result:

- ``llm``: the LLM scored it (fused score, LLM term present);
- ``fused``: inside a ranking with an LLM window, but only the fast stage scored it;
- ``fast``: a ranking without a window (the ``fast`` stream update, a funnel without an LLM):
  the score is the fast scorer's own;
- ``input``: the fast stage failed, the input order stands (a constant: the base rate).

A result's probability is then capped by the one above it (``p_i = min(p_i, p_{i-1})``), so scores
never increase down a ranking. The parameters live in ``data/calibration.json`` in the package,
written by ``llmrerank bench calibrate`` (see docs/benchmarks/calibration.md for the fit, its
reliability diagram and expected calibration error). A preset without its own parameters uses
the ``default`` entry. The raw fused score stays available (``ScoredCandidate.score``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError
from .types import Ranking, ScoredCandidate

__all__ = [
    "KINDS",
    "Calibration",
    "Kind",
    "Logistic",
    "default_calibration",
    "kind_of",
    "relevance_scores",
]

Kind = Literal["llm", "fused", "fast", "input"]
KINDS: tuple[Kind, ...] = ("llm", "fused", "fast", "input")
DEFAULT_KEY = "default"


@dataclass(frozen=True, slots=True)
class Logistic:
    """``p = sigmoid(a * score + b)``; ``a`` is at least 0 (a higher score never means less)."""

    a: float
    b: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.a) and math.isfinite(self.b)) or self.a < 0:
            raise ConfigError(f"calibration needs finite a >= 0 and finite b, got {self}")

    def __call__(self, score: float) -> float:
        if not math.isfinite(score):
            return 0.0 if score < 0 else 1.0
        z = self.a * score + self.b
        # the two branches keep exp() from overflowing
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)


@dataclass(frozen=True)
class Calibration:
    """Per-preset, per-kind logistic maps; ``params[preset][kind]``, with a ``default`` preset."""

    params: Mapping[str, Mapping[str, Logistic]]
    meta: Mapping[str, Any]

    def __post_init__(self) -> None:
        default = self.params.get(DEFAULT_KEY)
        missing = [k for k in KINDS if default is None or k not in default]
        if missing:
            raise ConfigError(f"calibration: the 'default' entry lacks the kind(s) {missing}")

    def map(self, preset: str | None, kind: Kind) -> Logistic:
        own = self.params.get(preset or DEFAULT_KEY, {})
        return own.get(kind) or self.params[DEFAULT_KEY][kind]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        try:
            params = {
                preset: {kind: Logistic(float(v["a"]), float(v["b"])) for kind, v in kinds.items()}
                for preset, kinds in data["params"].items()
            }
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(
                f"calibration data is malformed ({type(exc).__name__}: {exc})"
            ) from None
        return cls(params=params, meta=dict(data.get("meta", {})))

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read calibration file {path}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return {
            "meta": dict(self.meta),
            "params": {
                p: {k: {"a": m.a, "b": m.b} for k, m in kinds.items()}
                for p, kinds in self.params.items()
            },
        }

    def relevance_scores(self, ranking: Ranking) -> list[float]:
        """One probability per result of ``ranking``, in its order, never increasing."""
        preset = ranking.info.get("funnel")
        out: list[float] = []
        cap = 1.0
        for r in ranking.results:
            p = self.map(preset if isinstance(preset, str) else None, kind_of(r, ranking))(r.score)
            cap = min(cap, max(0.0, p))
            out.append(cap)
        return out


def kind_of(result: ScoredCandidate, ranking: Ranking) -> Kind:
    """Which calibration map applies to ``result`` (see the module docs)."""
    if result.stage == "input":
        return "input"
    if result.stage == "llm":
        return "llm"
    return "fused" if ranking.info.get("score_scale") == "fused" else "fast"


PACKAGE_DATA = "data/calibration.json"


@lru_cache(maxsize=1)
def default_calibration() -> Calibration:
    """The parameters shipped in the package (``llmrerank/data/calibration.json``)."""
    text = files("llmrerank").joinpath(PACKAGE_DATA).read_text(encoding="utf-8")
    return Calibration.from_dict(json.loads(text))


def relevance_scores(ranking: Ranking, calibration: Calibration | None = None) -> list[float]:
    """``ranking``'s results as probabilities of relevance in [0, 1], monotone in rank."""
    return (calibration or default_calibration()).relevance_scores(ranking)


def expected_calibration_error(
    probs: Sequence[float], labels: Sequence[int], bins: int = 10
) -> tuple[float, list[dict[str, float]]]:
    """ECE over equal-width bins, and each non-empty bin's mean prediction, hit rate and count."""
    table: list[dict[str, float]] = []
    total = len(probs)
    ece = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        idx = [i for i, p in enumerate(probs) if lo <= p < hi or (b == bins - 1 and p == 1.0)]
        if not idx:
            continue
        conf = math.fsum(probs[i] for i in idx) / len(idx)
        acc = math.fsum(labels[i] for i in idx) / len(idx)
        ece += len(idx) / total * abs(conf - acc)
        table.append({"lo": lo, "hi": hi, "mean_p": conf, "hit_rate": acc, "n": float(len(idx))})
    return ece, table

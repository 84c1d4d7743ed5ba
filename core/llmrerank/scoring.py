"""Score fusion and the deterministic final order.

The funnel ranks in two tiers: the *window* (the top-k of the fast stage, sent to the LLM) first,
then every other candidate in fast-stage order. Inside the window the fused score decides.

Fusion rules (:class:`Fusion`):

- ``interpolate`` (default): ``(1 - w) * z(fast) + w * z(llm)``, each stage z-normalised over the
  window (the LLM stage over the candidates it scored). A candidate the LLM did not score gets
  ``z(llm) = 0``: neutral, neither pushed up nor down. A stage whose scores are all equal carries
  no information and contributes 0, so **an uninformative LLM leaves the fast-stage order
  unchanged** — the fused ranking never falls below the stage it degrades to on that account.
- ``rrf``: weighted reciprocal-rank fusion, ``2(1 - w)/(c + rank_fast) + 2w/(c + rank_llm)``;
  an unscored candidate gets the mean LLM term of the window.

Scores outside the window are computed on the same scale (LLM term neutral) and capped at the
window's lowest fused score, so reported scores never increase down a ranking. Rankings that have
no window (the ``fast`` update, a funnel without an LLM) report the fast stage's own scores.

Ties break on the fast score, then on input position, so equal inputs give equal outputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["Fusion", "expected_relevance", "final_order", "mean_logprob", "zscores"]


def zscores(values: Sequence[float | None]) -> list[float | None]:
    """Z-normalise the non-None values; all-equal values give 0.0 (no information)."""
    present = [v for v in values if v is not None]
    if not present:
        return [None] * len(values)
    mean = math.fsum(present) / len(present)
    var = math.fsum((v - mean) ** 2 for v in present) / len(present)
    std = math.sqrt(var)
    if std <= 1e-12 * max(1.0, abs(mean)):
        return [None if v is None else 0.0 for v in values]
    return [None if v is None else (v - mean) / std for v in values]


def _ranks(values: Sequence[float | None]) -> list[int | None]:
    """1-based dense-ordered ranks (highest first, ties by position) of the non-None values."""
    order = sorted((i for i, v in enumerate(values) if v is not None), key=lambda i: -values[i])  # type: ignore[operator]
    ranks: list[int | None] = [None] * len(values)
    for r, i in enumerate(order, start=1):
        ranks[i] = r
    return ranks


@dataclass(frozen=True, slots=True)
class Fusion:
    """How the fast and LLM scores combine inside the window. ``llm_weight`` is ``w`` above.

    ``min_depth``: the LLM is fused only when the window it answered (its longest answered
    prefix in fast order, see :class:`~llmrerank.funnel.Funnel`) holds at least this many
    candidates; a shallower one leaves the fast order as it is (the LLM scores stay in the
    provenance). A window no deeper than the results a caller reads can only permute them, and
    the embedded model's permutations of the top 10 did not beat the fast order
    (docs/benchmarks/fusion_depth.md); the presets use 16. The rule guards against a window the
    deadline cut short: a window fixed in advance that is smaller (an explicit ``k``, or fewer
    candidates than ``min_depth``) is fused once it is answered whole.
    """

    method: Literal["interpolate", "rrf"] = "interpolate"
    llm_weight: float = 0.5
    rrf_c: float = 60.0
    min_depth: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("interpolate", "rrf"):
            raise ValueError(f"fusion method must be 'interpolate' or 'rrf', got {self.method!r}")
        if not 0.0 <= self.llm_weight <= 1.0:
            raise ValueError(f"llm_weight must be within [0, 1], got {self.llm_weight!r}")
        d = self.min_depth
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise ValueError(f"min_depth must be an int >= 0, got {self.min_depth!r}")

    @property
    def fingerprint(self) -> str:
        depth = f",min_depth={self.min_depth}" if self.min_depth else ""
        return f"{self.method}(w={self.llm_weight}{depth})"

    def fuse(
        self,
        fast: Sequence[float | None],
        llm: Sequence[float | None],
        tail_fast: Sequence[float | None] = (),
    ) -> tuple[list[float], list[float]]:
        """Fused scores for the window's candidates and, on the same scale, for the ``tail``
        (the candidates outside the window, in fast order), whose LLM term is neutral.

        Tail values are capped at the window's lowest fused score, so scores never increase
        down the ranking.
        """
        w = self.llm_weight
        if self.method == "interpolate":
            # the tail is normalised with the window's statistics, so both share one scale
            present = [v for v in fast if v is not None]
            everything = list(fast) + list(tail_fast)
            zf = _zscores_with(present, everything) if present else [None] * len(everything)
            zl = zscores(llm)
            window = [(1 - w) * (f or 0.0) + w * (q or 0.0) for f, q in zip(zf, zl, strict=False)]
            tail = [(1 - w) * (f or 0.0) for f in zf[len(fast) :]]
        else:
            c = self.rrf_c
            rf = _ranks(list(fast) + list(tail_fast))
            rl = _ranks(llm)
            llm_terms = [1.0 / (c + r) for r in rl if r is not None]
            neutral = math.fsum(llm_terms) / len(llm_terms) if llm_terms else 0.0
            fast_terms = [1.0 / (c + r) if r is not None else 0.0 for r in rf]
            window = [
                2 * (1 - w) * ft + 2 * w * (1.0 / (c + r) if r is not None else neutral)
                for ft, r in zip(fast_terms, rl, strict=False)
            ]
            tail = [2 * (1 - w) * ft + 2 * w * neutral for ft in fast_terms[len(fast) :]]
        if window:
            floor = min(window)
            tail = [min(t, floor) for t in tail]
        return window, tail


def _zscores_with(reference: Sequence[float], values: Sequence[float | None]) -> list[float | None]:
    """Z-scores of ``values`` using the mean and deviation of ``reference``."""
    mean = math.fsum(reference) / len(reference)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in reference) / len(reference))
    if std <= 1e-12 * max(1.0, abs(mean)):
        return [None if v is None else 0.0 for v in values]
    return [None if v is None else (v - mean) / std for v in values]


def final_order(
    window: Sequence[int],
    fused: Sequence[float],
    rest: Sequence[int],
    fast: Sequence[float | None],
) -> list[int]:
    """Candidate indices in final order: the window by fused score, then ``rest`` as given.

    Ties inside the window break on the fast score, then the input position.
    """

    def key(pos: int) -> tuple[float, float, int]:
        i = window[pos]
        f = fast[i]
        return (-fused[pos], -(f if f is not None else -math.inf), i)

    return [window[p] for p in sorted(range(len(window)), key=key)] + list(rest)


def expected_relevance(
    label_logprobs: Mapping[str, float | None],
    labels: Mapping[str, float],
    *,
    min_mass: float = 0.05,
) -> tuple[float | None, float]:
    """Expected relevance over a label set from the labels' next-token log-probabilities.

    Returns ``(score, mass)``: ``mass`` is the probability the model put on the labels at all;
    below ``min_mass`` the answer is treated as malformed and ``score`` is ``None``. Labels missing
    from ``label_logprobs`` (not in a server's top-k) count as probability 0.
    """
    probs = {}
    for label in labels:
        lp = label_logprobs.get(label)
        probs[label] = math.exp(lp) if lp is not None and math.isfinite(lp) else 0.0
    mass = math.fsum(probs.values())
    if mass < min_mass or mass <= 0.0:
        return None, mass
    return math.fsum(labels[k] * p for k, p in probs.items()) / mass, mass


def mean_logprob(token_logprobs: Sequence[float | None]) -> float | None:
    """Mean log-probability of a token sequence (the query-likelihood score); None if empty or
    any token's log-probability is missing or not finite."""
    if not token_logprobs:
        return None
    if any(lp is None or not math.isfinite(lp) for lp in token_logprobs):
        return None
    return math.fsum(token_logprobs) / len(token_logprobs)  # type: ignore[arg-type]

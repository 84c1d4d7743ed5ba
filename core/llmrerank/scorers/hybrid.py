"""Two first stages as one: e.g. BM25 + dense, fused by reciprocal rank or normalised scores.

Both scorers run concurrently on the same texts. Fusion is relative to the texts of one call, so
the funnel should give a hybrid scorer all candidates at once (its ``batch_size`` says so).

- ``rrf``: ``sum_s w_s / (c + rank_s)``, ranks 1-based within the call; a text one scorer did
  not score gets no term from it.
- ``interpolate``: ``sum_s w_s * minmax_s(score)``, each scorer min-max normalised over the texts
  it scored; a text one scorer did not score gets 0 (that scorer's worst) from it.

A text neither scorer scored stays ``None``. If one scorer fails, the other's order stands (the
failure is logged); if both fail, the first error is raised.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from typing import Literal

from ..budget import Deadline
from ..errors import BackendError, InputError
from .base import Scorer, Scores

__all__ = ["HybridScorer"]

logger = logging.getLogger("llmrerank")

Method = Literal["rrf", "interpolate"]


def _rrf_terms(scores: Sequence[float | None], c: float) -> list[float | None]:
    order = sorted((i for i, s in enumerate(scores) if s is not None), key=lambda i: -scores[i])  # type: ignore[operator]
    terms: list[float | None] = [None] * len(scores)
    for rank, i in enumerate(order, start=1):
        terms[i] = 1.0 / (c + rank)
    return terms


def _minmax(scores: Sequence[float | None]) -> list[float | None]:
    present = [s for s in scores if s is not None]
    if not present:
        return [None] * len(scores)
    lo, hi = min(present), max(present)
    span = hi - lo
    if span <= 1e-12 * max(1.0, abs(hi)):  # all equal: no information, neutral 0.5
        return [None if s is None else 0.5 for s in scores]
    return [None if s is None else (s - lo) / span for s in scores]


class HybridScorer:
    """Fuses two scorers into one.

    Args:
        first, second: the scorers (e.g. ``BM25Scorer()`` and ``DenseScorer()``).
        method: ``"rrf"`` (default) or ``"interpolate"``.
        weight: the second scorer's weight in [0, 1]; the first gets ``1 - weight``.
        rrf_c: the reciprocal-rank constant (60, as in Cormack et al. 2009).
    """

    batch_size = 1_000_000
    max_concurrency = 1

    def __init__(
        self,
        first: Scorer,
        second: Scorer,
        *,
        method: Method = "rrf",
        weight: float = 0.5,
        rrf_c: float = 60.0,
    ) -> None:
        if method not in ("rrf", "interpolate"):
            raise InputError(f"method must be 'rrf' or 'interpolate', got {method!r}")
        if not 0.0 <= weight <= 1.0:
            raise InputError(f"weight must be within [0, 1], got {weight!r}")
        if not rrf_c > 0:
            raise InputError(f"rrf_c must be positive, got {rrf_c!r}")
        self.first, self.second = first, second
        self.method: Method = method
        self.weight = weight
        self.rrf_c = rrf_c

    @property
    def fingerprint(self) -> str:
        c = f",c={self.rrf_c}" if self.method == "rrf" else ""
        return (
            f"hybrid:{self.method}(w={self.weight}{c})"
            f"[{self.first.fingerprint}|{self.second.fingerprint}]"
        )

    def __repr__(self) -> str:
        return f"HybridScorer({self.fingerprint!r})"

    def fuse(
        self, first: Sequence[float | None] | None, second: Sequence[float | None] | None, n: int
    ) -> list[float | None]:
        """The fused scores of ``n`` texts; ``None`` for a scorer that failed as a whole."""
        norm = (lambda s: _rrf_terms(s, self.rrf_c)) if self.method == "rrf" else _minmax
        parts = [
            (1.0 - self.weight, norm(first) if first is not None else [None] * n),
            (self.weight, norm(second) if second is not None else [None] * n),
        ]
        if first is None or second is None:  # one scorer alone: its own order, full weight
            parts = [(1.0, values) for _, values in parts]
        out: list[float | None] = []
        for i in range(n):
            terms = [(w, values[i]) for w, values in parts if values[i] is not None]
            out.append(math.fsum(w * v for w, v in terms) if terms else None)  # type: ignore[operator]
        return out

    async def ascore(
        self, query: str, texts: Sequence[str], *, deadline: Deadline
    ) -> list[float | None]:
        if not texts:
            return Scores()
        results = await asyncio.gather(
            self.first.ascore(query, texts, deadline=deadline),
            self.second.ascore(query, texts, deadline=deadline),
            return_exceptions=True,
        )
        lists: list[list[float | None] | None] = []
        errors: list[BaseException] = []
        for scorer, result in zip((self.first, self.second), results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result  # cancellation and friends
                errors.append(result)
                lists.append(None)
                logger.warning(
                    "hybrid: %s failed (%s: %s); using the other scorer alone",
                    scorer.fingerprint,
                    type(result).__name__,
                    result,
                )
            elif len(result) != len(texts):
                errors.append(BackendError(f"{scorer.fingerprint} returned a wrong count"))
                lists.append(None)
            else:
                lists.append(
                    [
                        float(s) if isinstance(s, (int, float)) and math.isfinite(s) else None
                        for s in result
                    ]
                )
        if len(errors) == 2:
            raise errors[0]
        fused = Scores(self.fuse(lists[0], lists[1], len(texts)))
        for result in results:  # why a text neither scorer scored is missing
            for i, why in getattr(result, "reasons", {}).items():
                if fused[i] is None:
                    fused.reasons.setdefault(i, why)
        return fused

"""The default fast stage: the retriever's own ranking fused with BM25 over the candidates.

Candidates reach a reranker in the order their retriever ranked them, and that order is the best
signal a pipeline has before the LLM: it was computed over the whole corpus (a vector store's
similarity, corpus-wide BM25), while BM25 over the candidates sees only their own statistics.
Re-sorting by BM25 alone throws that ranking away (measured: docs/benchmarks/fast_fusion.md).
:class:`RetrieverFusionScorer` keeps it as a signal and adds a lexical one:

- **the retriever's ranking**: a candidate's ``retrieval_score`` when *every* candidate has one,
  else its input position (first = best);
- **a text scorer** over the candidates (default :class:`~llmrerank.scorers.bm25.BM25Scorer`).

Fusion (``method``):

- ``rrf`` (default): weighted reciprocal-rank fusion,
  ``2 w / (c + rank_retriever) + 2 (1 - w) / (c + rank_text)``. Tied text scores share their
  average rank, so a text scorer without signal (no query term in any candidate) adds the same
  term to every candidate and the retriever's order stands; an exact tie of two candidates
  goes to the better text score.
- ``zscore``: ``w z(retriever) + (1 - w) z(text)``; without retrieval scores the position enters
  as ``-log(position)``.

``w`` is ``retriever_weight``; the defaults are the measured choice (docs/benchmarks/fast_fusion.md).

When the input order carries no meaning (candidates from a set, a database query, shuffled),
say so: ``Funnel(input_ranked=False)`` or ``funnel.rerank(..., input_ranked=False)``. Then only
retrieval scores (if every candidate has one) count as the retriever's signal, and without them
the text scorer alone decides.

A text scorer that fails makes the whole fast stage fail, and the funnel falls back to the
retriever's order (flagged ``fast_stage_failed``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from ..budget import Deadline
from ..errors import ConfigError
from ..scoring import zscores
from ..types import Candidate
from .base import Scorer
from .bm25 import BM25Scorer

__all__ = [
    "DEFAULT_FAST_METHOD",
    "DEFAULT_RETRIEVER_WEIGHT",
    "RetrieverFusionScorer",
    "average_ranks",
    "position_signal",
]

FusionMethod = Literal["rrf", "zscore"]

DEFAULT_FAST_METHOD: FusionMethod = "rrf"
DEFAULT_RETRIEVER_WEIGHT = 0.9
DEFAULT_RRF_C = 20.0
"""Chosen by ``llmrerank bench fusion`` (docs/benchmarks/fast_fusion.md): of 40 fusions, the best
mean nDCG@10 on the tune queries among those never more than 0.005 below the retriever in any of
the six (collection, retriever) runs. Heavier BM25 weights won more on dense retrievers and lost
more under BM25 retrievers (BM25 over 50 candidates repeats a lexical retriever, worse)."""
_TIE = 1e-12


def average_ranks(values: Sequence[float | None]) -> list[float]:
    """1-based ranks, highest value first; equal values share their average rank; ``None``
    values share the ranks after every present value."""
    n = len(values)
    present = sorted((i for i in range(n) if values[i] is not None), key=lambda i: -values[i])  # type: ignore[operator]
    ranks = [0.0] * n
    pos = 0
    while pos < len(present):
        end = pos
        v = values[present[pos]]
        while end + 1 < len(present) and values[present[end + 1]] == v:
            end += 1
        shared = (pos + 1 + end + 1) / 2.0
        for j in range(pos, end + 1):
            ranks[present[j]] = shared
        pos = end + 1
    missing = [i for i in range(n) if values[i] is None]
    if missing:
        shared = (len(present) + 1 + n) / 2.0
        for i in missing:
            ranks[i] = shared
    return ranks


def position_signal(n: int) -> list[float]:
    """The retriever's signal when only the order is known: ``-log(position)``, first = best."""
    return [-math.log(i + 1.0) for i in range(n)]


class RetrieverFusionScorer:
    """The retriever's ranking fused with a text scorer over the candidates (module docstring).

    Args:
        text: the scorer run over the candidates' texts (default: BM25 over the candidates).
        method: ``"rrf"`` or ``"zscore"``.
        retriever_weight: ``w``, the retriever's share, within [0, 1] (0: the text scorer alone;
            1: the retriever's ranking alone).
        rrf_c: the reciprocal-rank constant.
    """

    uses_input_order = True
    """The funnel passes ``input_ranked`` to :meth:`ascore_candidates`."""

    def __init__(
        self,
        text: Scorer | None = None,
        *,
        method: FusionMethod = DEFAULT_FAST_METHOD,
        retriever_weight: float = DEFAULT_RETRIEVER_WEIGHT,
        rrf_c: float = DEFAULT_RRF_C,
    ) -> None:
        if method not in ("rrf", "zscore"):
            raise ConfigError(f"method must be 'rrf' or 'zscore', got {method!r}")
        if isinstance(retriever_weight, bool) or not (
            isinstance(retriever_weight, (int, float)) and 0.0 <= retriever_weight <= 1.0
        ):
            raise ConfigError(f"retriever_weight must be within [0, 1], got {retriever_weight!r}")
        if not (isinstance(rrf_c, (int, float)) and rrf_c > 0 and math.isfinite(rrf_c)):
            raise ConfigError(f"rrf_c must be a positive number, got {rrf_c!r}")
        if text is not None and not isinstance(text, Scorer):
            raise ConfigError(f"text must be a Scorer, got {type(text).__name__}")
        self.text: Scorer = text if text is not None else BM25Scorer()
        self.method: FusionMethod = method
        self.retriever_weight = float(retriever_weight)
        self.rrf_c = float(rrf_c)

    @property
    def batch_size(self) -> int:
        return int(getattr(self.text, "batch_size", 10_000) or 10_000)

    @property
    def max_concurrency(self) -> int | None:
        return getattr(self.text, "max_concurrency", None)

    @property
    def fingerprint(self) -> str:
        c = f",c={self.rrf_c:g}" if self.method == "rrf" else ""
        return (
            f"retriever_fusion({self.method},w={self.retriever_weight:g}{c})"
            f"+{self.text.fingerprint}"
        )

    def __repr__(self) -> str:
        return f"RetrieverFusionScorer({self.fingerprint!r})"

    def retriever_signal(
        self, candidates: Sequence[Candidate], *, input_ranked: bool = True
    ) -> list[float] | None:
        """The retriever's score per candidate (higher is better): every candidate's
        ``retrieval_score`` when all have one, else ``-log(position)`` when the input is
        ranked, else ``None`` (no retriever signal)."""
        scores = [c.retrieval_score for c in candidates]
        if candidates and all(s is not None for s in scores):
            return [float(s) for s in scores]  # type: ignore[arg-type]
        if input_ranked:
            return position_signal(len(candidates))
        return None

    def fuse(
        self, retriever: Sequence[float] | None, text: Sequence[float | None]
    ) -> list[float | None]:
        """Fused scores from the retriever signal and the text scores (pure; unit-tested)."""
        n = len(text)
        if retriever is None:
            return list(text)
        if len(retriever) != n:
            raise ValueError(f"{len(retriever)} retriever scores for {n} texts")
        w = self.retriever_weight
        if self.method == "rrf":
            c = self.rrf_c
            rr = average_ranks(retriever)
            rt = average_ranks(text)
            # an exact tie (a swapped pair under equal weights) goes to the better text score
            return [
                2 * w / (c + a) + 2 * (1 - w) / (c + b) + _TIE * (n - b)
                for a, b in zip(rr, rt, strict=True)
            ]
        zr = zscores(retriever)
        zt = zscores(text)
        # a missing text score counts as the lowest present one
        floor = min((z for z in zt if z is not None), default=0.0)
        return [
            w * (a or 0.0) + (1 - w) * (b if b is not None else floor)
            for a, b in zip(zr, zt, strict=True)
        ]

    async def ascore_candidates(
        self,
        query: str,
        candidates: Sequence[Candidate],
        *,
        deadline: Deadline,
        input_ranked: bool = True,
        texts: Sequence[str] | None = None,
    ) -> list[float | None]:
        """Fused fast scores, one per candidate, in input order. ``texts`` are the cleaned
        texts to score (default: the candidates' own)."""
        if texts is None:
            texts = [c.text for c in candidates]
        retriever = self.retriever_signal(candidates, input_ranked=input_ranked)
        if self.retriever_weight >= 1.0 and retriever is not None:
            text_scores: list[float | None] = [0.0] * len(candidates)
        else:
            text_scores = list(await self.text.ascore(query, texts, deadline=deadline))
            if len(text_scores) != len(candidates):
                raise ConfigError(
                    f"text scorer returned {len(text_scores)} scores for {len(candidates)} texts"
                )
            text_scores = [
                float(s) if s is not None and math.isfinite(s) else None for s in text_scores
            ]
        if self.retriever_weight <= 0.0:
            return text_scores
        return self.fuse(retriever, text_scores)

    async def ascore(
        self, query: str, texts: Sequence[str], *, deadline: Deadline
    ) -> list[float | None]:
        """Texts alone carry no retriever ranking: taken as ranked in the order given."""
        cands = [Candidate(id=str(i), text=t) for i, t in enumerate(texts)]
        return await self.ascore_candidates(query, cands, deadline=deadline, texts=texts)

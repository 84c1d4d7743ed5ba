"""Stage 1 from the retriever's own scores: no re-scoring at all.

When candidates come from a retriever that already scored them over the whole corpus (BM25 with
corpus statistics, a vector store's similarity), re-scoring the top-N with statistics from those
N alone is both slower and worse (measured: cranfield nDCG@10 0.365 for corpus BM25 against 0.314
for BM25 over the top 100). ``RetrievalScorer`` makes the funnel use ``Candidate.retrieval_score``
as the fast stage. Candidates without one rank after those with one, in input order.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..budget import Deadline
from ..errors import ConfigError
from ..types import Candidate

__all__ = ["RetrievalScorer"]


class RetrievalScorer:
    """The fast stage that reads ``Candidate.retrieval_score`` (see the module docstring)."""

    fingerprint = "retrieval"

    async def ascore_candidates(
        self, query: str, candidates: Sequence[Candidate], *, deadline: Deadline
    ) -> list[float | None]:
        return [c.retrieval_score for c in candidates]

    async def ascore(
        self, query: str, texts: Sequence[str], *, deadline: Deadline
    ) -> list[float | None]:
        raise ConfigError(
            "RetrievalScorer reads the candidates' retrieval_score; use it as a Funnel's fast "
            "stage, which passes candidates, not bare texts"
        )

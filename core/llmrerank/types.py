"""The values that flow through llmrerank: candidates in, rankings (with provenance) out."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Candidate",
    "Ranking",
    "RankingUpdate",
    "ScoredCandidate",
    "Stage",
    "UpdateKind",
]

Stage = Literal["llm", "fast", "input"]
"""Which stage decided a result's place: the LLM scored it, only the fast stage did, or neither
(the fast stage failed too, so the input order stands)."""

UpdateKind = Literal["fast", "partial", "final"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A text to rank. ``id`` must be unique within one request."""

    id: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    retrieval_score: float | None = None
    """The score the retriever gave, if any; used as the input order's tie-breaker."""


@dataclass(frozen=True, slots=True)
class ScoredCandidate:
    """One ranked result: the candidate, its final score and every stage's score."""

    candidate: Candidate
    rank: int
    """0-based position in the ranking."""
    score: float
    """The fused score that ordered the results (see :mod:`llmrerank.scoring`)."""
    stage: Stage
    fast_score: float | None
    llm_score: float | None
    cached: bool = False
    """True when ``llm_score`` came from the score cache."""

    @property
    def id(self) -> str:
        return self.candidate.id

    @property
    def text(self) -> str:
        return self.candidate.text

    def provenance(self) -> dict[str, Any]:
        """A JSON-ready summary, used by the adapters and the HTTP API."""
        return {
            "rank": self.rank,
            "score": self.score,
            "stage": self.stage,
            "fast_score": self.fast_score,
            "llm_score": self.llm_score,
            "cached": self.cached,
        }


@dataclass(frozen=True, slots=True)
class Ranking:
    """The complete ranking of one request: every input candidate exactly once.

    Iterable and indexable like a list of :class:`ScoredCandidate`; ``degraded`` says whether the
    LLM stage fell short (``reasons`` say why: ``deadline``, ``backend_error``, ``circuit_open``,
    ``malformed_output``, ``fast_stage_failed``).
    """

    query: str
    results: tuple[ScoredCandidate, ...]
    degraded: bool = False
    reasons: tuple[str, ...] = ()
    timings: Mapping[str, float] = field(default_factory=dict)
    """Seconds per phase: ``fast``, ``llm``, ``total``."""
    k: int = 0
    """How many candidates were sent to the LLM stage."""
    llm_scored: int = 0
    """How many of those came back with an LLM score (from the backend or the cache)."""
    info: Mapping[str, Any] = field(default_factory=dict)
    """Scorer fingerprints, cache hits, errors seen: the rest of the provenance."""

    def __iter__(self) -> Iterator[ScoredCandidate]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> ScoredCandidate:
        return self.results[index]

    @property
    def ids(self) -> list[str]:
        return [r.candidate.id for r in self.results]

    def top_k(self, k: int) -> list[ScoredCandidate]:
        return list(self.results[: max(k, 0)])

    def by_id(self, candidate_id: str) -> ScoredCandidate:
        for result in self.results:
            if result.candidate.id == candidate_id:
                return result
        raise KeyError(candidate_id)

    def provenance(self) -> dict[str, Any]:
        """Ranking-level provenance as a JSON-ready dict."""
        return {
            "degraded": self.degraded,
            "reasons": list(self.reasons),
            "timings": dict(self.timings),
            "k": self.k,
            "llm_scored": self.llm_scored,
            **dict(self.info),
        }


@dataclass(frozen=True, slots=True)
class RankingUpdate:
    """One event of :meth:`Funnel.astream`.

    ``fast`` comes first (the first-stage ranking), ``partial`` each time LLM scores land,
    ``final`` last. Every update carries a complete ranking.
    """

    kind: UpdateKind
    ranking: Ranking
    elapsed: float
    """Seconds since the request started."""

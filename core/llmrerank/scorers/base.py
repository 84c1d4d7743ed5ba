"""The Scorer protocol: the one boundary between the funnel and every backend."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ..budget import Deadline

__all__ = ["Scorer", "Scores", "scorer_batch_size", "scorer_concurrency"]


class Scores(list[float | None]):
    """The scores of one ``ascore`` call, able to say why some are missing.

    ``reasons`` maps the index of a ``None`` entry to a provenance reason
    (``"malformed_output"``, ``"backend_error"``, ...). A ``None`` without a reason means the
    text was not scored in time (``"deadline"``). A plain list works too.
    """

    def __init__(
        self, values: Sequence[float | None] = (), reasons: dict[int, str] | None = None
    ) -> None:
        super().__init__(values)
        self.reasons: dict[int, str] = dict(reasons or {})


@runtime_checkable
class Scorer(Protocol):
    """Scores texts for a query; higher is more relevant.

    ``ascore`` returns one entry per text, in order: a finite float, or ``None`` when that text
    was not scored. A ``None`` means "not in time" unless the scorer returns :class:`Scores` with
    a reason for it (unusable output, a failed request). A failure of the whole call raises a
    :class:`~llmrerank.errors.BackendError`. Batching, concurrency limits
    and retries live inside the scorer; the funnel sees only scores.

    Optional attributes the funnel reads when present:

    - ``batch_size`` (int): how many texts the funnel sends per ``ascore`` call in the LLM stage
      (default 1: one request per candidate, the natural unit for HTTP backends);
    - ``ascore_candidates(query, candidates, *, deadline)``: used instead of ``ascore`` in the fast
      stage when present, for scorers that need more than the text (retrieval scores, metadata);
    - ``max_concurrency`` (int): an upper bound on concurrent ``ascore`` calls that help
      (1 for a CPU-bound in-process model).
    """

    @property
    def fingerprint(self) -> str:
        """Stable identity: backend, model and prompt version. Keys the cache; in provenance."""
        ...

    async def ascore(
        self, query: str, texts: Sequence[str], *, deadline: Deadline
    ) -> list[float | None]: ...


def scorer_batch_size(scorer: Scorer) -> int:
    return max(1, int(getattr(scorer, "batch_size", 1) or 1))


def scorer_concurrency(scorer: Scorer, requested: int) -> int:
    limit = getattr(scorer, "max_concurrency", None)
    return max(1, min(requested, int(limit)) if limit else requested)

"""Public test doubles, for llmrerank's tests and for yours.

:class:`ScriptedScorer` is a scorer whose latency, failures and scores the test controls. It is a
test double for timing and fault behaviour, not a model: its scores are whatever you script.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence

from .budget import Deadline
from .errors import BackendError

__all__ = ["ScriptedScorer", "heavy_tailed_latency"]


class ScriptedScorer:
    """Scores with ``score_fn(query, text)`` after ``latency()`` seconds per call.

    Args:
        score_fn: the score of one text (default: the number of query words it contains).
        latency: seconds per call, a constant or a callable drawn per call (heavy tails welcome).
        fail: raise this error on every call, or a callable deciding per call (call number -> error
            or None).
        batch_size / max_concurrency: what the funnel reads from real scorers.
    """

    def __init__(
        self,
        score_fn: Callable[[str, str], float | None] | None = None,
        *,
        latency: float | Callable[[], float] = 0.0,
        fail: BackendError | Callable[[int], BaseException | None] | None = None,
        batch_size: int = 1,
        max_concurrency: int | None = None,
        name: str = "scripted",
    ) -> None:
        self.score_fn = score_fn or _word_overlap
        self.latency = latency
        self.fail = fail
        self.batch_size = batch_size
        self.max_concurrency = max_concurrency
        self.name = name
        self.calls = 0
        self.texts_seen: list[str] = []
        self.cancelled = 0

    @property
    def fingerprint(self) -> str:
        return f"scripted:{self.name}"

    async def ascore(
        self, query: str, texts: Sequence[str], *, deadline: Deadline
    ) -> list[float | None]:
        self.calls += 1
        call = self.calls
        delay = self.latency() if callable(self.latency) else self.latency
        try:
            if delay > 0:
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.fail is not None:
            error = self.fail(call) if callable(self.fail) else self.fail
            if error is not None:
                raise error
        self.texts_seen.extend(texts)
        return [self.score_fn(query, t) for t in texts]


def _word_overlap(query: str, text: str) -> float:
    words = set(query.lower().split())
    return float(sum(w in words for w in text.lower().split()))


def heavy_tailed_latency(median: float, *, seed: int | None = None) -> Callable[[], float]:
    """A log-normal latency sampler with the given median (sigma 1.0: a long right tail)."""
    rng = random.Random(seed)
    return lambda: rng.lognormvariate(0.0, 1.0) * median

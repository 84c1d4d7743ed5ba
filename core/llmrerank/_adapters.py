"""What the LangChain and LlamaIndex adapters share, so each adapter only translates.

- :class:`LazyFunnel`: the funnel an adapter runs, given directly or built on first use from a
  preset and optional stages (building may load a model, so it waits until the first request).
- :func:`select`: the results an adapter returns (``top_n``, ``score_threshold``), each with its
  relevance score in [0, 1] (:mod:`llmrerank.calibration`).
- :func:`provenance`: the per-result record stored under :data:`PROVENANCE_KEY` in metadata.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Literal

from .calibration import relevance_scores
from .errors import ConfigError
from .funnel import Funnel
from .presets import Preset, get_preset
from .scorers.base import Scorer
from .types import Ranking, ScoredCandidate

__all__ = ["PROVENANCE_KEY", "LazyFunnel", "provenance", "select", "validate_top_n"]

PROVENANCE_KEY = "llmrerank"
"""The metadata key under which both adapters store a result's provenance."""

DEFAULT_PRESET = "enterprise"


class LazyFunnel:
    """A :class:`Funnel` given now, or built once (thread-safely) when first needed.

    Args:
        funnel: a ready funnel; excludes ``preset``, ``fast`` and ``llm``.
        preset: the preset to build from (name or :class:`Preset`); checked at once.
        fast: the first-stage scorer (default: the preset's, BM25).
        llm: the LLM scorer; ``"default"`` is the embedded CPU model, ``None`` ranks by the fast
            stage alone.
        preset_given: whether the caller chose ``preset`` (so it conflicts with ``funnel``).
    """

    def __init__(
        self,
        *,
        funnel: Funnel | None = None,
        preset: str | Preset = DEFAULT_PRESET,
        fast: Scorer | None = None,
        llm: Scorer | Literal["default"] | None = "default",
        preset_given: bool = False,
    ) -> None:
        if funnel is not None:
            if not isinstance(funnel, Funnel):
                raise ConfigError(
                    f"funnel must be an llmrerank.Funnel, got {type(funnel).__name__}"
                )
            chosen = [
                name
                for name, given in (
                    ("preset", preset_given),
                    ("fast", fast is not None),
                    ("llm", not (isinstance(llm, str) and llm == "default")),
                )
                if given
            ]
            if chosen:
                raise ConfigError(
                    f"give either funnel= or {'/'.join(chosen)}=, not both: a funnel already "
                    "carries its stages and settings"
                )
        if fast is not None and not isinstance(fast, Scorer):
            raise ConfigError(
                f"fast must be a Scorer (with fingerprint and ascore), got {type(fast).__name__}"
            )
        if not (
            llm is None or (isinstance(llm, str) and llm == "default") or isinstance(llm, Scorer)
        ):
            raise ConfigError(
                f"llm must be a Scorer, 'default' (the embedded model) or None, got {llm!r}"
            )
        self._preset = get_preset(preset)  # an unknown name fails here, not at the first query
        self._fast = fast
        self._llm = llm
        self._funnel = funnel
        self._lock = threading.Lock()

    @property
    def built(self) -> bool:
        """Whether the funnel exists yet (given, or built by an earlier request)."""
        return self._funnel is not None

    def get(self) -> Funnel:
        """The funnel, building it from the preset on the first call."""
        funnel = self._funnel
        if funnel is None:
            with self._lock:
                funnel = self._funnel
                if funnel is None:
                    funnel = self._preset.build(llm=self._llm, fast=self._fast)
                    self._funnel = funnel
        return funnel

    def __repr__(self) -> str:
        if self._funnel is not None:
            return repr(self._funnel)
        llm = (
            self._llm if isinstance(self._llm, str) or self._llm is None else self._llm.fingerprint
        )
        return f"LazyFunnel(preset={self._preset.name!r}, llm={llm!r}, not built yet)"


def validate_top_n(top_n: int | None) -> int | None:
    """``top_n`` must be a positive int or ``None`` (everything)."""
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise ConfigError(f"top_n must be a positive int or None (return all), got {top_n!r}")
    return top_n


def select(
    ranking: Ranking, top_n: int | None, score_threshold: float | None = None
) -> list[tuple[ScoredCandidate, float]]:
    """The first ``top_n`` results whose relevance score (the calibrated probability in [0, 1],
    see :mod:`llmrerank.calibration`) is at least ``score_threshold``, each with that score."""
    results = list(zip(ranking.results, relevance_scores(ranking), strict=True))
    if score_threshold is not None:
        if not math.isfinite(score_threshold) or not 0.0 <= score_threshold <= 1.0:
            raise ConfigError(
                f"score_threshold must be within [0, 1] (a relevance probability), got "
                f"{score_threshold!r}"
            )
        results = [(r, p) for r, p in results if p >= score_threshold]
    return results if top_n is None else results[:top_n]


def provenance(
    result: ScoredCandidate, ranking: Ranking, relevance: float | None = None
) -> dict[str, Any]:
    """One result's record: its rank, fused score, stage scores and the ranking's degradation.

    Keys: ``rank`` (0-based, in the full ranking), ``score`` (fused), ``stage`` (``llm``,
    ``fast`` or ``input``: what decided its place), ``fast_score``, ``llm_score`` (``None`` when
    the LLM did not score it), ``cached``, ``degraded`` and ``reasons`` (of the whole request),
    ``funnel`` (the preset or funnel name), ``relevance_score`` (the calibrated [0, 1] score)
    when given.
    """
    record = result.provenance()
    if relevance is not None:
        record["relevance_score"] = relevance
    record.update(
        degraded=ranking.degraded,
        reasons=list(ranking.reasons),
        funnel=ranking.info.get("funnel"),
    )
    return record

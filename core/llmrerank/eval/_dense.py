"""The dense arms' scorer: all-MiniLM-L6-v2 with document vectors computed at index time.

A dense or hybrid first stage in production holds its documents' vectors in an index; only the
query is embedded per request. :func:`indexed_dense_scorer` embeds the benchmark's candidate
texts once, before anything is timed (the time is reported as the dense index time), and
returns :class:`llmrerank.scorers.dense.DenseScorer` over those vectors, or, where that scorer is
not available, the small :class:`MiniLMScorer` below, which does the same.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .._optional import require
from ..budget import Deadline

__all__ = ["MiniLMScorer", "indexed_dense_scorer"]


class MiniLMScorer:
    """Cosine similarity of normalised all-MiniLM-L6-v2 embeddings; known texts are looked up."""

    max_concurrency = 1

    def __init__(self, model: Any, vectors: Mapping[str, np.ndarray]) -> None:
        self._model = model
        self._vectors = vectors

    @property
    def fingerprint(self) -> str:
        return "sentence-transformers:all-MiniLM-L6-v2"

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        out: np.ndarray = self._model.encode(
            list(texts), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return out

    async def ascore(
        self, query: str, texts: Sequence[str], *, deadline: Deadline
    ) -> list[float | None]:
        q = self._encode([query])[0]
        missing = [t for t in texts if t not in self._vectors]
        known = dict(self._vectors)
        if missing:
            known.update(zip(missing, self._encode(missing), strict=True))
        return [float(np.dot(q, known[t])) for t in texts]


def indexed_dense_scorer(texts: Iterable[str]) -> tuple[Any, dict[str, Any]]:
    """(scorer, facts): a dense scorer that knows the vectors of ``texts``; ``facts`` holds the
    index time and size."""
    st = require("sentence_transformers", extra="dense", feature="the dense arms")
    from ..models import minilm_path

    model = st.SentenceTransformer(str(minilm_path()), device="cpu")
    unique = list(dict.fromkeys(texts))
    t0 = time.perf_counter()
    vectors = model.encode(
        unique,
        batch_size=32,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    facts: dict[str, Any] = {"index_s": time.perf_counter() - t0, "documents": len(unique)}
    try:
        from ..scorers.dense import (  # type: ignore[import-not-found,unused-ignore]
            DenseScorer,
            PrecomputedEmbeddings,
        )
    except ImportError:
        return MiniLMScorer(model, dict(zip(unique, vectors, strict=True))), facts
    store = PrecomputedEmbeddings(max_entries=max(1, len(unique)))
    for text, vector in zip(unique, vectors, strict=True):
        store.add(text, vector)
    scorer = DenseScorer(embeddings_from=store)
    scorer.load()
    return scorer, facts

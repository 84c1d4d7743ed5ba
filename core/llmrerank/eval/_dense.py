"""A sentence-transformers bi-encoder scorer over the embedded all-MiniLM-L6-v2, for the dense arms.

Used when :mod:`llmrerank.scorers.dense` is not available; it embeds the query and the candidate
texts per request (no index), as a dense stage over retrieved candidates does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._optional import require
from ..budget import Deadline

__all__ = ["MiniLMScorer", "dense_scorer"]


class MiniLMScorer:
    """Cosine similarity of all-MiniLM-L6-v2 embeddings."""

    max_concurrency = 1

    def __init__(self, *, batch_size: int = 32) -> None:
        self.encode_batch_size = batch_size
        self._model: Any = None

    @property
    def fingerprint(self) -> str:
        return "sentence-transformers:all-MiniLM-L6-v2"

    def load(self) -> None:
        if self._model is None:
            st = require("sentence_transformers", extra="dense", feature="the dense arms")
            from ..models import minilm_path

            self._model = st.SentenceTransformer(str(minilm_path()), device="cpu")

    async def ascore(
        self, query: str, texts: Sequence[str], *, deadline: Deadline
    ) -> list[float | None]:
        self.load()
        emb = self._model.encode(
            [query, *texts],
            batch_size=self.encode_batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return [float(s) for s in emb[1:] @ emb[0]]


def dense_scorer() -> Any:
    """llmrerank's DenseScorer when it exists, else :class:`MiniLMScorer`."""
    try:
        from ..scorers.dense import DenseScorer  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return MiniLMScorer()
    return DenseScorer()

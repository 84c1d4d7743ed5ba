"""First-stage retrieval for the benchmark: BM25 over the whole corpus (bm25s).

English Snowball stemming and bm25s's English stopword list, over title and text: the setting
that gives the BM25 figures in the test collections' README. Every arm of a benchmark reranks
the same top-N candidates this retriever returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._optional import require
from ..types import Candidate
from .data import Dataset

__all__ = ["BM25Retriever"]


class BM25Retriever:
    """A BM25 index over a :class:`Dataset`'s corpus (Okapi BM25, k1=1.5, b=0.75: bm25s's
    defaults)."""

    def __init__(self, dataset: Dataset, *, k1: float = 1.5, b: float = 0.75) -> None:
        bm25s = require("bm25s", extra="bench", feature="benchmark retrieval")
        stemmer_mod = require(
            "Stemmer", extra="bench", feature="BM25 stemming", package="PyStemmer"
        )
        self._bm25s: Any = bm25s
        self._stemmer: Any = stemmer_mod.Stemmer("english")
        self.dataset = dataset
        self.k1, self.b = k1, b
        self._ids = list(dataset.corpus)
        texts = [dataset.corpus[d].full_text for d in self._ids]
        tokens = bm25s.tokenize(texts, stopwords="en", stemmer=self._stemmer, show_progress=False)
        self._index: Any = bm25s.BM25(k1=k1, b=b)
        self._index.index(tokens, show_progress=False)

    @property
    def fingerprint(self) -> str:
        return f"bm25s(k1={self.k1},b={self.b},stem=english,stopwords=en)"

    def retrieve(self, queries: Sequence[str], n: int) -> list[list[Candidate]]:
        """The top ``n`` documents of each query (fewer if the corpus is smaller), best first,
        as :class:`Candidate` with ``retrieval_score`` set."""
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        n = min(n, len(self._ids))
        tokens = self._bm25s.tokenize(
            list(queries), stopwords="en", stemmer=self._stemmer, show_progress=False
        )
        docs, scores = self._index.retrieve(tokens, k=n, show_progress=False, n_threads=1)
        out: list[list[Candidate]] = []
        for row_docs, row_scores in zip(docs, scores, strict=True):
            cands = []
            for j, s in zip(row_docs, row_scores, strict=True):
                doc = self.dataset.corpus[self._ids[int(j)]]
                cands.append(Candidate(id=doc.id, text=doc.full_text, retrieval_score=float(s)))
            out.append(cands)
        return out

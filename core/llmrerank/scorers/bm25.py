"""BM25 over the candidate set, with rank-bm25 (Okapi BM25 or BM25+).

The statistics (document frequencies, average length) come from the candidates of the request
itself, which is what a first stage over a retriever's top-N needs: no index to build or keep.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Literal

import numpy as np
from rank_bm25 import BM25Okapi, BM25Plus

from ..budget import Deadline

__all__ = ["BM25Scorer", "tokenize"]

_INLINE_MAX = 500
"""Up to this many texts are scored on the event loop (a few ms); more go to a worker thread."""

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)

# A short English stopword list (the classic SMART/Lucene core); stemming does the rest.
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself just
    me more most my myself no nor not of off on once only or other our ours ourselves out over own
    same she should so some such than that the their theirs them themselves then there these they
    this those through to too under until up very was we were what when where which while who whom
    why will with would you your yours yourself yourselves""".split()
)


@lru_cache(maxsize=1)
def _stemmer() -> Callable[[list[str]], list[str]]:
    import Stemmer  # PyStemmer: Snowball stemmers in C

    stem_words: Callable[[list[str]], list[str]] = Stemmer.Stemmer("english").stemWords
    return stem_words


def tokenize(text: str, *, stem: bool = True, stopwords: frozenset[str] = STOPWORDS) -> list[str]:
    """Lower-case word tokens (letters and digits), stopwords removed, Snowball-stemmed."""
    tokens = [t for t in _TOKEN.findall(text.lower()) if t not in stopwords]
    return _stemmer()(tokens) if stem else tokens


class _LuceneIdfBM25(BM25Okapi):  # type: ignore[misc]
    """Okapi BM25 with Lucene's IDF, ``log(1 + (N - n + 0.5) / (n + 0.5))``.

    rank-bm25's classic IDF is zero or negative for a term in half or more of the documents,
    which is common in a small candidate set (with two candidates, any term in one of them scores
    0). Lucene's form is always positive and keeps the ordering of rare terms.
    """

    def _calc_idf(self, nd: dict[str, int]) -> None:
        n = self.corpus_size
        self.idf = {w: math.log(1.0 + (n - f + 0.5) / (f + 0.5)) for w, f in nd.items()}


class BM25Scorer:
    """Okapi BM25 (``variant="okapi"``, the default, with Lucene's non-negative IDF) or BM25+
    (``variant="plus"``), with statistics from the request's candidates.

    ``k1`` and ``b`` are the usual parameters; ``delta`` applies to BM25+ only.
    """

    batch_size = 10_000
    max_concurrency = 1

    def __init__(
        self,
        *,
        variant: Literal["okapi", "plus"] = "okapi",
        k1: float = 1.2,
        b: float = 0.75,
        delta: float = 1.0,
        stem: bool = True,
    ) -> None:
        if variant not in ("okapi", "plus"):
            raise ValueError(f"variant must be 'okapi' or 'plus', got {variant!r}")
        self.variant = variant
        self.k1, self.b, self.delta, self.stem = k1, b, delta, stem

    @property
    def fingerprint(self) -> str:
        extra = f",delta={self.delta}" if self.variant == "plus" else ""
        return f"bm25:{self.variant}(idf={'lucene' if self.variant == 'okapi' else 'plus'},k1={self.k1},b={self.b}{extra},stem={self.stem})"

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        """Synchronous scoring; ``ascore`` is the protocol entry point."""
        if not texts:
            return []
        corpus = [tokenize(t, stem=self.stem) for t in texts]
        if not any(corpus):
            return [0.0] * len(texts)
        # rank-bm25 divides by the corpus size and average length; empty documents are fine.
        model: BM25Okapi | BM25Plus
        if self.variant == "okapi":
            model = _LuceneIdfBM25(corpus, k1=self.k1, b=self.b)
        else:
            model = BM25Plus(corpus, k1=self.k1, b=self.b, delta=self.delta)
        q = tokenize(query, stem=self.stem)
        if not q:
            return [0.0] * len(texts)
        scores = np.asarray(model.get_scores(q), dtype=float)
        return [float(s) for s in scores]

    async def ascore(
        self, query: str, texts: Sequence[str], *, deadline: Deadline
    ) -> list[float | None]:
        if len(texts) < _INLINE_MAX:
            return list(self.score(query, texts))
        # Thousands of texts take seconds to tokenise: keep the event loop free meanwhile.
        return list(await asyncio.to_thread(self.score, query, texts))

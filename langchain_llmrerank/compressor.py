"""``LLMRerankCompressor``: the llmrerank funnel as a LangChain ``BaseDocumentCompressor``."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManager, CallbackManager, Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from llmrerank._adapters import PROVENANCE_KEY, LazyFunnel, provenance, select
from llmrerank.funnel import Funnel
from llmrerank.scorers.base import Scorer
from llmrerank.types import Candidate, Ranking
from pydantic import ConfigDict, Field, PrivateAttr

__all__ = [
    "RELEVANCE_SCORE_KEY",
    "RETRIEVAL_SCORE_KEYS",
    "LLMRerankCompressor",
    "with_retrieval_scores",
]

RELEVANCE_SCORE_KEY = "relevance_score"
"""The metadata key of the fused score (the LangChain reranker convention)."""

RETRIEVAL_SCORE_KEYS = ("retrieval_score", "score", "similarity_score", "_score", "relevance_score")
"""Metadata keys read, in this order, for the retriever's score of each document: the first key
that every document has, with a finite number, is used (else the documents' order alone stands
for the retriever's ranking). Higher must mean more relevant."""

_UNSET_TOP_N: Any = object()


def with_retrieval_scores(
    pairs: Iterable[tuple[Document, float]], key: str = "retrieval_score"
) -> list[Document]:
    """Documents from ``(document, score)`` pairs with the score under ``metadata[key]``, in the
    given order: what ``vector_store.similarity_search_with_relevance_scores(query, k=50)``
    returns, ready for :class:`LLMRerankCompressor` (which reads that key). Scores must be
    "higher is better" (relevance scores, not distances). Returns copies."""
    out = []
    for doc, score in pairs:
        metadata = copy.deepcopy(doc.metadata)
        metadata[key] = float(score)
        out.append(doc.model_copy(update={"metadata": metadata}))
    return out


class LLMRerankCompressor(BaseDocumentCompressor):
    """Rerank documents with the llmrerank funnel: a fast stage on every document, an LLM on the
    top ``k``, a hard deadline after which the fast-stage order fills in (flagged, never dropped).

    Configure it with a preset name (and optionally your own ``fast``/``llm`` scorers), or hand it
    a ready :class:`~llmrerank.Funnel`. The funnel is built on the first call, so constructing
    the compressor never loads a model.

    Returns copies of the best ``top_n`` documents, best first; each copy's metadata (deep-copied)
    has ``relevance_score`` (an estimated probability of relevance in [0, 1], never increasing
    down the list) and ``llmrerank``, a dict with ``rank``, ``score`` (the raw fused score that
    ordered them), ``relevance_score``, ``stage`` (``llm``/``fast``/``input``), ``fast_score``, ``llm_score``,
    ``cached``, ``degraded``, ``reasons`` and ``funnel``. The caller's documents are not changed.

    Example:
        .. code-block:: python

            from langchain_classic.retrievers import ContextualCompressionRetriever
            from langchain_llmrerank import LLMRerankCompressor

            retriever = ContextualCompressionRetriever(
                base_compressor=LLMRerankCompressor(preset="enterprise", top_n=5),
                base_retriever=vector_store.as_retriever(search_kwargs={"k": 50}),
            )
    """

    model_config = ConfigDict(
        extra="forbid", arbitrary_types_allowed=True, use_attribute_docstrings=True
    )

    top_n: int | None = Field(default=3, ge=1)
    """How many documents to return, best first; ``None`` returns every document, reranked."""

    score_threshold: float | None = None
    """Drop documents whose ``relevance_score`` is below this: a probability of relevance in
    [0, 1] (calibrated, see ``llmrerank.calibration``); ``None`` keeps all."""

    preset: str = "enterprise"
    """The scenario preset the funnel is built from: ``realtime``, ``enterprise`` or ``research``
    (see ``llmrerank.presets``). Not used when ``funnel`` is given."""

    fast: Scorer | None = Field(default=None, exclude=True)
    """The first-stage scorer run on every document; ``None`` uses the preset's (the retriever's
    order, and score where the metadata has one, fused with BM25 over the documents)."""

    llm: Scorer | Literal["default"] | None = Field(default="default", exclude=True)
    """The second-stage scorer run on the top ``k``: ``"default"`` is the embedded CPU model,
    any llmrerank ``Scorer`` (OpenAI-compatible server, vLLM, ...), or ``None`` for none."""

    funnel: Funnel | None = Field(default=None, exclude=True)
    """A ready funnel; replaces ``preset``, ``fast`` and ``llm``."""

    k: int | None = Field(default=None, ge=0)
    """How many documents the LLM scores per request; ``None`` keeps the funnel's setting."""

    deadline: float | None = Field(default=None, gt=0)
    """Seconds per request; ``None`` keeps the funnel's (the preset's) deadline."""

    input_ranked: bool = True
    """The documents arrive in their retriever's ranking, best first (what every LangChain
    retriever returns): the funnel's fast stage fuses that order with BM25 over the documents,
    so the reranker builds on the retriever instead of replacing it. ``False`` when the order
    carries no meaning."""

    retrieval_score_keys: tuple[str, ...] = RETRIEVAL_SCORE_KEYS
    """Metadata keys holding the retriever's score (see :data:`RETRIEVAL_SCORE_KEYS`); ``()``
    reads none."""

    _lazy: LazyFunnel = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        self._lazy = LazyFunnel(
            funnel=self.funnel,
            preset=self.preset,
            fast=self.fast,
            llm=self.llm,
            preset_given="preset" in self.model_fields_set,
        )

    def get_funnel(self) -> Funnel:
        """The funnel this compressor runs (built from the preset on first use)."""
        return self._lazy.get()

    # ------------------------------------------------------------------ LangChain interface

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Rerank ``documents`` for ``query``; returns new documents, best first."""
        return self._rerank_documents(documents, query, callbacks, _UNSET_TOP_N)

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Rerank ``documents`` for ``query`` on the running event loop (no worker thread)."""
        return await self._arerank_documents(documents, query, callbacks, _UNSET_TOP_N)

    # ------------------------------------------------------------------ shared by the retriever

    def _rerank_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None,
        top_n: int | None,
    ) -> list[Document]:
        docs = list(documents)
        manager = CallbackManager.configure(inheritable_callbacks=callbacks)
        run = manager.on_chain_start(
            None, {"query": query, "documents": len(docs)}, name=type(self).__name__
        )
        try:
            ranking = self.get_funnel().rerank(
                query,
                _candidates(docs, self.retrieval_score_keys),
                k=self.k,
                deadline=self.deadline,
                input_ranked=self.input_ranked,
            )
            out = self._results(docs, ranking, top_n)
        except BaseException as exc:
            run.on_chain_error(exc)
            raise
        run.on_chain_end({"documents": out, "ranking": ranking.provenance()})
        return out

    async def _arerank_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None,
        top_n: int | None,
    ) -> list[Document]:
        docs = list(documents)
        manager = AsyncCallbackManager.configure(inheritable_callbacks=callbacks)
        run = await manager.on_chain_start(
            None, {"query": query, "documents": len(docs)}, name=type(self).__name__
        )
        try:
            ranking = await self.get_funnel().arerank(
                query,
                _candidates(docs, self.retrieval_score_keys),
                k=self.k,
                deadline=self.deadline,
                input_ranked=self.input_ranked,
            )
            out = self._results(docs, ranking, top_n)
        except BaseException as exc:
            await run.on_chain_error(exc)
            raise
        await run.on_chain_end({"documents": out, "ranking": ranking.provenance()})
        return out

    def _results(self, docs: list[Document], ranking: Ranking, top_n: int | None) -> list[Document]:
        if top_n is _UNSET_TOP_N:
            top_n = self.top_n
        out = []
        for result, relevance in select(ranking, top_n, self.score_threshold):
            doc = docs[int(result.id)]
            metadata = copy.deepcopy(doc.metadata)
            metadata[RELEVANCE_SCORE_KEY] = relevance
            metadata[PROVENANCE_KEY] = provenance(result, ranking, relevance)
            out.append(doc.model_copy(update={"metadata": metadata}))
        return out


def _score_key(docs: list[Document], keys: Sequence[str]) -> str | None:
    """The first of ``keys`` under which every document has a finite number."""
    for key in keys:
        values = [doc.metadata.get(key) for doc in docs]
        if values and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in values
        ):
            return key
    return None


def _candidates(
    docs: list[Document], keys: Sequence[str] = RETRIEVAL_SCORE_KEYS
) -> list[Candidate]:
    # Positions are the ids: LangChain document ids may be missing or repeated. The order is the
    # retriever's ranking; a score every document carries (see RETRIEVAL_SCORE_KEYS) comes along.
    key = _score_key(docs, keys)
    return [
        Candidate(
            id=str(i),
            text=doc.page_content,
            retrieval_score=float(doc.metadata[key]) if key is not None else None,
        )
        for i, doc in enumerate(docs)
    ]

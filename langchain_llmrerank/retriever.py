"""``LLMRerankRetriever``: any LangChain retriever followed by the llmrerank funnel."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from .compressor import LLMRerankCompressor

__all__ = ["LLMRerankRetriever"]


class LLMRerankRetriever(BaseRetriever):
    """Retrieve with ``base_retriever``, then rerank with ``reranker``; returns the best ``k``.

    The same as ``ContextualCompressionRetriever(base_compressor=reranker, ...)``, plus a ``k``
    that can be set per call (``retriever.invoke(query, k=5)``); other keyword arguments of
    ``invoke`` go to the base retriever.

    Example:
        .. code-block:: python

            retriever = LLMRerankRetriever(
                base_retriever=vector_store.as_retriever(search_kwargs={"k": 50}),
                reranker=LLMRerankCompressor(preset="realtime"),
                k=5,
            )
            docs = retriever.invoke("how do I rotate a log file")
    """

    model_config = ConfigDict(
        extra="forbid", arbitrary_types_allowed=True, use_attribute_docstrings=True
    )

    base_retriever: BaseRetriever
    """Where the candidates come from; let it return many (20-300): the funnel narrows them."""

    reranker: LLMRerankCompressor = Field(default_factory=LLMRerankCompressor)
    """The compressor that reranks (default: the ``enterprise`` preset with the embedded LLM)."""

    k: int | None = Field(default=None, ge=1)
    """How many documents to return; ``None`` uses ``reranker.top_n``."""

    def _top_n(self, k: int | None) -> int | None:
        if k is None:
            return self.k if self.k is not None else self.reranker.top_n
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        return k

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        top_n = self._top_n(k)
        docs = self.base_retriever.invoke(
            query, config={"callbacks": run_manager.get_child()}, **kwargs
        )
        return self.reranker._rerank_documents(docs, query, run_manager.get_child(), top_n)

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        top_n = self._top_n(k)
        docs = await self.base_retriever.ainvoke(
            query, config={"callbacks": run_manager.get_child()}, **kwargs
        )
        return await self.reranker._arerank_documents(docs, query, run_manager.get_child(), top_n)

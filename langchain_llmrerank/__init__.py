"""LangChain adapter for llmrerank: a document compressor and a reranking retriever.

``LLMRerankCompressor`` drops into ``ContextualCompressionRetriever`` and
``DocumentCompressorPipeline``; ``LLMRerankRetriever`` wraps any retriever. Both return copies of
the documents with ``metadata["relevance_score"]`` and the provenance under
``metadata["llmrerank"]``. Needs ``pip install 'llmrerank[langchain]'``.
"""

from llmrerank._optional import require

require(
    "langchain_core", extra="langchain", feature="the LangChain adapter", package="langchain-core"
)

from llmrerank._adapters import PROVENANCE_KEY  # noqa: E402

from .compressor import (  # noqa: E402
    RELEVANCE_SCORE_KEY,
    RETRIEVAL_SCORE_KEYS,
    LLMRerankCompressor,
    with_retrieval_scores,
)
from .retriever import LLMRerankRetriever  # noqa: E402

__all__ = [
    "PROVENANCE_KEY",
    "RELEVANCE_SCORE_KEY",
    "RETRIEVAL_SCORE_KEYS",
    "LLMRerankCompressor",
    "LLMRerankRetriever",
    "with_retrieval_scores",
]

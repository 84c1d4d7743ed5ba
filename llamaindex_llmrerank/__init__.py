"""LlamaIndex adapter for llmrerank: a node postprocessor.

``LLMRerankPostprocessor`` goes in any query engine's ``node_postprocessors``. It returns copies of
the nodes with ``NodeWithScore.score`` set to the relevance score in [0, 1] (calibrated), the
retriever's score under ``metadata["retrieval_score"]`` and the provenance under ``metadata["llmrerank"]``. Needs
``pip install 'llmrerank[llamaindex]'``.
"""

from llmrerank._optional import require

require(
    "llama_index.core",
    extra="llamaindex",
    feature="the LlamaIndex adapter",
    package="llama-index-core",
)

from llmrerank._adapters import PROVENANCE_KEY  # noqa: E402

from .postprocessor import RETRIEVAL_SCORE_KEY, LLMRerankPostprocessor  # noqa: E402

__all__ = ["PROVENANCE_KEY", "RETRIEVAL_SCORE_KEY", "LLMRerankPostprocessor"]

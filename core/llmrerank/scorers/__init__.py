"""Scorers: one file per backend. Optional backends import their dependencies lazily.

``BM25Scorer``, ``RetrievalScorer`` (the retriever's own scores as stage 1) and
``RetrieverFusionScorer`` (the default fast stage: the retriever's ranking fused with BM25) need
only the core dependencies. The others load on first access, so a missing
optional dependency never breaks ``import llmrerank``; constructing one without its dependency
raises :class:`~llmrerank.errors.MissingExtraError` naming the extra to install:

- ``DenseScorer``, ``PrecomputedEmbeddings`` (``llmrerank[dense]``)
- ``CrossEncoderScorer`` (``llmrerank[dense]``; its ONNX backend ``llmrerank[onnx]``)
- ``RerankAPIScorer`` (``llmrerank[rerank-api]``)
- ``OpenAILLMScorer`` (``llmrerank[openai]``)
- ``LocalLLMScorer`` (``llmrerank[local]``; the embedded CPU default LLM)
- ``HybridScorer`` (whatever its two scorers need)
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .base import Scorer
from .bm25 import BM25Scorer
from .retrieval import RetrievalScorer
from .retriever_fusion import RetrieverFusionScorer

if TYPE_CHECKING:
    from .cross_encoder import CrossEncoderScorer
    from .dense import DenseScorer, PrecomputedEmbeddings
    from .hybrid import HybridScorer
    from .llm_local import LocalLLMScorer
    from .llm_openai import OpenAILLMScorer
    from .rerank_api import RerankAPIScorer

__all__ = [
    "BM25Scorer",
    "CrossEncoderScorer",
    "DenseScorer",
    "HybridScorer",
    "LocalLLMScorer",
    "OpenAILLMScorer",
    "PrecomputedEmbeddings",
    "RerankAPIScorer",
    "RetrievalScorer",
    "RetrieverFusionScorer",
    "Scorer",
]

_LAZY = {
    "CrossEncoderScorer": ".cross_encoder",
    "DenseScorer": ".dense",
    "HybridScorer": ".hybrid",
    "LocalLLMScorer": ".llm_local",
    "OpenAILLMScorer": ".llm_openai",
    "PrecomputedEmbeddings": ".dense",
    "RerankAPIScorer": ".rerank_api",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

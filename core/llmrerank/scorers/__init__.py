"""Scorers: one file per backend. Optional backends import their dependencies lazily."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Scorer
from .bm25 import BM25Scorer

if TYPE_CHECKING:
    from .llm_openai import OpenAILLMScorer

__all__ = ["BM25Scorer", "OpenAILLMScorer", "Scorer"]

_LAZY = {"OpenAILLMScorer": ".llm_openai"}


def __getattr__(name: str) -> Any:
    """Backends with optional dependencies load on first access, so a missing extra (httpx for
    ``OpenAILLMScorer``) removes that backend instead of breaking ``import llmrerank``."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value

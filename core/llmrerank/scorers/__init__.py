"""Scorers: one file per backend. Optional backends import their dependencies lazily."""

from .base import Scorer
from .bm25 import BM25Scorer

__all__ = ["BM25Scorer", "Scorer"]

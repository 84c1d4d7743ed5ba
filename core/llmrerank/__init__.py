"""llmrerank: LLM reranking fit for production.

A two-stage funnel (a fast first stage narrows the candidates, an LLM scores only the top k) with
a hard deadline, graceful degradation and progressive results. Start with
:meth:`Funnel.from_preset` or :class:`Funnel`. Logs go to ``logging.getLogger("llmrerank")``.
"""

from .breaker import CircuitBreaker
from .budget import Deadline, LatencyEstimate
from .cache import AsyncScoreCache, MemoryScoreCache, ScoreCache, SQLiteScoreCache
from .errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    CacheUnavailable,
    CircuitOpen,
    ConfigError,
    InputError,
    LLMRerankError,
    MalformedOutput,
    MissingExtraError,
    RateLimited,
)
from .funnel import Funnel
from .presets import PRESETS, Preset, get_preset
from .scorers.base import Scorer
from .scorers.bm25 import BM25Scorer
from .scorers.retriever_fusion import RetrieverFusionScorer
from .scoring import Fusion
from .types import Candidate, Ranking, RankingUpdate, ScoredCandidate

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "AsyncScoreCache",
    "BM25Scorer",
    "BackendError",
    "BackendTimeout",
    "BackendUnavailable",
    "CacheUnavailable",
    "Candidate",
    "CircuitBreaker",
    "CircuitOpen",
    "ConfigError",
    "Deadline",
    "Funnel",
    "Fusion",
    "InputError",
    "LLMRerankError",
    "LatencyEstimate",
    "MalformedOutput",
    "MemoryScoreCache",
    "MissingExtraError",
    "Preset",
    "Ranking",
    "RankingUpdate",
    "RateLimited",
    "RetrieverFusionScorer",
    "SQLiteScoreCache",
    "ScoreCache",
    "ScoredCandidate",
    "Scorer",
    "__version__",
    "get_preset",
]

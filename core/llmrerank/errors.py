"""One exception tree for llmrerank.

::

    LLMRerankError
    ├── InputError            bad call arguments (empty query, duplicate ids, ...); also a ValueError
    ├── ConfigError           a setting that cannot work (label set, preset name, ...); also a ValueError
    │   └── MissingExtraError an optional dependency is absent; names the extra to install
    ├── CacheUnavailable      a shared score cache (Redis) is down, slow or garbled; the funnel
    │                         ranks without it and never raises this
    └── BackendError          a scorer failed; the funnel degrades instead of raising it
        ├── BackendTimeout    the backend did not answer before the deadline
        ├── BackendUnavailable connection refused, 5xx, a dead process
        ├── RateLimited       429 from the backend (``retry_after`` in seconds when it said so)
        ├── MalformedOutput   the backend answered, but not with usable scores
        └── CircuitOpen       the circuit breaker is open: the backend is not even asked

Only ``InputError`` and ``ConfigError`` reach the caller of ``Funnel.rerank``; backend errors are
recorded in the ranking's provenance (``degraded`` and ``reasons``).
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendTimeout",
    "BackendUnavailable",
    "CacheUnavailable",
    "CircuitOpen",
    "ConfigError",
    "InputError",
    "LLMRerankError",
    "MalformedOutput",
    "MissingExtraError",
    "RateLimited",
]


class LLMRerankError(Exception):
    """Base class of every error llmrerank raises."""


class InputError(LLMRerankError, ValueError):
    """The call's arguments are not usable; the message names the argument and the fix."""


class ConfigError(LLMRerankError, ValueError):
    """A configuration that cannot work (unknown preset, multi-token label, ...)."""


class MissingExtraError(ConfigError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, feature: str, extra: str, package: str, command: str | None = None) -> None:
        install = command or f"pip install 'llmrerank[{extra}]'"
        super().__init__(
            f"{feature} needs the optional dependency {package!r}, which is not installed. "
            f"Install it with: {install}"
        )
        self.extra = extra
        self.package = package


class CacheUnavailable(LLMRerankError):
    """A score cache could not answer in time (down, slow, garbled); the lookup is skipped.

    Raised by :meth:`~llmrerank.cache_redis.RedisScoreCache.aget_many` (which has already logged
    the outage once); the funnel catches it, ranks without the cache and says so in
    ``Ranking.info["cache"]``.
    """


class BackendError(LLMRerankError):
    """A scorer backend failed. ``reason`` is the provenance label the funnel records."""

    reason = "backend_error"
    retryable = False


class BackendTimeout(BackendError):
    reason = "deadline"
    retryable = False


class BackendUnavailable(BackendError):
    retryable = True


class RateLimited(BackendError):
    retryable = True

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class MalformedOutput(BackendError):
    reason = "malformed_output"


class CircuitOpen(BackendError):
    reason = "circuit_open"

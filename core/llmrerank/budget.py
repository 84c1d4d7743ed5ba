"""Time budgets: the :class:`Deadline` value object, per-scorer latency estimates, and the
budget-aware choice of how many candidates the LLM stage can afford."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from .errors import InputError

__all__ = ["Deadline", "LatencyEstimate", "choose_k"]


@dataclass(frozen=True, slots=True)
class Deadline:
    """An absolute point on the monotonic clock by which work must be done.

    ``Deadline.never()`` has no limit. Deadlines are values: pass them down, never extend them.
    """

    at: float  # time.monotonic() seconds; math.inf for "never"

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        """A deadline ``seconds`` from now; ``None`` means no deadline."""
        if seconds is None:
            return cls(math.inf)
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
            raise InputError(f"deadline must be a number of seconds or None, got {seconds!r}")
        if not math.isfinite(seconds) and seconds > 0:
            return cls(math.inf)
        if not seconds > 0:
            raise InputError(
                f"deadline must be a positive number of seconds (or None for no deadline), "
                f"got {seconds!r}"
            )
        return cls(time.monotonic() + float(seconds))

    @classmethod
    def never(cls) -> Deadline:
        return cls(math.inf)

    @property
    def is_finite(self) -> bool:
        return math.isfinite(self.at)

    def remaining(self) -> float:
        """Seconds left (``inf`` without a deadline, never negative)."""
        if not self.is_finite:
            return math.inf
        return max(0.0, self.at - time.monotonic())

    @property
    def expired(self) -> bool:
        return self.is_finite and time.monotonic() >= self.at

    def timeout(self, cap: float | None = None) -> float | None:
        """A per-operation timeout: the time left, bounded by ``cap``; ``None`` when unbounded."""
        left = self.remaining()
        if cap is not None:
            left = min(left, cap)
        return None if math.isinf(left) else left

    def earlier(self, seconds: float) -> Deadline:
        """This deadline moved ``seconds`` earlier (a safety margin for assembling the result)."""
        return self if not self.is_finite else Deadline(self.at - seconds)


class LatencyEstimate:
    """Exponentially weighted moving average of one scorer's seconds per call and per candidate.

    A call costs ``overhead + per_candidate * n``; both are learnt from observations. Thread-safe.
    """

    def __init__(self, alpha: float = 0.3, initial_per_candidate: float | None = None) -> None:
        self.alpha = alpha
        self._per_candidate = initial_per_candidate
        self._lock = threading.Lock()
        self.observations = 0

    @property
    def per_candidate(self) -> float | None:
        """Seconds per candidate, or None before the first observation."""
        return self._per_candidate

    def observe(self, seconds: float, n: int) -> None:
        if n <= 0 or not math.isfinite(seconds) or seconds < 0:
            return
        sample = seconds / n
        with self._lock:
            if self._per_candidate is None:
                self._per_candidate = sample
            else:
                self._per_candidate += self.alpha * (sample - self._per_candidate)
            self.observations += 1


def choose_k(
    remaining: float,
    per_candidate: float | None,
    *,
    concurrency: int,
    k_min: int,
    k_max: int,
    safety: float = 0.8,
) -> int:
    """How many candidates the LLM stage can score in ``remaining`` seconds.

    With ``concurrency`` requests in flight, ``n`` candidates take about
    ``ceil(n / concurrency) * per_candidate``; only ``safety`` of the remaining time is planned.
    Without an estimate yet, ``k_max`` is tried (the deadline still protects the request).
    """
    if k_max <= k_min:
        return max(k_max, 0)
    if per_candidate is None or per_candidate <= 0 or math.isinf(remaining):
        return k_max
    rounds = math.floor(remaining * safety / per_candidate)
    return max(k_min, min(k_max, rounds * max(concurrency, 1)))

"""A small circuit breaker, so a dead backend costs nothing for a while.

States: ``closed`` (calls go through) -> after ``failure_threshold`` consecutive failures ->
``open`` (calls are refused for ``reset_after`` seconds) -> ``half_open`` (one trial call is let
through: success closes the circuit, failure opens it again).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Literal

__all__ = ["CircuitBreaker"]

logger = logging.getLogger("llmrerank")

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(
        self, failure_threshold: int = 3, reset_after: float = 30.0, *, name: str = "backend"
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.failure_threshold = failure_threshold
        self.reset_after = reset_after
        self.name = name
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False
        self._lock = threading.Lock()

    @property
    def state(self) -> State:
        with self._lock:
            return self._state_locked()

    def _state_locked(self) -> State:
        if self._opened_at is None:
            return "closed"
        if time.monotonic() - self._opened_at >= self.reset_after:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """May a call go through now? In ``half_open`` only one trial call at a time is allowed."""
        with self._lock:
            state = self._state_locked()
            if state == "closed":
                return True
            if state == "half_open" and not self._trial_in_flight:
                self._trial_in_flight = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            if self._opened_at is not None:
                logger.info("circuit %s closed: backend answered again", self.name)
            self._failures = 0
            self._opened_at = None
            self._trial_in_flight = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            was_open = self._opened_at is not None
            if was_open or self._failures >= self.failure_threshold:
                self._opened_at = time.monotonic()
                if not was_open:
                    logger.warning(
                        "circuit %s opened after %d consecutive failures; not calling it for %.0f s",
                        self.name,
                        self._failures,
                        self.reset_after,
                    )
            self._trial_in_flight = False

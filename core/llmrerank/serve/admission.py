"""Backpressure: a bounded number of requests running and waiting; the rest are turned away.

Turning a request away at once (503 with Retry-After) keeps latency bounded for the admitted ones
and memory bounded for the process, where an unbounded queue would grow until every request
misses its deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

__all__ = ["Admission", "Overloaded"]


class Overloaded(Exception):
    """Every slot is busy and the queue is full."""

    def __init__(self, running: int, queued: int, retry_after: int) -> None:
        super().__init__(
            f"server busy: {running} request(s) running and {queued} queued (the limit); "
            f"retry in {retry_after} s"
        )
        self.retry_after = retry_after


class Admission:
    """At most ``max_concurrent`` holders at once and ``max_queued`` waiting for a slot."""

    def __init__(self, max_concurrent: int, max_queued: int, retry_after: int = 1) -> None:
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.retry_after = retry_after
        self._slots = asyncio.Semaphore(max_concurrent)
        self.running = 0
        self.queued = 0
        self.on_change: Callable[[int, int], None] | None = None
        """Called with (running, queued) after each change (the metrics' gauges)."""

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self.running, self.queued)

    async def acquire(self) -> float:
        """Wait for a slot; returns the seconds spent waiting. Raises :class:`Overloaded` at
        once when every slot is busy and the queue is full. Pair with :meth:`release`."""
        if self.running >= self.max_concurrent and self.queued >= self.max_queued:
            raise Overloaded(self.running, self.queued, self.retry_after)
        t0 = time.monotonic()
        self.queued += 1
        self._changed()
        try:
            await self._slots.acquire()
        except BaseException:
            self.queued -= 1
            self._changed()
            raise
        self.queued -= 1
        self.running += 1
        self._changed()
        return time.monotonic() - t0

    def release(self) -> None:
        self.running -= 1
        self._slots.release()
        self._changed()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[float]:
        """Hold a slot for the body of the ``async with``; yields the seconds spent waiting."""
        waited = await self.acquire()
        try:
            yield waited
        finally:
            self.release()

"""Micro-batched, deadline-aware scoring in a worker thread, shared by the in-process models.

A torch forward pass cannot be interrupted, so the deadline is honoured *between* batches: the
worker stops before a batch it does not expect to finish in time (judged by the last batch's
duration), and the texts it did not reach come back as ``None``. When the awaiting coroutine is
cancelled (the funnel's own deadline), the worker stops after the batch in flight.

Every in-process model computes on one thread of the process (:func:`run_on_compute_thread`):
OpenMP keeps a team of intra-op threads per calling thread, and the team of a finished call keeps
spinning for a while, so forward passes spread over a pool of threads (``asyncio.to_thread``) ran
with more busy threads than cores: the enterprise preset's local LLM computed at 0.51-0.70 ms per
token from a pool and at 0.38-0.41 ms from one thread (2 cores, bfloat16), and scored all 20 of its
window in 2.5 s instead of 15-19.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import importlib.util
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from ..budget import Deadline
from ..errors import MissingExtraError
from .base import Scores

__all__ = [
    "checked_scores",
    "compute_executor",
    "need",
    "run_on_compute_thread",
    "score_in_batches",
]

logger = logging.getLogger("llmrerank")

_T = TypeVar("_T")
_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def compute_executor() -> concurrent.futures.ThreadPoolExecutor:
    """The process's one compute thread for in-process models (created on first use)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="llmrerank-compute"
            )
        return _executor


async def run_on_compute_thread(fn: Callable[..., _T], /, *args: object) -> _T:
    """``await fn(*args)`` on the compute thread, with the caller's context variables (as
    ``asyncio.to_thread`` does). Calls queue in order; a call cancelled before it starts never
    runs."""
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, fn, *args)
    return await loop.run_in_executor(compute_executor(), call)


def checked_scores(values: Sequence[float | None], *, source: str) -> Scores:
    """Finite floats pass; NaN and infinities become ``None`` with the reason
    ``malformed_output`` (logged once a call); ``None`` stays ``None`` (not reached in time, or
    nothing to score)."""
    out = Scores([None] * len(values))
    for i, v in enumerate(values):
        if v is None:
            continue
        f = float(v)
        if math.isfinite(f):
            out[i] = f
        else:
            out.reasons[i] = "malformed_output"
    if out.reasons:
        logger.warning(
            "%s produced %d non-finite score(s); treated as not scored", source, len(out.reasons)
        )
    return out


async def score_in_batches(
    n: int,
    batch_fn: Callable[[int, int], Sequence[float | None]],
    *,
    batch_size: int,
    deadline: Deadline,
    lock: threading.Lock,
    source: str,
    prepare: Callable[[], None] | None = None,
) -> Scores:
    """Run ``batch_fn(start, stop)`` over ``range(n)`` in batches on a worker thread.

    ``batch_fn`` returns one score (or None) per index in ``[start, stop)``; non-finite scores
    come back ``None`` with the reason ``malformed_output``. ``prepare`` runs
    first on the same thread (loading a model, embedding the query). ``lock`` serialises use of
    one model across concurrent calls (a CPU model gains nothing from overlapping).
    """
    stop_flag = threading.Event()

    def work() -> list[float | None]:
        out: list[float | None] = [None] * n
        last: float | None = None
        with lock:
            if prepare is not None:
                prepare()
            for start in range(0, n, batch_size):
                if stop_flag.is_set():
                    break
                left = deadline.remaining()
                if left <= 0 or (last is not None and left < last):
                    logger.info(
                        "%s: deadline reached after %d of %d texts; the rest are not scored",
                        source,
                        start,
                        n,
                    )
                    break
                t0 = time.monotonic()
                stop = min(n, start + batch_size)
                scores = batch_fn(start, stop)
                out[start:stop] = list(scores)
                last = time.monotonic() - t0
        return out

    try:
        return checked_scores(await run_on_compute_thread(work), source=source)
    except asyncio.CancelledError:
        stop_flag.set()
        raise


def need(module: str, *, extra: str, feature: str, package: str) -> None:
    """Raise :class:`MissingExtraError` now if ``module`` is not installed (without importing
    it: torch-based packages take seconds to import, which the first call pays instead)."""
    if importlib.util.find_spec(module) is None:
        raise MissingExtraError(feature, extra, package)

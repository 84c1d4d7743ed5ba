"""Prometheus metrics of one server (a registry per app, so several apps never collide).

With ``--workers N`` (``PROMETHEUS_MULTIPROC_DIR`` set by the parent), every worker writes its
values to that directory and ``/metrics``, whichever worker answers it, reports the **sum over
the live workers**: counters and histograms added up (a worker that restarted keeps its counts),
the gauges (running, queued, workers) summed over the workers alive. ``llmrerank_workers`` says
how many there are.

The degraded rate is ``rate(llmrerank_rankings_total{degraded="true"}[5m]) /
rate(llmrerank_rankings_total[5m])``; the cache hit ratio is
``rate(llmrerank_cache_hits_total[5m]) / (rate(llmrerank_cache_hits_total[5m]) +
rate(llmrerank_cache_misses_total[5m]))``.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..types import Ranking

__all__ = ["CONTENT_TYPE_LATEST", "ServerMetrics", "multiprocess_dir"]

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def multiprocess_dir() -> str | None:
    """The directory of prometheus_client's multiprocess mode, when this is a worker."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class ServerMetrics:
    def __init__(self) -> None:
        self.multiprocess = multiprocess_dir() is not None
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        live: dict[str, Any] = {"multiprocess_mode": "livesum"} if self.multiprocess else {}
        self.requests = Counter(
            "llmrerank_requests", "HTTP requests answered", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "llmrerank_request_latency_seconds",
            "Seconds from request to the end of the response (a whole stream for SSE)",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rankings = Counter(
            "llmrerank_rankings", "Final rankings produced", ["degraded"], registry=r
        )
        self.degraded_reasons = Counter(
            "llmrerank_degraded", "Degraded rankings by reason", ["reason"], registry=r
        )
        self.cache_hits = Counter(
            "llmrerank_cache_hits", "LLM scores served from the score cache", registry=r
        )
        self.cache_misses = Counter(
            "llmrerank_cache_misses", "LLM scores not found in the score cache", registry=r
        )
        self.cache_unavailable = Counter(
            "llmrerank_cache_unavailable",
            "Rankings made without the score cache because it did not answer in time",
            registry=r,
        )
        self.llm_scored = Counter(
            "llmrerank_llm_scored", "Candidates that got an LLM score", registry=r
        )
        self.rejected = Counter(
            "llmrerank_rejected", "Requests turned away with 503 (queue full)", registry=r
        )
        self.cancelled = Counter(
            "llmrerank_cancelled", "Streams whose client left before the final ranking", registry=r
        )
        self.running = Gauge(
            "llmrerank_running_requests", "Requests being worked on", registry=r, **live
        )
        self.queued = Gauge(
            "llmrerank_queued_requests", "Requests waiting for a slot", registry=r, **live
        )
        self.workers = Gauge(
            "llmrerank_workers", "Server processes serving (ready)", registry=r, **live
        )

    def set_load(self, running: int, queued: int) -> None:
        self.running.set(running)
        self.queued.set(queued)

    def worker_up(self) -> None:
        self.workers.set(1)

    def worker_down(self) -> None:
        self.workers.set(0)
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    def observe_ranking(self, ranking: Ranking) -> None:
        self.rankings.labels(degraded=str(ranking.degraded).lower()).inc()
        for reason in ranking.reasons:
            self.degraded_reasons.labels(reason=reason).inc()
        self.cache_hits.inc(int(ranking.info.get("cache_hits", 0) or 0))
        self.cache_misses.inc(int(ranking.info.get("cache_misses", 0) or 0))
        if ranking.info.get("cache") == "unavailable":
            self.cache_unavailable.inc()
        self.llm_scored.inc(ranking.llm_scored)

    def render(self) -> bytes:
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)

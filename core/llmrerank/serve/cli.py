"""The ``serve`` subcommand: ``llmrerank serve [flags]`` (also ``python -m llmrerank.serve``).

Flags left unset fall back to ``LLMRERANK_*`` environment variables, then to ``--config FILE``
(TOML), then to the defaults in :class:`~llmrerank.serve.settings.ServeSettings`. The LLM API key
is read from ``LLMRERANK_LLM_API_KEY`` or the config file only: a flag would show in ``ps``; so
is the Redis password (``LLMRERANK_CACHE_PASSWORD``).

``--workers N`` starts N server processes on one port (:mod:`llmrerank.serve.workers`: a socket
each with ``SO_REUSEPORT``, so the kernel balances connections; each builds its own funnel and
loads its model before it listens). Their ``/metrics`` are summed through prometheus_client's
multiprocess mode, in a temporary directory removed at exit.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

__all__ = ["WORKER_SETTINGS_ENV", "add_serve_arguments", "add_serve_parser", "main", "run_serve"]

WORKER_SETTINGS_ENV = "_LLMRERANK_WORKER_SETTINGS"
"""The environment variable that carries the settings (JSON) to the ``--workers`` processes."""

_SETTINGS = (
    "host",
    "port",
    "preset",
    "deadline",
    "k",
    "llm",
    "llm_endpoints",
    "llm_model",
    "scripted_latency",
    "score_cache",
    "cache_size",
    "cache_prefix",
    "cache_ttl",
    "cache_timeout",
    "workers",
    "max_documents",
    "max_chars_per_doc",
    "max_body_bytes",
    "max_deadline",
    "max_concurrent",
    "max_queued",
    "retry_after",
    "demo",
    "demo_corpus_size",
    "demo_top_n",
    "log_level",
)


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """The serve flags, every one defaulting to None (= not given on the command line)."""
    from ..presets import PRESETS

    p.add_argument("--config", metavar="FILE", help="TOML file with settings (same names)")
    net = p.add_argument_group("network")
    net.add_argument("--host", help="address to bind (default 127.0.0.1: this machine only)")
    net.add_argument("--port", type=int, help="port (default 8000; 0 picks a free one)")
    net.add_argument(
        "--workers",
        type=int,
        help="server processes sharing the port, each with its own model (default 1)",
    )
    rank = p.add_argument_group("ranking")
    rank.add_argument("--preset", choices=sorted(PRESETS), help="default preset (enterprise)")
    rank.add_argument("--deadline", type=float, help="seconds per request (default: the preset's)")
    rank.add_argument("--k", type=int, help="candidates the LLM scores (default: the preset's)")
    rank.add_argument(
        "--llm",
        choices=["default", "none", "openai", "scripted"],
        help="default: embedded SmolLM2 on CPU; none: fast stage only; openai: --llm-endpoint; "
        "scripted: a test double for load tests (--scripted-latency)",
    )
    rank.add_argument(
        "--scripted-latency", type=float, help="seconds per call of --llm scripted (0)"
    )
    rank.add_argument(
        "--llm-endpoint",
        dest="llm_endpoints",
        action="append",
        metavar="URL",
        help="base URL of an OpenAI-compatible server (repeat for several)",
    )
    rank.add_argument("--llm-model", help="model name on the OpenAI-compatible server")
    cache = p.add_argument_group("score cache")
    cache.add_argument(
        "--cache",
        dest="score_cache",
        metavar="WHERE",
        help="memory (default), none, redis://host:port/db, rediss://..., unix:///path.sock, "
        "sqlite:///file.db; the Redis password from LLMRERANK_CACHE_PASSWORD",
    )
    cache.add_argument("--cache-size", type=int, help="LLM scores cached in memory (0: off)")
    cache.add_argument("--cache-prefix", help="prefix of the Redis keys (llmrerank:)")
    cache.add_argument("--cache-ttl", type=float, help="seconds a score stays in Redis (7 days)")
    cache.add_argument("--cache-timeout", type=float, help="longest Redis lookup in seconds (0.05)")
    lim = p.add_argument_group("limits")
    lim.add_argument("--max-documents", type=int, help="documents per request (1000)")
    lim.add_argument("--max-chars-per-doc", type=int, help="characters per document (20000)")
    lim.add_argument("--max-body-bytes", type=int, help="request body size (4 MiB)")
    lim.add_argument("--max-deadline", type=float, help="longest deadline a client may ask (60)")
    lim.add_argument("--max-concurrent", type=int, help="requests worked on at once (4)")
    lim.add_argument("--max-queued", type=int, help="requests waiting; beyond: 503 (16)")
    lim.add_argument("--retry-after", type=int, help="Retry-After seconds of a 503 (1)")
    demo = p.add_argument_group("demo page")
    demo.add_argument(
        "--demo",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="serve the demo page at / (default on)",
    )
    demo.add_argument("--demo-corpus-size", type=int, help="stdlib docstring paragraphs (3000)")
    demo.add_argument("--demo-top-n", type=int, help="BM25 hits the funnel reranks (50)")
    p.add_argument(
        "--log-level", choices=["critical", "error", "warning", "info", "debug"], help="(info)"
    )


def add_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``serve`` to an ``argparse`` subparsers object (``llmrerank.cli`` calls this)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="start the rerank HTTP service and the demo page",
        description="Start the llmrerank HTTP service: POST /v1/rerank, POST /v1/rerank/stream "
        "(Server-Sent Events), GET /healthz, GET /metrics, and the demo page at /.",
    )
    add_serve_arguments(p)
    p.set_defaults(handler=run_serve)
    return p


def run_serve(args: argparse.Namespace) -> int:
    """Build the settings from ``args`` and run the server until interrupted."""
    from ..errors import ConfigError
    from .settings import load_settings

    try:
        settings = load_settings(args.config, **{k: getattr(args, k, None) for k in _SETTINGS})
    except ConfigError as exc:
        print(f"llmrerank serve: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    from .._optional import require

    uvicorn = require("uvicorn", extra="serve", feature="llmrerank serve")
    from .app import build_funnel, create_app

    if settings.workers > 1:
        return _run_workers(settings, uvicorn)
    try:
        # The LLM is built before the server starts so that a missing model or extra is one
        # clear line here, not a traceback from the server's start-up.
        app = create_app(settings, funnel=build_funnel(settings))
    except ConfigError as exc:
        print(f"llmrerank serve: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level)
    return 0


def configure_logging(level: str) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    logging.getLogger("llmrerank").setLevel(level.upper())


def _run_workers(settings: Any, uvicorn: Any) -> int:
    """``--workers N``: N processes on the port (:func:`llmrerank.serve.workers.run_workers`),
    each building the app from the settings in its environment
    (:func:`llmrerank.serve.app.worker_app`)."""
    from ..errors import ConfigError
    from .app import build_funnel

    try:
        build_funnel(settings)  # settings, extras and the model's package, checked here once
    except ConfigError as exc:
        print(f"llmrerank serve: {exc}", file=sys.stderr)
        return 2
    metrics_dir = tempfile.mkdtemp(prefix="llmrerank-metrics-")
    saved = {k: os.environ.get(k) for k in (WORKER_SETTINGS_ENV, "PROMETHEUS_MULTIPROC_DIR")}
    os.environ[WORKER_SETTINGS_ENV] = settings.revealed_json()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from .workers import reuse_port_supported, run_workers

    try:
        if reuse_port_supported():
            return run_workers(settings.host, settings.port, settings.workers, settings.log_level)
        uvicorn.run(
            "llmrerank.serve.app:worker_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
        )
    except OSError as exc:  # the port is taken
        where = f"{settings.host}:{settings.port}"
        print(f"llmrerank serve: cannot listen on {where}: {exc}", file=sys.stderr)
        return 1
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m llmrerank.serve``: the serve subcommand on its own."""
    parser = argparse.ArgumentParser(prog="llmrerank serve", description=__doc__)
    add_serve_arguments(parser)
    return run_serve(parser.parse_args(argv))

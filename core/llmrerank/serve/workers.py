"""``llmrerank serve --workers N``: N server processes on one port, balanced by the kernel.

Each worker is a fresh (spawned) interpreter that binds its own listening socket to the port with
``SO_REUSEPORT`` and runs uvicorn on it. The kernel spreads new connections evenly over the
sockets that listen, and a worker's socket listens only once its app started, that is once its
funnel is built and its model loaded (uvicorn runs the lifespan before ``listen``): a worker
that is starting or dead gets no connection. One shared socket (uvicorn's own ``--workers``)
lets whichever worker wakes first accept a whole burst of connections, and keep-alive clients
then stay on it: with it, ``llmrerank bench serve`` saw all 8 of its keep-alive connections on
one of two workers (no speed-up); with a socket per worker they spread (serve_scaling.md).

The supervisor (this process) holds a bound, non-listening socket on the port (so the port is
checked once, and ``port = 0`` picks one for all), restarts a worker that dies, and stops them
all with SIGTERM (uvicorn's graceful shutdown) on SIGINT or SIGTERM. A worker that fails before
it ever served (a bad model, say) stops the whole service with exit status 1.

Where ``SO_REUSEPORT`` is missing, uvicorn's own multi-process supervisor is used instead.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from typing import Any

__all__ = ["STARTUP_FAILURE", "reuse_port_supported", "run_workers"]

logger = logging.getLogger("llmrerank")

STARTUP_FAILURE = 3
"""Exit status of a worker that never started serving."""

_MAX_RESTARTS = 5
_RESTART_WINDOW = 60.0


def reuse_port_supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT") and sys.platform.startswith("linux")


def _socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP;
    # without it Nagle and delayed ACKs add ~40 ms to every answer (measured)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _worker_main(host: str, port: int, log_level: str) -> None:
    """One worker process: its own SO_REUSEPORT socket, uvicorn, the app from the environment."""
    import uvicorn

    sock = _socket(host, port)
    config = uvicorn.Config(
        "llmrerank.serve.app:worker_app",
        factory=True,
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def run_workers(host: str, port: int, workers: int, log_level: str) -> int:
    """Run ``workers`` processes on ``host:port`` until SIGINT or SIGTERM; the exit status."""
    ctx = multiprocessing.get_context("spawn")
    guard = _socket(host, port)  # port checked (and chosen, for 0) once, for every worker
    port = guard.getsockname()[1]
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    def start() -> Any:
        proc = ctx.Process(
            target=_worker_main, args=(host, port, log_level), name="llmrerank-worker"
        )
        proc.start()
        return proc

    procs = [start() for _ in range(workers)]
    logger.info(
        "llmrerank serve: %d workers on %s:%d (pids %s)",
        workers,
        host,
        port,
        ", ".join(str(p.pid) for p in procs),
    )
    restarts: list[float] = []
    status = 0
    try:
        while not stopping:
            time.sleep(0.2)
            for i, proc in enumerate(procs):
                if proc.is_alive() or stopping:
                    continue
                _forget(proc.pid)
                if proc.exitcode == STARTUP_FAILURE:
                    logger.error("worker %d failed to start; stopping the service", proc.pid)
                    stopping, status = True, 1
                    break
                now = time.monotonic()
                restarts = [t for t in restarts if now - t < _RESTART_WINDOW] + [now]
                if len(restarts) > _MAX_RESTARTS:
                    logger.error(
                        "workers died %d times in %.0f s; stopping the service",
                        len(restarts),
                        _RESTART_WINDOW,
                    )
                    stopping, status = True, 1
                    break
                logger.warning("worker %d exited (%s); starting another", proc.pid, proc.exitcode)
                procs[i] = start()
    finally:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.join(timeout=20)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        guard.close()
    return status


def _forget(pid: int | None) -> None:
    """A dead worker's gauges leave the summed ``/metrics`` (prometheus_client multiprocess)."""
    if pid is None or not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]

"""Helpers of the reliability tests: a live server whose event loop tests can inspect, leak
accounting (threads, sockets, file descriptors) and a small demo corpus."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil
import uvicorn
from llmrerank.serve.corpus import DemoDoc

SMALL_CORPUS = [
    DemoDoc(str(i), f"demo.doc{i}", text)
    for i, text in enumerate(
        [
            "The json module encodes and decodes JSON documents.",
            "A socket is an endpoint for sending and receiving data across a network.",
            "Threads run concurrently within one process and share its memory.",
            "The asyncio event loop runs coroutines, callbacks and network IO.",
            "Regular expressions match patterns in text.",
            "The decimal module provides exact decimal floating point arithmetic.",
            "A context manager sets up and tears down a resource in a with statement.",
            "Pathlib offers object-oriented filesystem paths.",
            "Logging records events with levels, handlers and formatters.",
            "The heapq module implements a priority queue on a list.",
            "Hash functions from hashlib compute message digests such as SHA-256.",
            "The csv module reads and writes comma separated values.",
        ]
    )
]


class LiveServer:
    """uvicorn on a socket bound to a free loopback port, in a thread running its own event
    loop (kept in ``loop`` so tests can count the tasks on it)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, name="reliability-uvicorn", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            await self.server.serve(sockets=[self.sock])

        asyncio.run(main())

    @property
    def state(self) -> Any:
        return self.app.state.llmrerank

    def start(self, timeout: float = 60.0) -> LiveServer:
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server thread died during start-up")
            if time.monotonic() - t0 > timeout:
                raise TimeoutError("the server did not start")
            time.sleep(0.02)
        return self

    def tasks(self) -> set[str]:
        """Names of the tasks alive on the server's loop (other than the one asking)."""
        assert self.loop is not None

        async def names() -> set[str]:
            me = asyncio.current_task()
            return {_task_name(t) for t in asyncio.all_tasks() if t is not me}

        fut: concurrent.futures.Future[set[str]] = asyncio.run_coroutine_threadsafe(
            names(), self.loop
        )
        return fut.result(timeout=10)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()
        assert not self.thread.is_alive(), "the server thread did not stop"


def _task_name(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    return getattr(coro, "__qualname__", None) or repr(coro)


@dataclass(frozen=True)
class Resources:
    """What this process holds: threads, sockets (TCP connections), file descriptors."""

    threads: frozenset[str]
    connections: frozenset[tuple[Any, ...]]
    fds: int

    @classmethod
    def now(cls) -> Resources:
        proc = psutil.Process()
        conns = frozenset((c.laddr, c.raddr, c.status) for c in proc.net_connections(kind="inet"))
        threads = frozenset(f"{t.name}#{t.ident}" for t in threading.enumerate())
        return cls(threads=threads, connections=conns, fds=proc.num_fds())


def settle(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``check`` until it holds (sockets in TIME_WAIT and pool threads take a moment)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.05)
    return check()

"""Fixtures for the server tests: the app served by uvicorn on 127.0.0.1 with a free port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the serve tests need llmrerank[serve]")
uvicorn = pytest.importorskip("uvicorn", reason="the serve tests need llmrerank[serve]")

from llmrerank import Funnel  # noqa: E402
from llmrerank.serve import ServeSettings, create_app  # noqa: E402
from llmrerank.serve.corpus import DemoCorpus  # noqa: E402


class LiveServer:
    """uvicorn in a background thread, bound to a free loopback port before it starts."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    @property
    def state(self) -> Any:
        return self.app.state.llmrerank

    def start(self, timeout: float = 120.0) -> LiveServer:
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server thread died during start-up")
            if time.monotonic() - t0 > timeout:
                raise TimeoutError("the server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()
        assert not self.thread.is_alive(), "the server thread did not stop"


ServeFactory = Callable[..., LiveServer]


@pytest.fixture
def serve() -> Iterator[ServeFactory]:
    """``serve(funnel, settings=..., corpus=...)`` starts a server; all stop after the test."""
    servers: list[LiveServer] = []

    def start(
        funnel: Funnel | None = None,
        *,
        corpus: DemoCorpus | None = None,
        **settings: Any,
    ) -> LiveServer:
        settings.setdefault("demo", corpus is not None)
        app = create_app(ServeSettings(**settings), funnel=funnel, corpus=corpus)
        server = LiveServer(app).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def demo_corpus() -> DemoCorpus:
    """The real demo corpus (built from the stdlib once, then read from the cache)."""
    return DemoCorpus.from_stdlib(3000)

"""Fixtures for the reliability tests: the rerank service served by uvicorn on 127.0.0.1 with a
free port (see ``reliability_support.LiveServer``); every server stops after its test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the reliability server tests need llmrerank[serve]")
pytest.importorskip("uvicorn", reason="the reliability server tests need llmrerank[serve]")
pytest.importorskip("psutil", reason="the reliability tests need psutil (llmrerank[bench])")

from llmrerank import Funnel
from llmrerank.serve import ServeSettings, create_app
from llmrerank.serve.corpus import DemoCorpus
from reliability_support import SMALL_CORPUS, LiveServer

ServeFactory = Callable[..., LiveServer]


def start_server(
    funnel: Funnel, *, corpus: DemoCorpus | None = None, **settings: Any
) -> LiveServer:
    settings.setdefault("demo", corpus is not None)
    app = create_app(ServeSettings(**settings), funnel=funnel, corpus=corpus)
    return LiveServer(app).start()


@pytest.fixture
def serve() -> Iterator[ServeFactory]:
    """``serve(funnel, corpus=..., **settings)`` starts a server; all stop after the test."""
    servers: list[LiveServer] = []

    def start(funnel: Funnel, *, corpus: DemoCorpus | None = None, **settings: Any) -> LiveServer:
        server = start_server(funnel, corpus=corpus, **settings)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def small_corpus() -> DemoCorpus:
    """A twelve-paragraph demo corpus (the stdlib one takes seconds to build the first time)."""
    return DemoCorpus(SMALL_CORPUS, source="reliability tests")

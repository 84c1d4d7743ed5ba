"""A real ``redis-server`` for the tests: Debian's binary (``scripts/setup.sh`` installs it), on a
free 127.0.0.1 port, with no persistence, stopped after the tests that use it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from llmrerank.testing_servers import RedisServer


def need_redis_server() -> None:
    """Skip where ``redis-server`` is missing, except in CI (``make test``), where it must be."""
    pytest.importorskip("redis", reason="the Redis cache tests need llmrerank[redis]")
    if not RedisServer.available():
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed; scripts/setup.sh installs it")
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it)")


def redis_server_fixture() -> Iterator[RedisServer]:
    need_redis_server()
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()

"""Fixtures for the shared score cache tests: a real redis-server on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from llmrerank.testing_servers import RedisServer
from redis_support import redis_server_fixture


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the module (tests use distinct key prefixes)."""
    yield from redis_server_fixture()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that kill or pause it."""
    yield from redis_server_fixture()

"""One real redis-server and one real Postgres per test session, started on first use."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from engine.testing.servers import PostgresServer, RedisServer, postgres_server, redis_server

_prefixes = itertools.count()


@pytest.fixture(scope="session")
def redis_srv() -> Iterator[RedisServer]:
    """A redis-server on a free loopback port for the whole session."""
    with redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_srv() -> Iterator[PostgresServer]:
    """A throwaway Postgres cluster on a free loopback port for the whole session."""
    with postgres_server() as server:
        yield server


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own, so tests sharing one Redis never see each other."""
    return f"t{next(_prefixes)}"

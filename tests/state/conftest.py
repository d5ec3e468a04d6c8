"""Shared fixtures for the state tests: a FakeClock per test."""

from __future__ import annotations

import pytest

from engine.testing.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    """A clock that only moves when told to (or when something sleeps on it)."""
    return FakeClock()

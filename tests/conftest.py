"""Fixtures every test package may use: the real Redis and Postgres servers."""

pytest_plugins = ["tests.realservers"]

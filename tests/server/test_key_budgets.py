"""Client-key budgets on real `engine serve` processes: reserved, persistent, shared.

Before this, a key's `budget_usd` was checked before each call and charged after it, in a
dict of one process: 300 requests at 100 concurrent spent $0.0515 of a $0.01 budget, a
restart forgot the spend, and every worker or replica had its own. Now each try reserves
its worst case against the key in the state store (engine/runtime/clients.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.testing.servers import RedisServer
from tests.server.keyservers import burst, key_spend, key_stack

KEY = "sk-team-a-secret-0123456789"
ONE_KEY = "api_keys:\n  - id: team-a\n    key_env: TEAM_A_KEY\n    budget_usd: {budget}\n"
ENV = {"TEAM_A_KEY": KEY}


async def _flush(redis_srv: RedisServer) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_srv.url)
    await client.flushdb()
    await client.aclose()


async def test_a_burst_never_overspends_a_key_budget(tmp_path: Path) -> None:
    """300 requests, 100 at a time, against a $0.01 key budget: what the answers cost adds
    up to at most $0.01 (it was $0.0515), and the rest are 429 budget_exceeded naming the
    key by id, never by its text."""
    async with key_stack(tmp_path, ONE_KEY.format(budget=0.01), ENV) as stack:
        url = await stack.start()
        answers, spent = await burst([url], KEY, 300, 100)
        refused = [a for a in answers if a.status_code == 429]
        assert spent <= 0.01
        assert spent > 0.005  # the budget was used, not refused from the start
        assert refused and {a.json()["error"]["code"] for a in refused} == {"budget_exceeded"}
        assert "team-a" in refused[0].json()["error"]["message"]
        assert all(KEY not in a.text for a in answers)
        assert (await key_spend(url, KEY))["team-a"] == pytest.approx(spent, abs=1e-9)
        stack.stop(0)
        assert KEY not in stack.log_text()


async def test_a_restart_keeps_the_key_spend(tmp_path: Path) -> None:
    """Spend restored from the ledger after a restart: the key stays at what it spent, and
    a key whose budget was used up stays refused."""
    async with key_stack(tmp_path, ONE_KEY.format(budget=0.002), ENV) as stack:
        url = await stack.start()
        answers, spent = await burst([url], KEY, 30, 5)
        assert 429 in {a.status_code for a in answers}
        stack.stop(0)
        again = await stack.start()
        assert (await key_spend(again, KEY))["team-a"] == pytest.approx(spent, abs=1e-9)
        after, more = await burst([again], KEY, 5, 5)
        assert more == 0.0 and {a.status_code for a in after} == {429}


async def test_a_burst_over_two_redis_replicas_never_overspends(
    tmp_path: Path, redis_srv: RedisServer
) -> None:
    """Two replicas sharing a Redis: 300 requests at 100 concurrent spread over both spend
    at most the key's $0.01 together, and both report the same one spend."""
    await _flush(redis_srv)
    env = {**ENV, "ENGINE_STATE_URL": redis_srv.url}
    async with key_stack(tmp_path, ONE_KEY.format(budget=0.01), env) as stack:
        urls = [await stack.start(), await stack.start()]
        _, spent = await burst(urls, KEY, 300, 100)
        assert 0.005 < spent <= 0.01
        first, second = [await key_spend(u, KEY) for u in urls]
        assert first["team-a"] == pytest.approx(second["team-a"]) == pytest.approx(spent)


async def test_redis_key_spend_survives_a_restart_of_every_replica(
    tmp_path: Path, redis_srv: RedisServer
) -> None:
    """With Redis, the spend lives in Redis: a replica started after the others stopped
    sees it whole."""
    await _flush(redis_srv)
    env = {**ENV, "ENGINE_STATE_URL": redis_srv.url}
    async with key_stack(tmp_path, ONE_KEY.format(budget=1.0), env) as stack:
        url = await stack.start()
        _, spent = await burst([url], KEY, 20, 5)
        stack.stop(0)
        again = await stack.start()
        assert (await key_spend(again, KEY))["team-a"] == pytest.approx(spent)


async def test_two_workers_share_one_key_spend(tmp_path: Path) -> None:
    """`--workers 2` without Redis: the key budget is one SQLite file both workers book into,
    so a burst spends at most the budget."""
    async with key_stack(tmp_path, ONE_KEY.format(budget=0.01), ENV) as stack:
        url = await stack.start("--workers", "2")
        answers, spent = await burst([url], KEY, 300, 100)
        assert 0.005 < spent <= 0.01
        assert {a.status_code for a in answers} == {200, 429}

"""RedisBudgetStore against a real redis-server: atomic, idempotent, expiring, fail-closed."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
import redis.asyncio as aioredis

from engine.errors import BudgetExceededError, RoutingError
from engine.state import redis_budget, redis_budget_lua
from engine.state.money import utc_day, utc_month
from engine.state.redis_budget import RedisBudgetStore
from engine.state.redis_common import tag
from engine.testing.servers import RedisServer, free_port


class Ledgerish:
    """A spend source with fixed rows, as a ledger would give them."""

    def __init__(self, rows: list[tuple[str, str, float]]) -> None:
        self.rows = rows
        self.calls = 0

    async def spend_since(self, since: float) -> list[tuple[str, str, float]]:
        self.calls += 1
        return self.rows


async def test_reserve_settle_release(redis_srv: RedisServer, prefix: str) -> None:
    """A hold counts until settled at the real cost or released; refusals name the budget."""
    store = RedisBudgetStore(redis_srv.url, prefix=prefix)
    try:
        held = await store.reserve("ws", 0.40, daily_usd=1.0, monthly_usd=10.0)
        assert await store.spent("ws") == {"day": 0.40, "month": 0.40}
        with pytest.raises(BudgetExceededError, match="daily budget"):
            await store.reserve("ws", 0.61, daily_usd=1.0, monthly_usd=10.0)
        await store.settle(held, 0.25)
        assert await store.spent("ws") == {"day": 0.25, "month": 0.25}
        other = await store.reserve("ws", 0.5, daily_usd=None, monthly_usd=0.8)
        with pytest.raises(BudgetExceededError, match="monthly budget"):
            await store.reserve("ws", 0.1, daily_usd=None, monthly_usd=0.8)
        await store.release(other)
        assert await store.spent("ws") == {"day": 0.25, "month": 0.25}
    finally:
        await store.aclose()


async def test_settle_and_release_are_idempotent(redis_srv: RedisServer, prefix: str) -> None:
    """A second settle, or a release after a settle, books nothing twice."""
    store = RedisBudgetStore(redis_srv.url, prefix=prefix)
    try:
        held = await store.reserve("ws", 0.5, daily_usd=1.0, monthly_usd=None)
        await store.settle(held, 0.3)
        await store.settle(held, 0.3)
        await store.release(held)
        assert (await store.spent("ws"))["day"] == pytest.approx(0.3)
    finally:
        await store.aclose()


async def test_concurrent_replicas_never_overspend(redis_srv: RedisServer, prefix: str) -> None:
    """Three stores (three replicas' connections) racing 300 reservations stay under the cap."""
    stores = [RedisBudgetStore(redis_srv.url, prefix=prefix) for _ in range(3)]
    rng = random.Random(7)
    booked: list[float] = []

    async def call(store: RedisBudgetStore) -> None:
        try:
            held = await store.reserve("shared", 0.01, daily_usd=1.0, monthly_usd=1.0)
        except BudgetExceededError:
            return
        await asyncio.sleep(rng.random() / 1000)
        cost = rng.choice([0.004, 0.01])
        booked.append(cost)
        await store.settle(held, cost)

    try:
        await asyncio.gather(*(call(stores[i % 3]) for i in range(300)))
        spent = await stores[0].spent("shared")
        assert spent["day"] == pytest.approx(sum(booked))
        assert spent["day"] <= 1.0
        # A burst fills the cap with worst-case holds (100 of $0.01); the settles then give
        # back what the calls did not cost, and that room is usable again at once.
        assert len(booked) >= 100
        if spent["day"] + 0.01 <= 1.0:
            held = await stores[1].reserve("shared", 0.01, daily_usd=1.0, monthly_usd=1.0)
            await stores[1].release(held)
    finally:
        for store in stores:
            await store.aclose()


async def test_a_dead_replicas_hold_expires(redis_srv: RedisServer, prefix: str) -> None:
    """A hold nobody settles stops counting after its expiry (the replica died mid-call)."""
    dead = RedisBudgetStore(redis_srv.url, prefix=prefix, hold_s=0.2)
    alive = RedisBudgetStore(redis_srv.url, prefix=prefix)
    try:
        await dead.reserve("ws", 0.9, daily_usd=1.0, monthly_usd=None)
        with pytest.raises(BudgetExceededError):
            await alive.reserve("ws", 0.5, daily_usd=1.0, monthly_usd=None)
        await asyncio.sleep(0.3)
        await alive.reserve("ws", 0.5, daily_usd=1.0, monthly_usd=None)
    finally:
        await dead.aclose()
        await alive.aclose()


async def test_expired_holds_are_swept_when_they_would_refuse_and_every_64th_hold(
    redis_srv: RedisServer, prefix: str
) -> None:
    """Expired holds count until a sweep (the sum stays an upper bound): a reservation they
    would refuse sweeps them and is checked again, refused only by what is still open; and
    every 64th hold sweeps too, so holds nobody closes do not pile up."""
    dead = RedisBudgetStore(redis_srv.url, prefix=prefix, hold_s=0.05)
    alive = RedisBudgetStore(redis_srv.url, prefix=prefix)
    admin = aioredis.Redis.from_url(redis_srv.url)
    opened = f"{prefix}:budget:{tag('ws')}:open"
    try:
        await dead.reserve("ws", 0.4, daily_usd=1.0, monthly_usd=None)
        await dead.reserve("ws", 0.3, daily_usd=1.0, monthly_usd=None)
        kept = await alive.reserve("ws", 0.25, daily_usd=1.0, monthly_usd=None)
        await asyncio.sleep(0.1)
        with pytest.raises(BudgetExceededError, match=r"reserved \$0\.2500"):
            await alive.reserve("ws", 0.8, daily_usd=1.0, monthly_usd=None)  # swept, still over
        assert await admin.zcard(opened) == 1
        await alive.release(kept)
        for _ in range(3):
            await dead.reserve("ws", 0.001, daily_usd=1.0, monthly_usd=None)
        await asyncio.sleep(0.1)
        for _ in range(64):  # never near the limit: only the 64th hold sweeps
            await alive.release(await alive.reserve("ws", 0.001, daily_usd=1.0, monthly_usd=None))
        assert await admin.zcard(opened) == 0
        assert (await alive.spent("ws"))["day"] == 0.0
    finally:
        await dead.aclose()
        await alive.aclose()
        await admin.aclose()


async def test_restore_seeds_the_month_once_for_all_replicas(
    redis_srv: RedisServer, prefix: str
) -> None:
    """The first replica to start seeds this month from the ledger; the others do not add it."""
    import time

    today = utc_day(time.time())
    source = Ledgerish([("ws", today, 0.7)])
    first, second = (RedisBudgetStore(redis_srv.url, prefix=prefix) for _ in range(2))
    try:
        await first.restore(source)
        await second.restore(source)
        assert await first.spent("ws") == {"day": 0.7, "month": 0.7}
        with pytest.raises(BudgetExceededError):
            await second.reserve("ws", 0.5, daily_usd=1.0, monthly_usd=None)
    finally:
        await first.aclose()
        await second.aclose()


async def test_workspace_names_cannot_break_the_hash_tag(
    redis_srv: RedisServer, prefix: str
) -> None:
    """Braces in a workspace name are escaped: `a}b` and `a` stay separate budgets."""
    store = RedisBudgetStore(redis_srv.url, prefix=prefix)
    try:
        await store.reserve("a}b", 1.0, daily_usd=1.0, monthly_usd=None)
        await store.reserve("a", 1.0, daily_usd=1.0, monthly_usd=None)
        assert (await store.spent("a{"))["day"] == 0.0
    finally:
        await store.aclose()


async def test_unreachable_redis_fails_closed() -> None:
    """With Redis down, a reservation is refused with a RoutingError naming the store."""
    store = RedisBudgetStore(f"redis://:secret-pw@127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(RoutingError, match="Redis budget store is unreachable") as err:
            await store.reserve("ws", 0.1, daily_usd=1.0, monthly_usd=None)
        assert "secret-pw" not in str(err.value) and "secret-pw" not in repr(store)
    finally:
        await store.aclose()


async def test_a_settle_is_written_without_waiting_and_later_reads_see_it(
    redis_srv: RedisServer, prefix: str
) -> None:
    """settle returns once its script is written (its reply still on the way); this store's
    and any other store's later reads of this process see it."""
    store = RedisBudgetStore(redis_srv.url, prefix=prefix)
    other = RedisBudgetStore(redis_srv.url, prefix=prefix)  # a connection of its own
    try:
        held = await store.reserve("ws", 0.4, daily_usd=1.0, monthly_usd=None)
        await store.settle(held, 0.1)
        assert redis_budget._IN_FLIGHT  # written, not answered yet
        assert (await other.spent("ws"))["day"] == pytest.approx(0.1)
        assert not redis_budget._IN_FLIGHT
        await store.reserve("ws", 0.9, daily_usd=1.0, monthly_usd=None)  # 0.1 + 0.9 fits
    finally:
        await store.aclose()
        await other.aclose()


async def test_a_settle_lost_with_its_connection_leaves_the_hold_to_expire(
    redis_srv: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The connection drops under a settle that was written: logged, and the hold keeps
    counting (the worst case, never less) until it expires."""
    cut: list[asyncio.StreamWriter] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)

    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", redis_srv.port)
        cut.extend((client_w, up_w))
        await asyncio.gather(pipe(client_r, up_w), pipe(up_r, client_w), return_exceptions=True)

    proxy = await asyncio.start_server(relay, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    store = RedisBudgetStore(f"redis://127.0.0.1:{port}/0", prefix=prefix, hold_s=0.3)
    direct = RedisBudgetStore(redis_srv.url, prefix=prefix)
    try:
        held = await store.reserve("ws", 0.4, daily_usd=1.0, monthly_usd=None)
        for writer in cut:  # the connection is gone before the settle's bytes reach Redis
            writer.transport.abort()
        await store.settle(held, 0.1)
        await store.spent("ws")  # waits for the settle's fate
        assert "could not close reservation" in caplog.text
        assert (await direct.spent("ws"))["day"] == pytest.approx(0.4)
        await asyncio.sleep(0.4)
        assert (await direct.spent("ws"))["day"] == 0.0
    finally:
        await store.aclose()
        await direct.aclose()
        proxy.close()


async def test_closed_tokens_leave_nothing_behind(redis_srv: RedisServer, prefix: str) -> None:
    """Idempotent closes keep no record per closed token (a set as large as two days of
    calls once): after many settles and releases, twice each, only the running sum is left."""
    store = RedisBudgetStore(redis_srv.url, prefix=prefix)
    admin = aioredis.Redis.from_url(redis_srv.url)
    base = f"{prefix}:budget:{tag('ws')}"
    try:
        held = [
            await store.reserve("ws", 0.01, daily_usd=100.0, monthly_usd=None) for _ in range(200)
        ]
        for i, res in enumerate(held):
            await (store.settle(res, 0.005) if i % 2 else store.release(res))
            await (store.release(res) if i % 2 else store.settle(res, 0.005))
        assert (await store.spent("ws"))["day"] == pytest.approx(100 * 0.005)
        assert await admin.hget(f"{base}:held", "sum") == b"0"
        assert await admin.zcard(f"{base}:open") == 0
        assert not await admin.exists(f"{base}:lapsed")
    finally:
        await store.aclose()
        await admin.aclose()


async def test_a_late_settle_books_once(redis_srv: RedisServer, prefix: str) -> None:
    """A settle that comes after its hold expired (a process that stalled past it) still
    books the real cost, once, whether or not another call swept the hold away first; the
    lapsed token is forgotten after LAPSED_MS."""
    brief = RedisBudgetStore(redis_srv.url, prefix=prefix, hold_s=0.05)
    admin = aioredis.Redis.from_url(redis_srv.url)
    lapsed = f"{prefix}:budget:{tag('ws')}:lapsed"
    try:
        unswept = await brief.reserve("ws", 0.5, daily_usd=1.0, monthly_usd=None)
        swept = await brief.reserve("ws", 0.3, daily_usd=1.0, monthly_usd=None)
        await asyncio.sleep(0.1)
        await brief.settle(unswept, 0.2)  # expired, still in the holds hash
        assert (await brief.spent("ws"))["day"] == pytest.approx(0.2)  # sweeps `swept`
        assert 0 < await admin.pttl(lapsed) <= redis_budget_lua.LAPSED_MS
        await brief.settle(swept, 0.1)
        await brief.settle(swept, 0.1)
        await brief.release(unswept)
        assert (await brief.spent("ws"))["day"] == pytest.approx(0.3)
        assert await admin.zcard(lapsed) == 0
    finally:
        await brief.aclose()
        await admin.aclose()


async def test_the_servers_day_decides_whatever_the_process_guesses(
    redis_srv: RedisServer, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scripts check the caller's guess of the day against the server's TIME: a process
    whose clock is days off still books, limits and reports on the server's day."""
    skewed = int(time.time() // 86400) + 3
    monkeypatch.setattr(redis_budget, "_today", lambda: redis_budget._calendar(skewed))
    store = RedisBudgetStore(redis_srv.url, prefix=prefix)
    admin = aioredis.Redis.from_url(redis_srv.url)
    try:
        held = await store.reserve("ws", 0.4, daily_usd=1.0, monthly_usd=None)
        await store.settle(held, 0.25)
        assert (await store.spent("ws"))["day"] == pytest.approx(0.25)
        secs, _ = await admin.time()
        day = utc_day(secs)
        spend = await admin.hgetall(f"{prefix}:budget:{tag('ws')}:spend")
        assert spend == {f"d:{day}".encode(): b"250000000", f"m:{day[:7]}".encode(): b"250000000"}
        with pytest.raises(BudgetExceededError, match=day):
            await store.reserve("ws", 0.8, daily_usd=1.0, monthly_usd=None)
    finally:
        await store.aclose()
        await admin.aclose()


async def test_the_scripts_calendar_matches_pythons(redis_srv: RedisServer) -> None:
    """The day and month names the scripts build when the caller's guess is wrong: leap
    days, year ends and random instants up to 2242, as Python's UTC calendar names them."""
    admin = aioredis.Redis.from_url(redis_srv.url)
    script = "local t, today = {ARGV[3], '0'}, -1" + redis_budget_lua.DAY + "return {day, month}"
    rnd = random.Random(5)
    stamps = [0, 951_782_399, 951_782_400, 978_307_199, 4_107_542_400, 1_798_761_599]
    try:
        for secs in stamps + [rnd.randrange(0, 2**33) for _ in range(300)]:
            day, month = await admin.eval(script, 0, "", "", secs)  # today -1: never the guess
            assert (day.decode(), month.decode()) == (f"d:{utc_day(secs)}", f"m:{utc_month(secs)}")
    finally:
        await admin.aclose()

"""The RateLimiter protocol, run unchanged against every backend in backends.LIMITERS."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import RateLimitedError
from engine.messages import RateLimitInfo
from engine.plan.values import KeyPlan
from engine.secrets import Secret
from engine.state.protocols import RateLimiter
from engine.state.ratelimit import RESOLUTION_S
from engine.testing.clock import FakeClock

from .backends import LIMITER_SLICE, LIMITERS, Scratch

#: Usage may leave a backend's window up to one time slice late (never early).
SLICE = RESOLUTION_S


def key(name: str = "p#0", rpm: int | None = None, input_tpm: int | None = None) -> KeyPlan:
    return KeyPlan(name, Secret(f"sk-secret-{name}"), rpm, input_tpm, None)


@pytest.fixture(params=sorted(LIMITERS))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def limiter(
    backend: str, clock: FakeClock, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[RateLimiter]:
    made = LIMITERS[backend](Scratch(tmp_path, clock, request))
    yield made
    await made.aclose()


async def lease_now(rl: RateLimiter, keys: list[KeyPlan], tin: int = 10, tout: int = 10) -> object:
    """A lease by the fast path if the backend offers one, else by acquire without waiting."""
    got = rl.try_acquire_nowait("p", keys, tin, tout)
    return got if got is not None else await rl.acquire("p", keys, tin, tout, 0)


async def test_the_window_slides(limiter: RateLimiter, clock: FakeClock, backend: str) -> None:
    """rpm=2 admits two, refuses a third (fast path: None, taking nothing), frees a slot
    60 s after the first."""
    k = [key(rpm=2)]
    await lease_now(limiter, k)
    clock.advance(30)
    await lease_now(limiter, k)
    assert limiter.try_acquire_nowait("p", k, 10, 10) is None
    with pytest.raises(RateLimitedError):
        await limiter.acquire("p", k, 10, 10, 0)
    assert (await limiter.status("p"))["keys"]["p#0"]["requests"]["used"] == 2
    clock.advance(30 + SLICE)
    clock.advance(LIMITER_SLICE.get(backend, SLICE) - SLICE)
    await lease_now(limiter, k)


async def test_usage_never_leaves_the_window_early(limiter: RateLimiter, clock: FakeClock) -> None:
    """A request booked late in a second still counts 59.1 s later (the window is 60 s from
    the request, whatever a backend's slice width)."""
    k = [key(rpm=1)]
    clock.advance(0.9)
    await lease_now(limiter, k)
    clock.advance(59.1)
    with pytest.raises(RateLimitedError):
        await limiter.acquire("p", k, 10, 10, 0)


async def test_settle_books_real_usage_and_release_refunds(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    """An over-estimate is corrected by settle; a released lease gives everything back."""
    k = [key(input_tpm=1000)]
    first = await limiter.acquire("p", k, 900, 0, 0)
    with pytest.raises(RateLimitedError):
        await limiter.acquire("p", k, 500, 0, 0)
    await limiter.settle(first, 300, 0)
    second = await limiter.acquire("p", k, 500, 0, 0)
    await limiter.release(second)
    await limiter.release(second)  # a second release changes nothing
    used = (await limiter.status("p"))["keys"]["p#0"]["input_tokens"]["used"]
    assert used == 300


async def test_retry_after_blocks_a_key_and_the_pool_uses_another(limiter: RateLimiter) -> None:
    """observe() learns a Retry-After; the next lease goes to the other key."""
    keys = [key("p#a"), key("p#b")]
    await limiter.observe("p", "p#a", RateLimitInfo(retry_after_s=3))
    for _ in range(3):
        lease = await limiter.acquire("p", keys, 1, 1, 0)
        assert lease.key.id == "p#b"
        await limiter.settle(lease, 1, 1)
    assert (await limiter.status("p"))["keys"]["p#a"]["blocked_for_s"] == pytest.approx(3)


async def test_a_learned_limit_applies(limiter: RateLimiter) -> None:
    """A limit from headers tightens an unlimited key."""
    k = [key()]
    await limiter.observe("p", "p#0", RateLimitInfo(limit_requests=1))
    await limiter.settle(await limiter.acquire("p", k, 1, 1, 0), 1, 1)
    with pytest.raises(RateLimitedError):
        await limiter.acquire("p", k, 1, 1, 0)


async def test_registered_keys_show_by_id_never_by_secret(limiter: RateLimiter) -> None:
    """status lists registered keys before any traffic, by label only."""
    limiter.register("p", [key("p#0", rpm=5), key("p#1")])
    status = await limiter.status("p")
    assert sorted(status["keys"]) == ["p#0", "p#1"] and status["queued"] == 0
    assert status["keys"]["p#0"]["requests"] == {"limit": 5, "remaining": 5, "used": 0}
    assert "sk-secret" not in repr(status)


async def test_a_waiter_gets_its_lease_when_room_appears(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    """acquire waits (FIFO) up to max_wait_s for the window to free a slot."""
    k = [key(rpm=1)]
    await lease_now(limiter, k)
    waiter = asyncio.ensure_future(limiter.acquire("p", k, 1, 1, 120))
    lease = await waiter
    assert lease.key.id == "p#0" and clock.monotonic() >= 1000 + 60


_examples = itertools.count()

# One step: (seconds later, input tokens, output tokens, share of the estimate really used).
_ops = st.lists(
    st.tuples(
        st.floats(0.0, 40.0, allow_nan=False),
        st.integers(0, 400),
        st.integers(0, 300),
        st.floats(0.0, 1.5, allow_nan=False),
    ),
    min_size=1,
    max_size=40,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_ops)
def test_no_window_of_60_s_exceeds_a_limit_and_no_refusal_lacks_a_cause(
    backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    ops: list[tuple[float, int, int, float]],
) -> None:
    """Over any 60 s, admitted usage stays within every limit; a refusal always had a reason
    (allowing for usage that leaves the window up to one slice late)."""
    clock = FakeClock()
    scratch = tmp_path / f"example{next(_examples)}"
    scratch.mkdir()
    rl = LIMITERS[backend](Scratch(scratch, clock, request))
    late = LIMITER_SLICE.get(backend, SLICE)
    k = [KeyPlan("p#0", None, rpm=5, input_tpm=1000, output_tpm=600)]
    taken: list[tuple[float, int, int]] = []  # (time, input, output) as settled

    def within(span: float) -> tuple[int, int, int]:
        now = clock.monotonic()
        recent = [t for t in taken if t[0] > now - span]
        return len(recent), sum(t[1] for t in recent), sum(t[2] for t in recent)

    async def scenario() -> None:
        for dt, tin, tout, share in ops:
            clock.advance(dt)
            try:
                lease = await rl.acquire("p", k, tin, tout, 0)
            except RateLimitedError:
                n, used_in, used_out = within(60 + late)
                assert n + 1 > 5 or used_in + tin > 1000 or used_out + tout > 600
                continue
            n, used_in, used_out = within(60)
            assert n + 1 <= 5 and used_in + tin <= 1000 and used_out + tout <= 600
            real_in, real_out = int(tin * share), int(tout * share)
            await rl.settle(lease, real_in, real_out)
            taken.append((clock.monotonic(), real_in, real_out))
        await rl.aclose()

    asyncio.run(scenario())

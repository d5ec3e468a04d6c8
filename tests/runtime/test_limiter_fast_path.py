"""The runtime's synchronous admission goes through the limiter's declared fast path
(`RateLimiter.try_acquire_nowait`) and nothing else: a limiter that declines it (returns
None) sees every attempt in its own `acquire`; nothing is found by reflection."""

from __future__ import annotations

from collections.abc import Sequence

from engine import Engine
from engine.clock import Clock
from engine.plan.values import KeyPlan
from engine.state.protocols import Lease
from engine.state.ratelimit import InProcessRateLimiter
from engine.testing.clock import FakeClock

MODELS = {
    "providers": {"mock": {"protocol": "mock", "options": {"latency_ms": "0"}}},
    "models": {"mock/fast": {"context_window": 8000}},
}
ROUTES = {"main": {"strategy": "ordered", "candidates": ["mock/fast"]}}
HELLO = {"messages": [{"role": "user", "content": "hello"}]}


class CountingLimiter(InProcessRateLimiter):
    """Counts in `acquire` and so declines the fast path, as the protocol asks of a
    subclass that must see every acquisition (adding logging or metrics)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.acquired = 0

    async def acquire(
        self,
        provider: str,
        keys: Sequence[KeyPlan],
        input_tokens: int,
        output_tokens: int,
        max_wait_s: float,
    ) -> Lease:
        self.acquired += 1
        return await super().acquire(provider, keys, input_tokens, output_tokens, max_wait_s)

    def try_acquire_nowait(
        self, provider: str, keys: Sequence[KeyPlan], input_tokens: int, output_tokens: int
    ) -> Lease | None:
        return None  # declined: every acquisition comes through `acquire`


async def test_a_limiter_declining_the_fast_path_sees_every_attempt() -> None:
    """Two calls, two acquisitions through the subclass's own method."""
    clock = FakeClock()
    limiter = CountingLimiter(clock)
    eng = Engine.from_data(MODELS, ROUTES, clock=clock, rate_limiter=limiter)
    for _ in range(2):
        assert (await eng.arun(HELLO, policy="main")).model == "mock/fast"
    await eng.aclose()
    assert limiter.acquired == 2


async def test_the_in_process_limiter_admits_without_a_wait() -> None:
    """The default limiter's calls are booked (through try_acquire_nowait) like any other."""
    clock = FakeClock()
    limiter = InProcessRateLimiter(clock)
    eng = Engine.from_data(MODELS, ROUTES, clock=clock, rate_limiter=limiter)
    await eng.arun(HELLO, policy="main")
    await eng.aclose()
    assert (await limiter.status("mock"))["keys"]["mock#none"]["requests"]["used"] == 1

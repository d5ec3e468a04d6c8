"""The runtime's synchronous admission (`try_acquire`) never bypasses a limiter's own
`acquire`: a subclass that changes only `acquire` still sees every attempt."""

from __future__ import annotations

from collections.abc import Sequence

from engine import Engine
from engine.plan.values import KeyPlan
from engine.runtime.clock import Clock
from engine.runtime.ratelimit import InProcessRateLimiter
from engine.runtime.state import Lease
from engine.testing.clock import FakeClock

MODELS = {
    "providers": {"mock": {"protocol": "mock", "options": {"latency_ms": "0"}}},
    "models": {"mock/fast": {"context_window": 8000}},
}
ROUTES = {"main": {"strategy": "ordered", "candidates": ["mock/fast"]}}
HELLO = {"messages": [{"role": "user", "content": "hello"}]}


class CountingLimiter(InProcessRateLimiter):
    """Changes `acquire` only (to count), as a subclass adding logging or metrics would."""

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


async def test_a_subclass_overriding_acquire_sees_every_attempt() -> None:
    """Two calls, two acquisitions through the subclass's own method."""
    clock = FakeClock()
    limiter = CountingLimiter(clock)
    eng = Engine.from_data(MODELS, ROUTES, clock=clock, rate_limiter=limiter)
    for _ in range(2):
        assert (await eng.arun(HELLO, policy="main")).model == "mock/fast"
    await eng.aclose()
    assert limiter.acquired == 2


async def test_the_in_process_limiter_admits_without_a_wait() -> None:
    """The default limiter's calls are booked (through try_acquire) like any other."""
    clock = FakeClock()
    limiter = InProcessRateLimiter(clock)
    eng = Engine.from_data(MODELS, ROUTES, clock=clock, rate_limiter=limiter)
    await eng.arun(HELLO, policy="main")
    await eng.aclose()
    assert limiter.status("mock")["keys"]["mock#none"]["requests"]["used"] == 1

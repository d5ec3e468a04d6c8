"""State benchmark: CPU per call of the in-process state backends, on their hot paths.

Run: `python -m bench.state`. Each figure is microseconds per engine call, the median of
several runs: one rate-limit cycle as the runtime does it (try_acquire_nowait, settle,
observe) on a key with no limits, a key with configured limits, and a key that providers'
headers inform; a budget reserve + settle; a cache miss + put and a hit. Issue 9 keeps a
hand-written shortcut in these modules only where it saves more than 1 us a call; this
bench is how that is decided (run it before and after removing one).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from engine.clock import SystemClock
from engine.messages import RateLimitInfo
from engine.plan.values import KeyPlan
from engine.state.budget import InProcessBudgetStore
from engine.state.cache import LRUCache
from engine.state.ratelimit import InProcessRateLimiter

CALLS = 20_000
RUNS = 5
HEADERS = RateLimitInfo(
    limit_requests=10_000_000,
    remaining_requests=9_000_000,
    limit_tokens=10**12,
    remaining_tokens=10**11,
    reset_requests_s=1.0,
    reset_tokens_s=1.0,
)


def _median_us(body: Callable[[int], Awaitable[None]]) -> float:
    """Median over RUNS of the CPU microseconds one iteration of `body` takes."""

    async def run() -> float:
        await body(100)  # warm up
        start = time.process_time()
        await body(CALLS)
        return (time.process_time() - start) / CALLS * 1e6

    return statistics.median(asyncio.run(run()) for _ in range(RUNS))


def limiter_cycle(key: KeyPlan, headers: RateLimitInfo | None) -> Callable[[int], Awaitable[None]]:
    limiter = InProcessRateLimiter(SystemClock())
    keys = (key,)

    async def body(n: int) -> None:
        for _ in range(n):
            lease = limiter.try_acquire_nowait("p", keys, 100, 50)
            if lease is None:
                lease = await limiter.acquire("p", keys, 100, 50, 0.0)
            await limiter.settle(lease, 90, 40)
            if headers is not None:
                await limiter.observe("p", key.id, headers)

    return body


def budget_cycle() -> Callable[[int], Awaitable[None]]:
    store = InProcessBudgetStore(SystemClock())

    async def body(n: int) -> None:
        for _ in range(n):
            r = await store.reserve("ws", 0.001, 10_000.0, None)
            await store.settle(r, 0.0005)

    return body


def cache_cycle(hit: bool) -> Callable[[int], Awaitable[None]]:
    cache = LRUCache(1000, SystemClock())

    async def body(n: int) -> None:
        for i in range(n):
            key = "k" if hit else f"k{i % 2000}"
            if await cache.get(key) is None:
                await cache.put(key, "value", 60.0)

    return body


def main() -> None:
    unlimited = KeyPlan("p#0", None)
    configured = KeyPlan("p#0", None, rpm=10_000_000, input_tpm=10**12, output_tpm=10**12)
    figures = {
        "limiter, unlimited key": limiter_cycle(unlimited, None),
        "limiter, configured key": limiter_cycle(configured, None),
        "limiter, informed by headers": limiter_cycle(configured, HEADERS),
        "budget reserve + settle": budget_cycle(),
        "cache miss + put": cache_cycle(False),
        "cache hit": cache_cycle(True),
    }
    print(f"CPU per call, median of {RUNS} runs of {CALLS} calls")
    for name, body in figures.items():
        print(f"  {name:<32} {_median_us(body):6.2f} us")


if __name__ == "__main__":
    main()

"""Many requests at bounded concurrency; answers in input order, failures kept as values.

A failed request must not lose the others' answers, so each slot holds either a Response
or the exception that ended it (an EngineError, or whatever a hook raised). Progress is
reported through an optional plain callback `(done, total)` (no progress-bar dependency;
wrap tqdm's `update` in one if you like).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from engine.result import Response

Progress = Callable[[int, int], None]


async def run_batch(
    call: Callable[[Any], Awaitable[Response]],
    requests: Sequence[Any],
    concurrency: int,
    progress: Progress | None = None,
) -> list[Response | Exception]:
    """Run `call` over `requests` with at most `concurrency` in flight."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    results: list[Response | Exception | None] = [None] * len(requests)
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def one(i: int, request: Any) -> None:
        nonlocal done
        async with gate:
            try:
                results[i] = await call(request)
            except Exception as exc:  # kept as this request's result; the others go on
                results[i] = exc
        done += 1
        if progress is not None:
            progress(done, len(requests))

    async with asyncio.TaskGroup() as group:
        for i, request in enumerate(requests):
            group.create_task(one(i, request))
    return [r for r in results if r is not None]

"""Streams: relay one opened upstream stream as StreamEvents, and replay a cached answer.

The failover loop opens a stream only once its first chunk has arrived (operations.py),
so failures before the first token fail over like any other. `relay` takes it from there,
inside the attempt that is still open: events carry the routing facts; a bare usage chunk
is held back and sent last with the cost and every attempt; when the upstream ends, the
attempt is told its usage (estimated when the stream reported none) and closed, the call is
finished, then the last event goes out. A mid-stream failure closes the attempt as failed
and raises `BrokenStream` when the route lets another candidate take over (nothing sent
yet, or `retries.after_first_token`), else the error itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any

from engine.clock import Clock
from engine.errors import ProviderError
from engine.messages import Chunk, ProviderResponse, StreamAccumulator, ToolCallDelta, Usage
from engine.plan.tokens import text_tokens
from engine.result import Response, StreamEvent
from engine.runtime.call.attempt import Attempt
from engine.runtime.call.data import CallData, Trail
from engine.runtime.call.operations import Answer, Opened

Finish = Callable[[Attempt, ProviderResponse], Awaitable[Response]]


class BrokenStream(Exception):
    """A stream failed where the route allows another candidate to take over."""


async def relay(
    answer: Answer[Opened], call: CallData, trail: Trail, clock: Clock, finish: Finish
) -> AsyncGenerator[StreamEvent, None]:
    """Yield one upstream stream's events; close its attempt; finish the call."""
    attempt, opened, held = answer.attempt, answer.value, answer.held
    assert held is not None  # OpenStream holds its attempt open
    cand = attempt.cand

    def event(chunk: Chunk, attempts: bool) -> StreamEvent:
        return StreamEvent(
            chunk=chunk,
            provider=cand.provider.id,
            model=cand.model.id,
            id=f"chatcmpl-{call.request_id}",
            created=int(clock.time()),
            attempts=tuple(trail.attempts) if attempts else (),
            policy=cand.policy,
            rule=cand.rule,
        )

    acc = StreamAccumulator(cand.model.upstream)
    # Cut or abandoned from here on, the try is billed at what was streamed so far.
    attempt.partial = lambda: _estimate(call, acc.result())
    last: Chunk | None = None  # a bare usage report, held back to go out last
    limits, reported, sent = None, False, False
    chunk = opened.first
    try:
        async with held:
            while chunk is not None:
                acc.add(chunk)
                limits = chunk.rate_limit or limits
                reported = reported or chunk.usage is not None
                if chunk.usage is not None and not chunk.content and not chunk.tool_calls:
                    # Text is never held back: that would reorder it.
                    finish_reason = chunk.finish_reason or (last.finish_reason if last else None)
                    last = replace(chunk, finish_reason=finish_reason)
                else:
                    yield event(chunk, attempts=not sent)
                    sent = True
                chunk = await anext(opened.chunks, None)
            result = acc.result()
            usage = result.usage if reported else _estimate(call, result)
            attempt.answered(usage, limits)
    except ProviderError as exc:
        await _aclose(opened.chunks)
        if not sent or cand.route.retry.after_first_token:
            raise BrokenStream() from exc
        raise
    except BaseException:
        await _aclose(opened.chunks)
        raise
    response = await finish(attempt, replace(result, usage=usage))  # before: callers may stop
    final = last or Chunk(finish_reason=None, usage=usage)
    yield replace(event(final, attempts=True), cost_usd=response.cost_usd)


def _estimate(call: CallData, result: ProviderResponse) -> Usage:
    """Usage when a stream reported none (or was cut): the input estimate (an upper bound)
    and the output streamed so far, at least one token once anything was sent."""
    text = (result.content or "") + "".join(c.arguments for c in result.tool_calls)
    return Usage(call.features.input_tokens, max(1, text_tokens(text)) if text else 0)


async def _aclose(chunks: AsyncIterator[Chunk]) -> None:
    close = getattr(chunks, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):  # it already failed; closing is best effort
            await close()


def replay(resp: Response) -> Iterator[StreamEvent]:
    """A stored Response as stream events: content, tool calls, then finish and usage."""
    deltas = tuple(
        ToolCallDelta(i, c.id, c.name, c.arguments) for i, c in enumerate(resp.tool_calls)
    )
    common: dict[str, Any] = {
        "provider": resp.provider,
        "model": resp.model,
        "id": resp.id,
        "created": resp.created,
        "cached": resp.cached,
        "policy": resp.policy,
        "rule": resp.rule,
    }
    if resp.content or deltas or resp.logprobs:
        first = Chunk(content=resp.content or "", tool_calls=deltas, logprobs=resp.logprobs)
        yield StreamEvent(first, **common)
    for c in resp.choices:  # n > 1: each further choice whole, with its finish reason
        calls = tuple(
            ToolCallDelta(i, t.id, t.name, t.arguments) for i, t in enumerate(c.tool_calls)
        )
        piece = Chunk(c.content or "", calls, c.finish_reason, logprobs=c.logprobs, index=c.index)
        yield StreamEvent(piece, **common)
    last = Chunk(finish_reason=resp.finish_reason, usage=resp.usage)
    yield StreamEvent(last, cost_usd=resp.cost_usd, attempts=resp.attempts, **common)

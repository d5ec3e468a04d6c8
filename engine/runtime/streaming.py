"""Streaming: relay one upstream stream as StreamEvents, and replay a cached answer.

The failover loop (executor.py) opens a stream only once its first chunk has arrived, so
errors before the first token fail over like any other; this module takes it from there:
events carry the routing facts, a bare usage chunk is held back and sent last with
the cost and every attempt, the stream is settled when it ends (or released if the caller
stops early), and a mid-stream failure fails over only when the route allows it
(`retries.after_first_token`). A cached Response replays as a short stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

from engine.errors import EngineError, ProviderError
from engine.messages import Chunk, ProviderResponse, StreamAccumulator, ToolCallDelta, Usage
from engine.result import Response, StreamEvent
from engine.runtime.executor import Execution
from engine.runtime.services import Candidate, Guard, OpenStream


async def stream(ex: Execution) -> AsyncGenerator[StreamEvent, None]:
    """The whole streaming call; `ex.final` holds the assembled Response at the end."""
    events = _stream(ex)
    try:
        async for event in events:
            yield event
    finally:
        await events.aclose()  # close explicitly: a dropped generator is closed only later
        ex.close()


async def _stream(ex: Execution) -> AsyncGenerator[StreamEvent, None]:
    key = ex.cache_key()
    if key is not None:
        hit = ex.svc.cache.get(key)
        if isinstance(hit, Response):
            ex.svc.stats.request(True, 0.0, cached=True)
            ex.final = ex.cached_hit(hit)
            for event in replay(ex.final):
                yield event
            return
    while True:
        try:
            cand, opened = await ex.open_stream()
        except EngineError:
            ex.svc.stats.request(False)
            raise
        events = _relay(ex, cand, opened)
        try:
            async for event in events:
                yield event
        except _Failover:
            continue
        finally:
            await events.aclose()
        return


async def _relay(
    ex: Execution, cand: Candidate, opened: OpenStream
) -> AsyncGenerator[StreamEvent, None]:
    """Yield one upstream stream's events; settle when it ends, fail over if allowed."""
    guard, acc = opened.guard, StreamAccumulator(cand.model.upstream)
    mid, held, limits, reported = cand.model.id, None, None, False
    chunk, first = opened.first, True
    try:
        while chunk is not None:
            acc.add(chunk)
            limits = chunk.rate_limit or limits
            reported = reported or chunk.usage is not None
            if chunk.usage is not None and not chunk.content and not chunk.tool_calls:
                # A bare usage report is held back and sent last, with the cost and every
                # attempt (text is never held: that would reorder it).
                finish = chunk.finish_reason or (held.finish_reason if held else None)
                held = replace(chunk, finish_reason=finish)
            else:
                yield _event(ex, cand, chunk, attempts=first)
                first = False
            chunk = await anext(opened.chunks, None)
    except ProviderError as exc:
        ex.svc.strategies.end(mid)
        await ex.fail(guard, exc)
        await _aclose(opened.chunks)
        if first or cand.route.retry.after_first_token:
            raise _Failover() from exc
        ex.svc.stats.request(False)
        raise
    except BaseException:
        ex.svc.strategies.end(mid)
        ex.abort(guard)
        await _aclose(opened.chunks)
        raise
    ex.svc.strategies.end(mid)
    result = acc.result()
    usage = result.usage if reported else _estimate(ex, result)
    cost = await ex.succeed(guard, usage, limits)
    final = held or Chunk(finish_reason=None, usage=usage)
    _finish(ex, cand, replace(result, usage=usage), cost, guard)  # before: callers may stop
    yield replace(_event(ex, cand, final, attempts=True), cost_usd=cost)


def _finish(
    ex: Execution, cand: Candidate, result: ProviderResponse, cost: float | None, guard: Guard
) -> None:
    """The assembled answer: kept for after_response hooks, counted, cached."""
    ex.final = ex.response(cand, result, cost)
    u = result.usage
    ex.svc.stats.request(
        True, cost, u.input_tokens, u.output_tokens, fallback=guard.fallback_index > 0
    )
    key = ex.cache_key()
    if key is not None:
        ex.svc.cache.put(key, ex.final, ex.route.cache.ttl_s)


def _estimate(ex: Execution, result: ProviderResponse) -> Usage:
    """Usage when a stream reported none: the input estimate and ~4 characters a token."""
    text = (result.content or "") + "".join(c.arguments for c in result.tool_calls)
    return Usage(ex.features.input_tokens, max(1, len(text) // 4) if text else 0)


def _event(ex: Execution, cand: Candidate, chunk: Chunk, attempts: bool) -> StreamEvent:
    return StreamEvent(
        chunk=chunk,
        provider=cand.provider.id,
        model=cand.model.id,
        id=f"chatcmpl-{ex.request_id}",
        created=int(ex.svc.clock.time()),
        attempts=tuple(ex.attempts) if attempts else (),
        policy=cand.policy,
        rule=cand.rule,
    )


class _Failover(Exception):
    """A stream failed where the policy allows another candidate to take over."""


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
    if resp.content or deltas:
        yield StreamEvent(Chunk(content=resp.content or "", tool_calls=deltas), **common)
    last = Chunk(finish_reason=resp.finish_reason, usage=resp.usage)
    yield StreamEvent(last, cost_usd=resp.cost_usd, attempts=resp.attempts, **common)

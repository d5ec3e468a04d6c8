"""A chat call: the response cache, the failover loop, and one `finish`.

    ChatCall(svc, plan, request, policy, streaming)
        run()       cache hit -> the cached answer; else failover.answer(COMPLETE) -> finish
        stream()    cache hit -> the cached answer replayed; else failover.answer(OPEN_STREAM)
                    -> relay (stream.py) -> finish; a stream that breaks where the route
                    allows it asks the same loop for the next answer

`finish` is shared: the Response (with every attempt), the call's stats, the cache entry.
An endpoint other than chat reuses the failover loop with its own operation and finish.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import replace

from engine.errors import EngineError, ProviderError
from engine.frozen import builder
from engine.messages import ProviderResponse, Request
from engine.plan.compiled import Plan
from engine.result import Response, StreamEvent
from engine.runtime.call.attempt import Attempt
from engine.runtime.call.data import Trail, call_data
from engine.runtime.call.failover import Failover
from engine.runtime.call.operations import COMPLETE, OPEN_STREAM
from engine.runtime.call.stream import BrokenStream, relay, replay
from engine.runtime.call.walk import Walk
from engine.runtime.services import Services
from engine.state.protocols import LedgerRow

# One per call; builder() skips a frozen dataclass's per-field object.__setattr__, which
# measured >1 us a call for Response's 14 fields (engine/frozen.py).
_response = builder(Response)


class ChatCall:
    """One chat completion, streamed or not, from cache lookup to the finished answer."""

    __slots__ = ("call", "failover", "final", "svc", "trail", "walk")

    def __init__(
        self, svc: Services, plan: Plan, request: Request, policy: str | None, streaming: bool
    ) -> None:
        self.svc = svc
        now = svc.clock.monotonic()
        self.call = call_data(plan, request, svc.features(request), streaming, now, svc.clients)
        self.trail = Trail()
        target = policy or request.model or plan.default_policy
        self.walk = Walk(svc, self.call, self.trail, target)
        self.failover = Failover(svc, self.call, self.trail, self.walk)
        self.final: Response | None = None  # the finished answer, once there is one

    async def run(self) -> Response:
        """The whole non-streaming call."""
        key = self._cache_key()
        if key is not None:
            hit = await self.svc.cache.get(key)
            if isinstance(hit, Response):
                return self._cached(hit)
        try:
            answer = await self.failover.answer(COMPLETE)
        except EngineError:
            self.svc.stats.request(False)
            raise
        return await self.finish(answer.attempt, answer.value, key)

    async def stream(self) -> AsyncGenerator[StreamEvent, None]:
        """The whole streaming call; `final` holds the finished Response at the end."""
        key = self._cache_key()
        hit = await self.svc.cache.get(key) if key is not None else None
        if isinstance(hit, Response):
            for event in replay(self._cached(hit)):
                yield event
            return

        async def finish(attempt: Attempt, result: ProviderResponse) -> Response:
            return await self.finish(attempt, result, key)

        while True:
            try:
                answer = await self.failover.answer(OPEN_STREAM)
            except EngineError:
                self.svc.stats.request(False)
                raise
            events = relay(answer, self.call, self.trail, self.svc.clock, finish)
            try:
                async for event in events:
                    yield event
                return
            except BrokenStream:
                continue  # failed where the route allows another candidate to take over
            except ProviderError:
                self.svc.stats.request(False)
                raise
            finally:
                await events.aclose()

    async def finish(self, attempt: Attempt, result: ProviderResponse, key: str | None) -> Response:
        """The answer of a settled attempt: the Response, the call's stats, the cache."""
        call, cand = self.call, attempt.cand
        # `cached` (False) and `created` (now) keep their defaults: with more than 15
        # keywords Python packs them into a dict for the call (~9k instructions measured).
        out = _response(
            content=result.content,
            tool_calls=result.tool_calls,
            finish_reason=result.finish_reason,
            usage=result.usage,
            cost_usd=attempt.cost,
            provider=cand.provider.id,
            model=cand.model.id,
            latency_ms=(self.svc.clock.monotonic() - call.started) * 1000,
            attempts=tuple(self.trail.attempts),
            policy=cand.policy,
            rule=cand.rule,
            id="chatcmpl-" + call.request_id,
            cost_breakdown=attempt.cost_detail,
            logprobs=result.logprobs,
            choices=result.choices,
        )
        u = result.usage
        fallback = attempt.index > 0
        self.svc.stats.request(True, attempt.cost, u.input_tokens, u.output_tokens, False, fallback)
        if key is not None:
            await self.svc.cache.put(key, out, self.walk.route.cache.ttl_s)
        self.final = out
        return out

    def _cache_key(self) -> str | None:
        """The cache key when the primary route caches and the caller did not bypass it."""
        request = self.call.request
        if not (self.walk.route.cache.enabled and request.cache):
            return None
        primary = self.walk.primary
        return self.svc.cache_key(request, primary.target if primary is not None else "")

    def _cached(self, hit: Response) -> Response:
        """A cache hit as this call's answer: costs nothing, recorded as cached."""
        svc, call = self.svc, self.call
        latency = (svc.clock.monotonic() - call.started) * 1000
        svc.stats.request(True, 0.0, cached=True)
        svc.ledger.record(
            LedgerRow(
                ts=svc.clock.time(),
                workspace=call.workspace,
                policy=hit.policy,
                provider=hit.provider,
                model=hit.model,
                input_tokens=0,
                output_tokens=0,
                cost_usd=0.0,
                latency_ms=latency,
                outcome="ok",
                fallback_index=0,
                request_id=call.request_id,
                cached=True,
                client=call.client,
            )
        )
        self.final = replace(
            hit,
            cached=True,
            cost_usd=0.0,
            latency_ms=latency,
            attempts=(),
            id=f"chatcmpl-{call.request_id}",
        )
        return self.final

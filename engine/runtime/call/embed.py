"""An embeddings call: the same failover loop as chat, with its own operation and finish.

The router reads the call as a chat-shaped request (`EmbeddingRequest.as_chat`: the input
size, the `embeddings` capability, the metadata and budget), so policies, pins, filters,
breakers, rate limits, budgets and the ledger apply exactly as to chat; `Embed` makes the
one adapter call per try. There is no response cache (vectors are cheap to ask again and
large to keep).
"""

from __future__ import annotations

from engine.embedding import EmbeddingRequest, EmbeddingResponse, ProviderEmbedding
from engine.errors import EngineError, InvalidRequestError
from engine.plan.compiled import Plan
from engine.providers.base import Adapter, EmbeddingAdapter
from engine.runtime.call.attempt import Attempt
from engine.runtime.call.data import Trail, call_data
from engine.runtime.call.failover import Failover
from engine.runtime.call.walk import Walk
from engine.runtime.services import Services

__all__ = ["Embed", "EmbedCall"]


class Embed:
    """One embeddings request inside an open attempt."""

    holds = False

    def __init__(self, request: EmbeddingRequest) -> None:
        self.request = request

    async def __call__(self, adapter: Adapter, attempt: Attempt) -> ProviderEmbedding:
        if not isinstance(adapter, EmbeddingAdapter):
            endpoint = attempt.endpoint
            raise InvalidRequestError(
                f"{endpoint.provider}: the {endpoint.protocol} protocol has no embeddings",
                provider=endpoint.provider,
                model=endpoint.upstream_model,
            )
        result = await adapter.embed(self.request, attempt.endpoint)
        attempt.answered(result.usage, None)
        return result


class EmbedCall:
    """One embeddings call, from routing to the finished answer."""

    __slots__ = ("call", "failover", "request", "svc", "trail", "walk")

    def __init__(
        self, svc: Services, plan: Plan, request: EmbeddingRequest, policy: str | None
    ) -> None:
        self.svc, self.request = svc, request
        chat = request.as_chat()
        now = svc.clock.monotonic()
        self.call = call_data(plan, chat, svc.features(chat), False, now, svc.clients)
        self.trail = Trail()
        target = policy or request.model or plan.default_policy
        self.walk = Walk(svc, self.call, self.trail, target)
        self.failover = Failover(svc, self.call, self.trail, self.walk)

    async def run(self) -> EmbeddingResponse:
        try:
            answer = await self.failover.answer(Embed(self.request))
        except EngineError:
            self.svc.stats.request(False)
            raise
        attempt, result = answer.attempt, answer.value
        u = result.usage
        self.svc.stats.request(True, attempt.cost, u.input_tokens, 0, False, attempt.index > 0)
        return EmbeddingResponse(
            vectors=result.vectors,
            usage=u,
            cost_usd=attempt.cost,
            provider=attempt.cand.provider.id,
            model=attempt.cand.model.id,
            latency_ms=(self.svc.clock.monotonic() - self.call.started) * 1000,
            attempts=tuple(self.trail.attempts),
            policy=attempt.cand.policy,
        )

"""A stand-in for engine.Engine with the agreed API, for server tests that script failures.

It answers by echoing the last user message (word by word when streaming), calls the
first tool when tools are offered, raises `fail_with` when set, and records every call and
every stream closure so tests can see what the server passed and whether it cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from engine.errors import AttemptRecord, UnknownPolicyError
from engine.messages import Chunk, Request, ToolCallDelta, ToolCallOut, Usage
from engine.plan.compiled import Plan
from engine.plan.values import ModelPlan, ProviderPlan
from engine.result import Response, StreamEvent


def _plan() -> Plan:
    model = ModelPlan(
        id="mock/fast", provider="mock", upstream="fast", capabilities=frozenset({"tools"}),
        context_window=8192, max_output=1024, input_price=1.0, output_price=2.0, quality=0.5,
        latency_ms=1.0, local=True,
    )  # fmt: skip
    providers = {
        "mock": ProviderPlan(id="mock", protocol="mock", base_url="", keys=()),
        "openai": ProviderPlan(
            id="openai", protocol="openai", base_url="", keys=(), enabled=False,
            disabled_reason="OPENAI_API_KEY is not set",
        ),
    }  # fmt: skip
    return Plan(
        models={"mock/fast": model}, providers=providers,
        policies={"fast": object(), "cheap": object()}, default_policy="fast",
    )  # fmt: skip


class StandInEngine:
    def __init__(self) -> None:
        self.plan = _plan()
        self.fail_with: Exception | None = None
        self.calls: list[tuple[Request, str | None]] = []
        self.closed_streams = 0
        self.stream_started = asyncio.Event()
        self.stream_closed = asyncio.Event()
        self.hold_stream = False  # stream waits forever after its first chunk
        self.reloaded: list[Plan] = []
        self.attempts: tuple[AttemptRecord, ...] = (AttemptRecord("mock", "mock/fast", "ok"),)
        self.cost_usd: float | None = 0.25  # None: the answering model has no known price

    def _check(self, request: Request, policy: str | None) -> str:
        self.calls.append((request, policy))
        if self.fail_with is not None:
            raise self.fail_with
        target = policy or request.model or "fast"
        if target not in self.plan.policies and target not in self.plan.models:
            raise UnknownPolicyError(f"unknown policy or model {target!r}")
        return target

    async def arun(self, request: Request, policy: str | None = None) -> Response:
        target = self._check(request, policy)
        text = request.messages[-1].text()
        calls: tuple[ToolCallOut, ...] = ()
        if request.tools:
            calls = (ToolCallOut("call_1", request.tools[0].function.name, '{"city": "Paris"}'),)
        return Response(
            content=None if calls else f"echo: {text}", tool_calls=calls,
            finish_reason="tool_calls" if calls else "stop", usage=Usage(3, 2), cost_usd=self.cost_usd,
            provider="mock", model="mock/fast", latency_ms=1.0, attempts=self.attempts,
            policy=target if target in self.plan.policies else None, id="chatcmpl-standin",
        )  # fmt: skip

    def astream(self, request: Request, policy: str | None = None) -> AsyncIterator[StreamEvent]:
        return self._stream(request, policy)

    async def _stream(self, request: Request, policy: str | None) -> AsyncIterator[StreamEvent]:
        target = self._check(request, policy)
        words = f"echo: {request.messages[-1].text()}".split(" ")
        ev: dict[str, Any] = {"provider": "mock", "model": "mock/fast", "policy": target}
        try:
            self.stream_started.set()
            if request.tools:
                name = request.tools[0].function.name
                yield StreamEvent(
                    Chunk(tool_calls=(ToolCallDelta(0, "call_1", name, '{"ci'),)), **ev
                )
                yield StreamEvent(
                    Chunk(tool_calls=(ToolCallDelta(0, None, None, 'ty": "Paris"}'),)), **ev
                )
                yield StreamEvent(
                    Chunk(finish_reason="tool_calls", usage=Usage(3, 2)), cost_usd=0.25, **ev
                )
                return
            for i, word in enumerate(words):
                yield StreamEvent(
                    Chunk(content=word if i == 0 else " " + word),
                    attempts=self.attempts if i == 0 else (),
                    **ev,
                )
                if self.hold_stream:
                    await asyncio.Event().wait()
            yield StreamEvent(
                Chunk(finish_reason="stop", usage=Usage(3, len(words))), cost_usd=0.25, **ev
            )
        finally:
            self.closed_streams += 1
            self.stream_closed.set()

    def stats(self, *, samples: bool = False) -> dict[str, Any]:
        return {
            "requests": len(self.calls),
            "breakers": {"mock": "closed"},
        }

    def rate_limit_status(self, provider: str) -> dict[str, Any]:
        return {"provider": provider, "queued": 0, "keys": {}}

    async def arate_limit_status(self, provider: str) -> dict[str, Any]:
        return self.rate_limit_status(provider)

    def reload(self, plan: Plan) -> None:
        self.reloaded.append(plan)
        self.plan = plan

    async def aclose(self) -> None:
        return None

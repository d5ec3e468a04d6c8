"""`ScriptedAdapter`: a provider adapter whose answers come from a function, as httpx's
`MockTransport` does for a transport.

    def handler(request: Request, endpoint: Endpoint) -> Outcome:
        if endpoint.upstream_model == "gpt-4o":
            return UnavailableError("down", provider=endpoint.provider)   # raised
        return "hello"                                                   # a plain answer

    eng = Engine.from_data(models, routes, adapters={"openai": ScriptedAdapter(handler)})

The handler (plain or async) returns what the upstream does: a `ProviderResponse`, a
string (the answer's text, with `usage` tokens), an exception (raised, as an adapter
raises `engine.errors` on failure), or, for streaming, a sequence of `Chunk`s and
exceptions (each exception raised where it stands, as a stream cut mid-way). A response
or a string streams as its text in one chunk and a final chunk with finish and usage;
a sequence asked for without streaming is assembled into one response. Every exchange is
kept in `calls`, in order. No network, no sleeping.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from engine.endpoints import Endpoint
from engine.messages import Chunk, ProviderResponse, Request, StreamAccumulator, Usage

Answer = ProviderResponse | str | Sequence[Chunk | BaseException]
Outcome = Answer | BaseException
Handler = Callable[[Request, Endpoint], Outcome | Awaitable[Outcome]]

#: The usage a string answer reports.
DEFAULT_USAGE = Usage(input_tokens=10, output_tokens=5)


@dataclass(frozen=True, slots=True)
class Exchange:
    """One call the adapter received."""

    request: Request
    endpoint: Endpoint
    stream: bool

    @property
    def model(self) -> str:
        return self.endpoint.upstream_model

    @property
    def key_id(self) -> str:
        return self.endpoint.key_id


class ScriptedAdapter:
    """Implements `engine.providers.base.Adapter` with a handler function."""

    def __init__(self, handler: Handler, protocol: str = "scripted") -> None:
        self.handler = handler
        self.protocol = protocol
        self.calls: list[Exchange] = []
        self.warmed: list[str] = []  # provider ids, in order
        self.closed = False

    def models(self) -> list[str]:
        """The upstream model of every call so far, in order."""
        return [c.model for c in self.calls]

    async def _outcome(self, request: Request, endpoint: Endpoint, stream: bool) -> Answer:
        self.calls.append(Exchange(request, endpoint, stream))
        out = self.handler(request, endpoint)
        if inspect.isawaitable(out):
            out = await out
        if isinstance(out, BaseException):
            raise out
        return out

    async def complete(self, request: Request, endpoint: Endpoint) -> ProviderResponse:
        out = await self._outcome(request, endpoint, False)
        if isinstance(out, ProviderResponse):
            return out
        if isinstance(out, str):
            return ProviderResponse(
                content=out, usage=DEFAULT_USAGE, upstream_model=endpoint.upstream_model
            )
        acc = StreamAccumulator(endpoint.upstream_model)
        for chunk in out:
            if isinstance(chunk, BaseException):
                raise chunk
            acc.add(chunk)
        return acc.result()

    async def stream(self, request: Request, endpoint: Endpoint) -> AsyncIterator[Chunk]:
        out = await self._outcome(request, endpoint, True)
        for chunk in _chunks(out):
            await asyncio.sleep(0)  # a real stream yields to the loop between chunks
            if isinstance(chunk, BaseException):
                raise chunk
            yield chunk

    async def warm(self, endpoint: Endpoint) -> None:
        self.warmed.append(endpoint.provider)

    async def aclose(self) -> None:
        self.closed = True


def _chunks(
    out: ProviderResponse | str | Sequence[Chunk | BaseException],
) -> list[Chunk | BaseException]:
    if isinstance(out, str):
        out = ProviderResponse(content=out, usage=DEFAULT_USAGE)
    if isinstance(out, ProviderResponse):
        return [
            Chunk(content=out.content or ""),
            Chunk(finish_reason=out.finish_reason, usage=out.usage, rate_limit=out.rate_limit),
        ]
    return list(out)


def by_model(scripts: dict[str, Sequence[Outcome]], default: Outcome = "ok") -> Handler:
    """A handler answering per upstream model from a script of outcomes, in order; the
    last one repeats (a model without a script answers `default`)."""
    queues = {model: list(outcomes) for model, outcomes in scripts.items()}

    def handler(request: Request, endpoint: Endpoint) -> Outcome:
        queue = queues.get(endpoint.upstream_model)
        if not queue:
            return default
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return handler

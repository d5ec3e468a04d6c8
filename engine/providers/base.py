"""The adapter contract: one request to one provider, nothing else.

An adapter is shaped like an httpx transport: build the body, send once, parse, translate
errors into `engine.errors`. No retries, no fallbacks, no policy (the runtime owns those).
Adapters are looked up by wire protocol name (`openai`, `azure`, `anthropic`, `gemini`,
`ollama`, `mock`; OpenAI-compatible providers use `openai` with their own base URL).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from engine.embedding import EmbeddingRequest, ProviderEmbedding
from engine.endpoints import Endpoint, Timeouts
from engine.messages import Chunk, ProviderResponse, Request

__all__ = ["Adapter", "EmbeddingAdapter", "Endpoint", "Timeouts"]


class Adapter(Protocol):
    """One wire protocol. Implementations live in engine/providers/<protocol>.py."""

    protocol: str

    async def complete(self, request: Request, endpoint: Endpoint) -> ProviderResponse:
        """Send one non-streaming request; raise an engine.errors.ProviderError on failure."""
        ...

    def stream(self, request: Request, endpoint: Endpoint) -> AsyncIterator[Chunk]:
        """Send one streaming request; yield normalised chunks; errors mid-stream raise."""
        ...

    async def warm(self, endpoint: Endpoint) -> None:
        """Open a pooled connection to the endpoint's host ahead of traffic."""
        ...

    async def aclose(self) -> None:
        """Close pooled connections."""
        ...


@runtime_checkable
class EmbeddingAdapter(Protocol):
    """An adapter whose protocol has embeddings (openai, azure, gemini, ollama, mock)."""

    protocol: str

    async def embed(self, request: EmbeddingRequest, endpoint: Endpoint) -> ProviderEmbedding:
        """Send one embeddings request; raise an engine.errors.ProviderError on failure."""
        ...
